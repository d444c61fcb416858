"""Gateways at the central backend: reference prefixes assigned and enforced, secrets rotated and never
overwritten; and what `kentongan sync` and `kentongan status` tell an operator."""

import asyncio
import datetime as dt
import functools
import os
import sys

import aiohttp
import pytest

from conftest import Gateway, MovableClock, free_port, served
from flows import Engine
from gateway.config import data_root, load_config
from gateway.resources import Rules, store_key, syncer_key
from gateway.turn import submit
from sync import batchfile
from sync.central import CentralConfig, CentralStore, create_central_app, import_batch_file
from sync.central.store import MIGRATIONS
from sync.client import SyncClient
from sync.errors import BatchFileError, Refused
from sync.protocol import REFUSALS
from sync.store import Store
from test_cli import write_config

STAFF = "staff-token"
P1, P2 = "+6281111111111", "+6282222222222"
REPORT = {"service": "report", "language": "id", "unique": {},
          "answers": {"category": "road", "location": "Dusun Kidul", "description": "Jalan berlubang"}}
OWN_PREFIX = "kentongan: config error: gateway.ref_prefix: Z is the central backend's own reference prefix " \
             "(central.ref_prefix)"

pytestmark = pytest.mark.central_backends


@functools.cache
def engine():
    root = data_root()
    return Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id")


def centre_app(data_dir, clock=None, **settings):
    return create_central_app(CentralConfig(data_dir, STAFF, engine().forms("en"), clock=clock or MovableClock(),
                                            **settings))


async def kentongan(home, *args, env=None):
    """The CLI run in `home` (which has config.yaml), without blocking the loop this test's servers answer on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=home, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def pull(url, gateway_id, secret):
    """'ok' when the central backend answers this gateway signing with `secret`, else its refusal code."""
    async with aiohttp.ClientSession() as http:
        try:
            await SyncClient(url, gateway_id, secret, http).pull(0)
        except Refused as refused:
            return refused.code
    return "ok"


def told(out):
    """What `central gateway add` says goes in the gateway's config: {"gateway.ref_prefix": ..., "sync.secret": ...}."""
    return dict(line.strip().split(": ", 1) for line in out.splitlines() if line.startswith("  "))


def item(ref, n=1):
    return {"id": f"01KB{n:022d}", "ref": ref, "service": "report", "channel": "ussd", "answers": REPORT["answers"],
            "phone": P1, "language": "id", "created_at": "2026-11-28T10:00:00+00:00"}


async def test_gateways_add_assigns_a_free_prefix_refuses_to_overwrite_and_rotates_with_grace(tmp_path, central_db):
    home = tmp_path / "centre"
    write_config(home, gateway={"id": "demo"}, sync={"secret": "demo-secret"},  # demo has prefix K
                 central={"database_url": central_db})
    code, out, err = await kentongan(home, "central", "gateway", "add", "desa-2")
    assert code == 0, err
    assert out.splitlines()[:2] == ["gateway desa-2 registered.", "Put these in that gateway's config:"]
    secret = told(out)["sync.secret"]
    assert told(out)["gateway.ref_prefix"] == "A" and len(secret) >= 40

    code, out, err = await kentongan(home, "central", "gateway", "add", "desa-2")
    assert (code, out) == (2, "")
    assert err.strip() == ("kentongan: gateway desa-2 is registered already, with reference prefix A; --rotate "
                           "gives it a new secret (the old one keeps working for --grace-hours)")
    for prefix, why in (("z", "Z is the central backend's own reference prefix (central.ref_prefix)"),
                        ("A", "A is the reference prefix of gateway desa-2"),
                        ("K", "K is the reference prefix of gateway demo"),
                        ("K0", "reference prefix K0: may only use 23456789ABCDEFGHJKMNPQRSTUVWXYZ (not 0)")):
        code, _, err = await kentongan(home, "central", "gateway", "add", "desa-3", "--prefix", prefix)
        assert (code, err.strip()) == (2, f"kentongan: cannot register gateway desa-3: {why}"), prefix
    code, out, _ = await kentongan(home, "central", "gateway", "add", "desa-3", "--prefix", "c2")
    assert told(out)["gateway.ref_prefix"] == "C2"

    clock = MovableClock()
    async with served(centre_app(home / "var", clock, database_url=central_db)) as url:
        assert await pull(url, "desa-2", secret) == "ok"  # the second add changed nothing
        code, out, err = await kentongan(home, "central", "gateway", "add", "desa-2", "--rotate")
        assert code == 0, err
        assert out.startswith("gateway desa-2 has a new secret; the old one keeps working until ")
        new = told(out)["sync.secret"]
        assert new != secret and told(out)["gateway.ref_prefix"] == "A"
        assert await pull(url, "desa-2", secret) == "ok" and await pull(url, "desa-2", new) == "ok"
        listed = (await kentongan(home, "central", "gateway", "list"))[1].splitlines()
        assert [line.split("\t")[:2] for line in listed] == [
            ["demo", "prefix K"], ["desa-2", "prefix A"], ["desa-3", "prefix C2"]]
        assert "old secret until" in listed[1]
        clock.advance(hours=73)  # past the default grace of 72 hours
        assert await pull(url, "desa-2", secret) == "wrong-secret"
        assert await pull(url, "desa-2", new) == "ok"
        code, out, _ = await kentongan(home, "central", "gateway", "add", "desa-2", "--rotate", "--grace-hours", "0")
        assert "the old one stopped working" in out and await pull(url, "desa-2", new) == "wrong-secret"
    code, _, err = await kentongan(home, "central", "gateway", "add", "desa-9", "--rotate")
    assert (code, err.strip()) == (2, "kentongan: cannot rotate the secret of gateway desa-9: no gateway desa-9 "
                                      "is registered")


