"""The reference central backend's aiohttp application: `create_central_app(config)`.

    /sync/v1/batches   POST  a gateway's signed, gzip'd batch; a signed answer per item
    /sync/v1/updates   GET   status changes of that gateway's submissions after ?since=
    /api/v1/submissions           GET    staff: one page (status, service, village, gateway, agency,
                                         overdue, since, until, ref, order, limit, cursor)
    /api/v1/submissions/{ref}     GET    staff: one submission with its history
    /api/v1/submissions/{ref}     PATCH  staff: set status (one of `protocol.STATUSES`) and note, as
                                         the caller saw it at `expected` (else 409 with what changed)

Staff calls carry `Authorization: Bearer <token>`: a person's own token
(`kentongan central staff token NAME`), whose role decides what the call
may do and see (without `personal`, phones are masked and personal answers
left out; with it, each submission shown is an audit row), or the shared
`central.staff_token`, deprecated. The
`village` filter is matched by the store's keyed digest (the place is
sealed at rest); the answer shows it opened.

Every route reads at most its own body limit (`body_limits`), checked
against Content-Length before anything is read and again while reading,
before any signature or key is looked at: the sync batch's comes from
`CentralConfig.batch_size`. Bodies come uncompressed (a batch is gzip'd by
its own format, unpacked only up to the same limit): any Content-Encoding
is a 415. A body that cannot be read (too large, a
broken encoding or charset) is a 4xx with a reason and one WARNING line.
An unknown gateway id is refused exactly as a known one with a wrong
signature. Open311
GeoReport v2 lives under `/open311/v2/` (see `open311.py`). A refused sync
request carries `X-Kentongan-Refusal` (see `sync.protocol`).

A gateway signs with its secret, or during a rotation's grace period with
its previous one; the answer is signed with the secret the request was. Both
sync answers name the reference prefix the centre knows the gateway by.

Staff see why a submission waits in `review` (`review_of`, `review_reason`);
that never goes to a gateway. A PATCH answers with the submission and, when
the config hands in a notice renderer, `sms`: the text its phone will get
and whether the note in it is shortened (the note itself is stored whole,
up to `MAX_NOTE` characters); when it decides a submission held for review,
`also_notified` names the submission whose phone is told too. A PATCH that
names `expected` (the `updated_at` the caller saw) is refused with 409 when
the submission changed since: the answer holds the submission as it is now
(`current`) and the history rows written since (`changes`); nothing changes.

A batch may carry villagers' answers to "is it fixed?" (`protocol.FEEDBACK`);
its answer then names each one's result (`feedback_results`). Every
`CentralConfig.escalate_seconds` the backend escalates the requests that
became overdue (`CentralStore.escalate_overdue`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import AsyncIterator

import secrets
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..accounts import TOKEN_PREFIX
from ..errors import ClockSkew, SignatureError
from ..limits import RateLimiter
from ..pages import FORM_BODY_LIMIT, PageSettings, roles_with, sign_in
from ..protocol import (BATCH_PATH, FEEDBACK, GATEWAY, REFUSAL, SILENT_STATUSES, STATUSES, UPDATES_PATH,
                        batch_bytes, check_request, decode_batch, loads, sign_answer)
from ..seal import mask_phone
from ..thread import StoreThread
from . import metrics
from .config import CentralConfig
from .keys import body_limits_key, central_config_key, central_store_key
from .limits import RateLimits
from .open311 import OPEN311_BODY_LIMIT, create_request, setup_open311
from .pages import setup_office
from .service import not_personal, place_shown
from .store import MAX_NOTE, ORDERS, Changed, CentralStore, Cursor, NoPrefix, utc_stamp

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
rate_limits_key = web.AppKey("rate_limits", RateLimits)
NO_BODY_LIMIT = 1024
"""What a route that takes no body reads at most (aiohttp takes 0 for no limit)."""
STAFF_BODY_LIMIT = 16 * 1024
MAX_CURSOR = 2 ** 63 - 1
"""The largest update cursor SQLite can compare."""
UNKNOWN_SECRET = secrets.token_hex(32)
"""What an unknown gateway's signature is checked against, so that it is refused as a known one's wrong one."""
UPDATES_LIMIT = 500
PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000
SHARED_TOKEN = "central.staff_token"
"""The audit log's `who` for calls made with the shared, deprecated token."""
SHARED_TOKEN_PERMISSIONS = frozenset({"read", "act", "personal", "audit"})
WRONG_TOKENS_PER_MINUTE = 60
"""Failed staff-token lookups one source address may make per minute; more get 429."""
DEPRECATION_LOG_SECONDS = 3600.0
MAX_TOKEN = 200


