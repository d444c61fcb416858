"""The district office's triage pages: filters, order, paging, a request's page by role, status changes with
their SMS preview, stale changes, bulk changes, reassignment, the review queue, CSRF and permissions.

A real central backend on a loopback port (the shipped menus' forms, the catalogs' notice renderer, routing
rules and targets, a clock the test moves); submissions arrive through the store's own ingestion, as a
gateway's batch would bring them; the browser is an aiohttp client with its own cookie jar.
"""

import datetime as dt
import re

import pytest
from ulid import ULID

from conftest import MovableClock, make_config, served
from gateway.central import notice_renderer
from gateway.pages import page_settings
from gateway.resources import load_engine
from sync.central import CentralConfig, create_central_app
from sync.central.app import central_store_key
from sync.protocol import HOLD, HOLD_LIMIT
from sync.reference import ALPHABET
from test_central_review import engine
from test_signin import Browser, add

STAFF = "staff-token"
PHONE = "+6281234567890"
NIK = "3201231708900001"
ROUTING = (("report", "road", "*", "Dinas PU"), ("report", "garbage", "*", "Dinas Lingkungan Hidup"),
           ("voter", "*", "*", "Disdukcapil"))
TARGETS = (("report", "road", 168), ("report", "garbage", 48), ("voter", "*", 336))
REFS = re.compile(r'<a class="ref" href="/office/r/([0-9A-Z]+)"')
FIELD = re.compile(r'name="(csrf|expected)" value="([^"]+)"')

pytestmark = pytest.mark.central_backends


def ref_for(number: int) -> str:
    """`A` and five characters of the reference alphabet, one per number."""
    digits = ""
    for _ in range(5):
        number, digit = divmod(number, len(ALPHABET))
        digits = ALPHABET[digit] + digits
    return "A" + digits


def item(number, service="report", category="road", village="Sukamaju", created_at=None, **extra):
    answers = {"report": {"category": category, "location": village, "description": f"hole number {number}"},
               "voter": {"nik": NIK, "name": "Siti Aminah", "birth_date": "1990-08-17", "village": village}}[service]
    return {"id": str(ULID()), "ref": ref_for(number), "service": service, "channel": "ussd", "answers": answers,
            "phone": PHONE, "language": "id", "created_at": created_at or f"2026-11-01T08:{number // 60:02d}:"
                                                                         f"{number % 60:02d}Z", **extra}


def central_config(data_dir, clock, database_url=""):
    return CentralConfig(data_dir, STAFF, engine().forms("en"), gateways={"desa-a": "secret-a"},
                         prefixes={"desa-a": "A"}, clock=clock, notice=notice_renderer(engine()),
                         routing=ROUTING, targets=TARGETS, database_url=database_url)


@pytest.fixture
async def office(tmp_path, central_db):
    """(browser, store thread, clock) of a central backend whose accounts are sari (staff, Dinas PU), ani (admin,
    Dinas PU), tono (viewer) and budi (staff, Dinas PU, a second browser)."""
    clock = MovableClock(dt.datetime(2026, 11, 1, 9, tzinfo=dt.timezone.utc))
    config = make_config(tmp_path / "cfg")
    app = create_central_app(central_config(tmp_path / "central", clock, central_db),
                             page_settings(config, load_engine(config)))
    async with served(app) as url:
        thread = app[central_store_key]
        for name, role in (("sari", "staff"), ("ani", "admin"), ("tono", "viewer"), ("budi", "staff")):
            await add(thread, name, role, "Dinas PU")
        browser = Browser(url, "/office")
        yield browser, thread, clock
        await browser.close()


async def ingest(thread, items):
    results = await thread.call(lambda s: s.ingest("desa-a", items))
    assert {r["result"] for r in results} == {"accepted"}, results


async def signed_in(browser, name):
    """`browser` signed in as `name`, reading English."""
    await browser.get("/office/login?lang=en")
    status, _, _ = await browser.sign_in(name)
    assert status == 303
    return browser


async def fields(browser, path):
    status, body, _ = await browser.get(path)
    assert status == 200, body
    return dict(FIELD.findall(body))


