"""The central backend's own retention: a submission final and unchanged for `central.retention_days` keeps no
personal data, erased once, from the file too; lists still show it."""

import datetime as dt
import json

import aiohttp
import pytest

from conftest import MovableClock, eventually, our_errors, served
from sync.central import CentralConfig, create_central_app
from test_cli import kentongan, write_config
from test_sync import PHONE, SECRET, STAFF, forms, item

YEAR = dt.timedelta(days=365)

pytestmark = pytest.mark.central_backends


def central_config(data_dir, clock, **settings) -> CentralConfig:
    return CentralConfig(data_dir, STAFF, forms(), gateways={"desa-1": SECRET}, prefixes={"desa-1": "K"},
                         clock=clock, **settings)


def made(store, statuses: dict[int, str]) -> dict[int, str]:
    """Submissions `n` from gateway desa-1 (a place "Dusun n" each), set to their statuses; their refs by n."""
    results = store.ingest("desa-1", [item(n, answers={"category": "road", "location": f"Gang Melati {n}",
                                                       "description": f"Rusak parah {n}"}) for n in statuses])
    assert {r["result"] for r in results} == {"accepted"}
    refs = {n: item(n)["ref"] for n in statuses}
    for n, status in statuses.items():
        if status != "received":
            store.set_status(refs[n], status, f"catatan {n}")
    return refs


def raw(store, ref: str) -> dict:
    """A submission's row as stored: sealed values as they are in the file."""
    cursor = store.db.execute("SELECT * FROM submissions WHERE ref = ?", [ref])
    return dict(zip([column[0] for column in cursor.description], cursor.fetchone()))


def file_bytes(data_dir) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("central.db*")))


def test_retention_erases_final_submissions_unchanged_for_the_retention_once(tmp_path, central_db):
    clock = MovableClock()
    data_dir = tmp_path / "central"
    store = central_config(data_dir, clock, database_url=central_db).open_store()
    try:
        refs = made(store, {1: "resolved", 2: "rejected", 3: "in_progress", 4: "received", 5: "resolved",
                            6: "review"})
        before = {n: raw(store, ref) for n, ref in refs.items()}
        clock.advance(days=366)
        store.set_status(refs[5], "resolved", "dibuka lagi, selesai lagi")  # changed a minute ago: kept whole

        assert store.purge_personal(YEAR) == 2
        if not store.postgres:  # PostgreSQL's files are its own: see `purge_personal` for what erases there
            stored = file_bytes(data_dir)  # the store still open: its file and its WAL
            for n in (1, 2):
                for column in ("answers", "phone", "village"):
                    assert before[n][column].encode() not in stored, (n, column)
            assert before[3]["answers"].encode() in stored  # the check can see a sealed value that is there

        for n in (1, 2):
            row, old = store.submission(refs[n]), before[n]
            assert (row["answers"], row["phone"], row["village"]) == ({}, "", "")
            assert row["purged_at"] and row["purged_at"] > old["updated_at"]
            kept = ("ref", "service", "channel", "language", "gateway_id", "status", "note", "created_at",
                    "received_at", "updated_at", "village_digest")
            assert {k: row[k] for k in kept} == {k: old[k] for k in kept}
        for n in (3, 4, 5, 6):
            row = store.submission(refs[n])
            assert row["answers"]["location"] == f"Gang Melati {n}" and row["phone"] == PHONE
            assert row["village"] == f"Gang Melati {n}" and row["purged_at"] is None
        assert store.submissions(village="gang melati 1")[0][0]["ref"] == refs[1]  # staff still find it by place

        first = {n: store.submission(refs[n])["purged_at"] for n in (1, 2)}
        clock.advance(days=400)
        assert store.purge_personal(YEAR) == 1  # only number 5, now a year unchanged too
        assert {n: store.submission(refs[n])["purged_at"] for n in (1, 2)} == first  # erased once, never again
        assert store.purge_personal(YEAR) == 0
    finally:
        store.close()


async def test_retention_runs_as_the_central_backend_starts_and_lists_still_show_the_erased(tmp_path, central_db):
    clock = MovableClock()
    data_dir = tmp_path / "central"
    store = central_config(data_dir, clock, database_url=central_db).open_store()
    try:
        refs = made(store, {1: "resolved", 2: "in_progress"})
    finally:
        store.close()
    clock.advance(days=31)
    app = create_central_app(central_config(data_dir, clock, retention_days=30, database_url=central_db))
    async with served(app) as url, aiohttp.ClientSession() as http:
        async def staff_list():
            async with http.get(url + "/api/v1/submissions", headers={"Authorization": f"Bearer {STAFF}"}) as r:
                return {row["ref"]: row for row in (await r.json())["submissions"]}

        await eventually(lambda: _erased(staff_list, refs[1]))
        rows = await staff_list()
        assert (rows[refs[1]]["answers"], rows[refs[1]]["phone"], rows[refs[1]]["status"]) == ({}, "", "resolved")
        assert rows[refs[2]]["answers"]["description"] == "Rusak parah 2" and rows[refs[2]]["phone"] == PHONE
        start = (clock() - dt.timedelta(days=60)).isoformat()
        async with http.get(url + "/open311/v2/requests.json", params={"start_date": start}) as response:
            listed = {row["service_request_id"]: row for row in await response.json()}
        assert listed[refs[1]]["status"] == "closed" and listed[refs[1]]["status_notes"] == "catatan 1"
        assert (listed[refs[1]]["description"], listed[refs[1]]["address"]) == ("", "")
        assert listed[refs[2]]["description"] == "Rusak parah 2"
        async with http.get(url + f"/open311/v2/requests/{refs[1]}.json") as response:
            assert (await response.json())[0]["description"] == ""


async def _erased(staff_list, ref: str) -> bool:
    return (await staff_list())[ref]["answers"] == {}


async def test_retention_zero_keeps_everything(tmp_path, caplog, central_db):
    clock = MovableClock()
    data_dir = tmp_path / "central"
    store = central_config(data_dir, clock, database_url=central_db).open_store()
    try:
        refs = made(store, {1: "resolved"})
    finally:
        store.close()
    clock.advance(days=3650)
    config = central_config(data_dir, clock, retention_days=0, database_url=central_db)
    assert config.retention is None
    async with served(create_central_app(config)) as url, aiohttp.ClientSession() as http:
        async with http.get(url + f"/open311/v2/requests/{refs[1]}.json") as response:
            assert (await response.json())[0]["description"] == "Rusak parah 1"
    assert not our_errors(caplog.records)


def test_retention_kentongan_central_purge_prints_how_many(tmp_path, central_db):
    path = write_config(tmp_path, gateway={"id": "desa-1", "ref_prefix": "K"}, sync={"secret": SECRET},
                        central={"retention_days": 100, "database_url": central_db})
    long_ago = MovableClock(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=101))
    store = central_config(tmp_path / "var", long_ago, database_url=central_db).open_store()
    try:
        refs = made(store, {1: "resolved", 2: "rejected", 3: "received"})
    finally:
        store.close()

    result = kentongan("central", "purge", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("2 submissions final and unchanged for over 100 days erased")
    again = kentongan("central", "purge", "--config", str(path))
    assert again.stdout.startswith("0 submissions")
    store = central_config(tmp_path / "var", MovableClock(), database_url=central_db).open_store()
    try:
        assert store.submission(refs[1])["answers"] == {} and store.submission(refs[3])["answers"] != {}
        assert json.loads(store.sealer.open(raw(store, refs[2])["answers"])) == {}
    finally:
        store.close()
