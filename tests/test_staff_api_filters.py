"""The staff API's triage filters, both orders with keyset paging, one submission with its history, and a
status change refused when the submission changed since the caller saw it."""

import datetime as dt
import functools

import aiohttp
import pytest

from conftest import MovableClock, query_plan, served
from flows import Engine
from gateway.config import data_root
from sync.central import CentralConfig, create_central_app
from sync.central.app import central_store_key
from sync.central.routing import Rule, Target

STAFF = "staff-token"
START = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.timezone.utc)
CATEGORIES = ("road", "garbage", "water")

pytestmark = pytest.mark.central_backends


@functools.cache
def engine():
    root = data_root()
    return Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id")


def item(n: int) -> dict:
    return {"id": f"01KB{n:022d}", "ref": f"AAA{n:03d}", "service": "report", "channel": "ussd",
            "answers": {"category": CATEGORIES[n % 3], "location": "Cibodas", "description": "Lubang"},
            "phone": "+6281234567890", "language": "id",
            "created_at": (START + dt.timedelta(minutes=n)).isoformat()}


@pytest.fixture
async def centre(tmp_path, central_db):
    """A central backend with 30 requests: road (168 h, Dinas PU), garbage (48 h), water (no deadline)."""
    clock = MovableClock(START)
    config = CentralConfig(tmp_path, STAFF, engine().forms("en"), gateways={"desa-a": "s"}, prefixes={"desa-a": "A"},
                           clock=clock, routing=(Rule("report", "road", "*", "Dinas PU"),),
                           targets=(Target("report", "road", 168), Target("report", "garbage", 48)),
                           database_url=central_db)
    app = create_central_app(config)
    async with served(app) as url:
        thread = app[central_store_key]
        for n in range(30):  # one by one, so that received_at (and the deadline) grows with n
            await thread.call(lambda s, n=n: s.ingest("desa-a", [item(n)]))
            clock.advance(minutes=1)
        yield url, thread, clock


async def staff(url, method, path, **kwargs):
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url + path, headers={"Authorization": f"Bearer {STAFF}"}, **kwargs) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else await r.text())


async def every_page(url, query):
    refs, cursor = [], None
    while True:
        status, body = await staff(url, "GET", "/api/v1/submissions", params={**query, **(
            {"cursor": cursor} if cursor else {})})
        assert status == 200, body
        refs += [row["ref"] for row in body["submissions"]]
        cursor = body["next"]
        if not cursor:
            return refs


async def test_filters_and_both_orders_page_by_keyset(centre):
    url, thread, clock = centre
    newest = await every_page(url, {"limit": "7"})
    assert newest == [f"AAA{n:03d}" for n in reversed(range(30))]
    assert await every_page(url, {"agency": "Dinas PU", "limit": "4"}) == [
        f"AAA{n:03d}" for n in reversed(range(30)) if n % 3 == 0]
    assert await every_page(url, {"ref": "aaa01"}) == [f"AAA{n:03d}" for n in reversed(range(10, 20))]
    assert await every_page(url, {"gateway": "desa-b"}) == []
    clock.advance(hours=47, minutes=45)  # 48 h 15 min after the first: garbage 1..13 are overdue, 16..28 not yet
    overdue = [f"AAA{n:03d}" for n in range(30) if n % 3 == 1 and n < 15]  # longest overdue first
    assert await every_page(url, {"overdue": "true", "limit": "2"}) == overdue[::-1]  # newest first
    ordered = await every_page(url, {"order": "overdue", "limit": "3"})
    assert ordered == overdue + [ref for ref in newest if ref not in overdue]
    exactly = await every_page(url, {"order": "overdue", "limit": str(len(overdue))})  # a page of overdue only
    assert exactly == ordered
    assert await every_page(url, {"order": "overdue", "overdue": "false", "limit": "5"}) == [
        ref for ref in newest if ref not in overdue]
    status, body = await staff(url, "GET", "/api/v1/submissions", params={"overdue": "true", "limit": "1"})
    assert body["submissions"][0]["overdue"] is True and body["submissions"][0]["agency"] == "Kantor Desa"
    for query, reason in [({"order": "oldest"}, "order must be one of"), ({"overdue": "maybe"}, "overdue must be"),
                          ({"ref": "K7-M2"}, "a reference is"), ({"until": "soon"}, "until must be"),
                          ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor must be")]:
        status, text = await staff(url, "GET", "/api/v1/submissions", params=query)
        assert status == 400 and reason in text, (query, text)


async def test_the_queue_is_read_through_indexes(centre, central_db):
    if central_db:
        pytest.skip("SQLite's query plans; PostgreSQL plans a 30-row table by its own costs")
    _, thread, _ = centre
    plans = await thread.call(lambda s: [
        query_plan(s.db, "SELECT * FROM submissions WHERE agency = 'Dinas PU' ORDER BY created_at DESC, id DESC"),
        query_plan(s.db, "SELECT * FROM submissions WHERE due_at <= '2026-11-05' AND status NOT IN ('resolved', "
                         "'rejected') ORDER BY due_at, id"),
        query_plan(s.db, "SELECT * FROM submissions WHERE gateway_id = 'desa-a' ORDER BY created_at DESC, id DESC"),
        query_plan(s.db, "SELECT * FROM history WHERE submission_id = 'x' ORDER BY id")])
    for plan, index in zip(plans, ("idx_submissions_agency_created", "idx_submissions_due",
                                   "idx_submissions_gateway_created", "idx_history_submission_id_id")):
        assert index in plan and "TEMP B-TREE" not in plan, plan


async def test_one_submission_with_history_and_a_stale_change_refused(centre):
    url, _, _ = centre
    status, one = await staff(url, "GET", "/api/v1/submissions/aaa003")
    assert status == 200 and one["ref"] == "AAA003" and one["agency"] == "Dinas PU"
    assert [event["kind"] for event in one["history"]] == ["received"]
    seen = one["updated_at"]
    status, changed = await staff(url, "PATCH", "/api/v1/submissions/AAA003",
                                  json={"status": "in_progress", "note": "Tim berangkat", "expected": seen})
    assert status == 200 and changed["status"] == "in_progress"
    status, refused = await staff(url, "PATCH", "/api/v1/submissions/AAA003",
                                  json={"status": "rejected", "note": "Bukan wewenang", "expected": seen})
    assert status == 409 and "it is now in_progress" in refused["error"]
    assert (refused["current"]["status"], refused["current"]["note"]) == ("in_progress", "Tim berangkat")
    assert [(c["kind"], c["status"], c["note"]) for c in refused["changes"]] == [
        ("status", "in_progress", "Tim berangkat")]
    status, again = await staff(url, "GET", "/api/v1/submissions/AAA003")
    assert again["status"] == "in_progress" and [e["kind"] for e in again["history"]] == ["received", "status"]
    assert again["history"][-1]["who"] == "central.staff_token"
    status, text = await staff(url, "GET", "/api/v1/submissions/ZZZZZZ")
    assert status == 404
    status, text = await staff(url, "PATCH", "/api/v1/submissions/AAA003", json={"status": "resolved",
                                                                                 "expected": 5})
    assert status == 400 and "expected must be" in text
