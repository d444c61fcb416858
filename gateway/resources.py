"""What the app holds for its lifetime: app keys, the rules of a turn, the store's context."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Coroutine

from aiohttp import web

from flows import Engine
from flows.sms import Keywords
from sync.store import Store
from sync.thread import StoreThread

from .config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rules:
    """The settings a turn needs, read from the config once."""

    default_language: str
    resume_window: dt.timedelta
    ref_prefix: str
    sms_ttl: dt.timedelta
    auto_reply_cap: int
    place_wait: dt.timedelta = dt.timedelta(minutes=60)
    """How long an SMS report without a place waits for it (`sms.pending_minutes`)."""

    @classmethod
    def from_config(cls, config: Config) -> "Rules":
        return cls(
            default_language=config["language.default"],
            resume_window=dt.timedelta(minutes=config["ussd.resume_minutes"]),
            ref_prefix=config["gateway.ref_prefix"],
            sms_ttl=dt.timedelta(hours=config["sms.ttl_hours"]),
            auto_reply_cap=config["sms.auto_replies_per_hour"],
            place_wait=dt.timedelta(minutes=config["sms.pending_minutes"]),
        )


KEEP_INBOUND_IDS = dt.timedelta(days=7)
"""How long an incoming SMS id is remembered: no provider redelivers later than that."""


def housekeep(store: Store, config: Config) -> dict[str, int]:
    """Delete what `config` says is kept no longer (`serve` hourly, `kentongan purge` now): how many of each."""
    return store.housekeep(sessions=dt.timedelta(hours=config["ussd.keep_sessions_hours"]),
                           inbound=KEEP_INBOUND_IDS,
                           personal=dt.timedelta(days=config["privacy.retention_days"]),
                           final_sms=dt.timedelta(days=config["sms.keep_days"]))


config_key = web.AppKey("config", Config)
engine_key = web.AppKey("engine", Engine)
keywords_key = web.AppKey("keywords", Keywords)
store_key = web.AppKey("store", StoreThread)
clock_key = web.AppKey("clock", object)
"""The clock every store of the app reads (`sync.database.utc_now` unless a test hands in another)."""
rules_key = web.AppKey("rules", Rules)
sender_key = web.AppKey("sender", object)
syncer_key = web.AppKey("syncer", object)


async def store_context(app: web.Application) -> AsyncIterator[None]:
    thread = await StoreThread.open(Store.open, app[config_key].data_dir, app[clock_key])
    app[store_key] = thread
    log.info("store %s", thread.store.path)
    yield
    thread.close()


@contextlib.asynccontextmanager
async def in_background(work: Coroutine) -> AsyncIterator[asyncio.Task]:
    """Run `work` as a task for the app's lifetime; cancel it and wait for it on the way out."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def load_engine(config: Config) -> Engine:
    """The engine for `config`'s menus, catalogs and languages (checked: raises FlowError)."""
    return Engine.load(config.menus_dir, config.locale_dir, list(config["language.available"]),
                       config["language.default"])
