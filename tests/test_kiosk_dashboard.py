"""The operator's dashboard at /kiosk: counts, masked numbers, Sync now (one round at a time), batch files, Retry.

A real gateway on a loopback port, a real central backend where sync is involved (its pulls counted, and held
at a gate when a test needs a round to stay in flight), accounts made through the store, and a browser played
by an aiohttp client with its own cookie jar.
"""

import asyncio
import datetime as dt
import json
import re

import aiohttp
import pytest

from conftest import PHONE, Gateway, eventually, free_port, make_config, served
from gateway.resources import engine_key, rules_key, store_key
from gateway.turn import submit
from sync import batchfile
from sync.accounts import ROLES
from sync.central import CentralConfig, create_central_app
from sync.protocol import UPDATES_PATH
from test_signin import FIELD, PASSWORD, Browser
from test_sync import STAFF, forms


pytestmark = pytest.mark.backends

SECRET = "dashboard-sync-secret"
GATEWAY_ID = "desa-9"
REPORT = {"service": "report", "language": "id", "unique": {},
          "answers": {"category": "road", "location": "Dusun Kidul", "description": "Jalan berlubang"}}
MASKED = "+62812****890"
BATCH_NAME = re.compile(r'attachment; filename="kentongan-desa-9-\d{8}-\d{6}\.batch"')


def sync_config(tmp_path, central_port, backend):
    return make_config(tmp_path / "var", gateway__id=GATEWAY_ID, sync__secret=SECRET, sync__interval_seconds=3600,
                       central__url=f"http://127.0.0.1:{central_port}", **backend)


async def start(config, *accounts):
    gateway = await Gateway(config).start()
    for name, role in accounts:
        await gateway.app[store_key].call(lambda s: s.accounts.add(name, role, PASSWORD))
    return gateway


async def signed_in(gateway, name="ani"):
    browser = Browser(gateway.url, "/kiosk")
    status, _, _ = await browser.sign_in(name)
    assert status == 303
    await browser.get("/kiosk?lang=en")
    return browser


async def csrf(browser):
    return FIELD.search((await browser.get("/kiosk"))[1]).group(1)


def submitted(store, engine, rules, phone=PHONE):
    return submit(store, engine, rules, REPORT, phone=phone, channel="ussd")


def dead_sms(store, phone=PHONE, reason="InvalidPhoneNumber"):
    """An SMS the sender gave up on (added and given up in one call: the sender cannot claim it between)."""
    with store.transaction():
        row = store.outbox.add(phone, "Laporan K7M2QX diterima", "confirmation", ttl=dt.timedelta(hours=1))
        store.outbox.give_up(row["id"], reason)
    return row["id"]


async def on_store(gateway, fn, *args):
    return await gateway.app[store_key].call(fn, *args)


async def add_submission(gateway, phone=PHONE):
    return await on_store(gateway, submitted, gateway.app[engine_key], gateway.app[rules_key], phone)


