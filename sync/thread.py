"""A store behind a thread of its own, for asyncio code."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Callable, Generic, TypeVar

S = TypeVar("S")
T = TypeVar("T")


class StoreThread(Generic[S]):
    """Every call runs in one thread, in arrival order.

    SQLite work (and the fsync of a commit) stays off the event loop, and the
    calls of one process never interleave inside a transaction.
    """

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor, store: S):
        self._pool = pool
        self.store = store

    @classmethod
    async def open(cls, opener: Callable[..., S], *args: Any) -> "StoreThread[S]":
        """Open the store with `opener(*args)` in its own new thread."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        store = await asyncio.get_running_loop().run_in_executor(pool, opener, *args)
        return cls(pool, store)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` in the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self.store, *args)

    def close(self) -> None:
        self._pool.submit(self.store.close).result()
        self._pool.shutdown(wait=True)
