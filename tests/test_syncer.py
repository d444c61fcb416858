"""The sync worker: backs off while the link is down, stops fast retries when refused, and says why."""

import asyncio
import datetime as dt

import pytest

from conftest import PHONE, free_port, served
from flows import Engine
from gateway.config import data_root
from gateway.resources import Rules
from gateway.syncer import REFUSED_RETRY_SECONDS, Syncer, apply_updates
from gateway.turn import submit
from sync.central import CentralConfig, create_central_app
from sync.database import utc_now
from sync.errors import Refused
from sync.store import Store
from sync.thread import StoreThread


pytestmark = pytest.mark.backends

SECRET = "the-right-secret"
INTERVAL = 1.0
RULES = Rules(default_language="id", resume_window=dt.timedelta(minutes=5), ref_prefix="K",
              sms_ttl=dt.timedelta(hours=24), auto_reply_cap=5)


@pytest.fixture(scope="module")
def engine():
    return Engine.load(data_root() / "menus", data_root() / "locale", ["id", "en", "sw"], "id")


class Pacer:
    """Stands in for asyncio.sleep: records each delay the worker asks for and holds it there until released."""

    def __init__(self):
        self.asked = asyncio.Queue()
        self.go = asyncio.Queue()

    async def __call__(self, seconds):
        await self.asked.put(seconds)
        await self.go.get()

    async def next_delay(self, release_previous=True):
        if release_previous:
            self.go.put_nowait(None)
        return await asyncio.wait_for(self.asked.get(), 15)


def central(data_dir, engine, port):
    """The central backend on `port` for the block; it knows gateway desa-1 by SECRET."""
    config = CentralConfig(data_dir=data_dir, staff_token="staff", forms=engine.forms("en"),
                           gateways={"desa-1": SECRET}, prefixes={"desa-1": "K"})
    return served(create_central_app(config), port)


@pytest.fixture
async def store(tmp_path, engine, backend):
    thread = await StoreThread.open(Store.open, tmp_path / "gw", utc_now, backend.get("gateway__database_url", ""))
    report = {"service": "report", "language": "id", "unique": {},
              "answers": {"category": "road", "location": "Dusun Kidul", "description": "Jalan berlubang"}}
    await thread.call(lambda s: submit(s, engine, RULES, report, phone=PHONE, channel="ussd"))
    yield thread
    thread.close()


def syncer(store, engine, port, secret=SECRET):
    return Syncer(store, engine, RULES, url=f"http://127.0.0.1:{port}", gateway_id="desa-1", secret=secret,
                  batch_size=10, timeout=5)


async def sync_state(store):
    return (await store.call(lambda s: s.counts()))["sync"]


async def test_syncer_backs_off_while_down_and_catches_up(tmp_path, engine, store, caplog):
    port = free_port()
    pacer = Pacer()
    worker = asyncio.create_task(syncer(store, engine, port).run(INTERVAL, sleep=pacer))
    try:
        delays = [await pacer.next_delay(release_previous=False)]
        delays += [await pacer.next_delay() for _ in range(3)]
        for failures, delay in enumerate(delays, 1):  # doubling, with jitter: within [ceiling/2, ceiling]
            assert INTERVAL * 2 ** failures / 2 <= delay <= INTERVAL * 2 ** failures
        assert caplog.text.count("sync failed") == 4
        assert "central backend unreachable" in (await sync_state(store))["last_error"]
        async with central(tmp_path / "central", engine, port):
            assert await pacer.next_delay() == INTERVAL  # back to the normal pace once it worked
            state = await sync_state(store)
            assert (state["pending"], state["sent"], state["refused"]) == (0, 1, None)
    finally:
        worker.cancel()


async def test_syncer_refused_secret_stops_fast_retries_says_why_and_logs_once(tmp_path, engine, store, caplog):
    caplog.set_level("INFO", logger="gateway.syncer")
    port = free_port()
    pacer = Pacer()
    wrong = syncer(store, engine, port, secret="a-wrong-secret")
    async with central(tmp_path / "central", engine, port):
        worker = asyncio.create_task(wrong.run(INTERVAL, sleep=pacer))
        try:
            delays = [await pacer.next_delay(release_previous=False)]
            delays += [await pacer.next_delay() for _ in range(2)]
            assert delays == [REFUSED_RETRY_SECONDS] * 3
            state = await sync_state(store)
            assert state["refused"].startswith("central refuses this gateway's secret")
            assert state["pending"] == 1
            assert caplog.text.count("sync refused") == 1

            wrong.secret = SECRET  # an operator fixes sync.secret
            assert await pacer.next_delay() == INTERVAL
            state = await sync_state(store)
            assert (state["refused"], state["sent"]) == (None, 1)
            assert "sync works again" in caplog.text
        finally:
            worker.cancel()


async def test_syncer_unknown_gateway_is_refused_in_words(tmp_path, engine, store):
    port = free_port()
    stranger = syncer(store, engine, port)
    stranger.gateway_id = "desa-9"
    async with central(tmp_path / "central", engine, port):
        with pytest.raises(Refused) as caught:
            await stranger.round()
    assert caught.value.code == "wrong-secret"  # an unknown id is refused exactly as a wrong secret: ids stay secret
    assert (await sync_state(store))["refused"].startswith(
        "central refuses this gateway's secret, or does not know its id")


# -- two processes applying one page of updates at once (workers sharing one PostgreSQL store) --------------

@pytest.fixture
def two(tmp_path, database_url, engine):
    from test_store import Racing

    first = Store.open(tmp_path, database_url=database_url)
    other = Store.open(tmp_path, database_url=database_url)
    report = {"service": "report", "language": "id", "unique": {},
              "answers": {"category": "road", "location": "Dusun Kidul", "description": "Jalan berlubang"}}
    submit(first, engine, RULES, report, phone=PHONE, channel="ussd")
    yield Racing(first, other)
    other.close()
    first.close()


def test_two_syncing_processes_send_each_status_notice_once(two, engine):
    """The leader's timer round and a kiosk "Sync now" in another worker pull the same page at once: the
    villager gets one SMS per change, the history one line per change, and the status ends where central's did."""
    ref = two.first.recent_submissions(PHONE)[0]["ref"]
    page = [{"seq": 1, "ref": ref, "status": "in_progress", "note": "Tim berangkat"},
            {"seq": 2, "ref": ref, "status": "resolved", "note": "Sudah diperbaiki"}]
    done = []
    second = two.run(lambda s: done.append(apply_updates(s, engine, RULES, page)),
                     lambda s: apply_updates(s, engine, RULES, page))
    assert (done[0].updates, done[0].queued) == (2, 2)
    assert (second.updates, second.queued) == (0, 0)  # it saw the first one's cursor: both already applied
    notices = [m for m in two.other.outbox.messages(PHONE) if m["kind"] == "notice"]
    assert len(notices) == 2
    assert [h["status"] for h in two.other.history(ref)] == ["received", "in_progress", "resolved"]
    assert two.other.submission(ref)["status"] == "resolved"
    assert two.other.meta("sync_cursor") == "2"
