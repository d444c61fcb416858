"""Africa's Talking SMS callbacks: incoming messages (keyword commands) and delivery reports.

An incoming SMS is handled in one store transaction: remember its `id` (a
second delivery of the same id changes nothing), act on the command, and
queue the answer in the outbox. The answer goes out through the sender, in
the caller's saved language, else the language of the keyword they used.

The hourly cap on automatic replies holds back only the answers two
machines could trade forever: usage for HELP and for text the gateway does
not understand (a place that is not taken included). A confirmation, the
question for a report's place, a STOP/START acknowledgement, a language
saved, a status line and the refusal of a report always go out: a villager
is never left guessing.

A reply to a resolved notice's "is it fixed?" (`1`, `2 1 masih rusak`, see
`flows.sms.parse_feedback`) from the phone that owns a resolved request is
kept for the next sync and thanked once; a second answer for the same
request is told it was counted already. A reply that begins with a digit
but is no answer gets how to answer. Both of these count toward the cap on
automatic replies, like usage: two machines could trade them forever. The
thanks always goes out. Text from a phone with nothing resolved, or while
a report waits for its place (a place may begin with a number), is what it
was before.

A report without a place waits (`sync.pending`) for the phone's next SMS that
is not a keyword. A new report replaces a waiting one; other keywords (CEK,
BAHASA, ...) are answered as usual and leave it waiting.

Past the phone's hourly limit (`limits.sms_per_hour`) an SMS is only
remembered by its id: the first such SMS in the window gets one polite SMS,
the rest nothing, so a flood cannot become an SMS bill. A report past the
daily limit of its service is stored but held (`turn.submit`): the first held
one in 24 hours is told its reference, the rest nothing.

Only phones are answered: an SMS from a sender name or a short code (an
operator's promotion, another service) is acknowledged and dropped, so the
aggregator does not retry it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import NamedTuple

from aiohttp import web

from flows import Engine
from flows.catalog import N_
from flows.sms import (EXPIRED, FEEDBACK_COUNTED, FEEDBACK_THANKS, PLACE_INVALID, PLACE_PROMPT, SUBMIT, Command,
                       Keywords, Unplaced, parse_feedback, say, signed)
from sync.reference import normalize_reference
from flows.validate import Invalid
from sync.limits import Verdict
from sync.store import Store

from . import turn
from .callback import BadCallback, e164, printable, read_form, refuse, require
from .log import mask_phone
from .resources import Limits, Rules, engine_key, keywords_key, limits_key, rules_key, sender_key, store_key

log = logging.getLogger(__name__)

MAX_SMS_TEXT = 5000
MAX_ID = 128
"""The longest `id` and `linkId` taken."""
_NO_PHONE = re.compile(r"\d{3,8}|(?=.*[A-Za-z])[A-Za-z0-9 ._&'-]{1,11}")
"""A short code (3-8 digits) or an alphanumeric sender name (up to 11 characters, a letter among them)."""


@dataclass(frozen=True)
class Inbound:
    id: str
    phone: str
    text: str
    short_code: str = ""
    """The number the SMS was sent to (`to`): a premium reply goes back from it."""
    link_id: str = ""
    """Africa's Talking's `linkId` of a premium (on-demand) SMS; its replies must carry it."""


class Reply(NamedTuple):
    """The answer to an incoming SMS, and whether the cap on automatic replies may hold it back."""

    text: str
    capped: bool = False


def parse_inbound(form) -> Inbound | None:
    """The incoming SMS in `form` (text, as `read_form` gives it), or None when it comes from a sender
    name or a short code.

    Raises `BadCallback` when the form is malformed.
    """
    require(form, "from", "text", "id")
    message_id = printable(form, "id", MAX_ID)
    text = form["text"]
    if len(text) > MAX_SMS_TEXT:
        raise BadCallback(f"text is longer than {MAX_SMS_TEXT} characters")
    sender = printable(form, "from", 32)
    if _NO_PHONE.fullmatch(sender):
        return None
    link_id = printable(form, "linkId", MAX_ID, needed=False)
    short_code = printable(form, "to", 32, needed=False)
    if link_id and not short_code:
        raise BadCallback("to (the short code) is needed with a linkId")
    return Inbound(message_id, e164(sender, "from"), text, short_code, link_id)


def parse_delivery(form) -> tuple[str, str, str | None]:
    """The provider's message id, the status and the failure reason (or None) of a delivery report."""
    require(form, "id", "status")
    return (printable(form, "id", MAX_ID), printable(form, "status", 32),
            printable(form, "failureReason", 200, needed=False) or None)


