"""Is it fixed? A resolved report's notice asks; the villager answers by SMS or on the USSD status screen, once
per request; the answer travels with the next sync and "not fixed" reopens the request at the central backend."""

import aiohttp
import pytest

from conftest import PHONE, Gateway, served
from flows.text import USSD_LIMIT, sms_segments
from gateway.resources import engine_key, rules_key, store_key, syncer_key
from gateway.turn import change_status
from test_central_review import SECRETS, STAFF, centre_app
from test_sms import outbox, report_by_ussd, reply_to, sms


pytestmark = pytest.mark.backends

OTHER = "+254711082300"


async def resolve(gw, ref, note="Lubang sudah ditambal."):
    app = gw.app
    return await app[store_key].call(change_status, app[engine_key], app[rules_key], ref, "resolved", note)


async def answers(gw):
    return await gw.app[store_key].call(lambda s: s.db.execute(
        "SELECT s.ref, f.fixed, f.rating, f.channel, f.sync_state FROM feedback f "
        "JOIN submissions s ON s.id = f.submission_id ORDER BY f.id").fetchall())


async def notices(gw, phone=PHONE):
    return [r["body"] for r in await outbox(gw, phone) if r["kind"] == "notice"]


async def test_feedback_resolved_notice_asks_and_an_sms_answer_counts_once(sms_gateway, standin):
    ref = await report_by_ussd(sms_gateway)
    assert await resolve(sms_gateway, ref) == "queued"
    [notice] = await notices(sms_gateway)
    assert notice == (f"Kentongan: {ref} Laporan masalah kini Selesai. Sudah beres? Balas 1 ya atau 2 belum, "
                      f"dan nilai 1-5 (mis. 1 5). Lubang sudah ditambal.")
    assert sms_segments(notice) == ("GSM-7", 1)

    thanks = await reply_to(sms_gateway, standin, "2 1 lubangnya masih ada")
    assert thanks == f"Kentongan: terima kasih. Kami sampaikan ke kantor bahwa {ref} belum beres."
    assert await reply_to(sms_gateway, standin, "1 5") == (
        f"Kentongan: jawaban Anda untuk {ref} sudah tercatat sebelumnya. Terima kasih.")
    assert await answers(sms_gateway) == [(ref, 0, 1, "sms", "pending")]
    words = await sms_gateway.app[store_key].call(lambda s: s.pending_feedback(10))
    assert [(w["ref"], w["fixed"], w["rating"], w["words"]) for w in words] == [
        (ref, False, 1, "lubangnya masih ada")]


@pytest.mark.parametrize("text", ["3", "1 7", "2 10 masih rusak", "125", "0"])
async def test_feedback_a_wrong_answer_gets_how_to_answer(sms_gateway, standin, text):
    ref = await report_by_ussd(sms_gateway)
    await resolve(sms_gateway, ref)
    usage = await reply_to(sms_gateway, standin, text)
    assert usage.startswith('Kentongan: untuk menjawab "sudah beres?" balas 1 (beres) atau 2 (belum)')
    assert await answers(sms_gateway) == []


async def test_feedback_names_an_older_request_by_its_reference(sms_gateway, standin):
    older = await report_by_ussd(sms_gateway, "a")
    newer = await report_by_ussd(sms_gateway, "b")
    await resolve(sms_gateway, older)
    await resolve(sms_gateway, newer)
    await sms_gateway.app[store_key].call(lambda s: s.set_language(PHONE, "en"))
    assert await reply_to(sms_gateway, standin, f"1 4 {older.lower()} thank you") == (
        f"Kentongan: thank you! Your answer on {older} is noted: fixed.")
    assert await reply_to(sms_gateway, standin, "15") == f"Kentongan: thank you! Your answer on {newer} is noted: fixed."
    assert sorted(await answers(sms_gateway)) == sorted([(older, 1, 4, "sms", "pending"), (newer, 1, 5, "sms", "pending")])
    words = {w["ref"]: w["words"] for w in await sms_gateway.app[store_key].call(lambda s: s.pending_feedback(10))}
    assert words == {older: "thank you", newer: ""}


async def test_feedback_digits_from_a_phone_with_nothing_resolved_get_the_usual_help(sms_gateway, standin):
    ref = await report_by_ussd(sms_gateway)
    assert (await reply_to(sms_gateway, standin, "1")).startswith("Kentongan: CEK <kode>")
    await resolve(sms_gateway, ref)
    assert (await reply_to(sms_gateway, standin, "1", phone=OTHER)).startswith("Kentongan: CEK <kode>")
    assert await answers(sms_gateway) == []


