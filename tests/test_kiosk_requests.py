"""The village's own requests at the kiosk: the list (search, filters, paging), one request's history and
answers, personal fields shown and audited only for a role that has "personal".

A real gateway with no central backend at all (the pages read the local
store only), its store filled through the USSD callback and the store's own
methods, a browser played by an aiohttp client with its own cookie jar.
"""

import datetime as dt
import re

import pytest

from conftest import query_plan
from gateway.resources import store_key
from test_funnel import PASSWORD, REPORT, Browser


pytestmark = pytest.mark.backends

NIK = "3201011505900001"
REF = re.compile(r'class="ref" href="/kiosk/requests/([A-Z0-9]+)"')


def voter(store, ref, name="Siti Aminah"):
    store.add_submission({"service": "voter", "ref": ref, "language": "id",
                          "answers": {"nik": NIK, "name": name, "birth_date": "1990-05-15", "village": "Sukamaju"}},
                         phone="+6281299990001", channel="kiosk", operator="ani")


@pytest.fixture
async def browsers(gateway):
    thread = gateway.app[store_key]
    for name, role in (("ani", "operator"), ("sari", "supervisor")):
        await thread.call(lambda s, n=name, r=role: s.accounts.add(n, r, PASSWORD))
    opened = {}
    for name in ("ani", "sari"):
        opened[name] = Browser(gateway.url)
        await opened[name].sign_in(name)
    yield opened
    for browser in opened.values():
        await browser.close()


async def test_list_search_filters_and_paging(gateway, browsers):
    ani = browsers["ani"]
    screens = await gateway.dial("s1", *REPORT, "1")
    reported = re.search(r"\b(K[A-Z0-9]{5})\b", screens[-1]).group(1)
    thread = gateway.app[store_key]
    for number in range(30):
        await thread.call(voter, f"V{number:02d}AAA".replace("0", "Z").replace("1", "Y"))
    await thread.call(lambda s: s.set_status(reported, "in_progress", "Tim datang besok"))

    status, page, _ = await ani.get("/kiosk/requests?lang=en")
    assert status == 200
    first = REF.findall(page)
    assert len(first) == 25 and first[0] == "V29AAA"
    assert NIK not in page and "Siti" not in page and "+62812" not in page
    older = re.search(r'href="/kiosk/requests\?(before=[0-9A-Z]+)"', page).group(1)
    status, page, _ = await ani.get(f"/kiosk/requests?{older}&lang=en")
    second = REF.findall(page)
    assert len(second) == 6 and not set(first) & set(second) and second[-1] == reported
    assert "Newest requests" in page

    _, page, _ = await ani.get(f"/kiosk/requests?ref={reported.lower()}&lang=en")
    assert REF.findall(page) == [reported] and "In progress" in page
    _, page, _ = await ani.get("/kiosk/requests?ref=V2&lang=en")
    assert len(REF.findall(page)) == 10
    _, page, _ = await ani.get("/kiosk/requests?service=report&status=in_progress")
    assert REF.findall(page) == [reported]
    _, page, _ = await ani.get("/kiosk/requests?service=voter&status=in_progress")
    assert REF.findall(page) == []
    today = gateway.clock().date()
    _, page, _ = await ani.get(f"/kiosk/requests?from={today}&to={today}&service=report")
    assert REF.findall(page) == [reported]
    _, page, _ = await ani.get(f"/kiosk/requests?from={today + dt.timedelta(days=1)}")
    assert REF.findall(page) == [] and "No request matches." in page


@pytest.mark.parametrize("query, reason", [
    ("ref=K0O1", "A reference has up to 8 letters"),
    ("from=31-05-2024", "Type dates as year-month-day"),
    ("from=2024-06-02&to=2024-06-01", "The first date is after the second"),
])
async def test_bad_filters_are_shown_with_the_reason_and_kept(gateway, browsers, query, reason):
    status, page, _ = await browsers["ani"].get(f"/kiosk/requests?{query}&lang=en")
    assert status == 400 and reason in page
    for value in re.findall(r"=([^&]+)", query):
        assert f'value="{value}"' in page


async def test_a_bad_address_is_refused_without_a_traceback(gateway, browsers):
    for query in ("service=nothing", "status=lost", "before=../../etc"):
        status, page, _ = await browsers["ani"].get(f"/kiosk/requests?{query}")
        assert status == 400 and "Traceback" not in page


async def test_history_with_no_central_and_personal_fields_for_a_supervisor_only(gateway, browsers):
    thread = gateway.app[store_key]
    await thread.call(voter, "VTR234")
    await thread.call(lambda s: s.set_status("VTR234", "rejected", "NIK tidak cocok dengan KTP"))

    status, page, _ = await browsers["ani"].get("/kiosk/requests/VTR234?lang=en")
    assert status == 200
    assert "Received" in page and "Rejected" in page and "NIK tidak cocok dengan KTP" in page
    assert NIK not in page and "Siti Aminah" not in page and "+6281299990001" not in page
    assert "+62812****001" in page and "Your role does not show personal fields" in page
    assert "Sukamaju" not in page  # typed, not chosen from a list

    status, page, _ = await browsers["sari"].get("/kiosk/requests/vtr234?lang=en")
    assert status == 200 and NIK in page and "Siti Aminah" in page and "+6281299990001" in page
    assert "Your role does not show" not in page
    audit = await thread.call(lambda s: s.accounts.audit_log())
    views = [(r["who"], r["action"], r["target"]) for r in audit if r["action"] == "personal-view"]
    assert views == [("sari", "personal-view", "VTR234")]


async def test_report_choices_are_shown_to_an_operator_as_words(gateway, browsers):
    screens = await gateway.dial("s1", *REPORT, "1")
    ref = re.search(r"\b(K[A-Z0-9]{5})\b", screens[-1]).group(1)
    status, page, _ = await browsers["ani"].get(f"/kiosk/requests/{ref}?lang=en")
    assert status == 200 and "USSD" in page
    assert "Damaged road" in page or "damaged road" in page.lower()
    assert REPORT[2] not in page


async def test_an_unknown_reference_is_a_404_page(gateway, browsers):
    for ref in ("NOSUCH", "%3Cscript%3E", "X" * 300):
        status, page, _ = await browsers["ani"].get(f"/kiosk/requests/{ref}")
        assert status == 404 and "<script>" not in page


async def test_not_signed_in_goes_to_sign_in(gateway):
    browser = Browser(gateway.url)
    try:
        for path in ("/kiosk/requests", "/kiosk/requests/ABCDEF", "/kiosk/funnel", "/kiosk/funnel.json"):
            assert (await browser.get(path))[0] == 303
    finally:
        await browser.close()


async def test_the_list_pages_on_its_index(gateway, backend):
    if backend:
        pytest.skip("SQLite's query plan: the other backends run the same store on SQLite, or PostgreSQL's own")
    def plan(store):
        return query_plan(store.db, "SELECT ref FROM submissions WHERE (created_at, id) < ('2024', 'x') "
                                    "ORDER BY created_at DESC, id DESC LIMIT 26")

    found = await gateway.app[store_key].call(plan)
    assert "idx_submissions_created_at_id" in found and "TEMP B-TREE" not in found
