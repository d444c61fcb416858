"""The reference central backend's aiohttp application: `create_central_app(config)`.

    /sync/v1/batches   POST  a gateway's signed, gzip'd batch; a signed answer per item
    /sync/v1/updates   GET   status changes of that gateway's submissions after ?since=
    /api/v1/submissions           GET    staff: one page, newest first (status, service, village,
                                         since, limit, cursor)
    /api/v1/submissions/{ref}     PATCH  staff: set status (received, in_progress, resolved, rejected) and note

Staff calls carry `Authorization: Bearer <central.staff_token>`. Open311
GeoReport v2 lives under `/open311/v2/` (see `open311.py`). A refused sync
request carries `X-Kentongan-Refusal` (see `sync.protocol`).
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
from ..protocol import (BATCH_PATH, GATEWAY, REFUSAL, STATUSES, UPDATES_PATH, check_request, decode_batch,
                        sign_answer)
from ..thread import StoreThread
from .config import CentralConfig
from .open311 import setup_open311
from .store import Key, utc_stamp

log = logging.getLogger(__name__)

central_config_key = web.AppKey("central_config", CentralConfig)
central_store_key = web.AppKey("central_store", StoreThread)
MAX_BATCH_BYTES = 16 * 1024 * 1024
UPDATES_LIMIT = 500
PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000


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


async def _verified(request: web.Request, body: bytes) -> tuple[str, str, str]:
    """(gateway id, secret, nonce) of a correctly signed, fresh, first-seen request; else 401."""
    store = request.app[central_store_key]
    gateway_id = request.headers.get(GATEWAY, "")
    secret = await store.call(lambda s: s.secret(gateway_id)) if gateway_id else None
    if secret is None:
        raise _refuse("unknown-gateway", "unknown or missing gateway")
    try:
        nonce = check_request(request.headers, secret, request.method, request.path_qs, body)
    except ClockSkew as error:
        raise _refuse("clock-skew", str(error)) from None
    except SignatureError as error:
        raise _refuse("wrong-secret", str(error)) from None
    if not await store.call(lambda s: s.use_nonce(gateway_id, nonce)):
        raise _refuse("replayed", "replayed request")
    return gateway_id, secret, nonce


def _signed_json(data: dict, secret: str, nonce: str) -> web.Response:
    """A signed JSON answer; gzip'd on the wire when the gateway accepts it (the signature covers the JSON)."""
    body = json.dumps(data, separators=(",", ":")).encode()
    response = web.Response(body=body, content_type="application/json", headers=sign_answer(secret, 200, nonce, body))
    response.enable_compression()
    return response


async def receive_batch(request: web.Request) -> web.Response:
    raw = await request.read()
    gateway_id, secret, nonce = await _verified(request, raw)
    try:
        batch = decode_batch(raw)
    except ValueError as error:
        raise _refuse("bad-batch", str(error), web.HTTPBadRequest) from None
    if batch.get("gateway") not in (None, gateway_id):
        raise _refuse("bad-batch", "batch names another gateway", web.HTTPBadRequest)
    results = await request.app[central_store_key].call(lambda s: s.ingest(gateway_id, batch["items"]))
    accepted = sum(r["result"] == "accepted" for r in results)
    log.info("batch from %s: %d items, %d new", gateway_id, len(results), accepted)
    return _signed_json({"results": results}, secret, nonce)


async def send_updates(request: web.Request) -> web.Response:
    gateway_id, secret, nonce = await _verified(request, b"")
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="since must be a whole number") from None
    updates = await request.app[central_store_key].call(lambda s: s.updates(gateway_id, since, UPDATES_LIMIT))
    cursor = updates[-1]["seq"] if updates else since
    return _signed_json({"updates": updates, "cursor": cursor}, secret, nonce)


# -- the staff API --------------------------------------------------------------------

def _staff(request: web.Request) -> None:
    token = request.app[central_config_key].staff_token
    given = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise web.HTTPUnauthorized(text="staff token required: Authorization: Bearer <central.staff_token>")


def _public(row: dict) -> dict:
    return {key: row[key] for key in ("ref", "service", "channel", "status", "note", "village", "language",
                                      "answers", "phone", "gateway_id", "created_at", "received_at", "updated_at")}


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
    if not isinstance(note, str) or len(note) > 500:
        raise web.HTTPBadRequest(text="note must be text of at most 500 characters")
    ref = request.match_info["ref"].upper()
    row = await request.app[central_store_key].call(lambda s: s.set_status(ref, status, note))
    if row is None:
        raise web.HTTPNotFound(text=f"no submission {ref}")
    return web.json_response(_public(row))
