"""The engine: step a USSD session one input at a time.

A session is a plain dict the gateway stores between turns; the engine keeps
no state of its own. A *trigger* starts a session (`Engine.start`), a *resume*
feeds it one input (`Engine.resume`); each turn returns a `Turn`: the screen
to show, whether the session is finished, the new session dict, and the
submission or language change the gateway must commit before it answers.

    session = {"flow": "report", "screen": "location", "page": 0,
               "answers": {"category": "road"}, "lang": "id",
               "back": [["main", "menu", 0], ["report", "category", 0]]}

`back` is the way back: the screens the caller moved on from, each as
`[flow, screen, page]`, newest last. `0` pops it (a page first, on a paged
screen), and drops the answer of the screen it leaves, so that a summary
never shows an answer to a question the caller went back past. The main menu
and a closing screen start it afresh. On the main menu and on the offer to
resume a dropped session, `0` shows the same screen again: there is nothing
before them (the offer is not a step of the flow it offers). A session saved
before `back` existed goes back to the main menu.

What the engine needs from the world for one turn (today's date, lookups in
the store, a fresh reference) it is handed in a `Context`; it opens no file,
socket or clock of its own.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol

from babel.dates import format_date, format_skeleton
from transitions import MachineError

from . import validate
from .catalog import N_, Catalog
from .errors import CatalogError, FlowError, SessionOutdated
from .menu import BACK, HOME, NEXT_PAGE, ROLES, Flow, Screen, load_menus
from .text import (PREFIX_LENGTH, SMS_SEGMENT_GSM7, USSD_LIMIT, Page, fit_sms, paginate, shorten,
                   ussd_cost)
from .typed import to_gsm7
from .validate import Invalid

log = logging.getLogger(__name__)

MAIN = "main"
RESUME = "@resume"
RECENT_LIMIT = 3
"""Submissions in "my latest submissions": with a staff note under each, still three pages at most."""
PAGE_BUDGET = USSD_LIMIT - PREFIX_LENGTH
BACK_LIMIT = 12
"""Screens a session remembers for `0`: more than any flow is deep, so the stored session stays small."""
NOTE_PREVIEW = 32
"""Septets of a staff note's line in the list of recent submissions (one submission shows it whole)."""
NOTE_LEAST = 16
"""Septets below which a status reply leaves the note out rather than show a stump of it."""

STATUS_LABELS = {
    "received": N_("status.received"),
    "in_progress": N_("status.in_progress"),
    "resolved": N_("status.resolved"),
    "rejected": N_("status.rejected"),
    "review": N_("status.review"),
}
"""Catalog ids of the submission statuses a caller can see."""

REASONS = {
    "menu": (N_("invalid.choice"), N_("invalid.no_next")),
    "confirm": (N_("invalid.choice"), N_("invalid.no_next")),
    "input": (*validate.MESSAGES, N_("invalid.no_next")),
    "view": (N_("invalid.choice"), N_("invalid.no_next")),
    "end": (),
    "notice": (),
}
"""The reasons a screen of each kind may show on top of a page: its layout keeps room for the longest."""

PAGED_REASONS = {"menu": (N_("invalid.other_page"),), "confirm": (N_("invalid.other_page"),),
                 "end": (N_("invalid.page"),)}
"""The reasons only a screen of several pages may show: a choice on another page; on a closing
screen, any key but 98 before its last page. (A view's "is it fixed?" choices, on its last page, are
no choice on the pages before: `invalid.choice`, for which it keeps room.)"""
FIXED = "fixed"
"""The answer a view with `rate` saves: "1" fixed, "2" not fixed."""
RATING = "rating"
"""The answer that holds a rating 1-5 for a screen with the `feedback` action (any other value: none given)."""
RATE_LABELS = (N_("status.fixed_choice"), N_("status.not_fixed_choice"))

_WORST_VALUES = {"length": 999, "min": 999, "max": 999, "age": 999}
"""Values that make a reason as long as it gets (every placeholder a reason has)."""

