"""The USSD callback end to end: a real gateway on a loopback port, against every backend (a real SQLite file;
sessions in a real Redis; the store in a real PostgreSQL)."""

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import re
import sqlite3
import threading
from pathlib import Path

import pytest

from conftest import (PHONE, POSTGRES, REDIS, Gateway, MovableClock, eventually, make_config, postgres_schemas,
                      redis_prefix)
from flows import FlowError
from flows.text import USSD_LIMIT, ussd_cost
from gateway.resources import engine_key, sessions_key, store_key
from sync.store import DATABASE_NAME

pytestmark = pytest.mark.backends

TRANSCRIPTS = Path(__file__).parent / "transcripts"
REGENERATE = os.environ.get("KENTONGAN_REGEN_TRANSCRIPTS") == "1"
NIK = "3201235708900002"         # a woman born 17 August 1990 (her day is 17 + 40)
PERMIT_NIK = "3201231708900001"
LANGUAGE_KEY = {"id": "1", "en": "2", "sw": "3"}


def check_body(gateway, body):
    assert body.startswith(("CON ", "END ")), body
    assert ussd_cost(body) <= USSD_LIMIT, f"{ussd_cost(body)} septets: {body!r}"
    assert not any(sorry in body for sorry in gateway.apologies()), body  # what a crash looks like to a caller


async def refs(gateway):
    """Every submission's reference, oldest first, from the gateway's store (whichever it is)."""
    def read(store):
        return [row["ref"] for row in reversed(store.list_submissions(1000))]

    return await gateway.app[store_key].call(read)


async def submission(gateway, ref):
    return await gateway.app[store_key].call(lambda store: store.submission(ref))


async def open_sessions(gateway):
    """How many USSD sessions are kept and not ended, wherever they live."""
    sessions = gateway.app.get(sessions_key)
    if sessions is not None:
        return await sessions.count_open()
    return (await gateway.app[store_key].call(lambda store: store.counts()))["ussd_sessions_open"]


async def rewrite_session(gateway, session_id, change, phone=PHONE):
    """Change a kept session's state behind the gateway's back, wherever it lives."""
    sessions = gateway.app.get(sessions_key)
    if sessions is None:
        def rewrite(store):
            saved = store.session(session_id)
            store.save_session(session_id, phone=phone, service_code="*384*1#", state=change(saved["state"]),
                               history=saved["history"], response=saved["response"], done=False, resumable=True)

        await gateway.app[store_key].call(rewrite)
    else:
        saved, _ = await sessions.load(session_id, phone, offer=False)
        await sessions.save(session_id, phone=phone, service_code="*384*1#", state=change(saved["state"]),
                            history=saved["history"], response=saved["response"], done=False, resumable=True)


# -- the contract's first screen ------------------------------------------

async def test_ussd_first_hop_shows_main_menu(gateway):
    status, body, kind = await gateway.post("/ussd/africastalking", {
        "sessionId": "a", "serviceCode": "*384*1#", "phoneNumber": "+6281234567890", "text": ""})
    assert status == 200 and kind.startswith("text/plain")
    assert body.startswith("CON Kentongan, layanan desa. Pilih:\n1. Lapor masalah\n2. Daftar pemilih")


# -- what a caller sees, in every language (golden transcripts) ------------

SERVICES = [
    ("report", ["1", "1", "Dusun Kidul RT 03", "Jalan berlubang di depan sekolah", "1"]),
    ("voter", ["2", NIK, "Siti Aminah", "17081990", "Sukamaju", "1"]),
    ("voter again", ["2", NIK]),
    ("permit", ["3", PERMIT_NIK, "Warung Bu Siti", "6", "Jahit baju", "Sukamaju", "1"]),
    ("permit cancelled", ["3", PERMIT_NIK, "Kios Pak Budi", "1", "Sukamaju", "2"]),
]
STATUS = [  # the results wait for the caller: 0 back, 00 the main menu
    ("status recent: next page, back a page, back to the status menu", ["4", "1", "98", "0", "0"]),
    ("status by reference", ["4", "2", "<REF1>"]),
    ("status of a reference that is not mine", ["4", "2", "ZZZZZZ"]),
]
TRANSCRIPT_DAY = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.timezone.utc)  # dates on screen are golden too
PLACE_40 = "Dusun Sukamaju Kidul RT 03 RW 05 Blok C7"  # the longest place and problem a caller may type
PROBLEM_100 = "Jalan berlubang besar di depan SD Negeri 02, motor sering jatuh saat hujan. Mohon segera diperbaiki."


