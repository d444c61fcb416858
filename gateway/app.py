"""The gateway's aiohttp application: `create_app(config)`."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import signal
from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import web

from flows import Engine
from flows.catalog import N_
from flows.sms import Keywords
from sync.central import create_central_app
from sync.database import Clock, utc_now

from .central import central_config
from .config import Config
from .resources import (Rules, clock_key, config_key, engine_key, in_background, keywords_key, load_engine,
                        rules_key, store_context, store_key)
from .sender import sender_context
from .sms import delivery_callback, inbound_callback
from .syncer import syncer_context
from .ussd import ussd_callback

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
HOUSEKEEPING_SECONDS = 3600
KEEP_INBOUND_IDS = dt.timedelta(days=7)
CALLBACK_PREFIXES = ("/ussd/", "/sms/")


def create_app(config: Config, clock: Clock = utc_now, engine: Engine | None = None) -> web.Application:
    """Build the app; menus and catalogs are loaded and checked here, once (unless `engine` is given).

    `clock` is what the store reads as now: tests hand in one they move.
    """
    app = web.Application(middlewares=[error_middleware, callback_key_middleware],
                          client_max_size=MAX_BODY)
    app[config_key] = config
    app[clock_key] = clock
    app[engine_key] = engine or load_engine(config)
    app[keywords_key] = Keywords(app[engine_key])
    app[rules_key] = Rules.from_config(config)
    app.cleanup_ctx.append(store_context)
    app.cleanup_ctx.append(sender_context)
    app.cleanup_ctx.append(syncer_context)
    app.cleanup_ctx.append(housekeeping_context)
    setup_routes(app)
    return app


@dataclass(frozen=True)
class Served:
    """One app `kentongan serve` runs, and where."""

    name: str
    app: web.Application
    host: str
    port: int


def create_apps(config: Config, engine: Engine) -> list[Served]:
    """What `kentongan serve` runs: the gateway, and with `central.embedded` the central backend first.

    First, so that the gateway's first sync round finds it up.
    """
    apps = [Served("gateway", create_app(config, engine=engine), config["gateway.host"], config["gateway.port"])]
    if config["central.embedded"]:
        central = create_central_app(central_config(config, engine))
        apps.insert(0, Served("central backend", central, config["central.host"], config["central.port"]))
    return apps


def run_apps(apps: list[Served]) -> None:
    """Serve `apps` on one event loop until SIGINT or SIGTERM; raises OSError when a port is taken."""

    async def serve_all() -> None:
        runners = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            for served in apps:
                runner = web.AppRunner(served.app, access_log=None)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, served.host, served.port).start()
                log.info("%s on http://%s:%d", served.name, served.host, served.port)
            await stop.wait()
        finally:
            for runner in reversed(runners):
                await runner.cleanup()

    asyncio.run(serve_all())


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/ussd/africastalking", ussd_callback)
    app.router.add_post("/sms/africastalking/inbound", inbound_callback)
    app.router.add_post("/sms/africastalking/delivery", delivery_callback)
    app.router.add_get("/healthz", healthz)


async def healthz(request: web.Request) -> web.Response:
    counts = await request.app[store_key].call(lambda store: store.counts())
    return web.json_response({"status": "ok", "pending": counts["submissions"]["by_sync_state"].get("pending", 0)})


@web.middleware
async def callback_key_middleware(request: web.Request, handler):
    """Callbacks are unsigned: when a secret is set, the URL must carry it as `?key=`."""
    secret = request.app[config_key]["gateway.callback_secret"]
    if secret and request.path.startswith(CALLBACK_PREFIXES):
        if not hmac.compare_digest(request.query.get("key", "").encode(), secret.encode()):
            raise web.HTTPForbidden(text="missing or wrong callback key (?key=)")
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler):
    """The one place an unexpected failure becomes an answer; a caller gets a polite END."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        if request.path.startswith("/ussd/"):
            engine = request.app[engine_key]
            sorry = engine.catalog.text(engine.default_language, N_("error.sorry"))
            return web.Response(text=f"END {sorry}", content_type="text/plain")
        return web.json_response({"error": "internal error"}, status=500)


async def housekeeping_context(app: web.Application) -> AsyncIterator[None]:
    """Hourly: delete USSD sessions nobody can resume any more, and week-old incoming SMS ids."""
    keep = dt.timedelta(hours=app[config_key]["ussd.keep_sessions_hours"])

    async def loop() -> None:
        while True:
            try:
                gone = await app[store_key].call(lambda store: store.purge_sessions(keep))
                if gone:
                    log.info("deleted %d old USSD sessions", gone)
                await app[store_key].call(lambda store: store.purge_inbound(KEEP_INBOUND_IDS))
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async with in_background(loop()):
        yield
