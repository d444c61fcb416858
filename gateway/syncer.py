"""Sync rounds: push pending submissions and villagers' answers, then pull status updates and queue their notices.

One round pushes every pending submission in batches of `sync.batch_size`,
with the villagers' pending answers to "is it fixed?" (`feedback`) beside
them, marking each only on the central backend's signed answer for it
(an answer is sent no more whatever the result), then pulls
status changes after the stored cursor. Each pulled page is applied in one
store transaction: the statuses, their SMS notices, and the new cursor, so a
notice is queued exactly once however often a round is cut short. An
update's `agency`, `due_at` and `overdue` are kept with the submission, so
CEK can tell a villager their request is past its deadline and who holds it.

In `kentongan serve` a round runs every `sync.interval_seconds` while the
link is up and backs off exponentially (with jitter) while it is down
(`LinkError`, which heals by itself). When the central backend refuses this
gateway (`Refused`: wrong secret, unknown gateway id, clock far off, no
reference prefix registered) no fast retry can help: the worker logs it
once, keeps the words for `kentongan status`, and tries again only hourly
until a person fixes it. Every answer names the reference prefix the central
backend knows this gateway by; a round keeps it for `kentongan status`.
`kentongan sync` runs one round now.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from flows import Engine
from sync import batchfile
from sync.client import SyncClient
from sync.errors import BatchFileError, LinkError, Refused, SyncError
from sync.protocol import FEEDBACK, FEEDBACK_ACKS
from sync.store import Store
from sync.thread import StoreThread

from .config import Config
from .resources import Rules
from .turn import change_status

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600.0
EXPORT_PAGE = 1000
EXPORT_FEEDBACK = 100_000
"""Answers to "is it fixed?" one batch file carries at most (one per resolved submission)."""
AGENCY_LIMIT = 80
"""Characters of an agency's name kept: a status line has room for no more."""
REFUSED_RETRY_SECONDS = 3600.0
"""How often a refused gateway asks again: rarely, since only a person can fix it."""


@dataclass
class Summary:
    """What one round did; `prefix` is the reference prefix the central backend knows this gateway by."""

    pushed: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    feedback: int = 0
    wire_bytes: int = 0
    updates: int = 0
    notices: int = 0
    suppressed: int = 0
    seconds: float = 0.0
    prefix: str | None = None


@dataclass(frozen=True)
class Applied:
    """What applying a page of updates did: updates applied, notices queued, notices kept back by STOP."""

    updates: int = 0
    queued: int = 0
    suppressed: int = 0


def apply_updates(store: Store, engine: Engine, rules: Rules, updates: list[dict]) -> Applied:
    """Apply status changes past the stored cursor and move it, in one transaction.

    Updates at or before the cursor were applied already (a page pulled
    twice, an answer file imported twice) and are skipped, so each notice is
    queued once.
    """
    applied, states = 0, []
    with store.transaction():
        cursor = _held_cursor(store)
        for update in sorted((u for u in updates if isinstance(u, dict) and isinstance(u.get("seq"), int)),
                             key=lambda u: u["seq"]):
            if update["seq"] <= cursor:
                continue
            try:
                states.append(change_status(store, engine, rules, str(update["ref"]), str(update["status"]),
                                            str(update.get("note") or ""), update.get("notice")))
                keep_deadline(store, update)
            except (KeyError, ValueError) as error:
                log.warning("update %s skipped: %s", update["seq"], error)
            cursor = update["seq"]
            applied += 1
        store.set_meta(sync_cursor=cursor)
    return Applied(applied, states.count("queued"), states.count("suppressed"))


def _held_cursor(store: Store) -> int:
    """The stored cursor, read in the open transaction so that no other process applies updates until it ends.

    SQLite's BEGIN IMMEDIATE already lets one writer in at a time. On a
    PostgreSQL store that several workers share, the leader's timer round, a
    kiosk "Sync now" in another worker, `kentongan sync` and an imported
    answer file can apply the same page at once: under READ COMMITTED both
    would read the same cursor and queue every notice twice. The cursor's row
    is locked instead (made first, so that there is a row to lock), and the
    second process reads it only after the first has committed its new value.
    """
    if not store.postgres:
        return int(store.meta("sync_cursor", "0"))
    store.db.execute("INSERT INTO meta (key, value) VALUES ('sync_cursor', '0') ON CONFLICT (key) DO NOTHING")
    row = store.db.execute("SELECT value FROM meta WHERE key = 'sync_cursor' FOR UPDATE").fetchone()
    return int(row[0] or 0)


