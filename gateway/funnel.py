"""Where USSD callers give up: each session's path of screens, counted per flow and screen, drawn as SVG.

Recording (`record`, called by `ussd.ussd_turn` inside the hop's
transaction) is one UPSERT per hop: the session's row in `funnel_sessions`
gets the screen it now shows (`flow/screen`) appended when it moved there,
and whether it ended. No phone or answer is kept, only screen names. A new
dial that is offered a dropped session points to it (`Store.funnel_resumed`);
choosing to start afresh cuts that link again.

Counting (`figures`) happens when the kiosk reads, for the sessions begun
in the period (UTC days). A session and the later dials that resumed it are
one session, counted once. Per flow (the main menu is one):

    started     the session showed a screen of the flow
    reached     per screen: the session showed it (once, however often)
    completed   the flow did its work: a submission (an `end` with
                `action: submit`), a finished lookup (a `view`), or it handed
                the caller on by its own route (a menu's choice, a saved
                language's way back to the main menu)
    cancelled   not completed, and the caller chose to leave: a confirm
                screen's `decline`, or back to the main menu (`00`, `0`)
    dropped     not completed, and the session stopped there: it did not
                end, and has been idle for `ussd.resume_minutes` (until
                then it may still be resumed: `open`)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape

from flows import Engine, Turn
from flows.catalog import N_
from flows.engine import MAIN, RESUME
from flows.menu import Flow, Screen
from sync.database import stamp
from sync.store import Store

LABEL_LIMIT = 24
"""Characters of a screen's own catalog text short enough to name its bar; longer ones show the state name."""
PERIODS = {1: N_("web.funnel.days_1"), 7: N_("web.funnel.days_7")}
"""Days the kiosk shows, with their words: today, or the last seven (today included)."""
OUTCOMES = ("completed", "cancelled", "dropped", "open")
BAR_WORDS = N_("web.funnel.bar")
"""One bar's text label: the screen, how many sessions reached it and how many dropped there."""


def record(store: Store, session_id: str, before: dict | None, step: Turn) -> None:
    """The screen `step` shows, for the funnel; `before` is the session's state before this hop (None on the first).

    The offer to resume a dropped session is no screen of a flow: it is not recorded.
    """
    session = step.session
    if session["flow"] == RESUME:
        return
    restarted = before is not None and before.get("flow") == RESUME and session["flow"] == MAIN
    store.funnel_step(session_id, f"{session['flow']}/{session['screen']}", ended=step.done, restarted=restarted)


# -- counting ---------------------------------------------------------------------

@dataclass
class Journey:
    """One caller's session, its resumptions joined: the screens in order, whether it ended, when last touched."""

    day: str
    steps: list[tuple[str, str]]
    ended: bool
    updated_at: str


def journeys(rows: list[dict]) -> list[Journey]:
    """`Store.funnel_sessions` rows joined into sessions: a row that resumes another continues it."""
    by_id = {row["session_id"]: row for row in rows}
    after = {}
    for row in sorted(rows, key=lambda r: r["updated_at"]):
        if row["resumes"] in by_id and row["resumes"] not in after:
            after[row["resumes"]] = row
    continuations = {id(row) for row in after.values()}
    found = []
    for row in rows:
        if id(row) in continuations:
            continue
        chain = [row]
        while chain[-1]["session_id"] in after and len(chain) <= len(rows):
            chain.append(after[chain[-1]["session_id"]])
        steps: list[tuple[str, str]] = []
        for part in chain:
            for token in part["path"].split():
                flow, _, screen = token.partition("/")
                if not steps or steps[-1] != (flow, screen):
                    steps.append((flow, screen))
        found.append(Journey(row["day"], steps, bool(chain[-1]["ended"]), max(p["updated_at"] for p in chain)))
    return found


def _routes(screen: Screen) -> list[str]:
    return [branch.target for branches in (screen.next, screen.accept, screen.decline,
                                           *(choice.route for choice in screen.choices)) for branch in branches]


def hands_on(flow: Flow, screen: str, other: str, seen: frozenset = frozenset()) -> bool:
    """True when `screen` of `flow` leads by its own route to flow `other` (through notices, shown on the way)."""
    for target in _routes(flow.screens[screen]):
        if target == f"@{other}":
            return True
        if (target in flow.screens and target not in seen and flow.screens[target].kind == "notice"
                and hands_on(flow, target, other, seen | {screen})):
            return True
    return False


def _finishes(screen: Screen) -> bool:
    return (screen.kind == "end" and screen.action == "submit") or screen.kind == "view"


def _declines(flow: Flow) -> set[str]:
    return {branch.target for screen in flow.screens.values() for branch in screen.decline}