async def test_feedback_usage_counts_toward_the_cap_the_thanks_does_not(sms_gateway, standin):
    ref = await report_by_ussd(sms_gateway)
    await resolve(sms_gateway, ref)
    for n in range(6):
        assert (await sms(sms_gateway, "9", message_id=f"loop-{n}"))[0] == 200
    assert await reply_to(sms_gateway, standin, "1") == f"Kentongan: terima kasih! Jawaban Anda untuk {ref} dicatat: sudah beres."
    rows = {r["cause"]: r["state"] for r in await outbox(sms_gateway, PHONE)}
    assert "suppressed" in {rows[f"loop-{n}"] for n in range(6)}


async def test_feedback_registrations_are_not_asked(sms_gateway):
    await sms_gateway.dial("v", "2", "3201231708900001", "Siti Aminah", "17081990", "Sukamaju", "1")
    [row] = await sms_gateway.app[store_key].call(lambda s: s.recent_submissions(PHONE, 1))
    await resolve(sms_gateway, row["ref"], "Terdaftar.")
    assert await notices(sms_gateway) == [f"Kentongan: {row['ref']} Pendaftaran pemilih kini Selesai. Terdaftar."]


@pytest.mark.parametrize("lang, fixed_label", [("1", "Sudah beres"), ("2", "Fixed"), ("3", "Imerekebishwa")])
async def test_feedback_on_the_ussd_status_screen(gateway, lang, fixed_label):
    ref = await report_by_ussd(gateway, "r")
    await gateway.dial("l", "5", lang)
    await resolve(gateway, ref)
    screens = await gateway.dial("c", "4", "2", ref, "2", "1")
    assert all(len(s) <= USSD_LIMIT for s in screens), [len(s) for s in screens]
    assert f"1. {fixed_label}" in screens[3] and screens[3].startswith("CON ")
    assert screens[4].startswith("CON ") and "6. " in screens[4]
    assert screens[5].startswith("END ")
    assert await answers(gateway) == [(ref, 0, 1, "ussd", "pending")]
    again = await gateway.dial("d", "4", "2", ref)  # answered: no more offer
    assert fixed_label not in again[-1] and "1. " not in again[-1]


async def test_feedback_ussd_rating_may_be_skipped_and_a_wrong_key_re_asks(gateway):
    ref = await report_by_ussd(gateway, "r")
    await resolve(gateway, ref)
    screens = await gateway.dial("c", "4", "2", ref, "7", "1", "9", "6")
    assert screens[4].startswith("CON Pilihan tidak ada.")
    assert screens[6].startswith("CON Pilihan tidak ada.") and screens[7].startswith("END ")
    assert await answers(gateway) == [(ref, 1, None, "ussd", "pending")]


async def test_feedback_travels_with_the_next_sync_and_not_fixed_reopens(tmp_path, standin, backend):
    from conftest import sms_config

    async with served(centre_app(tmp_path / "central")) as url:
        config = sms_config(tmp_path / "desa-a", standin, gateway__id="desa-a", gateway__ref_prefix="A",
                            sync__secret=SECRETS["desa-a"], central__url=url, sync__interval_seconds=3600,
                            **backend)
        gw = await Gateway(config).start()
        try:
            ref = await report_by_ussd(gw)
            await gw.app[syncer_key].round()
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {STAFF}"}) as http:
                async with http.patch(f"{url}/api/v1/submissions/{ref}",
                                      json={"status": "resolved", "note": "Sudah ditambal."}) as response:
                    assert response.status == 200
                await gw.app[syncer_key].round()
                assert "Sudah beres?" in (await notices(gw))[0]
                await reply_to(gw, standin, "2 1 lubangnya masih ada")
                summary = await gw.app[syncer_key].round()
                assert summary.feedback == 1
                assert await answers(gw) == [(ref, 0, 1, "sms", "synced")]
                async with http.get(f"{url}/api/v1/submissions/{ref}") as response:
                    central = await response.json()
                assert central["status"] == "in_progress"
                assert (await gw.app[store_key].call(lambda s: s.submission(ref)))["status"] == "in_progress"
                assert len(await notices(gw)) == 1  # the villager's own "not fixed" sends no notice
                assert (await gw.app[syncer_key].round()).feedback == 0
        finally:
            await gw.stop()
