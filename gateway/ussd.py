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
turn confirms one), commit, then answer.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass

import phonenumbers
from aiohttp import web

from flows import Context, Engine, FlowError, Turn
from sync.errors import DuplicateReference
from sync.reference import new_reference, normalize_reference
from sync.store import Store

from .log import mask_phone
from .resources import engine_key, rules_key, store_key

log = logging.getLogger(__name__)

MAX_TEXT = 2000
MAX_ID = 128
REFERENCE_ATTEMPTS = 5


@dataclass(frozen=True)
class Hop:
    """One checked callback."""

    session_id: str
    service_code: str
    phone: str
    text: str
    network_code: str


@dataclass(frozen=True)
class Rules:
    """The settings a turn needs, read from the config once."""

    default_language: str
    resume_window: dt.timedelta
    ref_prefix: str


class BadCallback(ValueError):
    """A callback whose fields are missing or malformed; the message is the reason."""


def parse_hop(form) -> Hop:
    """Check the callback form; raise `BadCallback` with the reason."""
    missing = [name for name in ("sessionId", "serviceCode", "phoneNumber", "text") if name not in form]
    if missing:
        raise BadCallback(f"missing form field(s): {', '.join(missing)}")
    session_id = str(form["sessionId"]).strip()
    service_code = str(form["serviceCode"]).strip()
    text = str(form["text"])
    network = str(form.get("networkCode", "")).strip()
    if not session_id or len(session_id) > MAX_ID or not session_id.isprintable():
        raise BadCallback(f"sessionId must be 1-{MAX_ID} printable characters")
    if not service_code or len(service_code) > 64:
        raise BadCallback("serviceCode must be 1-64 characters, like *384*1#")
    if len(text) > MAX_TEXT:
        raise BadCallback(f"text is longer than {MAX_TEXT} characters")
    if len(network) > 32:
        raise BadCallback("networkCode is longer than 32 characters")
    return Hop(session_id, service_code, e164(str(form["phoneNumber"])), text, network)


@functools.lru_cache(maxsize=4096)
def e164(raw: str) -> str:
    """A phone number in E.164 (`+6281234567890`), or `BadCallback`.

    Cached: every hop of a session repeats the number, and parsing it is a
    good share of a hop's work.
    """
    raw = raw.strip()
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise BadCallback("phoneNumber must be in E.164 form, like +6281234567890") from None
    if not phonenumbers.is_possible_number(number):
        raise BadCallback("phoneNumber is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def newest_input(history: str, text: str) -> str | None:
    """The input `text` adds to `history`, or None when `text` does not continue it."""
    if history == "":
        return text
    if text.startswith(history + "*"):
        return text[len(history) + 1:]
    return None


class _Lookup:
    """The engine's window on the store, bound to one caller."""

    def __init__(self, store: Store, phone: str):
        self._store = store
        self._phone = phone

    def taken(self, service: str, answer: str, value: str) -> bool:
        return self._store.taken(service, answer, value)

    def recent(self, limit: int) -> list[dict]:
        return [_item(row) for row in self._store.recent_submissions(self._phone, limit)]

    def find(self, ref: str) -> dict | None:
        row = self._store.find_submission(normalize_reference(ref), self._phone)
        return _item(row) if row else None


def _item(row: dict) -> dict:
    return {**row, "created": dt.datetime.fromisoformat(row["created_at"]).date()}


def ussd_turn(store: Store, engine: Engine, rules: Rules, hop: Hop) -> str:
    """Answer one hop; runs in the store's thread, all in one transaction."""
    ctx = Context(today=store.clock().date(), lookup=_Lookup(store, hop.phone),
                  new_reference=lambda: new_reference(rules.ref_prefix))
    with store.transaction():
        saved = store.session(hop.session_id)
        if saved is not None and saved["phone_hash"] != store.phone_digest(hop.phone):
            raise BadCallback("sessionId belongs to another phoneNumber")
        if saved is not None:
            if saved["done"] or hop.text == saved["history"]:
                return saved["response"]
            newest = newest_input(saved["history"], hop.text)
            if newest is None:
                log.warning("session %s: text does not continue its history; answering the last screen again",
                            hop.session_id)
                return saved["response"]

            def step() -> Turn:
                try:
                    return engine.resume(saved["state"], newest, ctx)
                except FlowError as error:
                    # Saved under menus that have changed since: start again.
                    log.warning("session %s: %s; back to the main menu", hop.session_id, error)
                    return engine.start(saved["state"].get("lang", rules.default_language), ctx)
        else:
            def step() -> Turn:
                return _first_turn(store, engine, rules, hop, ctx)

        turn = _commit(store, hop, step)
        body = ("END " if turn.done else "CON ") + turn.text
        store.save_session(hop.session_id, phone=hop.phone, service_code=hop.service_code,
                           state=turn.session, history=hop.text, response=body, done=turn.done,
                           resumable=engine.resumable(turn.session))
    if turn.submission is not None:
        log.info("submission %s (%s) from %s", turn.submission["ref"], turn.submission["service"],
                 mask_phone(hop.phone))
    log.debug("ussd %s %s: %s/%s%s", hop.session_id, mask_phone(hop.phone), turn.session["flow"],
             turn.session["screen"], " (end)" if turn.done else "")
    return body


def _first_turn(store: Store, engine: Engine, rules: Rules, hop: Hop, ctx: Context) -> Turn:
    language = store.language(hop.phone) or rules.default_language
    if hop.text:
        # A session we never saw begin (lost, or begun at another gateway):
        # replay its history from the main menu.
        turn = engine.start(language, ctx)
        for piece in hop.text.split("*"):
            if turn.done:
                break
            turn = engine.resume(turn.session, piece, ctx)
        return turn
    dropped = None
    if rules.resume_window:
        dropped = store.resumable_session(hop.phone, rules.resume_window, exclude=hop.session_id)
    if dropped is not None:
        store.forget_resumable(hop.phone, exclude=hop.session_id)
    return engine.start(language, ctx, saved=dropped[1] if dropped else None)


def _commit(store: Store, hop: Hop, step) -> Turn:
    """Run `step` and store what it decided; draw a new reference if the first one is taken."""
    for _ in range(REFERENCE_ATTEMPTS):
        turn = step()
        if turn.submission is not None:
            try:
                store.add_submission(turn.submission, phone=hop.phone, channel="ussd",
                                     session_id=hop.session_id)
            except DuplicateReference:
                continue
        if turn.language is not None:
            store.set_language(hop.phone, turn.language)
        return turn
    raise DuplicateReference(f"no free reference after {REFERENCE_ATTEMPTS} draws")


async def ussd_callback(request: web.Request) -> web.Response:
    try:
        hop = parse_hop(await request.post())
        store = request.app[store_key]
        body = await store.call(ussd_turn, request.app[engine_key], request.app[rules_key], hop)
    except BadCallback as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    return web.Response(text=body, content_type="text/plain")
