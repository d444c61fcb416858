"""Menu definitions: load `menus/*.yaml`, check them, compile each into a machine.

A menu file declares one flow (see README, "Menu files"). Each screen becomes
a state of a `transitions` machine and each way out of it a trigger:

    menu      choose_<n> for the n-th choice (`answer` for generated choices)
    input     answer, and taken when the screen is `unique`
    confirm   accept, decline (not yes/no: YAML 1.1 reads those keys as booleans)
    notice    answer, at once: a one-line confirmation (after its `action`) shown
              on top of the screen it leads to, like a saved language over the
              main menu
    view      none: it shows something (`show`) and waits for the keys below; with
              `rate: <screen>` on a `show: submission` view, a resolved submission
              the caller has not yet said is fixed is offered 1 fixed / 2 not
              fixed (choose_1, choose_2), both to that screen
    end       none: it closes the session
    any       invalid (internal: stays, re-asks)

Three keys are the engine's on every screen, never an answer: `0` back one
page or screen, `00` the main menu, `98` the next page. A validator that
could take one of them as its value (`digits` of length 1-2) is refused,
since that value could never be typed; free text that is only `0`, `00` or
`98` is navigation too, which no name or place is.

A target is a screen of the same flow, or `@<flow>` to jump to the start of
another flow (`@main` is the main menu). A target can branch on answers:

    next:
      - when: {kind: other}
        to: kind_other
      - to: village

What code needs to know about an answer is named here too, never in Python:

    role: address          on an input screen: the answer that says where (staff, Open311)
    role: description      on an input screen: the answer that says what, in the caller's words
    sms_word: <msgid>      on a choice: the word that picks it in an SMS (`LAPOR JALAN ...`)
    shown_as: <answer>     on a choice: summaries show that later answer in its place
                           ("Other" then "Tailoring" reads "Tailoring", not "Other Tailoring")
    sms: {keyword, usage}  on a flow: `<keyword> <sms_word> <description>` submits it by SMS;
                           `usage` is the message that explains how, when an SMS gets it wrong
    asks_fixed: true       on a flow: its resolution asks the villager "is it fixed?" (a report
                           of a problem; not a registration, which nobody fixes)

The machines are built once when the engine loads; a turn only fires one
trigger on a throw-away model (see `engine.py`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from transitions import Machine

from . import validate
from .errors import MenuError

SPEC_VERSION = 1
KINDS = ("menu", "input", "confirm", "notice", "view", "end")
SHOWS = ("recent", "submission")
ACTIONS = ("submit", "set_language", "feedback")
CHOICE_SOURCES = ("languages",)
ROLES = ("address", "description")
BACK = "0"
HOME = "00"
NEXT_PAGE = "98"
NAVIGATION = (BACK, HOME, NEXT_PAGE)
"""Keys the engine reads on every screen before the screen sees them (see the module docstring)."""
_PROBE_DAY = dt.date(2000, 1, 1)  # any day: no navigation key is a date

_KEYS = {
    "menu": {"kind", "text", "choices", "choices_from", "save", "next"},
    "input": {"kind", "text", "validate", "save", "next", "unique", "role"},
    "confirm": {"kind", "text", "accept", "decline"},
    "notice": {"kind", "text", "action", "next"},
    "view": {"kind", "text", "show", "rate"},
    "end": {"kind", "text", "show", "action"},
}
_FLOW_KEYS = {"spec_version", "flow", "title", "start", "screens", "submits", "sms", "asks_fixed"}


@dataclass(frozen=True)
class Branch:
    """One way a route can go: to `target` when every `when` answer matches."""

    target: str
    when: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Choice:
    label: str
    value: str
    route: tuple[Branch, ...]
    sms_word: str | None = None
    shown_as: str | None = None


@dataclass(frozen=True)
class SmsForm:
    """How an SMS submits a flow: `<keyword> <word of a choice> <description>`."""

    keyword: str
    usage: str
    choose: str
    describe: str


@dataclass(frozen=True)
class Screen:
    """One compiled screen: what it shows, what it saves, where each answer goes."""

    name: str
    kind: str
    text: str
    save: str | None = None
    choices: tuple[Choice, ...] = ()
    choices_from: str | None = None
    validator: Any = None
    check: str | None = None
    longest: int = 0
    next: tuple[Branch, ...] = ()
    accept: tuple[Branch, ...] = ()
    decline: tuple[Branch, ...] = ()
    unique: str | None = None
    show: str | None = None
    action: str | None = None
    role: str | None = None
    rate: tuple[Branch, ...] = ()


@dataclass
class Flow:
    """One compiled menu file."""

    name: str
    title: str
    start: str
    screens: dict[str, Screen]
    submits: bool
    path: Path
    sms: SmsForm | None = None
    asks_fixed: bool = False
    machine: Machine = field(repr=False, default=None)

    def saved_by(self, answer: str) -> Screen | None:
        """The screen that saves `answer`, if any (the first in the file, should two save it)."""
        return self._savers.get(answer)

    @cached_property
    def _savers(self) -> dict[str, Screen]:
        """Each answer and the first screen that saves it: every turn's summary asks for each answer, and the
        screens of a loaded flow never change."""
        savers: dict[str, Screen] = {}
        for screen in self.screens.values():
            if isinstance(screen.save, str):
                savers.setdefault(screen.save, screen)
        return savers

    def role(self, role: str) -> Screen | None:
        """The screen whose answer plays `role` (see ROLES), if any."""
        for screen in self.screens.values():
            if screen.role == role:
                return screen
        return None

    @property
    def jumps(self) -> set[str]:
        """Flows this flow can jump to (`@name` targets)."""
        return {branch.target[1:] for _, branch in _branches(self) if branch.target.startswith("@")}


def load_menus(folder: str | Path) -> dict[str, Flow]:
    """Load and compile every `*.yaml` in `folder`; raise `MenuError` naming file and screen."""
    root = Path(folder)
    paths = sorted(root.glob("*.yaml"))
    if not paths:
        raise MenuError(f"{root}: no menu files (*.yaml)")
    flows = {}
    for path in paths:
        flow = load_flow(path)
        flows[flow.name] = flow
    if "main" not in flows:
        raise MenuError(f"{root}: no main menu (main.yaml)")
    for flow in flows.values():
        for target in sorted(flow.jumps):
            if target not in flows:
                raise MenuError(f"{flow.path}: jumps to unknown flow '@{target}'")
    return flows


def load_flow(path: str | Path) -> Flow:
    """Load, check and compile one menu file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise MenuError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise MenuError(f"{path}: a menu file is a mapping with 'flow', 'start' and 'screens'")
    data = _migrate(data, path)
    unknown = set(data) - _FLOW_KEYS
    if unknown:
        raise MenuError(f"{path}: unknown keys {sorted(unknown)}")
    name = data.get("flow")
    if name != path.stem:
        raise MenuError(f"{path}: 'flow' must be {path.stem!r} (the file name), not {name!r}")
    screens_data = data.get("screens")
    if not isinstance(screens_data, dict) or not screens_data:
        raise MenuError(f"{path}: 'screens' must be a non-empty mapping")
    screens = {key: _screen(str(key), value, f"{path}: screen '{key}'") for key, value in screens_data.items()}
    start = data.get("start")
    if start not in screens:
        raise MenuError(f"{path}: 'start' names no screen: {start!r}")
    flow = Flow(
        name=name,
        title=_msgid(data.get("title"), f"{path}: 'title'"),
        start=start,
        screens=screens,
        submits=bool(data.get("submits", False)),
        path=path,
        asks_fixed=data.get("asks_fixed") is True,
    )
    _check_targets(flow)
    _check_roles(flow)
    if "sms" in data:
        flow.sms = _sms(flow, data["sms"])
    flow.machine = _compile(flow)
    return flow