def keep_deadline(store: Store, update: dict) -> None:
    """Keep what an update says of its submission's agency, deadline and lateness (an older central backend
    says nothing: kept as nothing). Raises ValueError for a deadline that is no time."""
    agency, due_at = update.get("agency"), update.get("due_at")
    if due_at is not None:
        when = dt.datetime.fromisoformat(str(due_at).replace("Z", "+00:00"))
        due_at = store.stamp(when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc))
    store.set_deadline(str(update["ref"]), agency=str(agency)[:AGENCY_LIMIT] if agency else None, due_at=due_at,
                       overdue=update.get("overdue") is True)


def export_file(store: Store, gateway_id: str, secret: str, path: str | Path) -> tuple[int, int]:
    """Write every unsynced submission, and the villagers' unsynced answers to "is it fixed?", into one sealed
    batch file; return (submissions, bytes).

    They stay pending until the central backend's answer file is imported.
    """
    items, after = [], ""
    while batch := store.pending_submissions(EXPORT_PAGE, after):
        items += batch
        after = batch[-1]["id"]
    feedback = store.pending_feedback(EXPORT_FEEDBACK)
    try:
        size = batchfile.write(path, "submissions", gateway_id, secret, {"items": items, FEEDBACK: feedback})
    except OSError as error:
        raise BatchFileError(f"cannot write {path}: {error.strerror}") from None
    return len(items), size


def import_file(store: Store, engine: Engine, rules: Rules, gateway_id: str, secret: str,
                path: str | Path) -> tuple[int, Applied]:
    """Apply the central backend's answer file in one transaction; return (acknowledged, what was applied).

    Raises `BatchFileError` (nothing changed) for a file that must not be used.
    """
    payload = batchfile.read(path, "updates", gateway_id, secret)
    acks, updates = payload.get("acks", []), payload.get("updates", [])
    answered = payload.get(FEEDBACK_ACKS, [])
    if not isinstance(acks, list) or not isinstance(updates, list) or not isinstance(answered, list):
        raise BatchFileError(f"{path} has a malformed payload")
    with store.transaction():
        tally = store.mark_synced([{"id": i, "result": "accepted"} for i in acks if isinstance(i, str)])
        store.mark_feedback_synced([{"id": i, "result": "accepted"} for i in answered if isinstance(i, str)])
        applied = apply_updates(store, engine, rules, updates)
    return tally["accepted"], applied


