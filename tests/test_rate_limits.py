"""Rate limits on the villagers' channels (per phone) and the central backend's open doors (per address).

Real gateways on loopback ports, the real africastalking SDK against the
stand-in, real SQLite files, a real central backend; limits made small through
the config.
"""

import json
import logging
import re
import subprocess
import sys

import aiohttp
import pytest

from conftest import PHONE, Gateway, eventually, make_config, our_errors, query_plan, served, sms_config
from gateway.resources import limits_key, store_key, syncer_key
from sync.central import CentralConfig, create_central_app
from sync.protocol import BATCH_PATH, UPDATES_PATH, sign_request
from test_central_review import engine


pytestmark = pytest.mark.backends

REPORT = ("1", "1", "Dusun Kidul", "Jalan berlubang", "1")
OTHER = "+6289876543210"


async def report(gw, session, phone=PHONE):
    """A whole report by USSD; the last screen."""
    return (await gw.dial(session, *REPORT, phone=phone))[-1]


async def sms(gw, text, message_id, phone=PHONE):
    status, body, _ = await gw.post("/sms/africastalking/inbound", {
        "from": phone, "to": "21525", "text": text, "date": "2026-11-28 10:00:00", "id": message_id,
        "linkId": "", "networkCode": "51010"})
    assert status == 200, body
    return body


async def rows(gw, sql, *args):
    return await gw.app[store_key].call(lambda s: s.db.execute(sql, args).fetchall())


async def limited_gateway(tmp_path, standin, clock=None, backend=None, **limits):
    return await Gateway(sms_config(tmp_path / "var", standin, **limits, **(backend or {})), clock).start()


def status_env(tmp_path, backend):
    """What `kentongan status` in another process needs to find this test's store."""
    return {"KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var"), "PATH": "",
            **({"KENTONGAN_GATEWAY_DATABASE_URL": backend["gateway__database_url"]}
               if "gateway__database_url" in backend else {})}


async def test_new_sessions_past_the_hourly_limit_end_politely_and_store_nothing(tmp_path, standin, caplog):
    caplog.set_level(logging.INFO)
    gw = await limited_gateway(tmp_path, standin, limits__ussd_sessions_per_hour=2)
    try:
        first = await gw.hop("s1", "")
        assert first.startswith("CON ")
        await gw.hop("s2", "")
        refused = await gw.hop("s3", "")
        assert refused == "END Terlalu banyak permintaan dari nomor ini. Coba lagi dalam 60 menit."
        assert [r[0] for r in await rows(gw, "SELECT id FROM ussd_sessions ORDER BY id")] == ["s1", "s2"]
        # A session under way is never cut off: s1 files a whole report past the limit.
        history = []
        for typed in REPORT:
            history.append(typed)
            last = await gw.hop("s1", "*".join(history))
        assert last.startswith("END ") and "Kode:" in last
        # Another phone is not affected; the refused one hears it in the language it chose.
        assert (await gw.hop("o1", "", phone=OTHER)).startswith("CON ")
        await gw.app[store_key].call(lambda s: s.set_language(PHONE, "en"))
        assert await gw.hop("s4", "") == "END Too many requests from this number. Please try again in 60 minutes."
        assert gw.app[limits_key].ussd_sessions.refused == 2
        # The hour over, the phone dials again.
        gw.advance(minutes=61)
        assert (await gw.hop("s5", "")).startswith("CON ")
    finally:
        await gw.stop()
    warnings = [r for r in caplog.records if "sessions within the hour" in r.getMessage()]
    assert len(warnings) == 1 and PHONE not in warnings[0].getMessage()
    assert our_errors(caplog.records) == []


async def test_an_sms_flood_gets_one_polite_sms_per_window(tmp_path, standin, caplog):
    gw = await limited_gateway(tmp_path, standin, limits__sms_per_hour=3)
    try:
        await gw.app[store_key].call(lambda s: s.set_language(PHONE, "sw"))
        for n in range(20):
            assert await sms(gw, "CEK", f"in-{n}") == "OK"
        assert await sms(gw, "CEK", "in-5") == "OK (already handled)"
        await eventually(lambda: len(standin.received) >= 4)
        polite = "Kentongan: Maombi mengi mno kutoka nambari hii. Tafadhali jaribu tena baada ya dakika 60."
        # Three answers, then the one polite SMS; nothing for the other 16 (waited for: all are sent).
        await eventually(lambda: gw.app[store_key].call(
            lambda s: s.outbox.counts().get("queued", 0) == 0))
        bodies = standin.bodies()
        assert len(bodies) == 4 and bodies[-1] == polite
        assert (await rows(gw, "SELECT count(*) FROM outbox"))[0][0] == 4
        assert (await rows(gw, "SELECT count(*) FROM sms_inbound"))[0][0] == 20
        # The next hour: answered again, and told once again when over.
        gw.advance(minutes=61)
        for n in range(20, 25):
            await sms(gw, "CEK", f"in-{n}")
        await eventually(lambda: len(standin.received) == 8)
        assert standin.bodies()[-1] == polite
    finally:
        await gw.stop()
    assert our_errors(caplog.records) == []


