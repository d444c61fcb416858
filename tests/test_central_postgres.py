"""What only the central store on PostgreSQL has to get right: several central workers share one database.

Two stores (as two `kentongan central serve` workers would hold) on one real
PostgreSQL schema; SQLite's one writer makes these cases impossible there.
"""

import asyncio
import json
import threading
from types import SimpleNamespace

import asyncpg
import pytest

from conftest import POSTGRES, MovableClock, eventually, postgres_schemas, served
from sync.central import CentralConfig, CentralStore, create_central_app
from sync.central.keys import central_store_key
from sync.central.store import Changed, _gateway_lock
from test_sync import SECRET, STAFF, batch, forms, item, signed_post

NIK = {"nik": "3201231708900001", "name": "Siti Aminah", "birth_date": "17081990", "village": "Sukamaju"}


def backend_pid(store: CentralStore) -> int:
    """The PostgreSQL backend of `store`'s connection: asked before a thread of the test starts using the store."""
    return store.db.execute("SELECT pg_backend_pid()").fetchone()[0]


def blocked(waiter: int, holder: int):
    """A check for `eventually`: whether backend `waiter` waits for a lock (advisory, a row, ...) that backend
    `holder` holds. Only the test's own connections count, not whatever else the server runs meanwhile."""
    async def check() -> bool:
        conn = await asyncpg.connect(POSTGRES)
        try:
            return holder in await conn.fetchval("SELECT pg_blocking_pids($1)", waiter)
        finally:
            await conn.close()
    return check


async def race(first: CentralStore, second: CentralStore, first_work, second_work):
    """Run `first_work()` in a transaction on `first` that stays open until `second_work()`, on `second`, is seen
    waiting for it (as two workers would, one a moment behind the other); return both outcomes, the second's
    error in place of its result when it raised."""
    release, done = threading.Event(), threading.Event()
    first_pid, second_pid = backend_pid(first), backend_pid(second)

    def hold():
        with first.transaction():  # done, not committed yet, when the other worker gets there
            result = first_work()
            done.set()
            release.wait(30)
        return result

    tasks = [asyncio.create_task(asyncio.to_thread(hold))]
    try:
        await eventually(done.is_set)
        tasks.append(asyncio.create_task(asyncio.to_thread(second_work)))
        await eventually(blocked(second_pid, first_pid))  # the second waits for the first's outcome
        release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(outcomes[0], BaseException):
            raise outcomes[0]
        return outcomes
    finally:
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)  # no store is closed under its thread


@pytest.fixture
async def workers(tmp_path):
    """Two central workers' stores on one fresh PostgreSQL schema, voter NIKs unique."""
    async with postgres_schemas("central") as (url,):
        stores = [CentralStore.open(tmp_path, database_url=url, uniques={"voter": ("nik",)}) for _ in range(2)]
        try:
            yield stores
        finally:
            for store in stores:
                store.close()


async def test_two_workers_given_one_batch_at_once_store_it_once(workers):
    first, second = workers
    first.add_gateway("desa-1", "secret", "K")
    items = [item(n) for n in range(5)]
    stored, retried = await race(first, second, lambda: first.ingest("desa-1", items),
                                 lambda: second.ingest("desa-1", items))
    assert [r["result"] for r in stored] == ["accepted"] * 5
    assert [r["result"] for r in retried] == ["duplicate"] * 5
    assert first.count() == 5


async def test_one_nik_arriving_at_two_workers_at_once_is_held_once(workers):
    first, second = workers
    first.add_gateway("desa-1", "secret-1", "K")
    first.add_gateway("desa-2", "secret-2", "A")
    mine = item(1, service="voter", answers=NIK)
    theirs = item(2, service="voter", answers=NIK, id="01KB" + "9" * 22, ref="AABCDE")
    # The second may not find the NIK free while the first's claim is uncommitted.
    _, other = await race(first, second, lambda: first.ingest("desa-1", [mine]),
                          lambda: second.ingest("desa-2", [theirs]))
    assert [r["result"] for r in other] == ["accepted"]
    assert first.submission(mine["ref"])["status"] == "received"
    held = first.submission("AABCDE")
    assert (held["status"], held["review_of"]) == ("review", mine["ref"])


async def test_two_workers_escalating_at_once_escalate_each_request_once(tmp_path):
    from sync.protocol import QUIET
    from test_central_routing import START, open_store
    from test_central_routing import item as report

    async with postgres_schemas("central") as (url,):
        clock = MovableClock(START)
        first, second = open_store(tmp_path, clock, url), open_store(tmp_path, clock, url)
        try:
            first.ingest("desa-a", [report(1, "garbage", "Cibodas"), report(2, "garbage", "Cibodas")])
            clock.advance(hours=49)
            # The other worker waits on the rows the first holds, then finds them taken.
            assert await race(first, second, first.escalate_overdue, second.escalate_overdue) == [2, 0]
            for ref in ("AAAA01", "AAAA02"):
                kinds = [h["kind"] for h in second.submission_page(ref)["history"]]
                assert kinds.count("escalate") == 1
            assert sorted(u["ref"] for u in second.updates("desa-a", 0) if u["notice"] == QUIET) == ["AAAA01", "AAAA02"]
        finally:
            first.close()
            second.close()


