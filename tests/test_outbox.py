"""The outbox: operators list its newest rows, filtered and limited in SQL, and only those are opened."""

import datetime as dt

import pytest

from conftest import MovableClock
from sync.store import Store

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
