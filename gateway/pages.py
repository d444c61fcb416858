"""The kiosk's pages under `/kiosk`: sign-in and the audit log (`sync.pages`), and the operator's landing page.

The full dashboard and assisted entry come later; the landing page shows
who is signed in and what waits to sync.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from flows import Engine
from flows.catalog import N_
from sync.pages import PageSettings, render, require, setup_pages
from sync.protocol import STATUSES

from .config import Config
from .resources import engine_key, store_key

PREFIX = "/kiosk"
TEMPLATES = Path(__file__).parent / "templates"


def page_settings(config: Config, engine: Engine) -> PageSettings:
    """What the pages of both servers take from `config` and the engine: its catalogs, in menu order, and the
    cookie and sign-in rules."""
    catalog = engine.catalog
    return PageSettings(translations={lang: catalog.translations(lang) for lang in catalog.languages},
                        default_language=config["language.default"], secure_cookies=config["web.secure_cookies"],
                        login_per_minute=config["web.login_per_minute"])


def setup_kiosk(app: web.Application, config: Config) -> None:
    settings = page_settings(config, app[engine_key])
    setup_pages(app, settings, PREFIX, N_("web.title.kiosk"), "gateway", store_key, TEMPLATES)
    app.router.add_get(PREFIX, kiosk)


@require("read")
async def kiosk(request: web.Request) -> web.Response:
    counts = await request.app[store_key].call(lambda store: store.counts())
    sync, by_status = counts["sync"], counts["submissions"]["by_status"]
    rows = [(N_("web.kiosk.pending"), sync["pending"]), (N_("web.kiosk.synced"), sync["sent"]),
            (N_("web.kiosk.rejected"), sync["rejected"]),
            *((f"status.{status}", by_status.get(status, 0)) for status in STATUSES),
            (N_("web.counts.total"), counts["submissions"]["total"])]
    return render(request, "home.html", {"counts": rows})
