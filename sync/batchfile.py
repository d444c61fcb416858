"""Batch files: sync carried on a USB stick where there is no link.

A file is gzip'd JSON:

    {"format": "kentongan-batch", "version": 1, "kind": "submissions" | "updates",
     "gateway": "<id>", "created_at": "...", "nonce": "<hex>", "payload": "<base64>"}

The payload is sealed with AES-256-GCM under a key derived (HKDF) from the
gateway's sync secret, with the header fields as associated data: a file
on a lost USB stick shows no NIK, name or phone number, and a file whose
header or payload was changed, or that was sealed with another secret,
fails to open. A file that was changed, cut short, made for another gateway
or is no batch file at all is refused with a `BatchFileError` saying which,
before anything is changed.

    submissions   payload {"items": [...]}: what `kentongan export` wrote
    updates       payload {"acks": [ids], "updates": [...]}: the central
                  backend's answer, for `kentongan import`
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import json
import os
import secrets
import tempfile
import zlib
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import BatchFileError

FORMAT = "kentongan-batch"
VERSION = 1
KINDS = ("submissions", "updates")
HEADER = ("format", "version", "kind", "gateway", "created_at", "nonce")


def _canonical(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _aead(secret: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"kentongan batch file v1").derive(secret.encode())
    return AESGCM(key)


def _header(envelope: dict) -> bytes:
    return _canonical({name: envelope.get(name) for name in HEADER})


def write(path: str | Path, kind: str, gateway_id: str, secret: str, payload: dict) -> int:
    """Write a sealed, signed batch file (atomically: a cut-off write leaves no file); return its size."""
    if kind not in KINDS:
        raise ValueError(kind)
    envelope = {"format": FORMAT, "version": VERSION, "kind": kind, "gateway": gateway_id,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "nonce": secrets.token_hex(12)}
    sealed = _aead(secret).encrypt(bytes.fromhex(envelope["nonce"]), _canonical(payload), _header(envelope))
    envelope["payload"] = base64.b64encode(sealed).decode("ascii")
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
    refused = BatchFileError(f"{path} was changed after it was signed, or signed with another secret")
    try:
        nonce = bytes.fromhex(str(envelope.get("nonce", "")))
        sealed = base64.b64decode(str(envelope.get("payload", "")), validate=True)
        payload = json.loads(_aead(secret).decrypt(nonce, sealed, _header(envelope)))
    except (ValueError, binascii.Error, InvalidTag):
        raise refused from None
    if not isinstance(payload, dict):
        raise BatchFileError(f"{path} has no payload")
    return payload
