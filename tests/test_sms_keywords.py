"""Keyword commands by SMS, in every language, answered through the real SDK."""

import re

import pytest

from conftest import PHONE, eventually
from gateway.resources import engine_key, rules_key, store_key
from gateway.turn import change_status
from test_sms import after_everything_queued_so_far, outbox, report_by_ussd, reply_to, sent, sms


pytestmark = pytest.mark.backends

OTHER = "+254711082300"
LANG_OF = {"CEK": "id", "STATUS": "en", "HALI": "sw"}
RECEIVED = {"id": "Diterima", "en": "Received", "sw": "Imepokelewa"}
NOT_FOUND = {"id": "Kentongan: Kode itu tidak ditemukan untuk nomor HP ini.",
             "en": "Kentongan: That reference was not found for this phone number.",
             "sw": "Kentongan: Kumbukumbu hiyo haikupatikana kwa simu hii."}
HELP_START = {"id": "Kentongan: CEK <kode>", "en": "Kentongan: STATUS <ref>", "sw": "Kentongan: HALI <kumbukumbu>"}


async def submissions(gateway):
    return await gateway.app[store_key].call(
        lambda store: [dict(zip(("ref", "channel"), row)) for row in
                       store.db.execute("SELECT ref, channel FROM submissions ORDER BY created_at").fetchall()])


@pytest.mark.parametrize("word", ["CEK", "STATUS", "HALI"])
async def test_keyword_status_of_own_reference(sms_gateway, standin, word):
    ref = await report_by_ussd(sms_gateway)
    lang = LANG_OF[word]
    answer = await reply_to(sms_gateway, standin, f"  {word.lower()}   {ref[:3]} {ref[3:].lower()} ")
    assert answer.startswith(f"Kentongan: {ref} ") and RECEIVED[lang] in answer


@pytest.mark.parametrize("word", ["CEK", "STATUS", "HALI"])
async def test_keyword_status_of_another_phones_reference_reveals_nothing(sms_gateway, standin, word):
    ref = await report_by_ussd(sms_gateway, phone=OTHER)
    answer = await reply_to(sms_gateway, standin, f"{word} {ref}")
    assert answer == NOT_FOUND[LANG_OF[word]]


@pytest.mark.parametrize("word", ["CEK", "STATUS", "HALI"])
async def test_keyword_status_of_a_wrong_reference(sms_gateway, standin, word):
    assert await reply_to(sms_gateway, standin, f"{word} 12") == NOT_FOUND[LANG_OF[word]]


async def test_keyword_status_alone_gives_the_latest(sms_gateway, standin):
    assert await reply_to(sms_gateway, standin, "STATUS") == "Kentongan: No submissions from this phone number yet."
    await report_by_ussd(sms_gateway, "a")
    latest = await report_by_ussd(sms_gateway, "b")
    assert (await reply_to(sms_gateway, standin, "cek")).startswith(f"Kentongan: {latest} Laporan masalah: Diterima")


@pytest.mark.parametrize("word, lang", [("HELP", "en"), ("BANTUAN", "id"), ("MSAADA", "sw"), ("help!", "en")])
async def test_keyword_help(sms_gateway, standin, word, lang):
    assert (await reply_to(sms_gateway, standin, word)).startswith(HELP_START[lang])


@pytest.mark.parametrize("text", ["", "   ", "halo apa kabar", "x" * 4000, "✓✓✓"])
async def test_keyword_unknown_or_empty_gets_usage_in_callers_language(sms_gateway, standin, text):
    assert (await reply_to(sms_gateway, standin, text)).startswith(HELP_START["id"])
    await sms_gateway.dial("lang", "5", "3")
    assert (await reply_to(sms_gateway, standin, text)).startswith(HELP_START["sw"])


@pytest.mark.parametrize("text, lang, category, place, description", [
    ("LAPOR JALAN Sukamaju: lubang besar dekat masjid", "id", "road", "Sukamaju", "lubang besar dekat masjid"),
    ("report light Dusun Kidul: broken near the mosque", "en", "streetlight", "Dusun Kidul",
     "broken near the mosque"),
    ("Ripoti MAJI  Sukamaju RT 02 :bomba limevunjika", "sw", "water", "Sukamaju RT 02", "bomba limevunjika"),
    ("lapor: sampah Pasar Baru: numpuk sejak 07:30", "id", "garbage", "Pasar Baru", "numpuk sejak 07:30"),
])
async def test_keyword_report_in_one_message_makes_a_submission_with_its_place(
        sms_gateway, standin, text, lang, category, place, description):
    answer = await reply_to(sms_gateway, standin, text)
    ref = re.search(r" (\w{6,8})\. ", answer).group(1)
    assert answer.startswith("Kentongan: ")
    found = await sms_gateway.app[store_key].call(lambda store: store.submission(ref))
    assert found["channel"] == "sms" and found["language"] == lang and found["service"] == "report"
    assert found["answers"] == {"category": category, "location": place, "description": description}


