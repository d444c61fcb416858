"""USSD sessions in Redis (`sessions.backend: redis`), for gateways that share them or a store that is far.

The same records as the store's `ussd_sessions` (`Store.session`,
`save_session`, `resumable_session`, `forget_resumable`), sealed the same
way with the store's `Sealer`; the phone is kept only as the store's keyed
digest (`Database.phone_digest`: the same key, the same input). Two kinds of
key, under `sessions.redis_prefix`:

    <prefix>ussd:<session id>     a hash: phone (digest), done, service_code,
                                  at (the store's clock), length (of the history,
                                  which its sealed form shows anyway), sealed
                                  (state, history and response: one sealed JSON,
                                  so one nonce)
    <prefix>resume:<phone digest> the caller's latest resumable session: a hash
                                  of its id, at and sealed (the session's own)

A session expires on its own `ussd.keep_sessions_hours` after it was last
written; the resume offer `ussd.resume_minutes` after, by its own TTL. The
window is also checked against `at` when read, for the store's clock (which
tests move) is the one a turn runs by, not Redis's.

Every write of a hop is one script run by Redis, so no reader sees the
session saved and the resume offer not yet moved (or the other way round).
Reads and writes that fail (Redis down, slow, refusing) raise
`SessionsUnavailable`: the caller answers politely and tries nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Callable

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from .database import stamp
from .errors import KeyFileError, SessionsUnavailable
from .seal import Sealer

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 1.0
"""How long one connect or one command may take: the network gives a whole hop 10-15 s, and a healthy Redis
answers in well under a millisecond."""
RETRIES = 2
"""Retries of a command whose connection failed (a Redis that restarted closes them all): quick ones, a few
tens of milliseconds apart, so a Redis that is down costs a hop well under its time."""

_SAVE = """
local kept = redis.call('HGET', KEYS[1], 'length')
if kept and tonumber(kept) > tonumber(ARGV[10]) then
  return 0
end
redis.call('HSET', KEYS[1], 'phone', ARGV[2], 'done', ARGV[3], 'service_code', ARGV[4], 'at', ARGV[5],
           'sealed', ARGV[6], 'length', ARGV[10])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
if ARGV[9] == '1' then
  redis.call('DEL', KEYS[2])
end
if ARGV[8] ~= '0' then
  redis.call('HSET', KEYS[2], 'id', ARGV[1], 'at', ARGV[5], 'sealed', ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[8])