def create_central_app(config: CentralConfig, pages: PageSettings = PageSettings()) -> web.Application:
    """The central backend for `config`: the one assembly `serve`, `central serve` and the tests use.

    `pages` are the office pages' catalogs, languages and sign-in rules (by
    default English message ids only: enough for an API-only backend).
    Raises ValueError when `config.open311_services` names a code that is not among `config.forms`.
    """
    limits = RateLimits(config)
    app = web.Application(client_max_size=NO_BODY_LIMIT, middlewares=[limits, bounded_body],
                          handler_args={"logger": ClientErrorLog(logging.getLogger("aiohttp.server"), None)})
    app[central_config_key] = config
    app[rate_limits_key] = limits
    app[body_limits_key] = {receive_batch: batch_bytes(config.batch_size), change_submission: STAFF_BODY_LIMIT,
                            create_request: OPEN311_BODY_LIMIT, sign_in: FORM_BODY_LIMIT}
    app[staff_gate_key] = StaffGate(config.staff_token)
    app.on_startup.append(app[staff_gate_key].on_startup)
    setup_open311(app, config, central_store_key)
    app.cleanup_ctx.append(store_context)
    setup_routes(app)
    metrics.setup_metrics(app, {"open311_posts": limits.open311, "sync": limits.sync,
                                "staff_tokens": app[staff_gate_key].wrong_tokens})
    setup_office(app, pages, central_store_key)
    return app


class ClientErrorLog(logging.LoggerAdapter):
    """aiohttp's server log, where the client's faults are no ERROR and no traceback: a request aiohttp cannot
    parse (bad headers, answered 400 by aiohttp) is one WARNING line; a body nobody wanted (it was answered
    unread) that fails to decode while aiohttp discards it is a DEBUG line. Anything else stays an ERROR
    with its traceback."""

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.warning(f"{msg}: %s", *args, ascii(_reason(exc_info)))
        elif isinstance(exc_info, RequestPayloadError):
            self.debug(f"{msg}: %s", *args, ascii(_reason(exc_info)))
        else:
            super().exception(msg, *args, exc_info=exc_info, **kwargs)


@web.middleware
async def bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The route's handler, reading at most the route's body limit; 413 or 400 with a reason when the body
    is too large or cannot be read (a WARNING line, never a traceback).

    An answer given while part of the body is still unread closes the connection: the client is told
    (`Connection: close`) rather than finding a kept-alive connection gone, and a body left behind is
    never parsed as the next request.
    """
    limit = request.app[body_limits_key].get(request.match_info.handler, NO_BODY_LIMIT)
    try:
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise _unreadable(request, web.HTTPUnsupportedMediaType(
                text=f"the body must not be compressed (Content-Encoding {ascii(encoding[:40])}): a batch is gzip'd "
                     f"by its own format"))
        if request.content_length is not None and request.content_length > limit:
            raise _unreadable(request, web.HTTPRequestEntityTooLarge(max_size=limit,
                                                                     actual_size=request.content_length))
        try:
            response = await handler(request.clone(client_max_size=limit))
        except web.HTTPRequestEntityTooLarge as error:
            raise _unreadable(request, error) from None
        except (RequestPayloadError, HttpProcessingError) as error:
            request.content.feed_eof()  # broken past here: no lingering read that fails again
            raise _unreadable(request, web.HTTPBadRequest(text=f"the body cannot be read: {_reason(error)}")) \
                from None
        except ConnectionResetError:
            log.warning("%s %s: the client went away while sending", request.method, ascii(request.path))
            raise web.HTTPBadRequest(text="the body ended early") from None
    except web.HTTPException as error:
        _close_if_unread(request, error)
        raise
    _close_if_unread(request, response)
    return response


def _close_if_unread(request: web.Request, response: web.StreamResponse) -> None:
    if not request.content.is_eof() or request.content.exception() is not None:
        response.force_close()


async def _read(request: web.Request, limit: int) -> bytes:
    """The body, up to `limit` bytes (413 beyond), read in the stream's own small chunks.

    Unlike `request.read()`, it never grows the stream's buffers to the limit: a large
    limit costs memory only for a body that is really that large.
    """
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            size = len(body)
            body.clear()  # the refusal's traceback keeps this frame alive until a garbage collection
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
    return bytes(body)


def _unreadable(request: web.Request, error: web.HTTPError) -> web.HTTPError:
    log.warning("%s %s refused with %d: %s", request.method, ascii(request.path), error.status, ascii(error.text))
    return error


def _reason(error: Exception) -> str:
    """What was wrong with a body, in one short line: aiohttp's own words, without its status prefix."""
    cause = error.__cause__ if isinstance(error.__cause__, HttpProcessingError) else error
    text = cause.message if isinstance(cause, HttpProcessingError) else str(cause)
    return " ".join(str(text).split())[:200] or type(error).__name__


