"""The one seam for personal data at rest: seal, open, and keyed digests.

Personal fields (NIK, names, birth dates, phone numbers, free text, and the
USSD history that holds them) are stored sealed with AES-256-GCM and found by
an HMAC-SHA256 digest, never in clear. The 64-byte key file lives in the
data directory, is created on first start with mode 0600, and must travel
with the database: without it, sealed fields cannot be read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import KeyFileError

KEY_BYTES = 64
_VERSION = "s1:"


class Sealer:
    """Seals strings with AES-GCM and digests them with HMAC, under one key file."""

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"a sealing key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key[:32])
        self._mac_key = key[32:]

    @classmethod
    def from_key_file(cls, path: str | Path) -> "Sealer":
        """Read the key at `path`, creating it (mode 0600) when there is none yet."""
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_bytes(KEY_BYTES))
                    handle.flush()
                    os.fsync(handle.fileno())
        try:
            return cls(path.read_bytes())
        except OSError as error:
            raise KeyFileError(f"cannot read key file {path}: {error.strerror}") from None

    def seal(self, text: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, text.encode("utf-8"), None)
        return _VERSION + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str) -> str:
        if not sealed.startswith(_VERSION):
            raise KeyFileError("not a sealed value")
        raw = base64.b64decode(sealed[len(_VERSION):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], None).decode("utf-8")
        except InvalidTag:
            raise KeyFileError("sealed with another key: is this the data directory's own key file?") from None

    def digest(self, text: str) -> str:
        """A keyed digest: equal inputs give equal digests, and nobody without the key can test guesses."""
        return hmac.new(self._mac_key, text.encode("utf-8"), hashlib.sha256).hexdigest()
