"""The reference central backend's aiohttp application: `create_central_app(config)`.

    /sync/v1/batches   POST  a gateway's signed, gzip'd batch; a signed answer per item
    /sync/v1/updates   GET   status changes of that gateway's submissions after ?since=
    /api/v1/submissions           GET    staff: one page, newest first (status, service, village,
                                         since, limit, cursor)
    /api/v1/submissions/{ref}     PATCH  staff: set status (one of `protocol.STATUSES`) and note

Staff calls carry `Authorization: Bearer <central.staff_token>`. Open311
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
`also_notified` names the submission whose phone is told too.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import AsyncIterator

from aiohttp import web

from ..errors import ClockSkew, SignatureError
from ..protocol import (BATCH_PATH, GATEWAY, REFUSAL, SILENT_STATUSES, STATUSES, UPDATES_PATH, check_request,
                        decode_batch, sign_answer)
from ..thread import StoreThread
from .config import CentralConfig
from .open311 import setup_open311
from .store import Key, NoPrefix, utc_stamp

log = logging.getLogger(__name__)

central_config_key = web.AppKey("central_config", CentralConfig)
central_store_key = web.AppKey("central_store", StoreThread)
MAX_BATCH_BYTES = 16 * 1024 * 1024
UPDATES_LIMIT = 500
PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000
MAX_NOTE = 500
"""The longest staff note kept; an SMS carries as much of it as fits one message."""


def create_central_app(config: CentralConfig) -> web.Application:
    """The central backend for `config`: the one assembly `serve`, `central serve` and the tests use.

    Raises ValueError when `config.open311_services` names a code that is not among `config.forms`.
    """
    app = web.Application(client_max_size=MAX_BATCH_BYTES)
    app[central_config_key] = config
    setup_open311(app, config, central_store_key)
    app.cleanup_ctx.append(store_context)
    setup_routes(app)
    return app


def setup_routes(app: web.Application) -> None:
    app.router.add_post(BATCH_PATH, receive_batch)
    app.router.add_get(UPDATES_PATH, send_updates)
    app.router.add_get("/api/v1/submissions", list_submissions)
    app.router.add_patch("/api/v1/submissions/{ref}", change_submission)
    app.router.add_get("/healthz", healthz)


async def store_context(app: web.Application) -> AsyncIterator[None]:
    thread = await StoreThread.open(CentralConfig.open_store, app[central_config_key])
    app[central_store_key] = thread
    yield
    thread.close()


# -- the sync API ---------------------------------------------------------------------

def _refuse(code: str, text: str, status: type[web.HTTPClientError] = web.HTTPUnauthorized) -> web.HTTPClientError:
    """A refusal: a short text for people, and the code (`protocol.REFUSALS`) for the gateway."""
    return status(text=text, headers={REFUSAL: code})


async def _verified(request: web.Request, body: bytes) -> tuple[dict, str, str]:
    """(gateway, secret, nonce) of a correctly signed, fresh, first-seen request; else 401.

    The gateway is `CentralStore.gateway`'s; the secret is the one that signed (the
    current one, or the previous one in its grace period).
    """
    store = request.app[central_store_key]
    gateway_id = request.headers.get(GATEWAY, "")
    known = await store.call(lambda s: (s.gateway(gateway_id), s.secrets(gateway_id))) if gateway_id else (None, [])
    gateway, secrets = known
    if gateway is None:
        raise _refuse("unknown-gateway", "unknown or missing gateway")
    secret, nonce = _signed_with(request, body, secrets)
    if not await store.call(lambda s: s.use_nonce(gateway_id, nonce)):
        raise _refuse("replayed", "replayed request")
    return gateway, secret, nonce


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
    raw = await request.read()
    gateway, secret, nonce = await _verified(request, raw)
    gateway_id = gateway["id"]
    try:
        batch = decode_batch(raw)
    except ValueError as error:
        raise _refuse("bad-batch", str(error), web.HTTPBadRequest) from None
    if batch.get("gateway") not in (None, gateway_id):
        raise _refuse("bad-batch", "batch names another gateway", web.HTTPBadRequest)
    try:
        results = await request.app[central_store_key].call(lambda s: s.ingest(gateway_id, batch["items"]))
    except NoPrefix as error:
        raise _refuse("no-prefix", str(error), web.HTTPForbidden) from None
    accepted = sum(r["result"] == "accepted" for r in results)
    log.info("batch from %s: %d items, %d new", gateway_id, len(results), accepted)
    return _signed_json({"results": results, "prefix": gateway["prefix"]}, secret, nonce)


async def send_updates(request: web.Request) -> web.Response:
    gateway, secret, nonce = await _verified(request, b"")
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="since must be a whole number") from None
    updates = await request.app[central_store_key].call(lambda s: s.updates(gateway["id"], since, UPDATES_LIMIT))
    cursor = updates[-1]["seq"] if updates else since
    return _signed_json({"updates": updates, "cursor": cursor, "prefix": gateway["prefix"]}, secret, nonce)


# -- the staff API --------------------------------------------------------------------

def _staff(request: web.Request) -> None:
    token = request.app[central_config_key].staff_token
    given = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise web.HTTPUnauthorized(text="staff token required: Authorization: Bearer <central.staff_token>")


def _public(row: dict) -> dict:
    return {key: row[key] for key in ("ref", "service", "channel", "status", "note", "village", "language",
                                      "answers", "phone", "gateway_id", "created_at", "received_at", "updated_at",
                                      "review_of", "review_reason")}


def encode_cursor(key: Key) -> str:
    """The opaque `next` of a page: where the following page starts."""
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Key:
    """The inverse of `encode_cursor`; ValueError when `text` is not one."""
    try:
        key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor") from None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(part, str) for part in key)
            and utc_stamp(key[0]) == key[0]):
        raise ValueError("not a cursor")
    return key[0], key[1]


def _limit(text: str | None) -> int:
    reason = f"limit must be a whole number from 1 to {MAX_PAGE_LIMIT}"
    limit = _parsed(text, int, reason)
    if limit is None:
        return PAGE_LIMIT
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise web.HTTPBadRequest(text=reason)
    return limit


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _parsed(text: str | None, parse, reason: str):
    """`parse(text)` of a query parameter, None when absent; a 400 with `reason` when it cannot be read."""
    if not text:
        return None
    try:
        return parse(text)
    except ValueError:
        raise web.HTTPBadRequest(text=reason) from None


async def list_submissions(request: web.Request) -> web.Response:
    _staff(request)
    query = request.query
    if query.get("status") and query["status"] not in STATUSES:
        raise web.HTTPBadRequest(text=f"status must be one of {', '.join(STATUSES)}")
    limit = _limit(query.get("limit"))
    since = _parsed(query.get("since"), utc_stamp, "since must be an ISO 8601 time, like 2026-11-01T00:00:00Z")
    after = _parsed(query.get("cursor"), decode_cursor, "cursor must be the `next` of an earlier page")
    rows, more = await request.app[central_store_key].call(lambda s: s.submissions(
        status=query.get("status"), service=query.get("service"), village=query.get("village"), since=since,
        after=after, limit=limit))
    return web.json_response({"submissions": [_public(r) for r in rows],
                              "next": encode_cursor(more) if more else None})


async def change_submission(request: web.Request) -> web.Response:
    _staff(request)
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON: {\"status\": ..., \"note\": ...}") from None
    status, note = (data.get("status"), data.get("note", "")) if isinstance(data, dict) else (None, "")
    if status not in STATUSES:
        raise web.HTTPBadRequest(text=f"status must be one of {', '.join(STATUSES)}")
    if not isinstance(note, str):
        raise web.HTTPBadRequest(text=f"note must be text of at most {MAX_NOTE} characters")
    if len(note) > MAX_NOTE:
        raise web.HTTPBadRequest(text=f"note must be text of at most {MAX_NOTE} characters (this one has {len(note)})")
    ref = request.match_info["ref"].upper()
    row = await request.app[central_store_key].call(lambda s: s.set_status(ref, status, note))
    if row is None:
        raise web.HTTPNotFound(text=f"no submission {ref}")
    return web.json_response({**_public(row), "sms": _sms(request.app[central_config_key], row),
                              "also_notified": row["also_notified"]})


def _sms(config: CentralConfig, row: dict) -> dict | None:
    """What the change will send to the submission's phone: `text` and `note_shortened`; None when nothing."""
    if config.notice is None or not row["changed"] or row["status"] in SILENT_STATUSES:
        return None
    notice = config.notice(row, row["status"], row["note"] or "")
    return {"text": notice.text, "note_shortened": notice.shortened}