async def test_gateways_a_config_never_overwrites_a_registered_secret_and_says_so_once(tmp_path, central_db):
    home = tmp_path / "centre"
    write_config(home, gateway={"id": "demo"}, sync={"secret": "first-secret"}, central={"database_url": central_db})
    code, _, err = await kentongan(home, "central", "gateway", "list")  # registers the config's own gateway
    assert (code, err) == (0, "")
    code, out, err = await kentongan(home, "central", "gateway", "add", "desa-2",
                                     env={"KENTONGAN_SYNC_SECRET": "second-secret"})
    assert code == 0 and told(out)["gateway.ref_prefix"] == "A"
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert len(warnings) == 1
    assert ("gateway demo: the configured sync secret is not the one registered at the central backend; "
            "the registered one stays") in warnings[0]
    assert "first-secret" not in err and "second-secret" not in err
    async with served(centre_app(home / "var", database_url=central_db)) as url:
        assert await pull(url, "demo", "first-secret") == "ok"
        assert await pull(url, "demo", "second-secret") == "wrong-secret"
    code, out, err = await kentongan(home, "central", "gateway", "list", env={"KENTONGAN_GATEWAY_REF_PREFIX": "M"})
    assert code == 0 and out.startswith("demo\tprefix K\t")
    assert [line.split(" WARNING ", 1)[1] for line in err.splitlines()] == [
        "sync.central.config: gateway demo: the configured reference prefix M is not the registered K; the "
        "registered one stays, and references with another prefix are refused"]


async def test_gateways_a_config_prefix_that_is_not_free_stops_with_one_line(tmp_path, central_db):
    home = tmp_path / "centre"
    write_config(home, gateway={"id": "demo", "ref_prefix": "Z"}, sync={"secret": "s"},
                 central={"port": free_port(), "database_url": central_db})
    for command in (("central", "gateway", "list"), ("central", "serve")):
        code, _, err = await kentongan(home, *command)
        assert (code, err.strip().splitlines()[-1]) == (2, OWN_PREFIX), command
    code, out, _ = await kentongan(home, "central", "gateway", "add", "desa-2",
                                   env={"KENTONGAN_GATEWAY_REF_PREFIX": "K"})
    assert told(out)["gateway.ref_prefix"] == "A"
    code, _, err = await kentongan(home, "central", "gateway", "list",
                                   env={"KENTONGAN_GATEWAY_ID": "desa-9", "KENTONGAN_GATEWAY_REF_PREFIX": "A"})
    assert (code, err.strip()) == (2, "kentongan: config error: gateway.ref_prefix: A is the reference prefix of "
                                      "gateway desa-2")


async def test_gateways_a_gateway_on_another_prefix_is_refused_per_item_and_says_so_in_status(tmp_path, central_db):
    secrets = {"desa-1": "secret-1", "desa-2": "secret-2"}
    async with served(centre_app(tmp_path / "central", gateways=secrets,
                                 prefixes={"desa-1": "K", "desa-2": "A"}, database_url=central_db)) as url:
        homes, gateways = {}, {}
        # desa-2 was set up with the centre's own prefix, as in the field report.
        for gateway_id, prefix in (("desa-1", "K"), ("desa-2", "Z")):
            homes[gateway_id] = tmp_path / gateway_id
            path = write_config(homes[gateway_id], gateway={"id": gateway_id, "ref_prefix": prefix},
                                sync={"secret": secrets[gateway_id], "interval_seconds": 3600},
                                central={"url": url})
            gateways[gateway_id] = await Gateway(load_config(path, environ={})).start()
        try:
            refs = {}
            for gateway_id, gw in gateways.items():
                end = (await gw.dial("s1", "1", "1", "Dusun Kidul", "Jalan berlubang", "1", phone=P1))[-1]
                assert end.startswith("END ")
                refs[gateway_id] = (await gw.app[store_key].call(lambda s: s.recent_submissions(P1, 1)))[0]["ref"]
            good = await gateways["desa-1"].app[syncer_key].round()
            assert (good.accepted, good.rejected, good.prefix) == (1, 0, "K")
            wrong = await gateways["desa-2"].app[syncer_key].round()
            assert (wrong.accepted, wrong.rejected, wrong.prefix) == (0, 1, "A")
            kept = await gateways["desa-2"].app[store_key].call(lambda s: s.submission(refs["desa-2"]))
            assert (kept["sync_state"], kept["sync_reason"]) == (
                "rejected", f"reference {refs['desa-2']} does not carry this gateway's prefix A")
            async with aiohttp.ClientSession() as http:
                async with http.get(url + "/api/v1/submissions", headers={"Authorization": f"Bearer {STAFF}"}) as r:
                    assert [s["ref"] for s in (await r.json())["submissions"]] == [refs["desa-1"]]

            differs = ("sync: the central backend knows this gateway by reference prefix A, but gateway.ref_prefix "
                       "is Z: it refuses submissions whose references do not start with A")
            _, status, _ = await kentongan(homes["desa-2"], "status")
            assert differs in status.splitlines() and "0 sent, 1 rejected" in status
            code, out, err = await kentongan(homes["desa-2"], "sync")
            assert code == 0 and out.splitlines()[-1] == differs, err
            _, status, _ = await kentongan(homes["desa-1"], "status")
            assert "reference prefix" not in status
        finally:
            for gw in gateways.values():
                await gw.stop()