async def test_two_workers_changing_one_submission_from_one_view_change_it_once(tmp_path):
    """Two staff members saw a submission at one `updated_at` and change it at once, through two workers: the
    second waits for the first's change and is told what changed, instead of overwriting it (and telling the
    phone twice)."""
    async with postgres_schemas("central") as (url,):
        clock = MovableClock()
        first = CentralStore.open(tmp_path, clock, database_url=url)
        second = CentralStore.open(tmp_path, clock, database_url=url)
        try:
            first.add_gateway("desa-1", "secret", "K")
            ref = item(1)["ref"]
            first.ingest("desa-1", [item(1)])
            seen = first.submission(ref)["updated_at"]
            clock.advance(minutes=5)
            _, refused = await race(first, second,
                                    lambda: first.change(ref, "in_progress", "Tim berangkat", "ana", expected=seen),
                                    lambda: second.change(ref, "rejected", "Bukan jalan desa", "budi", expected=seen))
            assert isinstance(refused, Changed)
            assert (refused.current["status"], refused.current["note"]) == ("in_progress", "Tim berangkat")
            assert [h["who"] for h in refused.history] == ["ana"]
            assert (second.submission(ref)["status"], second.submission(ref)["note"]) == ("in_progress",
                                                                                          "Tim berangkat")
            assert [u["status"] for u in second.updates("desa-1", 0)] == ["in_progress"]
        finally:
            first.close()
            second.close()


async def test_batches_of_two_gateways_in_either_order_on_two_workers_never_deadlock(tmp_path):
    """A worker given batches of desa-1 and desa-2 together, while another worker holds desa-2's lock and then
    wants desa-1's (its own batches in the other order), answers both: no batch holds its gateway's lock past
    its own commit, so the two workers never wait for each other in a circle (PostgreSQL would cancel one
    batch after `deadlock_timeout`, and it would answer 500)."""
    async with postgres_schemas("central") as (url,):
        config = CentralConfig(tmp_path, STAFF, forms(), gateways={"desa-1": SECRET, "desa-2": SECRET},
                               prefixes={"desa-1": "K", "desa-2": "A"}, database_url=url)
        app = create_central_app(config)
        hold, release = threading.Event(), threading.Event()
        sealing, at_sealing, arrived, tasks = {"K": threading.Event(), "A": threading.Event()}, [], [], []
        async with served(app) as base:
            other_worker = await asyncpg.connect(POSTGRES)
            try:  # everything let go before the app stops, or its store's thread would wait for it
                thread = app[central_store_key]
                worker_pid = await thread.call(lambda s: s.db.execute("SELECT pg_backend_pid()").fetchone()[0])
                other_pid = await other_worker.fetchval("SELECT pg_backend_pid()")
                # `arrived`: the batches handed to the store's thread, in order. The test hands over desa-1's,
                # then desa-2's, while a call keeps the thread busy: they wait there together, as batches
                # arriving at once do.
                for name in ("call", "call_grouped"):
                    def counting(fn, *args, _original=getattr(thread, name)):
                        if getattr(fn, "__name__", "") == "store_batch":
                            arrived.append(fn)
                        return _original(fn, *args)
                    setattr(thread, name, counting)
                seal_batch = thread.store.seal_batch

                def seal_when_told(items):  # sealing comes right before the hand-over
                    at_sealing.append(items[0]["ref"][0])
                    sealing[items[0]["ref"][0]].wait(30)
                    return seal_batch(items)
                thread.store.seal_batch = seal_when_told

                def busy(store):
                    hold.set()
                    release.wait(30)

                # The other worker is storing a batch of desa-2: it holds desa-2's lock, uncommitted.
                other_tx = other_worker.transaction()
                await other_tx.start()
                await other_worker.execute("SELECT pg_advisory_xact_lock($1)", _gateway_lock("desa-2"))

                central = SimpleNamespace(url=base)
                mine = asyncio.create_task(signed_post(central, batch([item(1)]), "desa-1"))
                theirs = asyncio.create_task(signed_post(
                    central, batch([item(2, id="01KB" + "9" * 22, ref="AABCDE")], "desa-2"), "desa-2"))
                tasks += [mine, theirs]
                await eventually(lambda: len(at_sealing) == 2)  # both checked and signed: past the thread
                tasks.append(asyncio.create_task(thread.call(busy)))
                await eventually(hold.is_set)
                sealing["K"].set()
                await eventually(lambda: len(arrived) == 1)
                sealing["A"].set()
                await eventually(lambda: len(arrived) == 2)
                release.set()
                # This worker stored desa-1's batch and now waits for desa-2's lock...
                await eventually(blocked(worker_pid, other_pid))
                # ... and the other worker's next batch, of desa-1, finds desa-1's lock free.
                await other_worker.execute("SELECT pg_advisory_xact_lock($1)", _gateway_lock("desa-1"))
                await other_tx.rollback()
                for status, text, _ in (await mine, await theirs):
                    assert status == 200, text
                    assert [r["result"] for r in json.loads(text)["results"]] == ["accepted"]
                assert await thread.call(lambda s: s.count()) == 2
            finally:
                release.set()
                for event in sealing.values():
                    event.set()
                await other_worker.close()  # its locks with it
                await asyncio.gather(*tasks, return_exceptions=True)