def _migrate(data: dict, path: Path) -> dict:
    version = data.get("spec_version")
    if version != SPEC_VERSION:
        raise MenuError(f"{path}: spec_version must be {SPEC_VERSION}, not {version!r}")
    return data


def _msgid(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MenuError(f"{where} must be a catalog message id")
    return value


def _route(value: Any, where: str) -> tuple[Branch, ...]:
    if isinstance(value, str) and value:
        return (Branch(value),)
    if not isinstance(value, list) or not value:
        raise MenuError(f"{where} must be a screen name or a list of {{when, to}}")
    branches = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, dict) or not isinstance(item.get("to"), str) or set(item) - {"to", "when"}:
            raise MenuError(f"{where}, branch {number}: needs 'to' and may have 'when'")
        when = item.get("when", {})
        if not isinstance(when, dict):
            raise MenuError(f"{where}, branch {number}: 'when' maps answers to values")
        branches.append(Branch(item["to"], tuple((str(k), str(v)) for k, v in when.items())))
    if branches[-1].when:
        raise MenuError(f"{where}: the last branch must have no 'when' (it is the default)")
    return tuple(branches)


def _screen(name: str, data: Any, where: str) -> Screen:
    if not isinstance(data, dict):
        raise MenuError(f"{where}: must be a mapping")
    kind = data.get("kind")
    if kind not in KINDS:
        raise MenuError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    unknown = set(data) - _KEYS[kind]
    if unknown:
        raise MenuError(f"{where}: keys {sorted(unknown)} do not belong on a {kind} screen")
    text = _msgid(data.get("text"), f"{where}: 'text'")
    fields: dict[str, Any] = {"name": name, "kind": kind, "text": text}
    if kind == "menu":
        if ("choices" in data) == ("choices_from" in data):
            raise MenuError(f"{where}: a menu needs 'choices' or 'choices_from' (one of them)")
        if "choices_from" in data:
            if data["choices_from"] not in CHOICE_SOURCES:
                raise MenuError(f"{where}: 'choices_from' must be one of {CHOICE_SOURCES}")
            fields["choices_from"] = data["choices_from"]
            fields["next"] = _route(data.get("next"), f"{where}: 'next'")
        else:
            fields["choices"] = _choices(data["choices"], data.get("next"), where)
        fields["save"] = data.get("save")
    elif kind == "input":
        if not isinstance(data.get("save"), str):
            raise MenuError(f"{where}: an input screen needs 'save' (the answer's name)")
        fields["save"] = data["save"]
        fields["validator"], fields["longest"] = validate.build(data.get("validate"), where)
        fields["check"] = data["validate"]["type"]
        _check_navigation(fields["validator"], fields["check"], where)
        fields["next"] = _route(data.get("next"), f"{where}: 'next'")
        if "unique" in data:
            fields["unique"] = _route(data["unique"], f"{where}: 'unique'")[0].target
        if "role" in data:
            if data["role"] not in ROLES:
                raise MenuError(f"{where}: 'role' must be one of {', '.join(ROLES)}, not {data['role']!r}")
            fields["role"] = data["role"]
    elif kind == "confirm":
        fields["accept"] = _route(data.get("accept"), f"{where}: 'accept'")
        fields["decline"] = _route(data.get("decline"), f"{where}: 'decline'")
    else:
        if kind == "notice":
            fields["next"] = _route(data.get("next"), f"{where}: 'next'")
        if data.get("show") is not None and data["show"] not in SHOWS:
            raise MenuError(f"{where}: 'show' must be one of {SHOWS}")
        if data.get("action") is not None and data["action"] not in ACTIONS:
            raise MenuError(f"{where}: 'action' must be one of {ACTIONS}")
        fields["show"] = data.get("show")
        fields["action"] = data.get("action")
        if "rate" in data:
            if fields["show"] != "submission":
                raise MenuError(f"{where}: 'rate' belongs on a view with 'show: submission'")
            fields["rate"] = _route(data["rate"], f"{where}: 'rate'")
    return Screen(**fields)


