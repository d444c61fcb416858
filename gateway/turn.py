"""One turn for every channel: submit, look up a status, choose a language, change a status, answer
"is it fixed?".

USSD (`ussd.py`), SMS (`sms.py`) and the kiosk's assisted entry all come
here, so that a submission is stored the same way whoever typed it: in the
store's thread, inside the caller's transaction, with its confirmation SMS
queued in that same transaction. A reference is drawn free from the store
(`Store.free_reference`) in that transaction too, so a turn is never re-run
because its reference was taken.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Callable

from flows import Context, Engine
from flows.catalog import N_
from flows.engine import STATUS_LABELS
from flows.sms import WORDS_LIMIT, notice_text, signature_cost, signed
from flows.text import SMS_SEGMENT_GSM7, fit_sms
from sync.protocol import QUIET, SAME_ANSWER, SILENT_STATUSES
from sync.reference import normalize_reference
from sync.store import NO_PHONE, Store

from .log import mask_phone
from .resources import Rules

log = logging.getLogger(__name__)

TOO_MANY_TEXT = N_("limit.too_many")
"""A new USSD session or an SMS past the phone's hourly limit (signed when it goes by SMS)."""
HELD_TEXT = N_("limit.held")
"""A submission over the phone's daily limit: stored with its reference, held for staff review."""
DAY = dt.timedelta(hours=24)
FINAL_STATUSES = frozenset({"resolved", "rejected"})
"""Statuses a deadline no longer applies to."""
SAME_ANSWER_TEXT = N_("sms.same_answer")
"""Tells a phone that staff decided on another registration holding its unique answer (a NIK)."""


class Lookup:
    """The engine's window on the store, bound to one caller: what it may ask about submissions.

    A walk-in villager with no phone (`NO_PHONE`) made nothing it could recall or claim; a reference they
    bring is found among the submissions made with no phone (the kiosk's own).
    """

    def __init__(self, store: Store, phone: str):
        self._store = store
        self._phone = phone

    def taken(self, service: str, answer: str, value: str) -> bool:
        return self._store.taken(service, answer, value, self._phone)

    def recent(self, limit: int) -> list[dict]:
        now = self._store.clock()
        return [_status_item(row, now) for row in self._store.recent_submissions(self._phone, limit)]

    def find(self, ref: str) -> dict | None:
        if self._phone == NO_PHONE:
            row = self._store.submission(normalize_reference(ref))
            return _status_item(row, self._store.clock()) if row and row["phone"] == NO_PHONE else None
        row = self._store.find_submission(normalize_reference(ref), self._phone)
        if row is None:
            return None
        rateable = row["status"] == "resolved" and self._store.fixed(row["ref"]) is None
        return {**_status_item(row, self._store.clock()), "rateable": rateable}


def _status_item(row: dict, now: dt.datetime) -> dict:
    """A store row as the engine shows it: `created` and `changed` (the last status change) as dates;
    `overdue` while it is not final and the central backend said it is past its deadline, or the deadline
    it gave has passed since (no update comes the moment a deadline passes)."""
    due = row.get("due_at")
    late = bool(row.get("overdue")) or bool(due and dt.datetime.fromisoformat(due) <= now)
    return {**row, "created": dt.datetime.fromisoformat(row["created_at"]).date(),
            "changed": dt.datetime.fromisoformat(row["status_at"] or row["created_at"]).date(),
            "overdue": late and row["status"] not in FINAL_STATUSES}


def context(store: Store, rules: Rules, phone: str, new_reference: Callable[[], str] | None = None) -> Context:
    """What the engine is handed for one turn of `phone`; references come free from the store unless
    `new_reference` draws them."""
    return Context(today=store.clock().date(), lookup=Lookup(store, phone),
                   new_reference=new_reference or (lambda: store.free_reference(rules.ref_prefix)))


