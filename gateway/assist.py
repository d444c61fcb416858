"""Assisted entry at `/kiosk/assist`: an operator runs a flow of the main menu for a walk-in villager.

A request entered at the kiosk must be asked, checked, worded and stored
exactly as if the villager had dialed, so this page is only another face of
the engine: each screen is the engine's own screen text, its numbered
choices become buttons carrying the key a caller would type, a free answer
goes through the same validator and comes back with the same reason, and
Back and Home are the engine's `0` and `00`. A submission goes through
`turn.submit` (channel `kiosk`, the operator's name recorded on it) and
writes an audit row `assist`.

The engine's session lives in the store like a USSD session (sealed, in
`ussd_sessions`, never resumable), under a random id the page carries in a
hidden field. The browser sends back that id, the number of the turn its
form answers and one input, never a state; a form posted again (a reload, a
double click) is answered with the screen as it is, not stepped twice. The
session belongs to the web session that opened it: another operator, or the
same one signed in elsewhere, is refused.

The villager's phone is optional. With one, screens are in the language it
chose, a language choice is remembered for it, and the confirmation SMS goes
to it through the outbox. Without one (`NO_PHONE`) nothing is sent and the
last page is a printable receipt: reference, service, date and the answers
chosen from a list (typed answers too, for a role that may see personal
fields).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets

from aiohttp import web
from babel.dates import format_date

from flows import Engine, SessionOutdated, Turn
from flows.catalog import N_
from flows.engine import MAIN
from flows.menu import BACK, HOME, NAVIGATION, NEXT_PAGE
from sync.pages import account_key, form, language, pages_key, render, require
from sync.seal import mask_phone
from sync.store import NO_PHONE, Store

from . import turn
from .callback import BadCallback, e164
from .resources import Rules, engine_key, rules_key, sender_key, store_key

log = logging.getLogger(__name__)

CHANNEL = "kiosk"
SESSION_PREFIX = "kiosk-"
SESSION_ID = re.compile(r"kiosk-[A-Za-z0-9_-]{24}")
TURN_DIGITS = 6
PHONE_MAX = 32
CHOICE = re.compile(r"(\d{1,2})\. (.*)")
"""A numbered line of a menu screen, as the engine writes it: `3. Uncollected garbage`."""

PHONE_INVALID = N_("web.assist.phone_invalid")
GONE = N_("web.assist.gone")
NOT_YOURS = N_("web.assist.not_yours")


def setup_assist(app: web.Application, prefix: str) -> None:
    app.router.add_get(f"{prefix}/assist", start_form)
    app.router.add_post(f"{prefix}/assist", start)
    app.router.add_post(f"{prefix}/assist/step", step)
    app.router.add_get(f"{prefix}/assist/step", restart)
    app.router.add_get(f"{prefix}/assist/{{session}}", show)


# -- handlers -------------------------------------------------------------------------

@require("act")
async def start_form(request: web.Request) -> web.Response:
    return render(request, "assist.html", {"phone": ""})


@require("act")
async def start(request: web.Request) -> web.Response:
    typed = (await form(request)).get("phone", "").strip()[:PHONE_MAX]
    phone = NO_PHONE
    if typed:
        try:
            phone = e164(typed, "phone")
        except BadCallback:
            return render(request, "assist.html", {"phone": typed, "reason": PHONE_INVALID}, status=400)
    session_id = SESSION_PREFIX + secrets.token_urlsafe(18)
    app = request.app
    shown = await app[store_key].call(open_entry, app[engine_key], app[rules_key], session_id, phone,
                                      request[account_key], language(request))
    log.info("assisted entry %s opened by %s for %s", session_id, shown["record"]["operator"],
             "no phone" if phone == NO_PHONE else mask_phone(phone))
    return _screen_page(request, session_id, shown)


@require("act")
async def restart(request: web.Request) -> web.Response:
    """A step's address opened, not posted (a language picked mid-entry): the start page, in that language."""
    raise web.HTTPSeeOther(request.path_qs.replace("/assist/step", "/assist", 1))