def _check_navigation(validator: validate.Validator, check: str, where: str) -> None:
    """Refuse a validator that takes a navigation key as a value: the caller could never give it.

    Free text is the exception: no name or place is `0`, `00` or `98`.
    """
    if check == "text":
        return
    taken = [key for key in NAVIGATION if isinstance(validator(key, _PROBE_DAY, {}), validate.Valid)]
    if taken:
        raise MenuError(f"{where}: the validator accepts {', '.join(taken)}, which are navigation keys "
                        f"(0 back, 00 main menu, 98 next page); ask for at least 3 characters")


def _choices(items: Any, default_next: Any, where: str) -> tuple[Choice, ...]:
    if not isinstance(items, list) or not items:
        raise MenuError(f"{where}: 'choices' must be a non-empty list")
    if len(items) > 9:
        raise MenuError(f"{where}: at most 9 choices (one key each); split the menu")
    choices = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict) or set(item) - {"label", "value", "next", "sms_word", "shown_as"}:
            raise MenuError(f"{where}, choice {number}: needs 'label', may have 'value', 'next', 'sms_word' "
                            f"and 'shown_as'")
        label = _msgid(item.get("label"), f"{where}, choice {number}: 'label'")
        target = item.get("next", default_next)
        route = _route(target, f"{where}, choice {number}: 'next'")
        word = _msgid(item["sms_word"], f"{where}, choice {number}: 'sms_word'") if "sms_word" in item else None
        shown_as = item.get("shown_as")
        if shown_as is not None and (not isinstance(shown_as, str) or not shown_as):
            raise MenuError(f"{where}, choice {number}: 'shown_as' must name an answer")
        choices.append(Choice(label, str(item.get("value", number)), route, word, shown_as))
    return tuple(choices)


def _branches(flow: Flow):
    for screen in flow.screens.values():
        for branch in (*screen.next, *screen.accept, *screen.decline, *screen.rate):
            yield screen, branch
        for choice in screen.choices:
            for branch in choice.route:
                yield screen, branch
        if screen.unique:
            yield screen, Branch(screen.unique)