elseif redis.call('HGET', KEYS[2], 'id') == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 1
"""
"""KEYS: the session, the caller's resume offer. ARGV: id, phone digest, done, service code, at, sealed,
the session's TTL (ms), the offer's TTL (ms; 0: this session is not to be offered), forget (1: no other
session of the caller is to be offered either), the length of its history. A history only grows: a write
whose history is shorter than the kept one's is a late copy of an earlier hop (read before that hop's own
write landed) and changes nothing, so the session never goes back a step. Returns 0 then, else 1."""


class RedisSessions:
    """The USSD sessions of one gateway in Redis; used from the event loop (redis-py's asyncio client)."""

    def __init__(self, client: redis.Redis, sealer: Sealer, prefix: str, *, keep: dt.timedelta,
                 resume_window: dt.timedelta, clock: Callable[[], dt.datetime]):
        self.client = client
        self.sealer = sealer
        self.prefix = prefix
        self.keep_ms = int(keep.total_seconds() * 1000)
        self.window = resume_window
        self.window_ms = int(resume_window.total_seconds() * 1000)
        self.clock = clock
        self._save = client.register_script(_SAVE)

    @classmethod
    def from_url(cls, url: str, sealer: Sealer, prefix: str, **settings) -> "RedisSessions":
        """Sessions at the Redis of `url`; nothing is connected until the first command."""
        client = redis.from_url(url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS,
                                retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), RETRIES))
        return cls(client, sealer, prefix, **settings)

    async def close(self) -> None:
        await self.client.aclose()

    def key(self, session_id: str) -> str:
        return f"{self.prefix}ussd:{session_id}"

    def resume_key(self, phone_hash: str) -> str:
        return f"{self.prefix}resume:{phone_hash}"

    def phone_digest(self, phone: str) -> str:
        """The store's digest of `phone` (`Database.phone_digest`), computed here: the store's own caches
        its last one and belongs to the store's thread."""
        return self.sealer.digest("phone:" + phone)

    async def ping(self) -> None:
        """Raise `SessionsUnavailable` unless Redis answers."""
        try:
            await self.client.ping()
        except (RedisError, OSError) as error:
            raise SessionsUnavailable(_reason(error)) from None

    async def load(self, session_id: str, phone: str, offer: bool) -> tuple[dict | None, tuple[str, dict] | None]:
        """Session `session_id` as `Store.session` gives it (or None); with `offer`, also the caller's latest
        resumable session touched within the window as `Store.resumable_session` gives it, (id, state) or
        None. One round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key(session_id))
            if offer and self.window_ms:
                pipe.hgetall(self.resume_key(self.phone_digest(phone)))
            try:
                found = await pipe.execute()
            except (RedisError, OSError) as error:
                raise SessionsUnavailable(_reason(error)) from None
        session = dropped = None
        try:
            if found[0]:
                session = self._session(found[0])
            if len(found) > 1 and found[1]:
                entry = found[1]
                since = stamp(self.clock() - self.window)
                if entry[b"id"].decode() != session_id and entry[b"at"].decode() >= since:
                    dropped = entry[b"id"].decode(), self._open(entry[b"sealed"])["state"]
        except KeyFileError as error:
            # Sealed under a key rotated out since (`kentongan rotate-key` re-seals the store, not Redis): as
            # if it had expired. A hop of it replays its history; a dropped one is not offered.
            log.warning("USSD session %s in Redis cannot be opened (%s); treated as gone", session_id, error)
        return session, dropped

    def _session(self, row: dict[bytes, bytes]) -> dict:
        sealed = self._open(row[b"sealed"])
        return {"state": sealed["state"], "history": sealed["history"], "response": sealed["response"],
                "done": row[b"done"] == b"1", "phone_hash": row[b"phone"].decode()}

    def _open(self, sealed: bytes) -> dict:
        return json.loads(self.sealer.open(sealed.decode()))

    async def save(self, session_id: str, *, phone: str, service_code: str, state: dict, history: str,
                   response: str, done: bool, resumable: bool, forget: bool = False) -> bool:
        """Record the session after a turn (`Store.save_session`): it expires `keep` after, and, while
        `resumable` and not `done`, it is the caller's one offered again for the resume window.
        `forget`: no other session of the caller is to be offered again (`Store.forget_resumable`).
        False, and nothing written, when the kept session has a longer history (see `_SAVE`)."""
        phone_hash = self.phone_digest(phone)
        sealed = self.sealer.seal(json.dumps({"state": state, "history": history, "response": response},
                                             ensure_ascii=False, separators=(",", ":")))
        offer_ms = self.window_ms if resumable and not done else 0
        try:
            written = await self._save(keys=[self.key(session_id), self.resume_key(phone_hash)],
                                       args=[session_id, phone_hash, int(done), service_code, stamp(self.clock()),
                                             sealed, self.keep_ms, offer_ms, int(forget), len(history)])
        except (RedisError, OSError) as error:
            raise SessionsUnavailable(_reason(error)) from None
        return written == 1

    async def count_open(self) -> int:
        """Sessions not ended (`Store.counts`' `ussd_sessions_open`): a walk over every key, for `status` and
        tests, never for a hop."""
        count = 0
        try:
            async for key in self.client.scan_iter(match=self.key("*"), count=1000):
                if await self.client.hget(key, "done") == b"0":
                    count += 1
        except (RedisError, OSError) as error:
            raise SessionsUnavailable(_reason(error)) from None
        return count


def _reason(error: BaseException) -> str:
    """What went wrong with Redis, in one line: never a key or a value (they name sessions and phones)."""
    return f"{type(error).__name__}: {error}".splitlines()[0][:200]
