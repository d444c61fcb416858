"""SMS keyword commands and the texts the gateway sends by SMS; pure.

Keywords are words in the catalogs (`sms.keyword.status` is CEK in
Indonesian, STATUS in English, HALI in Swahili) and every language's word
works for every caller: a villager may text STATUS to an Indonesian
gateway. Case, spacing and a trailing `:` or `.` do not matter. Which flows
can be submitted by SMS, and with which words, the menus say (`sms:` on a
flow, `sms_word` on its choices).

A flow whose menu names an answer `role: address` is submitted in one
message as `<keyword> <word> <place>: <description>` (`LAPOR JALAN
Sukamaju: lubang besar dekat masjid`): the place is what comes before the
first `:` that is not inside a time like `19:00`. Without a place the
submission is `Unplaced`: the gateway keeps it and asks for the place,
because staff cannot act on a report that says nowhere.

A resolved notice asks "is it fixed?"; the answer is a reply that begins
with `1` (fixed) or `2` (not fixed), then maybe a rating 1-5, then maybe the
reference (for a request other than the latest resolved) and the villager's
own words: `1`, `1 5`, `15`, `2 1 K7M2QX lubangnya masih ada`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .catalog import N_, Catalog
from .engine import Engine
from .errors import CatalogError
from .menu import Flow
from .text import SMS_SEGMENT_GSM7, fit_sms, ussd_cost
from .typed import to_gsm7
from . import validate
from .validate import Invalid, Outcome

COMMANDS = {
    "status": N_("sms.keyword.status"),
    "help": N_("sms.keyword.help"),
    "language": N_("sms.keyword.language"),
    "stop": N_("sms.keyword.stop"),
    "start": N_("sms.keyword.start"),
}
"""Command name -> catalog id of its keyword. Flows with an `sms:` form add a `submit` command each."""

SUBMIT = "submit"
SIGNED = N_("sms.signed")

PLACE_PROMPT = N_("sms.report.place")
"""Asks for the place of a report that came without one; `{minutes}` it waits."""
PLACE_INVALID = N_("sms.report.place_invalid")
"""Re-asks the place, with the `{reason}` the one given was not taken."""
EXPIRED = N_("sms.report.expired")
"""Answers a place that came after the report waited `{minutes}`: how to send it in one message."""
REFUSED = N_("sms.report.refused")
"""A report whose description was not taken, with the `{reason}` (the limit, when it was too long)."""

NOTICE_RESOLVED = N_("sms.notice.resolved")
"""The notice of a resolution that asks "is it fixed?" (the submission has no answer yet)."""
FEEDBACK_USAGE = N_("sms.feedback.usage")
"""Answers a reply to "is it fixed?" that is neither 1/2 nor followed by a rating 1-5."""
FEEDBACK_THANKS = {True: N_("sms.feedback.fixed"), False: N_("sms.feedback.not_fixed")}
"""Thanks for an answer to "is it fixed?", by the answer; `{ref}`."""
FEEDBACK_COUNTED = N_("sms.feedback.counted")
"""A second answer for the same submission: the first was counted; `{ref}`."""
WORDS_LIMIT = 160
"""Characters of the villager's own words an answer to "is it fixed?" carries (the protocol's limit)."""

SMS_MESSAGES = (
    N_("sms.help"), N_("sms.confirmation"), N_("sms.notice"), NOTICE_RESOLVED,
    FEEDBACK_USAGE, *FEEDBACK_THANKS.values(), FEEDBACK_COUNTED,
    N_("sms.language.usage"), N_("sms.stop.done"), N_("sms.start.done"),
    PLACE_PROMPT, PLACE_INVALID, EXPIRED, REFUSED, SIGNED,
)

_SPACES = re.compile(r"\s+")
_FEEDBACK = re.compile(r"([12])[.,]?(?: ?([1-5])[.,]?)?(?:$| (.*))")
"""`<1|2> [<1-5>] [rest]`: the answer, its rating ("15" reads as "1 5"), and the rest."""
_TRAILING = ":.,!"
_PLACE_END = re.compile(r"(?<!\d):|:(?!\d)")
"""The `:` after the place; one between two digits is a time (`jam 19:00`), not the end of a place."""


@dataclass(frozen=True)
class Command:
    """A parsed SMS: the command (`unknown` when none), the language of its keyword, the rest.

    A `submit` command names the flow it submits.
    """

    name: str
    lang: str | None
    argument: str
    flow: str | None = None
    text: str = ""
    """The whole SMS, spaces collapsed: what a description's room in one message is counted from."""