def _check_targets(flow: Flow) -> None:
    for screen, branch in _branches(flow):
        if not branch.target.startswith("@") and branch.target not in flow.screens:
            raise MenuError(f"{flow.path}: screen '{screen.name}': goes to unknown screen {branch.target!r}")
        for answer, _ in branch.when:
            if flow.saved_by(answer) is None:
                raise MenuError(f"{flow.path}: screen '{screen.name}': branches on {answer!r}, "
                                f"which no screen saves")
    for screen in flow.screens.values():
        for choice in screen.choices:
            if choice.shown_as and flow.saved_by(choice.shown_as) is None:
                raise MenuError(f"{flow.path}: screen '{screen.name}': a choice is shown as "
                                f"{choice.shown_as!r}, which no screen saves")
        if screen.action == "submit" and not flow.submits:
            raise MenuError(f"{flow.path}: screen '{screen.name}': 'submit' in a flow without 'submits: true'")
        if screen.action == "feedback" and not any(other.rate for other in flow.screens.values()):
            raise MenuError(f"{flow.path}: screen '{screen.name}': 'feedback' needs a view with 'rate'")
        if screen.action == "set_language" and flow.saved_by("language") is None:
            raise MenuError(f"{flow.path}: screen '{screen.name}': 'set_language' needs a screen "
                            f"that saves 'language'")


def _check_roles(flow: Flow) -> None:
    seen: dict[str, str] = {}
    for screen in flow.screens.values():
        if screen.role is None:
            continue
        if not flow.submits:
            raise MenuError(f"{flow.path}: screen '{screen.name}': 'role' in a flow without 'submits: true'")
        if screen.role in seen:
            raise MenuError(f"{flow.path}: screen '{screen.name}': role {screen.role!r} is already "
                            f"screen '{seen[screen.role]}'s")
        seen[screen.role] = screen.name
    for screen in flow.screens.values():
        words = [choice.sms_word for choice in screen.choices]
        if any(words) and not (all(words) and screen.save):
            raise MenuError(f"{flow.path}: screen '{screen.name}': give every choice an 'sms_word', "
                            f"and 'save' the answer, or give none")


def _sms(flow: Flow, data: Any) -> SmsForm:
    where = f"{flow.path}: 'sms'"
    if not isinstance(data, dict) or set(data) != {"keyword", "usage"}:
        raise MenuError(f"{where} must be a mapping with 'keyword' and 'usage' (catalog ids)")
    if not flow.submits:
        raise MenuError(f"{where}: only a flow with 'submits: true' can be submitted by SMS")
    worded = [s for s in flow.screens.values() if any(c.sms_word for c in s.choices)]
    if len(worded) != 1:
        raise MenuError(f"{where}: needs exactly one menu screen whose choices have an 'sms_word' "
                        f"(found {len(worded)})")
    describe = flow.role("description")
    if describe is None:
        raise MenuError(f"{where}: needs an input screen with 'role: description' (the rest of the SMS)")
    return SmsForm(_msgid(data["keyword"], f"{where}: 'keyword'"), _msgid(data["usage"], f"{where}: 'usage'"),
                   worded[0].save, describe.save)


def _condition(when: tuple[tuple[str, str], ...]):
    def holds(event) -> bool:
        answers = event.model.answers
        return all(answers.get(answer) == value for answer, value in when)

    return holds


def _compile(flow: Flow) -> Machine:
    jumps = sorted({branch.target for _, branch in _branches(flow) if branch.target.startswith("@")})
    machine = Machine(
        model=None,
        states=[*flow.screens, *jumps],
        initial=flow.start,
        auto_transitions=False,
        send_event=True,
    )

    def add(trigger: str, source: str, route: tuple[Branch, ...]) -> None:
        for branch in route:
            conditions = [_condition(branch.when)] if branch.when else None
            machine.add_transition(trigger, source, branch.target, conditions=conditions)

    for screen in flow.screens.values():
        machine.add_transition("invalid", screen.name, None)
        for number, choice in enumerate(screen.choices, 1):
            add(f"choose_{number}", screen.name, choice.route)
        if screen.next:
            add("answer", screen.name, screen.next)
        if screen.accept:
            add("accept", screen.name, screen.accept)
            add("decline", screen.name, screen.decline)
        if screen.unique:
            add("taken", screen.name, (Branch(screen.unique),))
        if screen.rate:
            add("choose_1", screen.name, screen.rate)
            add("choose_2", screen.name, screen.rate)
    return machine
