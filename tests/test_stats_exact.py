"""Service performance is exact: 1,000 requests over 90 simulated days, and the page, JSON and CSV agree with
figures the test computes on its own.

The requests, their resolution times, the villagers' answers and ratings come from a fixed seed. They go
through the real central store's `ingest`, `change` and `record_feedback`, each at its own moment of a clock
the test sets by hand, inside a real central backend on a loopback port; the test keeps its own record of
what should result and computes every expected figure from it (nearest-rank percentiles, shares rounded half
up) without the code under test.
"""

import csv
import datetime as dt
import io
import json
import math
import random
import re
from decimal import Decimal
from fractions import Fraction
from html.parser import HTMLParser

import pytest
from ulid import ULID

from conftest import make_config, served
from gateway.pages import page_settings
from gateway.resources import load_engine
from sync.central import CentralConfig, create_central_app
from sync.central.app import central_store_key
from sync.central.store import village_key
from sync.database import stamp
from sync.reference import ALPHABET
from test_signin import PASSWORD, Browser
from test_sync import STAFF, forms

SEED = 11
COUNT = 1000
DAYS = 90
START = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
NOW = START + dt.timedelta(days=100)
UTC = dt.timezone.utc
RATING_DAYS = 14
RULES = (("report", "road", "*", "Dinas PU"), ("report", "streetlight", "*", "Dinas Perhubungan"),
         ("report", "garbage", "*", "Dinas Lingkungan Hidup"), ("voter", "*", "*", "Disdukcapil"))
DEFAULT_AGENCY = "Kantor Desa"
TARGETS = (("report", "road", 168), ("report", "streetlight", 72), ("report", "garbage", 48), ("report", "*", 120),
           ("voter", "*", 336))
VILLAGES = ("Sukamaju", "Cibodas", "Mekarsari", "Sindangsari", "Karangrejo")
HOUR = 3_600_000
PAGE_FIGURES = ("received", "open", "within_target_pct", "median_hours", "p90_hours", "reopened_pct", "ratings",
                "rating_mean", "fixed_pct")