class CountingCentral:
    """A real central backend that knows the gateway; counts its update pulls (one per round), and holds them
    while `gate` is clear."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.app = create_central_app(CentralConfig(tmp_path / "central", STAFF, forms(),
                                                    gateways={GATEWAY_ID: SECRET}, prefixes={GATEWAY_ID: "K"}))
        self.pulls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.app.on_response_prepare.append(self._prepared)

    async def _prepared(self, request, response):
        if request.path == UPDATES_PATH:
            self.pulls += 1
            await self.gate.wait()

    def served(self):
        return served(self.app, self.port)


@pytest.fixture
async def central(tmp_path):
    central = CountingCentral(tmp_path)
    async with central.served():
        yield central


@pytest.fixture
async def synced(tmp_path, central, backend):
    """A gateway with sync on, against `central`, its first round (at start) over; ani is its operator."""
    gateway = await start(sync_config(tmp_path, central.port, backend), ("ani", "operator"))
    await eventually(lambda: on_store(gateway, lambda s: s.meta("sync_last_success")))
    browser = await signed_in(gateway)
    yield gateway, browser
    await browser.close()
    await gateway.stop()


@pytest.fixture
async def offline(tmp_path, backend):
    """A gateway with sync on and no central backend to reach; ani is its operator."""
    gateway = await start(sync_config(tmp_path, free_port(), backend), ("ani", "operator"))
    browser = await signed_in(gateway)
    yield gateway, browser
    await browser.close()
    await gateway.stop()


async def test_dashboard_shows_counts_refusals_and_only_masked_numbers(offline):
    gateway, browser = offline
    kept = await add_submission(gateway)
    refused = await add_submission(gateway, phone="+6281299990001")
    await on_store(gateway, lambda s: s.mark_synced([{"id": s.submission(refused["ref"])["id"], "result": "rejected",
                                                      "reason": "unknown service 'report'"}]))
    await on_store(gateway, dead_sms)
    status, body, _ = await browser.get("/kiosk")
    assert status == 200
    assert re.search(r"Waiting to sync</th><td class=\"number\">1<", body)
    assert re.search(r"Refused by the central office</th><td class=\"number\">1<", body)
    assert refused["ref"] in body and "unknown service &#39;report&#39;" in body
    assert MASKED in body and "InvalidPhoneNumber" in body
    assert PHONE not in body and "+6281299990001" not in body and kept["ref"] not in body
    assert 'action="/kiosk/outbox/retry"' in body and "Given up (dead)" in body


async def test_dashboard_retry_queues_a_dead_sms_again_and_the_sender_sends_it(offline):
    gateway, browser = offline
    message_id = await on_store(gateway, dead_sms)
    token = await csrf(browser)
    status, body, _ = await browser.post("/kiosk/outbox/retry", {"csrf": token, "id": message_id})
    assert status == 200 and "queued again" in body

    async def sent():
        rows = await on_store(gateway, lambda s: s.outbox.latest(None, 50))
        return next(row["state"] for row in rows if row["id"] == message_id) == "sent"

    await eventually(sent)
    status, body, _ = await browser.post("/kiosk/outbox/retry", {"csrf": token, "id": message_id})
    assert status == 409 and "nothing to retry" in body
    status, _, _ = await browser.post("/kiosk/outbox/retry", {"csrf": token, "id": "not-an-id"})
    assert status == 409
    audit = await on_store(gateway, lambda s: s.accounts.audit_log())
    assert [(row["action"], row["target"]) for row in audit if row["action"] == "sms-retry"] == [("sms-retry",
                                                                                                  message_id)]


def multipart(token, name, data, csrf_first=True):
    form = aiohttp.FormData()
    if csrf_first and token is not None:
        form.add_field("csrf", token)
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    if not csrf_first and token is not None:
        form.add_field("csrf", token)
    return form


async def test_dashboard_bad_answer_files_are_refused_with_the_cli_line_and_change_nothing(offline, tmp_path):
    gateway, browser = offline
    sub = await add_submission(gateway)
    token = await csrf(browser)
    other = tmp_path / "other.batch"
    batchfile.write(other, "updates", "desa-2", SECRET, {"acks": [], "updates": []})
    whole = (tmp_path / "answer.batch")
    batchfile.write(whole, "updates", GATEWAY_ID, SECRET, {"acks": ["x"], "updates": []})
    cases = [("notes.txt", b"hello, not a batch file", "notes.txt is truncated or not a Kentongan batch file"),
             ("cut.batch", whole.read_bytes()[:40], "cut.batch is truncated or not a Kentongan batch file"),
             ("other.batch", other.read_bytes(), "other.batch belongs to gateway &#39;desa-2&#39;, not &#39;desa-9&#39;")]
    before = await on_store(gateway, lambda s: s.counts())
    for name, data, line in cases:
        status, body, _ = await browser.post("/kiosk/answer", multipart(token, name, data))
        assert status == 400, name
        assert f"The file was refused; nothing changed: {line}" in body
        assert str(tmp_path) not in body
    status, body, _ = await browser.post("/kiosk/answer", multipart(token, "big.batch", b"\0" * (5 * 1024 * 1024)))
    assert status == 413 and "larger than 4 MB" in body
    status, body, _ = await browser.post("/kiosk/answer", multipart(token, "", b""))
    assert status == 400 and "Choose the central office" in body
    assert await on_store(gateway, lambda s: s.counts()) == before
    answer = tmp_path / "good.batch"
    batchfile.write(answer, "updates", GATEWAY_ID, SECRET,
                    {"acks": [await on_store(gateway, lambda s: s.submission(sub["ref"])["id"])], "updates": []})
    status, body, _ = await browser.post("/kiosk/answer", multipart(token, "good.batch", answer.read_bytes()))
    assert status == 200 and "1 submissions acknowledged, 0 status updates applied" in body
    assert (await on_store(gateway, lambda s: s.counts()))["sync"]["pending"] == 0


async def test_dashboard_download_is_the_cli_export(offline, tmp_path):
    gateway, browser = offline
    sub = await add_submission(gateway)
    async with browser.http.get(gateway.url + "/kiosk/batch", allow_redirects=False) as response:
        assert response.status == 200
        assert BATCH_NAME.fullmatch(response.headers["Content-Disposition"])
        data = await response.read()
    path = tmp_path / "downloaded.batch"
    path.write_bytes(data)
    items = batchfile.read(path, "submissions", GATEWAY_ID, SECRET)["items"]
    assert [item["ref"] for item in items] == [sub["ref"]]
    assert (await on_store(gateway, lambda s: s.counts()))["sync"]["pending"] == 1  # pending until the answer


async def test_dashboard_double_sync_starts_one_round_and_streams_its_progress(synced, central):
    gateway, browser = synced
    await add_submission(gateway)
    token = await csrf(browser)
    central.pulls, central.gate = 0, asyncio.Event()
    headers = {"Accept": "application/json"}
    status, body, _ = await browser.post("/kiosk/sync", {"csrf": token}, headers=headers)
    assert status == 202 and json.loads(body) == {"started": True}
    await eventually(lambda: central.pulls == 1)  # the round is in flight, held at the central backend
    status, body, _ = await browser.post("/kiosk/sync", {"csrf": token}, headers=headers)
    assert status == 202 and json.loads(body) == {"started": False}
    async with browser.http.get(gateway.url + "/kiosk/sync/events") as events:
        assert events.headers["Content-Type"].startswith("text/event-stream")
        first = json.loads((await events.content.readuntil(b"\n\n"))[len(b"data: "):])
        assert first["done"] is False and first["value"] == 1 and first["max"] == 1
        central.gate.set()
        while not (view := json.loads((await events.content.readuntil(b"\n\n"))[len(b"data: "):]))["done"]:
            pass
    assert view["failed"] is False
    assert view["text"].startswith("Sync finished: 1 submissions sent (1 accepted")
    assert central.pulls == 1
    audit = await on_store(gateway, lambda s: s.accounts.audit_log())
    assert [row["action"] for row in audit].count("sync") == 1
    status, _, headers = await browser.post("/kiosk/sync", {"csrf": token})  # without the script
    assert status == 303 and headers["Location"] == "/kiosk#sync"
    assert central.pulls == 2
    status, body, _ = await browser.get("/kiosk")
    assert "Sync finished: 0 submissions sent" in body and 'data-running="0"' in body


async def test_dashboard_sync_failure_shows_the_error_line(offline):
    gateway, browser = offline
    status, _, _ = await browser.post("/kiosk/sync", {"csrf": await csrf(browser)})
    assert status == 303
    status, body, _ = await browser.get("/kiosk")
    assert "The sync round stopped:" in body and "Last error" in body


async def test_dashboard_posts_need_act_and_csrf(offline, monkeypatch):
    gateway, browser = offline
    message_id = await on_store(gateway, dead_sms)
    for path, data in (("/kiosk/sync", {}), ("/kiosk/outbox/retry", {"id": message_id})):
        status, body, _ = await browser.post(path, data)
        assert status == 403, path
        status, body, _ = await browser.post(path, {**data, "csrf": "wrong"})
        assert status == 403, path
    status, _, _ = await browser.post("/kiosk/answer", multipart(None, "a.batch", b"x"))
    assert status == 403
    status, _, _ = await browser.post("/kiosk/answer", multipart(await csrf(browser), "a.batch", b"x",
                                                                 csrf_first=False))
    assert status == 403
    monkeypatch.setitem(ROLES["gateway"], "watcher", frozenset({"read"}))
    await on_store(gateway, lambda s: s.accounts.add("wati", "watcher", PASSWORD))
    watcher = await signed_in(gateway, "wati")
    try:
        token = await csrf(watcher)
        status, body, _ = await watcher.get("/kiosk")
        assert status == 200 and "/kiosk/outbox/retry" not in body and "/kiosk/batch" not in body
        for path, data in (("/kiosk/sync", {"csrf": token}), ("/kiosk/outbox/retry", {"csrf": token, "id": message_id})):
            assert (await watcher.post(path, data))[0] == 403, path
        assert (await watcher.post("/kiosk/answer", multipart(token, "a.batch", b"x")))[0] == 403
        assert (await watcher.get("/kiosk/batch"))[0] == 403
    finally:
        await watcher.close()
    assert (await on_store(gateway, lambda s: s.outbox.latest("dead")))[0]["id"] == message_id
    stranger = Browser(gateway.url, "/kiosk")
    try:
        for path in ("/kiosk", "/kiosk/batch", "/kiosk/sync/events"):
            status, _, headers = await stranger.get(path)
            assert status == 303 and headers["Location"].startswith("/kiosk/login"), path
        assert (await stranger.post("/kiosk/answer", multipart("x", "a.batch", b"x")))[0] == 303
    finally:
        await stranger.close()


async def test_dashboard_without_sync_secret_says_so(tmp_path, backend):
    gateway = await start(make_config(tmp_path / "var", **backend), ("ani", "operator"))
    browser = await signed_in(gateway)
    try:
        status, body, _ = await browser.get("/kiosk")
        assert status == 200 and "sync.secret is not set" in body and 'id="sync-form"' not in body
        status, body, _ = await browser.get("/kiosk/batch")
        assert status == 409 and "sync.secret is not set" in body
    finally:
        await browser.close()
        await gateway.stop()