def language_of(store: Store, engine: Engine, rules: Rules, phone: str, *fallbacks: str | None) -> str:
    """The language to answer `phone` in: the one it chose, else the first usable fallback, else the default."""
    for lang in (store.language(phone), *fallbacks):
        if lang in engine.languages:
            return lang
    return rules.default_language


def submit(store: Store, engine: Engine, rules: Rules, submission: dict, *, phone: str, channel: str,
           session_id: str | None = None, cause: str | None = None, operator: str | None = None) -> dict:
    """Store `submission` and queue its confirmation SMS, in one transaction; return it with its `ref`
    and `held`.

    A submission without a `ref` gets one drawn free from the store. The
    confirmation's `cause` is the submission's id unless one is given (the
    incoming SMS that asked for it). Past the phone's daily limit for this
    service (`Rules.submissions_per_day` in the last 24 hours) it is stored
    all the same but held: status `review`, no confirmation SMS, so a flood
    cannot become an SMS bill; `held` then counts it among the phone's held
    ones in that window (1 for the first), else it is 0. `operator` is the
    kiosk account that entered it for a walk-in villager; one who gave no
    phone (`phone` is `NO_PHONE`) gets no SMS and has no daily limit (the
    operator, signed in and audited, answers for it). Raises
    `sync.errors.AlreadyClaimed` (nothing kept) when this phone already
    claimed a unique answer.
    """
    with store.transaction():
        submission = {**submission, "ref": submission.get("ref") or store.free_reference(rules.ref_prefix)}
        held = _over_daily_limit(store, rules, phone, submission["service"])
        added = store.add_submission(submission, phone=phone, channel=channel, session_id=session_id,
                                     operator=operator)
        if held:
            store.set_status(submission["ref"], "review")
            store.count_meta("held_submissions")
        elif phone != NO_PHONE:
            store.outbox.add(phone, confirmation_text(engine, submission), "confirmation", ttl=rules.sms_ttl,
                             cause=cause or added["id"])
    log.info("submission %s (%s) by %s from %s%s", submission["ref"], submission["service"], channel,
             mask_phone(phone), ", held for review: over the daily limit" if held else "")
    return {**submission, "held": held}


def _over_daily_limit(store: Store, rules: Rules, phone: str, service: str) -> int:
    """0 while `phone` is within its daily limit for `service`; else which held one the next is (1 for the first)."""
    if rules.submissions_per_day <= 0 or phone == NO_PHONE:
        return 0
    made = store.submissions_since(phone, service, store.clock() - DAY)
    return max(0, made - rules.submissions_per_day + 1)


def too_many_text(engine: Engine, lang: str, retry_after: float) -> str:
    """What a phone past a rate limit is told: in how many minutes to try again."""
    return engine.catalog.text(lang, TOO_MANY_TEXT, minutes=max(1, math.ceil(retry_after / 60)))


def held_text(engine: Engine, lang: str, ref: str) -> str:
    """What a villager is told of a held submission: its reference, and that staff look at it first."""
    return engine.catalog.text(lang, HELD_TEXT, ref=ref)


def confirmation_text(engine: Engine, submission: dict) -> str:
    """The SMS that confirms a submission, in the language it was made in."""
    lang = submission["language"]
    title = engine.catalog.text(lang, engine.flows[submission["service"]].title)
    return engine.catalog.text(lang, "sms.confirmation", service=title, ref=submission["ref"])


def status_text(store: Store, engine: Engine, phone: str, ref: str, lang: str) -> str:
    """The SMS on the submission `ref` made by `phone` (its latest when `ref` is empty), in `lang`."""
    lookup = Lookup(store, phone)
    room = SMS_SEGMENT_GSM7 - signature_cost(engine.catalog, lang)
    found = lookup.find(ref) if ref else next(iter(lookup.recent(1)), None)
    if found is not None:
        line = engine.status_line(found, lang, room=room)
    else:
        line = engine.catalog.text(lang, "status.not_found" if ref else "status.none")
    return signed(engine.catalog, lang, line)


def set_language(store: Store, phone: str, lang: str) -> None:
    """Every later session and SMS of `phone` is in `lang`."""
    store.set_language(phone, lang)


