"""SMS through the real africastalking SDK, against a loopback stand-in of its API."""

import logging
import re

import pytest

from conftest import PHONE, Gateway, eventually, sms_config
from gateway.resources import store_key


pytestmark = pytest.mark.backends

NIK = "3201234567890123"
OTHER = "+254711082300"


async def outbox(gateway, phone=None):
    """The outbox rows, read in the store's own thread (never beside it)."""
    return await gateway.app[store_key].call(lambda store: store.outbox.messages(phone))


async def state_of_first(gateway):
    return (await outbox(gateway))[0]["state"]


async def state_of_first_is(gateway, state):
    rows = await outbox(gateway)
    return bool(rows) and rows[0]["state"] == state


async def sent(gateway, count=1):
    """Wait until `count` outbox rows are recorded as sent (the stand-in took them first)."""
    async def enough():
        return sum(r["state"] == "sent" for r in await outbox(gateway)) >= count

    await eventually(enough, timeout=30)


async def first_is_waiting_to_retry(gateway):
    rows = await outbox(gateway)
    return bool(rows) and rows[0]["state"] == "queued" and rows[0]["attempts"] == 1


async def report_by_ussd(gateway, session="s", phone=PHONE):
    end = (await gateway.dial(session, "1", "1", "Dusun Kidul", "Jalan berlubang", "1", phone=phone))[-1]
    return re.search(r"Kode: (\w+)\.", end).group(1)


async def sms(gateway, text, phone=PHONE, message_id=None, **extra):
    sms.counter = getattr(sms, "counter", 0) + 1
    form = {"from": phone, "to": "21525", "text": text, "date": "2026-11-28 10:00:00",
            "id": message_id or f"in-{sms.counter}", "linkId": "", "networkCode": "51010", **extra}
    return await gateway.post("/sms/africastalking/inbound", form)


async def reply_to(gateway, standin, text, phone=PHONE, **kwargs):
    """Send `text` by SMS; return the reply, once the stand-in has taken it."""
    sms.counter = getattr(sms, "counter", 0) + 1
    message_id = f"reply-{sms.counter}"
    status, _, _ = await sms(gateway, text, phone, message_id=message_id, **kwargs)
    assert status == 200

    async def sent_reply():
        rows = [r for r in await outbox(gateway) if r["cause"] == message_id and r["state"] == "sent"]
        return rows[0] if rows else None

    row = await eventually(sent_reply)
    assert [m["message"] for m in standin.accepted if m["id"] == row["provider_id"]] == [row["body"]]
    return row["body"]


# -- confirmations through the real SDK -------------------------------------

async def after_everything_queued_so_far(gateway, standin):
    """Send a marker SMS and wait until it went out.

    The sender sends due rows one at a time, oldest first: once a message
    queued now has reached the provider, anything queued before it has had
    its turn. No waiting for something not to happen.
    """
    await reply_to(gateway, standin, "HELP", phone=OTHER)


async def test_sms_ussd_submission_sends_exactly_one_confirmation(sms_gateway, standin):
    ref = await report_by_ussd(sms_gateway)
    await sent(sms_gateway)
    await after_everything_queued_so_far(sms_gateway, standin)
    assert standin.bodies(PHONE) == [f"Kentongan: Laporan masalah diterima, kode {ref}. Cek status: kirim CEK {ref}"]
    assert standin.accepted[0]["to"] == PHONE and standin.accepted[0]["bulkSMSMode"] == "1"
    rows = await outbox(sms_gateway, PHONE)
    assert [(r["kind"], r["state"], r["attempts"]) for r in rows] == [("confirmation", "sent", 1)]
    assert rows[0]["provider_id"] == standin.accepted[0]["id"]


async def test_sms_confirmation_in_callers_language(sms_gateway, standin):
    await sms_gateway.dial("l", "5", "3")
    end = (await sms_gateway.dial("s2", "1", "1", "Dusun Kidul", "Shimo kubwa", "1"))[-1]
    ref = re.search(r"Kumbukumbu: (\w+)\.", end).group(1)
    await sent(sms_gateway)
    assert standin.bodies() == [f"Kentongan: Ripoti ya tatizo imepokelewa, kumbukumbu {ref}. Kwa hali yake tuma HALI {ref}"]


