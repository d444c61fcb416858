"""Sync between a gateway and a real central backend on loopback ports."""

import asyncio
import datetime as dt
import functools
import gzip
import json
import re
import time

import aiohttp
import pytest
from aiohttp import web

from conftest import PHONE, Gateway, MovableClock, eventually, free_port, make_config, query_plan, served, sms_config
from flows import Engine
from gateway.config import data_root
from gateway.resources import store_key, syncer_key
from sync.central import CentralConfig, CentralStore, create_central_app
from sync.central.store import MIGRATIONS
from sync.client import SyncClient
from sync.errors import LinkError, Refused
from sync.protocol import BATCH_PATH, REFUSAL, REFUSALS, sign_request

pytestmark = pytest.mark.central_backends

SECRET = "s3cret-for-tests"
STAFF = "staff-token"


@functools.cache
def forms():
    """The forms of the shipped menus, in English, as the gateway hands them to the central backend."""
    root = data_root()
    return Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id").forms("en")


class Central:
    """The central backend as its own server on a loopback port, reading `clock` as now."""

    def __init__(self, data_dir, port=None, fault=None, clock=None, url=""):
        self.data_dir = data_dir
        self.database_url = url  # "" for SQLite in data_dir
        self.port = port or free_port()
        self.runner = None
        self.fault = fault  # None, or a middleware that misbehaves around the real handler
        self.clock = clock or MovableClock()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    async def start(self):
        app = create_central_app(CentralConfig(self.data_dir, STAFF, forms(), gateways={"desa-1": SECRET},
                                               prefixes={"desa-1": "K"}, clock=self.clock,
                                               database_url=self.database_url))
        if self.fault:
            app.middlewares.append(self.fault)
        # A handler whose client went away is cancelled: a fault can wait for that instead of sleeping.
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self):
        await self.runner.cleanup()

    async def staff(self, method, path, **kwargs):
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.url + path, headers={"Authorization": f"Bearer {STAFF}"},
                                    **kwargs) as response:
                return response.status, await response.json() if response.content_type == "application/json" \
                    else await response.text()


def sync_settings(central_url):
    return dict(gateway__id="desa-1", sync__secret=SECRET, central__url=central_url,
                sync__interval_seconds=3600, sync__timeout_seconds=2)


def make_sync_config(data_dir, central_url, **extra):
    return make_config(data_dir, **{**sync_settings(central_url), **extra})


async def report(gateway, session, phone=PHONE):
    end = (await gateway.dial(session, "1", "1", "Dusun Kidul", "Jalan berlubang", "1", phone=phone))[-1]
    return re.search(r"Kode: (\w+)\.", end).group(1)


async def sync_state(gateway):
    return await gateway.app[store_key].call(lambda s: s.counts()["sync"])


async def central_count(central):
    status, body = await central.staff("GET", "/api/v1/submissions?limit=1000")
    return len(body["submissions"])


def item(n, **fields):
    """A submission as a gateway sends it, number `n`."""
    return {"id": f"01KB{n:022d}", "ref": "K" + "".join("23456789ABCDEFGH"[int(d)] for d in f"{n:05d}"),
            "service": "report", "channel": "ussd", "answers": {"category": "road", "location": f"Dusun {n}",
                                                                 "description": "Rusak"},
            "phone": PHONE, "language": "id", "created_at": "2026-11-28T10:00:00+00:00", **fields}


def batch(items, gateway="desa-1"):
    return gzip.compress(json.dumps({"gateway": gateway, "items": items}).encode())


async def signed_post(central, body, gateway="desa-1", secret=SECRET, **sign):
    headers = sign_request(gateway, secret, "POST", BATCH_PATH, body, **sign)
    async with aiohttp.ClientSession() as http:
        async with http.post(central.url + BATCH_PATH, data=body, headers=headers) as response:
            return response.status, await response.text(), headers


