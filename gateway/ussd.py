"""Africa's Talking USSD callback: `POST /ussd/africastalking`.

Africa's Talking posts a form (`sessionId`, `serviceCode`, `phoneNumber`,
`networkCode`, `text`) for every hop; `text` is every input so far joined
by `*`, empty on the first hop. We answer `text/plain`, `CON <screen>` to
wait for input or `END <screen>` to close.

The newest input is the part of `text` after the history already answered
(a free-text answer may itself contain `*`). A hop whose `text` equals the
stored history is a retry: it gets the stored answer again and changes
nothing. Each hop is one transaction in the store's thread: read the
session, step the engine, write the session (and the submission, when the
turn confirms one), commit, then answer. Hops that queue while the store's
thread is busy share one commit (`StoreThread.call_grouped`), each in a
savepoint of its own, so one that fails is undone alone. On a PostgreSQL
store that several workers share, a hop first waits for its session
(`Store.lock_session`): two copies of one hop at two workers run one after
the other, and the second is answered as a retry (or reuses the first's
submission, below), never with a second submission.

With `sessions.backend: redis` the session lives in Redis (`sync.sessions`)
and the order is: read it from Redis, run the same turn in the store's
thread with the session handed in (`Held`; the store writes only the
submission and what else the turn does), and once that COMMIT returned,
write the session to Redis, then answer. A crash or a failed write between
the two leaves Redis one hop behind: the network's retry of the hop runs
the turn again, and a submission already stored for the session is reused
(same reference, nothing stored, no second SMS). When Redis cannot be read
or written the caller gets a polite END, "try again in a few minutes", in
their language; what the store committed stays, and its SMS goes. A hop
that ended its session (a confirmation with its reference) is answered as
it is even when its session write failed: nothing needs that session again,
and a new dial is not offered to continue it (its submission is stored).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator

from aiohttp import web

from flows import Context, Engine, SessionOutdated, Turn
from flows.catalog import N_
from sync.limits import Verdict
from sync.reference import normalize_reference
from sync.errors import SessionsUnavailable
from sync.store import Store

from . import funnel, metrics, turn
from .callback import BadCallback, e164, printable, read_form, refuse, require
from .log import mask_phone
from .config import Config
from .resources import (Limits, Rules, clock_key, config_key, engine_key, limits_key, rules_key, sender_key,
                        sessions_key, store_key)

if TYPE_CHECKING:
    from sync.sessions import RedisSessions

log = logging.getLogger(__name__)

MAX_TEXT = 2000
MAX_ID = 128
TRY_LATER_TEXT = N_("error.try_later")
"""The END of a hop whose session could not be read or written (Redis down): nothing is wrong with the
caller's answers, and the network's retry of the hop, or a new dial, will work once it is back."""


@dataclass(frozen=True)
class Hop:
    """One checked callback."""

    session_id: str
    service_code: str
    phone: str
    text: str
    network_code: str


@dataclass
class Held:
    """A session kept outside the store (`sessions.backend: redis`), handed to `ussd_turn` and back.

    In: the session as `Store.session` gives it (None when new) and, for a
    new dial, the caller's dropped session to offer (`Store.resumable_session`).
    Out: what to save (`Store.save_session`'s keywords; None when the hop
    changed nothing, a retry) and whether the dropped one is to be offered no
    more (`forget`: it was offered now).
    """

    saved: dict | None
    dropped: tuple[str, dict] | None = None
    save: dict | None = field(default=None, init=False)
    forget: bool = field(default=False, init=False)


def parse_hop(form) -> Hop:
    """Check the callback form (text, as `read_form` gives it); raise `BadCallback` with the reason."""
    require(form, "sessionId", "serviceCode", "phoneNumber", "text")
    session_id = printable(form, "sessionId", MAX_ID)
    service_code = printable(form, "serviceCode", 64)
    text = form["text"]
    network = printable(form, "networkCode", 32, needed=False)
    if len(text) > MAX_TEXT:
        raise BadCallback(f"text is longer than {MAX_TEXT} characters")
    return Hop(session_id, service_code, e164(form["phoneNumber"]), text, network)


def newest_input(history: str, text: str) -> str | None:
    """The input `text` adds to `history`, or None when `text` does not continue it."""
    if history == "":
        return text
    if text.startswith(history + "*"):
        return text[len(history) + 1:]
    return None


def ussd_turn(store: Store, engine: Engine, rules: Rules, hop: Hop, limits: Limits | None = None,
              held: Held | None = None) -> str:
    """Answer one hop; runs in the store's thread, all in one transaction.

    A new session past the phone's hourly limit (`limits`) is answered END
    politely and leaves nothing stored; a session under way is never limited.
    With `held`, the session is read from and left in it, not the store; a
    submission already stored for the session is then reused (see the module
    docstring).
    """
    if held is None:
        ctx = turn.context(store, rules, hop.phone)
    else:
        ctx = turn.context(store, rules, hop.phone, new_reference=lambda: _reference(store, rules, hop.session_id))
    with store.transaction():
        # Several workers on one PostgreSQL store: a copy of this hop at another worker (the network's retry
        # of a slow hop) waits here until this one committed, then finds its session ended or its submission.
        store.lock_session(hop.session_id)
        saved = store.session(hop.session_id) if held is None else held.saved
        if saved is not None and saved["phone_hash"] != store.phone_digest(hop.phone):
            raise BadCallback("sessionId belongs to another phoneNumber")
        if saved is None and limits is not None:
            verdict = limits.ussd_sessions.hit(store.phone_digest(hop.phone))
            if not verdict.allowed:
                return metrics.Answer(_refused(store, engine, rules, hop, limits.ussd_sessions.limit, verdict),
                                      "refused")
        if saved is None:
            step = _first_turn(store, engine, rules, hop, ctx, held)
        elif saved["done"] or hop.text == saved["history"]:
            return saved["response"]
        else:
            newest = newest_input(saved["history"], hop.text)
            if newest is None:
                log.warning("session %s: text does not continue its history; answering the last screen again",
                            hop.session_id)
                return saved["response"]
            try:
                step = engine.resume(saved["state"], newest, ctx)
            except SessionOutdated as error:
                log.warning("session %s: %s; back to the main menu", hop.session_id, error)
                step = engine.start(saved["state"].get("lang", rules.default_language), ctx)
        text = step.text
        if step.submission is not None:
            made = (held is not None and _submitted(store, hop)) or turn.submit(
                store, engine, rules, step.submission, phone=hop.phone, channel="ussd", session_id=hop.session_id)
            if made["held"]:
                text = turn.held_text(engine, step.session["lang"], made["ref"])
        if step.language is not None:
            turn.set_language(store, hop.phone, step.language)
        if step.feedback is not None:
            _rate(store, engine, hop.phone, step.feedback)
        body = ("END " if step.done else "CON ") + text
        session = dict(phone=hop.phone, service_code=hop.service_code, state=step.session, history=hop.text,
                       response=body, done=step.done, resumable=engine.resumable(step.session))
        if held is None:
            store.save_session(hop.session_id, **session)
        else:
            held.save = session
        funnel.record(store, hop.session_id, saved and saved["state"], step)
    if log.isEnabledFor(logging.DEBUG):  # masking the number is work a hop need not do for a line not written
        log.debug("ussd %s %s: %s/%s%s", hop.session_id, mask_phone(hop.phone), step.session["flow"],
                  step.session["screen"], " (end)" if step.done else "")
    return metrics.Answer(body, metrics.screen_kind(engine, step.session), started=saved is None, ended=step.done)


def _refused(store: Store, engine: Engine, rules: Rules, hop: Hop, limit: int, verdict: Verdict) -> str:
    """The END for a new session past the phone's hourly limit: when to try again, in the caller's language.

    Only the first refusal in the phone's window is logged: a flood writes one line, not one per dial.
    """
    if verdict.first_refusal:
        log.warning("ussd %s: %s started more than %d sessions within the hour; new ones refused for %d s",
                    hop.session_id, mask_phone(hop.phone), limit, verdict.retry_after)
    lang = turn.language_of(store, engine, rules, hop.phone)
    return "END " + turn.too_many_text(engine, lang, verdict.retry_after)


def _rate(store: Store, engine: Engine, phone: str, feedback: dict) -> None:
    """Keep the caller's answer to "is it fixed?" from the status screen; nothing when the request is no longer
    theirs to answer about (an SMS answer came first: the first counts)."""
    about = store.rateable(phone, engine.asks_fixed, normalize_reference(feedback["ref"]))
    if about is not None:
        turn.rate(store, about, fixed=feedback["fixed"], rating=feedback["rating"], words="", channel="ussd")


def _reference(store: Store, rules: Rules, session_id: str) -> str:
    """A reference for the submission of a session held outside the store: the one it was stored under when
    this is a retry of a hop whose COMMIT went through but whose session write did not, else a free one."""
    made = store.submission_of_session(session_id)
    return made["ref"] if made is not None else store.free_reference(rules.ref_prefix)


def _submitted(store: Store, hop: Hop) -> dict | None:
    """The submission already stored for the hop's session (see `_reference`), as `turn.submit` returns one;
    None when there is none."""
    made = store.submission_of_session(hop.session_id)
    if made is None:
        return None
    log.info("submission %s by ussd from %s: already stored for this session, not stored again", made["ref"],
             mask_phone(hop.phone))
    return {"ref": made["ref"], "held": made["status"] == "review"}


def _first_turn(store: Store, engine: Engine, rules: Rules, hop: Hop, ctx: Context, held: Held | None) -> Turn:
    language = turn.language_of(store, engine, rules, hop.phone)
    if hop.text:
        # A session we never saw begin (lost, or begun at another gateway):
        # replay its history from the main menu.
        step = engine.start(language, ctx)
        for piece in hop.text.split("*"):
            if step.done:
                break
            step = engine.resume(step.session, piece, ctx)
        return step
    dropped = None
    if rules.resume_window:
        dropped = held.dropped if held is not None else store.resumable_session(
            hop.phone, rules.resume_window, exclude=hop.session_id)
    if dropped is None:
        return engine.start(language, ctx)
    # Offered now, or never: either way, no other session of the caller is offered again.
    if held is not None:
        held.forget = True
    else:
        store.forget_resumable(hop.phone, exclude=hop.session_id)
    if store.submission_of_session(dropped[0]) is not None:
        # Its confirm hop committed, but its session was not written after (the worker died, or Redis failed
        # the write of that END): continued here, it would be confirmed again under this session's id, a
        # second submission and a second SMS. What it made is stored and its SMS goes; the caller starts afresh.
        log.info("session %s: the dropped session %s made its submission already; not offered", hop.session_id,
                 dropped[0])
        return engine.start(language, ctx)
    store.funnel_resumed(hop.session_id, dropped[0])
    return engine.start(language, ctx, saved=dropped[1])


async def ussd_callback(request: web.Request) -> web.Response:
    began = time.perf_counter()
    try:
        hop = parse_hop(await read_form(request))
        sessions = request.app.get(sessions_key)
        if sessions is None:
            body = await request.app[store_key].call_grouped(ussd_turn, request.app[engine_key],
                                                             request.app[rules_key], hop, request.app[limits_key])
        else:
            body = await _held_turn(request.app, sessions, hop)
    except BadCallback as error:
        raise refuse(request, error) from None
    if body.startswith("END "):
        request.app[sender_key].wake()
    request.app[metrics.metrics_key].observe(body, time.perf_counter() - began)
    return web.Response(text=body, content_type="text/plain")


async def _held_turn(app: web.Application, sessions: "RedisSessions", hop: Hop) -> str:
    """One hop with its session in Redis: read it, run the turn (COMMIT), write it, in that order."""
    try:
        saved, dropped = await sessions.load(hop.session_id, hop.phone, offer=hop.text == "")
    except SessionsUnavailable as error:
        return await _try_later(app, hop, "reading", error)
    held = Held(saved, dropped)
    body = await app[store_key].call_grouped(ussd_turn, app[engine_key], app[rules_key], hop, app[limits_key], held)
    if held.save is not None:
        try:
            if not await sessions.save(hop.session_id, **held.save, forget=held.forget):
                log.debug("session %s: a late copy of an earlier hop; the session is further on", hop.session_id)
        except SessionsUnavailable as error:
            if held.save["done"]:
                # The session ended: nothing will ask Redis for it again, and what the END says (a reference) is
                # committed. The caller gets it; a lost session write costs nothing here.
                log.warning("ussd %s: writing its ended session to Redis failed (%s); answered all the same",
                            hop.session_id, error)
                return body
            return await _try_later(app, hop, "writing", error, held.save["state"].get("lang"))
    return body


async def _try_later(app: web.Application, hop: Hop, doing: str, error: SessionsUnavailable,
                     lang: str | None = None) -> str:
    """The polite END of a hop whose session Redis could not keep, in the caller's language (the session's,
    else the phone's), and one WARNING line. The store still works: it tells the phone's language."""
    log.warning("ussd %s: %s its session in Redis failed (%s); %s told to try again in a few minutes",
                hop.session_id, doing, error, mask_phone(hop.phone))
    engine, rules = app[engine_key], app[rules_key]
    if lang not in engine.languages:
        lang = await app[store_key].read(lambda store: turn.language_of(store, engine, rules, hop.phone))
    return metrics.Answer("END " + engine.catalog.text(lang, TRY_LATER_TEXT), "end")


async def sessions_context(app: web.Application) -> AsyncIterator[None]:
    """With `sessions.backend: redis`, the Redis client of the USSD sessions (after the store's context: it
    seals with the store's key). A Redis that does not answer at start is one WARNING line, not a failed
    start: SMS, the kiosk and sync work without it, and hops answer "try again" until it is back."""
    config: Config = app[config_key]
    if config["sessions.backend"] != "redis":
        yield
        return
    from sync.sessions import RedisSessions  # redis is loaded only by a gateway that uses it
    sessions = RedisSessions.from_url(
        config["sessions.redis_url"], app[store_key].store.sealer, config["sessions.redis_prefix"],
        keep=dt.timedelta(hours=config["ussd.keep_sessions_hours"]), resume_window=app[rules_key].resume_window,
        clock=app[clock_key])
    try:
        await sessions.ping()
    except SessionsUnavailable as error:
        log.warning("USSD sessions: Redis does not answer (%s); hops are told to try again until it does", error)
    app[sessions_key] = sessions
    try:
        yield
    finally:
        await sessions.close()
