"""The reference central backend: `create_central_app(...)`.

    /sync/v1/batches   POST  a gateway's signed, gzip'd batch; a signed answer per item
    /sync/v1/updates   GET   status changes of that gateway's submissions after ?since=
    /api/v1/submissions           GET    staff: list (status, service, village, since)
    /api/v1/submissions/{ref}     PATCH  staff: set status (received, in_progress, resolved, rejected) and note

Staff calls carry `Authorization: Bearer <central.staff_token>`. Open311
GeoReport v2 lives under `/open311/v2/` (see `open311.py`).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from .central_store import CentralStore
from .client import BATCH_PATH, UPDATES_PATH, decode_batch
from .open311 import setup_open311
from .signing import GATEWAY, SignatureError, check_request, sign_answer
from .store import STATUSES
from .thread import StoreThread

log = logging.getLogger(__name__)

central_store_key = web.AppKey("central_store", StoreThread)
settings_key = web.AppKey("central_settings", dict)
MAX_BATCH_BYTES = 16 * 1024 * 1024
UPDATES_LIMIT = 500


def create_central_app(data_dir: str | Path, gateways: dict[str, str], staff_token: str, *,
                       services: list[dict] = (), open311_api_key: str = "", ref_prefix: str = "Z",
                       agency: str = "") -> web.Application:
    """The central backend over its store in `data_dir`, knowing `gateways` (id -> sync secret).

    `services` are the Open311 service descriptions (see `open311.py`).
    """
    app = web.Application(client_max_size=MAX_BATCH_BYTES)
    setup_open311(app, central_store_key, list(services), open311_api_key, ref_prefix, agency)
    app[settings_key] = {"data_dir": Path(data_dir), "gateways": dict(gateways), "staff_token": staff_token}
    app.cleanup_ctx.append(_store_context)
    app.router.add_post(BATCH_PATH, receive_batch)
    app.router.add_get(UPDATES_PATH, send_updates)
    app.router.add_get("/api/v1/submissions", list_submissions)
    app.router.add_patch("/api/v1/submissions/{ref}", change_submission)
    return app


async def _store_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    thread = await StoreThread.open(CentralStore.open, settings["data_dir"])
    for gateway_id, secret in settings["gateways"].items():
        await thread.call(lambda store, g=gateway_id, s=secret: store.register_gateway(g, s))
    app[central_store_key] = thread
    yield
    thread.close()


async def _verified(request: web.Request, body: bytes) -> tuple[str, str, str]:
    """(gateway id, secret, nonce) of a correctly signed, fresh, first-seen request; else 401."""
    store = request.app[central_store_key]
    gateway_id = request.headers.get(GATEWAY, "")
    secret = await store.call(lambda s: s.secret(gateway_id)) if gateway_id else None
    if secret is None:
        raise web.HTTPUnauthorized(text="unknown or missing gateway")
    try:
        nonce = check_request(request.headers, secret, request.method, request.path_qs, body)
    except SignatureError as error:
        raise web.HTTPUnauthorized(text=str(error)) from None
    if not await store.call(lambda s: s.use_nonce(gateway_id, nonce)):
        raise web.HTTPUnauthorized(text="replayed request")
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
        raise web.HTTPBadRequest(text=str(error)) from None
    if batch.get("gateway") not in (None, gateway_id):
        raise web.HTTPBadRequest(text="batch names another gateway")
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


def _staff(request: web.Request) -> None:
    token = request.app[settings_key]["staff_token"]
    given = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise web.HTTPUnauthorized(text="staff token required: Authorization: Bearer <central.staff_token>")


def _public(row: dict) -> dict:
    return {key: row[key] for key in ("ref", "service", "channel", "status", "note", "village", "language",
                                      "answers", "phone", "gateway_id", "created_at", "received_at", "updated_at")}


async def list_submissions(request: web.Request) -> web.Response:
    _staff(request)
    query = request.query
    if query.get("status") and query["status"] not in STATUSES:
        raise web.HTTPBadRequest(text=f"status must be one of {', '.join(STATUSES)}")
    since = None
    if query.get("since"):
        try:
            when = dt.datetime.fromisoformat(query["since"].replace("Z", "+00:00"))
        except ValueError:
            raise web.HTTPBadRequest(text="since must be an ISO 8601 time, like 2026-11-01T00:00:00Z") from None
        when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
        since = when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    rows = await request.app[central_store_key].call(lambda s: s.submissions(
        status=query.get("status"), service=query.get("service"), village=query.get("village"), since=since))
    return web.json_response({"submissions": [_public(r) for r in rows]})


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