async def test_office_triage_defaults_to_the_agency_filters_and_pages(office):
    browser, thread, clock = office
    await ingest(thread, [item(n) for n in range(55)] + [item(100, category="garbage", village="Dusun Kidul"),
                                                         item(101, "voter", village="Sukamaju")])
    await signed_in(browser, "sari")
    status, body, _ = await browser.get("/office")
    assert status == 200
    first = REFS.findall(body)
    assert first == [ref_for(n) for n in range(54, 4, -1)]  # Dinas PU's own, newest first, 50 a page
    older = re.search(r'href="/office\?([^"]+)">', body.replace("&amp;", "&")).group(1)
    _, body, _ = await browser.get("/office?" + older)
    assert REFS.findall(body) == [ref_for(n) for n in range(4, -1, -1)]
    _, body, _ = await browser.get("/office?agency=")
    assert REFS.findall(body)[:2] == [ref_for(101), ref_for(100)]
    _, body, _ = await browser.get("/office?agency=&village=+dusun++KIDUL")
    assert REFS.findall(body) == [ref_for(100)]
    assert 'value="dusun  KIDUL"' in body or 'value="dusun KIDUL"' in body
    _, body, _ = await browser.get("/office?agency=&service=voter")
    assert REFS.findall(body) == [ref_for(101)]
    _, body, _ = await browser.get(f"/office?ref={ref_for(7).lower()}")
    assert REFS.findall(body) == [ref_for(7)]
    _, body, _ = await browser.get("/office?agency=&from=2026-11-02")
    assert REFS.findall(body) == []

    clock.advance(hours=60)  # garbage (48 h) is overdue; roads (168 h) are not
    await thread.call(lambda s: s.change(ref_for(3), "in_progress", "", "sari"))
    await signed_in(browser, "sari")  # the old session ended with the day
    _, body, _ = await browser.get("/office?agency=&order=overdue")
    assert REFS.findall(body)[0] == ref_for(100)
    assert "Overdue since" in body or "overdue" in body.lower()
    _, body, _ = await browser.get("/office?agency=&overdue=1")
    assert REFS.findall(body) == [ref_for(100)]
    _, body, _ = await browser.get("/office?status=in_progress")
    assert REFS.findall(body) == [ref_for(3)]


@pytest.mark.parametrize("query", ["ref=A%21%21", "from=2026-11-05&to=2026-11-01", "from=2026-13-01",
                                   "status=lost", "village=" + "x" * 90])
async def test_office_triage_refuses_bad_filters_and_keeps_what_was_typed(office, query):
    browser, thread, _ = office
    await signed_in(browser, "sari")
    status, body, _ = await browser.get("/office?" + query)
    assert status == 400
    assert 'class="reason" role="alert"' in body
    assert 'name="ref"' in body


async def test_office_triage_refuses_a_cursor_that_is_none(office):
    browser, _, _ = office
    await signed_in(browser, "sari")
    for after in ("nonsense", "WyJhIl0", "WyJsYXRlIiwibm8iLCJhIiwiYiJd", "x" * 300):
        status, body, _ = await browser.get(f"/office?after={after}")
        assert status == 400, after


async def test_office_request_page_shows_personal_fields_only_to_a_role_with_personal_and_audits_them(office):
    browser, thread, _ = office
    await ingest(thread, [item(1, "voter")])
    ref = ref_for(1)
    await signed_in(browser, "sari")
    status, body, _ = await browser.get(f"/office/r/{ref.lower()}")
    assert status == 200
    assert NIK not in body and "Siti Aminah" not in body and PHONE not in body
    assert "+62812****890" in body and "Sukamaju" not in body  # a voter's village is theirs: not published
    await browser.post("/office/logout", {"csrf": (await fields(browser, f"/office/r/{ref}"))["csrf"]})
    await signed_in(browser, "ani")
    _, body, _ = await browser.get(f"/office/r/{ref}")
    assert NIK in body and "Siti Aminah" in body and PHONE in body and "Sukamaju" in body
    audit = await thread.call(lambda s: s.accounts.audit_log())
    assert [(r["who"], r["target"]) for r in audit if r["action"] == "personal-view"] == [("ani", ref)]
    status, _, _ = await browser.get("/office/r/ZZZZZZ")
    assert status == 404


