"""The office's CSV export: the filtered triage view, streamed in chunks, with the columns a district
spreadsheet wants, personal fields only for a role with "personal" (one audit row per export), formulas
defused, UTF-8 with a byte-order mark."""

import csv
import io

import pytest

from sync.central.export import CHUNK, COLUMNS
from sync.central.store import CentralStore
from test_office import NIK, PHONE, ingest, item, office, ref_for, signed_in  # noqa: F401 (the fixture)

pytestmark = pytest.mark.central_backends


async def download(browser, query=""):
    async with browser.http.get(f"{browser.url}/office/export.csv{query}", allow_redirects=False) as response:
        chunks = [chunk async for chunk in response.content.iter_any()]
        return response, b"".join(chunks)


def rows_of(body: bytes) -> list[list[str]]:
    assert body.startswith("\ufeff".encode())
    return list(csv.reader(io.StringIO(body.decode("utf-8")[1:])))


async def test_office_export_columns_masking_and_formula_guard_for_a_role_without_personal(office):
    browser, thread, _ = office
    dangerous = item(1)
    dangerous["answers"]["description"] = '=HYPERLINK("http://x","klik")'
    await ingest(thread, [dangerous, item(2, "voter"), item(3, category="garbage")])
    await signed_in(browser, "sari")
    response, body = await download(browser, "?agency=Dinas+PU")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in response.headers
    assert response.headers["Content-Disposition"] == 'attachment; filename="kentongan-2026-11-01.csv"'
    header, *lines = rows_of(body)
    assert tuple(header[:len(COLUMNS)]) == COLUMNS
    assert "phone" not in header and "nik" not in header and "name" not in header
    assert len(set(header)) == len(header) and "location" not in header
    assert [line[0] for line in lines] == [ref_for(1)]
    line = dict(zip(header, lines[0]))
    assert line["description"] == "'=HYPERLINK(\"http://x\",\"klik\")"
    assert (line["service"], line["category"], line["village"], line["agency"], line["status"]) == (
        "report", "road", "Sukamaju", "Dinas PU", "received")
    assert PHONE not in body.decode() and NIK not in body.decode()
    audit = await thread.call(lambda s: s.accounts.audit_log())
    assert not [r for r in audit if r["action"] == "personal-export"]


async def test_office_export_gives_a_role_with_personal_the_phone_and_answers_and_audits_it_once(office):
    browser, thread, _ = office
    await ingest(thread, [item(1, "voter"), item(2)])
    await signed_in(browser, "ani")
    response, body = await download(browser, "?agency=")
    header, *lines = rows_of(body)
    assert {"phone", "nik", "name"} <= set(header)
    voter = dict(zip(header, next(line for line in lines if line[0] == ref_for(1))))
    assert (voter["phone"], voter["nik"], voter["agency"]) == ("'" + PHONE, NIK, "Disdukcapil")
    audit = await thread.call(lambda s: s.accounts.audit_log())
    assert [(r["who"], r["action"]) for r in audit if r["action"] == "personal-export"] == [("ani", "personal-export")]


async def test_office_export_refuses_bad_filters(office):
    browser, _, _ = office
    await signed_in(browser, "sari")
    response, body = await download(browser, "?from=2026-02-30")
    assert response.status == 400 and b"date" in body


async def test_office_export_streams_a_large_view_page_by_page(office, monkeypatch):
    browser, thread, _ = office
    total = 2 * CHUNK + 17
    await ingest(thread, [item(n) for n in range(total)])
    limits = []
    triage = CentralStore.triage

    def counted(self, **kwargs):
        limits.append(kwargs["limit"])
        return triage(self, **kwargs)

    monkeypatch.setattr(CentralStore, "triage", counted)
    await signed_in(browser, "sari")
    response, body = await download(browser)
    header, *lines = rows_of(body)
    assert len(lines) == total and len({line[0] for line in lines}) == total
    assert limits == [CHUNK] * 3  # never the whole view at once