def sms_turn(store: Store, engine: Engine, keywords: Keywords, rules: Rules, sms: Inbound,
             limits: Limits | None = None) -> str | None:
    """Act on one incoming SMS and queue the answer; None when this id was handled before.

    Returns the state of the SMS queued in answer (`queued`, or `suppressed`
    past the hourly cap on automatic replies), or `refused` for an SMS past
    the phone's hourly limit (`limits`) that is not answered.
    """
    with store.transaction():
        if not store.record_inbound(sms.id, sms.phone):
            return None
        if limits is not None:
            verdict = limits.sms.hit(store.phone_digest(sms.phone))
            if not verdict.allowed:
                return _refused(store, engine, rules, sms, limits.sms.limit, verdict)
        command = keywords.parse(sms.text)
        lang = turn.language_of(store, engine, rules, sms.phone, command.lang)
        if command.name == SUBMIT:
            reply = _report(store, engine, keywords, rules, sms, command, lang)
        elif command.name == "unknown":
            reply = _unknown(store, engine, keywords, rules, sms, lang)
        else:
            reply = _answer(store, engine, command, lang, sms.phone)
        state = "queued"  # a confirmation: the submission queued it
        if reply is not None:
            state = store.outbox.add(sms.phone, reply.text, "reply", ttl=rules.sms_ttl, auto=reply.capped,
                                     cause=sms.id, cap_per_hour=rules.auto_reply_cap)["state"]
        if sms.link_id:
            store.outbox.reply_through(sms.id, sms.short_code, sms.link_id)
    log.info("sms %s from %s: %s, %s %s", sms.id, mask_phone(sms.phone), command.flow or command.name,
             "reply" if reply else "confirmation", state)
    return state


def _refused(store: Store, engine: Engine, rules: Rules, sms: Inbound, limit: int, verdict: Verdict) -> str:
    """An SMS past the phone's hourly limit: the first in the window gets one polite SMS, the rest nothing.

    Nothing is kept of it but its id (so a redelivery stays a no-op); only the first is logged.
    """
    if not verdict.first_refusal:
        return "refused"
    log.warning("sms %s: %s sent more than %d SMS within the hour; told once, the rest go unanswered for %d s",
                sms.id, mask_phone(sms.phone), limit, verdict.retry_after)
    lang = turn.language_of(store, engine, rules, sms.phone)
    text = signed(engine.catalog, lang, turn.too_many_text(engine, lang, verdict.retry_after))
    state = store.outbox.add(sms.phone, text, "reply", ttl=rules.sms_ttl, cause=sms.id)["state"]
    if sms.link_id:
        store.outbox.reply_through(sms.id, sms.short_code, sms.link_id)
    return state


def _report(store: Store, engine: Engine, keywords: Keywords, rules: Rules, sms: Inbound, command: Command,
            lang: str) -> Reply | None:
    """A report by SMS: stored and confirmed, kept waiting for its place, or refused; None once stored.

    It replaces a report the phone left waiting for its place.
    """
    made = keywords.submission(command, lang, store.clock().date())
    if isinstance(made, Invalid):
        return Reply(say(engine.catalog, lang, made))
    if isinstance(made, Unplaced):
        store.pending.hold(sms.phone, made.submission, language=lang, inbound_id=sms.id, ttl=rules.place_wait)
        return Reply(_ask_place(engine, rules, lang, made.reason))
    store.pending.drop(sms.phone)
    return _submit(store, engine, rules, sms, made)


def _submit(store: Store, engine: Engine, rules: Rules, sms: Inbound, submission: dict) -> Reply | None:
    """Store a complete SMS report: None (its confirmation is queued), or when it is held over the daily
    limit, one SMS naming its reference for the first held in the window and nothing for the rest."""
    made = turn.submit(store, engine, rules, submission, phone=sms.phone, channel="sms", cause=sms.id)
    if made["held"] != 1:
        return None
    return Reply(signed(engine.catalog, made["language"], turn.held_text(engine, made["language"], made["ref"])))


def _unknown(store: Store, engine: Engine, keywords: Keywords, rules: Rules, sms: Inbound,
             lang: str) -> Reply | None:
    """Text that is no keyword: the place a waiting report asked for, else usage."""
    waiting = store.pending.waiting(sms.phone)
    if waiting is None:
        return _feedback(store, engine, sms, lang) or Reply(engine.catalog.text(lang, N_("sms.help")), capped=True)
    lang = turn.language_of(store, engine, rules, sms.phone, waiting.language)
    if waiting.expired:
        store.pending.drop(sms.phone)
        return Reply(engine.catalog.text(lang, EXPIRED, minutes=_minutes(rules.place_wait)))
    made = keywords.place(waiting.draft, sms.text, store.clock().date())
    if isinstance(made, Invalid):
        return Reply(_ask_place(engine, rules, lang, made), capped=True)
    store.pending.drop(sms.phone)
    reply = _submit(store, engine, rules, sms, made)
    log.info("sms %s from %s completes the report of sms %s", sms.id, mask_phone(sms.phone), waiting.inbound_id)
    return reply


