"""The background duties (the SMS sender, the sync timer, housekeeping), run by one process at a time.

On the embedded SQLite store one process serves, and it leads. On a
PostgreSQL store that several workers and machines share, every process
would send every queued SMS, so SMS would go twice: a process runs the
duties only while it holds a PostgreSQL session advisory lock, taken with
`pg_try_advisory_lock` on a connection of its own. The others ask again
every LEAD_RETRY_SECONDS. When the leader dies its connection closes, the
server frees the lock, and the next process to ask takes over (its sender
queues again what the dead one left `sending`, once that has been so for
longer than a send can take: a leader that only stepped down may still be
waiting for the provider's answer, and records it itself; `gateway.sender`).

The lock's key is derived from `gateway.id` and from the database and
schema the server says the connection is in (not from the DSN, which names
the same database differently on different machines): two gateways sharing
one PostgreSQL server, or the tests' schemas, never wait for each other.

A hop answered by a follower queues its SMS in the shared store; the leader
finds it by polling the outbox every SHARED_POLL_SECONDS while it leads (a
cheap indexed look-up), since the follower's wake-up reaches only its own
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import AsyncIterator, Callable, Coroutine

from aiohttp import web

log = logging.getLogger(__name__)

LEAD_RETRY_SECONDS = 3.0
"""How often a follower asks for the lock, and how often the leader checks its connection still holds it."""
SHARED_POLL_SECONDS = 1.0
"""How often the leading sender looks for SMS that other processes queued in the shared store."""
CONNECT_SECONDS = 10.0
KEEPALIVE = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
"""A leader whose machine vanished (no FIN, no RST) loses its lock within about 25 s, not the kernel's 2 hours."""

Work = Callable[[], Coroutine]


def lock_key(gateway_id: str, database: str, schema: str) -> int:
    """The advisory lock's key: a signed 64-bit number, the same on every machine serving this gateway."""
    digest = hashlib.sha256(f"kentongan duties\0{gateway_id}\0{database}\0{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Duties:
    """Who runs the background duties: this process while it leads (`leading`), else nobody here.

    `add` a duty (a function that makes its coroutine, so that it can start
    again after leadership comes back); it runs while this process leads.
    Without a `dsn` (the SQLite store) this process always leads.
    """

    def __init__(self, gateway_id: str, dsn: str = "") -> None:
        self.gateway_id, self.dsn = gateway_id, dsn
        self.leading = not dsn
        self._works: dict[str, Work] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._conn = None
        self._key: int | None = None
        self._watch: asyncio.Task | None = None
        self._complained = False

    async def start(self) -> None:
        """Ask for the lock once now (a lone process leads before it serves), then keep asking or checking."""
        if self.dsn:
            await self._ask()
            self._watch = asyncio.create_task(self._keep())

    def add(self, name: str, work: Work) -> None:
        self._works[name] = work
        if self.leading:
            self._run(name)

    async def remove(self, name: str) -> None:
        self._works.pop(name, None)
        await self._cancel([self._tasks.pop(name)] if name in self._tasks else [])

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._cancel(list(self._tasks.values()))
        self._tasks.clear()
        await self._close()  # frees the lock at once: a follower elsewhere takes over at its next ask

    def _run(self, name: str) -> None:
        if name not in self._tasks or self._tasks[name].done():
            self._tasks[name] = asyncio.create_task(self._works[name](), name=f"duty: {name}")

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(LEAD_RETRY_SECONDS)
            if self.leading:
                await self._check()
            else:
                await self._ask()

    async def _ask(self) -> None:
        import asyncpg

        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.dsn, timeout=CONNECT_SECONDS, server_settings=KEEPALIVE)
                database, schema = await self._conn.fetchrow("SELECT current_database(), current_schema()")
                self._key = lock_key(self.gateway_id, database, schema or "")
            won = await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            if not self._complained:  # once per outage, not every few seconds
                log.warning("cannot ask PostgreSQL who runs the background duties (%s); asking again every %.0f s",
                            type(error).__name__, LEAD_RETRY_SECONDS)
                self._complained = True
            await self._close()
            return
        self._complained = False
        if won:
            self.leading = True
            self._conn.add_termination_listener(lambda _conn: self._step_down("its connection closed"))
            log.info("this process runs the background duties (SMS sender, sync, housekeeping)")
            for name in self._works:
                self._run(name)

    async def _check(self) -> None:
        """The leader's connection still answers: else the server has freed the lock, and someone else leads."""
        try:
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), LEAD_RETRY_SECONDS)
        except Exception as error:  # whatever broke the connection, the lock went with it
            self._step_down(type(error).__name__)
            await self._close()

    def _step_down(self, why: str) -> None:
        if not self.leading:
            return
        self.leading = False
        log.warning("lost the lock of the background duties (%s): stopped them here until it is won again", why)
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def _cancel(self, tasks: list[asyncio.Task]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            self.leading = False  # closing on purpose is no loss to report
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), CONNECT_SECONDS)


duties_key = web.AppKey("duties", Duties)


async def duties_context(app: web.Application) -> AsyncIterator[None]:
    """The app's `Duties`, asked for the lock before the app serves; the lock freed on the way out."""
    from .resources import config_key

    config = app[config_key]
    duties = app[duties_key] = Duties(config["gateway.id"], config["gateway.database_url"])
    await duties.start()
    yield
    await duties.stop()


@contextlib.asynccontextmanager
async def duty(app: web.Application, name: str, work: Work) -> AsyncIterator[None]:
    """Run `work()` for the block while this process leads (see `Duties`); stopped on the way out."""
    duties = app[duties_key]
    duties.add(name, work)
    try:
        yield
    finally:
        await duties.remove(name)


def shared_store(app: web.Application) -> bool:
    """Whether other processes may write to this app's store (a PostgreSQL one), so the sender must poll."""
    from .resources import config_key

    return bool(app[config_key]["gateway.database_url"])
