"""A store behind a thread of its own, for asyncio code, and readers beside it."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
from typing import Any, Callable, Generic, NamedTuple, TypeVar

from .database import TransactionLost
from .errors import Deadlock

S = TypeVar("S")
T = TypeVar("T")

GROUP_LIMIT = 64
"""Grouped calls run in one transaction at most: a group waits for its one fsync, not for a long queue."""
DEADLOCK_RETRIES = 3
"""Times a grouped call given up in a deadlock runs again (each time in the next group) before it fails."""


class Grouped(NamedTuple):
    """A grouped call waiting for the store's thread, and where its outcome goes: an asyncio future of the loop
    that asked, settled there with the rest of its group by one wake-up of that loop."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    fn: Callable[..., Any]
    args: tuple
    tries: int = 0
    """Deadlocks it met so far."""


Outcome = tuple[asyncio.Future, Any, "BaseException | None"]


class StoreThread(Generic[S]):
    """Every call runs in one thread, in arrival order.

    SQLite work (and the fsync of a commit) stays off the event loop, and the
    calls of one process never interleave inside a transaction.

    Opened with `readers`, it also has that many reading threads (`read`),
    each with a read-only twin of the store (`store.reader()`, a connection of
    its own on the same WAL file): a long list runs there, so a write or a
    sync request never queues behind it. A reader sees every transaction the
    store's thread committed before the read began.

    Grouped calls (`call_grouped`: a USSD hop, an incoming SMS) that queue
    while the thread is busy share one transaction, and so one fsync.
    """

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor, store: S, readers: "Readers[S] | None" = None):
        self._pool = pool
        self.store = store
        self._readers = readers
        self._queue: collections.deque[Grouped] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    @classmethod
    async def open(cls, opener: Callable[..., S], *args: Any, readers: int = 0) -> "StoreThread[S]":
        """Open the store with `opener(*args)` in its own new thread, and `readers` reading threads beside it."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        store = await asyncio.get_running_loop().run_in_executor(pool, opener, *args)
        return cls(pool, store, Readers(store.reader, readers) if readers else None)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` in the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self.store, *args)

    async def call_grouped(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` in the store's thread, in one write transaction with the grouped calls queued
        beside it (up to GROUP_LIMIT), each in a savepoint of its own.

        A call that raises is undone alone and raises here; the others commit.
        Nothing is returned before the COMMIT has returned (`synchronous=FULL`:
        durable), and a COMMIT that fails raises in every call of its group,
        which then left nothing stored. The store needs `group_transaction()`
        and `savepoint()` (`sync.database.Database`); what `fn` opens with
        `transaction()` joins the group's. A call whose caller gave up before
        its group began (a cancelled task) is not run.

        The whole group is answered by one wake-up of the event loop, not one
        per call: at 64 sessions in flight that hand-back (the loop's self-pipe,
        a future chained across threads per call) was a tenth of a hop's cost.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._queue.append(Grouped(loop, future, fn, args))
            if not self._scheduled:
                self._scheduled = True
                self._pool.submit(self._run_group)
        return await future

    def _run_group(self) -> None:
        """In the store's thread: one group, then the next is queued behind the plain calls waiting meanwhile.
        Calls of the group given up in a deadlock go first in the next group."""
        with self._lock:
            group = [self._queue.popleft() for _ in range(min(GROUP_LIMIT, len(self._queue)))]
        again: list[Grouped] = []
        try:
            outcomes, again = self._commit(group)
            self._hand_back(group, outcomes)
        finally:
            with self._lock:
                self._queue.extendleft(reversed(again))
                if self._queue:
                    self._pool.submit(self._run_group)
                else:
                    self._scheduled = False

    def _commit(self, group: list[Grouped]) -> tuple[list[Outcome], list[Grouped]]:
        """Run `group` in one transaction, each call in its own savepoint (a call alone, in none): the outcome
        of each call that ran, or the transaction's error for all of them; and the calls to run again.

        On a PostgreSQL store that several workers share, two groups can each
        hold a session the other's next call waits for (`Store.lock_session`),
        and PostgreSQL gives one of those calls up (`Deadlock`). Run again in
        this transaction it would wait for the same lock, so it runs in the
        next group: this group's COMMIT lets the other worker's group finish,
        and with it the lock goes.
        """
        outcomes: list[Outcome] = []
        again: list[Grouped] = []
        # A call alone in its group needs no savepoint: when it raises, the whole transaction is undone, which
        # is all it holds (two statements fewer per hop when hops do not queue).
        part = self.store.savepoint if len(group) > 1 else contextlib.nullcontext
        try:
            with self.store.group_transaction():
                for call in group:
                    # Read across threads: a caller that gives up just after this runs anyway, and its outcome
                    # is dropped on the loop (as once a call has begun, whatever the thread).
                    if call.future.cancelled():
                        continue
                    try:
                        with part():
                            outcomes.append((call.future, call.fn(self.store, *call.args), None))
                    except TransactionLost:
                        outcomes.append((call.future, None, None))
                        raise
                    except Deadlock as error:
                        if call.tries < DEADLOCK_RETRIES:
                            again.append(call._replace(tries=call.tries + 1))
                        else:
                            outcomes.append((call.future, None, error))
                        if part is contextlib.nullcontext:
                            raise  # undone with the transaction, which holds nothing else
                    except Exception as error:
                        outcomes.append((call.future, None, error))
                        if part is contextlib.nullcontext:
                            raise  # undone with the transaction, which holds nothing else
        except BaseException as error:
            ran = {id(future) for future, _, _ in outcomes}
            retried = {id(call.future) for call in again}
            return [(call.future, None, error) for call in group if id(call.future) not in retried
                    and (id(call.future) in ran or not call.future.cancelled())], again
        return outcomes, again

    @staticmethod
    def _hand_back(group: list[Grouped], outcomes: list[Outcome]) -> None:
        """Settle each call's future in its own loop: one `call_soon_threadsafe` per loop the group came from."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        loops = {id(call.future): call.loop for call in group}
        for outcome in outcomes:
            by_loop.setdefault(loops[id(outcome[0])], []).append(outcome)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop is closed: nobody waits for these any more
                pass

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(reader, *args)` in a reading thread, on a read-only twin of the store (in the store's
        thread when there are no readers). `fn` must not write: a twin refuses to."""
        if self._readers is None:
            return await self.call(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._readers.pool, self._readers.run, fn, args)

    def close(self) -> None:
        if self._readers is not None:
            self._readers.close()
        self._pool.submit(self.store.close).result()
        self._pool.shutdown(wait=True)


def _settle(outcomes: list[Outcome]) -> None:
    """In the loop: each outcome to its future, unless its caller gave up (cancelled) meanwhile."""
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class Readers(Generic[S]):
    """`size` threads, each opening its own reader with `opener()` the first time it reads."""

    def __init__(self, opener: Callable[[], S], size: int):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="store-read")
        self._opener = opener
        self._local = threading.local()
        self._opened: list[S] = []
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., T], args: tuple) -> T:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = self._opener()
            with self._lock:
                self._opened.append(reader)
        return fn(reader, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for reader in self._opened:
            reader.close()