async def test_office_status_change_previews_the_sms_then_confirms_and_reaches_the_gateway(office):
    browser, thread, _ = office
    await ingest(thread, [item(1)])
    ref = ref_for(1)
    await signed_in(browser, "sari")
    form = await fields(browser, f"/office/r/{ref}")
    note = "Jalan sudah ditambal"
    status, body, _ = await browser.post(f"/office/r/{ref}/status", {**form, "status": "resolved", "note": note,
                                                                      "step": "preview"})
    assert status == 200
    sms = re.search(r'<p class="sms" id="sms-text">([^<]+)</p>', body).group(1)
    assert ref in sms and note in sms
    assert "shortened" not in body
    assert (await thread.call(lambda s: s.submission(ref)))["status"] == "received"  # a preview changes nothing

    status, _, headers = await browser.post(f"/office/r/{ref}/status", {**form, "status": "resolved", "note": note,
                                                                         "step": "confirm"})
    assert status == 303 and headers["Location"] == f"/office/r/{ref}?done=status"
    page = await thread.call(lambda s: s.submission_page(ref))
    assert (page["status"], page["note"]) == ("resolved", note)
    kinds = [(h["kind"], h["who"]) for h in page["history"]]
    assert ("status", "sari") in kinds and any(k == "sms" for k, _ in kinds)
    assert [h["detail"] for h in page["history"] if h["kind"] == "sms"] == [sms.replace("&#39;", "'")]
    updates = await thread.call(lambda s: s.updates("desa-a", 0))
    assert [(u["ref"], u["status"], u["note"]) for u in updates] == [(ref, "resolved", note)]
    audit = await thread.call(lambda s: s.accounts.audit_log())
    assert [(r["who"], r["target"], r["detail"]) for r in audit if r["action"] == "status"] == [
        ("sari", ref, "received -> resolved")]
    _, body, _ = await browser.get(f"/office/r/{ref}?done=status")
    assert 'class="done"' in body and "Status changed" in body


async def test_office_preview_says_when_the_note_is_shortened_and_refuses_a_note_too_long(office):
    browser, thread, _ = office
    await ingest(thread, [item(1)])
    ref = ref_for(1)
    await signed_in(browser, "sari")
    form = await fields(browser, f"/office/r/{ref}")
    _, body, _ = await browser.post(f"/office/r/{ref}/status", {**form, "status": "in_progress", "note": "kata " * 80,
                                                                 "step": "preview"})
    assert "The note is shortened" in body
    status, body, _ = await browser.post(f"/office/r/{ref}/status", {**form, "status": "in_progress",
                                                                      "note": "x" * 501, "step": "confirm"})
    assert status == 400 and "The note is too long" in body and "x" * 501 in body
    status, body, _ = await browser.post(f"/office/r/{ref}/status", {**form, "status": "lost", "step": "confirm"})
    assert status == 400
    assert (await thread.call(lambda s: s.submission(ref)))["status"] == "received"


async def test_office_stale_change_is_refused_with_what_changed_and_overwrites_nothing(office):
    browser, thread, _ = office
    await ingest(thread, [item(1)])
    ref = ref_for(1)
    await signed_in(browser, "sari")
    form = await fields(browser, f"/office/r/{ref}")
    await thread.call(lambda s: s.change(ref, "rejected", "bukan jalan desa", "budi"))
    status, body, _ = await browser.post(f"/office/r/{ref}/status", {**form, "status": "resolved",
                                                                      "note": "sudah", "step": "confirm"})
    assert status == 409
    assert "Someone changed this request" in body and "bukan jalan desa" in body and "budi" in body
    assert ">sudah</textarea>" in body  # what was typed is kept
    row = await thread.call(lambda s: s.submission(ref))
    assert (row["status"], row["note"]) == ("rejected", "bukan jalan desa")
    status, _, _ = await browser.post(f"/office/r/{ref}/status", {**form, "status": "resolved", "step": "preview"})
    assert status == 409


async def test_office_bulk_change_skips_and_lists_the_one_that_changed_meanwhile(office):
    browser, thread, _ = office
    await ingest(thread, [item(n) for n in range(3)])
    await signed_in(browser, "sari")
    rows = await thread.call(lambda s: [s.submission(ref_for(n)) for n in range(3)])
    picks = [("pick", f"{row['ref']}@{row['updated_at']}") for row in rows]
    status, body, _ = await browser.get("/office/bulk", params=picks)
    assert status == 200 and all(row["ref"] in body for row in rows)
    form = dict(re.findall(r'name="(csrf|picks)" value="([^"]+)"', body))
    await thread.call(lambda s: s.change(ref_for(1), "in_progress", "", "budi"))
    status, body, _ = await browser.post("/office/bulk", {**form, "status": "resolved", "note": "selesai"})
    assert status == 200
    assert re.findall(r'href="/office/r/([0-9A-Z]+)"', body.split('id="skipped"')[1]) == [ref_for(1)]
    statuses = await thread.call(lambda s: [s.submission(ref_for(n))["status"] for n in range(3)])
    assert statuses == ["resolved", "in_progress", "resolved"]
    status, _, _ = await browser.get("/office/bulk")
    assert status == 400