@require("act")
async def show(request: web.Request) -> web.Response:
    """An entry's screen as it is, for the operator who opened it: where a language picked mid-entry lands."""
    session_id = request.match_info["session"]
    shown = await request.app[store_key].call(current_entry, session_id, request[account_key]) \
        if SESSION_ID.fullmatch(session_id) else GONE
    if shown == NOT_YOURS:
        return render(request, "message.html", {"message": NOT_YOURS}, status=403)
    if shown == GONE:
        return render(request, "message.html", {"message": GONE}, status=404)
    return _screen_page(request, session_id, shown)


@require("act")
async def step(request: web.Request) -> web.Response:
    fields = await form(request)
    session_id, number = fields.get("session", ""), fields.get("turn", "")
    if not (SESSION_ID.fullmatch(session_id) and number.isascii() and number.isdigit()
            and len(number) <= TURN_DIGITS):
        return render(request, "message.html", {"message": GONE}, status=404)
    raw = fields["key"] if "key" in fields else fields.get("input", "")
    app = request.app
    shown = await app[store_key].call(step_entry, app[engine_key], app[rules_key], session_id,
                                      request[account_key], int(number), raw)
    if shown == NOT_YOURS:
        log.warning("assisted entry %s refused to %s: it belongs to another web session", session_id,
                    request[account_key]["name"])
        return render(request, "message.html", {"message": NOT_YOURS}, status=403)
    if shown == GONE:
        return render(request, "message.html", {"message": GONE}, status=404)
    if shown["stepped"] and shown["done"] and shown["record"]["made"]:
        app[sender_key].wake()
    return _screen_page(request, session_id, shown)


# -- turns, in the store's thread -------------------------------------------------------

def owner(account: dict) -> str:
    """What binds an entry to the web session that opened it: a digest of that session's own csrf token."""
    return hashlib.sha256(account["csrf"].encode()).hexdigest()


def open_entry(store: Store, engine: Engine, rules: Rules, session_id: str, phone: str, account: dict,
               page_language: str) -> dict:
    """Start an entry at the main menu, in the phone's language (else the page's), and store it."""
    ctx = turn.context(store, rules, phone)
    lang = page_language if phone == NO_PHONE else turn.language_of(store, engine, rules, phone, page_language)
    first = engine.start(lang, ctx)
    record = {"engine": first.session, "phone": phone, "operator": account["name"], "owner": owner(account),
              "turn": 0, "head": "", "typed": "", "made": None}
    with store.transaction():
        _save(store, engine, session_id, record, first.text, first.done)
    return {"record": record, "text": first.text, "done": first.done, "stepped": True}


def current_entry(store: Store, session_id: str, account: dict) -> dict | str:
    """The entry's screen as it was last shown; GONE or NOT_YOURS when it may not be."""
    saved = store.session(session_id)
    if saved is None:
        return GONE
    record = saved["state"]
    if (record.get("owner"), record.get("operator")) != (owner(account), account["name"]):
        return NOT_YOURS
    return {"record": record, "text": saved["response"], "done": saved["done"], "stepped": False}


def step_entry(store: Store, engine: Engine, rules: Rules, session_id: str, account: dict, number: int,
               raw: str) -> dict | str:
    """Feed `raw` to the entry, answering form turn `number`; GONE or NOT_YOURS when it may not be."""
    with store.transaction():
        current = current_entry(store, session_id, account)
        if isinstance(current, str) or current["done"] or number != current["record"]["turn"]:
            return current
        record = current["record"]
        phone = record["phone"]
        ctx = turn.context(store, rules, phone)
        before = record["engine"]
        try:
            moved = engine.resume(before, raw, ctx)
        except SessionOutdated as error:
            log.warning("assisted entry %s: %s; back to the main menu", session_id, error)
            moved = engine.start(before.get("lang", rules.default_language), ctx)
        text, made = moved.text, record["made"]
        if moved.submission is not None:
            made = _submit(store, engine, rules, session_id, record, moved)
            if made["held"]:
                text = turn.held_text(engine, moved.session["lang"], made["ref"])
        if moved.language is not None and phone != NO_PHONE:
            turn.set_language(store, phone, moved.language)
        reasked = (raw.strip() not in NAVIGATION and _kind(engine, before) == "input"
                   and (before["flow"], before["screen"]) == (moved.session["flow"], moved.session["screen"]))
        record = {**record, "engine": moved.session, "turn": number + 1, "made": made,
                  "head": _head(engine, moved, ctx, text), "typed": raw if reasked else ""}
        _save(store, engine, session_id, record, text, moved.done)
    return {"record": record, "text": text, "done": moved.done, "stepped": True}


