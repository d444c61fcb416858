"""The CSV of a filtered triage view (`/office/export.csv`), streamed: a large export never sits in memory.

Rows are read through the store's reading threads `CHUNK` at a time (the
store's keyset paging) and written to the response as they come; the
response is chunked, so nothing waits for the whole file. The columns are
the ones a district spreadsheet keeps (`COLUMNS`), then one per answer:
for a role with "personal", the phone and every answer, and the export is
one audit row ("personal-export"); for any other role, only the answers such
a role may see (chosen from a list, the place and the description), no phone.

The file is UTF-8 with a byte-order mark, which spreadsheets need to read
it as UTF-8. A cell that starts like a formula (`=`, `+`, `-`, `@`, a tab or
a carriage return) is prefixed with `'`, so that a villager's words are
never run by a spreadsheet.
"""

from __future__ import annotations

import csv
import io
from typing import Mapping

from aiohttp import web

from ..thread import StoreThread
from .service import place_shown
from .store import CentralStore

CHUNK = 250
"""Rows read from the store, and written to the response, at a time."""
COLUMNS = ("reference", "service", "category", "village", "agency", "status", "received", "due", "resolved",
           "overdue", "reopened", "fixed", "rating", "gateway", "channel")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"


def safe(value) -> str:
    """A cell's text, with `'` before anything a spreadsheet would read as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _flag(value) -> str:
    return "" if value is None else str(int(value))


def answer_names(forms: Mapping[str, dict], personal: bool, not_personal) -> list[str]:
    """The answer columns: every answer of every form (in form and menu order), or for a role without
    "personal" those `not_personal(form)` lets through; the category and the place (a form's address) have
    columns of their own, and no answer takes a column's name."""
    names = []
    for form in forms.values():
        allowed = not_personal(form)
        for question in form["questions"]:
            name = question["answer"]
            own = name in (*COLUMNS, "phone", form.get("address")) or question is _first_choice(form)
            if not own and name not in names and (personal or name in allowed):
                names.append(name)
    return names


def _first_choice(form: dict) -> dict | None:
    """The question whose answer is the category: the form's first one answered from a list."""
    return next((question for question in form["questions"] if question["kind"] == "choice"), None)


def _line(row: dict, names: list[str], personal: bool, allowed: frozenset[str], form: dict | None) -> list[str]:
    place = place_shown(form, row.get("village"), personal)
    cells = [row["ref"], row["service"], row.get("category"), place, row.get("agency"), row["status"],
             row["created_at"], row.get("due_at"), row.get("resolved_at"), _flag(row.get("overdue")),
             row.get("reopened"), _flag(row.get("fixed")), row.get("rating"), row["gateway_id"], row["channel"]]
    if personal:
        cells.append(row["phone"])
    cells.extend(row["answers"].get(name) if personal or name in allowed else None for name in names)
    return [safe(cell) for cell in cells]


def filename(now: str) -> str:
    """`kentongan-2026-11-28.csv`: ASCII letters, digits and dashes only."""
    return f"kentongan-{''.join(c for c in now[:10] if c.isdigit() or c == '-')}.csv"


async def stream_csv(request: web.Request, thread: StoreThread, filters: dict, forms: Mapping[str, dict], who: str,
                     personal: bool, not_personal) -> web.StreamResponse:
    """Answer `request` with the CSV of every submission `CentralStore.triage(**filters)` lists, `CHUNK` rows
    at a time; `who`'s export is audited when `personal`."""
    names = answer_names(forms, personal, not_personal)
    allowed = {code: not_personal(form) for code, form in forms.items()}

    def start(store: CentralStore) -> str:
        if personal:
            store.accounts.audit(who, "personal-export", "", " ".join(
                f"{key}={value}" for key, value in filters.items() if value and key != "village")[:200])
        return store.stamp(store.clock())

    now = await thread.call(start)
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{filename(now)}"'})
    response.enable_chunked_encoding()
    await response.prepare(request)
    header = [*COLUMNS, *(["phone"] if personal else []), *names]
    await response.write((BOM + _csv([header])).encode("utf-8"))
    after = None
    while True:
        rows, after = await thread.read(lambda s: s.triage(**filters, after=after, limit=CHUNK))
        lines = [_line(row, names, personal, allowed.get(row["service"], frozenset()), forms.get(row["service"]))
                 for row in rows]
        await response.write(_csv(lines).encode("utf-8"))
        if after is None:
            break
    await response.write_eof()
    return response


def _csv(lines: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(lines)
    return buffer.getvalue()
