"""One registration per NIK across every gateway: the central backend holds a second one for staff review.

Two real gateways (each its own app, data directory and phone callers) sync
to one real central backend on loopback ports.
"""

import contextlib
import functools
import json

import aiohttp
import pytest

from conftest import Gateway, MovableClock, eventually, free_port, make_config, served
from flows import Engine
from gateway.central import notice_renderer
from gateway.config import data_root
from gateway.resources import store_key, syncer_key
from sync.central import CentralConfig, CentralStore, create_central_app
from sync.central.store import MIGRATIONS
from sync.client import SyncClient

pytestmark = pytest.mark.central_backends

STAFF = "staff-token"
SECRETS = {"desa-a": "secret-of-a", "desa-b": "secret-of-b"}
PREFIXES = {"desa-a": "A", "desa-b": "B"}
NIK = "3201231708900001"  # well-formed: Jawa Barat, born 17 Aug 1990
PHONE_A = "+6281111111111"
PHONE_B = "+6282222222222"


@functools.cache
def engine():
    root = data_root()
    return Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id")


def centre_app(data_dir, clock=None, database_url=""):
    """The central backend as `kentongan` makes it: the menus' forms, and the catalogs to render notices."""
    return create_central_app(CentralConfig(data_dir, STAFF, engine().forms("en"), gateways=SECRETS,
                                            prefixes=PREFIXES, clock=clock or MovableClock(),
                                            notice=notice_renderer(engine()), database_url=database_url))


async def field_gateway(tmp_path, gateway_id, central_url):
    """A gateway with its own data directory, its first (automatic) sync round over."""
    config = make_config(tmp_path / gateway_id, gateway__id=gateway_id, gateway__ref_prefix=PREFIXES[gateway_id],
                         sync__secret=SECRETS[gateway_id], central__url=central_url, sync__interval_seconds=3600,
                         sync__timeout_seconds=2)
    gw = await Gateway(config).start()
    await eventually(lambda: gw.app[store_key].call(
        lambda s: s.meta("sync_last_success") or s.meta("sync_last_error")))
    return gw


@contextlib.asynccontextmanager
async def two_gateways(tmp_path, url):
    """Gateways desa-a and desa-b syncing to the central backend at `url`, stopped afterwards."""
    a = await field_gateway(tmp_path, "desa-a", url)
    try:
        b = await field_gateway(tmp_path, "desa-b", url)
        try:
            yield a, b
        finally:
            await b.stop()
    finally:
        await a.stop()


async def register(gw, session, phone):
    """A whole voter registration by USSD; returns its reference (from the gateway's store) and the last screen."""
    screens = await gw.dial(session, "2", NIK, "Siti Aminah", "17081990", "Sukamaju", "1", phone=phone)
    assert screens[-1].startswith("END "), screens[-1]
    latest = await gw.app[store_key].call(lambda s: s.recent_submissions(phone, 1))
    return latest[0]["ref"], screens[-1]


async def staff(url, method, path, **kwargs):
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url + path, headers={"Authorization": f"Bearer {STAFF}"},
                                **kwargs) as response:
            body = await response.text()
            return response.status, json.loads(body) if response.content_type == "application/json" else body


async def local(gw, ref):
    return await gw.app[store_key].call(lambda s: s.submission(ref))


async def notices(gw, phone):
    rows = await gw.app[store_key].call(lambda s: s.outbox.messages(phone))
    return [row["body"] for row in rows if row["kind"] == "notice"]