async def test_sms_provider_failures_delay_but_never_lose_or_double(tmp_path, standin, backend):
    # "timeout": no answer until released, long after the gateway gave up waiting (2 s) and tried again.
    standin.plan = ["500", "timeout", "500", "html", "timeout", "500"]
    gw = await Gateway(sms_config(tmp_path, standin, sms__timeout_seconds=2, **backend)).start()
    try:
        refs = [await report_by_ussd(gw, f"s{n}", phone=f"+62812345678{n}0") for n in range(3)]
        await sent(gw, 3)
        # Now the timed-out requests answer, late; nothing may come of them.
        standin.release()
        await eventually(lambda: standin.holding == 0)
        rows = await outbox(gw)
    finally:
        await gw.stop()
    assert len(standin.received) == 3 + 6
    for n, ref in enumerate(refs):
        copies = [b for b in standin.bodies(f"+62812345678{n}0") if ref in b]
        assert len(copies) == 1, (ref, copies)
    assert sorted(r["state"] for r in rows) == ["sent", "sent", "sent"]
    assert sum(r["attempts"] for r in rows) == 3 + 6  # every scripted failure cost exactly one retry


async def test_sms_captive_portal_page_is_not_taken_for_sent(sms_gateway, standin):
    standin.plan = ["html"]
    await report_by_ussd(sms_gateway)
    await sent(sms_gateway)
    row = (await outbox(sms_gateway))[0]
    assert row["state"] == "sent" and row["attempts"] == 2


async def test_sms_blacklisted_number_is_given_up_at_once(sms_gateway, standin):
    standin.plan = [406]
    await report_by_ussd(sms_gateway)
    await eventually(lambda: state_of_first_is(sms_gateway, "dead"))
    await after_everything_queued_so_far(sms_gateway, standin)
    assert [m["to"] for m in standin.received] == [PHONE, OTHER]  # the refused number was tried once
    assert (await outbox(sms_gateway))[0]["reason"] == "406 UserInBlacklist"


async def test_sms_insufficient_balance_is_retried(sms_gateway, standin):
    standin.plan = [405, 405]
    await report_by_ussd(sms_gateway)
    await sent(sms_gateway)
    assert len(standin.received) == 3 and await state_of_first(sms_gateway) == "sent"


async def test_sms_gives_up_after_max_attempts(tmp_path, standin, backend):
    standin.plan = ["500"] * 10
    gw = await Gateway(sms_config(tmp_path, standin, sms__max_attempts=3, **backend)).start()
    try:
        await report_by_ussd(gw)
        await eventually(lambda: state_of_first_is(gw, "dead"))
        row = (await outbox(gw))[0]
        assert row["attempts"] == 3 and "gave up after 3 attempts" in row["reason"]
        assert len(standin.received) == 3
    finally:
        await gw.stop()


async def test_sms_stale_message_expires_instead_of_sending(tmp_path, standin, backend):
    # One failed attempt, then the next one is due in half an hour or more: nothing is in flight.
    standin.plan = ["500"]
    gw = await Gateway(sms_config(tmp_path, standin, sms__retry_seconds=3600, **backend)).start()
    try:
        await report_by_ussd(gw)
        await eventually(lambda: first_is_waiting_to_retry(gw))
        gw.advance(hours=25)  # past the 24 h time-to-live, with the provider working again
        await eventually(lambda: state_of_first_is(gw, "expired"))
        row = (await outbox(gw))[0]
        assert (row["attempts"], row["reason"]) == (1, "waited past its time-to-live")
        assert len(standin.received) == 1 and standin.accepted == []
    finally:
        await gw.stop()


# -- delivery reports ------------------------------------------------------------

async def delivery(gateway, **form):
    return await gateway.post("/sms/africastalking/delivery", form)