@pytest.mark.parametrize("text, start", [
    ("LAPOR", "Kentongan: Tulis LAPOR JALAN/LAMPU"),
    ("LAPOR JALAN", "Kentongan: Tulis LAPOR JALAN/LAMPU"),
    ("LAPOR JALAN Sukamaju:", "Kentongan: Tulis LAPOR JALAN/LAMPU"),
    ("LAPOR SUNGAI Sukamaju: meluap", "Kentongan: Tulis LAPOR JALAN/LAMPU"),
    ("REPORT ROAD Sukamaju: ab", "Kentongan: Report not stored. At least 3 letters."),
    ("RIPOTI BARABARA Sukamaju: 😀😀", "Kentongan: Ripoti haikuhifadhiwa. Jibu haliwezi kuwa tupu."),
])
async def test_keyword_report_refuses_bad_input_clearly(sms_gateway, standin, text, start):
    assert (await reply_to(sms_gateway, standin, text)).startswith(start)
    assert await submissions(sms_gateway) == []


async def test_keyword_report_description_may_fill_one_message_and_the_refusal_names_the_limit(
        sms_gateway, standin):
    head = "LAPOR JALAN Sukamaju: "
    fits = ("Lubang besar di tengah jalan dekat masjid, sudah tiga motor jatuh minggu ini, "
            "mohon segera ditimbun sebelum musim hujan datang lagi ya pak!!")[:160 - len(head)]
    assert len(head + fits) == 160 and len(fits) > 100  # more than the USSD screen's 100

    answer = await reply_to(sms_gateway, standin, head + fits)
    ref = re.search(r" (\w{6,8})\. ", answer).group(1)
    found = await sms_gateway.app[store_key].call(lambda store: store.submission(ref))
    assert found["answers"]["description"] == fits

    refused = await reply_to(sms_gateway, standin, head + fits + "!")
    assert refused == "Kentongan: Laporan tidak tersimpan. Maksimal 138 huruf."
    # Without a place the message has more room: the limit counts what this message carries.
    assert (await reply_to(sms_gateway, standin, "REPORT ROAD " + "x" * 149)) == \
        "Kentongan: Report not stored. At most 148 letters."
    assert len(await submissions(sms_gateway)) == 1

    # The USSD screen keeps the menu's limit.
    screens = await sms_gateway.dial("u", "1", "1", "Sukamaju", "y" * 101)
    assert "Maksimal 100 huruf" in screens[-1]


@pytest.mark.parametrize("text, reply, lang", [
    ("BAHASA en", "Kentongan: Language saved: English.", "en"),
    ("language SW", "Kentongan: Lugha imehifadhiwa: Kiswahili.", "sw"),
    ("LUGHA Indonesia", "Kentongan: Bahasa disimpan: Indonesia.", "id"),
])
async def test_keyword_language_is_remembered_for_ussd_too(sms_gateway, standin, text, reply, lang):
    assert await reply_to(sms_gateway, standin, text) == reply
    menu = await sms_gateway.hop("after", "")
    assert menu.startswith({"id": "CON Kentongan, layanan", "en": "CON Kentongan village",
                            "sw": "CON Kentongan, huduma"}[lang])


async def test_keyword_language_unknown_gets_usage(sms_gateway, standin):
    assert await reply_to(sms_gateway, standin, "BAHASA klingon") == "Kentongan: Tulis BAHASA id, BAHASA en atau BAHASA sw."


@pytest.mark.parametrize("stop, start", [("STOP", "START"), ("BERHENTI", "MULAI"), ("acha", "anza")])
async def test_keyword_stop_is_honoured_by_later_notices(sms_gateway, standin, stop, start):
    ref = await report_by_ussd(sms_gateway)
    await reply_to(sms_gateway, standin, stop)
    app = sms_gateway.app

    def change(status):
        return app[store_key].call(change_status, app[engine_key], app[rules_key], ref, status, "")

    assert await change("in_progress") == "suppressed"
    assert await reply_to(sms_gateway, standin, start)
    assert await change("resolved") == "queued"
    await eventually(lambda: any("Selesai" in b or "Resolved" in b or "Imetatuliwa" in b
                                 for b in standin.bodies(PHONE)))
    assert not any("Diproses" in b or "In progress" in b or "Inashughulikiwa" in b for b in standin.bodies(PHONE))


