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
from flows.engine import STATUS_LABELS
from flows.sms import Keywords, notice_text
from flows.validate import Invalid
from sync.errors import DuplicateReference
from sync.reference import new_reference, normalize_reference
from sync.store import Store

from .callback import BadCallback, e164, require
from .log import mask_phone
from .resources import Rules, engine_key, keywords_key, rules_key, sender_key, store_key
from .ussd import REFERENCE_ATTEMPTS, confirmation_text, status_item

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
    """Act on one incoming SMS and queue the reply; None when this id was handled before."""
    with store.transaction():
        if not store.record_inbound(sms.id, sms.phone):
            return None
        command = keywords.parse(sms.text)
        saved = store.language(sms.phone)
        lang = next(l for l in (saved, command.lang, rules.default_language) if l in engine.languages)
        reply = _answer(store, engine, keywords, rules, sms, command.name, command.argument, lang)
        queued = store.outbox.add(sms.phone, reply, "reply", ttl=rules.sms_ttl, auto=True, cause=sms.id,
                                  cap_per_hour=rules.auto_reply_cap)
    log.info("sms %s from %s: %s, reply %s", sms.id, mask_phone(sms.phone), command.name, queued["state"])
    return queued["state"]


def _answer(store: Store, engine: Engine, keywords: Keywords, rules: Rules, sms: Inbound,
            name: str, argument: str, lang: str) -> str:
    text = engine.catalog.text
    if name == "status":
        if not argument:
            found = store.recent_submissions(sms.phone, 1)
            return engine.status_line(status_item(found[0]), lang) if found else text(lang, "status.none")
        row = store.find_submission(normalize_reference(argument), sms.phone)
        return engine.status_line(status_item(row), lang) if row else text(lang, "status.not_found")
    if name == "report":
        return _report(store, engine, keywords, rules, sms, argument, lang)
    if name == "language":
        chosen = _language(engine, argument)
        if chosen is None:
            return text(lang, N_("sms.language.usage"))
        store.set_language(sms.phone, chosen)
        return text(chosen, "language.saved", language=engine.catalog.language_name(chosen))
    if name == "stop":
        store.set_notices(sms.phone, False)
        return text(lang, N_("sms.stop.done"))
    if name == "start":
        store.set_notices(sms.phone, True)
        return text(lang, N_("sms.start.done"))
    return text(lang, N_("sms.help"))


def _language(engine: Engine, argument: str) -> str | None:
    wanted = argument.strip().lower()
    for code in engine.languages:
        if wanted in (code.lower(), engine.catalog.language_name(code).lower()):
            return code
    return None


def _report(store: Store, engine: Engine, keywords: Keywords, rules: Rules, sms: Inbound,
            argument: str, lang: str) -> str:
    """`LAPOR <category> <description>`: the same submission the USSD report makes."""
    word, _, description = argument.partition(" ")
    category = keywords.category(word)
    if category is None or not description.strip():
        return engine.catalog.text(lang, N_("sms.report.usage"))
    flow = engine.flows["report"]
    outcome = flow.saved_by("description").validator(description, store.clock().date())
    if isinstance(outcome, Invalid):
        return engine.catalog.text(lang, outcome.reason, **outcome.values)
    for _ in range(REFERENCE_ATTEMPTS):
        submission = {"service": flow.name, "ref": new_reference(rules.ref_prefix), "language": lang,
                      "answers": {"category": category, "description": outcome.value}, "unique": {}}
        try:
            store.add_submission(submission, phone=sms.phone, channel="sms")
        except DuplicateReference:
            continue
        log.info("submission %s (report) by SMS from %s", submission["ref"], mask_phone(sms.phone))
        return confirmation_text(engine, submission)
    raise DuplicateReference(f"no free reference after {REFERENCE_ATTEMPTS} draws")


def change_status(store: Store, engine: Engine, rules: Rules, ref: str, status: str, note: str = "") -> str | None:
    """Set a submission's status and queue the notice to its phone, in one transaction.

    Returns the notice's outbox state (`queued`, or `suppressed` after STOP),
    or None when nothing changed.
    """
    with store.transaction():
        changed = store.set_status(ref, status)
        if changed is None:
            return None
        lang = next(l for l in (store.language(changed["phone"]), changed["language"], rules.default_language)
                    if l in engine.languages)
        flow = engine.flows.get(changed["service"])
        text = notice_text(engine.catalog, lang, ref=ref,
                           service=engine.catalog.text(lang, flow.title) if flow else changed["service"],
                           status=engine.catalog.text(lang, STATUS_LABELS[status]), note=note)
        queued = store.outbox.add(changed["phone"], text, "notice", ttl=rules.sms_ttl, cause=f"{ref}:{status}")
    return queued["state"]


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