class HandClock:
    """What the central store reads as now: exactly what the test last set."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def ms(n):
    return dt.timedelta(milliseconds=n)


def simulate(rng):
    """The requests (what the test expects of each) and the store calls that make them, by time."""
    requests, events = [], []
    for i in range(COUNT):
        created = START + ms(rng.randrange(DAYS * 24 * HOUR))
        service = rng.choices(("report", "voter", "permit"), (60, 25, 15))[0]
        category = {"report": rng.choice(("road", "streetlight", "garbage", "water", "other")),
                    "permit": rng.choice(("shop", "food", "farm", "craft", "service", "other"))}.get(service)
        village = rng.choice(VILLAGES)
        typed = rng.choice((village, village.upper(), f" {village.lower()}  "))  # one place, typed three ways
        ref = "A" + "".join(ALPHABET[(i // len(ALPHABET) ** k) % len(ALPHABET)] for k in range(5))
        answers = {"report": {"category": category, "location": typed, "description": "rusak parah"},
                   "voter": {"nik": f"3201{i:012d}", "name": "Warga", "birth_date": "17081990", "village": typed},
                   "permit": {"nik": f"3202{i:012d}", "business": "Warung", "kind": category, "kind_other": "",
                              "village": typed}}[service]
        item = {"id": str(ULID()), "ref": ref, "service": service, "channel": "ussd", "answers": answers,
                "phone": f"+62812{i:07d}", "language": "id", "created_at": stamp(created)}
        hours = next((h for s, c, h in TARGETS if s == service and c in ("*", category)), None)
        agency = next((a for s, c, _, a in RULES if s in ("*", service) and c in ("*", category)), DEFAULT_AGENCY)
        request = {"ref": ref, "service": service, "category": category, "village": village, "agency": agency,
                   "created": created, "due": created + dt.timedelta(hours=hours) if hours else None,
                   "first_resolved": None, "status": "received", "reopened": 0, "fixed": None, "rating": None}
        requests.append(request)
        events.append((created, "ingest", item, request))
        fate = rng.random()
        if fate < 0.08:
            events.append((created + ms(rng.randrange(HOUR, 5 * 24 * HOUR)), "status", "rejected", request))
        elif fate < 0.2:
            events.append((created + ms(rng.randrange(HOUR, 3 * 24 * HOUR)), "status", "in_progress", request))
        else:
            resolved = created + ms(rng.randrange(HOUR // 2, 20 * 24 * HOUR))
            events.append((resolved, "status", "resolved", request))
            answer = rng.random()
            if answer < 0.6:  # answered in time; a quarter "not fixed", which reopens and is resolved again
                at = resolved + ms(rng.randrange(HOUR, 10 * 24 * HOUR))
                fixed = rng.random() < 0.75
                rating = rng.choice((1, 2, 3, 4, 5, None))
                events.append((at, "feedback", (fixed, rating, item), request))
                events.append((at + ms(rng.randrange(HOUR, 24 * HOUR)), "feedback", (not fixed, 5, item), request))
                if not fixed:
                    events.append((at + ms(rng.randrange(HOUR, 5 * 24 * HOUR)), "status", "resolved", request))
            elif answer < 0.7:  # answered after rating_days: thanked, not counted
                at = resolved + dt.timedelta(days=RATING_DAYS, hours=rng.randrange(1, 48))
                events.append((at, "feedback", (True, 5, item), request))
    events.sort(key=lambda event: event[0])
    return requests, [event for event in events if event[0] <= NOW]


def play(store, clock, events):
    """Each event through the store at its own moment; the expected state of each request follows it."""
    for at, kind, what, request in events:
        clock.now = at
        if kind == "ingest":
            assert store.ingest("desa-a", [what])[0]["result"] == "accepted"
        elif kind == "status":
            store.change(request["ref"], what, "", "sari")
            request["status"] = what
            if what == "resolved" and request["first_resolved"] is None:
                request["first_resolved"] = at
        else:
            fixed, rating, item = what
            result = store.record_feedback("desa-a", [{"id": str(ULID()), "submission_id": item["id"],
                                                       "ref": item["ref"], "fixed": fixed, "rating": rating,
                                                       "words": "", "at": stamp(at)}])[0]["result"]
            counted = request["fixed"] is None and request["status"] == "resolved" \
                and at <= request["resolved_at_last"] + dt.timedelta(days=RATING_DAYS)
            assert result == ("accepted" if counted else "late" if request["fixed"] is None else "duplicate")
            if counted:
                request["fixed"], request["rating"] = int(fixed), rating
                if not fixed:
                    request["status"], request["reopened"] = "in_progress", request["reopened"] + 1
        if kind == "status" and what == "resolved":
            request["resolved_at_last"] = at


def half_up(value: Fraction, places: int) -> Decimal:
    scaled = math.floor(value * 10 ** places + Fraction(1, 2))
    return Decimal(scaled).scaleb(-places)


def expected(requests):
    """Every figure of `requests`, computed here."""
    now = NOW
    resolved = [r for r in requests if r["first_resolved"]]
    decided = [r for r in requests if r["due"] and (r["first_resolved"] or r["due"] < now)]
    within = [r for r in decided if r["first_resolved"] and r["first_resolved"] <= r["due"]]
    times = sorted((r["first_resolved"] - r["created"]) // ms(1) for r in resolved)
    rated = [r["rating"] for r in requests if r["rating"] is not None]
    answered = [r["fixed"] for r in requests if r["fixed"] is not None]
    reopened = [r for r in resolved if r["reopened"]]

    def rank(percent):
        return times[math.ceil(Fraction(percent * len(times), 100)) - 1] if times else None

    def share(part, whole):
        return half_up(Fraction(100 * len(part), len(whole)), 1) if whole else None

    return {"received": len(requests), "open": sum(r["status"] not in ("resolved", "rejected") for r in requests),
            "target": len(decided), "within_target": len(within), "within_target_pct": share(within, decided),
            "resolved": len(resolved),
            "median_hours": half_up(Fraction(rank(50), HOUR), 1) if times else None,
            "p90_hours": half_up(Fraction(rank(90), HOUR), 1) if times else None,
            "reopened": len(reopened), "reopened_pct": share(reopened, resolved),
            "ratings": len(rated), "rating_mean": half_up(Fraction(sum(rated), len(rated)), 2) if rated else None,
            "answered": len(answered), "fixed": sum(answered), "fixed_pct": share([a for a in answered if a], answered)}


def expected_groups(requests):
    keys = {"service": lambda r: r["service"],
            "category": lambda r: f"{r['service']}/{r['category']}" if r["category"] else None,
            "village": lambda r: village_key(r["village"]), "agency": lambda r: r["agency"]}
    groups = {}
    for group, key in keys.items():
        members = {}
        for r in requests:
            if key(r) is not None:
                members.setdefault(key(r), []).append(r)
        groups[group] = {k: expected(rs) for k, rs in members.items()}
    return groups


def number(text):
    """A figure as the page (in English) or the CSV shows it."""
    text = text.strip().replace(",", "")
    if text in ("", "–"):
        return None
    return Decimal(text) if "." in text else int(text)


class Tables(HTMLParser):
    """Every stats table of a page: per table id, its rows as (name, {figure: text})."""

    def __init__(self):
        super().__init__()
        self.tables, self.table, self.row, self.cell, self.text = {}, None, None, None, ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self.table is not None:
            self.row = ["", {}]
        elif tag in ("th", "td") and self.row is not None:
            self.cell, self.text = attrs.get("data-figure", "name"), ""
        elif tag == "dd" and attrs.get("data-figure"):
            self.table = self.tables.setdefault("total", [["", {}]])
            self.row, self.cell, self.text = self.table[0], attrs["data-figure"], ""

    def handle_data(self, data):
        self.text += data

    def handle_endtag(self, tag):
        if tag in ("th", "td", "dd") and self.cell:
            if self.cell == "name":
                self.row[0] = self.text.strip()
            else:
                self.row[1][self.cell] = self.text
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.row[1]:
                self.table.append(self.row)
            self.row = None
        elif tag in ("table", "dl"):
            self.table, self.row = None, None


def comparable(group, key):
    return village_key(key) if group == "village" else key


@pytest.fixture
async def office(tmp_path):
    clock = HandClock(START)
    config = make_config(tmp_path / "cfg")
    app = create_central_app(CentralConfig(tmp_path / "central", STAFF, forms(), gateways={"desa-a": "s3cret"},
                                           prefixes={"desa-a": "A"}, clock=clock, routing=RULES,
                                           default_agency=DEFAULT_AGENCY, targets=TARGETS,
                                           rating_days=RATING_DAYS, escalate_seconds=3600),
                             page_settings(config, load_engine(config)))
    async with served(app) as url:
        thread = app[central_store_key]
        await thread.call(lambda s: s.accounts.add("sari", "viewer", PASSWORD, "Dinas PU"))
        browser = Browser(url, "/office")
        yield browser, thread, clock
        await browser.close()


async def test_stats_exact_over_1000_requests_in_90_days(office):
    browser, thread, clock = office
    requests, events = simulate(random.Random(SEED))
    await thread.call(play, clock, events)
    clock.now = NOW
    assert sum(r["reopened"] for r in requests) > 20 and sum(r["fixed"] is not None for r in requests) > 300

    period = f"from={START.date()}&to={(START + dt.timedelta(days=DAYS - 1)).date()}"
    total, groups = expected(requests), expected_groups(requests)
    assert total["received"] == COUNT

    await browser.sign_in("sari")
    status, body, _ = await browser.get(f"/office/stats.json?{period}&lang=en")
    assert status == 200
    data = json.loads(body)
    assert data["total"] == {name: None if value is None else float(value) if isinstance(value, Decimal) else value
                             for name, value in total.items()}
    for group, entries in data["groups"].items():
        got = {comparable(group, e["key"]): {k: v for k, v in e.items() if k not in ("key", "label")}
               for e in entries}
        assert got == {key: {n: float(v) if isinstance(v, Decimal) else v for n, v in figures.items()}
                       for key, figures in groups[group].items()}, group

    status, body, headers = await browser.get(f"/office/stats.csv?{period}")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.lstrip("\ufeff"))))
    assert len(rows) == 1 + sum(len(g) for g in groups.values())
    for row in rows:
        want = total if row["group"] == "all" else groups[row["group"]][comparable(row["group"], row["key"])]
        assert {name: number(row[name]) for name in want} == want, row

    status, body, _ = await browser.get(f"/office/stats?{period}&lang=en")
    assert status == 200
    tables = Tables()
    tables.feed(body)
    assert {name: number(text) for name, text in tables.tables["total"][0][1].items()} == \
        {name: total[name] for name in PAGE_FIGURES}
    for group, entries in data["groups"].items():
        shown = tables.tables[f"table-{group}"]
        assert [name for name, _ in shown] == [e["label"] for e in entries]
        for (name, figures), entry in zip(shown, entries):
            want = groups[group][comparable(group, entry["key"])]
            assert {n: number(t) for n, t in figures.items()} == {n: want[n] for n in PAGE_FIGURES}


    # a shorter period, on the public page (anyone may ask; no place and no phone in it)
    first, last = START.date() + dt.timedelta(days=30), START.date() + dt.timedelta(days=59)
    inside = [r for r in requests if first <= r["created"].date() <= last]
    status, body, headers = await browser.get(f"/public.json?from={first}&to={last}")
    assert status == 200 and headers["Cache-Control"] == "public, max-age=300"
    data = json.loads(body)
    assert data["total"]["received"] == len(inside) and set(data["groups"]) == {"service", "category", "agency"}
    want = expected(inside)
    assert data["total"] == {n: None if v is None else float(v) if isinstance(v, Decimal) else v
                             for n, v in want.items()}
    status, body, _ = await browser.get(f"/public.csv?from={first}&to={last}")
    assert status == 200 and not re.search("|".join(VILLAGES), body, re.IGNORECASE)
    assert "+62812" not in body