async def test_sms_delivery_reports_move_forward_only(sms_gateway, standin):
    await report_by_ussd(sms_gateway)
    await sent(sms_gateway)
    message_id = standin.accepted[0]["id"]
    base = {"id": message_id, "phoneNumber": PHONE, "networkCode": "51010", "retryCount": "0"}
    assert (await delivery(sms_gateway, **base, status="Buffered"))[0] == 200
    assert (await outbox(sms_gateway))[0]["provider_status"] == "Buffered"
    await delivery(sms_gateway, **base, status="Success")
    await delivery(sms_gateway, **base, status="Buffered")
    await delivery(sms_gateway, **base, status="Failed", failureReason="DeliveryFailure")
    row = (await outbox(sms_gateway))[0]
    assert (row["state"], row["provider_status"]) == ("delivered", "Success")


async def test_sms_delivery_failure_is_recorded(sms_gateway, standin):
    await report_by_ussd(sms_gateway)
    await sent(sms_gateway)
    await delivery(sms_gateway, id=standin.accepted[0]["id"], status="Rejected", phoneNumber=PHONE,
                   failureReason="UserInBlacklist", retryCount="1")
    row = (await outbox(sms_gateway))[0]
    assert (row["state"], row["reason"]) == ("failed", "UserInBlacklist")


async def test_sms_delivery_report_for_unknown_id_is_acknowledged(sms_gateway, caplog):
    status, body, _ = await delivery(sms_gateway, id="ATXid_nobody", status="Success", phoneNumber=PHONE)
    assert status == 200 and "unknown" in body
    assert "delivery report for unknown message ATXid_nobody" in caplog.text


async def test_sms_delivery_report_without_id_is_400(sms_gateway):
    status, body, _ = await delivery(sms_gateway, status="Success")
    assert status == 400 and "missing form field(s): id" in body


# -- inbound edge cases ------------------------------------------------------------

@pytest.mark.parametrize("sender", ["MPESA", "Safaricom", "21525", "INFO 24"])
async def test_sms_from_a_sender_name_or_short_code_is_dropped_with_200(sms_gateway, standin, caplog, sender):
    caplog.set_level(logging.INFO, logger="gateway.sms")
    status, body, _ = await sms(sms_gateway, "Promo: pulsa murah, balas YA", phone=sender, message_id="promo-1")
    assert status == 200 and "dropped" in body  # a 4xx would make the aggregator deliver it again
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.sms"]
    assert len(lines) == 1 and sender in lines[0] and "promo-1" in lines[0]
    assert await outbox(sms_gateway) == []
    # Nothing was kept of it, not even its id: the same id from a phone is a new message.
    status, body, _ = await sms(sms_gateway, "HELP", message_id="promo-1")
    assert (status, body) == (200, "OK")


async def test_sms_reply_to_a_premium_message_goes_back_through_its_link(tmp_path, standin, backend):
    gw = await Gateway(sms_config(tmp_path, standin, sms__africastalking__keyword=standin.keyword, **backend)).start()
    try:
        premium = {"to": standin.short_code}
        status = await reply_to(gw, standin, "CEK", linkId="SampleLinkId123", **premium)
        confirmation = await reply_to(gw, standin, "LAPOR JALAN Sukamaju: lubang besar", linkId="Link-456",
                                      **premium)
        plain = await reply_to(gw, standin, "HELP")
        rows = await outbox(gw, PHONE)
    finally:
        await gw.stop()
    sent_as = [(m["message"], m["bulkSMSMode"], m["from"], m["keyword"], m["linkId"]) for m in standin.accepted]
    assert sent_as == [(status, "0", "21525", "KENTONGAN", "SampleLinkId123"),
                       (confirmation, "0", "21525", "KENTONGAN", "Link-456"),
                       (plain, "1", None, None, None)]
    assert [(r["kind"], r["link_id"], r["short_code"]) for r in rows] == [
        ("reply", "SampleLinkId123", "21525"), ("confirmation", "Link-456", "21525"), ("reply", None, None)]