def setup_routes(app: web.Application) -> None:
    app.router.add_post(BATCH_PATH, receive_batch)
    app.router.add_get(UPDATES_PATH, send_updates)
    app.router.add_get("/api/v1/submissions", list_submissions)
    app.router.add_get("/api/v1/submissions/{ref}", one_submission)
    app.router.add_patch("/api/v1/submissions/{ref}", change_submission)
    app.router.add_get("/healthz", healthz)


READERS = 2
"""Reading threads beside the store's one writing thread (`StoreThread.read`): Open311's lists and reads."""
RETENTION_SECONDS = 24 * 3600


async def store_context(app: web.Application) -> AsyncIterator[None]:
    """The store's thread and its readers for the app's lifetime; with `retention_days`, the daily erasure."""
    config = app[central_config_key]
    thread = await StoreThread.open(CentralConfig.open_store, config, readers=READERS)
    app[central_store_key] = thread
    tasks = [asyncio.create_task(_escalate(thread, config))]
    if config.retention:
        tasks.append(asyncio.create_task(_retain(thread, config)))
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    thread.close()


async def _escalate(thread: StoreThread, config: CentralConfig) -> None:
    """As the backend starts, then every `escalate_seconds`: escalate the requests that became overdue."""
    while True:
        try:
            escalated = await thread.call(lambda s: s.escalate_overdue())
            if escalated:
                log.info("%d requests passed their deadline and were escalated to their agencies' supervisors",
                         escalated)
        except Exception:
            log.exception("escalation failed")
        await asyncio.sleep(config.escalate_seconds)


async def _retain(thread: StoreThread, config: CentralConfig) -> None:
    """As the backend starts, then daily: erase the personal data of submissions final for `retention_days`
    (`CentralStore.purge_personal`)."""
    while True:
        try:
            erased = await thread.call(lambda s: s.purge_personal(config.retention))
            if erased:
                log.info("retention erased the answers and phone number of %d submissions final for over %d days",
                         erased, config.retention_days)
        except Exception:
            log.exception("retention failed")
        await asyncio.sleep(RETENTION_SECONDS)


# -- the sync API ---------------------------------------------------------------------

def _refuse(code: str, text: str, status: type[web.HTTPClientError] = web.HTTPUnauthorized) -> web.HTTPClientError:
    """A refusal: a short text for people, and the code (`protocol.REFUSALS`) for the gateway."""
    return status(text=text, headers={REFUSAL: code})


async def _verified(request: web.Request, body: bytes, *, record_nonce: bool = True) -> tuple[dict, str, str]:
    """(gateway, secret, nonce) of a correctly signed, fresh, first-seen request; else 401.

    The gateway is `CentralStore.gateway`'s; the secret is the one that signed (the
    current one, or the previous one in its grace period). An unknown or missing
    gateway id is checked against a secret nobody has: every refusal (unsigned,
    stale, wrong signature) reads as it would for a known id. Without
    `record_nonce` the caller records the nonce itself (`CentralStore.use_nonce`),
    in the transaction of what the request does.
    """
    store = request.app[central_store_key]
    gateway_id = request.headers.get(GATEWAY, "")
    known = await store.call(lambda s: (s.gateway(gateway_id), s.secrets(gateway_id))) \
        if _is_text(gateway_id) else (None, [])
    gateway, secrets = known
    secret, nonce = _signed_with(request, body, secrets if gateway else [UNKNOWN_SECRET])
    if gateway is None:
        raise _refuse("wrong-secret", "wrong signature")  # only a forged UNKNOWN_SECRET gets here
    if record_nonce and not await store.call(lambda s: s.use_nonce(gateway_id, nonce)):
        raise _refuse("replayed", "replayed request")
    return gateway, secret, nonce


