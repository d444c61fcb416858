"""A store behind a thread of its own, for asyncio code, and readers beside it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Generic, TypeVar

S = TypeVar("S")
T = TypeVar("T")


class StoreThread(Generic[S]):
    """Every call runs in one thread, in arrival order.

    SQLite work (and the fsync of a commit) stays off the event loop, and the
    calls of one process never interleave inside a transaction.

    Opened with `readers`, it also has that many reading threads (`read`),
    each with a read-only twin of the store (`store.reader()`, a connection of
    its own on the same WAL file): a long list runs there, so a write or a
    sync request never queues behind it. A reader sees every transaction the
    store's thread committed before the read began.
    """

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor, store: S, readers: "Readers[S] | None" = None):
        self._pool = pool
        self.store = store
        self._readers = readers

    @classmethod
    async def open(cls, opener: Callable[..., S], *args: Any, readers: int = 0) -> "StoreThread[S]":
        """Open the store with `opener(*args)` in its own new thread, and `readers` reading threads beside it."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        store = await asyncio.get_running_loop().run_in_executor(pool, opener, *args)
        return cls(pool, store, Readers(store.reader, readers) if readers else None)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` in the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self.store, *args)

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
