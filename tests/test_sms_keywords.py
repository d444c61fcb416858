"""Keyword commands by SMS, in every language, answered through the real SDK."""

import re

import pytest

from conftest import PHONE, eventually
from gateway.resources import engine_key, rules_key, store_key
from gateway.turn import change_status
from test_sms import outbox, report_by_ussd, reply_to, sent, sms

OTHER = "+254711082300"
LANG_OF = {"CEK": "id", "STATUS": "en", "HALI": "sw"}
RECEIVED = {"id": "Diterima", "en": "Received", "sw": "Imepokelewa"}
NOT_FOUND = {"id": "Nomor itu tidak ditemukan untuk nomor HP ini.",
             "en": "That reference was not found for this phone number.",
             "sw": "Namba hiyo haikupatikana kwa simu hii."}
HELP_START = {"id": "Kentongan: CEK <nomor>", "en": "Kentongan: STATUS <ref>", "sw": "Kentongan: HALI <namba>"}


async def submissions(gateway):
    return await gateway.app[store_key].call(
        lambda store: [dict(zip(("ref", "channel"), row)) for row in
                       store.db.execute("SELECT ref, channel FROM submissions ORDER BY created_at").fetchall()])


@pytest.mark.parametrize("word", ["CEK", "STATUS", "HALI"])
async def test_keyword_status_of_own_reference(sms_gateway, standin, word):
    ref = await report_by_ussd(sms_gateway)
    lang = LANG_OF[word]
    answer = await reply_to(sms_gateway, standin, f"  {word.lower()}   {ref[:3]} {ref[3:].lower()} ")
    assert answer.startswith(f"{ref} ") and RECEIVED[lang] in answer


@pytest.mark.parametrize("word", ["CEK", "STATUS", "HALI"])
async def test_keyword_status_of_another_phones_reference_reveals_nothing(sms_gateway, standin, word):
    ref = await report_by_ussd(sms_gateway, phone=OTHER)
    answer = await reply_to(sms_gateway, standin, f"{word} {ref}")
    assert answer == NOT_FOUND[LANG_OF[word]]


@pytest.mark.parametrize("word", ["CEK", "STATUS", "HALI"])
async def test_keyword_status_of_a_wrong_reference(sms_gateway, standin, word):
    assert await reply_to(sms_gateway, standin, f"{word} 12") == NOT_FOUND[LANG_OF[word]]


async def test_keyword_status_alone_gives_the_latest(sms_gateway, standin):
    assert await reply_to(sms_gateway, standin, "STATUS") == "No submissions from this number yet."
    await report_by_ussd(sms_gateway, "a")
    latest = await report_by_ussd(sms_gateway, "b")
    assert (await reply_to(sms_gateway, standin, "cek")).startswith(f"{latest} Laporan masalah: Diterima")


@pytest.mark.parametrize("word, lang", [("HELP", "en"), ("BANTUAN", "id"), ("MSAADA", "sw"), ("help!", "en")])
async def test_keyword_help(sms_gateway, standin, word, lang):
    assert (await reply_to(sms_gateway, standin, word)).startswith(HELP_START[lang])


@pytest.mark.parametrize("text", ["", "   ", "halo apa kabar", "x" * 4000, "✓✓✓"])
async def test_keyword_unknown_or_empty_gets_usage_in_callers_language(sms_gateway, standin, text):
    assert (await reply_to(sms_gateway, standin, text)).startswith(HELP_START["id"])
    await sms_gateway.dial("lang", "5", "3")
    assert (await reply_to(sms_gateway, standin, text)).startswith(HELP_START["sw"])


@pytest.mark.parametrize("text, lang, category", [
    ("LAPOR JALAN lubang besar depan SD 2", "id", "road"),
    ("report light broken near the mosque", "en", "streetlight"),
    ("Ripoti MAJI bomba limevunjika", "sw", "water"),
    ("lapor: sampah numpuk di pasar", "id", "garbage"),
])
async def test_keyword_report_makes_a_submission(sms_gateway, standin, text, lang, category):
    answer = await reply_to(sms_gateway, standin, text)
    ref = re.search(r" (\w{6,8})\. ", answer).group(1)
    assert answer.startswith("Kentongan: ")
    found = await sms_gateway.app[store_key].call(lambda store: store.submission(ref))
    assert found["channel"] == "sms" and found["answers"]["category"] == category
    assert found["language"] == lang and found["service"] == "report"
    assert found["answers"]["description"] == text.split(" ", 2)[2]


@pytest.mark.parametrize("text, start", [
    ("LAPOR", "Tulis: LAPOR JALAN/LAMPU"),
    ("LAPOR JALAN", "Tulis: LAPOR JALAN/LAMPU"),
    ("LAPOR SUNGAI meluap", "Tulis: LAPOR JALAN/LAMPU"),
    ("REPORT ROAD ab", "At least 3 letters."),
    ("REPORT ROAD " + "very long " * 20, "At most 100 letters."),
    ("RIPOTI BARABARA shimo 😀", "Tumia herufi na tarakimu za kawaida tu."),
])
async def test_keyword_report_refuses_bad_input_clearly(sms_gateway, standin, text, start):
    assert (await reply_to(sms_gateway, standin, text)).startswith(start)
    assert await submissions(sms_gateway) == []


@pytest.mark.parametrize("text, reply, lang", [
    ("BAHASA en", "Language saved: English.", "en"),
    ("language SW", "Lugha imehifadhiwa: Kiswahili.", "sw"),
    ("LUGHA Indonesia", "Bahasa disimpan: Indonesia.", "id"),
])
async def test_keyword_language_is_remembered_for_ussd_too(sms_gateway, standin, text, reply, lang):
    assert await reply_to(sms_gateway, standin, text) == reply
    menu = await sms_gateway.hop("after", "")
    assert menu.startswith({"id": "CON Kentongan, layanan", "en": "CON Kentongan village",
                            "sw": "CON Kentongan, huduma"}[lang])


async def test_keyword_language_unknown_gets_usage(sms_gateway, standin):
    assert await reply_to(sms_gateway, standin, "BAHASA klingon") == "Tulis BAHASA id, BAHASA en atau BAHASA sw."


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
    first = await sms(sms_gateway, "LAPOR JALAN lubang besar", message_id="ATXid_same")
    second = await sms(sms_gateway, "LAPOR JALAN lubang besar", message_id="ATXid_same")
    assert first[0] == second[0] == 200 and "already handled" in second[1]
    await sent(sms_gateway)
    assert len(await submissions(sms_gateway)) == 1
    assert len([r for r in await outbox(sms_gateway) if r["kind"] == "confirmation"]) == 1


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
    ({"from": "0812345"}, "from must be in E.164 form"),
    ({"text": "x" * 5001}, "text is longer than 5000 characters"),
])
async def test_sms_malformed_inbound_gets_400(sms_gateway, change, reason):
    form = {"from": PHONE, "to": "21525", "text": "HELP", "date": "2026-11-28 10:00:00", "id": "m1",
            "linkId": "", "networkCode": "51010"}
    form = {k: v for k, v in {**form, **change}.items() if v is not None}
    status, body, _ = await sms_gateway.post("/sms/africastalking/inbound", form)
    assert status == 400 and reason in body
