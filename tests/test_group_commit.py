"""Group commit: grouped store calls share one transaction and one fsync, each undone alone when it fails.

A real SQLite file behind a real `StoreThread`; what is durable is read back
through a connection of its own, and commits are counted from the store's
own connection (its trace of statements). Then a real gateway under 64 USSD
report sessions at once.
"""

import asyncio
import functools
import re
import sqlite3
import threading

import pytest

from conftest import postgres_schemas
from gateway.resources import store_key
from sync.store import DATABASE_NAME, Store
from sync.thread import GROUP_LIMIT, StoreThread

REPORT = ["1", "2", "Dusun Kidul", "Lampu jalan mati sejak minggu lalu", "1"]


@pytest.fixture
async def thread(tmp_path):
    thread = await StoreThread.open(Store.open, tmp_path)
    yield thread
    thread.close()


def durable(path, sql, *args):
    """What another connection reads from the file: only what was committed."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


def stored_meta(thread) -> dict:
    return dict(durable(thread.store.path, "SELECT key, value FROM meta"))


async def count_commits(thread) -> list[str]:
    """Every COMMIT the store's connection runs from now on is appended to the list returned."""
    commits: list[str] = []
    await thread.call(lambda store: store.db.conn.set_trace_callback(
        lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None))
    return commits


async def queued_behind_busy_thread(thread, calls):
    """Start the coroutines `calls` while the store's thread is busy, then let it go; gather their outcomes."""
    busy, release = threading.Event(), threading.Event()

    def hold(store):
        busy.set()
        release.wait(10)

    held = asyncio.create_task(thread.call(hold))
    await asyncio.get_running_loop().run_in_executor(None, busy.wait, 10)
    tasks = [asyncio.create_task(call) for call in calls]
    await asyncio.sleep(0)  # let each task queue its call
    release.set()
    await held
    return await asyncio.gather(*tasks, return_exceptions=True)


def remember(store, key, value):
    store.set_meta(**{key: value})
    return value


def remember_then_fail(store, key):
    with store.transaction():  # joins the group's transaction: the savepoint still undoes it
        store.set_meta(**{key: "never"})
        raise ValueError("this call fails")


async def test_calls_queued_together_share_one_commit(thread):
    commits = await count_commits(thread)
    outcomes = await queued_behind_busy_thread(
        thread, [thread.call_grouped(remember, f"k{n}", str(n)) for n in range(40)])
    assert outcomes == [str(n) for n in range(40)]
    assert len(commits) == 1
    assert stored_meta(thread) == {f"k{n}": str(n) for n in range(40)}


async def test_a_group_is_bounded(thread):
    commits = await count_commits(thread)
    outcomes = await queued_behind_busy_thread(
        thread, [thread.call_grouped(remember, f"k{n}", str(n)) for n in range(GROUP_LIMIT + 10)])
    assert outcomes == [str(n) for n in range(GROUP_LIMIT + 10)]
    assert len(commits) == 2


async def test_a_failing_call_is_undone_alone_and_raises_to_its_caller(thread):
    commits = await count_commits(thread)
    outcomes = await queued_behind_busy_thread(thread, [
        thread.call_grouped(remember_then_fail, "k4") if n == 4 else thread.call_grouped(remember, f"k{n}", str(n))
        for n in range(10)])
    assert isinstance(outcomes[4], ValueError)
    assert [o for n, o in enumerate(outcomes) if n != 4] == [str(n) for n in range(10) if n != 4]
    assert len(commits) == 1
    assert stored_meta(thread) == {f"k{n}": str(n) for n in range(10) if n != 4}


async def test_a_call_alone_in_its_group_that_fails_keeps_nothing_and_raises(thread):
    # Alone, it runs without a savepoint: what it wrote before failing goes with the transaction.
    statements: list[str] = []
    await thread.call(lambda store: store.db.conn.set_trace_callback(statements.append))
    with pytest.raises(ValueError, match="this call fails"):
        await thread.call_grouped(remember_then_fail, "alone")
    assert await thread.call_grouped(remember, "after", "1") == "1"
    assert stored_meta(thread) == {"after": "1"}
    assert not [sql for sql in statements if sql.startswith("SAVEPOINT")]


