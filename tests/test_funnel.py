"""Where callers give up: scripted USSD sessions against a real gateway, counted per flow and screen.

Sessions that complete, one dropped at a known screen, one resumed by a
second dial (counted once), one cancelled at the confirm screen, one that
gave up at the main menu; the figures read through `/kiosk/funnel.json`
and drawn in the SVG of `/kiosk/funnel`.
"""

import re

import aiohttp
import pytest

from conftest import query_plan
from gateway.resources import store_key


pytestmark = pytest.mark.backends

PASSWORD = "correct horse battery"
FIELD = re.compile(r'name="csrf" value="([^"]+)"')
REPORT = ("1", "1", "Jalan Mawar RT 02", "Lubang besar di tengah jalan")


class Browser:
    """A signed-in operator's browser: one cookie jar, following no redirect by itself."""

    def __init__(self, url):
        self.url = url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path):
        async with self.http.get(self.url + path, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers.get("Content-Type", "")

    async def sign_in(self, name):
        async with self.http.get(self.url + "/kiosk/login") as response:
            token = FIELD.search(await response.text()).group(1)
        async with self.http.post(self.url + "/kiosk/login", allow_redirects=False,
                                  data={"csrf": token, "name": name, "password": PASSWORD, "next": ""}) as response:
            assert response.status == 303

    async def close(self):
        await self.http.close()


@pytest.fixture
async def operator(gateway):
    await gateway.app[store_key].call(lambda s: s.accounts.add("ani", "operator", PASSWORD))
    browser = Browser(gateway.url)
    await browser.sign_in("ani")
    yield browser
    await browser.close()


def flow(found, name):
    return next(f for f in found["flows"] if f["flow"] == name)


def screens(found, name):
    return {s["screen"]: (s["reached"], s["dropped"]) for s in flow(found, name)["screens"] if s["reached"]}


async def test_completed_dropped_resumed_and_cancelled_sessions_are_counted_once_each(gateway, operator):
    await gateway.dial("done-1", *REPORT, "1", phone="+6281200000001")
    await gateway.dial("done-2", *REPORT, "1", phone="+6281200000002")
    await gateway.dial("drop", "1", "1", phone="+6281200000003")  # stops at the place
    await gateway.dial("cancel", *REPORT, "2", phone="+6281200000004")  # no at the confirm screen
    await gateway.dial("menu-only", phone="+6281200000005")  # dials and leaves the main menu
    await gateway.dial("line-drops", *REPORT[:3], phone="+6281200000006")  # the line drops at the description
    screens_seen = await gateway.dial("again", "1", REPORT[3], "1", phone="+6281200000006")
    assert "END" in screens_seen[-1]

    status, body, kind = await operator.get("/kiosk/funnel.json")
    assert status == 200 and kind.startswith("application/json")
    live = await_json(body)
    assert flow(live, "report")["dropped"] == 0 and flow(live, "report")["open"] == 1  # not idle long enough yet

    gateway.advance(minutes=6)
    status, body, _ = await operator.get("/kiosk/funnel.json?days=1")
    found = await_json(body)
    main, report = flow(found, "main"), flow(found, "report")
    assert {k: main[k] for k in ("started", "completed", "cancelled", "dropped")} == \
        {"started": 6, "completed": 5, "cancelled": 0, "dropped": 1}
    assert screens(found, "main") == {"menu": (6, 1)}
    assert {k: report[k] for k in ("started", "completed", "cancelled", "dropped", "open")} == \
        {"started": 5, "completed": 3, "cancelled": 1, "dropped": 1, "open": 0}
    assert screens(found, "report") == {"category": (5, 0), "location": (5, 1), "description": (4, 0),
                                        "confirm": (4, 0), "done": (3, 0), "cancelled": (1, 0)}

    status, page, _ = await operator.get("/kiosk/funnel?days=7&lang=en")
    assert status == 200
    chart = re.search(r'<svg[^>]*aria-labelledby="chart-report-t chart-report-d".*?</svg>', page, re.S).group(0)
    assert "<title" in chart and "<desc" in chart
    assert "location: 5 reached, 1 dropped" in chart
    assert "5 started, 3 completed, 1 cancelled, 1 dropped." in chart


async def test_a_caller_who_restarts_instead_of_resuming_leaves_a_dropped_session(gateway, operator):
    phone = "+6281200000007"
    await gateway.dial("first", "1", "1", phone=phone)
    offer = await gateway.dial("second", "2", phone=phone)  # offered to continue; starts afresh
    assert offer[-1].startswith("CON ")
    gateway.advance(minutes=6)
    found = await_json((await operator.get("/kiosk/funnel.json"))[1])
    assert flow(found, "report")["dropped"] == 1 and screens(found, "report")["location"] == (1, 1)
    assert flow(found, "main")["started"] == 2


async def test_language_choice_completes_its_flow_and_bad_periods_are_refused(gateway, operator):
    await gateway.dial("lang", "5", "2", phone="+6281200000008")
    gateway.advance(minutes=6)
    found = await_json((await operator.get("/kiosk/funnel.json"))[1])
    assert flow(found, "language")["completed"] == 1
    assert flow(found, "main")["dropped"] == 0  # back at the menu after its work is no drop
    for days in ("0", "30", "x"):
        assert (await operator.get(f"/kiosk/funnel.json?days={days}"))[0] == 400
        assert (await operator.get(f"/kiosk/funnel?days={days}"))[0] == 400


async def test_the_funnel_reads_by_its_day_index(gateway, backend):
    if backend:
        pytest.skip("SQLite's query plan: the other backends run the same store on SQLite, or PostgreSQL's own")
    plan = await gateway.app[store_key].call(
        lambda s: query_plan(s.db, "SELECT * FROM funnel_sessions WHERE day >= '2024-01-01'"))
    assert "idx_funnel_sessions_day" in plan


def await_json(body):
    import json

    return json.loads(body)