def _submit(store: Store, engine: Engine, rules: Rules, session_id: str, record: dict, moved: Turn) -> dict:
    made = turn.submit(store, engine, rules, moved.submission, phone=record["phone"], channel=CHANNEL,
                       session_id=session_id, operator=record["operator"])
    store.accounts.audit(record["operator"], "assist", made["ref"])
    return {"ref": made["ref"], "service": made["service"], "answers": made["answers"], "held": made["held"],
            "at": store.clock().isoformat()}


def _save(store: Store, engine: Engine, session_id: str, record: dict, text: str, done: bool) -> None:
    store.save_session(session_id, phone=record["phone"], service_code=CHANNEL, state=record,
                       history=str(record["turn"]), response=text, done=done, resumable=False)


def _kind(engine: Engine, session: dict) -> str:
    return engine.flows[session["flow"]].screens[session["screen"]].kind


def _head(engine: Engine, moved: Turn, ctx, text: str) -> str:
    """The lines the engine put on top of the page (a re-ask's reason, a notice): those before its body."""
    plain = engine.pages(moved.session, ctx)[moved.session["page"]].split("\n")
    lines = text.split("\n")
    return "\n".join(lines[:lines.index(plain[0])]) if plain[0] in lines else ""


# -- the page ---------------------------------------------------------------------------

def screen_view(engine: Engine, record: dict, text: str, done: bool) -> dict:
    """The engine's screen text as a form: lines to read, numbered choices, and which keys are offered."""
    session = record["engine"]
    lang, kind = session["lang"], _kind(engine, session)
    more = f"{NEXT_PAGE} {engine.catalog.text(lang, 'nav.more')}"
    hint = engine.catalog.text(lang, "nav.hint", back=BACK, home=HOME)
    head = record["head"]
    body = text.split("\n")[len(head.split("\n")) if head else 0:]
    lines, choices = [], []
    for line in body:
        found = CHOICE.fullmatch(line) if kind in ("menu", "confirm") else None
        if found:
            choices.append((found[1], found[2]))
        elif line not in (more, hint):
            lines.append(line)
    root = session["flow"] == MAIN and session["screen"] == engine.flows[MAIN].start
    return {"screen_lang": lang, "head": head, "lines": lines, "choices": choices,
            "input": kind == "input" and not done, "more": more in body, "navigate": not (done or root),
            "typed": record["typed"], "keys": {"back": BACK, "home": HOME, "more": NEXT_PAGE}}


def receipt(engine: Engine, lang: str, made: dict, personal: bool) -> dict:
    """What the printed receipt shows: reference, service, date, and the answers chosen from a list (typed
    answers only for a role that may see personal fields)."""
    flow = engine.flows[made["service"]]
    answers = []
    for screen in flow.screens.values():
        value = made["answers"].get(screen.save or "")
        if value is None:
            continue
        label = next((c.label for c in screen.choices if c.value == value), None)
        if label is not None or personal:
            answers.append((engine.catalog.text(lang, screen.text).split("\n")[0],
                            engine.catalog.text(lang, label) if label else value))
    return {"ref": made["ref"], "service": engine.catalog.text(lang, flow.title),
            "date": format_date(dt.datetime.fromisoformat(made["at"]).date(), "long", locale=lang),
            "answers": answers}


def _screen_page(request: web.Request, session_id: str, shown: dict) -> web.Response:
    engine, record = request.app[engine_key], shown["record"]
    personal = "personal" in request[account_key]["permissions"]
    phone = record["phone"]
    made = record["made"] if shown["done"] else None
    context = {
        **screen_view(engine, record, shown["text"], shown["done"]),
        "session": session_id, "turn": record["turn"], "done": shown["done"],
        "phone": "" if phone == NO_PHONE else (phone if personal else mask_phone(phone)),
        "made": made,
        "receipt": receipt(engine, language(request), made, personal) if made and phone == NO_PHONE else None,
        # The language links lead back to this screen, not to a step's address, which only takes a post.
        "path": f"{request.app[pages_key].prefix}/assist/{session_id}",
    }
    return render(request, "assist_screen.html", context)