@pytest.mark.parametrize("lang", ["id", "en", "sw"])
async def test_ussd_transcript_in_every_language(tmp_path, backend, lang):
    gateway = await Gateway(make_config(tmp_path / "var", **backend), MovableClock(TRANSCRIPT_DAY)).start()
    lines = [f"# What a caller sees in {lang}; regenerate with KENTONGAN_REGEN_TRANSCRIPTS=1"]
    sessions = itertools.count()

    async def section(name, *inputs, ends=True):
        """Dial once, type `inputs`, and write down every screen."""
        known = await refs(gateway)
        inputs = [known[0] if typed == "<REF1>" else typed for typed in inputs]
        screens = await gateway.dial(f"{lang}-{next(sessions)}", *inputs)
        for body in screens:
            check_body(gateway, body)
        assert all(body.startswith("CON ") for body in screens[:-1]), name
        assert screens[-1].startswith("END " if ends else "CON "), f"{name}: {screens[-1]!r}"
        lines.append(f"## {name}")
        for typed, body in zip([""] + inputs, screens):
            lines.append(f"> {typed}")
            lines.append(body)
        return screens

    try:
        await section("language", "5", LANGUAGE_KEY[lang], ends=False)
        for name, inputs in SERVICES:
            await section(name, *inputs)
        for name, inputs in STATUS:
            await section(name, *inputs, ends=False)
        await section("re-asks: a wrong choice, a short NIK, a short name, an impossible date",
                      "7", "2", "12345", "3201235708900005", "Bu", "Siti Rahayu", "31022000", "17081990", "Sukamaju",
                      "3", "2")
        await section("a way back: 0 from the place to the categories, another category, 0 from the summary",
                      "1", "1", "0", "2", "Dusun Lor RT 04", "Lampu mati", "0", "Lampu mati sejak Senin", "2")
        await section("a long confirmation on one page, the answers shortened; 98 has nowhere to go; send",
                      "1", "1", PLACE_40, PROBLEM_100, "98", "1")
        await section("resume: the line drops mid-report", "1", "2", "Dusun Lor RT 01", ends=False)
        gateway.advance(minutes=3)
        await section("resume: dialing again 3 minutes later", "1", "Lampu jalan mati sejak minggu lalu", "1")
        await section("resume: the line drops again", "1", "2", "Dusun Lor RT 02", ends=False)
        gateway.advance(minutes=6)
        await section("resume: dialing again 6 minutes later, past the window", ends=False)
        # report, voter, permit, the paged report, the resumed one; refused and cancelled ones made nothing
        assert len(await refs(gateway)) == 5
        text = "\n".join(lines) + "\n"
        for n, ref in enumerate(await refs(gateway), 1):
            text = text.replace(ref, f"<REF{n}>")
    finally:
        await gateway.stop()
    golden = TRANSCRIPTS / f"{lang}.txt"
    if REGENERATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


async def test_ussd_language_choice_is_remembered_for_later_sessions(gateway):
    await gateway.dial("s1", "5", "2")
    assert (await gateway.hop("s2", "")).startswith("CON Kentongan village services")
    other_phone = await gateway.hop("s3", "", phone="+254711082300")
    assert other_phone.startswith("CON Kentongan, layanan desa")


# -- bad input re-asks, navigation -----------------------------------------

