"""Submissions per second the central backend ingests through the real sync API, on SQLite and on PostgreSQL.

    .venv/bin/python tests/bench/central_ingest.py [--backend sqlite|postgres|both] [--profile FILE]

`make bench` prints these rows (`table.py`); run alone, this prints just them.
The central backend runs as its own process (`kentongan central serve`'s app,
pinned to the server core when there are two), and 1, then 50 gateways push
signed batches of 100 realistic submissions at once (`INGEST`); every batch
is checked, sealed and stored exactly as a field gateway's would be. On
PostgreSQL the store lives in a schema of its own, dropped after the run; a
PostgreSQL that does not answer gives a row saying so instead of a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import socket
import sys
import textwrap
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sync_wire  # noqa: E402
import ussd_hop  # noqa: E402
from sync.database import stamp  # noqa: E402
from sync.protocol import BATCH_PATH, BATCH_TYPE, encode_batch, sign_request  # noqa: E402
from sync.reference import ALPHABET  # noqa: E402
from ulid import ULID  # noqa: E402

INGEST = ((1, 40), (50, 4))  # (gateways pushing at once, batches of 100 each)
POSTGRES = os.environ.get("KENTONGAN_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""Where the PostgreSQL rows are measured (the tests' database unless KENTONGAN_BENCH_POSTGRES says another)."""

CENTRAL = textwrap.dedent("""
    import sys
    from pathlib import Path
    from aiohttp import web
    from flows import Engine
    from gateway.config import data_root
    from sync.central import CentralConfig, create_central_app

    port, folder, gateways, url = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    root = data_root()
    forms = Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id").forms("en")
    prefixes = [a + b for a in "QRS" for b in "%s"][:gateways]
    config = CentralConfig(folder, "", forms, gateways={f"bench{n:02d}": f"secret-{n:02d}" for n in range(gateways)},
                           prefixes={f"bench{n:02d}": prefix for n, prefix in enumerate(prefixes)},
                           database_url=url)
    if len(sys.argv) > 5:  # --profile: the server's own profile, written as it stops
        import atexit, cProfile, signal
        profile = cProfile.Profile()
        profile.enable()
        atexit.register(lambda: profile.dump_stats(sys.argv[5]))
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    web.run_app(create_central_app(config), host="127.0.0.1", port=port, print=None, access_log=None)
""" % ALPHABET)


def batches(gateway: int, count: int, rng: random.Random) -> list[bytes]:
    """`count` batches of 100 realistic submissions of gateway `bench<gateway>`, encoded as sent."""
    prefix = [a + b for a in "QRS" for b in ALPHABET][gateway]
    made = []
    for b in range(count):
        items = []
        for n in range(100):
            number = b * 100 + n
            kind, given = sync_wire.answers(rng)
            ref = prefix + "".join(ALPHABET[number // 31 ** k % 31] for k in range(5))
            items.append({"id": str(ULID()), "ref": ref, "service": kind, "channel": "ussd", "answers": given,
                          "phone": f"+62812{rng.randrange(10**8):08d}", "language": "id",
                          "created_at": stamp(dt.datetime.now(dt.timezone.utc))})
        made.append(encode_batch(f"bench{gateway:02d}", items))
    return made


async def push_all(port: int, work: dict[int, list[bytes]]) -> int:
    """Every gateway in `work` pushes its batches one after the other, all gateways at once; return how many
    submissions were accepted."""
    accepted = 0

    async def gateway(http: aiohttp.ClientSession, number: int, bodies: list[bytes]) -> None:
        nonlocal accepted
        for body in bodies:
            headers = {**sign_request(f"bench{number:02d}", f"secret-{number:02d}", "POST", BATCH_PATH, body),
                       "Content-Type": BATCH_TYPE, "Accept-Encoding": "gzip"}
            async with http.post(f"http://127.0.0.1:{port}{BATCH_PATH}", data=body, headers=headers) as answer:
                if answer.status != 200:
                    raise SystemExit(f"central refused a batch: {answer.status} {await answer.text()}")
                accepted += sum(r["result"] == "accepted" for r in json.loads(await answer.read())["results"])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.gather(*[gateway(http, number, bodies) for number, bodies in work.items()])
    return accepted


def postgres_problem() -> str | None:
    """Why the PostgreSQL rows cannot be measured (it does not answer), or None."""
    parts = urlsplit(POSTGRES)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=2).close()
    except OSError as error:
        return f"PostgreSQL not reachable at {parts.hostname}:{parts.port or 5432} ({error.strerror or error})"
    return None


async def _schema(action: str, name: str) -> None:
    import asyncpg
    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(f"CREATE SCHEMA {name}" if action == "create" else f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()


def ingest(folder: Path, backend: str = "sqlite", profile: Path | None = None) -> list[dict]:
    """Submissions/s into the central backend on `backend` ("sqlite" or "postgres"), for each of `INGEST`."""
    gateways = sum(count for count, _ in INGEST) + 1  # the last one warms the server up, unmeasured
    home = folder / f"central-{backend}"
    url, schema = "", ""
    if backend == "postgres":
        schema = f"kt_bench_{str(ULID()).lower()}"
        asyncio.run(_schema("create", schema))
        url = f"{POSTGRES}{'&' if '?' in POSTGRES else '?'}search_path={schema}"
    command = [sys.executable, "-c", CENTRAL, "{port}", str(home), str(gateways), url]
    if profile:
        command.append(str(profile))
    try:
        process, port = ussd_hop.start(f"central-{backend}", home, command, dict(os.environ))
        rng = random.Random(12)
        rows, used = [], 0
        try:
            # Statements prepared, caches filled, the connection's first transaction over: not part of a figure.
            asyncio.run(push_all(port, {gateways - 1: batches(gateways - 1, 2, rng)}))
            for count, per_gateway in INGEST:
                work = {used + n: batches(used + n, per_gateway, rng) for n in range(count)}
                used += count
                server_before, client_before, began = ussd_hop.cpu_seconds(process.pid), time.process_time(), \
                    time.perf_counter()
                accepted = asyncio.run(push_all(port, work))
                wall = time.perf_counter() - began
                rows.append({"backend": backend, "gateways": count, "accepted": accepted, "per_s": accepted / wall,
                             "cpu_us": (ussd_hop.cpu_seconds(process.pid) - server_before) / accepted * 1e6,
                             "generator_cpu": (time.process_time() - client_before) / wall})
        finally:
            ussd_hop.stop(process)
    finally:
        if schema:
            asyncio.run(_schema("drop", schema))
    return rows


NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def lines(folder: Path, backends: tuple[str, ...] = ("sqlite", "postgres"), profile: Path | None = None) -> list[str]:
    """The table's rows for `backends`: a figure per (backend, gateways), or why PostgreSQL was not measured."""
    out = []
    for backend in backends:
        problem = postgres_problem() if backend == "postgres" else None
        if problem:
            out.append(f"{'central ingest, PostgreSQL':34} not measured: {problem}")
            continue
        for row in ingest(folder, backend, profile):
            out.append(f"{'central ingest, ' + NAMES[backend] + ', ' + str(row['gateways']) + ' gw':34}"
                       f"{row['per_s']:7.0f} submissions/s ({row['accepted']:,} in batches of 100, "
                       f"{row['cpu_us']:.0f} us server CPU each, gen CPU {row['generator_cpu']:.0%})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--profile", type=Path, help="write the central server's cProfile stats to this file")
    args = parser.parse_args()
    ussd_hop.pin_generator()
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    with TemporaryDirectory() as name:
        print("\n".join(lines(Path(name), backends, args.profile and args.profile.resolve())))


if __name__ == "__main__":
    main()
