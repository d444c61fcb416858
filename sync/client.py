"""The gateway's side of sync: push submissions (and villagers' answers to "is it fixed?"), pull status
updates, over signed HTTP.

Only a signed JSON answer made for this very request counts. What may heal by
itself (refused connections, timeouts, 5xx, a captive portal's 200 page, a
proxy's error, an answer signed for another request, a replayed nonce)
raises `LinkError` and marks nothing, so the same items go again next round;
the central backend's idempotence on the submission id makes that safe.
When the central backend itself refuses this gateway (see
`protocol.REFUSALS`: unknown id, wrong secret, clock off, unreadable batch)
the client raises `Refused`, which retrying cannot heal.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import aiohttp

from .errors import LinkError, Refused, SignatureError, SyncError
from .protocol import (BATCH_PATH, BATCH_TYPE, NONCE, REFUSAL, REFUSALS, RETRYABLE_REFUSALS, UPDATES_PATH,
                       check_answer, encode_batch, sign_request)


@dataclass(frozen=True)
class Pushed:
    """The central backend's answer per item and per villager's answer (none from one that takes no
    answers), the bytes sent, and the reference prefix it knows this gateway by."""

    results: list[dict]
    wire_bytes: int
    prefix: str | None
    feedback_results: list[dict]


@dataclass(frozen=True)
class Pulled:
    """Status updates after the cursor asked for, the new cursor, and the prefix the central backend knows."""

    updates: list[dict]
    cursor: int
    prefix: str | None


def _prefix(answer: dict) -> str | None:
    prefix = answer.get("prefix")
    return prefix if isinstance(prefix, str) else None


def _refusal(status: int, code: str | None, detail: str) -> SyncError | None:
    """What a 4xx answer carrying `X-Kentongan-Refusal: code` means, or None when it carries none."""
    if not code or not 400 <= status < 500:
        return None
    if code in RETRYABLE_REFUSALS:
        return LinkError(f"central backend answered {status}: {detail}")
    words = REFUSALS.get(code, f"central refuses this gateway ({code})")
    return Refused(code, f"{words} ({detail})" if detail else words)


class SyncClient:
    """Signed calls from one gateway to one central backend; each call takes at most `timeout` seconds."""

    def __init__(self, base_url: str, gateway_id: str, secret: str, http: aiohttp.ClientSession,
                 timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.gateway_id = gateway_id
        self.secret = secret
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, method: str, path: str, body: bytes = b"", content_type: str | None = None) -> dict:
        headers = sign_request(self.gateway_id, self.secret, method, path, body)
        nonce = headers[NONCE]
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
            raise LinkError(f"central backend unreachable: {type(error).__name__} {error}".strip()) from None
        detail = answer[:120].decode("utf-8", "replace").strip()
        refusal = _refusal(status, answer_headers.get(REFUSAL), detail)
        if refusal is not None:
            raise refusal
        if status != 200:
            raise LinkError(f"central backend answered {status}: {detail}")
        if not kind.startswith("application/json"):
            raise LinkError(f"answer is not JSON but {kind or 'untyped'} (a captive portal or proxy?)")
        try:
            check_answer(answer_headers, self.secret, status, nonce, answer)
        except SignatureError as error:
            raise LinkError(str(error)) from None
        try:
            return json.loads(answer)
        except ValueError:
            raise LinkError("signed answer is not valid JSON") from None

    async def push(self, items: list[dict], feedback: list[dict] = ()) -> Pushed:
        """Send one batch of submissions and villagers' answers (`feedback`); return the central backend's
        answer per each."""
        body = encode_batch(self.gateway_id, items, list(feedback))
        answer = await self._call("POST", BATCH_PATH, body, BATCH_TYPE)
        results, answered = answer.get("results"), answer.get("feedback_results", [])
        if not isinstance(results, list):
            raise LinkError("answer has no results")
        return Pushed(results, len(body), _prefix(answer), answered if isinstance(answered, list) else [])

    async def pull(self, since: int) -> Pulled:
        """Status updates after cursor `since`, and the new cursor."""
        answer = await self._call("GET", f"{UPDATES_PATH}?since={since}")
        updates, cursor = answer.get("updates"), answer.get("cursor")
        if not isinstance(updates, list) or not isinstance(cursor, int):
            raise LinkError("answer has no updates or cursor")
        return Pulled(updates, cursor, _prefix(answer))