def outcomes(journey: Journey, flows: dict[str, Flow], idle: bool) -> dict[str, tuple[str, str | None]]:
    """Per flow the journey showed: (outcome, the screen it stopped on when dropped or open; else None)."""
    steps = [(f, s) for f, s in journey.steps if f in flows and s in flows[f].screens]
    visits: list[list[tuple[str, str]]] = []
    for step in steps:
        if visits and visits[-1][0][0] == step[0]:
            visits[-1].append(step)
        else:
            visits.append([step])
    result: dict[str, tuple[str, str | None]] = {}
    for number, visit in enumerate(visits):
        name = visit[0][0]
        flow = flows[name]
        if result.get(name, ("",))[0] == "completed":
            continue
        last = visit[-1][1]
        following = visits[number + 1][0][0] if number + 1 < len(visits) else None
        if any(_finishes(flow.screens[s]) for _, s in visit) or (following and hands_on(flow, last, following)):
            result[name] = ("completed", None)
        elif following or last in _declines(flow):
            result[name] = ("cancelled", None)
        elif not journey.ended:
            result[name] = ("dropped", last) if idle else ("open", last)
        else:
            result[name] = ("ended", None)
    return result


def figures(engine: Engine, lang: str, rows: list[dict], now: dt.datetime, resume_window: dt.timedelta,
            days: int) -> dict:
    """The funnel of the sessions in `rows`, per flow in menu order, with each screen's label in `lang`."""
    flows = engine.flows
    counts = {name: {"started": 0, **{o: 0 for o in OUTCOMES}, "reached": {}, "stopped": {}} for name in flows}
    idle_since = stamp(now - resume_window)
    for journey in journeys(rows):
        seen = {(f, s) for f, s in journey.steps if f in flows and s in flows[f].screens}
        for name in {f for f, _ in seen}:
            counts[name]["started"] += 1
        for name, screen in seen:
            counts[name]["reached"][screen] = counts[name]["reached"].get(screen, 0) + 1
        for name, (outcome, screen) in outcomes(journey, flows, journey.updated_at <= idle_since).items():
            if outcome in OUTCOMES:
                counts[name][outcome] += 1
            if outcome == "dropped":
                counts[name]["stopped"][screen] = counts[name]["stopped"].get(screen, 0) + 1
    today = now.astimezone(dt.timezone.utc).date()
    return {"days": days, "from": (today - dt.timedelta(days=days - 1)).isoformat(), "to": today.isoformat(),
            "resume_minutes": resume_window.total_seconds() / 60,
            "flows": [{"flow": name, "title": engine.catalog.text(lang, flows[name].title),
                       **{key: counts[name][key] for key in ("started", *OUTCOMES)},
                       "screens": [{"screen": screen.name, "label": screen_label(engine, lang, screen),
                                    "reached": counts[name]["reached"].get(screen.name, 0),
                                    "dropped": counts[name]["stopped"].get(screen.name, 0)}
                                   for screen in flows[name].screens.values()
                                   if screen.kind != "notice"]}
                      for name in menu_order(engine) if counts[name]["started"]]}


def since_day(now: dt.datetime, days: int) -> str:
    """The first UTC day of a period of `days` ending today."""
    return (now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=days - 1)).isoformat()


def menu_order(engine: Engine) -> list[str]:
    """The flows as a caller meets them: the main menu, then its choices in order, then any other."""
    order = [MAIN]
    for screen in engine.flows[MAIN].screens.values():
        order += [target[1:] for target in _routes(screen) if target.startswith("@")]
    return [name for name in dict.fromkeys([*order, *engine.flows]) if name in engine.flows]


def screen_label(engine: Engine, lang: str, screen: Screen) -> str:
    """A screen's name in `lang`: its own catalog text when short and plain, else its state name."""
    text = engine.catalog.translations(lang).gettext(screen.text).strip().rstrip(":").strip()
    plain = text and text != screen.text and "{" not in text and "\n" not in text
    return text if plain and len(text) <= LABEL_LIMIT else screen.name


# -- drawing ------------------------------------------------------------------------

ROW = 46
WIDTH = 320


def svg(flow: dict, gettext, chart_id: str) -> str:
    """One flow's funnel as inline SVG: per screen a bar of the sessions that reached it, the part that
    dropped there darker, and a text label with both numbers; titled and described for screen readers."""
    widest = max([flow["started"], *(s["reached"] for s in flow["screens"])], default=0) or 1
    screens = [s for s in flow["screens"] if s["reached"]]
    height = ROW * len(screens) + 4
    title = gettext("web.funnel.chart_title").format(flow=flow["title"])
    desc = gettext("web.funnel.chart_desc").format(started=flow["started"], completed=flow["completed"],
                                                   cancelled=flow["cancelled"], dropped=flow["dropped"])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {height}" '
             f'width="100%" aria-labelledby="{chart_id}-t {chart_id}-d" class="funnel">',
             f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(desc)}</desc>']
    for row, screen in enumerate(screens):
        top = row * ROW
        reached = round(WIDTH * screen["reached"] / widest, 1)
        dropped = round(WIDTH * screen["dropped"] / widest, 1)
        label = gettext(BAR_WORDS).format(screen=screen["label"], reached=screen["reached"],
                                          dropped=screen["dropped"])
        parts.append(f'<text x="0" y="{top + 15}" class="label">{escape(label)}</text>'
                     f'<rect x="0" y="{top + 21}" width="{max(reached, 2)}" height="18" class="reached"/>')
        if screen["dropped"]:
            parts.append(f'<rect x="0" y="{top + 21}" width="{max(dropped, 2)}" height="18" class="dropped"/>')
    parts.append("</svg>")
    return "".join(parts)
