"""The gateway's aiohttp application: `create_app(config)`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from aiohttp import web

from flows import Engine
from flows.catalog import N_
from flows.sms import Keywords
from sync.central import create_central_app
from sync.database import Clock, utc_now
from sync.limits import RateLimiter

from .central import central_config
from .config import SETTINGS, Config
from .duties import duties_context, duties_key, duty
from .log import client_error_logger
from .metrics import setup_metrics
from .pages import page_settings, setup_kiosk
from .resources import (Rules, clock_key, config_key, engine_key, housekeep, keywords_key,
                        load_engine, rules_key, store_context, store_key)
from .sender import sender_context
from .simulator import setup_simulator
from .sms import delivery_callback, inbound_callback
from .syncer import syncer_context
from .ussd import sessions_context, ussd_callback

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
HOUSEKEEPING_SECONDS = 3600
SHUTDOWN_SECONDS = 10.0
"""How long a stopping server waits for requests in flight; well within a service manager's patience."""
CAP_LOG_SECONDS = 60.0
"""At most one log line per server per this many seconds about connections refused at the cap."""
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 27\r\n"
           b"Retry-After: 5\r\nConnection: close\r\n\r\ntoo many connections, retry")
CALLBACK_PREFIXES = ("/ussd/", "/sms/")
wrong_keys_key = web.AppKey("wrong_keys", RateLimiter)


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
    app[wrong_keys_key] = RateLimiter("wrong callback keys", config["limits.wrong_keys_per_minute"], 60)
    app.cleanup_ctx.append(store_context)
    app.cleanup_ctx.append(sessions_context)  # after the store's: it seals with the store's key
    app.cleanup_ctx.append(duties_context)
    app.cleanup_ctx.append(sender_context)
    app.cleanup_ctx.append(syncer_context)
    app.cleanup_ctx.append(housekeeping_context)
    setup_metrics(app, app[wrong_keys_key])
    setup_routes(app)
    return app


def _default(name: str):
    return next(setting.default for setting in SETTINGS if setting.name == name)


@dataclass(frozen=True)
class ServerLimits:
    """What bounds the connections of one server, whatever arrives on them (`server.*` settings)."""

    idle_seconds: float = _default("server.idle_seconds")
    max_connections: int = _default("server.max_connections")

    @classmethod
    def from_config(cls, config: Config) -> ServerLimits:
        return cls(config["server.idle_seconds"], config["server.max_connections"])

    def per_worker(self, workers: int) -> ServerLimits:
        """The limits of one of `workers` processes sharing a port: `server.max_connections` stays what the
        machine holds in all, since the kernel spreads new connections evenly among the listening workers."""
        return ServerLimits(self.idle_seconds, max(1, math.ceil(self.max_connections / workers)))


@dataclass(frozen=True)
class Served:
    """One app `kentongan serve` runs, and where."""

    name: str
    app: web.Application
    host: str
    port: int
    limits: ServerLimits = field(default_factory=ServerLimits)
    reuse_port: bool = False
    """Several workers listen on this port (SO_REUSEPORT): the kernel spreads new connections among them."""


def create_apps(config: Config, engine: Engine) -> list[Served]:
    """What `kentongan serve` runs: the gateway, and with `central.embedded` the central backend first.

    First, so that the gateway's first sync round finds it up.
    """
    limits = ServerLimits.from_config(config)
    apps = [gateway_served(config, engine)]
    if config["central.embedded"]:
        central = create_central_app(central_config(config, engine), page_settings(config, engine))
        apps.insert(0, Served("central backend", central, config["central.host"], config["central.port"], limits))
    return apps


def gateway_served(config: Config, engine: Engine, workers: int = 1) -> Served:
    """The gateway as one of `workers` processes listening on its port (alone unless `workers` > 1)."""
    return Served("gateway", create_app(config, engine=engine), config["gateway.host"], config["gateway.port"],
                  ServerLimits.from_config(config).per_worker(workers), reuse_port=workers > 1)


def run_apps(apps: list[Served]) -> None:
    """Serve `apps` on one event loop until SIGINT or SIGTERM; raises OSError when a port is taken."""

    async def serve_all() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with serving(apps):
            await stop.wait()

    asyncio.run(serve_all())


@contextlib.asynccontextmanager
async def serving(apps: list[Served]) -> AsyncIterator[list[str]]:
    """Serve `apps` for the block, each within its limits; yields their base URLs (a port 0 is the kernel's pick).

    aiohttp closes a connection that sent no complete request head within
    its `keepalive_timeout`, counted from the connection's start or its last
    answer, however many bytes trickle in: that one setting closes idle and
    slowloris connections alike.
    """
    cap = connection_cap([served.limits.max_connections for served in apps])
    runners, listeners, urls = [], [], []
    try:
        for served, most in zip(apps, cap):
            runner = web.AppRunner(served.app, access_log=None, logger=client_error_logger(),
                                   keepalive_timeout=served.limits.idle_seconds, shutdown_timeout=SHUTDOWN_SECONDS)
            await runner.setup()
            runners.append(runner)
            listener = await asyncio.get_running_loop().create_server(
                CappedConnections(runner.server, served.name, most), served.host, served.port, backlog=128,
                reuse_port=served.reuse_port or None)
            listeners.append(listener)
            port = listener.sockets[0].getsockname()[1]
            urls.append(f"http://{served.host}:{port}")
            log.info("%s on %s (at most %d connections)", served.name, urls[-1], most)
        yield urls
    finally:
        for listener in listeners:
            listener.close()
        for runner in reversed(runners):
            await runner.cleanup()