OVERDUE = N_("status.overdue")
"""Under the status line of a request past its deadline: `{agency}` holds it now."""
OVERDUE_PLAIN = N_("status.overdue_plain")
"""The same, for a request whose agency the gateway was not told."""

ENGINE_MESSAGES = (
    N_("nav.more"), N_("nav.hint"), N_("confirm.yes"), N_("confirm.no"),
    N_("resume.prompt"), N_("resume.continue"), N_("resume.restart"),
    N_("status.line"), N_("status.note"), N_("status.none"), N_("status.not_found"), OVERDUE, OVERDUE_PLAIN,
    *(reason for reasons in (*REASONS.values(), *PAGED_REASONS.values()) for reason in reasons), *RATE_LABELS,
    *STATUS_LABELS.values(),
)
"""Every catalog id the engine itself shows (the menus name the rest)."""


class Lookup(Protocol):
    """Read-only questions a turn may ask the store, bound to the caller's phone."""

    def taken(self, service: str, answer: str, value: str) -> bool:
        """True when this caller's own submission of `service` already used `value` for `answer`.

        Whether another phone used it is never told (the central backend reviews duplicates)."""

    def recent(self, limit: int) -> list[dict]:
        """The caller's latest submissions: dicts with ref, service, status, created and changed
        (dates: made, and last status change), note (the staff's last note, or None), overdue (past
        its deadline) and agency (who holds it, or None)."""

    def find(self, ref: str) -> dict | None:
        """The caller's submission with reference `ref` (same keys, and `rateable`: resolved, and the caller
        has not yet said whether it is fixed), or None."""


@dataclass(frozen=True)
class Context:
    """What the gateway hands the engine for one turn."""

    today: dt.date
    lookup: Lookup
    new_reference: Callable[[], str]


class Turn(NamedTuple):
    """The outcome of one turn."""

    text: str
    done: bool
    session: dict
    submission: dict | None = None
    language: str | None = None
    feedback: dict | None = None
    """A caller's answer to "is it fixed?" to keep: `ref`, `fixed` (bool), `rating` (1-5 or None)."""


@dataclass
class _Model:
    """The throw-away model a machine moves for one turn (never registered)."""

    state: str
    answers: dict = field(default_factory=dict)