async def test_ussd_wrong_inputs_reask_and_never_end(gateway):
    screens = await gateway.dial("w", "7", "2", "", "12", NIK, "x", "Siti Aminah", "31022000")
    assert screens[1].startswith("CON Pilihan tidak ada.\nKentongan")
    assert screens[3] == "CON Harus 16 angka.\nMasukkan NIK Anda (16 angka di KTP):\n0 Kembali, 00 Menu"
    assert screens[4] == "CON Harus 16 angka.\nMasukkan NIK Anda (16 angka di KTP):\n0 Kembali, 00 Menu"
    assert screens[6].startswith("CON Minimal 3 huruf.")
    assert screens[8].startswith("CON Tanggal salah.")
    assert all(s.startswith("CON ") for s in screens)


async def test_ussd_double_zero_returns_to_main_menu(gateway):
    screens = await gateway.dial("h", "2", NIK, "00", "1")
    assert screens[3].startswith("CON Kentongan, layanan desa")
    assert screens[4].startswith("CON Jenis masalah:")


async def test_ussd_paging_next_and_back(gateway):
    for n in range(6):
        await gateway.dial(f"r{n}", "1", "2", f"Dusun {n} Kidul", "Lampu mati sejak minggu lalu", "1")
    screens = await gateway.dial("p", "4", "1", "98", "0")
    assert screens[2].startswith("CON ") and screens[2].endswith("\n98 Berikutnya\n0 Kembali, 00 Menu")
    assert screens[3].startswith("CON ") and screens[3].endswith("\n0 Kembali, 00 Menu")
    assert "98 Berikutnya" not in screens[3]
    shown = screens[2] + screens[3]
    assert all(ref in shown for ref in (await refs(gateway))[-3:])  # the latest three
    assert screens[4] == screens[2]  # 0 on the second page: the first again


# -- retries, restarts, dropped sessions ------------------------------------

async def test_ussd_duplicate_callback_is_a_no_op(gateway):
    first = await gateway.dial("d", "1", "1", "Dusun Kidul", "Jalan rusak parah")
    again = await gateway.hop("d", "1*1*Dusun Kidul*Jalan rusak parah")
    assert again == first[-1]
    end = await gateway.hop("d", "1*1*Dusun Kidul*Jalan rusak parah*1")
    retries = await asyncio.gather(*[gateway.hop("d", "1*1*Dusun Kidul*Jalan rusak parah*1") for _ in range(5)])
    assert set(retries) == {end}
    assert len(await refs(gateway)) == 1 and (await refs(gateway))[0] in end


async def test_ussd_concurrent_first_hops_of_one_session(gateway):
    bodies = await asyncio.gather(*[gateway.hop("c", "") for _ in range(5)])
    assert len(set(bodies)) == 1
    assert await open_sessions(gateway) == 1


async def test_ussd_stale_retry_of_an_earlier_hop_does_not_advance(gateway):
    screens = await gateway.dial("o", "2", NIK)
    assert await gateway.hop("o", "2") == screens[-1]  # late copy of hop 1: answer where we are
    assert (await gateway.hop("o", f"2*{NIK}*Siti Aminah")).startswith("CON Tanggal lahir")


async def test_ussd_free_text_may_contain_star(gateway):
    screens = await gateway.dial("t", "1", "1", "Blok C*7", "Lubang*besar", "1")
    assert "Blok C*7" in screens[4] and "Lubang*besar" in screens[4]
    assert (await submission(gateway, (await refs(gateway))[0]))["answers"]["location"] == "Blok C*7"


async def test_ussd_restarted_gateway_resumes_session(gateway):
    await gateway.dial("r", "2", NIK, "Siti Aminah")
    await gateway.restart()
    body = await gateway.hop("r", f"2*{NIK}*Siti Aminah*17081990")
    assert body == "CON Desa tempat tinggal Anda:\n0 Kembali, 00 Menu"
    await gateway.hop("r", f"2*{NIK}*Siti Aminah*17081990*Sukamaju")
    end = await gateway.hop("r", f"2*{NIK}*Siti Aminah*17081990*Sukamaju*1")
    assert end.startswith("END Pendaftaran diterima")


