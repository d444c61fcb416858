"""The one seam for personal data at rest: seal, open, and keyed digests.

Personal fields (NIK, names, birth dates, phone numbers, free text, and the
USSD history that holds them) are stored sealed with AES-256-GCM and found by
an HMAC-SHA256 digest, never in clear. The key file lives in the data
directory, is created on first start with mode 0600, and must travel with
the database: without it, sealed fields cannot be read.

The key file holds two kinds of key. The digest key is never rotated: a
digest is looked up by value, and a submission whose personal fields were
purged no longer has the values to compute it again. The sealing keys are
numbered by generation and every sealed value names its own (`s2:...`), so
values sealed under an old key and a new one can sit side by side while
`sync.rotate` re-seals them; the first sealing key in the file seals, the
others only open.

A new key file is 64 raw bytes: sealing key generation 1, then the digest
key. Once rotated it is text:

    kentongan-key 2
    digest <base64>
    seal 2 <base64>     (seals new values)
    seal 1 <base64>     (only while a rotation is under way)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import KeyFileError

KEY_BYTES = 64
PART_BYTES = 32
_HEADER = "kentongan-key 2"


@dataclass(frozen=True)
class Keys:
    """What a key file holds: the digest key, and sealing keys by generation, the one that seals first."""

    digest: bytes
    sealing: tuple[tuple[int, bytes], ...]

    @classmethod
    def parse(cls, raw: bytes) -> "Keys":
        if not raw.startswith(_HEADER.encode() + b"\n"):
            if len(raw) != KEY_BYTES:
                raise KeyFileError(f"a sealing key is {KEY_BYTES} bytes, not {len(raw)}")
            return cls(raw[PART_BYTES:], ((1, raw[:PART_BYTES]),))
        digest, sealing = None, []
        try:
            for line in raw.decode("ascii").splitlines()[1:]:
                words = line.split()
                if words[0] == "digest" and len(words) == 2:
                    digest = base64.b64decode(words[1], validate=True)
                elif words[0] == "seal" and len(words) == 3:
                    sealing.append((int(words[1]), base64.b64decode(words[2], validate=True)))
                else:
                    raise ValueError(line)
        except (ValueError, IndexError):
            raise KeyFileError("the key file is damaged: a line is not `digest KEY` or `seal N KEY`") from None
        keys = [digest] + [key for _, key in sealing]
        if not sealing or any(key is None or len(key) != PART_BYTES for key in keys):
            raise KeyFileError(f"the key file is damaged: it needs a digest key and a sealing key "
                               f"of {PART_BYTES} bytes each")
        return cls(digest, tuple(sealing))

    def dump(self) -> bytes:
        lines = [_HEADER, "digest " + base64.b64encode(self.digest).decode()]
        lines += [f"seal {generation} {base64.b64encode(key).decode()}" for generation, key in self.sealing]
        return ("\n".join(lines) + "\n").encode("ascii")

    @property
    def generation(self) -> int:
        """The generation new values are sealed under."""
        return self.sealing[0][0]

    @property
    def old(self) -> tuple[int, ...]:
        """Generations that only open: a rotation is under way while there are any."""
        return tuple(generation for generation, _ in self.sealing[1:])

    def rotated(self) -> "Keys":
        """A new sealing key seals from now on; the ones before stay to open what they sealed."""
        newest = max(generation for generation, _ in self.sealing) + 1
        return Keys(self.digest, ((newest, secrets.token_bytes(PART_BYTES)),) + self.sealing)

    def current_only(self) -> "Keys":
        """Without the old sealing keys: what they sealed can no longer be opened."""
        return Keys(self.digest, self.sealing[:1])


def read_keys(path: str | Path) -> Keys:
    try:
        return Keys.parse(Path(path).read_bytes())
    except OSError as error:
        raise KeyFileError(f"cannot read key file {path}: {error.strerror}") from None


def write_keys(path: str | Path, keys: Keys) -> None:
    """Replace the key file atomically: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(keys.dump())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def prefix(generation: int) -> str:
    """How a value sealed under sealing key `generation` begins."""
    return f"s{generation}:"


class Sealer:
    """Seals strings with AES-GCM and digests them with HMAC, under one key file."""

    def __init__(self, key: bytes | Keys, key_file: Path | None = None):
        keys = key if isinstance(key, Keys) else Keys.parse(key)
        self.keys = keys
        self.key_file = key_file
        """Where the keys were read from, for `sync.rotate`; None for keys given in memory."""
        self._aeads = {generation: AESGCM(sealing) for generation, sealing in keys.sealing}
        self._prefix = prefix(keys.generation)
        self._seal_with = self._aeads[keys.generation]
        self._mac_key = keys.digest

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
        return cls(read_keys(path), path)

    def seal(self, text: str) -> str:
        nonce = _nonces.take()
        sealed = self._seal_with.encrypt(nonce, text.encode("utf-8"), None)
        return self._prefix + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str) -> str:
        head, colon, body = sealed.partition(":")
        if not colon or head[:1] != "s" or not head[1:].isdigit():
            raise KeyFileError("not a sealed value")
        aead = self._aeads.get(int(head[1:]))
        if aead is None:
            raise KeyFileError(f"sealed with key {head[1:]}, which the key file does not hold "
                               f"(it holds {', '.join(str(g) for g, _ in self.keys.sealing)})")
        try:
            raw = base64.b64decode(body, validate=True)
            return aead.decrypt(raw[:12], raw[12:], None).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise KeyFileError("sealed with another key: is this the data directory's own key file?") from None

    def digest(self, text: str) -> str:
        """A keyed digest: equal inputs give equal digests, and nobody without the key can test guesses."""
        return hmac.new(self._mac_key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def mask_phone(phone: str) -> str:
    """`+6281234567890` -> `+62812****890`: enough to tell callers apart, not to call them.

    What logs show of a number, and what a role that may not see personal fields sees of one.
    """
    if len(phone) < 9:
        return "****"
    return f"{phone[:6]}****{phone[-3:]}"


class _Nonces:
    """Random 96-bit AES-GCM nonces, drawn from the operating system's CSPRNG 512 at a time: a USSD hop seals
    three values, and one `getrandom` call each was a measurable part of it. Each nonce is used once; a
    forked child draws its own (a copied pool would repeat the parent's nonces under the same key): the fork
    hook below empties the child's pool, so no `getpid` call is needed per nonce."""

    SIZE = 12
    POOL = 512

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the store's thread and the event loop (Redis sessions) both seal
        self._pool = b""
        self._at = 0

    def take(self) -> bytes:
        with self._lock:
            at = self._at
            if at + self.SIZE > len(self._pool):
                self._pool, at = os.urandom(self.SIZE * self.POOL), 0
            self._at = at + self.SIZE
            return self._pool[at:at + self.SIZE]


_nonces = _Nonces()
os.register_at_fork(after_in_child=lambda: _nonces.__init__())  # a fresh pool, and a lock nobody holds
