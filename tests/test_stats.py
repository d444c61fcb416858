"""Service performance figures from plain rows: each definition of `sync.central.stats` on small hand-made cases."""

import datetime as dt
from decimal import Decimal

import pytest

from sync.central.stats import PeriodError, figures, nearest_rank, performance, period

NOW = "2026-03-31T12:00:00.000+00:00"


def row(created="2026-03-01T08:00:00.000+00:00", first_resolved=None, due=None, status="received", reopened=0,
        fixed=None, rating=None, **keys):
    return {"service": "report", "category": "road", "village": "Sukamaju", "agency": "Dinas PU", **keys,
            "created_at": created, "first_resolved_at": first_resolved, "due_at": due, "status": status,
            "reopened": reopened, "fixed": fixed, "rating": rating}


def test_stats_nearest_rank_is_always_a_value_taken():
    assert nearest_rank([], 50) is None
    assert nearest_rank([7], 90) == 7
    assert nearest_rank([4, 1, 3, 2], 50) == 2  # the lower middle one: rank ceil(0.5 * 4) = 2
    assert nearest_rank(list(range(1, 11)), 90) == 9  # rank ceil(0.9 * 10) = 9
    assert nearest_rank(list(range(1, 12)), 90) == 10  # rank ceil(9.9) = 10
    assert nearest_rank(list(range(1, 101)), 90) == 90


def test_stats_figures_of_a_few_requests():
    rows = [
        # resolved in 10 h, within its 48 h target, rated 5 and fixed
        row(first_resolved="2026-03-01T18:00:00.000+00:00", due="2026-03-03T08:00:00.000+00:00",
            status="resolved", fixed=1, rating=5),
        # resolved in 30 h, after its 24 h target; reopened once, "not fixed", rated 2, in progress again
        row(first_resolved="2026-03-02T14:00:00.000+00:00", due="2026-03-02T08:00:00.000+00:00",
            status="in_progress", reopened=1, fixed=0, rating=2),
        # open, past its target: a miss
        row(due="2026-03-05T08:00:00.000+00:00"),
        # open, its target still ahead: not decided yet
        row(due="2026-04-30T08:00:00.000+00:00"),
        # rejected, no target
        row(status="rejected"),
    ]
    got = figures(rows, NOW)
    assert got == {"received": 5, "open": 3, "target": 3, "within_target": 1, "within_target_pct": Decimal("33.3"),
                   "resolved": 2, "median_hours": Decimal("10.0"), "p90_hours": Decimal("30.0"),
                   "reopened": 1, "reopened_pct": Decimal("50.0"), "ratings": 2, "rating_mean": Decimal("3.50"),
                   "answered": 2, "fixed": 1, "fixed_pct": Decimal("50.0")}


def test_stats_rounding_is_half_up_from_exact_milliseconds():
    # 1 h 3 min = 1.05 h exactly: half up gives 1.1 (a float would give 1.0)
    rows = [row(first_resolved="2026-03-01T09:03:00.000+00:00", status="resolved")]
    assert figures(rows, NOW)["median_hours"] == Decimal("1.1")
    assert figures([row(rating=r) for r in (1, 2, 2)], NOW)["rating_mean"] == Decimal("1.67")


def test_stats_empty_figures_are_none_not_zero():
    got = figures([], NOW)
    assert got["received"] == 0 and got["median_hours"] is None and got["within_target_pct"] is None
    assert got["rating_mean"] is None and got["fixed_pct"] is None


def test_stats_groups_most_received_first_and_unknown_last():
    rows = [row(category="road"), row(service="voter", category=None), row(category="garbage"),
            row(category="garbage"), row(category="other"), row(service="permit", category="other"),
            row(agency=None)]
    grouped = performance(rows, NOW, ("category", "agency"))
    assert [(g["key"], g["received"]) for g in grouped["groups"]["category"]] == [
        ("report/garbage", 2), ("report/road", 2), ("permit/other", 1), ("report/other", 1)]
    assert [(g["key"], g["received"]) for g in grouped["groups"]["agency"]] == [("Dinas PU", 6), (None, 1)]
    assert grouped["total"]["received"] == 7
    assert set(performance(rows, NOW, ("service", "agency"))["groups"]) == {"service", "agency"}


def test_stats_period_defaults_to_the_last_30_days_and_refuses_bad_dates():
    today = dt.date(2026, 3, 31)
    chosen = period("", "", today)
    assert (chosen.first, chosen.last) == (dt.date(2026, 3, 2), today)
    assert chosen.since == "2026-03-02T00:00:00.000+00:00" and chosen.until == "2026-04-01T00:00:00.000+00:00"
    assert period("2026-01-01", "2026-01-01", today).until == "2026-01-02T00:00:00.000+00:00"
    for typed_from, typed_to, reason in (("2026-02-30", "", "web.stats.bad_date"),
                                         ("yesterday", "", "web.stats.bad_date"),
                                         ("２０２６-01-01", "", "web.stats.bad_date"),
                                         ("2026-03-10", "2026-03-01", "web.stats.bad_range"),
                                         ("2024-01-01", "2026-01-01", "web.stats.too_long")):
        with pytest.raises(PeriodError) as refused:
            period(typed_from, typed_to, today)
        assert refused.value.args[0] == reason


@pytest.mark.central_backends
async def test_stats_public_work_is_bounded_per_period_and_per_address(tmp_path, central_db):
    from aiohttp import ClientSession

    from conftest import served
    from sync.central import CentralConfig, create_central_app
    from sync.central.app import central_store_key
    from sync.central.stats_pages import PUBLIC_PER_MINUTE
    from test_sync import STAFF, forms

    app = create_central_app(CentralConfig(tmp_path / "central", STAFF, forms(), database_url=central_db))
    async with served(app) as url, ClientSession() as http:
        reads = []
        thread = app[central_store_key]
        real_read = thread.read

        async def counted(fn, *args):
            reads.append(fn)
            return await real_read(fn, *args)

        thread.read = counted
        for _ in range(5):  # the same period again and again: read once
            async with http.get(url + "/public.json") as response:
                assert response.status == 200
        assert len(reads) == 1
        statuses = []
        for day in range(1, PUBLIC_PER_MINUTE + 3):  # one new period after another
            async with http.get(url + f"/public.json?from=2026-01-{day:02d}&to=2026-02-01") as response:
                statuses.append(response.status)
        assert statuses.count(429) == 3 and len(reads) == PUBLIC_PER_MINUTE