async def test_ussd_unknown_session_with_history_is_replayed(gateway):
    body = await gateway.hop("never-seen", f"2*{NIK}*Siti Aminah")
    assert body.startswith("CON Tanggal lahir")


async def test_ussd_dropped_session_can_be_resumed(gateway):
    await gateway.dial("drop", "2", NIK, "Siti Aminah", "17081990")
    offer = await gateway.hop("again", "")
    assert offer == "CON Sambungan terputus. Lanjutkan Pendaftaran pemilih?\n1. Lanjutkan\n2. Mulai dari awal"
    assert await gateway.hop("again", "1") == "CON Desa tempat tinggal Anda:\n0 Kembali, 00 Menu"
    assert (await gateway.hop("again", "1*Sukamaju")).startswith("CON Daftar sebagai pemilih?")
    end = await gateway.hop("again", "1*Sukamaju*1")
    assert end.startswith("END Pendaftaran diterima")
    answers = (await submission(gateway, (await refs(gateway))[0]))["answers"]
    assert answers == {"nik": NIK, "name": "Siti Aminah", "birth_date": "1990-08-17", "village": "Sukamaju"}
    assert (await gateway.hop("third", "")).startswith("CON Kentongan")  # offered once, not forever


async def test_ussd_dropped_session_offer_can_be_declined(gateway):
    await gateway.dial("drop", "1", "1", "Dusun Kidul")
    assert (await gateway.hop("again", "")).startswith("CON Sambungan terputus")
    assert (await gateway.hop("again", "2")).startswith("CON Kentongan, layanan desa")


async def test_ussd_dropped_session_offer_survives_a_second_drop(gateway):
    await gateway.dial("drop", "1", "1", "Dusun Kidul")
    await gateway.hop("again", "")  # the offer, then the line drops again
    assert (await gateway.hop("third", "")).startswith("CON Sambungan terputus")
    assert await gateway.hop("third", "1") == "CON Jelaskan singkat masalahnya (maks. 100 huruf):\n0 Kembali, 00 Menu"


async def test_ussd_offer_only_within_the_window(gateway):
    await gateway.dial("drop", "2", NIK)
    gateway.advance(minutes=4)  # the window is 5 minutes
    assert (await gateway.hop("soon", "")).startswith("CON Sambungan terputus")
    gateway.advance(minutes=6)  # the unanswered offer is a drop of its own, as old now
    assert (await gateway.hop("late", "")).startswith("CON Kentongan")


async def test_ussd_no_offer_for_another_phone(gateway):
    await gateway.dial("drop", "2", NIK)
    assert (await gateway.hop("other", "", phone="+254711082300")).startswith("CON Kentongan")


async def test_ussd_no_offer_after_a_finished_session(gateway):
    await gateway.dial("done", "1", "1", "Dusun Kidul", "Jalan rusak", "1")
    assert (await gateway.hop("next", "")).startswith("CON Kentongan")


async def test_ussd_resume_can_be_turned_off(tmp_path, backend):
    gw = await Gateway(make_config(tmp_path, ussd__resume_minutes=0, **backend)).start()
    try:
        await gw.dial("drop", "2", NIK)
        assert (await gw.hop("again", "")).startswith("CON Kentongan")
    finally:
        await gw.stop()


# -- durability and uniqueness ----------------------------------------------

async def test_ussd_submission_is_on_disk_when_end_arrives(gateway):
    end = (await gateway.dial("s", "1", "4", "Sumur umum", "Air keruh sejak seminggu", "1"))[-1]
    ref = re.search(r"Kode: (\w+)\.", end).group(1)
    found = await submission(gateway, ref)
    assert (found["service"], found["status"], found["sync_state"], found["channel"]) == (
        "report", "received", "pending", "ussd")
    database = gateway.config.data_dir / DATABASE_NAME
    if not gateway.config["gateway.database_url"]:  # on SQLite: in the file, for any connection to read
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT channel FROM submissions WHERE ref = ?", [ref]).fetchall() == [("ussd",)]