async def test_the_daily_count_is_an_indexed_query(tmp_path, standin):
    gw = await limited_gateway(tmp_path, standin)
    try:
        plan = await gw.app[store_key].call(lambda s: query_plan(
            s.db, "SELECT count(*) FROM submissions WHERE phone_hash = 'x' AND created_at >= '2026' "
                  "AND service = 'report'"))
        assert "USING INDEX" in plan and "phone_hash" in plan, plan
    finally:
        await gw.stop()


def centre(tmp_path, **limits):
    return create_central_app(CentralConfig(tmp_path / "central", "staff", engine().forms("en"),
                                            gateways={"desa-a": "secret-a"}, prefixes={"desa-a": "A"},
                                            open311_api_key="key", **limits))


async def test_submissions_past_the_daily_limit_are_held_without_sms_and_reach_the_centre_as_review(
        tmp_path, standin, caplog, backend):
    async with served(centre(tmp_path)) as url:
        config = sms_config(tmp_path / "var", standin, limits__submissions_per_day=2, gateway__id="desa-a",
                            gateway__ref_prefix="A", sync__secret="secret-a", central__url=url,
                            sync__interval_seconds=3600, **backend)
        gw = await Gateway(config).start()
        try:
            for n in range(2):
                assert "Kode:" in await report(gw, f"ok{n}")
            held = [await report(gw, f"held{n}") for n in range(2)]
            for screen in held:
                assert re.fullmatch(r"END Terima kasih\. Kode: A\w+\. Banyak pengajuan .* lewat SMS\.", screen)
            held_refs = [re.search(r"Kode: (\w+)\.", s).group(1) for s in held]
            # Another service is counted apart; English callers read English.
            await gw.app[store_key].call(lambda s: s.set_language(OTHER, "en"))
            for n in range(3):
                last = await report(gw, f"en{n}", phone=OTHER)
            assert "staff check it first" in last
            statuses = dict(await rows(gw, "SELECT ref, status FROM submissions WHERE phone_hash = ?",
                                       await gw.app[store_key].call(lambda s: s.phone_digest(PHONE))))
            assert sorted(r for r, st in statuses.items() if st == "review") == sorted(held_refs)
            confirmations = await rows(gw, "SELECT count(*) FROM outbox WHERE kind = 'confirmation'")
            assert confirmations[0][0] == 4  # 2 for PHONE, 2 for OTHER: none for the 3 held
            await eventually(lambda: len(standin.received) == 4)

            summary = await gw.app[syncer_key].round()
            assert summary.accepted == 7
            async with aiohttp.ClientSession() as http:
                async with http.get(url + "/api/v1/submissions?status=review",
                                    headers={"Authorization": "Bearer staff"}) as response:
                    listed = (await response.json())["submissions"]
            assert sorted(r["ref"] for r in listed if r["phone"] == PHONE) == sorted(held_refs)
            reason = "more report submissions from one phone in 24 hours than its gateway's daily limit"
            assert {r["review_reason"] for r in listed} == {reason}
            assert all(r["note"] is None and r["review_of"] is None for r in listed)
            # Staff decide one as any other: its phone hears it then.
            async with aiohttp.ClientSession() as http:
                async with http.patch(url + f"/api/v1/submissions/{held_refs[0]}", json={"status": "resolved"},
                                      headers={"Authorization": "Bearer staff"}) as response:
                    assert response.status == 200
            await gw.app[syncer_key].round()
            assert (await gw.app[store_key].call(lambda s: s.submission(held_refs[0])))["status"] == "resolved"
            notices = await rows(gw, "SELECT count(*) FROM outbox WHERE kind = 'notice'")
            assert notices[0][0] == 1
            await gw.restart()  # counted: persisted at shutdown, seen by `status` in another process
        finally:
            await gw.stop()
    shown = subprocess.run([sys.executable, "-m", "gateway", "status", "--json", "--config",
                            str(tmp_path / "var" / "config.yaml")], capture_output=True, text=True,
                           env=status_env(tmp_path, backend), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["limits"]["held_submissions"] == 3
    assert our_errors(caplog.records) == []


async def test_held_sms_reports_get_one_sms_for_the_first(tmp_path, standin, backend):
    gw = await limited_gateway(tmp_path, standin, backend=backend, limits__submissions_per_day=1)
    try:
        for n in range(4):
            await sms(gw, f"LAPOR JALAN Sukamaju: lubang besar {n}", f"r{n}")
        await eventually(lambda: len(standin.received) >= 2)
        await eventually(lambda: gw.app[store_key].call(lambda s: s.outbox.counts().get("queued", 0) == 0))
        bodies = standin.bodies()
        assert len(bodies) == 2 and "diterima" in bodies[0]
        assert bodies[1].startswith("Kentongan: Terima kasih. Kode: ") and "petugas memeriksanya" in bodies[1]
        assert (await rows(gw, "SELECT count(*) FROM submissions WHERE status = 'review'"))[0][0] == 3
    finally:
        await gw.stop()


async def test_refusals_are_counted_by_status_in_another_process(tmp_path, standin, backend):
    gw = await limited_gateway(tmp_path, standin, backend=backend, limits__ussd_sessions_per_hour=1,
                               limits__sms_per_hour=1)
    try:
        for n in range(3):
            await gw.hop(f"s{n}", "")
            await sms(gw, "CEK", f"m{n}")
    finally:
        await gw.stop()
    shown = subprocess.run([sys.executable, "-m", "gateway", "status", "--config", str(tmp_path / "var" / "config.yaml")],
                           capture_output=True, text=True, env=status_env(tmp_path, backend), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "rate limits: 2 USSD sessions refused, 2 SMS refused, 0 submissions held for review" in shown.stdout


async def test_the_centre_answers_429_with_retry_after_before_reading_or_checking(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with served(centre(tmp_path, open311_posts_per_minute=2, sync_per_minute=3)) as url, \
            aiohttp.ClientSession() as http:
        form = {"api_key": "wrong", "service_code": "report", "description": "lubang"}
        answers = []
        for _ in range(5):
            async with http.post(url + "/open311/v2/requests.json", data=form) as response:
                answers.append((response.status, response.headers.get("Retry-After"), await response.text()))
        assert [a[0] for a in answers[:2]] != [429, 429] and [a[0] for a in answers[2:]] == [429] * 3
        assert 1 <= int(answers[2][1]) <= 60 and "too many open311 posts requests" in answers[2][2]
        # Open311 reads are not limited.
        async with http.get(url + "/open311/v2/services.json") as response:
            assert response.status == 200

        statuses = []
        for _ in range(5):
            body = b"x" * 1000  # unsigned, unreadable: refused with 401/400 until the limit, then 429 unread
            async with http.post(url + BATCH_PATH, data=body, headers=sign_request("desa-a", "bad", "POST",
                                                                                    BATCH_PATH, body)) as response:
                statuses.append((response.status, response.headers.get("Retry-After")))
        assert [s for s, _ in statuses[:3]] == [401] * 3 and [s for s, _ in statuses[3:]] == [429, 429]
        async with http.get(url + UPDATES_PATH + "?since=0") as response:
            assert response.status == 429 and response.headers["Retry-After"]

        async with http.get(url + "/healthz") as response:
            health = await response.json()
        assert health["rate_limited"] == {"open311_posts": 3, "sync": 3}
    warnings = [r.getMessage() for r in caplog.records if "refused with 429" in r.getMessage()]
    assert len(warnings) == 2  # one per door and address, not one per request
    assert our_errors(caplog.records) == []


async def test_limits_of_zero_are_off(tmp_path, standin):
    gw = await limited_gateway(tmp_path, standin, limits__ussd_sessions_per_hour=0)
    try:
        for n in range(30):
            assert (await gw.hop(f"s{n}", "")).startswith("CON ")
    finally:
        await gw.stop()


def test_the_default_config_maps_the_centre_limits(tmp_path):
    from gateway.central import central_config
    config = make_config(tmp_path / "var")
    central = central_config(config, engine())
    assert (central.open311_posts_per_minute, central.sync_per_minute) == (20, 600)