async def test_review_second_registration_at_another_gateway_is_held_and_both_phones_hear(tmp_path, central_db):
    async with served(centre_app(tmp_path / "central", database_url=central_db)) as url, \
            two_gateways(tmp_path, url) as (a, b):
        first, told_a = await register(a, "a1", PHONE_A)
        assert (await a.app[syncer_key].round()).accepted == 1
        second, told_b = await register(b, "b1", PHONE_B)
        assert told_b.replace(second, "REF") == told_a.replace(first, "REF")  # nothing said of the other
        assert (await b.app[syncer_key].round()).accepted == 1

        status, listed = await staff(url, "GET", "/api/v1/submissions?status=review")
        assert [(r["ref"], r["review_of"]) for r in listed["submissions"]] == [(second, first)]
        held = listed["submissions"][0]
        assert held["review_reason"] == f"nik already registered in {first}" and held["note"] is None
        assert (await staff(url, "GET", "/api/v1/submissions?status=received"))[1]["submissions"][0]["ref"] == first

        # Gateway B learned the status in that same round, silently; the reason stayed at the centre.
        assert (await local(b, second))["status"] == "review" and (await local(b, second))["note"] is None
        assert await notices(b, PHONE_B) == []
        async with aiohttp.ClientSession() as http:
            pulled = await SyncClient(url, "desa-b", SECRETS["desa-b"], http).pull(0)
        assert [(u["ref"], u["status"], u["note"]) for u in pulled.updates] == [(second, "review", None)]
        assert first not in json.dumps(pulled.updates)

        note = "NIK ini sudah terdaftar. Datang ke kantor desa dengan KTP."
        status, decided = await staff(url, "PATCH", f"/api/v1/submissions/{second}",
                                      json={"status": "rejected", "note": note})
        assert status == 200 and decided["also_notified"] == first
        await a.app[syncer_key].round()
        await b.app[syncer_key].round()
        assert await notices(b, PHONE_B) == [decided["sms"]["text"]]
        assert decided["sms"]["text"] == f"Kentongan: {second} Pendaftaran pemilih kini Ditolak. {note}"
        assert await notices(a, PHONE_A) == [
            f"Kentongan: {first} Pendaftaran pemilih: petugas sudah memutuskan pendaftaran lain dengan NIK "
            f"Anda dari HP lain. Bukan Anda? Datang ke kantor desa."]
        assert (await local(a, first))["status"] == "received"  # its own status did not change
        again = await a.app[syncer_key].round()
        assert (again.updates, again.notices) == (0, 0) and len(await notices(a, PHONE_A)) == 1


async def test_review_two_registrations_offline_at_both_gateways_the_later_arrival_is_held(tmp_path, central_db):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with two_gateways(tmp_path, url) as (a, b):  # the central backend is not up: their first rounds fail
        from_a, _ = await register(a, "a1", PHONE_A)
        from_b, _ = await register(b, "b1", PHONE_B)
        async with served(centre_app(tmp_path / "central", database_url=central_db), port):
            await b.app[syncer_key].round()  # B's link comes back first
            await a.app[syncer_key].round()
            held = (await staff(url, "GET", "/api/v1/submissions?status=review"))[1]["submissions"]
            assert [(r["ref"], r["review_of"]) for r in held] == [(from_a, from_b)]
            assert (await local(a, from_a))["status"] == "review"
            assert (await local(b, from_b))["status"] == "received"

            status, decided = await staff(url, "PATCH", f"/api/v1/submissions/{from_a}",
                                          json={"status": "resolved", "note": "Terdaftar setelah diperiksa."})
            assert status == 200 and decided["also_notified"] == from_b
            await a.app[syncer_key].round()
            await b.app[syncer_key].round()
            assert await notices(a, PHONE_A) == [
                f"Kentongan: {from_a} Pendaftaran pemilih kini Selesai. Terdaftar setelah diperiksa."]
            told_b = await notices(b, PHONE_B)
            assert len(told_b) == 1 and "pendaftaran lain dengan NIK" in told_b[0]


async def test_review_same_answer_notice_respects_stop_and_each_phone_hears_in_its_language(tmp_path, central_db):
    async with served(centre_app(tmp_path / "central", database_url=central_db)) as url, \
            two_gateways(tmp_path, url) as (a, b):
        first, _ = await register(a, "a1", PHONE_A)
        await a.app[syncer_key].round()
        second, _ = await register(b, "b1", PHONE_B)
        await b.app[syncer_key].round()
        await a.app[store_key].call(lambda s: s.set_notices(PHONE_A, False))  # phone A said STOP
        await b.app[store_key].call(lambda s: s.set_language(PHONE_B, "en"))
        await staff(url, "PATCH", f"/api/v1/submissions/{second}", json={"status": "rejected", "note": "Double."})
        summary = await a.app[syncer_key].round()
        assert (summary.updates, summary.notices, summary.suppressed) == (1, 0, 1)
        kept = await a.app[store_key].call(lambda s: s.outbox.messages(PHONE_A))
        assert [(m["kind"], m["state"]) for m in kept] == [("confirmation", "sent"), ("notice", "suppressed")]
        await b.app[syncer_key].round()
        assert await notices(b, PHONE_B) == [f"Kentongan: {second} Voter registration is now Rejected. Double."]