def change_status(store: Store, engine: Engine, rules: Rules, ref: str, status: str, note: str = "",
                  notice: str | None = None) -> str | None:
    """Set a submission's status and queue the notice to its phone, in one transaction.

    A new note with the same status is a change too (staff added a word).
    A resolution asks "is it fixed?" until the villager answered. An update
    whose `notice` is `QUIET` sends nothing: the villager's own "not fixed"
    reopened it (they were thanked), or only its agency or deadline changed.
    A change to a silent status (`review`) sends nothing: the villager was
    told at submission that the outcome comes by SMS; nor does one to a
    submission made with no phone (`NO_PHONE`). An update whose
    `notice` is `SAME_ANSWER` carries the submission's own status and note;
    it tells the phone, in its language and in words from the catalogs (not
    the staff's note, which was written to the other villager), that staff
    decided on another registration with its NIK.
    Returns the notice's outbox state (`queued`, or `suppressed` after STOP),
    or None when nothing is sent.
    """
    with store.transaction():
        changed = store.set_status(ref, status, note)
        if notice == SAME_ANSWER:
            return _tell_same_answer(store, engine, rules, ref)
        if changed is None or status in SILENT_STATUSES or notice == QUIET or changed["phone"] == NO_PHONE:
            return None
        phone = changed["phone"]
        lang = language_of(store, engine, rules, phone, changed["language"])
        text = notice_for(engine, lang, ref, changed["service"], status, note,
                          asks=status == "resolved" and changed["service"] in engine.asks_fixed
                          and store.fixed(ref) is None)
        queued = store.outbox.add(phone, text, "notice", ttl=rules.sms_ttl, cause=f"{ref}:{status}",
                                  opted_out=not store.wants_notices(phone))
    return queued["state"]


def notice_for(engine: Engine, lang: str, ref: str, service: str, status: str, note: str,
               asks: bool = False) -> str:
    """The SMS that tells a submission's phone its new status and the staff's note (shortened to fit), in `lang`;
    `asks`: a resolution that asks "is it fixed?"."""
    return notice_text(engine.catalog, lang, ref=ref, service=service_title(engine, lang, service),
                       status=engine.catalog.text(lang, STATUS_LABELS[status]), note=note, asks=asks)


def rate(store: Store, submission: dict, *, fixed: bool, rating: int | None, words: str, channel: str) -> bool:
    """Keep a villager's answer to "is it fixed?" about `submission` (a `Store.rateable` row), to go with the
    next sync; False when it had one already (the first counts). The central backend decides whether it
    came too late to count."""
    kept = store.add_feedback(submission["id"], fixed=fixed, rating=rating, words=words[:WORDS_LIMIT],
                              channel=channel)
    log.info("%s: %s answer to \"is it fixed?\" on %s: %s, rating %s", channel, "new" if kept else "repeated",
             submission["ref"], "fixed" if fixed else "not fixed", rating)
    return kept


def service_title(engine: Engine, lang: str, service: str) -> str:
    """What a service is called in `lang`; its code when the menus no longer have it."""
    flow = engine.flows.get(service)
    return engine.catalog.text(lang, flow.title) if flow else service


def _tell_same_answer(store: Store, engine: Engine, rules: Rules, ref: str) -> str | None:
    """Queue the SMS that tells `ref`'s phone another registration with its unique answer was decided."""
    row = store.submission(ref)
    if row is None or row["phone"] == NO_PHONE:
        return None
    phone = row["phone"]
    lang = language_of(store, engine, rules, phone, row["language"])
    text = engine.catalog.text(lang, SAME_ANSWER_TEXT, ref=ref, service=service_title(engine, lang, row["service"]))
    queued = store.outbox.add(phone, fit_sms(text), "notice", ttl=rules.sms_ttl, cause=f"{ref}:{SAME_ANSWER}",
                              opted_out=not store.wants_notices(phone))
    return queued["state"]