async def test_a_failed_commit_fails_every_call_of_its_group_and_keeps_nothing(thread):
    def orphan_feedback(store):
        # Checked only at COMMIT: a feedback row for no submission makes the whole group's commit fail.
        store.db.execute("PRAGMA defer_foreign_keys=ON")
        store.add_feedback("no-such-submission", fixed=True, rating=None, words="", channel="ussd")
        return "added"

    calls = [thread.call_grouped(remember, f"k{n}", str(n)) for n in range(5)]
    calls.append(thread.call_grouped(orphan_feedback))
    outcomes = await queued_behind_busy_thread(thread, calls)
    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes  # no result before the COMMIT
    assert stored_meta(thread) == {}
    assert durable(thread.store.path, "SELECT count(*) FROM feedback") == [(0,)]
    # The thread goes on: the next group commits.
    assert await thread.call_grouped(remember, "after", "1") == "1"
    assert stored_meta(thread) == {"after": "1"}


async def test_plain_calls_still_run_between_groups(thread):
    outcomes = await asyncio.gather(*[thread.call_grouped(remember, f"g{n}", str(n)) for n in range(20)],
                                    *[thread.call(remember, f"p{n}", str(n)) for n in range(20)])
    assert outcomes == [str(n) for n in range(20)] * 2
    assert len(stored_meta(thread)) == 40


async def test_64_sessions_at_once_each_confirm_one_stored_submission(gateway):
    commits = await count_commits(gateway.app[store_key])
    phones = [f"+62812000{n:05d}" for n in range(64)]

    async def walk(n, phone):
        history = []
        body = await gateway.hop(f"s{n}", "", phone=phone)
        for typed in REPORT:
            history.append(typed)
            body = await gateway.hop(f"s{n}", "*".join(history), phone=phone)
        return body

    ends = await asyncio.gather(*[walk(n, phone) for n, phone in enumerate(phones)])
    stored = dict(durable(gateway.config.data_dir / DATABASE_NAME, "SELECT ref, session_id FROM submissions"))
    assert len(stored) == 64
    refs = re.compile("|".join(map(re.escape, stored)))
    for n, end in enumerate(ends):
        assert end.startswith("END "), end
        confirmed = refs.findall(end)
        assert len(confirmed) == 1 and stored[confirmed[0]] == f"s{n}", end
    assert len(commits) < 64 * (len(REPORT) + 1)  # hops shared commits


async def test_groups_of_two_workers_that_deadlock_on_two_sessions_both_finish(tmp_path):
    """Two workers on one PostgreSQL store, each with a group holding copies of hops of the same two sessions, in
    the opposite order: the first hop of each group takes its session, the second waits for the other group's.
    PostgreSQL gives one of those two up (after `deadlock_timeout`); it runs again in its worker's next group,
    once the other group got its lock and committed. Every call answers, none with an error."""
    async with postgres_schemas("gateway") as (url,):
        threads = [await StoreThread.open(functools.partial(Store.open, database_url=url), tmp_path / name)
                   for name in ("a", "b")]
        took = {"s1": threading.Event(), "s2": threading.Event()}
        second_runs: list[str] = []

        def first(store, session_id, other):
            store.lock_session(session_id)
            took[session_id].set()
            took[other].wait(10)  # both groups hold their first session before either asks for its second
            return session_id

        def second(store, session_id):
            second_runs.append(session_id)
            store.lock_session(session_id)
            store.set_meta(**{f"second-{session_id}": "done"})
            return session_id

        try:
            outcomes = await asyncio.gather(
                queued_behind_busy_thread(threads[0], [threads[0].call_grouped(first, "s1", "s2"),
                                                       threads[0].call_grouped(second, "s2")]),
                queued_behind_busy_thread(threads[1], [threads[1].call_grouped(first, "s2", "s1"),
                                                       threads[1].call_grouped(second, "s1")]))
            assert outcomes == [["s1", "s2"], ["s2", "s1"]]
            # One of the two second hops ran twice: given up, then again in the next group; both are stored.
            assert sorted(second_runs) in (["s1", "s1", "s2"], ["s1", "s2", "s2"])
            assert await threads[0].call(lambda store: [store.meta("second-s1"), store.meta("second-s2")]) == [
                "done", "done"]
        finally:
            for thread in threads:
                thread.close()