async def test_sync_end_to_end_offline_then_resolved(tmp_path, standin, central_db):
    central = Central(tmp_path / "central", url=central_db)
    gw = await Gateway(sms_config(tmp_path / "gw", standin, **sync_settings(central.url))).start()
    try:
        ref = await report(gw, "s1")
        syncer = gw.app[syncer_key]
        with pytest.raises(LinkError, match="unreachable"):
            await syncer.round()
        assert (await sync_state(gw))["pending"] == 1
        await central.start()
        summary = await syncer.round()
        assert (summary.pushed, summary.accepted) == (1, 1)
        assert (await sync_state(gw))["pending"] == 0
        status, body = await central.staff("PATCH", f"/api/v1/submissions/{ref}",
                                           json={"status": "resolved", "note": "Sudah ditambal."})
        assert status == 200 and body["status"] == "resolved"
        summary = await syncer.round()
        assert (summary.updates, summary.notices) == (1, 1)
        again = await syncer.round()
        assert (again.updates, again.notices) == (0, 0)
        status_sms = {"from": PHONE, "to": "21525", "text": f"STATUS {ref}", "id": "in-1", "date": "",
                      "linkId": "", "networkCode": "51010"}
        assert (await gw.post("/sms/africastalking/inbound", status_sms))[0] == 200
        await eventually(lambda: any("Resolved" in b for b in standin.bodies(PHONE)))
        notices = [b for b in standin.bodies(PHONE) if "kini Selesai" in b]
        assert notices == [f"Kentongan: {ref} Laporan masalah kini Selesai. Sudah beres? Balas 1 ya atau 2 belum, "
                           f"dan nilai 1-5 (mis. 1 5). Sudah ditambal."]
        answers = [b for b in standin.bodies(PHONE) if b.startswith(f"Kentongan: {ref} Problem report")]
        assert len(answers) == 1 and answers[0].startswith(f"Kentongan: {ref} Problem report: Resolved (")
        assert answers[0].endswith("\nNote: Sudah ditambal.")  # the staff's note, in the answer to STATUS
    finally:
        await gw.stop()
        await central.stop()


def fault(kind, times=1):
    """A middleware that misbehaves on the next `times` batch requests, then lets them through."""
    left = {"n": times}

    @web.middleware
    async def misbehave(request, handler):
        if request.path != BATCH_PATH or left["n"] == 0:
            return await handler(request)
        left["n"] -= 1
        if kind == "500":
            return web.Response(status=500, text="Internal Server Error")
        if kind == "portal":
            return web.Response(text="<html>Welcome to the village wifi</html>", content_type="text/html")
        if kind == "unsigned-json":
            return web.json_response({"results": [{"id": "x", "result": "accepted"}]})
        response = await handler(request)  # the central backend commits...
        if kind == "slow":
            # ...and would answer only after the gateway gave up: held until the gateway's timeout closes
            # the connection, which cancels this handler.
            await asyncio.Event().wait()
        if kind == "cut":
            request.transport.close()  # ...and the link drops before the answer
            return response
        raise AssertionError(kind)

    return misbehave


@pytest.mark.parametrize("kind", ["500", "portal", "unsigned-json", "slow", "cut"])
async def test_sync_faults_never_mark_and_never_duplicate(tmp_path, kind, central_db):
    central = await Central(tmp_path / "central", url=central_db, fault=fault(kind)).start()
    gw = await Gateway(make_sync_config(tmp_path / "gw", central.url)).start()
    try:
        refs = [await report(gw, f"s{n}", phone=f"+6281234567{n}0") for n in range(3)]
        with pytest.raises(LinkError):
            await gw.app[syncer_key].round()
        assert (await sync_state(gw))["pending"] == 3
        summary = await gw.app[syncer_key].round()
        committed_before = kind in ("slow", "cut")
        assert (summary.accepted, summary.duplicate) == ((0, 3) if committed_before else (3, 0))
        assert (await sync_state(gw))["pending"] == 0
        listed = (await central.staff("GET", "/api/v1/submissions"))[1]["submissions"]
        assert sorted(r["ref"] for r in listed) == sorted(refs)
    finally:
        await gw.stop()
        await central.stop()