async def test_ussd_failed_store_write_sends_no_reference_and_loses_nothing(gateway, monkeypatch):
    await gateway.dial("f", "1", "4", "Sumur umum", "Air keruh")
    store = gateway.app[store_key].store
    real = store.add_submission

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "add_submission", broken)
    sorry = await gateway.hop("f", "1*4*Sumur umum*Air keruh*1")
    assert sorry == "END Maaf, ada gangguan. Silakan coba lagi nanti."
    assert await refs(gateway) == []
    monkeypatch.setattr(store, "add_submission", real)
    end = await gateway.hop("f", "1*4*Sumur umum*Air keruh*1")  # the network retries
    assert end.startswith("END Terima kasih") and (await refs(gateway))[0] in end


async def test_ussd_a_nik_registered_from_this_phone_is_told_only_to_this_phone(gateway):
    await gateway.dial("v1", "2", NIK, "Siti Aminah", "17081990", "Sukamaju", "1")
    again = await gateway.dial("v2", "2", NIK)
    assert again[-1] == "END Anda sudah mendaftar dengan NIK ini dari nomor HP ini. Cek statusnya di menu Cek status."
    # Another phone learns nothing: it gets the screens a new NIK gets, and the central backend reviews it.
    other = await gateway.dial("v3", "2", NIK, phone="+6281298765432")
    fresh = await gateway.dial("v4", "2", PERMIT_NIK, phone="+6281298765433")
    assert other[-1] == fresh[-1] and other[-1].startswith("CON ")
    assert len(await refs(gateway)) == 1


async def test_ussd_two_sessions_of_one_phone_racing_with_one_nik_make_one_registration(gateway):
    answers = [NIK, "Siti Aminah", "17081990", "Sukamaju"]
    await gateway.dial("a", "2", *answers)
    # Session b is one the gateway never saw begin (a retried hop replays its history).
    ends = await asyncio.gather(gateway.hop("a", "2*" + "*".join(answers) + "*1"),
                                gateway.hop("b", "2*" + "*".join(answers) + "*1"))
    assert sorted(e.split(" dan ")[0].split(".")[0] for e in ends) == [
        "END Anda sudah mendaftar dengan NIK ini dari nomor HP ini", "END Pendaftaran diterima"]
    assert len(await refs(gateway)) == 1


async def test_ussd_personal_data_is_not_stored_in_clear(gateway):
    await gateway.dial("p", "2", NIK, "Siti Aminah", "17081990", "Sukamaju", "1")
    raw = b"".join(p.read_bytes() for p in gateway.config.data_dir.glob("gateway.db*"))
    sessions = gateway.app.get(sessions_key)
    if sessions is not None:  # and not in Redis either
        async for key in sessions.client.scan_iter(match=sessions.prefix + "*"):
            raw += key + b"".join(k + v for k, v in (await sessions.client.hgetall(key)).items())
        assert b":ussd:" in raw and b"s1:" in raw  # the sessions are there, sealed
    for secret in (NIK, "Siti Aminah", "Sukamaju", PHONE, PHONE[1:]):
        assert secret.encode() not in raw


async def test_ussd_logs_mask_phone_numbers(gateway, caplog):
    caplog.set_level("INFO")
    await gateway.dial("l", "2", NIK, "Siti Aminah", "17081990", "Sukamaju", "1")
    text = caplog.text
    assert "+62812****890" in text
    for secret in (PHONE, PHONE[1:], NIK, "Siti Aminah"):
        assert secret not in text


# -- malformed callbacks -------------------------------------------------------

GOOD_FORM = {"sessionId": "x", "serviceCode": "*384*1#", "phoneNumber": PHONE, "networkCode": "51010", "text": ""}