class Engine:
    """Compiled flows plus catalogs; safe to share between concurrent turns."""

    def __init__(self, flows: dict[str, Flow], catalog: Catalog, default_language: str):
        if default_language not in catalog.languages:
            raise CatalogError(f"default language {default_language!r} has no catalog")
        self.flows = flows
        self.catalog = catalog
        self.default_language = default_language
        self.languages = catalog.languages
        self.asks_fixed = frozenset(name for name, flow in flows.items() if flow.asks_fixed)
        """Services whose resolution asks the villager "is it fixed?"."""
        self._language_names = {lang: catalog.language_name(lang) for lang in self.languages}
        self._check_catalog()
        self._navigation = {lang: (f"{NEXT_PAGE} {catalog.text(lang, 'nav.more')}",
                                   catalog.text(lang, "nav.hint", back=BACK, home=HOME))
                            for lang in self.languages}
        self._reserve: dict[tuple[str, str, bool], int] = {}  # (language, kind, paged): room for a reason
        for lang in self.languages:
            for kind, reasons in REASONS.items():
                self._reserve[lang, kind, False] = self._room_for(lang, reasons)
                self._reserve[lang, kind, True] = self._room_for(lang, reasons + PAGED_REASONS.get(kind, ()))
        self._static: dict[tuple[str, str, str], tuple[list[Page], dict[str, int]] | bool] = {}
        """(language, flow, screen): the layout of a screen that shows nothing but its words, made at its first
        turn, or False for a screen that changes with the turn. Shared by every turn, so read-only; bounded by
        languages times screens."""

    def _room_for(self, lang: str, reasons: tuple[str, ...]) -> int:
        """Septets the longest of `reasons` takes as a line on top of a page."""
        return max((ussd_cost(self.catalog.text(lang, reason, **_WORST_VALUES)) + 1 for reason in reasons), default=0)

    @classmethod
    def load(cls, menus_dir: str | Path, locale_dir: str | Path, languages: list[str],
             default_language: str) -> "Engine":
        """Load menus and catalogs once, at start-up."""
        return cls(load_menus(menus_dir), Catalog.load(locale_dir, languages), default_language)

    def message_ids(self) -> set[str]:
        """Every catalog id a caller can be shown."""
        ids = set(ENGINE_MESSAGES)
        for flow in self.flows.values():
            ids.add(flow.title)
            if flow.sms:
                ids.update((flow.sms.keyword, flow.sms.usage))
            for screen in flow.screens.values():
                ids.add(screen.text)
                ids.update(choice.label for choice in screen.choices)
                ids.update(choice.sms_word for choice in screen.choices if choice.sms_word)
        return ids

    def _check_catalog(self) -> None:
        for lang in self.languages:
            missing = sorted(m for m in self.message_ids() if not self.catalog.has(lang, m))
            if missing:
                raise CatalogError(f"catalog {lang!r} lacks {len(missing)} message(s): {', '.join(missing[:5])}")

    # -- turns -------------------------------------------------------------

    def start(self, lang: str, ctx: Context, saved: dict | None = None) -> Turn:
        """Trigger a new session: the main menu, or an offer to resume `saved`."""
        lang = lang if lang in self.languages else self.default_language
        if saved is not None and saved.get("flow") == RESUME:
            saved = saved["saved"]
        if saved is not None and self.resumable(saved):
            session = {"flow": RESUME, "screen": "offer", "page": 0, "answers": {}, "lang": lang,
                       "saved": saved}
            return self._show(session, ctx)
        return self._jump(MAIN, lang, ctx)

    def resume(self, session: dict, raw: str, ctx: Context) -> Turn:
        """Feed one input to `session`; never raises for bad input (it re-asks).

        `00` goes to the main menu, `0` back (see the module docstring), `98`
        to the next page; on an input screen they are never an answer. A
        numbered key acts only on the page that shows it. Raises
        `SessionOutdated` when `session` names a flow or screen the menus no
        longer have (they changed since it was saved); any other `FlowError`
        is a bug.
        """
        if session.get("lang") not in self.languages:
            session = {**session, "lang": self.default_language}
        raw = raw.strip()
        if raw == HOME:
            return self._jump(MAIN, session["lang"], ctx)
        pages, keys = self._layout(session, ctx)
        session = {**session, "page": min(session["page"], len(pages) - 1), "back": session.get("back", [])}
        if raw == BACK:
            return self._back(session, ctx, pages)
        if raw == NEXT_PAGE:
            if session["page"] + 1 < len(pages):
                return self._show({**session, "page": session["page"] + 1}, ctx, pages)
            return self._reask(session, ctx, N_("invalid.no_next"), pages=pages)
        if self._kind(session) in ("menu", "confirm") or keys:
            if raw not in keys:
                return self._reask(session, ctx, N_("invalid.choice"), pages=pages)
            if keys[raw] not in pages[session["page"]].lines:
                reason = N_("invalid.choice") if self._kind(session) == "view" else N_("invalid.other_page")
                return self._reask(session, ctx, reason, pages=pages)
        if session["flow"] == RESUME:
            return self._answer_offer(session, raw, ctx)
        flow, screen = self._screen(session)
        answers = dict(session["answers"])
        if screen.kind == "menu":
            number = int(raw)
            if screen.save:
                answers[screen.save] = (self.languages[number - 1] if screen.choices_from
                                        else screen.choices[number - 1].value)
            trigger = "answer" if screen.choices_from else f"choose_{number}"
        elif screen.kind == "input":
            outcome = screen.validator(raw, ctx.today, answers)
            if isinstance(outcome, Invalid):
                return self._reask(session, ctx, outcome.reason, outcome.values, pages)
            answers[screen.save] = outcome.value
            trigger = "answer"
            if screen.unique and ctx.lookup.taken(flow.name, screen.save, outcome.value):
                trigger = "taken"
        elif screen.kind == "confirm":
            trigger = "accept" if raw == "1" else "decline"
        elif keys:  # a view offering "is it fixed?"
            answers[FIXED] = raw
            trigger = f"choose_{raw}"
        else:
            reason = N_("invalid.choice") if screen.kind == "view" else N_("invalid.page")
            return self._reask(session, ctx, reason, pages=pages)
        target = self._fire(flow, screen.name, trigger, answers)
        back = [*session["back"], [flow.name, screen.name, session["page"]]][-BACK_LIMIT:]
        return self._enter(flow, target, {**session, "answers": answers, "back": back}, ctx)

    def resumable(self, session: dict) -> bool:
        """True when a dropped `session` is worth offering to continue."""
        if session.get("flow") == RESUME:
            return True
        flow = self.flows.get(session.get("flow", ""))
        return bool(flow and flow.submits and session.get("answers"))

    # -- rendering ---------------------------------------------------------

    def pages(self, session: dict, ctx: Context, reason: str | None = None) -> list[str]:
        """The current screen of `session` as the pages a caller can see, each with `reason` on top."""
        return [page.render(PAGE_BUDGET, reason) for page in self._layout(session, ctx)[0]]

    def _layout(self, session: dict, ctx: Context) -> tuple[list[Page], dict[str, int]]:
        """The screen's pages, and which body line shows each numbered key (both read-only: maybe shared)."""
        key = (session["lang"], session.get("flow"), session.get("screen"))
        cached = self._static.get(key)
        if cached:
            return cached
        lang = session["lang"]
        lines, keys = self._body(session, ctx)
        more, hint = self._navigation[lang]
        kind = self._kind(session)
        pages = paginate(lines, PAGE_BUDGET, more, hint, reserve=self._reserve[lang, kind, False],
                         paged_reserve=self._reserve[lang, kind, True],
                         hint_first=not self._root(session), hint_last=not self._closing(session))
        if cached is None:
            self._static[key] = (pages, keys) if self._is_static(session) else False
        return pages, keys

    def _is_static(self, session: dict) -> bool:
        """True when the screen looks the same on every turn in its language, whatever the answers and lookups.

        Its text has no placeholder and it shows no lookup; its choices are
        labels (or language names). The resume offer names the flow it offers,
        so it is never one.
        """
        if session["flow"] == RESUME:
            return False
        screen = self._screen(session)[1]
        return screen.show is None and "{" not in self.catalog.translations(session["lang"]).gettext(screen.text)

    def _kind(self, session: dict) -> str:
        """The screen's kind; the resume offer is a menu."""
        return "menu" if session["flow"] == RESUME else self._screen(session)[1].kind

    def _root(self, session: dict) -> bool:
        """True on a screen with nothing to go back to: the main menu and the resume offer."""
        return session["flow"] == RESUME or (session["flow"] == MAIN and session["screen"] == self.flows[MAIN].start)

    def _closing(self, session: dict) -> bool:
        """True when the session's screen ends the session (its last page is an `END`)."""
        return session["flow"] != RESUME and self._screen(session)[1].kind == "end"

    def _body(self, session: dict, ctx: Context) -> tuple[list[str], dict[str, int]]:
        lang = session["lang"]
        text = self.catalog.text
        if session["flow"] == RESUME:
            title = text(lang, self._flow(session["saved"]).title)
            return _numbered([text(lang, "resume.prompt", service=title)],
                             [text(lang, "resume.continue"), text(lang, "resume.restart")])
        flow, screen = self._screen(session)
        values = self._display(flow, session["answers"], lang)
        if "ref" in session:
            values["ref"] = session["ref"]
        if screen.kind == "menu":
            labels = ([self._language_names[code] for code in self.languages] if screen.choices_from
                      else [text(lang, choice.label) for choice in screen.choices])
            return _numbered(self._lines(lang, screen, values), labels)
        if screen.kind == "confirm":
            labels = [text(lang, "confirm.yes"), text(lang, "confirm.no")]
            values = self._fit_summary(lang, screen, values, labels)
            return _numbered(self._lines(lang, screen, values), labels)
        lines = self._lines(lang, screen, values)
        if screen.show == "recent":
            found = ctx.lookup.recent(RECENT_LIMIT)
            lines += ([line for item in found for line in self._status_lines(item, lang, NOTE_PREVIEW)]
                      or [text(lang, "status.none")])
        elif screen.show == "submission":
            item = ctx.lookup.find(session["answers"].get("ref", ""))
            lines += self._status_lines(item, lang) if item else [text(lang, "status.not_found")]
            if item and screen.rate and item.get("rateable") and item["service"] in self.asks_fixed:
                return _numbered(lines, [text(lang, label) for label in RATE_LABELS])
        return lines, {}

    def _lines(self, lang: str, screen: Screen, values: dict[str, str]) -> list[str]:
        return [line.rstrip() for line in self.catalog.text(lang, screen.text, **values).split("\n")]

    def _fit_summary(self, lang: str, screen: Screen, values: dict[str, str], labels: list[str]) -> dict[str, str]:
        """The answers a confirm screen shows, the longest shortened so that it is one page.

        One page with its hint and room for a reason on top: 1 and 2 are
        never on a page of their own, away from what they confirm.
        """
        room = PAGE_BUDGET - self._reserve[lang, "confirm", False] - ussd_cost("\n" + self._navigation[lang][1])

        def fits(shown: dict[str, str]) -> bool:
            lines, _ = _numbered(self._lines(lang, screen, shown), labels)
            return ussd_cost("\n".join(lines)) <= room

        return shorten(values, fits)

    def _display(self, flow: Flow, answers: dict, lang: str) -> dict[str, str]:
        """Answers as the caller should read them: labels for choices, dates in their language."""
        shown = {}
        for answer, value in answers.items():
            screen = flow.saved_by(answer)
            shown[answer] = value
            if screen is None:
                continue
            if screen.choices_from == "languages":
                shown[answer] = self._language_names.get(value, value)
            elif screen.choices:
                for choice in screen.choices:
                    if choice.value == value:
                        shown[answer] = (answers[choice.shown_as] if answers.get(choice.shown_as)
                                         else self.catalog.text(lang, choice.label))
            elif screen.check == "date":
                shown[answer] = format_date(dt.date.fromisoformat(value), "medium", locale=lang)
        return shown

    def status_line(self, item: dict, lang: str, room: int = SMS_SEGMENT_GSM7) -> str:
        """One submission as a reply by SMS, within `room` septets (one segment unless told).

        Reference, service, status and the day it was set; when it is past
        its deadline, a line that says so and who holds it now; under them
        the staff's last note, shortened to fit (left out when too little
        room is left for it to say anything).
        """
        head = fit_sms("\n".join(self._status_head(item, lang)), room)
        note = self._note_line(item, lang)
        room -= ussd_cost(head) + 1
        if note is None or room < NOTE_LEAST:
            return head
        return f"{head}\n{fit_sms(note, room)}"

    def _status_lines(self, item: dict, lang: str, note_room: int | None = None) -> list[str]:
        """A submission as lines on a screen: the status line (and the overdue line), then the staff's last
        note when there is one, cut to `note_room` septets when given."""
        note = self._note_line(item, lang)
        if note is None:
            return self._status_head(item, lang)
        return [*self._status_head(item, lang), note if note_room is None else fit_sms(note, note_room)]

    def _status_head(self, item: dict, lang: str) -> list[str]:
        """The status line, giving the day of the last change (the day it was made, for an item without
        `changed`); and when the item is `overdue`, one line that says so and names the `agency` holding it."""
        flow = self.flows.get(item["service"])
        line = self.catalog.text(
            lang, "status.line",
            ref=item["ref"],
            service=self.catalog.text(lang, flow.title) if flow else item["service"],
            status=self.catalog.text(lang, STATUS_LABELS.get(item["status"], item["status"])),
            date=format_skeleton("MMMd", item.get("changed") or item["created"], locale=lang),
        )
        if not item.get("overdue"):
            return [line]
        agency = to_gsm7(item.get("agency") or "").strip()
        overdue = (self.catalog.text(lang, OVERDUE, agency=agency) if agency
                   else self.catalog.text(lang, OVERDUE_PLAIN))
        return [line, overdue]

    def _note_line(self, item: dict, lang: str) -> str | None:
        """The staff's last note on one line, in GSM-7; None when there is none."""
        note = " ".join(to_gsm7(item.get("note") or "").split())
        return self.catalog.text(lang, "status.note", note=note) if note else None

    # -- moving ------------------------------------------------------------

    def _flow(self, session: dict) -> Flow:
        try:
            return self.flows[session["flow"]]
        except KeyError:
            raise SessionOutdated(f"session names unknown flow {session.get('flow')!r}") from None

    def _screen(self, session: dict) -> tuple[Flow, Screen]:
        flow = self._flow(session)
        try:
            return flow, flow.screens[session["screen"]]
        except KeyError:
            raise SessionOutdated(f"session names unknown screen {session.get('screen')!r} of {flow.name}") from None

    def _fire(self, flow: Flow, state: str, trigger: str, answers: dict) -> str:
        model = _Model(state, answers)
        try:
            flow.machine.events[trigger].trigger(model)
        except (KeyError, MachineError) as error:
            raise FlowError(f"{flow.path}: screen '{state}' has no route {trigger!r}") from error
        return model.state

    def _jump(self, name: str, lang: str, ctx: Context, back: list | None = None, head: str | None = None) -> Turn:
        flow = self.flows[name]
        session = {"flow": name, "screen": flow.start, "page": 0, "answers": {}, "lang": lang,
                   "back": list(back or [])}
        return self._enter(flow, flow.start, session, ctx, head)

    def _enter(self, flow: Flow, target: str, session: dict, ctx: Context, head: str | None = None) -> Turn:
        if target.startswith("@"):
            return self._jump(target[1:], session["lang"], ctx, session["back"], head)
        screen = flow.screens[target]
        session = {**session, "screen": target, "page": 0}
        if screen.kind == "end" or self._root(session):
            session["back"] = []
        submission = language = feedback = None
        if screen.action == "submit":
            for other in flow.screens.values():
                value = session["answers"].get(other.save or "")
                if other.unique and value and ctx.lookup.taken(flow.name, other.save, value):
                    return self._enter(flow, other.unique, session, ctx)
            session["ref"] = ctx.new_reference()
            submission = {
                "service": flow.name,
                "ref": session["ref"],
                "answers": dict(session["answers"]),
                "language": session["lang"],
                "unique": {s.save: session["answers"][s.save]
                           for s in flow.screens.values() if s.unique and s.save in session["answers"]},
            }
        elif screen.action == "set_language":
            language = session["answers"]["language"]
            session["lang"] = language
        elif screen.action == "feedback":
            rating = session["answers"].get(RATING, "")
            feedback = {"ref": session["answers"].get("ref", ""), "fixed": session["answers"].get(FIXED) == "1",
                        "rating": int(rating) if rating in ("1", "2", "3", "4", "5") else None}
        if screen.kind == "notice":
            notice = "\n".join(self._lines(session["lang"], screen,
                                            self._display(flow, session["answers"], session["lang"])))
            after = self._enter(flow, self._fire(flow, target, "answer", session["answers"]), session, ctx, notice)
            return after._replace(submission=submission or after.submission, language=language or after.language)
        return self._show(session, ctx, head=head, submission=submission, language=language, feedback=feedback)

    def _back(self, session: dict, ctx: Context, pages: list[Page]) -> Turn:
        """`0`: the page before; on a first page the screen before, its answer dropped; on a root, itself."""
        if session["page"] > 0:
            return self._show({**session, "page": session["page"] - 1}, ctx, pages)
        if self._root(session):
            return self._show(session, ctx, pages)
        if not session["back"]:
            return self._jump(MAIN, session["lang"], ctx)
        flow, screen, page = session["back"][-1]
        leaving = self._screen(session)[1].save
        answers = ({answer: value for answer, value in session["answers"].items() if answer != leaving}
                   if flow == session["flow"] else {})
        return self._show({**session, "flow": flow, "screen": screen, "page": page, "answers": answers,
                           "back": session["back"][:-1]}, ctx)

    def _show(self, session: dict, ctx: Context, pages: list[Page] | None = None, *, head: str | None = None,
              submission: dict | None = None, language: str | None = None, feedback: dict | None = None) -> Turn:
        pages = pages or self._layout(session, ctx)[0]
        session = {**session, "page": min(session["page"], len(pages) - 1)}
        last = session["page"] == len(pages) - 1
        return Turn(pages[session["page"]].render(PAGE_BUDGET, head), last and self._closing(session), session,
                    submission, language, feedback)

    def _reask(self, session: dict, ctx: Context, reason: str, values: dict | None = None,
               pages: list[Page] | None = None) -> Turn:
        """The same page again, with the reason on top."""
        why = self.catalog.text(session["lang"], reason, **(values or {}))
        return self._show(session, ctx, pages, head=why)

    def _answer_offer(self, session: dict, raw: str, ctx: Context) -> Turn:
        if raw == "1":
            saved = {**session["saved"], "page": 0, "lang": session["lang"]}
            return self._show(saved, ctx)
        return self._jump(MAIN, session["lang"], ctx)

    # -- describing ----------------------------------------------------------

    def forms(self, lang: str) -> dict[str, dict]:
        """Every flow that makes submissions, as plain data in `lang`: for a backend that knows no menus.

        `{"service", "title", "label" (its main-menu choice), "address" and
        "description" (the answers with those roles, or None), "unique" (the
        answers one registration may hold, like a voter's NIK), "questions":
        [{"answer", "prompt", "kind" (choice | text), "role", "choices":
        [{"value", "label"}]}]}`, questions in menu order.
        """
        text = self.catalog.text
        labels = {branch.target[1:]: choice.label for screen in self.flows[MAIN].screens.values()
                  for choice in screen.choices for branch in choice.route if branch.target.startswith("@")}
        forms = {}
        for flow in self.flows.values():
            if not flow.submits:
                continue
            questions = [{"answer": screen.save, "prompt": text(lang, screen.text),
                          "kind": "choice" if screen.kind == "menu" else "text", "role": screen.role,
                          "choices": [{"value": c.value, "label": text(lang, c.label)} for c in screen.choices]}
                         for screen in flow.screens.values() if screen.save]
            roles = {role: (flow.role(role).save if flow.role(role) else None) for role in ROLES}
            forms[flow.name] = {"service": flow.name, "title": text(lang, flow.title),
                                "label": text(lang, labels.get(flow.name, flow.title)), **roles,
                                "unique": [s.save for s in flow.screens.values() if s.unique],
                                "questions": questions}
        return forms

    def walk(self) -> Iterator[tuple[Flow, Screen]]:
        """Every screen of every flow, for checks that must see them all."""
        for flow in self.flows.values():
            for screen in flow.screens.values():
                yield flow, screen


def _numbered(lines: list[str], labels: list[str]) -> tuple[list[str], dict[str, int]]:
    """`lines` and then the numbered `labels`, with the body line that shows each number."""
    keys = {str(number): len(lines) + number - 1 for number in range(1, len(labels) + 1)}
    return [*lines, *(f"{number}. {label}" for number, label in enumerate(labels, 1))], keys


__all__ = ["Context", "Engine", "Lookup", "Turn"]