async def test_sms_same_id_twice_is_handled_once(sms_gateway, standin):
    first = await sms(sms_gateway, "LAPOR JALAN Sukamaju: lubang besar", message_id="ATXid_same")
    second = await sms(sms_gateway, "LAPOR JALAN Sukamaju: lubang besar", message_id="ATXid_same")
    assert first[0] == second[0] == 200 and "already handled" in second[1]
    await sent(sms_gateway)
    assert len(await submissions(sms_gateway)) == 1
    assert len([r for r in await outbox(sms_gateway) if r["kind"] == "confirmation"]) == 1


async def test_sms_cap_holds_back_only_help_and_unknown_text(sms_gateway, standin):
    for n in range(5):  # the cap: five automatic replies an hour
        await sms(sms_gateway, "HELP", message_id=f"loop-{n}")
    await sent(sms_gateway, 5)

    report = await reply_to(sms_gateway, standin, "LAPOR JALAN Sukamaju: lubang besar dekat masjid")
    ref = re.search(r" (\w{6,8})\. ", report).group(1)
    assert report.startswith("Kentongan: Laporan masalah diterima")
    assert await reply_to(sms_gateway, standin, "STOP") == "Kentongan: You will get no more notices. Send START to get them again."
    assert await reply_to(sms_gateway, standin, "START") == "Kentongan: Notices are on again. Send STOP to end them."
    assert (await reply_to(sms_gateway, standin, f"CEK {ref}")).startswith(f"Kentongan: {ref}")
    assert await reply_to(sms_gateway, standin, "BAHASA en") == "Kentongan: Language saved: English."
    assert (await reply_to(sms_gateway, standin, "LAPOR AIR pipa bocor")).startswith("Kentongan: Where is it?")
    assert " received, reference " in await reply_to(sms_gateway, standin, "Sukamaju RT 02")  # the place

    for n, text in enumerate(["HELP", "halo apa kabar"]):
        assert (await sms(sms_gateway, text, message_id=f"past-{n}"))[0] == 200
    await after_everything_queued_so_far(sms_gateway, standin)
    rows = {r["cause"]: r for r in await outbox(sms_gateway, PHONE)}
    assert [rows[f"past-{n}"]["state"] for n in range(2)] == ["suppressed", "suppressed"]
    assert "automatic replies" in rows["past-0"]["reason"]
    confirmations = [r for r in rows.values() if r["kind"] == "confirmation"]
    assert len(confirmations) == 2 and all(r["state"] == "sent" for r in confirmations)


async def test_sms_automatic_replies_are_capped_per_number(sms_gateway, standin):
    for n in range(7):
        await sms(sms_gateway, "HELP", message_id=f"loop-{n}")
    await sent(sms_gateway, 5)
    states = sorted(r["state"] for r in await outbox(sms_gateway))
    assert states.count("suppressed") == 2 and len(states) == 7
    assert (await reply_to(sms_gateway, standin, "HELP", phone=OTHER)).startswith("Kentongan")


@pytest.mark.parametrize("change, reason", [
    ({"from": None}, "missing form field(s): from"),
    ({"id": None, "text": None}, "missing form field(s): text, id"),
    ({"from": "+0812345"}, "from must be in E.164 form"),
    ({"from": "081234567890"}, "from must be in E.164 form"),   # a national number: neither E.164 nor a short code
    ({"from": "+62 812"}, "from is not a possible phone number"),
    ({"from": "Bad sender name!"}, "from must be in E.164 form"),
    ({"linkId": "L" * 129}, "linkId is longer than 128 characters"),
    ({"linkId": "SampleLinkId123", "to": None}, "to (the short code) is needed with a linkId"),
    ({"text": "x" * 5001}, "text is longer than 5000 characters"),
])
async def test_sms_malformed_inbound_gets_400(sms_gateway, change, reason):
    form = {"from": PHONE, "to": "21525", "text": "HELP", "date": "2026-11-28 10:00:00", "id": "m1",
            "linkId": "", "networkCode": "51010"}
    form = {k: v for k, v in {**form, **change}.items() if v is not None}
    status, body, _ = await sms_gateway.post("/sms/africastalking/inbound", form)
    assert status == 400 and reason in body