class _Replayed(Exception):
    """A batch's nonce was used before: nothing of the batch is stored."""


def _is_text(value: str) -> bool:
    """Whether a header is non-empty text the store can look up (aiohttp decodes stray bytes as surrogates)."""
    try:
        return bool(value) and bool(value.encode())
    except UnicodeEncodeError:
        return False


def _signed_with(request: web.Request, body: bytes, secrets: list[str]) -> tuple[str, str]:
    """(the secret among `secrets` that signed the request, its nonce); else 401."""
    refusal = "wrong signature"
    for secret in secrets:
        try:
            return secret, check_request(request.headers, secret, request.method, request.path_qs, body)
        except ClockSkew as error:
            raise _refuse("clock-skew", str(error)) from None
        except SignatureError as error:
            refusal = str(error)
    raise _refuse("wrong-secret", refusal)


def _signed_json(data: dict, secret: str, nonce: str) -> web.Response:
    """A signed JSON answer; gzip'd on the wire when the gateway accepts it (the signature covers the JSON)."""
    body = json.dumps(data, separators=(",", ":")).encode()
    response = web.Response(body=body, content_type="application/json", headers=sign_answer(secret, 200, nonce, body))
    response.enable_compression()
    return response


async def receive_batch(request: web.Request) -> web.Response:
    raw = await _read(request, batch_bytes(request.app[central_config_key].batch_size))
    gateway, secret, nonce = await _verified(request, raw, record_nonce=False)
    gateway_id = gateway["id"]
    try:
        batch = decode_batch(raw, batch_bytes(request.app[central_config_key].batch_size))
    except ValueError as error:
        raise _refuse("bad-batch", str(error), web.HTTPBadRequest) from None
    if batch.get("gateway") not in (None, gateway_id):
        raise _refuse("bad-batch", "batch names another gateway", web.HTTPBadRequest)
    feedback = batch.get(FEEDBACK)
    if feedback is not None and len(feedback) > request.app[central_config_key].batch_size:
        raise _refuse("bad-batch", f"a batch carries at most {request.app[central_config_key].batch_size} answers "
                                   f"to \"is it fixed?\"", web.HTTPBadRequest)

    thread = request.app[central_store_key]
    # Sealing is most of a batch's work and needs no connection: done here, in a thread of the loop's pool, while
    # the store's thread writes the batches before this one.
    sealed = await asyncio.get_running_loop().run_in_executor(None, thread.store.seal_batch, batch["items"])

    def store_batch(store: CentralStore) -> tuple[list[dict], list[dict] | None]:
        # The nonce in the batch's own transaction: one commit per batch, not two, and a replay stores nothing.
        with store.transaction():
            if not store.use_nonce(gateway_id, nonce):
                raise _Replayed()
            results = store.ingest(gateway_id, batch["items"], sealed, gateway["prefix"])
            return results, store.record_feedback(gateway_id, feedback) if feedback is not None else None

    try:
        if thread.store.postgres:
            # One transaction per batch: a batch holds its gateway's advisory lock (and the claims lock) until
            # its transaction ends, so a group would hold every batch's locks until the group commits, and
            # another worker's group of the same gateways in another order would deadlock with it (PostgreSQL
            # then cancels one batch, which answers 500). Commits of several workers overlap there anyway.
            results, feedback_results = await thread.call(store_batch)
        else:
            # Grouped: batches of several gateways arriving together share one commit (each in a savepoint of
            # its own, so one that fails is undone alone), and none is answered before that commit is durable.
            # SQLite has one writer, so no other process holds what a group waits for.
            results, feedback_results = await thread.call_grouped(store_batch)
    except _Replayed:
        raise _refuse("replayed", "replayed request") from None
    except NoPrefix as error:
        raise _refuse("no-prefix", str(error), web.HTTPForbidden) from None
    metrics.ingested(request.app, results)
    accepted = sum(r["result"] == "accepted" for r in results)
    log.info("batch from %s: %d items, %d new", gateway_id, len(results), accepted)
    answer = {"results": results, "prefix": gateway["prefix"]}
    if feedback_results is not None:
        answer["feedback_results"] = feedback_results
        log.info("batch from %s: %d answers to \"is it fixed?\", %d counted", gateway_id, len(feedback_results),
                 sum(r["result"] == "accepted" for r in feedback_results))
    return _signed_json(answer, secret, nonce)


