"""The gateway's side of sync: push submissions, pull status updates, over signed HTTP.

Only a signed JSON answer made for this very request counts. Anything else
(refused connections, timeouts, 5xx, a captive portal's 200 page, a proxy's
error, an answer signed for another request) raises `SyncError` and marks
nothing, so the same items go again next round; the central backend's
idempotence on the submission id makes that safe.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass

import aiohttp

from .signing import SignatureError, check_answer, sign_request

BATCH_PATH = "/sync/v1/batches"
UPDATES_PATH = "/sync/v1/updates"
BATCH_TYPE = "application/vnd.kentongan.batch+json+gzip"


class SyncError(Exception):
    """A round that could not complete; nothing was marked."""


@dataclass(frozen=True)
class Pushed:
    results: list[dict]
    wire_bytes: int


def encode_batch(gateway_id: str, items: list[dict]) -> bytes:
    """A batch as it travels: compact JSON, gzip'd."""
    payload = json.dumps({"gateway": gateway_id, "items": items}, separators=(",", ":"), ensure_ascii=False)
    return gzip.compress(payload.encode("utf-8"), compresslevel=9, mtime=0)


def decode_batch(raw: bytes) -> dict:
    """The inverse of `encode_batch`; ValueError when it is not a batch."""
    try:
        data = json.loads(gzip.decompress(raw))
    except (OSError, EOFError, ValueError) as error:
        raise ValueError(f"not a gzip'd JSON batch: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise ValueError("a batch is an object with a list of items")
    return data


class SyncClient:
    def __init__(self, base_url: str, gateway_id: str, secret: str, http: aiohttp.ClientSession,
                 timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.gateway_id = gateway_id
        self.secret = secret
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, method: str, path: str, body: bytes = b"", content_type: str | None = None) -> dict:
        headers = sign_request(self.gateway_id, self.secret, method, path, body)
        nonce = headers["X-Kentongan-Nonce"]
        if content_type:
            headers["Content-Type"] = content_type
        try:
            async with self.http.request(method, self.base_url + path, data=body or None, headers=headers,
                                         timeout=self.timeout) as response:
                answer = await response.read()
                status = response.status
                kind = response.headers.get("Content-Type", "")
                answer_headers = response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise SyncError(f"central backend unreachable: {type(error).__name__} {error}".strip()) from None
        if status != 200:
            raise SyncError(f"central backend answered {status}: {answer[:120].decode('utf-8', 'replace')}")
        if not kind.startswith("application/json"):
            raise SyncError(f"answer is not JSON but {kind or 'untyped'} (a captive portal or proxy?)")
        try:
            check_answer(answer_headers, self.secret, status, nonce, answer)
        except SignatureError as error:
            raise SyncError(str(error)) from None
        try:
            return json.loads(answer)
        except ValueError:
            raise SyncError("signed answer is not valid JSON") from None

    async def push(self, items: list[dict]) -> Pushed:
        """Send one batch; return the central backend's answer per item."""
        body = encode_batch(self.gateway_id, items)
        answer = await self._call("POST", BATCH_PATH, body, BATCH_TYPE)
        results = answer.get("results")
        if not isinstance(results, list):
            raise SyncError("answer has no results")
        return Pushed(results, len(body))

    async def pull(self, since: int) -> tuple[list[dict], int]:
        """Status updates after cursor `since`, and the new cursor."""
        answer = await self._call("GET", f"{UPDATES_PATH}?since={since}")
        updates, cursor = answer.get("updates"), answer.get("cursor")
        if not isinstance(updates, list) or not isinstance(cursor, int):
            raise SyncError("answer has no updates or cursor")
        return updates, cursor
