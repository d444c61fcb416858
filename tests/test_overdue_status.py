"""A request past its deadline: CEK / STATUS by SMS and the USSD status screen say so in one line, in the
caller's language, and name the agency that holds it now (from the central backend's updates)."""

import datetime as dt

import pytest

from conftest import PHONE
from flows.text import USSD_LIMIT
from gateway.resources import engine_key, rules_key, store_key
from gateway.syncer import apply_updates
from test_sms import report_by_ussd, reply_to

AGENCY = "Dinas Pekerjaan Umum dan Penataan Ruang Kabupaten"
LINE = {"id": f"Lewat batas waktu; kini ditangani {AGENCY}",
        "en": f"Past its deadline; now handled by {AGENCY}"}


async def update(gw, ref, seq, status="in_progress", **extra):
    app = gw.app
    return await app[store_key].call(apply_updates, app[engine_key], app[rules_key],
                                      [{"seq": seq, "ref": ref, "status": status, "note": "", **extra}])


def stamp(gw, **delta):
    return (gw.clock() + dt.timedelta(**delta)).isoformat()


@pytest.mark.parametrize("word, lang", [("CEK", "id"), ("STATUS", "en")])
async def test_overdue_status_by_sms_says_so_and_names_the_agency(sms_gateway, standin, word, lang):
    ref = await report_by_ussd(sms_gateway)
    await update(sms_gateway, ref, 1, agency=AGENCY, due_at=stamp(sms_gateway, hours=-2), overdue=True)
    answer = await reply_to(sms_gateway, standin, f"{word} {ref}")
    assert answer.split("\n")[1] == LINE[lang] and answer.startswith(f"Kentongan: {ref} ")
    assert len(answer) <= 160


async def test_overdue_status_not_yet_due_says_nothing_then_the_deadline_passes(sms_gateway, standin):
    ref = await report_by_ussd(sms_gateway)
    await update(sms_gateway, ref, 1, agency=AGENCY, due_at=stamp(sms_gateway, hours=1), overdue=False)
    assert "\n" not in await reply_to(sms_gateway, standin, f"CEK {ref}")
    sms_gateway.advance(hours=2)  # no update comes the moment a deadline passes
    assert (await reply_to(sms_gateway, standin, f"CEK {ref}")).split("\n")[1] == LINE["id"]


async def test_overdue_status_resolved_is_no_longer_late(sms_gateway, standin):
    ref = await report_by_ussd(sms_gateway)
    await update(sms_gateway, ref, 1, agency=AGENCY, due_at=stamp(sms_gateway, hours=-2), overdue=True)
    await update(sms_gateway, ref, 2, status="resolved", agency=AGENCY, due_at=stamp(sms_gateway, hours=-2),
                 overdue=False)
    assert "Lewat batas" not in await reply_to(sms_gateway, standin, f"CEK {ref}")


@pytest.mark.parametrize("lang, key", [("id", "1"), ("en", "2"), ("sw", "3")])
async def test_overdue_status_on_the_ussd_screens(gateway, lang, key):
    ref = await report_by_ussd(gateway, "r")
    await gateway.dial("l", "5", key)
    await update(gateway, ref, 1, agency=AGENCY * 2, due_at=stamp(gateway, hours=-1), overdue=True,
                 note="Petugas sudah meninjau lokasi dan menunggu material dari gudang kabupaten minggu depan.")
    by_ref = await gateway.dial("a", "4", "2", ref, "98")  # a long agency and note: the screen pages
    recent = await gateway.dial("b", "4", "1", "98")
    for screen in (*by_ref, *recent):
        assert len(screen) <= USSD_LIMIT, (len(screen), screen)
    words = {"id": "Lewat batas waktu", "en": "Past its deadline", "sw": "Imepita muda wake"}[lang]
    assert words in "".join(by_ref[-2:]) and words in "".join(recent[-2:])
    assert AGENCY[:40] in "".join(by_ref[-2:])


async def test_overdue_status_without_agency_and_a_malformed_deadline(sms_gateway, standin):
    ref = await report_by_ussd(sms_gateway)
    applied = await update(sms_gateway, ref, 1, due_at="next tuesday", overdue=True)
    assert applied.updates == 1
    assert (await sms_gateway.app[store_key].call(lambda s: s.submission(ref)))["status"] == "in_progress"
    await update(sms_gateway, ref, 2, overdue=True, note="Menunggu material.")
    answer = await reply_to(sms_gateway, standin, f"CEK {ref}")
    assert answer.split("\n")[1] == "Lewat batas waktu"


async def test_overdue_older_central_without_the_keys_leaves_nothing_late(sms_gateway, standin):
    ref = await report_by_ussd(sms_gateway)
    await update(sms_gateway, ref, 1)
    row = await sms_gateway.app[store_key].call(lambda s: s.find_submission(ref, PHONE))
    assert (row["agency"], row["due_at"], row["overdue"]) == (None, None, 0)
