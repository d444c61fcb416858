"""Routing, deadlines and escalation at the central backend, on a real SQLite store and a clock the test moves."""

import datetime as dt
import functools
import json

import pytest

from conftest import MovableClock, make_config
from flows import Engine
from gateway.central import central_config, notice_renderer
from gateway.config import data_root
from gateway.errors import ConfigError
from sync.central import CentralConfig, CentralStore
from sync.central.routing import Routing, Rule, Target, rules, targets
from sync.central.store import MIGRATIONS, Changed
from sync.protocol import QUIET

pytestmark = pytest.mark.central_backends

START = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.timezone.utc)
RULES = (Rule("report", "road", "*", "Dinas PU"), Rule("report", "*", "sukamaju*", "Kecamatan Sukamaju"),
         Rule("voter", "*", "*", "Disdukcapil"))
TARGETS = (Target("report", "road", 168), Target("report", "*", 48))


@functools.cache
def engine():
    root = data_root()
    return Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id")


def open_store(tmp_path, clock, url="") -> CentralStore:
    config = CentralConfig(tmp_path, "", engine().forms("en"), gateways={"desa-a": "secret"}, prefixes={"desa-a": "A"},
                           clock=clock, routing=RULES, targets=TARGETS, default_agency="Kantor Desa",
                           notice=notice_renderer(engine()), database_url=url)
    return config.open_store()


def item(n: int, category: str | None, village: str, service: str = "report") -> dict:
    answers = {"category": category, "location": village, "description": "Lubang besar"} if service == "report" \
        else {"nik": f"32012317089{n:05d}", "name": "Siti", "birth_date": "17081990", "village": village}
    return {"id": f"01KB{n:022d}", "ref": f"AAAA{n:02d}"[:6], "service": service, "channel": "ussd",
            "answers": answers, "phone": "+6281234567890", "language": "id", "created_at": START.isoformat()}


def test_rules_first_match_glob_on_village_casefolded_and_default():
    routing = Routing(RULES, "Kantor Desa", TARGETS)
    assert routing.agency("report", "road", "Sukamaju") == "Dinas PU"  # first match wins over the village rule
    assert routing.agency("report", "garbage", "  SUKAMAJU   Kidul ") == "Kecamatan Sukamaju"
    assert routing.agency("report", "garbage", "Cibodas") == "Kantor Desa"
    assert routing.agency("permit", "trade", "Sukamaju") == "Kantor Desa"
    assert routing.agency("voter", None, "Cibodas") == "Disdukcapil"
    assert routing.due("report", "road", START) == START + dt.timedelta(hours=168)
    assert routing.due("report", "light", START) == START + dt.timedelta(hours=48)
    assert routing.due("voter", None, START) is None


@pytest.mark.parametrize("value, reason", [
    ("road", "expected a list of mappings"),
    ([{"service": "report"}], "entry 1: agency is missing"),
    ([{"agency": "X", "villages": "a*"}], "entry 1: unknown key 'villages'"),
    ([{"agency": ""}], "entry 1: agency must be non-empty text"),
])
def test_bad_rules_say_what_is_wrong(value, reason):
    with pytest.raises(ValueError, match=reason):
        rules(value)


@pytest.mark.parametrize("value, reason", [
    ([{"service": "report", "hours": 0}], "hours must be a whole number"),
    ([{"service": "report", "hours": True}], "hours must be a whole number"),
    ([{"hours": 5}], "entry 1: service is missing"),
])
def test_bad_targets_say_what_is_wrong(value, reason):
    with pytest.raises(ValueError, match=reason):
        targets(value)


def test_config_names_a_rule_that_can_never_match(tmp_path):
    config = make_config(tmp_path, central__routing=[{"service": "report", "category": "roads", "agency": "PU"}])
    with pytest.raises(ConfigError, match="central.routing: entry 1: 'roads' is not a category of report"):
        central_config(config, engine())
    config = make_config(tmp_path, central__targets="[{service: pothole, hours: 5}]")
    with pytest.raises(ConfigError, match="central.targets: entry 1: 'pothole' is not a flow"):
        central_config(config, engine())


def test_ingest_routes_and_sets_the_deadline_from_targets(tmp_path, central_db):
    store = open_store(tmp_path, MovableClock(START), central_db)
    try:
        store.ingest("desa-a", [item(1, "road", "Cibodas"), item(2, "garbage", "sukamaju kidul"),
                                item(3, None, "Cibodas", service="voter")])
        rows = {r["ref"]: r for r in store.triage()[0]}
        road, garbage, voter = rows["AAAA01"], rows["AAAA02"], rows["AAAA03"]
        assert (road["agency"], road["category"]) == ("Dinas PU", "road")
        assert (garbage["agency"], garbage["category"]) == ("Kecamatan Sukamaju", "garbage")
        assert (voter["agency"], voter["category"], voter["due_at"]) == ("Disdukcapil", None, None)
        received = dt.datetime.fromisoformat(road["received_at"])
        assert dt.datetime.fromisoformat(road["due_at"]) == received + dt.timedelta(hours=168)
        assert dt.datetime.fromisoformat(garbage["due_at"]) == received + dt.timedelta(hours=48)
        assert [h["kind"] for h in store.submission_page("aaaa01")["history"]] == ["received"]
    finally:
        store.close()


