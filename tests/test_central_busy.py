"""Long reads at the central backend never hold up sync: Open311 reads run beside the store's writing thread.

A real central backend on a loopback port, over a real store of 100,000
Open311-visible requests; its latency figures are in tests/bench/central_reads.py.
"""

import asyncio
import datetime as dt
import json
import time

import aiohttp
import pytest
from aiohttp import web
from ulid import ULID

from conftest import eventually, our_errors, served
from sync.central import CentralConfig, CentralStore, create_central_app
from sync.protocol import UPDATES_PATH, sign_request
from test_sync import PHONE, SECRET, STAFF, forms

REQUESTS = 100_000
LISTS = 8
WIDEST = "/open311/v2/requests.{}?start_date=2000-01-01T00:00:00Z&status=open,closed"
"""An Open311 list as wide as a client may ask: every request ever made, open or closed, a full page."""
PLACES = ["Dusun Kidul", "Sukamaju", "Jl. Merdeka", "Pasar Desa", "Dusun Krajan", "Balai Desa"]


def fill(store: CentralStore, count: int, now: dt.datetime) -> None:
    """`count` problem reports from gateway desa-1, one a minute back from `now`, in one transaction.

    Each row is written as `CentralStore._insert` writes it (answers, phone and
    place sealed one by one, the place's digest), in one `executemany`: the
    store's own path takes a few times longer per row, and reports claim no
    unique answer.
    """
    def rows():
        for n in range(count):
            when = store.stamp(now - dt.timedelta(minutes=n))
            place = f"{PLACES[n % len(PLACES)]} {n % 97}"
            answers = {"category": "road", "location": place, "description": f"Jalan berlubang nomor {n}"}
            village = store._village(place)
            yield (str(ULID()), "desa-1", "K" + f"{n:07d}"[-7:].translate(DIGITS), "report", "ussd",
                   store.sealer.seal(json.dumps(answers, ensure_ascii=False)), store.sealer.seal(PHONE), "id",
                   village["village"], village["village_digest"], ("received", "in_progress", "resolved")[n % 3],
                   when, when, when)

    with store.transaction():
        store.db.conn.executemany(
            "INSERT INTO submissions (id, gateway_id, ref, service, channel, answers, phone, language, village, "
            "village_digest, status, created_at, received_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())


DIGITS = str.maketrans("0123456789", "23456789AB")
"""Digits as reference characters (no 0 or 1), so that every filled row has a well-formed reference."""


def central_config(data_dir) -> CentralConfig:
    return CentralConfig(data_dir, STAFF, forms(), gateways={"desa-1": SECRET}, prefixes={"desa-1": "K"})


@pytest.fixture(scope="module")
def full_store(tmp_path_factory):
    """The data folder of a central store holding `REQUESTS` Open311-visible requests (filled once per module)."""
    data_dir = tmp_path_factory.mktemp("central")
    store = central_config(data_dir).open_store()
    try:
        started = time.monotonic()
        fill(store, REQUESTS, dt.datetime.now(dt.timezone.utc))
        print(f"filled {REQUESTS} requests in {time.monotonic() - started:.1f} s")
    finally:
        store.close()
    return data_dir


def counting(in_flight: dict):
    """A middleware that counts the Open311 requests the server is answering."""

    @web.middleware
    async def count(request, handler):
        if not request.path.startswith("/open311/"):
            return await handler(request)
        in_flight["now"] += 1
        try:
            return await handler(request)
        finally:
            in_flight["now"] -= 1

    return count


async def pull(http: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    """A signed sync pull, as a gateway makes it: (status, seconds until the whole answer arrived)."""
    path = UPDATES_PATH + "?since=0"
    headers = sign_request("desa-1", SECRET, "GET", path, b"")
    started = time.monotonic()
    async with http.get(url + path, headers=headers) as response:
        await response.read()
        return response.status, time.monotonic() - started


async def test_busy_a_sync_pull_is_answered_while_eight_widest_open311_lists_run(full_store, caplog):
    in_flight = {"now": 0}
    app = create_central_app(central_config(full_store))
    app.middlewares.append(counting(in_flight))
    async with served(app) as url, aiohttp.ClientSession() as http:
        assert (await pull(http, url))[0] == 200  # the store and its page cache warm

        async def widest(n):
            async with http.get(url + WIDEST.format(("json", "xml")[n % 2])) as response:
                return response.status, await response.read()

        lists = [asyncio.create_task(widest(n)) for n in range(LISTS)]
        await eventually(lambda: in_flight["now"] == LISTS, timeout=10, interval=0.001)
        status, seconds = await pull(http, url)
        still_running = in_flight["now"]
        answers = await asyncio.gather(*lists)
    print(f"pull answered in {seconds * 1000:.0f} ms with {still_running} of {LISTS} lists still in flight")
    assert status == 200
    assert still_running > 0, "the lists finished before the pull: nothing was measured"
    assert seconds < 0.2
    for status, body in answers:
        assert status == 200 and body.count(b"service_request_id") >= 1000
    assert not our_errors(caplog.records)