async def test_sync_central_refuses_unsigned_wrong_stale_and_replayed(tmp_path, central_db):
    central = await Central(tmp_path / "central", url=central_db).start()
    body = batch([])

    async def refused(data, headers=None):
        async with aiohttp.ClientSession() as http:
            async with http.post(central.url + BATCH_PATH, data=data, headers=headers or {}) as response:
                return response.status, response.headers.get(REFUSAL), await response.text()

    try:
        assert await refused(body) == (401, "wrong-secret", "unsigned request")
        stranger = sign_request("desa-9", SECRET, "POST", BATCH_PATH, body)
        assert await refused(body, stranger) == (401, "wrong-secret", "wrong signature")
        bad = sign_request("desa-1", "wrong-secret", "POST", BATCH_PATH, body)
        assert await refused(body, bad) == (401, "wrong-secret", "wrong signature")
        assert await refused(body, {"X-Kentongan-Gateway": "desa-1"}) == (401, "wrong-secret", "unsigned request")
        stale = sign_request("desa-1", SECRET, "POST", BATCH_PATH, body, now=time.time() - 301)
        status, code, text = await refused(body, stale)
        assert (status, code) == (401, "clock-skew") and text.startswith("stale request")
        status, text, headers = await signed_post(central, body)
        assert status == 200
        assert await refused(body, headers) == (401, "replayed", "replayed request")
        tampered = batch([{"id": "x"}])
        fresh = sign_request("desa-1", SECRET, "POST", BATCH_PATH, body)
        assert await refused(tampered, fresh) == (401, "wrong-secret", "wrong signature")
        garbage = b"not gzip at all"
        status, code, text = await refused(garbage, sign_request("desa-1", SECRET, "POST", BATCH_PATH, garbage))
        assert (status, code) == (400, "bad-batch") and text.startswith("not a gzip'd JSON batch")
        foreign = batch([], gateway="desa-2")
        status, code, text = await refused(foreign, sign_request("desa-1", SECRET, "POST", BATCH_PATH, foreign))
        assert (status, code, text) == (400, "bad-batch", "batch names another gateway")
    finally:
        await central.stop()


async def test_sync_client_raises_refused_for_what_a_person_must_fix(tmp_path, central_db):
    central = await Central(tmp_path / "central", url=central_db).start()
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(Refused) as caught:
                await SyncClient(central.url, "desa-9", SECRET, http).push([item(1)])
            assert caught.value.code == "wrong-secret"
            assert str(caught.value) == f"{REFUSALS['wrong-secret']} (wrong signature)"
            with pytest.raises(Refused) as caught:
                await SyncClient(central.url, "desa-1", "not-the-secret", http).pull(0)
            assert caught.value.code == "wrong-secret" and str(caught.value).startswith(REFUSALS["wrong-secret"])
            pushed = await SyncClient(central.url, "desa-1", SECRET, http).push([item(1)])
            assert [r["result"] for r in pushed.results] == ["accepted"]
    finally:
        await central.stop()