@dataclass(frozen=True)
class Feedback:
    """A villager's answer to "is it fixed?": fixed or not, the rating 1-5 (None when not given), the rest
    of the SMS (a reference maybe, then their own words)."""

    fixed: bool
    rating: int | None
    rest: str


def parse_feedback(text: str) -> Feedback | Invalid | None:
    """`text` as an answer to "is it fixed?"; Invalid (how to answer) for text that begins with a digit
    but is no answer (`3`, `1 7`); None for text that does not begin with a digit."""
    text = _SPACES.sub(" ", text).strip()
    if not text[:1].isdigit():
        return None
    found = _FEEDBACK.fullmatch(text)
    rest = (found and found.group(3) or "").strip()
    if found is None or rest.split(" ")[0].rstrip(_TRAILING).isdigit():
        return Invalid(FEEDBACK_USAGE)
    answer, rating = found.group(1), found.group(2)
    return Feedback(answer == "1", int(rating) if rating else None, rest)


@dataclass(frozen=True)
class Unplaced:
    """A submission by SMS whose place is missing (`reason` None) or was not taken (`reason` says why).

    Everything else in it is checked; it waits for its place.
    """

    submission: dict
    reason: Invalid | None = None


class Keywords:
    """Every language's keywords and SMS words, built once from the catalogs and the menus."""

    def __init__(self, engine: Engine):
        self._engine = engine
        catalog = engine.catalog
        self.commands: dict[str, tuple[str, str, str | None]] = {}
        for name, msgid in COMMANDS.items():
            self._add(self.commands, catalog, msgid, (name, None))
        self.words: dict[str, dict[str, str]] = {}
        for flow in engine.flows.values():
            if flow.sms is None:
                continue
            self._add(self.commands, catalog, flow.sms.keyword, (SUBMIT, flow.name))
            words: dict = {}
            for choice in flow.saved_by(flow.sms.choose).choices:
                self._add(words, catalog, choice.sms_word, (choice.value, None))
            self.words[flow.name] = {word: meaning[0] for word, meaning in words.items()}

    @staticmethod
    def _add(table: dict, catalog: Catalog, msgid: str, meaning: tuple[str, str | None]) -> None:
        """Enter every language's word for `msgid`; a word may mean one thing only."""
        for lang in catalog.languages:
            word = catalog.text(lang, msgid).strip().upper()
            if not word or " " in word:
                raise CatalogError(f"catalog {lang!r}: {msgid} must be one word, not {word!r}")
            known = table.get(word)
            if known and (known[0], known[2]) != meaning:
                raise CatalogError(f"catalog {lang!r}: {word} means both {known[0]} and {meaning[0]}")
            table.setdefault(word, (meaning[0], lang, meaning[1]))

    def parse(self, text: str) -> Command:
        """What an incoming SMS asks for."""
        text = _SPACES.sub(" ", text).strip()
        head, _, rest = text.partition(" ")
        found = self.commands.get(head.rstrip(_TRAILING).upper())
        if found is None:
            return Command("unknown", None, text, text=text)
        name, lang, flow = found
        return Command(name, lang, rest.strip(), flow, text)

    def submission(self, command: Command, lang: str, today: dt.date) -> dict | Unplaced | Invalid:
        """The submission a `submit` SMS makes (without its reference), one still `Unplaced`, or why not.

        `<word> [<place>:] <description>`: the word picks a choice of the
        flow's worded screen; the description is checked like the `role:
        description` answer, except that it may be as long as the message
        has room for; the place like the `role: address` answer.
        """
        flow = self._engine.flows[command.flow]
        form = flow.sms
        word, _, rest = command.argument.partition(" ")
        value = self.words[flow.name].get(word.rstrip(_TRAILING).upper())
        placed = flow.role("address") is not None
        place, description = _split_place(rest) if placed else (None, rest.strip())
        if value is None or not description:
            return Invalid(form.usage)
        room = SMS_SEGMENT_GSM7 - (len(command.text) - len(description))
        described = _describe(flow, description, room, today)
        if isinstance(described, Invalid):
            return Invalid(REFUSED, {"reason": described})
        made = {"service": flow.name, "language": lang, "unique": {},
                "answers": {form.choose: value, form.describe: described.value}}
        if not placed:
            return made
        if place is None:
            return Unplaced(made)
        complete = self.place(made, place, today)
        return Unplaced(made, complete) if isinstance(complete, Invalid) else complete

    def place(self, submission: dict, raw: str, today: dt.date) -> dict | Invalid:
        """`submission` with its place, checked like the flow's `role: address` answer, or why not."""
        address = self._engine.flows[submission["service"]].role("address")
        outcome = address.validator(raw, today, submission["answers"])
        if isinstance(outcome, Invalid):
            return outcome
        return {**submission, "answers": {**submission["answers"], address.save: outcome.value}}


