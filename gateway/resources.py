"""What the app holds for its lifetime: app keys, the rules of a turn, the store's context."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Coroutine

from aiohttp import web

from flows import Engine
from flows.sms import Keywords
from sync.limits import RateLimiter
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
    submissions_per_day: int = 0
    """Submissions of one service a phone makes in 24 hours before the next are held (`limits.submissions_per_day`)."""

    @classmethod
    def from_config(cls, config: Config) -> "Rules":
        return cls(
            default_language=config["language.default"],
            resume_window=dt.timedelta(minutes=config["ussd.resume_minutes"]),
            ref_prefix=config["gateway.ref_prefix"],
            sms_ttl=dt.timedelta(hours=config["sms.ttl_hours"]),
            auto_reply_cap=config["sms.auto_replies_per_hour"],
            place_wait=dt.timedelta(minutes=config["sms.pending_minutes"]),
            submissions_per_day=config["limits.submissions_per_day"],
        )


PERSIST_SECONDS = 60.0
"""How often the refusal counts go to the store's meta table (and once more at shutdown), when they changed."""
COUNTERS = ("refused_ussd_sessions", "refused_sms", "held_submissions")
"""Meta keys of the gateway's rate-limit counts, for `kentongan status`; `held_submissions` is written by
`turn.submit` in the transaction that holds one."""


class Limits:
    """The per-phone rate limits of the channels (`limits.*`), keyed by the store's phone digest.

    They are counted in memory and used only in the store's thread (so with
    several workers, each counts its own callers). What they refused is
    counted across restarts and processes: `refused()` is this process's
    count, added to the store's meta counters as it grows (`store_context`).
    """

    def __init__(self, config: Config, clock: Callable[[], dt.datetime]):
        def seconds() -> float:  # the store's clock, which tests move
            return clock().timestamp()

        self.ussd_sessions = RateLimiter("ussd sessions", config["limits.ussd_sessions_per_hour"], 3600,
                                         clock=seconds)
        self.sms = RateLimiter("sms", config["limits.sms_per_hour"], 3600, clock=seconds)

    def refused(self) -> dict[str, int]:
        """What this process refused since it started, by meta counter."""
        return {"refused_ussd_sessions": self.ussd_sessions.refused, "refused_sms": self.sms.refused}


def stored_counts(store: Store) -> dict[str, int]:
    """The rate-limit counts in the store's meta table (`COUNTERS`), 0 when never written."""
    return {key: int(store.meta(key) or 0) for key in COUNTERS}


KEEP_FUNNEL_DAYS = 8
KEEP_INBOUND_IDS = dt.timedelta(days=7)
"""How long an incoming SMS id is remembered: no provider redelivers later than that."""


def housekeep(store: Store, config: Config) -> dict[str, int]:
    """Delete what `config` says is kept no longer (`serve` hourly, `kentongan purge` now): how many of each.

    The funnel's sessions go after KEEP_FUNNEL_DAYS: its page looks back 7 days.
    """
    gone = store.housekeep(sessions=dt.timedelta(hours=config["ussd.keep_sessions_hours"]),
                           inbound=KEEP_INBOUND_IDS,
                           personal=dt.timedelta(days=config["privacy.retention_days"]),
                           final_sms=dt.timedelta(days=config["sms.keep_days"]))
    gone["funnel_sessions"] = store.purge_funnel(dt.timedelta(days=KEEP_FUNNEL_DAYS))
    return gone


config_key = web.AppKey("config", Config)
engine_key = web.AppKey("engine", Engine)
keywords_key = web.AppKey("keywords", Keywords)
store_key = web.AppKey("store", StoreThread)
clock_key = web.AppKey("clock", object)
"""The clock every store of the app reads (`sync.database.utc_now` unless a test hands in another)."""
rules_key = web.AppKey("rules", Rules)
limits_key = web.AppKey("limits", Limits)
sender_key = web.AppKey("sender", object)
syncer_key = web.AppKey("syncer", object)
sessions_key = web.AppKey("sessions", object)
"""USSD sessions in Redis (`sessions.backend: redis`); absent when they live in the store."""


async def store_context(app: web.Application) -> AsyncIterator[None]:
    """The store's thread, and the rate limits used in it: their counts persisted every minute and at the end."""
    thread = await StoreThread.open(Store.open, app[config_key].data_dir, app[clock_key],
                                    app[config_key]["gateway.database_url"])
    app[store_key] = thread
    log.info("store %s", thread.store.where)
    limits = app[limits_key] = Limits(app[config_key], app[clock_key])
    persisted = limits.refused()

    async def persist() -> None:
        """Add what was refused since the last time to the store's counters: workers sharing a store add up."""
        nonlocal persisted
        refused = limits.refused()
        grown = {key: count - persisted[key] for key, count in refused.items() if count != persisted[key]}
        if grown:
            await thread.call(lambda store: [store.count_meta(key, by) for key, by in grown.items()])
            persisted = refused

    async def every_minute() -> None:
        while True:
            await asyncio.sleep(PERSIST_SECONDS)
            try:
                await persist()
            except Exception:
                log.exception("persisting the rate-limit counts failed")

    async with in_background(every_minute()):
        yield
    await persist()
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
