"""The outbox: operators list its newest rows, filtered and limited in SQL, and only those are opened; an SMS
being sent when the lead of the background duties moves is sent once, and one a dead process left is sent again."""

import asyncio
import datetime as dt

import pytest

from conftest import PHONE, MovableClock, eventually
from gateway.sender import RECOVER_EVERY, AfricasTalkingProvider, Sender, stale_after
from sync.outbox import RESENT
from sync.store import Store
from sync.thread import StoreThread

TTL = dt.timedelta(hours=24)


@pytest.fixture
def store(tmp_path, database_url):
    clock = MovableClock()
    store = Store.open(tmp_path, clock, database_url)
    for n in range(30):
        clock.advance(minutes=1)
        row = store.outbox.add(f"+62812345678{n:02d}", f"message {n}", "confirmation", ttl=TTL)
        if n % 10 == 0:
            store.outbox.give_up(row["id"], "406 UserInBlacklist")
    yield store
    store.close()


def test_outbox_latest_is_newest_first_and_limited(store):
    rows = store.outbox.latest(limit=3)
    assert [r["body"] for r in rows] == ["message 29", "message 28", "message 27"]
    assert rows[0]["phone"] == "+6281234567829" and "phone_hash" not in rows[0]


def test_outbox_latest_of_one_state(store):
    dead = store.outbox.latest("dead", limit=50)
    assert [(r["body"], r["reason"]) for r in dead] == [(f"message {n}", "406 UserInBlacklist") for n in (20, 10, 0)]


def test_outbox_latest_opens_only_the_rows_it_returns(store, monkeypatch):
    opened = []
    real = store.sealer.open
    monkeypatch.setattr(store.sealer, "open", lambda sealed: opened.append(sealed) or real(sealed))
    store.outbox.latest(limit=5)
    assert len(opened) == 5 * 2  # a phone and a body each


def test_outbox_latest_refuses_an_unknown_state(store):
    with pytest.raises(ValueError, match="unknown outbox state 'lost'"):
        store.outbox.latest("lost")


def test_outbox_purge_deletes_only_final_rows_past_the_age(tmp_path, database_url):
    clock = MovableClock()
    store = Store.open(tmp_path, clock, database_url)
    try:
        dead = store.outbox.add("+6281234567801", "old and dead", "confirmation", ttl=TTL)
        store.outbox.give_up(dead["id"], "406 UserInBlacklist")
        store.outbox.add("+6281234567802", "old and still waiting", "confirmation", ttl=TTL)
        clock.advance(days=31)
        fresh = store.outbox.add("+6281234567803", "new and dead", "confirmation", ttl=TTL)
        store.outbox.give_up(fresh["id"], "406 UserInBlacklist")
        assert store.outbox.purge(dt.timedelta(days=30)) == 1
        assert sorted(row["body"] for row in store.outbox.messages()) == ["new and dead", "old and still waiting"]
    finally:
        store.close()


def test_outbox_recover_queues_again_only_rows_sending_longer_than_asked(tmp_path, database_url):
    clock = MovableClock()
    store = Store.open(tmp_path, clock, database_url)
    try:
        old = store.outbox.add("+6281234567801", "left by a dead process", "confirmation", ttl=TTL)
        young = store.outbox.add("+6281234567802", "still in the provider's hands", "confirmation", ttl=TTL)
        store.outbox.begin(old["id"])
        clock.advance(minutes=2)
        store.outbox.begin(young["id"])
        assert store.outbox.recover(dt.timedelta(minutes=1)) == 1
        rows = {row["body"]: (row["state"], row["reason"]) for row in store.outbox.messages()}
        assert rows == {"left by a dead process": ("queued", RESENT), "still in the provider's hands": ("sending", None)}
        assert store.outbox.recover() == 1  # a lone process just started: every row left `sending`
    finally:
        store.close()


# -- the lead of the background duties moves while an SMS is in the provider's hands -----------------------