async def send_updates(request: web.Request) -> web.Response:
    gateway, secret, nonce = await _verified(request, b"")
    since = _parsed(request.query.get("since"), int, "since must be a whole number from 0") or 0
    if not 0 <= since <= MAX_CURSOR:
        raise web.HTTPBadRequest(text=f"since must be a whole number from 0 to {MAX_CURSOR}")
    updates = await request.app[central_store_key].call(lambda s: s.updates(gateway["id"], since, UPDATES_LIMIT))
    cursor = updates[-1]["seq"] if updates else since
    return _signed_json({"updates": updates, "cursor": cursor, "prefix": gateway["prefix"]}, secret, nonce)


# -- the staff API --------------------------------------------------------------------

@dataclass(frozen=True)
class Caller:
    """Who makes a staff call: the account's name (the audit log's `who`) and what its role permits."""

    who: str
    permissions: frozenset[str]


class StaffGate:
    """What the staff API remembers between calls: failed token lookups per source address, and when the
    shared token's deprecation was last logged: as the backend starts serving when one is configured, then at most
    once per DEPRECATION_LOG_SECONDS while it is used."""

    def __init__(self, shared_token: str) -> None:
        self.wrong_tokens = RateLimiter("wrong staff tokens per address", WRONG_TOKENS_PER_MINUTE, 60.0)
        self.warned_at = -DEPRECATION_LOG_SECONDS
        self.shared_token = shared_token

    async def on_startup(self, app: web.Application) -> None:
        if self.shared_token:
            self.shared_token_used()

    def shared_token_used(self) -> None:
        now = time.monotonic()
        if now - self.warned_at >= DEPRECATION_LOG_SECONDS:
            self.warned_at = now
            log.warning("central.staff_token is deprecated: give each person an account (kentongan central staff "
                        "add) and a token (kentongan central staff token)")


staff_gate_key = web.AppKey("staff_gate", StaffGate)


async def _staff(request: web.Request, permission: str) -> Caller:
    """The caller of a staff call, when its `Authorization: Bearer` token is a live per-person token or the
    shared `central.staff_token` (deprecated; it acts with `SHARED_TOKEN_PERMISSIONS`) and it may
    `permission`; else 401, 403, or 429 for an address that sent WRONG_TOKENS_PER_MINUTE wrong tokens
    (checked first, so that no token, not even the shared one, can be guessed past it).

    Only failed lookups count against an address; the token is never logged.
    """
    gate, shared = request.app[staff_gate_key], request.app[central_config_key].staff_token
    address = request.remote or "?"
    if not gate.wrong_tokens.peek(address).allowed:
        verdict = gate.wrong_tokens.hit(address)
        if verdict.first_refusal:
            log.warning("staff API: %d wrong tokens from %s this minute; refused with 429 until it ends",
                        gate.wrong_tokens.limit, ascii(address))
        seconds = max(1, math.ceil(verdict.retry_after))
        raise web.HTTPTooManyRequests(text=f"too many wrong staff tokens from this address; retry in {seconds} s",
                                      headers={"Retry-After": str(seconds)})
    given = request.headers.get("Authorization", "")
    if shared and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), f"Bearer {shared}".encode()):
        gate.shared_token_used()
        return _permitted(Caller(SHARED_TOKEN, SHARED_TOKEN_PERMISSIONS), permission)
    scheme, _, token = given.partition(" ")
    token = token.strip()
    account = None
    if scheme == "Bearer" and token.startswith(TOKEN_PREFIX) and _is_text(token) and len(token) <= MAX_TOKEN:
        account = await request.app[central_store_key].call(lambda s: s.accounts.token_account(token))
    if account is None:
        gate.wrong_tokens.hit(address)
        raise web.HTTPUnauthorized(text="staff token required: Authorization: Bearer <token> "
                                        "(kentongan central staff token NAME)")
    return _permitted(Caller(account["name"], account["permissions"]), permission)