def _split_place(rest: str) -> tuple[str | None, str]:
    """(place, description) of `<place>: <description>`; the place is None when there is none."""
    found = _PLACE_END.search(rest)
    if found is None or not rest[:found.start()].strip():
        return None, (rest[found.end():] if found else rest).strip()
    return rest[:found.start()].strip(), rest[found.end():].strip()


def _describe(flow: Flow, raw: str, room: int, today: dt.date) -> Outcome:
    """The description as an SMS gives it: the screen's checks, but as long as one message has room for.

    A USSD screen limits the description to what fits a screen; an SMS
    carries up to one 160-character message, keyword, word and place
    included. Never shorter than the screen allows.
    """
    screen = flow.saved_by(flow.sms.describe)
    outcome = screen.validator(raw, today, {})
    if screen.check != "text" or not isinstance(outcome, Invalid) or outcome.reason != N_("invalid.text_long"):
        return outcome
    return validate.text(max=max(room, screen.longest))(raw, today, {})


def signed(catalog: Catalog, lang: str, text: str) -> str:
    """`text` as an SMS: after the service's name, as every SMS the gateway sends begins.

    For texts shared with USSD screens (a status line, "language saved");
    messages written for SMS only carry the name in the catalog already.
    """
    return catalog.text(lang, SIGNED, text=text)


def signature_cost(catalog: Catalog, lang: str) -> int:
    """Septets the service's name takes at the start of a signed SMS."""
    return ussd_cost(catalog.text(lang, SIGNED, text=""))


def say(catalog: Catalog, lang: str, outcome: Invalid) -> str:
    """`outcome` in words of `lang`; a `reason` inside it (an Invalid itself) is put in words first."""
    values = dict(outcome.values)
    if isinstance(values.get("reason"), Invalid):
        values["reason"] = say(catalog, lang, values["reason"])
    return catalog.text(lang, outcome.reason, **values)


def notice_text(catalog: Catalog, lang: str, *, ref: str, service: str, status: str, note: str,
                asks: bool = False) -> str:
    """A status-change notice that fits one GSM-7 segment, the staff note cut to fit; `asks`: the notice
    of a resolution that asks "is it fixed?" (the note last, cut first)."""
    msgid = NOTICE_RESOLVED if asks else "sms.notice"
    bare = catalog.text(lang, msgid, ref=ref, service=service, status=status, note="").rstrip()
    note = to_gsm7(note)
    room = SMS_SEGMENT_GSM7 - ussd_cost(bare) - 1
    if not note or room < 8:
        return fit_sms(bare)
    return fit_sms(catalog.text(lang, msgid, ref=ref, service=service, status=status,
                                note=fit_sms(note, room)))
