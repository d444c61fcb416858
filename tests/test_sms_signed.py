"""Every SMS the gateway sends begins with the service's name, in every language and on every path."""

import pytest

from conftest import PHONE
from gateway import turn
from gateway.resources import engine_key, rules_key, store_key
from test_sms import outbox, report_by_ussd, sms

COMMANDS = {
    "id": ["BANTUAN", "halo?", "CEK", "CEK KXXXXX", "BAHASA klingon", "BERHENTI", "MULAI",
           "LAPOR JALAN Sukamaju: lubang besar dekat masjid", "LAPOR JALAN lubang besar", "Dusun Kidul",
           "LAPOR", "LAPOR JALAN Su: x", "BAHASA id"],
    "en": ["HELP", "hello?", "STATUS", "STATUS KXXXXX", "LANGUAGE klingon", "STOP", "START",
           "REPORT ROAD Sukamaju: big hole near the mosque", "REPORT ROAD big hole", "Dusun Kidul",
           "REPORT", "REPORT ROAD Su: x", "LANGUAGE en"],
    "sw": ["MSAADA", "habari?", "HALI", "HALI KXXXXX", "LUGHA klingon", "ACHA", "ANZA",
           "RIPOTI BARABARA Sukamaju: shimo kubwa karibu na msikiti", "RIPOTI BARABARA shimo kubwa",
           "Dusun Kidul", "RIPOTI", "RIPOTI BARABARA Su: x", "LUGHA sw"],
}


@pytest.mark.parametrize("lang", COMMANDS)
async def test_every_sms_begins_with_the_service_name(sms_gateway, lang):
    phone = PHONE[:-1] + str(list(COMMANDS).index(lang))
    ref = await report_by_ussd(sms_gateway, phone=phone)  # before a language is chosen: in Indonesian
    for text in COMMANDS[lang]:
        status, _, _ = await sms(sms_gateway, text, phone=phone)
        assert status == 200
    app = sms_gateway.app
    await app[store_key].call(lambda store: turn.change_status(
        store, app[engine_key], app[rules_key], ref, "resolved", "Sudah ditambal oleh dinas pekerjaan umum."))
    await sms(sms_gateway, f"{COMMANDS[lang][2]} {ref}", phone=phone)
    bodies = [row["body"] for row in await outbox(sms_gateway, phone)]
    kinds = {row["kind"] for row in await outbox(sms_gateway, phone)}
    assert kinds == {"reply", "confirmation", "notice"} and len(bodies) >= len(COMMANDS[lang]) + 2
    assert [body for body in bodies if not body.startswith("Kentongan: ")] == []