def _permitted(caller: Caller, permission: str) -> Caller:
    if permission not in caller.permissions:
        raise web.HTTPForbidden(text=f"{caller.who}'s role may not do this: it needs a role with "
                                     f"{permission!r} ({', '.join(roles_with('central', permission))})")
    return caller


def _public(row: dict, caller: Caller, forms) -> dict:
    """What staff see of a submission: everything, for a role that may see personal fields; else the phone
    masked and only the answers that `not_personal` lets through."""
    shown = {key: row[key] for key in ("ref", "service", "channel", "status", "note", "village", "language",
                                       "answers", "phone", "gateway_id", "created_at", "received_at", "updated_at",
                                       "review_of", "review_reason", "purged_at", "agency", "category", "due_at",
                                       "overdue", "escalated_at", "resolved_at", "first_resolved_at", "reopened",
                                       "fixed", "rating")}
    if "personal" not in caller.permissions:
        allowed = not_personal(forms.get(row["service"]))
        shown["village"] = place_shown(forms.get(row["service"]), row["village"], False)
        shown["phone"] = mask_phone(row["phone"]) if row["phone"] else ""
        shown["answers"] = {name: value for name, value in row["answers"].items() if name in allowed}
    return shown


def _shown(store: CentralStore, rows: list[dict], caller: Caller) -> None:
    """Audit a personal view of each of `rows` (one row per submission), when `caller` sees personal fields."""
    if "personal" in caller.permissions:
        with store.transaction():
            for row in rows:
                store.accounts.audit(caller.who, "personal-view", row["ref"])


def encode_cursor(key: Cursor) -> str:
    """The opaque `next` of a page: where the following page starts (`CentralStore.triage`'s cursor)."""
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """The inverse of `encode_cursor`; ValueError when `text` is not one."""
    try:
        key = loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError("not a cursor") from None
    if not (isinstance(key, list) and len(key) in (2, 4) and all(isinstance(part, str) for part in key)):
        raise ValueError("not a cursor")
    when = key[0] if len(key) == 2 else key[1]
    if utc_stamp(when) != when:
        raise ValueError("not a cursor")
    return tuple(key)


def _limit(text: str | None) -> int:
    reason = f"limit must be a whole number from 1 to {MAX_PAGE_LIMIT}"
    limit = _parsed(text, int, reason)
    if limit is None:
        return PAGE_LIMIT
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise web.HTTPBadRequest(text=reason)
    return limit


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "rate_limited": request.app[rate_limits_key].counts()})


def _parsed(text: str | None, parse, reason: str):
    """`parse(text)` of a query parameter, None when absent; a 400 with `reason` when it cannot be read."""
    if not text:
        return None
    try:
        return parse(text)
    except ValueError:
        raise web.HTTPBadRequest(text=reason) from None


def _overdue_filter(text: str | None) -> bool | None:
    reason = "overdue must be true or false"
    if not text:
        return None
    if text.lower() not in ("true", "false", "1", "0"):
        raise web.HTTPBadRequest(text=reason)
    return text.lower() in ("true", "1")


async def list_submissions(request: web.Request) -> web.Response:
    caller = await _staff(request, "read")
    query = request.query
    if query.get("status") and query["status"] not in STATUSES:
        raise web.HTTPBadRequest(text=f"status must be one of {', '.join(STATUSES)}")
    if query.get("order", "newest") not in ORDERS:
        raise web.HTTPBadRequest(text=f"order must be one of {', '.join(ORDERS)}")
    limit = _limit(query.get("limit"))
    when = "must be an ISO 8601 time, like 2026-11-01T00:00:00Z"
    since = _parsed(query.get("since"), utc_stamp, f"since {when}")
    until = _parsed(query.get("until"), utc_stamp, f"until {when}")
    after = _parsed(query.get("cursor"), decode_cursor, "cursor must be the `next` of an earlier page")
    filters = {name: query.get(name) or None for name in ("status", "service", "village", "gateway", "agency", "ref")}
    overdue = _overdue_filter(query.get("overdue"))

    thread = request.app[central_store_key]
    try:
        rows, more = await thread.read(lambda s: s.triage(
            **filters, overdue=overdue, changed_since=since, changed_until=until, order=query.get("order", "newest"),
            after=after, limit=limit))
    except ValueError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    if "personal" in caller.permissions:  # a reader refuses to write: the audit rows go through the writer
        await thread.call(_shown, rows, caller)
    forms = request.app[central_config_key].forms
    return web.json_response({"submissions": [_public(r, caller, forms) for r in rows],
                              "next": encode_cursor(more) if more else None})


