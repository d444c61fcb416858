"""Benchmark: how long a gateway's signed sync pull takes while Open311 clients read the central backend.

    .venv/bin/python tests/bench/central_reads.py [--requests 100000] [--lists 8] [--pulls 100]

Fills a real central store with Open311-visible requests (as
tests/test_central_busy.py does), serves it on a loopback port, and times
signed `GET /sync/v1/updates` one after another: alone, while `--lists`
clients ask for the widest Open311 list over and over (reads in the store's
reading threads, as served), and the same with every read in the store's one
thread (`READERS = 0`, as before). Prints p50 and p99 side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sync.central.app as central_app  # noqa: E402
from conftest import served  # noqa: E402
from sync.central import create_central_app  # noqa: E402
from test_central_busy import WIDEST, central_config, fill, pull  # noqa: E402


async def pulls(url: str, count: int, lists: int) -> list[float]:
    """`count` pull latencies (seconds) while `lists` clients keep asking for the widest list."""
    done = asyncio.Event()
    listed = 0

    async def keep_listing(http: aiohttp.ClientSession, n: int) -> None:
        nonlocal listed
        while not done.is_set():
            async with http.get(url + WIDEST.format(("json", "xml")[n % 2])) as response:
                await response.read()
                listed += 1

    async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as readers:
        await pull(http, url)  # warm
        clients = [asyncio.create_task(keep_listing(readers, n)) for n in range(lists)]
        while listed < lists:  # every client's list answered once: the store is busy from here on
            await asyncio.sleep(0.01)
        seconds = []
        for _ in range(count):
            status, took = await pull(http, url)
            assert status == 200, status
            seconds.append(took)
        done.set()
        await asyncio.gather(*clients)
    if lists:
        print(f"    ({listed} lists answered meanwhile)")
    return seconds


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


async def measure(data_dir: Path, readers: int, count: int, lists: int) -> list[float]:
    central_app.READERS = readers
    async with served(create_central_app(central_config(data_dir))) as url:
        return await pulls(url, count, lists)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--lists", type=int, default=8)
    parser.add_argument("--pulls", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        store = central_config(data_dir).open_store()
        started = time.monotonic()
        fill(store, args.requests, dt.datetime.now(dt.timezone.utc))
        store.close()
        print(f"filled {args.requests} requests in {time.monotonic() - started:.1f} s")
        runs = {}
        for name, readers, lists in (("alone", central_app.READERS, 0),
                                     (f"{args.lists} lists, 2 reading threads", central_app.READERS, args.lists),
                                     (f"{args.lists} lists, one store thread", 0, args.lists)):
            print(f"  {name} ...")
            runs[name] = await measure(data_dir, readers, args.pulls, lists)
    print(f"\nsigned sync pull latency over {args.pulls} pulls, {args.requests} requests in the store:")
    print(f"{'':36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, seconds in runs.items():
        print(f"{name:36} {p(seconds, 50):8.1f} {p(seconds, 99):8.1f} {max(seconds) * 1000:8.1f}")


if __name__ == "__main__":
    asyncio.run(main())