TIMEOUT = 10.0
OTHER = "+254711082300"


@pytest.fixture
async def leaders(tmp_path, database_url, standin):
    """Two processes' store threads on one store (one clock) and a sender for each, as `serve` makes them on a
    shared store; the test runs and stops them (stopping a sender's task is how `Duties` steps down)."""
    clock = MovableClock()
    threads = [await StoreThread.open(Store.open, tmp_path, clock, database_url) for _ in range(2)]
    senders = [Sender(thread, AfricasTalkingProvider(standin.username, standin.api_key, api_url=standin.url,
                                                     timeout=(3.05, TIMEOUT)),
                      max_attempts=5, retry_seconds=0.05, idle_seconds=0.05, stale=stale_after(TIMEOUT), shared=True)
               for thread in threads]
    tasks = []
    yield clock, threads, senders, tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    standin.release()
    for sender in senders:
        sender.close()
    for thread in threads:
        thread.close()


async def queue(thread, phone, body):
    return (await thread.call(lambda s: s.outbox.add(phone, body, "confirmation", ttl=TTL)))["id"]


async def row(thread, message_id):
    return next(r for r in await thread.call(lambda s: s.outbox.messages()) if r["id"] == message_id)


async def test_sms_in_flight_when_the_lead_moves_is_sent_once(leaders, standin):
    clock, (old_store, new_store), (old, new), tasks = leaders
    standin.plan = ["slow"]  # taken at once, its answer held: the old leader waits on Africa's Talking
    message_id = await queue(old_store, PHONE, "Laporan diterima")
    tasks.append(asyncio.create_task(old.run()))
    await eventually(lambda: standin.holding == 1)
    tasks[0].cancel()  # its lock check timed out: it stepped down, its call goes on in its thread
    tasks.append(asyncio.create_task(new.run()))

    await queue(new_store, OTHER, "penanda 1")  # the new leader sends, but leaves the one in flight alone
    await eventually(lambda: standin.bodies(OTHER) == ["penanda 1"])
    assert (await row(new_store, message_id))["state"] == "sending"
    standin.release()  # the old leader's answer comes: it records it, though it leads no more
    await eventually(lambda: _state_is(new_store, message_id, "sent"))

    clock.advance(seconds=(stale_after(TIMEOUT) + RECOVER_EVERY).total_seconds())
    await queue(new_store, OTHER, "penanda 2")  # a round of the new leader past its look for rows left behind
    await eventually(lambda: standin.bodies(OTHER) == ["penanda 1", "penanda 2"])
    assert standin.bodies(PHONE) == ["Laporan diterima"]
    sent = await row(new_store, message_id)
    assert (sent["state"], sent["attempts"], sent["reason"]) == ("sent", 1, None)


async def test_sms_left_sending_by_a_dead_process_is_sent_again_later(leaders, standin):
    clock, (dead_store, store), (_, sender), tasks = leaders
    message_id = await queue(dead_store, PHONE, "Laporan diterima")
    await dead_store.call(lambda s: s.outbox.begin(message_id))  # claimed, then the process died
    tasks.append(asyncio.create_task(sender.run()))
    await queue(store, OTHER, "penanda")
    await eventually(lambda: standin.bodies(OTHER) == ["penanda"])
    assert standin.bodies(PHONE) == []  # too young to tell from one still in the provider's hands

    clock.advance(seconds=(stale_after(TIMEOUT) + RECOVER_EVERY).total_seconds())
    await eventually(lambda: standin.bodies(PHONE) == ["Laporan diterima"])
    await eventually(lambda: _state_is(store, message_id, "sent"))
    resent = await row(store, message_id)
    assert (resent["attempts"], resent["reason"]) == (2, RESENT)  # an operator can tell it may be a duplicate


async def _state_is(thread, message_id, state):
    return (await row(thread, message_id))["state"] == state
