"""Privacy at rest: nothing a villager typed can be read in any file either store, its logs or a batch file
leaves on disk.

A real gateway syncs to a real central backend on loopback ports. Every flow
is walked with answers that appear nowhere else (a report, a voter
registration and a permit by USSD, a report with its place by SMS); then
every file under both data directories (databases, WAL and shared-memory
files; key files excepted), the exported batch file and the log are searched
for each answer as UTF-8, UTF-16 (both byte orders) and hex, in any case.
"""

import json
import logging
import re

from conftest import eventually, query_plan, served
from gateway.log import MaskingFilter, mask_phone
from gateway.resources import store_key, syncer_key
from gateway.syncer import export_file
from sync.central import CentralStore
from sync.central.store import MIGRATIONS
from test_central_review import SECRETS, centre_app, field_gateway, staff

PHONE = "+6285790123456"
NIK = "3201231708900001"
PERMIT_NIK = "3201235708900002"
REPORT = {"location": "Gang Melati Tujuh Belas", "description": "Jembatan bambu retak parah"}
VOTER = {"name": "Wiryawan Sastrodiharjo", "birth_date": "17081990", "village": "Kampung Rahasia Indah"}
PERMIT = {"business": "Warung Kopi Lestari Jaya", "kind_other": "Tenun ikat songket",
          "village": "Dusun Cempaka Wangi"}
SMS_REPORT = {"place": "Simpang Kenari Ujung", "description": "Aspal mengelupas sepanjang tikungan"}
TYPED = [NIK, PERMIT_NIK, *REPORT.values(), *VOTER.values(), "1990-08-17", *PERMIT.values(), *SMS_REPORT.values()]
PHONE_FORMS = [PHONE, PHONE[1:], PHONE[3:]]
"""The caller's number as the network sends it, without the plus, and as dialed at home: never in full."""


def encodings(text: str) -> dict[str, bytes]:
    """`text` lower-cased, as each encoding a file could hold it in (hex compared lower-cased too)."""
    text = text.lower()
    return {"utf-8": text.encode(), "utf-16-le": text.encode("utf-16-le"), "utf-16-be": text.encode("utf-16-be"),
            "hex": text.encode().hex().encode()}


def leaks(files, secrets) -> list[str]:
    """Every (file, secret, encoding) where a secret can be read, as `path: 'secret' as encoding` lines."""
    found = []
    for path in files:
        content = path.read_bytes().lower()
        for secret in secrets:
            found += [f"{path.name}: {secret!r} as {name}" for name, needle in encodings(secret).items()
                      if needle in content]
    return found


def store_files(*roots):
    """Every file under `roots` but the key files (which must travel with the databases)."""
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file() and p.suffix != ".key")


class LogFile:
    """What the gateway and the central backend log, masked as `serve` masks it, in a file for the block."""

    def __init__(self, path):
        self.path = path
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.addFilter(MaskingFilter())

    def __enter__(self):
        root = logging.getLogger()
        self.level = root.level
        root.addHandler(self.handler)
        root.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc):
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.level)
        self.handler.close()


def all_sent(rows) -> bool:
    """Whether every SMS to the caller (a confirmation per submission) went out."""
    return len(rows) >= 4 and all(row["state"] == "sent" for row in rows)


async def walk_every_flow(gw):
    """Each flow to its END with the distinctive answers; returns the references."""
    ussd = [("report", ["1", "1", REPORT["location"], REPORT["description"], "1"]),
            ("voter", ["2", NIK, VOTER["name"], VOTER["birth_date"], VOTER["village"], "1"]),
            ("permit", ["3", PERMIT_NIK, PERMIT["business"], "6", PERMIT["kind_other"], PERMIT["village"], "1"])]
    for session, inputs in ussd:
        end = (await gw.dial(session, *inputs, phone=PHONE))[-1]
        assert end.startswith("END ") and re.search(r"\b[A-Z0-9]{6,8}\b", end), end
    status, _, _ = await gw.post("/sms/africastalking/inbound", {
        "from": PHONE, "to": "21525", "text": f"LAPOR JALAN {SMS_REPORT['place']}: {SMS_REPORT['description']}",
        "date": "2026-11-28 10:00:00", "id": "privacy-1", "linkId": "", "networkCode": "51010"})
    assert status == 200
    rows = await eventually(lambda: gw.app[store_key].call(
        lambda s: (r := s.recent_submissions(PHONE, 10)) and len(r) == 4 and r))
    assert {r["service"] for r in rows} == {"report", "voter", "permit"}
    return [r["ref"] for r in rows]


