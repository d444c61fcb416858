"""What only the central store on PostgreSQL has to get right: several central workers share one database.

Two stores (as two `kentongan central serve` workers would hold) on one real
PostgreSQL schema; SQLite's one writer makes these cases impossible there.
"""

import asyncio
import threading

import asyncpg

from conftest import POSTGRES, eventually, postgres_schemas
from sync.central import CentralStore
from test_sync import item

NIK = {"nik": "3201231708900001", "name": "Siti Aminah", "birth_date": "17081990", "village": "Sukamaju"}


async def waiting_for_a_lock() -> bool:
    """Whether a session waits for an advisory lock (the central store's per-gateway or claims lock)."""
    conn = await asyncpg.connect(POSTGRES)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") > 0
    finally:
        await conn.close()


async def test_two_workers_given_one_batch_at_once_store_it_once(tmp_path):
    async with postgres_schemas("central") as (url,):
        first = CentralStore.open(tmp_path, database_url=url, uniques={"voter": ("nik",)})
        second = CentralStore.open(tmp_path, database_url=url, uniques={"voter": ("nik",)})
        release, tasks = threading.Event(), []
        try:
            first.add_gateway("desa-1", "secret", "K")
            items = [item(n) for n in range(5)]
            stored = threading.Event()

            def first_worker():
                with first.transaction():  # stored, not committed yet: the retry arrives at the other worker
                    results = first.ingest("desa-1", items)
                    stored.set()
                    release.wait(30)
                return results

            running = asyncio.create_task(asyncio.to_thread(first_worker))
            tasks.append(running)
            await eventually(stored.is_set)
            retry = asyncio.create_task(asyncio.to_thread(second.ingest, "desa-1", items))
            tasks.append(retry)
            await eventually(lambda: waiting_for_a_lock())  # the retry waits for the first batch's outcome
            release.set()
            assert [r["result"] for r in await running] == ["accepted"] * 5
            assert [r["result"] for r in await retry] == ["duplicate"] * 5
            assert first.count() == 5
        finally:
            release.set()
            await asyncio.gather(*tasks, return_exceptions=True)  # no store is closed under its thread
            first.close()
            second.close()


async def test_one_nik_arriving_at_two_workers_at_once_is_held_once(tmp_path):
    async with postgres_schemas("central") as (url,):
        first = CentralStore.open(tmp_path, database_url=url, uniques={"voter": ("nik",)})
        second = CentralStore.open(tmp_path, database_url=url, uniques={"voter": ("nik",)})
        release, tasks = threading.Event(), []
        try:
            first.add_gateway("desa-1", "secret-1", "K")
            first.add_gateway("desa-2", "secret-2", "A")
            mine = item(1, service="voter", answers=NIK)
            theirs = item(2, service="voter", answers=NIK, id="01KB" + "9" * 22, ref="AABCDE")
            stored = threading.Event()

            def first_worker():
                with first.transaction():
                    first.ingest("desa-1", [mine])
                    stored.set()
                    release.wait(30)

            running = asyncio.create_task(asyncio.to_thread(first_worker))
            tasks.append(running)
            await eventually(stored.is_set)
            other = asyncio.create_task(asyncio.to_thread(second.ingest, "desa-2", [theirs]))
            tasks.append(other)
            await eventually(lambda: waiting_for_a_lock())  # it may not find the NIK free meanwhile
            release.set()
            await running
            assert [r["result"] for r in await other] == ["accepted"]
            assert first.submission(mine["ref"])["status"] == "received"
            held = first.submission("AABCDE")
            assert (held["status"], held["review_of"]) == ("review", mine["ref"])
        finally:
            release.set()
            await asyncio.gather(*tasks, return_exceptions=True)  # no store is closed under its thread
            first.close()
            second.close()


async def test_two_workers_escalating_at_once_escalate_each_request_once(tmp_path):
    from conftest import MovableClock
    from sync.protocol import QUIET
    from test_central_routing import START, open_store
    from test_central_routing import item as report

    async with postgres_schemas("central") as (url,):
        clock = MovableClock(START)
        first, second = open_store(tmp_path, clock, url), open_store(tmp_path, clock, url)
        release, tasks = threading.Event(), []
        try:
            first.ingest("desa-a", [report(1, "garbage", "Cibodas"), report(2, "garbage", "Cibodas")])
            clock.advance(hours=49)
            selected = threading.Event()

            def first_worker():
                with first.transaction():  # escalated, not committed yet, when the other worker looks
                    count = first.escalate_overdue()
                    selected.set()
                    release.wait(30)
                return count

            running = asyncio.create_task(asyncio.to_thread(first_worker))
            tasks.append(running)
            await eventually(selected.is_set)
            other = asyncio.create_task(asyncio.to_thread(second.escalate_overdue))
            tasks.append(other)
            await eventually(_waiting_for_a_row)  # the other worker waits on the rows the first one holds
            release.set()
            assert (await running, await other) == (2, 0)
            for ref in ("AAAA01", "AAAA02"):
                kinds = [h["kind"] for h in second.submission_page(ref)["history"]]
                assert kinds.count("escalate") == 1
            assert sorted(u["ref"] for u in second.updates("desa-a", 0) if u["notice"] == QUIET) == ["AAAA01", "AAAA02"]
        finally:
            release.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            first.close()
            second.close()


async def _waiting_for_a_row() -> bool:
    conn = await asyncpg.connect(POSTGRES)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' "
                                   "AND NOT granted") > 0
    finally:
        await conn.close()
