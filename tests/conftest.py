import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.config import load_config
from gateway.resources import engine_key, sender_key

PHONE = "+6281234567890"

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
"""The PostgreSQL that CI (and this machine) runs: trust auth, database `test`."""
REDIS = "redis://127.0.0.1:6379/0"
BACKENDS = ("sqlite", "redis", "postgres")
"""What a behaviour test runs against when its module says `pytestmark = pytest.mark.backends`:
the embedded default; USSD sessions in Redis; the stores (and their sessions) in PostgreSQL."""
CENTRAL_BACKENDS = ("sqlite", "postgres")
"""What a central-backend test runs against (`pytestmark = pytest.mark.central_backends`): Redis holds no
part of the central backend, so a run on it would repeat the SQLite one."""


def pytest_configure(config):
    config.addinivalue_line("markers", "backends: run each test against every backend (BACKENDS), as a parameter")
    config.addinivalue_line("markers", "central_backends: run each test against SQLite and PostgreSQL "
                                       "(CENTRAL_BACKENDS), as a parameter")


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("backends"):
        metafunc.parametrize("backend", BACKENDS, indirect=True)
    elif "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("central_backends"):
        metafunc.parametrize("backend", CENTRAL_BACKENDS, indirect=True)


def need_service(name: str, url: str) -> None:
    """Skip, or fail with KENTONGAN_REQUIRE_SERVICES=1 (CI), when `name` at `url` does not answer."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except OSError as error:
        reason = f"{name} not reachable at {parts.hostname}:{parts.port} ({error.strerror or error})"
        if os.environ.get("KENTONGAN_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, and KENTONGAN_REQUIRE_SERVICES=1")
        pytest.skip(reason)


@contextlib.asynccontextmanager
async def postgres_schemas(*names: str):
    """Fresh PostgreSQL schemas for one test, dropped after it; yields a DSN for each (its search_path)."""
    import asyncpg
    from ulid import ULID

    need_service("PostgreSQL", POSTGRES)
    tag = str(ULID()).lower()
    schemas = [f"kt_{tag}_{name}" for name in names]
    conn = await asyncpg.connect(POSTGRES)
    try:
        for schema in schemas:
            await conn.execute(f"CREATE SCHEMA {schema}")
        yield [f"{POSTGRES}?search_path={schema}" for schema in schemas]
    finally:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


@contextlib.asynccontextmanager
async def redis_prefix():
    """A Redis key prefix of one test's own, its keys deleted after it."""
    import redis.asyncio as redis
    from ulid import ULID

    need_service("Redis", REDIS)
    prefix = f"kentongan-test:{ULID()}:"
    try:
        yield prefix
    finally:
        client = redis.from_url(REDIS)
        async for key in client.scan_iter(match=prefix + "*"):
            await client.delete(key)
        await client.aclose()


@pytest.fixture
async def backend(request):
    """Config overrides for one backend (see BACKENDS): {} for the embedded default."""
    name = getattr(request, "param", "sqlite")
    if name == "sqlite":
        yield {}
    elif name == "redis":
        async with redis_prefix() as prefix:
            yield {"sessions__backend": "redis", "sessions__redis_url": REDIS, "sessions__redis_prefix": prefix}
    elif name == "postgres":
        async with postgres_schemas("gateway", "central") as (gateway_dsn, central_dsn):
            yield {"gateway__database_url": gateway_dsn, "central__database_url": central_dsn}
    else:
        raise ValueError(f"unknown backend {name!r}")


@pytest.fixture
def central_db(backend) -> str:
    """The central store's `database_url` on `backend`: "" (SQLite in its data dir) or a fresh PostgreSQL schema."""
    return backend.get("central__database_url", "")


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request):
    """For a test that opens the gateway's store itself: "" (the SQLite file in its data folder), or the address
    of a fresh PostgreSQL schema (`gateway.database_url`). Redis holds no store, so it is not a parameter here."""
    if request.param == "sqlite":
        yield ""
    else:
        async with postgres_schemas("gateway") as (url,):
            yield url