def _feedback(store: Store, engine: Engine, sms: Inbound, lang: str) -> Reply | None:
    """An answer to "is it fixed?" kept and thanked, a second one told it counted already, a wrong one told
    how to answer; None when the SMS is no such answer or the phone has nothing resolved to answer about.

    The first word after the answer and rating names the request when it is a reference of this phone's
    resolved ones; else the latest resolved is meant and every word after the rating is the villager's.
    """
    answer = parse_feedback(sms.text)
    latest = store.rateable(sms.phone, engine.asks_fixed) if answer is not None else None
    if latest is None:
        return None
    if isinstance(answer, Invalid):
        return Reply(say(engine.catalog, lang, answer), capped=True)
    first, _, words = answer.rest.partition(" ")
    named = store.rateable(sms.phone, engine.asks_fixed, normalize_reference(first.rstrip(".,:"))) if first else None
    about = named or latest
    if named is None:
        words = answer.rest
    if not turn.rate(store, about, fixed=answer.fixed, rating=answer.rating, words=words.strip(), channel="sms"):
        return Reply(engine.catalog.text(lang, FEEDBACK_COUNTED, ref=about["ref"]), capped=True)
    return Reply(engine.catalog.text(lang, FEEDBACK_THANKS[answer.fixed], ref=about["ref"]))


def _ask_place(engine: Engine, rules: Rules, lang: str, reason: Invalid | None) -> str:
    """The question for a report's place; with the `reason` the place given was not taken."""
    if reason is None:
        return engine.catalog.text(lang, PLACE_PROMPT, minutes=_minutes(rules.place_wait))
    return say(engine.catalog, lang, Invalid(PLACE_INVALID, {"reason": reason}))


def _minutes(wait: dt.timedelta) -> int:
    return int(wait.total_seconds() // 60)


def _answer(store: Store, engine: Engine, command: Command, lang: str, phone: str) -> Reply:
    """The reply to every command but a submission; only HELP's counts toward the cap."""
    text = engine.catalog.text
    if command.name == "status":
        return Reply(turn.status_text(store, engine, phone, command.argument, lang))
    if command.name == "language":
        chosen = _language(engine, command.argument)
        if chosen is None:
            return Reply(text(lang, N_("sms.language.usage")))
        turn.set_language(store, phone, chosen)
        return Reply(signed(engine.catalog, chosen,
                            text(chosen, "language.saved", language=engine.catalog.language_name(chosen))))
    if command.name in ("stop", "start"):
        store.set_notices(phone, command.name == "start")
        return Reply(text(lang, N_("sms.stop.done") if command.name == "stop" else N_("sms.start.done")))
    return Reply(text(lang, N_("sms.help")), capped=True)


def _language(engine: Engine, argument: str) -> str | None:
    wanted = argument.strip().lower()
    for code in engine.languages:
        if wanted in (code.lower(), engine.catalog.language_name(code).lower()):
            return code
    return None


async def inbound_callback(request: web.Request) -> web.Response:
    try:
        form = await read_form(request)
        sms = parse_inbound(form)
    except BadCallback as error:
        raise refuse(request, error) from None
    if sms is None:
        log.info("sms %s from %s, a sender name or short code: nobody to answer, dropped",
                 form["id"].strip(), form["from"].strip())
        return web.Response(text="OK (not from a phone: dropped)")
    app = request.app
    state = await app[store_key].call_grouped(sms_turn, app[engine_key], app[keywords_key], app[rules_key], sms,
                                              app[limits_key])
    if state == "queued":
        app[sender_key].wake()
    return web.Response(text="OK" if state else "OK (already handled)")


async def delivery_callback(request: web.Request) -> web.Response:
    try:
        provider_id, status, reason = parse_delivery(await read_form(request))
    except BadCallback as error:
        raise refuse(request, error) from None
    state = await request.app[store_key].call(lambda store: store.outbox.report(provider_id, status, reason))
    if state is None:
        log.warning("delivery report for unknown message %s (%s)", provider_id, status)
        return web.Response(text="OK (unknown id)")
    return web.Response(text="OK")
