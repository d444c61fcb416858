"""SMS keyword commands and the texts the gateway sends by SMS; pure.

Keywords are words in the catalogs (`sms.keyword.status` is CEK in
Indonesian, STATUS in English, HALI in Swahili) and every language's word
works for every caller: a villager may text STATUS to an Indonesian
gateway. Case, spacing and a trailing `:` or `.` do not matter. Which flows
can be submitted by SMS, and with which words, the menus say (`sms:` on a
flow, `sms_word` on its choices).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .catalog import N_, Catalog
from .engine import Engine
from .errors import CatalogError
from .text import SMS_SEGMENT_GSM7, fit_sms, to_gsm7, ussd_cost
from .validate import Invalid

COMMANDS = {
    "status": N_("sms.keyword.status"),
    "help": N_("sms.keyword.help"),
    "language": N_("sms.keyword.language"),
    "stop": N_("sms.keyword.stop"),
    "start": N_("sms.keyword.start"),
}
"""Command name -> catalog id of its keyword. Flows with an `sms:` form add a `submit` command each."""

SUBMIT = "submit"

SMS_MESSAGES = (
    N_("sms.help"), N_("sms.confirmation"), N_("sms.notice"),
    N_("sms.language.usage"), N_("sms.stop.done"), N_("sms.start.done"),
)

_SPACES = re.compile(r"\s+")
_TRAILING = ":.,!"


@dataclass(frozen=True)
class Command:
    """A parsed SMS: the command (`unknown` when none), the language of its keyword, the rest.

    A `submit` command names the flow it submits.
    """

    name: str
    lang: str | None
    argument: str
    flow: str | None = None


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
            return Command("unknown", None, text)
        name, lang, flow = found
        return Command(name, lang, rest.strip(), flow)

    def submission(self, command: Command, lang: str, today: dt.date) -> dict | Invalid:
        """The submission a `submit` SMS makes (without its reference), or why it cannot.

        `<word> <description>`: the word picks a choice of the flow's worded
        screen, the rest is checked like the `role: description` answer.
        """
        flow = self._engine.flows[command.flow]
        form = flow.sms
        word, _, rest = command.argument.partition(" ")
        value = self.words[flow.name].get(word.rstrip(_TRAILING).upper())
        if value is None or not rest.strip():
            return Invalid(form.usage)
        outcome = flow.saved_by(form.describe).validator(rest, today, {})
        if isinstance(outcome, Invalid):
            return outcome
        return {"service": flow.name, "language": lang, "unique": {},
                "answers": {form.choose: value, form.describe: outcome.value}}


def notice_text(catalog: Catalog, lang: str, *, ref: str, service: str, status: str, note: str) -> str:
    """A status-change notice that fits one GSM-7 segment, the staff note cut to fit."""
    bare = catalog.text(lang, "sms.notice", ref=ref, service=service, status=status, note="").rstrip()
    note = to_gsm7(note)
    room = SMS_SEGMENT_GSM7 - ussd_cost(bare) - 1
    if not note or room < 8:
        return fit_sms(bare)
    return fit_sms(catalog.text(lang, "sms.notice", ref=ref, service=service, status=status,
                                note=fit_sms(note, room)))