class MovableClock:
    """What a gateway's store reads as now: real time from `start`, plus however far a test moved it.

    It keeps ticking (SMS retries fall due in real time) and only ever moves
    forward, so rows written one after another keep their order.
    """

    def __init__(self, start: dt.datetime | None = None):
        self.start = start or dt.datetime.now(dt.timezone.utc)
        self.started = time.monotonic()
        self.moved = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=time.monotonic() - self.started) + self.moved

    def advance(self, **delta) -> None:
        """Move forward: `clock.advance(minutes=6)`."""
        self.moved += dt.timedelta(**delta)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def served(app: web.Application, port: int | None = None, **runner_options):
    """`app` on a loopback port (a free one unless given) for the block; yields its base URL."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def make_config(data_dir: Path, **overrides):
    """Defaults (not ./config.yaml) with the data under `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    empty = data_dir / "config.yaml"
    empty.write_text("")
    return load_config(empty, environ={}, gateway__data_dir=str(data_dir), **overrides)


class Gateway:
    """A real gateway on a loopback port, with a phone to dial it, reading `clock` as now."""

    def __init__(self, config, clock: MovableClock | None = None):
        self.config = config
        self.clock = clock or MovableClock()
        self.runner = None
        self.url = None
        self.http = None

    async def start(self):
        self.runner = web.AppRunner(create_app(self.config, clock=self.clock))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()  # the kernel picks a free port: no race
        self.url = "http://127.0.0.1:{}".format(self.runner.addresses[0][1])
        self.http = aiohttp.ClientSession()
        return self

    async def stop(self):
        await self.http.close()
        await self.runner.cleanup()

    async def restart(self):
        await self.stop()
        return await self.start()

    @property
    def app(self):
        return self.runner.app

    def advance(self, **delta) -> None:
        """Move the gateway's clock forward, and wake its SMS sender to look at the new time."""
        self.clock.advance(**delta)
        self.app[sender_key].wake()

    def apologies(self) -> set[str]:
        """The polite END a caller gets when something broke, in every language."""
        catalog = self.app[engine_key].catalog
        return {catalog.text(lang, "error.sorry") for lang in catalog.languages}

    async def post(self, path, data, **kwargs):
        async with self.http.post(self.url + path, data=data, **kwargs) as response:
            return response.status, await response.text(), response.headers.get("Content-Type", "")

    async def hop(self, session_id, text, phone=PHONE, service_code="*384*1#"):
        """One USSD callback, exactly as Africa's Talking sends it; returns the body."""
        status, body, kind = await self.post("/ussd/africastalking", {
            "sessionId": session_id, "serviceCode": service_code, "phoneNumber": phone,
            "networkCode": "51010", "text": text,
        })
        assert status == 200, body
        assert kind.startswith("text/plain")
        return body

    async def dial(self, session_id, *inputs, phone=PHONE):
        """Dial and type `inputs` one hop at a time; return every screen."""
        screens = [await self.hop(session_id, "", phone)]
        history = []
        for typed in inputs:
            history.append(typed)
            screens.append(await self.hop(session_id, "*".join(history), phone))
        return screens


@pytest.fixture
def config(tmp_path, backend):
    return make_config(tmp_path / "var", **backend)


@pytest.fixture
def clock():
    return MovableClock()


@pytest.fixture
async def gateway(config, clock):
    gw = await Gateway(config, clock).start()
    yield gw
    await gw.stop()


async def eventually(check, timeout=15.0, interval=0.05):
    """Wait until `check()` (a function or a coroutine function) is true, within `timeout`; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(interval)


def sms_config(data_dir: Path, standin, **overrides):
    """A gateway that sends SMS through the real SDK to `standin`, retrying fast.

    The send timeout is generous: a stand-in slowed by a busy machine must not look like a lost
    answer (the gateway would send again). Tests of timeouts hold the request instead.
    """
    settings = dict(sms__provider="africastalking", sms__africastalking__username=standin.username,
                    sms__africastalking__api_key=standin.api_key, sms__africastalking__api_url=standin.url,
                    sms__retry_seconds=0.05, sms__timeout_seconds=10)
    settings.update(overrides)
    return make_config(data_dir, **settings)


@pytest.fixture
async def standin():
    from standin import AfricasTalkingStandIn

    server = await AfricasTalkingStandIn().start()
    yield server
    await server.stop()


@pytest.fixture
async def sms_gateway(tmp_path, standin, clock, backend):
    gw = await Gateway(sms_config(tmp_path / "var", standin, **backend), clock).start()
    yield gw
    await gw.stop()


@pytest.fixture
def chrome():
    """Debian's Chromium in English, headless (skipped, or failed in CI, where it is absent: `browser.py`)."""
    from browser import open_chromium

    driver = open_chromium("en")
    yield driver
    driver.quit()


def query_plan(db, select: str) -> str:
    """SQLite's plan for `select` on `db` (a sqlite-utils Database), as one line to search for index names."""
    return " ".join(str(row) for row in db.execute(f"EXPLAIN QUERY PLAN {select}"))


def our_errors(records) -> list:
    """The ERROR records and tracebacks that this code wrote, from a caplog's records.

    Left out: asyncio's "Task was destroyed but it is pending!" about an
    aiohttp request handler. An earlier test's event loop closed while one of
    its connections was still open; the garbage collector may report that
    task during any later test, so it says nothing about the test that sees it.
    """
    def stray(record):
        return record.name == "asyncio" and record.getMessage().startswith(
            "Task was destroyed but it is pending") and "RequestHandler" in record.getMessage()
    return [r for r in records
            if (r.levelno >= logging.ERROR or r.exc_info or "Traceback" in r.getMessage()) and not stray(r)]