async def one_submission(request: web.Request) -> web.Response:
    caller = await _staff(request, "read")
    ref = request.match_info["ref"].upper()
    thread = request.app[central_store_key]
    row = await thread.read(lambda s: s.submission_page(ref))
    if row is None:
        raise web.HTTPNotFound(text=f"no submission {ref}")
    if "personal" in caller.permissions:
        await thread.call(_shown, [row], caller)
    return web.json_response({**_public(row, caller, request.app[central_config_key].forms),
                              "history": [_event(event, caller) for event in row["history"]]})


def _event(event: dict, caller: Caller) -> dict:
    """A history row as staff see it: a villager's own words only for a role that may see personal fields."""
    shown = {key: event[key] for key in ("at", "kind", "status", "note", "who", "detail", "rating")}
    if event["kind"] in ("feedback", "late-feedback") and "personal" not in caller.permissions:
        shown["note"] = None
    return shown


async def change_submission(request: web.Request) -> web.Response:
    caller = await _staff(request, "act")
    data = await _json_body(request, "body must be UTF-8 JSON: {\"status\": ..., \"note\": ..., \"expected\": ...}")
    status, note, expected = (data.get("status"), data.get("note", ""), data.get("expected")) \
        if isinstance(data, dict) else (None, "", None)
    if status not in STATUSES:
        raise web.HTTPBadRequest(text=f"status must be one of {', '.join(STATUSES)}")
    if not isinstance(note, str):
        raise web.HTTPBadRequest(text=f"note must be text of at most {MAX_NOTE} characters")
    if len(note) > MAX_NOTE:
        raise web.HTTPBadRequest(text=f"note must be text of at most {MAX_NOTE} characters (this one has {len(note)})")
    if expected is not None and not isinstance(expected, str):
        raise web.HTTPBadRequest(text="expected must be the updated_at of the submission as you saw it")
    ref = request.match_info["ref"].upper()
    forms = request.app[central_config_key].forms

    def change(store: CentralStore) -> dict | None:
        with store.transaction():
            before = store.submission(ref)
            row = store.change(ref, status, note, caller.who, expected) if before else None
            if row is not None:
                store.accounts.audit(caller.who, "status", ref, f"{before['status']} -> {row['status']}")
                _shown(store, [row], caller)
            return row

    try:
        row = await request.app[central_store_key].call(change)
    except Changed as changed:
        return web.json_response({"error": f"{ref} changed since {expected}: it is now {changed.current['status']}",
                                  "current": _public(changed.current, caller, forms),
                                  "changes": [_event(event, caller) for event in changed.history]}, status=409)
    if row is None:
        raise web.HTTPNotFound(text=f"no submission {ref}")
    metrics.staff_changed(request.app, status)
    return web.json_response({**_public(row, caller, forms),
                              "sms": _sms(request.app[central_config_key], row), "also_notified": row["also_notified"]})


async def _json_body(request: web.Request, reason: str):
    """The body as JSON (`protocol.loads`: bounded depth, finite numbers, valid text); a 400 with `reason` and
    one WARNING line when it is not."""
    if request.charset and request.charset.lower() not in ("utf-8", "utf8"):
        raise _unreadable(request, web.HTTPBadRequest(text=f"{reason} (charset {request.charset[:40]!r})"))
    try:
        return loads(await request.read())
    except ValueError as error:
        raise _unreadable(request, web.HTTPBadRequest(text=f"{reason} ({_reason(error)})")) from None


def _sms(config: CentralConfig, row: dict) -> dict | None:
    """What the change will send to the submission's phone: `text` and `note_shortened`; None when nothing."""
    if config.notice is None or not row["changed"] or row["status"] in SILENT_STATUSES:
        return None
    notice = config.notice(row, row["status"], row["note"] or "")
    return {"text": notice.text, "note_shortened": notice.shortened}