@pytest.mark.parametrize("change, reason", [
    ({"sessionId": None}, "missing form field(s): sessionId"),
    ({"text": None, "phoneNumber": None}, "missing form field(s): phoneNumber, text"),
    ({"sessionId": ""}, "sessionId must be"),
    ({"serviceCode": ""}, "serviceCode must be"),
    ({"phoneNumber": "0812345"}, "phoneNumber must be in E.164 form"),
    ({"phoneNumber": "+62 81"}, "phoneNumber is not a possible phone number"),
    ({"phoneNumber": "not a number"}, "phoneNumber must be in E.164 form"),
    ({"text": "1*" * 1001}, "text is longer than 2000 characters"),
])
async def test_ussd_malformed_callback_gets_400_with_reason(gateway, change, reason):
    form = {k: v for k, v in {**GOOD_FORM, **change}.items() if v is not None}
    status, body, _ = await gateway.post("/ussd/africastalking", form)
    assert status == 400 and reason in body


async def test_ussd_json_body_gets_400(gateway):
    async with gateway.http.post(gateway.url + "/ussd/africastalking", json=GOOD_FORM) as response:
        assert response.status == 400
        assert "missing form field(s)" in await response.text()


async def test_ussd_callback_secret_is_checked(tmp_path):
    gw = await Gateway(make_config(tmp_path, gateway__callback_secret="s3cret")).start()
    try:
        status, body, _ = await gw.post("/ussd/africastalking", GOOD_FORM)
        assert status == 403 and "callback key" in body
        status, _, _ = await gw.post("/ussd/africastalking?key=wrong", GOOD_FORM)
        assert status == 403
        status, body, _ = await gw.post("/ussd/africastalking?key=s3cret", GOOD_FORM)
        assert status == 200 and body.startswith("CON ")
    finally:
        await gw.stop()