@pytest.mark.parametrize("status, headers, text, error, code", [
    (401, {REFUSAL: "unknown-gateway"}, "unknown or missing gateway", Refused, "unknown-gateway"),
    (401, {REFUSAL: "wrong-secret"}, "wrong signature", Refused, "wrong-secret"),
    (401, {REFUSAL: "clock-skew"}, "stale request", Refused, "clock-skew"),
    (400, {REFUSAL: "bad-batch"}, "not a gzip'd JSON batch", Refused, "bad-batch"),
    (401, {REFUSAL: "replayed"}, "replayed request", LinkError, None),  # a fresh nonce heals it
    (401, {}, "Unauthorized", LinkError, None),  # a proxy's, not the central backend's
    (403, {}, "<html>Forbidden</html>", LinkError, None),
    (502, {REFUSAL: "wrong-secret"}, "Bad Gateway", LinkError, None),  # a refusal is a 4xx
])
async def test_sync_client_tells_refusals_from_link_trouble(status, headers, text, error, code):
    async def answer(request):
        return web.Response(status=status, text=text, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with served(app) as url, aiohttp.ClientSession() as http:
        client = SyncClient(url, "desa-1", SECRET, http)
        for call in (lambda: client.push([item(1)]), lambda: client.pull(0)):
            with pytest.raises(error) as caught:
                await call()
            assert type(caught.value) is error and text in str(caught.value)
            if code:
                assert caught.value.code == code and str(caught.value).startswith(REFUSALS[code])


async def test_sync_central_rejects_bad_items_with_reasons(tmp_path, central_db):
    central = await Central(tmp_path / "central", url=central_db).start()
    good = {"id": "01KB0000000000000000000000", "ref": "KABCDE", "service": "report", "channel": "ussd",
            "answers": {"location": "Sukamaju"}, "phone": PHONE, "language": "id",
            "created_at": "2026-11-28T10:00:00+00:00"}
    items = [good, good, {**good, "id": "nope"}, {**good, "id": "01KB0000000000000000000001"},
             {k: v for k, v in good.items() if k != "phone"} | {"id": "01KB0000000000000000000002"},
             {**good, "id": "01KB0000000000000000000003", "ref": "KABCDF", "created_at": "last tuesday"},
             {**good, "id": "01KB0000000000000000000004", "ref": "KABCDG", "created_at": "0001-01-01T00:00:00+01:00"},
             {**good, "id": "01KB0000000000000000000005", "ref": "ZABCDE"},  # the centre's prefix
             {**good, "id": "01KB0000000000000000000006", "ref": "K2ABCDE"}]  # another gateway's
    try:
        status, text, _ = await signed_post(central, batch(items))
        assert status == 200
        assert [(r["result"], r.get("reason")) for r in json.loads(text)["results"]] == [
            ("accepted", None), ("duplicate", None), ("rejected", "id must be a ULID"),
            ("rejected", "reference already in use"), ("rejected", "missing phone"),
            ("rejected", "created_at must be an ISO 8601 time"), ("rejected", "created_at must be an ISO 8601 time"),
            ("rejected", "reference ZABCDE does not carry this gateway's prefix K"),
            ("rejected", "reference K2ABCDE does not carry this gateway's prefix K")]
    finally:
        await central.stop()


async def test_sync_a_batch_sent_four_times_at_once_stores_each_submission_once(tmp_path, central_db):
    """A batch and its retries arriving together (the link dropped the answers) store every item once, whichever
    is stored first; in one batch, a NIK that an earlier item holds sends the later one to review, as if the two
    had come one by one."""
    central = await Central(tmp_path / "central", url=central_db).start()
    voter = {"nik": "3201231708900001", "name": "Siti Aminah", "birth_date": "17081990", "village": "Sukamaju"}
    items = [item(n) for n in range(40)] + [item(n, service="voter", answers=voter) for n in (40, 41)]
    body = batch(items)
    try:
        answers = await asyncio.gather(*[signed_post(central, body) for _ in range(4)])
        assert [status for status, _, _ in answers] == [200] * 4
        results = sorted([r["result"] for r in json.loads(text)["results"]] for _, text, _ in answers)
        assert results == [["accepted"] * 42] + [["duplicate"] * 42] * 3
        assert await central_count(central) == 42
        _, held = await central.staff("GET", "/api/v1/submissions?status=review")
        assert [row["ref"] for row in held["submissions"]] == [items[41]["ref"]]
        _, text, _ = await signed_post(central, body)  # later, freshly signed: still nothing new
        assert {r["result"] for r in json.loads(text)["results"]} == {"duplicate"}
        assert await central_count(central) == 42
    finally:
        await central.stop()


async def test_sync_rejected_items_are_kept_aside_not_resent(tmp_path, central_db):
    central = await Central(tmp_path / "central", url=central_db).start()
    gw = await Gateway(make_sync_config(tmp_path / "gw", central.url)).start()
    try:
        # A row the central backend cannot take (as an older gateway version might have stored it).
        bad = {"service": "report", "ref": "bad ref", "language": "id", "unique": {}, "answers": {}}
        await gw.app[store_key].call(lambda s: s.add_submission(bad, phone=PHONE, channel="ussd"))
        summary = await gw.app[syncer_key].round()
        assert summary.rejected == 1
        assert (await sync_state(gw))["rejected"] == 1
        assert (await gw.app[syncer_key].round()).pushed == 0
    finally:
        await gw.stop()
        await central.stop()


async def test_sync_staff_api_filters_and_refuses(tmp_path, central_db):
    central = await Central(tmp_path / "central", url=central_db).start()
    gw = await Gateway(make_sync_config(tmp_path / "gw", central.url)).start()
    try:
        ref = await report(gw, "s1")
        await gw.dial("v", "2", "3201231708900001", "Siti Aminah", "17081990", "Sukamaju", "1")
        await gw.app[syncer_key].round()
        reports = (await central.staff("GET", "/api/v1/submissions?service=report"))[1]["submissions"]
        assert [r["village"] for r in reports] == ["Dusun Kidul"]  # the answer with the address role
        by_village = (await central.staff("GET", "/api/v1/submissions?village=sukamaju"))[1]["submissions"]
        assert [r["service"] for r in by_village] == ["voter"]
        assert (await central.staff("GET", "/api/v1/submissions?status=lost"))[0] == 400
        assert (await central.staff("PATCH", f"/api/v1/submissions/{ref}", json={"status": "done"}))[0] == 400
        assert (await central.staff("PATCH", "/api/v1/submissions/NOSUCH", json={"status": "resolved"}))[0] == 404
        await central.staff("PATCH", f"/api/v1/submissions/{ref}", json={"status": "in_progress"})
        listed = (await central.staff("GET", "/api/v1/submissions?status=in_progress"))[1]["submissions"]
        assert [r["ref"] for r in listed] == [ref]
        async with aiohttp.ClientSession() as http:
            async with http.get(central.url + "/api/v1/submissions") as response:
                assert response.status == 401
            async with http.get(central.url + "/api/v1/submissions",
                                headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 401
    finally:
        await gw.stop()
        await central.stop()


async def test_sync_staff_api_pages_newest_first_with_a_cursor(tmp_path, central_db):
    central = await Central(tmp_path / "central", url=central_db).start()
    # Two by two on the same day (in Jakarta time): ties are ordered by id.
    items = [item(n, created_at=f"2026-11-{1 + n // 2:02d}T10:00:00+07:00") for n in range(7)]
    items[3]["service"] = "elsewhere"  # a service no form describes: no village
    try:
        assert (await signed_post(central, batch(items)))[0] == 200
        status, page = await central.staff("GET", "/api/v1/submissions?limit=3")
        assert status == 200 and page["next"]
        seen = [r["ref"] for r in page["submissions"]]
        assert seen == [items[n]["ref"] for n in (6, 5, 4)]
        assert page["submissions"][0]["created_at"] == "2026-11-04T03:00:00.000+00:00"
        newest = item(7, created_at="2026-12-01T00:00:00+00:00")  # arrives between two pages
        assert (await signed_post(central, batch([newest])))[0] == 200
        while page["next"]:
            status, page = await central.staff("GET", f"/api/v1/submissions?limit=3&cursor={page['next']}")
            assert status == 200 and len(page["submissions"]) <= 3
            seen += [r["ref"] for r in page["submissions"]]
        assert seen == [items[n]["ref"] for n in (6, 5, 4, 3, 2, 1, 0)]
        status, first = await central.staff("GET", "/api/v1/submissions")
        assert [r["ref"] for r in first["submissions"]][:2] == [newest["ref"], items[6]["ref"]]
        assert first["next"] is None and len(first["submissions"]) == 8
        reports = (await central.staff("GET", "/api/v1/submissions?service=report&limit=5"))[1]
        assert len(reports["submissions"]) == 5 and reports["next"]
        rest = (await central.staff("GET", f"/api/v1/submissions?service=report&cursor={reports['next']}"))[1]
        assert [r["ref"] for r in rest["submissions"]] == [items[1]["ref"], items[0]["ref"]] and rest["next"] is None
        village = {r["ref"]: r["village"] for r in first["submissions"]}
        assert village[items[3]["ref"]] == "" and village[items[2]["ref"]] == "Dusun 2"
        by_village = (await central.staff("GET", "/api/v1/submissions?village=DUSUN%205"))[1]["submissions"]
        assert [r["ref"] for r in by_village] == [items[5]["ref"]]
        for query, reason in (("limit=0", "limit must be"), ("limit=1001", "limit must be"),
                              ("limit=ten", "limit must be"), ("limit=-5", "limit must be"),
                              ("limit=%C2%B2", "limit must be"),  # '²' is a digit to str.isdigit, not to int
                              ("since=0001-01-01T00:00:00%2B01:00", "since must be"),  # before year 1 in UTC
                              ("cursor=nonsense", "cursor must be"), ("cursor=WyJ4Il0", "cursor must be")):
            status, text = await central.staff("GET", f"/api/v1/submissions?{query}")
            assert status == 400 and text.startswith(reason), query
    finally:
        await central.stop()


def test_sync_central_store_migration_puts_old_times_in_one_form(tmp_path):
    class OldCentralStore(CentralStore):
        MIGRATIONS = MIGRATIONS[:1]

    old = OldCentralStore.open(tmp_path)
    for n, created_at in enumerate(["2026-11-28T17:00:00+07:00", "2026-11-28T10:00:00.000+00:00"]):
        # What the first version stored: the gateway's own text, offset and all.
        old.db["submissions"].insert({
            "id": f"01KB{n:022d}", "gateway_id": "desa-1", "ref": f"K7AAAA{n + 2}", "service": "report",
            "channel": "ussd", "answers": old.sealer.seal("{}"), "phone": old.sealer.seal(PHONE), "language": "id",
            "village": "", "status": "received", "created_at": created_at,
            "received_at": "2026-11-28T10:00:00.000+00:00", "updated_at": "2026-11-28T10:00:00.000+00:00"})
    old.close()
    store = CentralStore.open(tmp_path)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        rows, _ = store.submissions()
        assert [r["created_at"] for r in rows] == ["2026-11-28T10:00:00.000+00:00"] * 2
        leading = {index.columns[0] for index in store.db["submissions"].indexes}
        assert leading >= {"service", "status", "created_at", "ref", "village_digest", "updated_at"}
        plan = query_plan(store.db, "SELECT * FROM submissions WHERE service IN ('report') AND created_at >= '2026' "
                                    "ORDER BY created_at DESC, id DESC LIMIT 10")
        assert "USING INDEX" in plan and "TEMP B-TREE" not in plan
    finally:
        store.close()


async def test_sync_gateway_killed_mid_round_delivers_everything_once(tmp_path, central_db):
    import os
    import signal
    import sys

    from sync.store import Store

    batches = {"n": 0}
    held, release = asyncio.Event(), asyncio.Event()

    @web.middleware
    async def hold_third_batch(request, handler):
        response = await handler(request)
        if request.path == BATCH_PATH:
            batches["n"] += 1
            if batches["n"] == 3:  # committed, and held unanswered until the gateway is dead
                held.set()
                await release.wait()
        return response

    central = await Central(tmp_path / "central", url=central_db, fault=hold_third_batch).start()
    store = Store.open(tmp_path / "gw")
    refs = [f"K{n:05d}".replace("0", "A").replace("1", "B") for n in range(60)]
    for n, ref in enumerate(refs):
        store.add_submission({"service": "report", "ref": ref, "language": "id", "unique": {},
                              "answers": {"category": "road", "location": f"Dusun {n}", "description": "Rusak"}},
                             phone=f"+62812345{n:05d}", channel="ussd")
    store.close()
    (tmp_path / "config.yaml").touch()  # every setting comes from the environment
    env = {**os.environ, "KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "gw"), "KENTONGAN_GATEWAY_ID": "desa-1",
           "KENTONGAN_SYNC_SECRET": SECRET, "KENTONGAN_CENTRAL_URL": central.url, "KENTONGAN_SYNC_BATCH_SIZE": "5"}

    async def kentongan_sync():
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "sync", env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    try:
        first = await kentongan_sync()
        await asyncio.wait_for(held.wait(), 60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        release.set()
        assert await central_count(central) == 15  # two batches answered, the third committed, never answered
        second = await kentongan_sync()
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 0, err
        assert "pushed 50 (45 new, 5 already there, 0 rejected)" in out.decode()
        assert sorted(r["ref"] for r in (await central.staff("GET", "/api/v1/submissions"))[1]["submissions"]) \
            == sorted(refs)
        store = Store.open(tmp_path / "gw")
        assert store.counts()["sync"]["pending"] == 0 and store.counts()["sync"]["sent"] == 60
        store.close()
    finally:
        release.set()
        await central.stop()


async def test_sync_staff_list_since(tmp_path, central_db):
    central = await Central(tmp_path / "central", url=central_db).start()
    gw = await Gateway(make_sync_config(tmp_path / "gw", central.url)).start()
    try:
        first = await report(gw, "s1")
        untouched = await report(gw, "s2", phone="+254711082399")
        await gw.app[syncer_key].round()
        central.clock.advance(minutes=10)
        since = (central.clock() - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        await central.staff("PATCH", f"/api/v1/submissions/{first}", json={"status": "in_progress"})
        second = await report(gw, "s3", phone="+254711082300")
        await gw.app[syncer_key].round()
        later = (await central.staff("GET", f"/api/v1/submissions?since={since}"))[1]["submissions"]
        assert sorted(r["ref"] for r in later) == sorted([first, second])
        everything = (await central.staff("GET", "/api/v1/submissions"))[1]["submissions"]
        assert sorted(r["ref"] for r in everything) == sorted([first, untouched, second])
        status, body = await central.staff("GET", "/api/v1/submissions?since=2999-01-01T00:00:00Z")
        assert body["submissions"] == []
        assert (await central.staff("GET", "/api/v1/submissions?since=yesterday"))[0] == 400
    finally:
        await gw.stop()
        await central.stop()
