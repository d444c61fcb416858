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
savepoint of its own, so one that fails is undone alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiohttp import web

from flows import Context, Engine, SessionOutdated, Turn
from sync.limits import Verdict
from sync.reference import normalize_reference
from sync.store import Store

from . import funnel, metrics, turn
from .callback import BadCallback, e164, printable, read_form, refuse, require
from .log import mask_phone
from .resources import Limits, Rules, engine_key, limits_key, rules_key, sender_key, store_key

log = logging.getLogger(__name__)

MAX_TEXT = 2000
MAX_ID = 128


@dataclass(frozen=True)
class Hop:
    """One checked callback."""

    session_id: str
    service_code: str
    phone: str
    text: str
    network_code: str


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


def ussd_turn(store: Store, engine: Engine, rules: Rules, hop: Hop, limits: Limits | None = None) -> str:
    """Answer one hop; runs in the store's thread, all in one transaction.

    A new session past the phone's hourly limit (`limits`) is answered END
    politely and leaves nothing stored; a session under way is never limited.
    """
    ctx = turn.context(store, rules, hop.phone)
    with store.transaction():
        saved = store.session(hop.session_id)
        if saved is not None and saved["phone_hash"] != store.phone_digest(hop.phone):
            raise BadCallback("sessionId belongs to another phoneNumber")
        if saved is None and limits is not None:
            verdict = limits.ussd_sessions.hit(store.phone_digest(hop.phone))
            if not verdict.allowed:
                return metrics.Answer(_refused(store, engine, rules, hop, limits.ussd_sessions.limit, verdict),
                                      "refused")
        if saved is None:
            step = _first_turn(store, engine, rules, hop, ctx)
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
            made = turn.submit(store, engine, rules, step.submission, phone=hop.phone, channel="ussd",
                               session_id=hop.session_id)
            if made["held"]:
                text = turn.held_text(engine, step.session["lang"], made["ref"])
        if step.language is not None:
            turn.set_language(store, hop.phone, step.language)
        if step.feedback is not None:
            _rate(store, engine, hop.phone, step.feedback)
        body = ("END " if step.done else "CON ") + text
        store.save_session(hop.session_id, phone=hop.phone, service_code=hop.service_code,
                           state=step.session, history=hop.text, response=body, done=step.done,
                           resumable=engine.resumable(step.session))
        funnel.record(store, hop.session_id, saved and saved["state"], step)
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


def _first_turn(store: Store, engine: Engine, rules: Rules, hop: Hop, ctx: Context) -> Turn:
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
        dropped = store.resumable_session(hop.phone, rules.resume_window, exclude=hop.session_id)
    if dropped is not None:
        store.forget_resumable(hop.phone, exclude=hop.session_id)
        store.funnel_resumed(hop.session_id, dropped[0])
    return engine.start(language, ctx, saved=dropped[1] if dropped else None)


async def ussd_callback(request: web.Request) -> web.Response:
    began = time.perf_counter()
    try:
        hop = parse_hop(await read_form(request))
        store = request.app[store_key]
        body = await store.call_grouped(ussd_turn, request.app[engine_key], request.app[rules_key], hop,
                                        request.app[limits_key])
    except BadCallback as error:
        raise refuse(request, error) from None
    if body.startswith("END "):
        request.app[sender_key].wake()
    request.app[metrics.metrics_key].observe(body, time.perf_counter() - began)
    return web.Response(text=body, content_type="text/plain")
