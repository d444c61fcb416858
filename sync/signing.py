"""Signed sync requests and answers between a gateway and the central backend.

A request carries `X-Kentongan-Gateway`, `-Timestamp` (Unix seconds), `-Nonce`
(random, used once) and `-Signature`: HMAC-SHA256 with the gateway's secret
over method, path (with query), timestamp, nonce and the SHA-256 of the body.
The central backend refuses a missing or wrong signature, a timestamp more
than five minutes off, and a nonce it has seen (a replay), all with 401.

The answer is signed too, over its status, the request's nonce and its body,
so the gateway only believes an answer made by the central backend for this
very request: a captive portal's `200` page, or an old answer replayed,
never marks anything synced.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "X-Kentongan-"
GATEWAY = HEADER + "Gateway"
TIMESTAMP = HEADER + "Timestamp"
NONCE = HEADER + "Nonce"
SIGNATURE = HEADER + "Signature"
MAX_SKEW_SECONDS = 300


class SignatureError(Exception):
    """A request or answer whose signature cannot be trusted; the message says why."""


def _mac(secret: str, *parts: str | bytes) -> str:
    joined = b"\n".join(p.encode() if isinstance(p, str) else p for p in parts)
    return hmac.new(secret.encode(), joined, hashlib.sha256).hexdigest()


def sign_request(gateway_id: str, secret: str, method: str, path: str, body: bytes,
                 now: float | None = None) -> dict[str, str]:
    """Headers that sign one request."""
    stamp = str(int(now if now is not None else time.time()))
    nonce = secrets.token_hex(16)
    digest = hashlib.sha256(body).hexdigest()
    return {GATEWAY: gateway_id, TIMESTAMP: stamp, NONCE: nonce,
            SIGNATURE: _mac(secret, method.upper(), path, stamp, nonce, digest)}


def check_request(headers, secret: str, method: str, path: str, body: bytes, now: float | None = None) -> str:
    """Verify a request's signature and freshness; return its nonce (the caller checks it is new)."""
    try:
        stamp, nonce, signature = headers[TIMESTAMP], headers[NONCE], headers[SIGNATURE]
    except KeyError:
        raise SignatureError("unsigned request") from None
    try:
        skew = abs((now if now is not None else time.time()) - int(stamp))
    except ValueError:
        raise SignatureError("bad timestamp") from None
    if skew > MAX_SKEW_SECONDS:
        raise SignatureError("stale request: timestamp more than 5 minutes off")
    if not 16 <= len(nonce) <= 64:
        raise SignatureError("bad nonce")
    expected = _mac(secret, method.upper(), path, stamp, nonce, hashlib.sha256(body).hexdigest())
    if not hmac.compare_digest(expected, signature):
        raise SignatureError("wrong signature")
    return nonce


def sign_answer(secret: str, status: int, nonce: str, body: bytes) -> dict[str, str]:
    return {SIGNATURE: _mac(secret, str(status), nonce, hashlib.sha256(body).hexdigest())}


def check_answer(headers, secret: str, status: int, nonce: str, body: bytes) -> None:
    signature = headers.get(SIGNATURE, "")
    expected = _mac(secret, str(status), nonce, hashlib.sha256(body).hexdigest())
    if not signature or not hmac.compare_digest(expected, signature):
        raise SignatureError("the answer is not signed by the central backend")