async def test_gateways_sync_counts_notices_kept_back_by_stop_and_status_forgets_an_old_error(tmp_path,
                                                                                               central_db):
    port = free_port()
    home = tmp_path / "gateway"
    path = write_config(home, gateway={"id": "desa-1"}, sync={"secret": "s"},
                        central={"url": f"http://127.0.0.1:{port}"})
    store = Store.open(home / "var")
    rules = Rules.from_config(load_config(path, environ={}))
    refs = [submit(store, engine(), rules, REPORT, phone=phone, channel="ussd")["ref"] for phone in (P1, P2)]
    store.set_notices(P2, False)  # P2 said STOP
    store.close()

    code, _, err = await kentongan(home, "sync")
    assert code == 2 and "sync failed: central backend unreachable" in err
    _, status, _ = await kentongan(home, "status")
    assert "sync: last error at 20" in status and "central backend unreachable" in status

    async with served(centre_app(tmp_path / "central", gateways={"desa-1": "s"}, prefixes={"desa-1": "K"},
                                 database_url=central_db), port) as url:
        code, out, err = await kentongan(home, "sync")
        assert code == 0, err
        assert "pushed 2 (2 new, 0 already there, 0 rejected)" in out
        _, status, _ = await kentongan(home, "status")
        assert "last error" not in status and "last success never" not in status  # the error is older
        async with aiohttp.ClientSession() as http:
            for ref in refs:
                async with http.patch(f"{url}/api/v1/submissions/{ref}", json={"status": "resolved"},
                                      headers={"Authorization": f"Bearer {STAFF}"}) as response:
                    assert response.status == 200
        code, out, err = await kentongan(home, "sync")
        assert code == 0, err
        assert out.strip().endswith(
            "pulled 2 status updates, 1 SMS notices queued, 1 not sent (the number said STOP)")


async def test_gateways_registered_before_prefixes_are_refused_until_given_one(tmp_path):
    class OldCentralStore(CentralStore):
        MIGRATIONS = MIGRATIONS[:2]

    old = OldCentralStore.open(tmp_path / "central")
    old.db["gateways"].insert({"id": "desa-2", "secret": "s2", "created_at": "2026-11-01T00:00:00.000+00:00"})
    old.close()
    async with served(centre_app(tmp_path / "central")) as url, aiohttp.ClientSession() as http:
        client = SyncClient(url, "desa-2", "s2", http)
        with pytest.raises(Refused) as refused:
            await client.push([item("QABCDE")])
        assert refused.value.code == "no-prefix" and str(refused.value).startswith(REFUSALS["no-prefix"])
        assert "`kentongan central gateway add desa-2 --rotate --prefix P`" in str(refused.value)
        assert (await client.pull(0)).prefix is None  # it may still hear its updates
        store = CentralStore.open(tmp_path / "central")
        store.rotate_secret("desa-2", "s2-new", dt.timedelta(hours=1), prefix="Q")
        store.close()
        pushed = await client.push([item("QABCDE")])  # the old secret, in its grace period
        assert ([r["result"] for r in pushed.results], pushed.prefix) == (["accepted"], "Q")


def test_gateways_a_file_sealed_with_the_previous_secret_is_taken_during_the_grace_period(tmp_path, central_db):
    clock = MovableClock()
    store = CentralStore.open(tmp_path / "central", clock, database_url=central_db)
    try:
        store.add_gateway("desa-1", "old-secret", "K")
        batchfile.write(tmp_path / "out.kbf", "submissions", "desa-1", "old-secret",
                        {"items": [item("KABCDE"), item("KABCDF", 2)]})
        store.rotate_secret("desa-1", "new-secret", dt.timedelta(hours=72))
        clock.advance(hours=73)
        with pytest.raises(BatchFileError, match="signed with another secret"):
            import_batch_file(store, tmp_path / "out.kbf")
        store.rotate_secret("desa-1", "newer-secret", dt.timedelta(hours=72))
        batchfile.write(tmp_path / "out.kbf", "submissions", "desa-1", "new-secret",
                        {"items": [item("KABCDE"), item("KABCDF", 2)]})
        assert [r["result"] for r in import_batch_file(store, tmp_path / "out.kbf")[1]] == ["accepted"] * 2
    finally:
        store.close()
