"""The engine: step a USSD session one input at a time.

A session is a plain dict the gateway stores between turns; the engine keeps
no state of its own. A *trigger* starts a session (`Engine.start`), a *resume*
feeds it one input (`Engine.resume`); each turn returns a `Turn`: the screen
to show, whether the session is finished, the new session dict, and the
submission or language change the gateway must commit before it answers.

    session = {"flow": "report", "screen": "location", "page": 0,
               "answers": {"category": "road"}, "lang": "id"}

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

from .catalog import N_, Catalog
from .errors import CatalogError, FlowError, SessionOutdated
from .menu import ROLES, Flow, Screen, load_menus
from .text import PREFIX_LENGTH, USSD_LIMIT, paginate
from .validate import Invalid

log = logging.getLogger(__name__)

MAIN = "main"
RESUME = "@resume"
NEXT_PAGE = "98"
PREVIOUS_PAGE = "0"
HOME = "00"
RECENT_LIMIT = 5
PAGE_BUDGET = USSD_LIMIT - PREFIX_LENGTH

STATUS_LABELS = {
    "received": N_("status.received"),
    "in_progress": N_("status.in_progress"),
    "resolved": N_("status.resolved"),
    "rejected": N_("status.rejected"),
    "review": N_("status.review"),
}
"""Catalog ids of the submission statuses a caller can see."""

ENGINE_MESSAGES = (
    N_("nav.more"), N_("nav.back"), N_("confirm.yes"), N_("confirm.no"),
    N_("invalid.choice"), N_("invalid.page"),
    N_("resume.prompt"), N_("resume.continue"), N_("resume.restart"),
    N_("status.line"), N_("status.none"), N_("status.not_found"),
    N_("invalid.digits"), N_("invalid.digits_between"), N_("invalid.date"),
    N_("invalid.date_future"), N_("invalid.text_chars"), N_("invalid.text_empty"),
    N_("invalid.text_short"), N_("invalid.text_long"), N_("invalid.code"),
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
        (dates: made, and last status change) and note (the staff's last note, or None)."""

    def find(self, ref: str) -> dict | None:
        """The caller's submission with reference `ref` (same keys), or None."""


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
        self._language_names = {lang: catalog.language_name(lang) for lang in self.languages}
        self._check_catalog()

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

        Raises `SessionOutdated` when `session` names a flow or screen the
        menus no longer have (they changed since it was saved); any other
        `FlowError` is a bug.
        """
        if session.get("lang") not in self.languages:
            session = {**session, "lang": self.default_language}
        raw = raw.strip()
        if raw == HOME:
            return self._jump(MAIN, session["lang"], ctx)
        if raw in (NEXT_PAGE, PREVIOUS_PAGE):
            pages = self.pages(session, ctx)
            page = session["page"] + (1 if raw == NEXT_PAGE else -1)
            if len(pages) > 1 and 0 <= page < len(pages):
                return self._show({**session, "page": page}, ctx, pages)
        if session["flow"] == RESUME:
            return self._answer_offer(session, raw, ctx)
        flow, screen = self._screen(session)
        answers = dict(session["answers"])
        if screen.kind == "menu":
            count = len(self.languages) if screen.choices_from else len(screen.choices)
            if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= count):
                return self._reask(session, ctx, N_("invalid.choice"))
            number = int(raw)
            if screen.save:
                answers[screen.save] = (self.languages[number - 1] if screen.choices_from
                                        else screen.choices[number - 1].value)
            trigger = "answer" if screen.choices_from else f"choose_{number}"
        elif screen.kind == "input":
            outcome = screen.validator(raw, ctx.today, answers)
            if isinstance(outcome, Invalid):
                return self._reask(session, ctx, outcome.reason, outcome.values)
            answers[screen.save] = outcome.value
            trigger = "answer"
            if screen.unique and ctx.lookup.taken(flow.name, screen.save, outcome.value):
                trigger = "taken"
        elif screen.kind == "confirm":
            if raw not in ("1", "2"):
                return self._reask(session, ctx, N_("invalid.choice"))
            trigger = "accept" if raw == "1" else "decline"
        else:
            return self._reask(session, ctx, N_("invalid.page"))
        target = self._fire(flow, screen.name, trigger, answers)
        return self._enter(flow, target, {**session, "answers": answers}, ctx)

    def resumable(self, session: dict) -> bool:
        """True when a dropped `session` is worth offering to continue."""
        if session.get("flow") == RESUME:
            return True
        flow = self.flows.get(session.get("flow", ""))
        return bool(flow and flow.submits and session.get("answers"))

    # -- rendering ---------------------------------------------------------

    def pages(self, session: dict, ctx: Context, reason: str | None = None) -> list[str]:
        """The current screen of `session` split into pages that fit one USSD screen."""
        lang = session["lang"]
        body = self._body(session, ctx)
        if reason:
            body = f"{reason}\n{body}"
        more = f"{NEXT_PAGE}. {self.catalog.text(lang, 'nav.more')}"
        back = f"{PREVIOUS_PAGE}. {self.catalog.text(lang, 'nav.back')}"
        return paginate(body, PAGE_BUDGET, more, back, back_on_last=not self._closing(session))

    def _closing(self, session: dict) -> bool:
        """True when the session's screen ends the session (its last page is an `END`)."""
        return session["flow"] != RESUME and self._screen(session)[1].kind == "end"

    def _body(self, session: dict, ctx: Context) -> str:
        lang = session["lang"]
        text = self.catalog.text
        if session["flow"] == RESUME:
            saved = session["saved"]
            title = text(lang, self._flow(saved).title)
            return "\n".join([text(lang, "resume.prompt", service=title),
                              f"1. {text(lang, 'resume.continue')}",
                              f"2. {text(lang, 'resume.restart')}"])
        flow, screen = self._screen(session)
        values = self._display(flow, session["answers"], lang)
        if "ref" in session:
            values["ref"] = session["ref"]
        lines = [line.rstrip() for line in text(lang, screen.text, **values).split("\n")]
        if screen.kind == "menu":
            labels = ([self._language_names[code] for code in self.languages] if screen.choices_from
                      else [text(lang, choice.label) for choice in screen.choices])
            lines += [f"{number}. {label}" for number, label in enumerate(labels, 1)]
        elif screen.kind == "confirm":
            lines += [f"1. {text(lang, 'confirm.yes')}", f"2. {text(lang, 'confirm.no')}"]
        elif screen.show == "recent":
            found = ctx.lookup.recent(RECENT_LIMIT)
            lines += [self.status_line(item, lang) for item in found] or [text(lang, "status.none")]
        elif screen.show == "submission":
            item = ctx.lookup.find(session["answers"].get("ref", ""))
            lines.append(self.status_line(item, lang) if item else text(lang, "status.not_found"))
        return "\n".join(lines)

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
                        shown[answer] = self.catalog.text(lang, choice.label)
            elif screen.check == "date":
                shown[answer] = format_date(dt.date.fromisoformat(value), "medium", locale=lang)
        return shown

    def status_line(self, item: dict, lang: str) -> str:
        """One submission as a line: reference, service, status, date."""
        flow = self.flows.get(item["service"])
        return self.catalog.text(
            lang, "status.line",
            ref=item["ref"],
            service=self.catalog.text(lang, flow.title) if flow else item["service"],
            status=self.catalog.text(lang, STATUS_LABELS.get(item["status"], item["status"])),
            date=format_skeleton("MMMd", item["created"], locale=lang),
        )

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

    def _jump(self, name: str, lang: str, ctx: Context) -> Turn:
        flow = self.flows[name]
        session = {"flow": name, "screen": flow.start, "page": 0, "answers": {}, "lang": lang}
        return self._enter(flow, flow.start, session, ctx)

    def _enter(self, flow: Flow, target: str, session: dict, ctx: Context) -> Turn:
        if target.startswith("@"):
            return self._jump(target[1:], session["lang"], ctx)
        screen = flow.screens[target]
        session = {**session, "screen": target, "page": 0}
        submission = language = None
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
        return self._show(session, ctx, submission=submission, language=language)

    def _show(self, session: dict, ctx: Context, pages: list[str] | None = None, *,
              submission: dict | None = None, language: str | None = None) -> Turn:
        pages = pages or self.pages(session, ctx)
        last = session["page"] == len(pages) - 1
        return Turn(pages[session["page"]], last and self._closing(session), session, submission, language)

    def _reask(self, session: dict, ctx: Context, reason: str, values: dict | None = None) -> Turn:
        session = {**session, "page": 0}
        why = self.catalog.text(session["lang"], reason, **(values or {}))
        pages = self.pages(session, ctx, reason=why)
        return Turn(pages[0], False, session)

    def _answer_offer(self, session: dict, raw: str, ctx: Context) -> Turn:
        if raw == "1":
            saved = {**session["saved"], "page": 0, "lang": session["lang"]}
            return self._show(saved, ctx)
        if raw == "2":
            return self._jump(MAIN, session["lang"], ctx)
        return self._reask(session, ctx, N_("invalid.choice"))

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


__all__ = ["Context", "Engine", "Lookup", "Turn"]