class Syncer:
    def __init__(self, store: StoreThread, engine: Engine, rules: Rules, *, url: str, gateway_id: str,
                 secret: str, batch_size: int, timeout: float, on_notices: Callable[[], None] = lambda: None,
                 on_round: Callable[[Summary], None] = lambda summary: None):
        self.store = store
        self.engine = engine
        self.rules = rules
        self.url = url
        self.gateway_id = gateway_id
        self.secret = secret
        self.batch_size = batch_size
        self.timeout = timeout
        self.on_notices = on_notices
        self.on_round = on_round
        """Told every round's summary, finished or cut short (the metrics count its items)."""
        self.results: collections.Counter[str] = collections.Counter()
        """Submissions pushed since the start, by the central backend's answer (`/metrics`)."""
        self.lock = asyncio.Lock()
        """One round at a time: the timer's and an operator's Sync now never push the same items twice."""

    async def round(self, progress: Callable[[int, int], None] = lambda items, size: None) -> Summary:
        """Push everything pending, then pull every update; waits for a round already running.

        Raises `LinkError` when the link fails and `Refused` when the central
        backend refuses this gateway; either way what was done stays done,
        and the error is kept for `kentongan status`.
        """
        async with self.lock:
            return await self._round(progress)

    async def _round(self, progress: Callable[[int, int], None]) -> Summary:
        summary = Summary()
        began = time.monotonic()
        async with aiohttp.ClientSession() as http:
            client = SyncClient(self.url, self.gateway_id, self.secret, http, self.timeout)
            try:
                after, answered = "", True
                while True:
                    items = await self.store.call(lambda s: s.pending_submissions(self.batch_size, after))
                    feedback = await self.store.call(lambda s: s.pending_feedback(self.batch_size)) if answered else []
                    if not items and not feedback:
                        break
                    pushed = await client.push(items, feedback)
                    summary.prefix = pushed.prefix
                    tally = await self.store.call(lambda s: s.mark_synced(pushed.results))
                    marked = await self.store.call(lambda s: s.mark_feedback_synced(pushed.feedback_results))
                    summary.feedback += marked
                    answered = marked == len(feedback)  # else the central backend ignores them: not again this round
                    summary.pushed += len(items)
                    summary.wire_bytes += pushed.wire_bytes
                    summary.accepted += tally["accepted"]
                    summary.duplicate += tally["duplicate"]
                    summary.rejected += tally["rejected"]
                    after = items[-1]["id"] if items else after
                    progress(len(items), pushed.wire_bytes)
                since = int(await self.store.call(lambda s: s.meta("sync_cursor", "0")))
                while True:
                    pulled = await client.pull(since)
                    summary.prefix = pulled.prefix
                    if not pulled.updates:
                        break
                    applied = await self.store.call(apply_updates, self.engine, self.rules, pulled.updates)
                    summary.updates += applied.updates
                    summary.notices += applied.queued
                    summary.suppressed += applied.suppressed
                    if pulled.cursor <= since:
                        raise LinkError(f"the central backend's cursor went backwards ({since} -> {pulled.cursor})")
                    since = pulled.cursor
            except SyncError as error:
                await self.store.call(_record_failure, error)
                raise
            finally:
                summary.seconds = time.monotonic() - began
                self.results.update(accepted=summary.accepted, duplicate=summary.duplicate, rejected=summary.rejected)
                self.on_round(summary)
                if summary.notices:
                    self.on_notices()
        await self.store.call(_record_success, summary.prefix)
        if summary.pushed or summary.updates or summary.feedback:
            log.info("sync: %d pushed (%d new, %d duplicate, %d rejected, %d bytes), %d answers, %d updates",
                     summary.pushed, summary.accepted, summary.duplicate, summary.rejected,
                     summary.wire_bytes, summary.feedback, summary.updates)
        return summary

    async def run(self, interval: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Rounds forever: every `interval` while the link is up, backing off while it is down.

        `sleep` waits between rounds; tests hand in one they control.
        """
        failures = 0
        refused: str | None = None
        while True:
            try:
                await self.round()
            except Refused as error:
                if str(error) != refused:  # once, not every round
                    log.warning("sync refused: %s; asking again hourly until the setting is fixed", error)
                refused, failures = str(error), 0
                delay = REFUSED_RETRY_SECONDS
            except LinkError as error:
                refused, failures = None, failures + 1
                delay = backoff(failures, interval)
                log.warning("sync failed (%s); next try in %.0f s", error, delay)
            except Exception:
                log.exception("sync round crashed")
                failures += 1
                delay = backoff(failures, interval)
            else:
                if refused:
                    log.info("sync works again: the central backend accepts this gateway")
                refused, failures = None, 0
                delay = interval
            await sleep(delay)


def backoff(failures: int, interval: float) -> float:
    """Seconds to the next round: `interval` after a success, else exponential with jitter up to an hour."""
    if not failures:
        return interval
    ceiling = min(MAX_BACKOFF_SECONDS, interval * 2 ** failures)
    return random.uniform(ceiling / 2, ceiling)


def _record_failure(store: Store, error: SyncError) -> None:
    now = store.clock().isoformat(timespec="seconds")
    store.set_meta(sync_last_error=str(error), sync_last_error_at=now,
                   sync_refused=str(error) if isinstance(error, Refused) else None)


def _record_success(store: Store, prefix: str | None) -> None:
    """A round worked: when, and the reference prefix the central backend knows this gateway by
    (`kentongan status` compares it with `gateway.ref_prefix`)."""
    store.set_meta(sync_last_success=store.clock().isoformat(timespec="seconds"), sync_refused=None,
                   sync_central_prefix=prefix)


def syncer_for(config: Config, store: StoreThread, engine: Engine, **extra) -> Syncer:
    """The syncer `config` describes, over `store`."""
    return Syncer(store, engine, Rules.from_config(config), url=config["central.url"],
                  gateway_id=config["gateway.id"], secret=config["sync.secret"],
                  batch_size=config["sync.batch_size"], timeout=config["sync.timeout_seconds"], **extra)


async def sync_once(config: Config, engine: Engine,
                    progress: Callable[[int, int], None] = lambda items, size: None) -> Summary:
    """One round now, on the store in `gateway.data_dir` (for `kentongan sync`)."""
    store = await StoreThread.open(lambda: Store.open(config.data_dir, database_url=config["gateway.database_url"]))
    try:
        return await syncer_for(config, store, engine).round(progress)
    finally:
        store.close()


async def syncer_context(app: web.Application) -> AsyncIterator[None]:
    """The app's syncer, for the kiosk's Sync now in every process; its timer runs only while this process runs
    the background duties (`gateway.duties`)."""
    from .duties import duty
    from .metrics import metrics_key
    from .resources import config_key, engine_key, sender_key, store_key, syncer_key

    config = app[config_key]
    if not config["sync.secret"]:
        log.info("sync is off (no sync.secret)")
        yield
        return
    syncer = syncer_for(config, app[store_key], app[engine_key], on_notices=lambda: app[sender_key].wake(),
                        on_round=app[metrics_key].sync_round)
    app[syncer_key] = syncer
    async with duty(app, "sync timer", lambda: syncer.run(config["sync.interval_seconds"])):
        yield
