"""What the app holds for its lifetime: app keys and the store's own thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, TypeVar

from aiohttp import web

from flows import Engine
from flows.sms import Keywords
from sync.store import Store

from .config import Config

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreThread:
    """The store behind one thread: every call runs there, in arrival order.

    SQLite work (and the fsync of a commit) stays off the event loop, and the
    turns of one gateway process never interleave inside a transaction.
    """

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor, store: Store):
        self._pool = pool
        self.store = store

    @classmethod
    async def open(cls, opener: Callable[..., Store], *args: Any) -> "StoreThread":
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


@dataclass(frozen=True)
class Rules:
    """The settings a turn needs, read from the config once."""

    default_language: str
    resume_window: dt.timedelta
    ref_prefix: str
    sms_ttl: dt.timedelta
    auto_reply_cap: int

    @classmethod
    def from_config(cls, config: Config) -> "Rules":
        return cls(
            default_language=config["language.default"],
            resume_window=dt.timedelta(minutes=config["ussd.resume_minutes"]),
            ref_prefix=config["gateway.ref_prefix"],
            sms_ttl=dt.timedelta(hours=config["sms.ttl_hours"]),
            auto_reply_cap=config["sms.auto_replies_per_hour"],
        )


config_key = web.AppKey("config", Config)
engine_key = web.AppKey("engine", Engine)
keywords_key = web.AppKey("keywords", Keywords)
store_key = web.AppKey("store", StoreThread)
rules_key = web.AppKey("rules", Rules)
sender_key = web.AppKey("sender", object)


async def store_context(app: web.Application) -> AsyncIterator[None]:
    thread = await StoreThread.open(Store.open, app[config_key].data_dir)
    app[store_key] = thread
    log.info("store %s", thread.store.path)
    yield
    thread.close()
