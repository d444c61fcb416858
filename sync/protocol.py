"""What a gateway and the central backend agree on: paths, statuses, the batch codec, signing, refusals.

The sync client (`sync/client.py`) and the central backend (`sync/central/`)
both import this module and never each other.

Signing. A request carries `X-Kentongan-Gateway`, `-Timestamp` (Unix
seconds), `-Nonce` (random, used once) and `-Signature`: HMAC-SHA256 with the
gateway's secret over method, path (with query), timestamp, nonce and the
SHA-256 of the body. The answer is signed too, over its status, the request's
nonce and its body, so a gateway only believes an answer made by the central
backend for this very request: a captive portal's `200` page, or an old
answer replayed, never marks anything synced.

Updates. `GET /sync/v1/updates?since=<cursor>` answers `{"updates": [{"seq",
"id", "ref", "status", "note", "at", "notice", "agency", "due_at",
"overdue"}], "cursor", "prefix"}`; `notice` is None, `SAME_ANSWER` or
`QUIET`; the last three keys are optional (older backends leave them out).

Feedback. A batch may carry, next to its `items`, `"feedback": [{"id" (a
ULID), "submission_id", "ref", "fixed" (true | false), "rating" (1-5 or
null), "words" (the villager's text, at most 160 characters), "at" (when
they answered)}]`: villagers' answers to "is it fixed?". The answer then
carries `"feedback_results": [{"id", "result"}]`, each result one of
`FEEDBACK_RESULTS`; a gateway marks an answer synced on any result. A batch
without the key is as valid as ever. Both answers (updates and a batch's
`{"results", "prefix"}`) name the reference prefix the central backend
knows this gateway by, so a gateway can tell its operator when its own
setting differs.

Refusals. When the central backend refuses a gateway it answers 401 (400
for a batch it cannot read, 403 for a batch from a gateway that has no
reference prefix registered) with a short text body and the header
`X-Kentongan-Refusal: <code>`, one of `REFUSALS`. Every code but `replayed`
is permanent: a person must fix the secret, the registration, the clock or
the software. A 4xx without that header comes from something else on the
way (a proxy) and says nothing about this gateway.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import zlib
from types import MappingProxyType
from typing import Mapping

from .errors import ClockSkew, SignatureError

BATCH_PATH = "/sync/v1/batches"
UPDATES_PATH = "/sync/v1/updates"
BATCH_TYPE = "application/vnd.kentongan.batch+json+gzip"

STATUSES = ("received", "review", "in_progress", "resolved", "rejected")
"""A submission's status, in the order it usually moves; the central backend's staff set it.

`review` is set by the central backend itself: a submission holding a unique
answer (a voter's NIK) that another submission already holds waits there
until staff decide.
"""

FEEDBACK = "feedback"
FEEDBACK_ACKS = "feedback_acks"
"""In the central backend's answer file: the ids of the gateway's answers it has recorded (any result), which
the gateway sends no more (a batch file has no per-request answer to carry `feedback_results`)."""
FEEDBACK_RESULTS = ("accepted", "duplicate", "late", "unknown", "rejected")
"""What the central backend made of a villager's answer: counted; a second answer about one submission (or
the same answer again); answered more than `central.rating_days` after the resolution, kept but not counted;
about no submission of this gateway; malformed."""

SILENT_STATUSES = frozenset({"review"})
"""Statuses whose change sends no SMS: the villager was told at submission that the outcome comes by SMS."""

SAME_ANSWER = "same-answer"
"""An update's `notice` when staff decided on another submission holding this one's unique answer.

The update carries the submission's own status and note, unchanged; the
gateway tells its phone, in words from its own catalogs, that another
registration used the same answer and was decided.
"""

QUIET = "quiet"
"""An update's `notice` when its phone gets no SMS: the villager's own "not fixed" reopened the submission
(they were thanked already), or only its agency or deadline changed (a reassignment, an escalation).

Updates also carry, optionally, the submission's `agency`, `due_at` (a stamp or None) and `overdue` (whether
that is past while the status is not final), so that a status check can say who holds it and whether it is late.
"""

HOLD = "hold"
"""An optional field of a batch item: why its gateway held it for staff review; absent when it did not.

A held submission was stored and its reference shown to the villager, but it
got no confirmation SMS; the central backend stores it as `review` with a
reason for staff (never in a note, the update feed or Open311).
"""
HOLD_LIMIT = "limit"
"""`HOLD`: one phone made more submissions of this service in 24 hours than the gateway's daily limit."""

HEADER = "X-Kentongan-"
GATEWAY = HEADER + "Gateway"
TIMESTAMP = HEADER + "Timestamp"
NONCE = HEADER + "Nonce"
SIGNATURE = HEADER + "Signature"
REFUSAL = HEADER + "Refusal"
MAX_SKEW_SECONDS = 300

REFUSALS: Mapping[str, str] = MappingProxyType({
    "unknown-gateway": "central does not know this gateway id",
    "wrong-secret": "central refuses this gateway's secret, or does not know its id",
    "clock-skew": "this gateway's clock is more than 5 minutes off the central backend's",
    "replayed": "central saw this request before",
    "bad-batch": "central cannot read this gateway's batches",
    "no-prefix": "central has no reference prefix for this gateway",
})
"""Refusal codes and the words an operator reads for each."""

RETRYABLE_REFUSALS = frozenset({"replayed"})
"""Refusals a fresh request heals (a new nonce); the others need a person.

The central backend answers an unknown gateway id exactly as a known one
with a wrong secret (`wrong-secret`, same text): its answers never tell
which gateway ids exist. `unknown-gateway` is what older ones answered.
"""


