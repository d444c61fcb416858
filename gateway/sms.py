"""Africa's Talking SMS callbacks: incoming messages (keyword commands) and delivery reports.

An incoming SMS is handled in one store transaction: remember its `id` (a
second delivery of the same id changes nothing), act on the command, and
queue the reply in the outbox. The reply goes out through the sender, in
the caller's saved language, else the language of the keyword they used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from flows import Engine
from flows.catalog import N_
from flows.sms import SUBMIT, Command, Keywords
from flows.validate import Invalid
from sync.store import Store

from . import turn
from .callback import BadCallback, e164, require
from .log import mask_phone
from .resources import Rules, engine_key, keywords_key, rules_key, sender_key, store_key

log = logging.getLogger(__name__)

MAX_SMS_TEXT = 5000


@dataclass(frozen=True)
class Inbound:
    id: str
    phone: str
    text: str


def parse_inbound(form) -> Inbound:
    require(form, "from", "text", "id")
    message_id = str(form["id"]).strip()
    if not message_id or len(message_id) > 128:
        raise BadCallback("id must be 1-128 characters")
    text = str(form["text"])
    if len(text) > MAX_SMS_TEXT:
        raise BadCallback(f"text is longer than {MAX_SMS_TEXT} characters")
    return Inbound(message_id, e164(str(form["from"]), "from"), text)


def sms_turn(store: Store, engine: Engine, keywords: Keywords, rules: Rules, sms: Inbound) -> str | None:
    """Act on one incoming SMS and queue the answer; None when this id was handled before.

    Returns the state of the SMS queued in answer (`queued`, or `suppressed`
    past the hourly cap on automatic replies).
    """
    with store.transaction():
        if not store.record_inbound(sms.id, sms.phone):
            return None
        command = keywords.parse(sms.text)
        lang = turn.language_of(store, engine, rules, sms.phone, command.lang)
        if command.name == SUBMIT:
            made = keywords.submission(command, lang, store.clock().date())
            if not isinstance(made, Invalid):
                # The confirmation is the answer: a reference is never held back by the cap.
                turn.submit(store, engine, rules, made, phone=sms.phone, channel="sms", cause=sms.id)
                log.info("sms %s from %s: %s", sms.id, mask_phone(sms.phone), command.flow)
                return "queued"
            reply = engine.catalog.text(lang, made.reason, **made.values)
        else:
            reply = _answer(store, engine, command, lang, sms.phone)
        queued = store.outbox.add(sms.phone, reply, "reply", ttl=rules.sms_ttl, auto=True, cause=sms.id,
                                  cap_per_hour=rules.auto_reply_cap)
    log.info("sms %s from %s: %s, reply %s", sms.id, mask_phone(sms.phone), command.name, queued["state"])
    return queued["state"]


def _answer(store: Store, engine: Engine, command: Command, lang: str, phone: str) -> str:
    """The reply to every command but a submission."""
    text = engine.catalog.text
    if command.name == "status":
        return turn.status_text(store, engine, phone, command.argument, lang)
    if command.name == "language":
        chosen = _language(engine, command.argument)
        if chosen is None:
            return text(lang, N_("sms.language.usage"))
        turn.set_language(store, phone, chosen)
        return text(chosen, "language.saved", language=engine.catalog.language_name(chosen))
    if command.name in ("stop", "start"):
        store.set_notices(phone, command.name == "start")
        return text(lang, N_("sms.stop.done") if command.name == "stop" else N_("sms.start.done"))
    return text(lang, N_("sms.help"))


def _language(engine: Engine, argument: str) -> str | None:
    wanted = argument.strip().lower()
    for code in engine.languages:
        if wanted in (code.lower(), engine.catalog.language_name(code).lower()):
            return code
    return None


async def inbound_callback(request: web.Request) -> web.Response:
    try:
        sms = parse_inbound(await request.post())
    except BadCallback as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    app = request.app
    state = await app[store_key].call(sms_turn, app[engine_key], app[keywords_key], app[rules_key], sms)
    if state == "queued":
        app[sender_key].wake()
    return web.Response(text="OK" if state else "OK (already handled)")


async def delivery_callback(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        require(form, "id", "status")
    except BadCallback as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    provider_id, status = str(form["id"]), str(form["status"])
    reason = str(form.get("failureReason", "")) or None
    state = await request.app[store_key].call(lambda store: store.outbox.report(provider_id, status, reason))
    if state is None:
        log.warning("delivery report for unknown message %s (%s)", provider_id[:64], status[:32])
        return web.Response(text="OK (unknown id)")
    return web.Response(text="OK")
