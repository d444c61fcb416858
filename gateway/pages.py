"""The kiosk's pages under `/kiosk`: sign-in and the audit log (`sync.pages`), and the operator's dashboard
(`kiosk.py`)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from flows import Engine
from flows.catalog import N_
from sync.pages import PageSettings, setup_pages

from .assist import setup_assist
from .config import Config
from .kiosk import setup_dashboard
from .resources import engine_key, store_key
from .village import setup_village

PREFIX = "/kiosk"
TEMPLATES = Path(__file__).parent / "templates"


def page_settings(config: Config, engine: Engine) -> PageSettings:
    """What the pages of both servers take from `config` and the engine: its catalogs, in menu order, and the
    cookie and sign-in rules."""
    catalog = engine.catalog
    return PageSettings(translations={lang: catalog.translations(lang) for lang in catalog.languages},
                        default_language=config["language.default"], secure_cookies=config["web.secure_cookies"],
                        login_per_minute=config["web.login_per_minute"])


NAV = ((PREFIX, N_("web.nav.dashboard")), (f"{PREFIX}/requests", N_("web.nav.requests")),
       (f"{PREFIX}/funnel", N_("web.nav.funnel")), (f"{PREFIX}/assist", N_("web.nav.assist")))
SIMULATOR_NAV = ("/simulator", N_("web.nav.simulator"))


def setup_kiosk(app: web.Application, config: Config) -> None:
    settings = page_settings(config, app[engine_key])
    nav = NAV + ((SIMULATOR_NAV,) if config["simulator.enabled"] else ())
    setup_pages(app, settings, PREFIX, N_("web.title.kiosk"), "gateway", store_key, TEMPLATES, nav)
    setup_dashboard(app)
    setup_assist(app, PREFIX)
    setup_village(app, PREFIX)