def connection_cap(wanted: list[int]) -> list[int]:
    """Each server's cap: as wanted, lowered so that together they stay within half the open-file limit.

    The other half is for the stores, logs and outgoing connections: past
    the limit, accept() fails and asyncio logs every attempt.
    """
    files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files == resource.RLIM_INFINITY or not wanted:
        return wanted
    share = max(1, files // 2 // len(wanted))
    if any(most > share for most in wanted):
        log.warning("server.max_connections lowered to %d per server: the open-file limit is %d", share, files)
    return [min(most, share) for most in wanted]


class CappedConnections:
    """The protocol factory of a listening socket: aiohttp's handler while under the cap, else a 503.

    A connection is counted from the moment it is accepted: aiohttp lists it
    in `server.connections` only one turn of the loop later, after a whole
    burst of accepts, so the ones accepted in this turn are counted here.
    """

    def __init__(self, server: web.Server, name: str, most: int):
        self.server, self.name, self.most = server, name, most
        self.accepted = 0
        self.refused = 0
        self.logged_at = -CAP_LOG_SECONDS

    def __call__(self) -> asyncio.BaseProtocol:
        if self.accepted == 0:
            asyncio.get_running_loop().call_soon(self._settle)
        if len(self.server.connections) + self.accepted >= self.most:
            self._refuse()
            return _Refusal()
        self.accepted += 1
        return self.server()

    def _settle(self) -> None:
        self.accepted = 0

    def _refuse(self) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self.logged_at >= CAP_LOG_SECONDS:
            log.warning("%s: %d connections open, its cap (server.max_connections); %d refused with 503 "
                        "since the last such line", self.name, self.most, self.refused)
            self.logged_at, self.refused = now, 0


class _Refusal(asyncio.Protocol):
    """A connection past the cap: answered 503 at once and closed, so its file is free again."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(REFUSAL)
        transport.close()


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/ussd/africastalking", ussd_callback)
    app.router.add_post("/sms/africastalking/inbound", inbound_callback)
    app.router.add_post("/sms/africastalking/delivery", delivery_callback)
    app.router.add_get("/healthz", healthz)
    setup_kiosk(app, app[config_key])
    setup_simulator(app)


async def healthz(request: web.Request) -> web.Response:
    pending = await request.app[store_key].read(lambda store: store.pending_count())
    # Which process answered, and whether it runs the background duties: with several workers, the one to
    # look at when SMS stop going out.
    return web.json_response({"status": "ok", "pending": pending, "pid": os.getpid(),
                              "duties": request.app[duties_key].leading})


@web.middleware
async def callback_key_middleware(request: web.Request, handler):
    """Callbacks are unsigned: when a secret is set, the URL must carry it as `?key=`.

    An address that sent `limits.wrong_keys_per_minute` wrong keys gets 429
    for the rest of its minute without its key being compared: guessing the
    secret takes years, and the first refusal is one WARNING line.
    """
    secret = request.app[config_key]["gateway.callback_secret"]
    if secret and request.path.startswith(CALLBACK_PREFIXES):
        wrong = request.app[wrong_keys_key]
        address = request.remote or "?"
        if not wrong.peek(address).allowed:
            raise _too_many_wrong_keys(wrong, address)
        if not hmac.compare_digest(request.query.get("key", "").encode("utf-8", "surrogatepass"), secret.encode()):
            wrong.hit(address)
            raise web.HTTPForbidden(text="missing or wrong callback key (?key=)")
    return await handler(request)


def _too_many_wrong_keys(wrong: RateLimiter, address: str) -> web.HTTPTooManyRequests:
    """The 429 of an address held by `wrong`; its first one in a minute is one WARNING line."""
    verdict = wrong.hit(address)
    if verdict.first_refusal:
        log.warning("%s: %d wrong callback keys this minute; refused until the minute ends", ascii(address),
                    wrong.limit)
    seconds = max(1, math.ceil(verdict.retry_after))
    return web.HTTPTooManyRequests(text=f"too many wrong callback keys from this address; retry in {seconds} s",
                                   headers={"Retry-After": str(seconds)})


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
    """Hourly: delete what is kept no longer (see `resources.housekeep`): old USSD sessions and SMS ids,
    personal fields past `privacy.retention_days`, final SMS past `sms.keep_days`."""

    async def loop() -> None:
        while True:
            try:
                gone = await app[store_key].call(housekeep, app[config_key])
                if any(gone.values()):
                    log.info("housekeeping deleted %s", ", ".join(f"{n} {what}" for what, n in gone.items() if n))
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async with duty(app, "housekeeping", loop):
        yield
