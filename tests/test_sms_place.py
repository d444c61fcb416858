"""An SMS report without a place waits for it: one question, the reply completes it, or it expires."""

import re

import pytest

from conftest import PHONE, Gateway, eventually, sms_config
from gateway.resources import store_key
from test_sms import outbox, reply_to
from test_sms_keywords import submissions


pytestmark = pytest.mark.backends

ASK = "Kentongan: Di mana tempatnya? Balas SMS ini dengan nama tempat saja, contoh: Sukamaju RT 02. " \
      "Laporan Anda menunggu {minutes} menit."
HELP = "Kentongan: CEK <kode>"


def reference(confirmation):
    return re.search(r" (\w{6,8})\. ", confirmation).group(1)


async def submission(gateway, ref):
    return await gateway.app[store_key].call(lambda store: store.submission(ref))


async def waiting(gateway):
    return await gateway.app[store_key].call(lambda store: store.counts()["sms_reports_waiting"])


@pytest.fixture
async def short_wait(tmp_path, standin, clock, backend):
    """A gateway whose SMS reports wait 5 minutes for their place."""
    gw = await Gateway(sms_config(tmp_path / "var", standin, sms__pending_minutes=5, **backend), clock).start()
    yield gw
    await gw.stop()


async def test_sms_report_without_a_place_asks_once_and_the_next_sms_completes_it(sms_gateway, standin):
    asked = await reply_to(sms_gateway, standin, "LAPOR JALAN lubang besar dekat masjid")
    assert asked == ASK.format(minutes=60)
    assert await submissions(sms_gateway) == []  # staff get nothing without a place
    # The draft is the caller's own words: sealed at rest.
    drafts = await sms_gateway.app[store_key].call(
        lambda store: store.db.execute("SELECT draft FROM sms_pending").fetchall())
    assert len(drafts) == 1 and "lubang" not in drafts[0][0]

    confirmation = await reply_to(sms_gateway, standin, "  Sukamaju RT 02 ")
    assert confirmation.startswith("Kentongan: Laporan masalah diterima")
    found = await submission(sms_gateway, reference(confirmation))
    assert found["channel"] == "sms" and found["language"] == "id"
    assert found["answers"] == {"category": "road", "location": "Sukamaju RT 02",
                                "description": "lubang besar dekat masjid"}
    assert standin.bodies(PHONE) == [asked, confirmation]  # one question, then the reference
    assert await waiting(sms_gateway) == 0
    # The report is complete: the next text is no place any more.
    assert (await reply_to(sms_gateway, standin, "Dusun Kidul")).startswith(HELP)


async def test_sms_report_place_is_checked_like_the_ussd_address(sms_gateway, standin):
    assert await reply_to(sms_gateway, standin, "REPORT LIGHT broken for a week") == \
        "Kentongan: Where is it? Reply to this SMS with the place only, e.g. Sukamaju. Your report waits 60 minutes."
    assert await reply_to(sms_gateway, standin, "ab") == \
        "Kentongan: Place not accepted. At least 3 letters. Reply with the place only, e.g. Sukamaju."
    assert (await reply_to(sms_gateway, standin, "x" * 41)).startswith(
        "Kentongan: Place not accepted. At most 40 letters.")
    ref = reference(await reply_to(sms_gateway, standin, "Dusun Kidul"))
    assert (await submission(sms_gateway, ref))["answers"]["location"] == "Dusun Kidul"

    # A place given in the message but not taken is asked for again; the rest of the report waits.
    assert (await reply_to(sms_gateway, standin, "RIPOTI MAJI ab: bomba limevunjika")).startswith(
        "Kentongan: Jina la mahali halikukubaliwa. Angalau herufi 3.")
    ref = reference(await reply_to(sms_gateway, standin, "Sukamaju"))
    found = await submission(sms_gateway, ref)
    assert found["answers"] == {"category": "water", "location": "Sukamaju", "description": "bomba limevunjika"}
    assert len(await submissions(sms_gateway)) == 2


async def test_sms_report_waits_through_other_keywords_and_a_new_report_replaces_it(sms_gateway, standin):
    assert await reply_to(sms_gateway, standin, "LAPOR JALAN lubang besar") == ASK.format(minutes=60)
    assert "Belum ada kiriman dari nomor HP ini." in await reply_to(sms_gateway, standin, "CEK")
    assert (await reply_to(sms_gateway, standin, "BANTUAN")).startswith(HELP)
    assert await reply_to(sms_gateway, standin, "LAPOR LAMPU mati sejak kemarin") == ASK.format(minutes=60)
    ref = reference(await reply_to(sms_gateway, standin, "Sukamaju"))
    assert (await submission(sms_gateway, ref))["answers"] == {
        "category": "streetlight", "location": "Sukamaju", "description": "mati sejak kemarin"}

    # A report sent whole while another waits: the waiting one was a first try of it, and goes.
    await reply_to(sms_gateway, standin, "LAPOR AIR pipa bocor")
    await reply_to(sms_gateway, standin, "LAPOR AIR Sukamaju: pipa bocor")
    assert (await reply_to(sms_gateway, standin, "Dusun Kidul")).startswith(HELP)
    assert len(await submissions(sms_gateway)) == 2


async def test_sms_report_expires_after_the_configured_wait_and_is_purged(short_wait, standin):
    gw = short_wait
    assert await reply_to(gw, standin, "LAPOR JALAN lubang besar") == ASK.format(minutes=5)
    gw.advance(minutes=6)
    assert await reply_to(gw, standin, "Sukamaju") == (
        "Kentongan: Laporan tidak tersimpan karena tempatnya tidak dikirim dalam 5 menit. "
        "Kirim dalam satu SMS: LAPOR JALAN Sukamaju: lubang besar")
    assert await submissions(gw) == []
    assert (await reply_to(gw, standin, "Sukamaju")).startswith(HELP)  # told once

    # One nobody answers is deleted by the gateway's housekeeping, which runs at start and hourly.
    await reply_to(gw, standin, "LAPOR JALAN lubang besar")
    gw.advance(hours=2)
    await gw.restart()
    assert await waiting(gw) == 1  # expired, kept a while so that a late place is told so
    gw.advance(days=1)
    await gw.restart()

    async def purged():
        return await waiting(gw) == 0

    await eventually(purged)
    assert (await reply_to(gw, standin, "Sukamaju")).startswith(HELP)
    assert [r["kind"] for r in await outbox(gw, PHONE)].count("confirmation") == 0