async def test_privacy_at_rest_no_typed_answer_in_any_store_file_log_or_batch_file(tmp_path, capsys):
    batch = tmp_path / "carried" / "desa-a.kbatch"
    batch.parent.mkdir()
    with LogFile(tmp_path / "kentongan.log") as log:
        async with served(centre_app(tmp_path / "central")) as url:
            gw = await field_gateway(tmp_path, "desa-a", url)
            try:
                refs = await walk_every_flow(gw)
                exported = await gw.app[store_key].call(lambda s: export_file(s, "desa-a", SECRETS["desa-a"], batch))
                assert exported[0] == 4
                assert (await gw.app[syncer_key].round()).accepted == 4
                await eventually(lambda: gw.app[store_key].call(lambda s: all_sent(s.outbox.messages(PHONE))))
                _, listed = await staff(url, "GET", "/api/v1/submissions")
                assert sorted(r["ref"] for r in listed["submissions"]) == sorted(refs)
                running = store_files(tmp_path / "desa-a", tmp_path / "central")
                assert {p.name for p in running} >= {"gateway.db", "gateway.db-wal", "central.db", "central.db-wal"}
                while_running = leaks([*running, batch], TYPED + PHONE_FORMS)
            finally:
                await gw.stop()
    sent = capsys.readouterr().out  # the SMS the console provider "sent"
    assert sent.count(f"SMS to {mask_phone(PHONE)}") >= 4
    (tmp_path / "console.log").write_text(sent)
    logs = [log.path, tmp_path / "console.log"]
    assert "desa-a" in log.path.read_text()  # the log was written to: the sync round is in it
    assert while_running == []
    assert leaks(store_files(tmp_path / "desa-a", tmp_path / "central"), TYPED + PHONE_FORMS) == []
    assert leaks(logs, TYPED + PHONE_FORMS) == []


async def test_privacy_at_rest_staff_find_a_village_whatever_its_case_and_spacing(tmp_path):
    async with served(centre_app(tmp_path / "central")) as url:
        gw = await field_gateway(tmp_path, "desa-a", url)
        try:
            await walk_every_flow(gw)
            assert (await gw.app[syncer_key].round()).accepted == 4
        finally:
            await gw.stop()
        status, found = await staff(url, "GET", "/api/v1/submissions", params={"village": "  kampung RAHASIA   indah "})
        assert status == 200
        assert [(r["service"], r["village"], r["answers"]["name"]) for r in found["submissions"]] == [
            ("voter", VOTER["village"], VOTER["name"])]  # shown to staff opened
        _, by_report = await staff(url, "GET", "/api/v1/submissions", params={"village": "gang melati tujuh belas"})
        assert [r["channel"] for r in by_report["submissions"]] == ["ussd"]
        _, none = await staff(url, "GET", "/api/v1/submissions", params={"village": "Kampung Rahasia"})
        assert none["submissions"] == []  # the whole place, not a part of it


def test_privacy_at_rest_an_older_central_store_seals_its_clear_villages_on_opening(tmp_path):
    class OldCentralStore(CentralStore):
        MIGRATIONS = MIGRATIONS[:3]

    old = OldCentralStore.open(tmp_path)
    for n, village in enumerate([VOTER["village"], PERMIT["village"], ""]):
        # What an older centre stored: the address answer in clear, in the column and its index.
        old.db["submissions"].insert({
            "id": f"01KB{n:022d}", "gateway_id": "desa-a", "ref": f"AAAAA{n + 2}", "service": "voter",
            "channel": "ussd", "answers": old.sealer.seal(json.dumps({"village": village})),
            "phone": old.sealer.seal(PHONE), "language": "id", "village": village, "status": "received",
            "created_at": f"2026-11-0{n + 1}T00:00:00.000+00:00", "received_at": "2026-11-01T00:00:00.000+00:00",
            "updated_at": "2026-11-01T00:00:00.000+00:00"})
    old.close()
    store = CentralStore.open(tmp_path)
    try:
        assert leaks(store_files(tmp_path), [VOTER["village"], PERMIT["village"]]) == []
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        rows, _ = store.submissions(village="dusun cempaka  WANGI")
        assert [(r["ref"], r["village"]) for r in rows] == [("AAAAA3", PERMIT["village"])]
        assert {r["ref"]: r["village"] for r in store.submissions()[0]}["AAAAA4"] == ""
        plan = query_plan(store.db, "SELECT * FROM submissions WHERE village_digest = 'x' "
                                    "ORDER BY created_at DESC, id DESC LIMIT 10")
        assert "idx_submissions_village_digest" in plan and "TEMP B-TREE" not in plan
    finally:
        store.close()
    CentralStore.open(tmp_path).close()  # sealed once: opening again finds nothing to seal
