"""The district office's pages under `/office`: sign-in and the audit log (`sync.pages`), and the landing page.

The office's queue and statistics come later; the landing page shows who is
signed in and the submissions by status.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ..pages import N_, PageSettings, pages_key, render, require, setup_pages
from ..protocol import STATUSES
from .store import CentralStore

PREFIX = "/office"
TEMPLATES = Path(__file__).parent / "templates"


def setup_office(app: web.Application, settings: PageSettings, store_key: web.AppKey) -> None:
    setup_pages(app, settings, PREFIX, N_("web.title.office"), "central", store_key, TEMPLATES)
    app.router.add_get(PREFIX, office)


def counts_by_status(store: CentralStore) -> dict[str, int]:
    """How many submissions have each status (those with none are absent)."""
    return dict(store.db.execute("SELECT status, count(*) FROM submissions GROUP BY status").fetchall())


@require("read")
async def office(request: web.Request) -> web.Response:
    counts = await request.app[pages_key].store(request).call(counts_by_status)
    rows = [*((f"status.{status}", counts.get(status, 0)) for status in STATUSES),
            (N_("web.counts.total"), sum(counts.values()))]
    return render(request, "home.html", {"counts": rows})