def test_overdue_after_the_clock_moves_and_escalated_once(tmp_path, central_db):
    clock = MovableClock(START)
    store = open_store(tmp_path, clock, central_db)
    try:
        store.ingest("desa-a", [item(1, "road", "Cibodas"), item(2, "garbage", "Cibodas"),
                                item(3, "water", "Cibodas")])
        store.set_status("AAAA03", "resolved", "Sudah")
        assert store.escalate_overdue() == 0
        assert not any(row["overdue"] for row in store.triage()[0])
        clock.advance(hours=49)
        assert {r["ref"] for r in store.triage(overdue=True)[0]} == {"AAAA02"}  # resolved ones are never overdue
        assert {r["ref"] for r in store.triage(overdue=False)[0]} == {"AAAA01", "AAAA03"}
        assert store.escalate_overdue() == 1
        assert store.escalate_overdue() == 0  # once
        page = store.submission_page("AAAA02")
        assert page["overdue"] and page["escalated_at"]
        assert [(h["kind"], h["detail"]) for h in page["history"]] == [("received", None),
                                                                      ("escalate", "Kantor Desa")]
        told = store.updates("desa-a", 0)[-1]
        assert (told["ref"], told["notice"], told["overdue"], told["agency"]) == (
            "AAAA02", QUIET, True, "Kantor Desa")
        clock.advance(hours=168)
        assert store.escalate_overdue() == 1
    finally:
        store.close()


def test_change_and_reassign_write_history_and_refuse_stale_expected(tmp_path, central_db):
    store = open_store(tmp_path, MovableClock(START), central_db)
    try:
        store.ingest("desa-a", [item(1, "road", "Cibodas")])
        seen = store.submission("AAAA01")["updated_at"]
        row = store.change("aaaa01", "in_progress", "Tim berangkat", "ani", expected=seen)
        assert row["changed"] and row["status"] == "in_progress"
        with pytest.raises(Changed) as refused:
            store.change("AAAA01", "resolved", "Beres", "budi", expected=seen)
        assert refused.value.current["status"] == "in_progress"
        assert [(h["kind"], h["who"], h["note"]) for h in refused.value.history][:1] == [
            ("status", "ani", "Tim berangkat")]
        assert store.submission("AAAA01")["status"] == "in_progress"  # nothing changed
        store.reassign("AAAA01", "Dinas Perhubungan", "ani")
        store.change("AAAA01", "resolved", "Beres", "ani")
        page = store.submission_page("AAAA01")
        assert [h["kind"] for h in page["history"]] == ["received", "status", "sms", "assign", "status", "sms"]
        assert page["history"][3]["detail"] == "Dinas PU -> Dinas Perhubungan"
        assert "Beres" in page["history"][-1]["detail"]
        assert page["resolved_at"] == page["first_resolved_at"] == page["updated_at"]
        store.change("AAAA01", "in_progress", "", "ani")
        assert store.submission("AAAA01")["resolved_at"] is None
        assert store.submission("AAAA01")["first_resolved_at"] == page["first_resolved_at"]
    finally:
        store.close()


def test_two_changes_in_one_millisecond_still_refuse_the_stale_one(tmp_path, central_db):
    # A clock that does not move: ingest, change and the next change all fall in one millisecond, as they can on
    # a fast machine. The change still moves `updated_at`, so a change made from the first view is refused.
    store = open_store(tmp_path, lambda: START, central_db)
    try:
        store.ingest("desa-a", [item(1, "road", "Cibodas")])
        seen = store.submission("AAAA01")["updated_at"]
        store.change("AAAA01", "in_progress", "Tim berangkat", "ani", expected=seen)
        moved = store.submission("AAAA01")["updated_at"]
        assert moved > seen
        with pytest.raises(Changed):
            store.change("AAAA01", "resolved", "Beres", "budi", expected=seen)
        with pytest.raises(Changed):
            store.reassign("AAAA01", "Dinas Perhubungan", "budi", expected=seen)
        store.reassign("AAAA01", "Dinas Perhubungan", "ani", expected=moved)
        assert store.submission("AAAA01")["updated_at"] > moved
        assert store.submission("AAAA01")["status"] == "in_progress"
    finally:
        store.close()


def test_an_older_store_gets_a_history_an_agency_and_a_deadline(tmp_path):
    class OldCentralStore(CentralStore):
        MIGRATIONS = MIGRATIONS[:6]

    old = OldCentralStore.open(tmp_path)
    old.db["gateways"].insert({"id": "desa-a", "secret": "s", "prefix": "A", "created_at": START.isoformat()})
    for n, (status, category) in enumerate([("received", "road"), ("resolved", "garbage")], 1):
        at = f"2026-11-0{n}T00:00:00.000+00:00"
        old.db["submissions"].insert({
            "id": f"01KB{n:022d}", "gateway_id": "desa-a", "ref": f"AAAA0{n}", "service": "report", "channel": "ussd",
            "answers": old.sealer.seal(json.dumps({"category": category, "location": "Cibodas"})),
            "phone": old.sealer.seal("+6281234567890"), "language": "id", "village": "", "status": status,
            "note": "Beres" if status == "resolved" else None, "created_at": at, "received_at": at,
            "updated_at": "2026-11-05T00:00:00.000+00:00"})
    old.close()
    store = open_store(tmp_path, MovableClock(START))
    try:
        fresh, done = store.submission_page("AAAA01"), store.submission_page("AAAA02")
        assert [(h["kind"], h["status"], h["at"]) for h in fresh["history"]] == [
            ("received", "received", "2026-11-01T00:00:00.000+00:00")]
        assert [(h["kind"], h["status"], h["note"]) for h in done["history"]] == [
            ("received", "received", None), ("status", "resolved", "Beres")]
        assert (fresh["agency"], fresh["category"]) == ("Dinas PU", "road")
        assert fresh["due_at"] == "2026-11-08T00:00:00.000+00:00"  # received + 168 h
        assert done["resolved_at"] == done["first_resolved_at"] == "2026-11-05T00:00:00.000+00:00"
        assert done["reopened"] == 0
    finally:
        store.close()
