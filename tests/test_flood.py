"""The flood test: one number, 1,000 USSD sessions that each try to file a whole report, then 1,000 SMS
reports; with the default limits the store and the outbox stay bounded.

Run with `pytest -s` to see the figures.
"""

import os

from conftest import PHONE, eventually, our_errors
from gateway.resources import store_key

FLOOD = 1000
REPORT = ("1", "1", "Dusun Kidul", "Jalan berlubang", "1")
SESSIONS_PER_HOUR, SMS_PER_HOUR, PER_DAY = 20, 30, 5  # the defaults of limits.*


async def figures(gw) -> dict:
    def count(store):
        def one(sql):
            return store.db.execute(sql).fetchone()[0]

        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"submissions": one("SELECT count(*) FROM submissions"),
                "held": one("SELECT count(*) FROM submissions WHERE status = 'review'"),
                "sessions": one("SELECT count(*) FROM ussd_sessions"),
                "outbox": one("SELECT count(*) FROM outbox"),
                "sms_ids": one("SELECT count(*) FROM sms_inbound"),
                "db_bytes": os.path.getsize(store.path)}

    return await gw.app[store_key].call(count)


async def test_a_thousand_ussd_sessions_from_one_number(sms_gateway, standin, caplog):
    gw = sms_gateway
    ended = 0
    for n in range(FLOOD):
        screen = await gw.hop(f"flood-{n}", "")
        history = []
        for typed in REPORT:
            if screen.startswith("END "):
                break
            history.append(typed)
            screen = await gw.hop(f"flood-{n}", "*".join(history))
        ended += "Kode:" in screen
    seen = await figures(gw)
    print(f"\nUSSD flood: {FLOOD} sessions from one number -> {ended} references given, {seen}")
    assert ended == seen["submissions"] == SESSIONS_PER_HOUR
    assert seen["held"] == SESSIONS_PER_HOUR - PER_DAY
    assert seen["sessions"] == SESSIONS_PER_HOUR
    assert seen["outbox"] == PER_DAY  # one confirmation each, none for the held
    await eventually(lambda: len(standin.received) == PER_DAY)
    assert seen["db_bytes"] < 1_000_000
    assert our_errors(caplog.records) == []


async def test_a_thousand_sms_reports_from_one_number(sms_gateway, standin, caplog):
    gw = sms_gateway
    for n in range(FLOOD):
        status, body, _ = await gw.post("/sms/africastalking/inbound", {
            "from": PHONE, "to": "21525", "text": f"LAPOR JALAN Sukamaju: lubang besar nomor {n}",
            "date": "2026-11-28 10:00:00", "id": f"flood-{n}", "linkId": "", "networkCode": "51010"})
        assert status == 200, body
    seen = await figures(gw)
    print(f"\nSMS flood: {FLOOD} SMS reports from one number -> {seen}, {len(standin.received)} SMS sent")
    assert seen["submissions"] == SMS_PER_HOUR
    assert seen["held"] == SMS_PER_HOUR - PER_DAY
    assert seen["outbox"] == PER_DAY + 2  # confirmations, one "held" SMS, one "too many" SMS
    assert seen["sms_ids"] == FLOOD  # only the ids, to tell a redelivery; forgotten after 7 days
    await eventually(lambda: len(standin.received) == PER_DAY + 2)
    assert seen["db_bytes"] < 1_000_000
    assert our_errors(caplog.records) == []
