"""Sync between a gateway and a real central backend on loopback ports."""

import asyncio
import gzip
import json
import re

import aiohttp
import pytest
from aiohttp import web

from conftest import PHONE, Gateway, eventually, free_port, sms_config
from gateway.resources import store_key, syncer_key
from sync.central import create_central_app
from sync.client import BATCH_PATH, SyncError
from sync.signing import sign_request

SECRET = "s3cret-for-tests"
STAFF = "staff-token"


class Central:
    """The central backend as its own server on a loopback port."""

    def __init__(self, data_dir, port=None, fault=None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.runner = None
        self.fault = fault  # None, or a middleware that misbehaves around the real handler

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    async def start(self):
        app = create_central_app(self.data_dir, {"desa-1": SECRET}, STAFF)
        if self.fault:
            app.middlewares.append(self.fault)
        self.runner = web.AppRunner(app)
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


async def report(gateway, session, phone=PHONE):
    end = (await gateway.dial(session, "1", "1", "Dusun Kidul", "Jalan berlubang", "1", phone=phone))[-1]
    return re.search(r"Nomor: (\w+)\.", end).group(1)


async def sync_state(gateway):
    return await gateway.app[store_key].call(lambda s: s.counts()["sync"])


async def test_sync_end_to_end_offline_then_resolved(tmp_path, standin):
    central = Central(tmp_path / "central")
    gw = await Gateway(sms_config(tmp_path / "gw", standin, **sync_settings(central.url))).start()
    try:
        ref = await report(gw, "s1")
        syncer = gw.app[syncer_key]
        with pytest.raises(SyncError, match="unreachable"):
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
        assert notices == [f"Kentongan: {ref} Laporan masalah kini Selesai. Sudah ditambal."]
        answers = [b for b in standin.bodies(PHONE) if b.startswith(f"{ref} ")]
        assert len(answers) == 1 and answers[0].startswith(f"{ref} Problem report: Resolved (")
    finally:
        await gw.stop()
        await central.stop()


async def central_count(central):
    status, body = await central.staff("GET", "/api/v1/submissions")
    return len(body["submissions"])


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
            await asyncio.sleep(3)  # ...and answers after the gateway gave up
            return response
        if kind == "cut":
            request.transport.close()  # ...and the link drops before the answer
            return response
        raise AssertionError(kind)

    return misbehave


@pytest.mark.parametrize("kind", ["500", "portal", "unsigned-json", "slow", "cut"])
async def test_sync_faults_never_mark_and_never_duplicate(tmp_path, kind):
    central = await Central(tmp_path / "central", fault=fault(kind)).start()
    gw = await Gateway(make_sync_config(tmp_path / "gw", central.url)).start()
    try:
        refs = [await report(gw, f"s{n}", phone=f"+6281234567{n}0") for n in range(3)]
        with pytest.raises(SyncError):
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


def make_sync_config(data_dir, central_url, **extra):
    from conftest import make_config

    return make_config(data_dir, **{**sync_settings(central_url), **extra})


async def signed_post(central, body, **sign):
    headers = sign_request("desa-1", SECRET, "POST", BATCH_PATH, body, **sign)
    async with aiohttp.ClientSession() as http:
        async with http.post(central.url + BATCH_PATH, data=body, headers=headers) as response:
            return response.status, await response.text(), headers


async def test_sync_central_refuses_unsigned_wrong_stale_and_replayed(tmp_path):
    import time

    central = await Central(tmp_path / "central").start()
    body = gzip.compress(json.dumps({"gateway": "desa-1", "items": []}).encode())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(central.url + BATCH_PATH, data=body) as response:
                assert response.status == 401 and "unknown or missing gateway" in await response.text()
            bad = sign_request("desa-1", "wrong-secret", "POST", BATCH_PATH, body)
            async with http.post(central.url + BATCH_PATH, data=body, headers=bad) as response:
                assert response.status == 401 and "wrong signature" in await response.text()
            unsigned = {"X-Kentongan-Gateway": "desa-1"}
            async with http.post(central.url + BATCH_PATH, data=body, headers=unsigned) as response:
                assert response.status == 401 and "unsigned" in await response.text()
        status, text, _ = await signed_post(central, body, now=time.time() - 301)
        assert status == 401 and "stale" in text
        status, text, headers = await signed_post(central, body)
        assert status == 200
        async with aiohttp.ClientSession() as http:
            async with http.post(central.url + BATCH_PATH, data=body, headers=headers) as response:
                assert response.status == 401 and "replayed" in await response.text()
        tampered = gzip.compress(json.dumps({"gateway": "desa-1", "items": [{"id": "x"}]}).encode())
        async with aiohttp.ClientSession() as http:
            fresh = sign_request("desa-1", SECRET, "POST", BATCH_PATH, body)
            async with http.post(central.url + BATCH_PATH, data=tampered, headers=fresh) as response:
                assert response.status == 401 and "wrong signature" in await response.text()
    finally:
        await central.stop()


async def test_sync_central_rejects_bad_items_with_reasons(tmp_path):
    central = await Central(tmp_path / "central").start()
    good = {"id": "01KB0000000000000000000000", "ref": "K7ABCDE", "service": "report", "channel": "ussd",
            "answers": {"location": "Sukamaju"}, "phone": PHONE, "language": "id",
            "created_at": "2026-11-28T10:00:00+00:00"}
    items = [good, good, {**good, "id": "nope"}, {**good, "id": "01KB0000000000000000000001"},
             {k: v for k, v in good.items() if k != "phone"} | {"id": "01KB0000000000000000000002"}]
    body = gzip.compress(json.dumps({"gateway": "desa-1", "items": items}).encode())
    try:
        status, text, _ = await signed_post(central, body)
        assert status == 200
        assert [(r["result"], r.get("reason")) for r in json.loads(text)["results"]] == [
            ("accepted", None), ("duplicate", None), ("rejected", "id must be a ULID"),
            ("rejected", "reference already in use"), ("rejected", "missing phone")]
    finally:
        await central.stop()


async def test_sync_rejected_items_are_kept_aside_not_resent(tmp_path):
    central = await Central(tmp_path / "central").start()
    gw = await Gateway(make_sync_config(tmp_path / "gw", central.url)).start()
    try:
        await report(gw, "s1")
        await gw.app[store_key].call(lambda s: s.db.execute("UPDATE submissions SET ref = 'bad ref'"))
        summary = await gw.app[syncer_key].round()
        assert summary.rejected == 1
        assert (await sync_state(gw))["rejected"] == 1
        assert (await gw.app[syncer_key].round()).pushed == 0
    finally:
        await gw.stop()
        await central.stop()


async def test_sync_staff_api_filters_and_refuses(tmp_path):
    central = await Central(tmp_path / "central").start()
    gw = await Gateway(make_sync_config(tmp_path / "gw", central.url)).start()
    try:
        ref = await report(gw, "s1")
        await gw.dial("v", "2", "3201234567890123", "Siti Aminah", "17081990", "Sukamaju", "1")
        await gw.app[syncer_key].round()
        assert len((await central.staff("GET", "/api/v1/submissions?service=report"))[1]["submissions"]) == 1
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


async def test_sync_gateway_killed_mid_round_delivers_everything_once(tmp_path):
    import os
    import signal
    import sys

    from sync.store import Store

    @web.middleware
    async def slow_batches(request, handler):
        response = await handler(request)
        if request.path == BATCH_PATH:
            await asyncio.sleep(0.2)
        return response

    central = await Central(tmp_path / "central", fault=slow_batches).start()
    store = Store.open(tmp_path / "gw")
    refs = [f"K{n:05d}".replace("0", "A").replace("1", "B") for n in range(60)]
    for n, ref in enumerate(refs):
        store.add_submission({"service": "report", "ref": ref, "language": "id", "unique": {},
                              "answers": {"category": "road", "location": f"Dusun {n}", "description": "Rusak"}},
                             phone=f"+62812345{n:05d}", channel="ussd")
    store.close()
    env = {**os.environ, "KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "gw"), "KENTONGAN_GATEWAY_ID": "desa-1",
           "KENTONGAN_SYNC_SECRET": SECRET, "KENTONGAN_CENTRAL_URL": central.url, "KENTONGAN_SYNC_BATCH_SIZE": "5"}

    async def kentongan_sync():
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "sync", env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    try:
        first = await kentongan_sync()

        async def partly_there():
            return 10 <= await central_count(central) < 60

        await eventually(partly_there, timeout=30)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert await central_count(central) < 60
        second = await kentongan_sync()
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 0, err
        assert re.search(r"pushed \d+ \(\d+ new, \d+ already there, 0 rejected\)", out.decode())
        listed = (await central.staff("GET", "/api/v1/submissions"))[1]["submissions"]
        assert sorted(r["ref"] for r in listed) == sorted(refs)
        store = Store.open(tmp_path / "gw")
        assert store.counts()["sync"]["pending"] == 0 and store.counts()["sync"]["sent"] == 60
        store.close()
    finally:
        await central.stop()


async def test_sync_worker_backs_off_while_down_and_catches_up(tmp_path, caplog):
    caplog.set_level("WARNING", logger="gateway.syncer")
    port = free_port()
    gw = await Gateway(make_sync_config(tmp_path / "gw", f"http://127.0.0.1:{port}",
                                        sync__interval_seconds=0.05)).start()
    try:
        await report(gw, "s1")
        await asyncio.sleep(1.5)
        failures = caplog.text.count("sync failed")
        assert 2 <= failures <= 6  # 0.05 s apart would have been about 30 tries
        central = await Central(tmp_path / "central", port=port).start()
        try:
            async def delivered():
                return (await sync_state(gw))["pending"] == 0

            await eventually(delivered, timeout=15)
            assert await central_count(central) == 1
        finally:
            await central.stop()
    finally:
        await gw.stop()


async def test_sync_staff_list_since(tmp_path):
    central = await Central(tmp_path / "central").start()
    gw = await Gateway(make_sync_config(tmp_path / "gw", central.url)).start()
    try:
        first = await report(gw, "s1")
        await gw.app[syncer_key].round()
        status, body = await central.staff("GET", "/api/v1/submissions")
        stamp = body["submissions"][0]["updated_at"]
        await asyncio.sleep(0.01)
        await central.staff("PATCH", f"/api/v1/submissions/{first}", json={"status": "in_progress"})
        second = await report(gw, "s2", phone="+254711082300")
        await gw.app[syncer_key].round()
        later = (await central.staff("GET", f"/api/v1/submissions?since={stamp[:-6]}Z"))[1]["submissions"]
        assert sorted(r["ref"] for r in later) == sorted([first, second])
        status, body = await central.staff("GET", "/api/v1/submissions?since=2999-01-01T00:00:00Z")
        assert body["submissions"] == []
        assert (await central.staff("GET", "/api/v1/submissions?since=yesterday"))[0] == 400
    finally:
        await gw.stop()
        await central.stop()