async def test_office_reassign_is_recorded_and_a_bad_agency_refused(office):
    browser, thread, _ = office
    await ingest(thread, [item(1)])
    ref = ref_for(1)
    await signed_in(browser, "sari")
    form = await fields(browser, f"/office/r/{ref}")
    status, body, _ = await browser.post(f"/office/r/{ref}/agency", {**form, "agency": "Dinas Rahasia"})
    assert status == 400
    status, _, _ = await browser.post(f"/office/r/{ref}/agency", {**form, "agency": "Disdukcapil"})
    assert status == 303
    page = await thread.call(lambda s: s.submission_page(ref))
    assert page["agency"] == "Disdukcapil"
    assert [(h["who"], h["detail"]) for h in page["history"] if h["kind"] == "assign"] == [
        ("sari", "Dinas PU -> Disdukcapil")]


async def test_office_refuses_changes_without_csrf_or_permission_and_asks_to_sign_in(office):
    browser, thread, _ = office
    await ingest(thread, [item(1)])
    ref = ref_for(1)
    status, _, headers = await browser.get("/office?service=report")
    assert status == 303 and headers["Location"].startswith("/office/login?next=")
    await signed_in(browser, "sari")
    form = await fields(browser, f"/office/r/{ref}")
    status, _, _ = await browser.post(f"/office/r/{ref}/status", {"expected": form["expected"], "csrf": "wrong",
                                                                   "status": "resolved", "step": "confirm"})
    assert status == 403
    await browser.post("/office/logout", {"csrf": form["csrf"]})
    await signed_in(browser, "tono")
    form = await fields(browser, f"/office/r/{ref}")
    status, body, _ = await browser.post(f"/office/r/{ref}/status", {**form, "status": "resolved", "step": "confirm"})
    assert status == 403 and "staff" in body
    status, _, _ = await browser.get("/office/bulk", params={"pick": f"{ref}@x"})
    assert status == 403
    assert (await thread.call(lambda s: s.submission(ref)))["status"] == "received"


async def test_office_review_queue_lists_held_registrations_with_their_reason(office):
    browser, thread, _ = office
    await ingest(thread, [item(1, "voter"), item(2, "voter", **{HOLD: HOLD_LIMIT})])
    await signed_in(browser, "tono")
    status, body, _ = await browser.get("/office/review")
    assert status == 200
    assert REFS.findall(body) == [ref_for(2)]
    assert f"already registered in {ref_for(1)}" in body and f'href="/office/r/{ref_for(1)}"' in body



async def test_office_overdue_requests_are_escalated_to_the_agencys_supervisors(office):
    browser, thread, clock = office
    await thread.call(lambda s: s.accounts.add("dewi", "supervisor", "dewi-password-1", "Dinas PU"))
    await ingest(thread, [item(1), item(2, category="garbage")])  # roads go to Dinas PU, garbage elsewhere
    clock.advance(hours=169)  # both past their deadline
    assert await thread.call(lambda s: s.escalate_overdue()) == 2
    await signed_in(browser, "sari")  # staff: no escalation banner
    assert "escalated to you" not in (await browser.get("/office"))[1]
    browser.http.cookie_jar.clear()
    await browser.get("/office/login?lang=en")
    assert (await browser.sign_in("dewi", "dewi-password-1"))[0] == 303
    body = (await browser.get("/office"))[1].replace("&amp;", "&")
    assert "1 requests of Dinas PU are past their deadline and were escalated to you" in body
    link = re.search(r'href="(/office\?agency=Dinas\+PU&overdue=1&order=overdue)"', body).group(1)
    assert REFS.findall((await browser.get(link))[1]) == [ref_for(1)]
    await thread.call(lambda s: s.change(ref_for(1), "resolved", "", "dewi"))
    assert "escalated to you" not in (await browser.get("/office"))[1]


async def test_office_a_villagers_own_words_are_sealed_and_shown_only_to_a_role_with_personal(office):
    browser, thread, _ = office
    await ingest(thread, [item(1)])
    ref = ref_for(1)
    words = "Pak Budi di RT 3 bilang belum"

    def answer(store):
        row = store.submission(ref)
        store.change(ref, "resolved", "", "sari")
        return store.record_feedback("desa-a", [{"id": str(ULID()), "submission_id": row["id"], "ref": ref,
                                                 "fixed": False, "rating": 2, "words": words,
                                                 "at": store.stamp(store.clock())}])

    assert [r["result"] for r in await thread.call(answer)] == ["accepted"]
    assert await thread.call(lambda s: s.db.execute("SELECT count(*) FROM history WHERE note LIKE '%Budi%'")
                             .fetchone()[0]) == 0  # sealed at rest
    await signed_in(browser, "sari")
    body = (await browser.get(f"/office/r/{ref}"))[1]
    assert words not in body and "not fixed" in body.lower()
    browser.http.cookie_jar.clear()
    await signed_in(browser, "ani")
    assert words in (await browser.get(f"/office/r/{ref}"))[1]