async def test_ussd_healthz(gateway):
    async with gateway.http.get(gateway.url + "/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def test_ussd_session_is_bound_to_its_phone(gateway):
    await gateway.dial("mine", "2", NIK)
    status, body, _ = await gateway.post("/ussd/africastalking", {**GOOD_FORM, "sessionId": "mine",
                                                                  "phoneNumber": "+254711082300", "text": "2"})
    assert status == 400 and "another phoneNumber" in body
    assert (await gateway.hop("mine", f"2*{NIK}*Siti Aminah")).startswith("CON Tanggal lahir")


async def test_ussd_session_saved_under_old_menus_restarts_at_main_menu(gateway):
    await gateway.dial("old", "1", "1")
    await rewrite_session(gateway, "old", lambda state: {**state, "screen": "a-screen-since-removed"})
    assert (await gateway.hop("old", "1*1*Dusun Kidul")).startswith("CON Kentongan, layanan desa")


async def test_ussd_engine_bug_is_an_error_and_an_apology_never_a_silent_restart(gateway, monkeypatch, caplog):
    await gateway.dial("bug", "1")

    def broken_route(*args):
        raise FlowError("menus/report.yaml: screen 'category' has no route 'choose_1'")

    monkeypatch.setattr(gateway.app[engine_key], "_fire", broken_route)
    body = await gateway.hop("bug", "1*1")
    assert body == "END Maaf, ada gangguan. Silakan coba lagi nanti."
    assert [r.levelname for r in caplog.records if "has no route" in r.getMessage() or r.exc_info] == ["ERROR"]
    monkeypatch.undo()
    again = await gateway.hop("bug", "1*1")  # nothing was committed: the network's retry goes on where it was
    assert again.startswith("CON Di mana? Tulis desa")


async def test_ussd_reference_collision_draws_another(gateway, monkeypatch):
    first = (await gateway.dial("a", "1", "1", "Dusun Kidul", "Jalan rusak", "1"))[-1]
    taken = re.search(r"Kode: (\w+)\.", first).group(1)
    draws = iter([taken, taken, "KZZZZZ9"])
    monkeypatch.setattr("sync.database.new_reference", lambda prefix: next(draws))
    second = (await gateway.dial("b", "1", "1", "Dusun Lor", "Lampu mati", "1"))[-1]
    assert "Kode: KZZZZZ9." in second
    assert sorted(await refs(gateway)) == sorted([taken, "KZZZZZ9"])


async def test_ussd_callback_key_cannot_be_guessed_from_one_address(tmp_path, caplog):
    gw = await Gateway(make_config(tmp_path, gateway__callback_secret="s3cret",
                                   limits__wrong_keys_per_minute=3)).start()
    try:
        statuses = [(await gw.post(f"/ussd/africastalking?key=guess{n}", GOOD_FORM))[0] for n in range(6)]
        assert statuses == [403, 403, 403, 429, 429, 429]
        # Once held, even the right key is not compared until the minute ends: a guess cannot be confirmed.
        async with gw.http.post(gw.url + "/ussd/africastalking?key=s3cret", data=GOOD_FORM) as response:
            assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
            assert "too many wrong callback keys" in await response.text()
        assert len([r for r in caplog.records if "wrong callback keys" in r.getMessage()]) == 1
    finally:
        await gw.stop()


# -- several workers on one PostgreSQL store ---------------------------------------------------------------

@pytest.mark.parametrize("sessions", ["store", "redis"])
async def test_ussd_two_workers_given_copies_of_one_confirm_hop_make_one_submission(tmp_path, sessions):
    """The network retries a slow confirm hop and the copy lands at another worker (SO_REUSEPORT, a load
    balancer) while the first is still at it: one submission, one SMS, the same END from both."""
    import asyncpg

    async with contextlib.AsyncExitStack() as stack:
        (url,) = await stack.enter_async_context(postgres_schemas("gateway"))
        settings = {"gateway__database_url": url}
        if sessions == "redis":
            prefix = await stack.enter_async_context(redis_prefix())
            settings.update(sessions__backend="redis", sessions__redis_url=REDIS, sessions__redis_prefix=prefix)
        config = make_config(tmp_path / "var", **settings)  # one data folder: one key file for both
        first = await Gateway(config).start()
        stack.push_async_callback(first.stop)
        other = await Gateway(config).start()
        stack.push_async_callback(other.stop)
        watch = await asyncpg.connect(POSTGRES)
        stack.push_async_callback(watch.close)

        # The first worker's turn stops inside its transaction, its submission stored and not yet committed.
        kept = first.app[store_key].store
        queue_sms, inside, go_on = kept.outbox.add, threading.Event(), threading.Event()

        def add_and_wait(*args, **kwargs):
            queued = queue_sms(*args, **kwargs)
            inside.set()
            go_on.wait(30)
            return queued

        stack.callback(go_on.set)  # however the test ends, the first worker's thread goes on
        report = ["1", "4", "Sumur umum", "Air keruh sejak seminggu"]
        await first.dial("race", *report)
        kept.outbox.add = add_and_wait
        last = "*".join([*report, "1"])
        one = asyncio.create_task(first.hop("race", last))
        await eventually(inside.is_set)
        pid = await other.app[store_key].call(lambda store: store.db.execute("SELECT pg_backend_pid()").fetchone()[0])
        two = asyncio.create_task(other.hop("race", last))
        # The copy waits for the first's COMMIT instead of reading the session (or looking for its submission)
        # as it was before it.
        await eventually(lambda: watch.fetchval("SELECT cardinality(pg_blocking_pids($1)) > 0", pid))
        go_on.set()
        ends = await asyncio.gather(one, two)
        [ref] = await refs(first)
        assert ends[0] == ends[1] and ends[0].startswith("END ") and ref in ends[0]
        check_body(first, ends[1])
        sms = await other.app[store_key].call(lambda store: store.outbox.messages(PHONE))
        assert [row["kind"] for row in sms] == ["confirmation"]