# -- the batch codec -------------------------------------------------------------

MAX_ITEM_BYTES = 32 * 1024
"""The most one submission takes in a batch as JSON: a few answers of at most a USSD screen each, and room."""
BATCH_OVERHEAD_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
"""No message of this protocol nests deeper than a few levels; deeper is refused before it is parsed."""


def batch_bytes(batch_size: int) -> int:
    """The most a batch of `batch_size` items takes, compressed or not: what the central backend reads of one."""
    return BATCH_OVERHEAD_BYTES + batch_size * MAX_ITEM_BYTES


def encode_batch(gateway_id: str, items: list[dict], feedback: list[dict] | None = None) -> bytes:
    """A batch as it travels: compact JSON, gzip'd; with `feedback` (villagers' answers) when there is some."""
    batch = {"gateway": gateway_id, "items": items, **({FEEDBACK: feedback} if feedback else {})}
    payload = json.dumps(batch, separators=(",", ":"), ensure_ascii=False)
    return gzip.compress(payload.encode("utf-8"), compresslevel=9, mtime=0)


def decode_batch(raw: bytes, max_bytes: int = batch_bytes(5000)) -> dict:
    """The inverse of `encode_batch`; ValueError when it is not a batch, or unpacks to more than `max_bytes`.

    It is unpacked only up to `max_bytes`, so a small bomb costs no more memory than an honest batch.
    """
    try:
        data = loads(_gunzip(raw, max_bytes))
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise ValueError(f"not a gzip'd JSON batch: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise ValueError("a batch is an object with a list of items")
    if not isinstance(data.get(FEEDBACK, []), list):
        raise ValueError("a batch's feedback is a list")
    return data


def _gunzip(raw: bytes, max_bytes: int) -> bytes:
    """One gzip member, unpacked to at most `max_bytes` (ValueError beyond)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(raw, max_bytes + 1)
    if len(out) > max_bytes:
        raise ValueError(f"it unpacks to more than {max_bytes} bytes")
    if not inflater.eof:
        raise ValueError("it is cut short")
    if inflater.unused_data:
        raise ValueError("it holds more than one gzip member")
    return out


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH):
    """JSON from outside, as `json.loads`; ValueError when it is not UTF-8 JSON, nests deeper than `max_depth`,
    or holds what cannot be stored or sent on: NaN, an infinite number, a lone surrogate.
    """
    text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    if _depth(text, max_depth) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("JSON text holds a lone surrogate") from None
    return data


def _depth(text: str, most: int) -> int:
    """How deep `text`'s brackets outside strings nest, counted up to `most` + 1 (a cheap pass per level)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).replace("{", "[").replace("}", "]")
    for level in range(most + 1):
        if "[" not in brackets:
            return level
        brackets = brackets.replace("[]", "")
    return most + 1


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is too large a number")
    return number


# -- signing -----------------------------------------------------------------------

def _mac(secret: str, *parts: str | bytes) -> str:
    # surrogatepass: a header or path aiohttp decoded from stray bytes still signs (and fails) as bytes
    joined = b"\n".join(p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p for p in parts)
    return hmac.new(secret.encode(), joined, hashlib.sha256).hexdigest()


def sign_request(gateway_id: str, secret: str, method: str, path: str, body: bytes,
                 now: float | None = None) -> dict[str, str]:
    """Headers that sign one request."""
    stamp = str(int(now if now is not None else time.time()))
    nonce = secrets.token_hex(16)
    digest = hashlib.sha256(body).hexdigest()
    return {GATEWAY: gateway_id, TIMESTAMP: stamp, NONCE: nonce,
            SIGNATURE: _mac(secret, method.upper(), path, stamp, nonce, digest)}


def check_request(headers: Mapping[str, str], secret: str, method: str, path: str, body: bytes,
                  now: float | None = None) -> str:
    """Verify a request's signature and freshness; return its nonce (the caller checks it is new).

    Raises `ClockSkew` when the timestamp is more than `MAX_SKEW_SECONDS`
    off, `SignatureError` for anything else wrong.
    """
    try:
        stamp, nonce, signature = headers[TIMESTAMP], headers[NONCE], headers[SIGNATURE]
    except KeyError:
        raise SignatureError("unsigned request") from None
    try:
        skew = abs((now if now is not None else time.time()) - int(stamp))
    except ValueError:
        raise SignatureError("bad timestamp") from None
    if skew > MAX_SKEW_SECONDS:
        raise ClockSkew("stale request: timestamp more than 5 minutes off")
    if not 16 <= len(nonce) <= 64 or not nonce.isascii() or not nonce.isprintable():
        raise SignatureError("bad nonce")
    expected = _mac(secret, method.upper(), path, stamp, nonce, hashlib.sha256(body).hexdigest())
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise SignatureError("wrong signature")
    return nonce


def sign_answer(secret: str, status: int, nonce: str, body: bytes) -> dict[str, str]:
    """Headers that sign an answer to the request that carried `nonce`."""
    return {SIGNATURE: _mac(secret, str(status), nonce, hashlib.sha256(body).hexdigest())}


def check_answer(headers: Mapping[str, str], secret: str, status: int, nonce: str, body: bytes) -> None:
    """Raise `SignatureError` unless the answer was signed by the central backend for this request."""
    signature = headers.get(SIGNATURE, "")
    expected = _mac(secret, str(status), nonce, hashlib.sha256(body).hexdigest())
    if not signature or not hmac.compare_digest(expected, signature):
        raise SignatureError("the answer is not signed by the central backend")
