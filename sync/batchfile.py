"""Batch files: sync carried on a USB stick where there is no link.

A file is gzip'd JSON:

    {"format": "kentongan-batch", "version": 1, "kind": "submissions" | "updates",
     "gateway": "<id>", "created_at": "...", "payload": {...}, "signature": "<hex>"}

signed with HMAC-SHA256 (the gateway's sync secret) over the canonical JSON
of everything but the signature. A file that was changed, cut short, made
for another gateway or is no batch file at all is refused with a
`BatchFileError` saying which, before anything is changed.

    submissions   payload {"items": [...]}: what `kentongan export` wrote
    updates       payload {"acks": [ids], "updates": [...]}: the central
                  backend's answer, for `kentongan import`
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import json
import os
import tempfile
import zlib
from pathlib import Path

FORMAT = "kentongan-batch"
VERSION = 1
KINDS = ("submissions", "updates")


class BatchFileError(Exception):
    """A batch file that must not be used; the message says why."""


def _canonical(envelope: dict) -> bytes:
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _signature(secret: str, envelope: dict) -> str:
    return hmac.new(secret.encode(), _canonical(envelope), hashlib.sha256).hexdigest()


def write(path: str | Path, kind: str, gateway_id: str, secret: str, payload: dict) -> int:
    """Write a signed batch file (atomically: a cut-off write leaves no file); return its size."""
    if kind not in KINDS:
        raise ValueError(kind)
    envelope = {"format": FORMAT, "version": VERSION, "kind": kind, "gateway": gateway_id,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "payload": payload}
    envelope["signature"] = _signature(secret, envelope)
    data = gzip.compress(_canonical(envelope), compresslevel=9, mtime=0)
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=".kentongan-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return len(data)


def peek(path: str | Path) -> dict:
    """The envelope of a batch file, unverified: to learn which gateway's secret checks it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise BatchFileError(f"cannot read {path}: {error.strerror}") from None
    try:
        envelope = json.loads(gzip.decompress(raw))
    except (EOFError, OSError, zlib.error):
        raise BatchFileError(f"{path} is truncated or not a Kentongan batch file") from None
    except ValueError:
        raise BatchFileError(f"{path} is not a Kentongan batch file") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise BatchFileError(f"{path} is not a Kentongan batch file")
    if envelope.get("version") != VERSION:
        raise BatchFileError(f"{path} is batch format version {envelope.get('version')}; this is {VERSION}")
    return envelope


def read(path: str | Path, kind: str, gateway_id: str, secret: str) -> dict:
    """The payload of a verified batch file of `kind` for `gateway_id`; else `BatchFileError`."""
    envelope = peek(path)
    if envelope.get("kind") != kind:
        raise BatchFileError(f"{path} holds {envelope.get('kind')}, not {kind}")
    if envelope.get("gateway") != gateway_id:
        raise BatchFileError(f"{path} belongs to gateway {envelope.get('gateway')!r}, not {gateway_id!r}")
    signature = envelope.pop("signature", "")
    if not isinstance(signature, str) or not hmac.compare_digest(signature, _signature(secret, envelope)):
        raise BatchFileError(f"{path} was changed after it was signed, or signed with another secret")
    if not isinstance(envelope.get("payload"), dict):
        raise BatchFileError(f"{path} has no payload")
    return envelope["payload"]