def test_review_existing_duplicates_are_held_when_the_centre_first_claims_them(tmp_path):
    class OldCentralStore(CentralStore):
        MIGRATIONS = MIGRATIONS[:2]

    old = OldCentralStore.open(tmp_path)
    old.db["gateways"].insert({"id": "desa-a", "secret": "s", "created_at": "2026-11-01T00:00:00.000+00:00"})
    for n, (ref, nik) in enumerate([("AAAAA2", NIK), ("AAAAA3", "3201235708900002"), ("AAAAA4", NIK)]):
        # What an older centre accepted with no flag: the same NIK twice.
        old.db["submissions"].insert({
            "id": f"01KB{n:022d}", "gateway_id": "desa-a", "ref": ref, "service": "voter", "channel": "ussd",
            "answers": old.sealer.seal(json.dumps({"nik": nik, "name": "Siti"})), "phone": old.sealer.seal(PHONE_A),
            "language": "id", "village": "", "status": "received", "created_at": f"2026-11-0{n + 1}T00:00:00.000+00:00",
            "received_at": f"2026-11-0{n + 1}T00:00:00.000+00:00", "updated_at": "2026-11-01T00:00:00.000+00:00"})
    old.close()
    uniques = {"voter": ("nik",)}
    store = CentralStore.open(tmp_path, uniques=uniques)
    try:
        assert store.gateway("desa-a")["prefix"] == "A"  # the prefix its references were drawn with
        rows = {r["ref"]: r for r in store.submissions()[0]}
        assert {ref: row["status"] for ref, row in rows.items()} == {
            "AAAAA2": "received", "AAAAA3": "received", "AAAAA4": "review"}
        assert rows["AAAAA4"]["review_of"] == "AAAAA2"
        assert [(u["ref"], u["status"]) for u in store.updates("desa-a", 0)] == [("AAAAA4", "review")]
    finally:
        store.close()
    store = CentralStore.open(tmp_path, uniques=uniques)  # claimed once: opening again changes nothing
    try:
        assert len(store.updates("desa-a", 0)) == 1
    finally:
        store.close()


@pytest.mark.parametrize("length, shortened", [(60, False), (150, True)])
async def test_review_patch_tells_staff_what_the_sms_will_carry(tmp_path, length, shortened, central_db):
    async with served(centre_app(tmp_path / "central", database_url=central_db)) as url:
        a = await field_gateway(tmp_path, "desa-a", url)
        try:
            ref, _ = await register(a, "a1", PHONE_A)
            await a.app[syncer_key].round()
            note = ("Silakan datang ke kantor desa hari Kamis pagi dengan KTP dan KK asli untuk pemeriksaan data "
                    "pemilih oleh petugas PPS, terima kasih atas kesabaran Anda semua.")[:length]
            status, answer = await staff(url, "PATCH", f"/api/v1/submissions/{ref}",
                                         json={"status": "in_progress", "note": note})
            assert status == 200 and answer["note"] == note  # stored whole
            assert answer["sms"]["note_shortened"] is shortened
            assert (note in answer["sms"]["text"]) is not shortened
            assert len(answer["sms"]["text"]) <= 160
            await a.app[syncer_key].round()
            assert await notices(a, PHONE_A) == [answer["sms"]["text"]]  # the very text the phone gets
            assert (await local(a, ref))["note"] == note
        finally:
            await a.stop()


async def test_review_patch_refuses_a_note_past_the_limit_and_names_it(tmp_path, central_db):
    async with served(centre_app(tmp_path / "central", database_url=central_db)) as url:
        status, text = await staff(url, "PATCH", "/api/v1/submissions/AAAAA2",
                                   json={"status": "resolved", "note": "x" * 501})
        assert status == 400 and text == "note must be text of at most 500 characters (this one has 501)"
        status, body = await staff(url, "PATCH", "/api/v1/submissions/AAAAA2", json={"status": "resolved"})
        assert status == 404
