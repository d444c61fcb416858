"""Benchmark: what a USSD hop costs the gateway, side by side with a bare aiohttp handler.

    .venv/bin/python tests/bench/ussd_hop.py [--in-flight N] [--seconds S] [--rounds N]

(`make bench` prints this and every other figure in one table: `tests/bench/table.py`.)

Two servers run as their own processes on loopback ports: the real gateway
(`kentongan serve`, SQLite in a temporary folder) and a bare aiohttp app that
parses the same form and answers a fixed `CON` screen. The load generator
walks whole problem-report sessions (six hops each, the last one committing a
submission) with a fixed number of sessions in flight, alternating between
the two servers round by round so both see the same machine noise. With two
cores or more the servers are pinned to core 0 and the generator to core 1.

The generator writes each request as bytes on a kept-alive connection per
session in flight and reads the answer by its Content-Length: a few
microseconds a hop, so that it, not the server, is rarely what sets the pace.
Its own CPU use is printed: near 100% of a core means it did, and only the
server CPU figures (from /proc) are then meaningful.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
PATH = "/ussd/africastalking"
HOPS = ["", "1", "1*2", "1*2*Dusun Kidul", "1*2*Dusun Kidul*Lampu jalan mati sejak minggu lalu",
        "1*2*Dusun Kidul*Lampu jalan mati sejak minggu lalu*1"]
TICKS = os.sysconf("SC_CLK_TCK")
PINNED = len(os.sched_getaffinity(0)) >= 2
SERVER_CORE, GENERATOR_CORE = (sorted(os.sched_getaffinity(0))[:2] if PINNED else (None, None))

BARE = textwrap.dedent("""
    import sys
    from aiohttp import web

    async def ussd(request):
        form = await request.post()
        if not form.get("sessionId") or "text" not in form:
            raise web.HTTPBadRequest(text="missing")
        return web.Response(text="CON Kentongan, layanan desa. Pilih:\\n1. Lapor masalah", content_type="text/plain")

    app = web.Application()
    app.router.add_post("/ussd/africastalking", ussd)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
""")

# Every session its own phone across the whole run: no resume offers, no per-phone limits reached.
_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User and system CPU of process `pid`, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pin_generator() -> None:
    if PINNED:
        os.sched_setaffinity(0, {GENERATOR_CORE})


def _pin_server() -> None:
    if PINNED:
        os.sched_setaffinity(0, {SERVER_CORE})


def gateway_env(port: int, data_dir: Path) -> dict:
    """The hop alone: no embedded central backend, no sync rounds, SMS to the console provider; room for
    every connection the largest run keeps open."""
    return {**os.environ, "KENTONGAN_GATEWAY_PORT": str(port), "KENTONGAN_GATEWAY_DATA_DIR": str(data_dir),
            "KENTONGAN_USSD_RESUME_MINUTES": "5", "KENTONGAN_CENTRAL_EMBEDDED": "false",
            "KENTONGAN_SYNC_SECRET": "", "KENTONGAN_SMS_PROVIDER": "console",
            "KENTONGAN_SERVER_MAX_CONNECTIONS": "2048"}


def start(name: str, data_dir: Path, command: list[str] | None = None, env: dict | None = None,
          ) -> tuple[subprocess.Popen, int]:
    """Start server `name` ("gateway", "bare", or `command` with `env`) on a free port, pinned to the server
    core; return the process and its port once it accepts connections."""
    port = free_port()
    if command is None and name == "bare":
        command, env = [sys.executable, "-c", BARE, str(port)], dict(os.environ)
    elif command is None:
        command, env = [sys.executable, "-m", "gateway", "serve"], gateway_env(port, data_dir)
    else:
        command = [str(port) if part == "{port}" else part for part in command]
    log = data_dir.parent / f"{name}-{port}.log"
    with log.open("wb") as output:  # a file, not a pipe: a server that logs every hop never blocks on it
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=output,
                                   preexec_fn=_pin_server)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _request(port: int, session_id: str, phone: str, text: str) -> bytes:
    body = urlencode({"sessionId": session_id, "serviceCode": "*384*1#", "phoneNumber": phone,
                      "networkCode": "51010", "text": text}).encode()
    return (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    start = head.lower().index(b"content-length:") + 15
    length = int(head[start:head.index(b"\r\n", start)])
    return head, await reader.readexactly(length)


async def walk(port: int, in_flight: int, *, seconds: float = 0.0, sessions: int = 0,
               hops: list[str] = HOPS) -> tuple[float, list[float]]:
    """Walk sessions through `hops` with `in_flight` of them at once, for `seconds` (each session started
    by then is finished) or for `sessions` sessions in all; return the wall time and every hop's latency."""
    latencies: list[float] = []
    left = itertools.count(sessions, -1)
    deadline = time.perf_counter() + seconds

    def another() -> bool:
        return time.perf_counter() < deadline if seconds else next(left) > 0

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while another():
                number = next(_numbers)
                session_id, phone = f"bench-{os.getpid()}-{number}", f"+628{number:09d}"
                for text in hops:
                    request = _request(port, session_id, phone, text)
                    began = time.perf_counter()
                    writer.write(request)
                    head, body = await _answer(reader)
                    latencies.append(time.perf_counter() - began)
                    if not head.startswith(b"HTTP/1.1 200") or not body.startswith((b"CON ", b"END ")):
                        raise SystemExit(f"bad answer {head.split(b' ', 2)[1:2]}: {body[:200]!r}")
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(in_flight)])
    return time.perf_counter() - began, latencies


def measure(process: subprocess.Popen, port: int, in_flight: int, seconds: float) -> dict:
    """One round against one server: hops/s, p50/p99 ms, server CPU per hop, the generator's CPU share."""
    server_before, client_before = cpu_seconds(process.pid), time.process_time()
    wall, latencies = asyncio.run(walk(port, in_flight, seconds=seconds))
    hops = len(latencies)
    latencies.sort()
    return {"hops_per_s": hops / wall, "p50_ms": latencies[hops // 2] * 1000,
            "p99_ms": latencies[min(hops - 1, int(hops * 0.99))] * 1000,
            "cpu_us_per_hop": (cpu_seconds(process.pid) - server_before) / hops * 1e6,
            "generator_cpu": (time.process_time() - client_before) / wall, "hops": hops}


def alternate(servers: dict[str, tuple[subprocess.Popen, int]], in_flight: int, seconds: float,
              rounds: int) -> dict[str, dict]:
    """`rounds` rounds of `measure`, one server after the other in each; per server the median of each
    figure over its rounds, and the generator's highest CPU share."""
    results: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, (process, port) in servers.items():
            results[name].append(measure(process, port, in_flight, seconds))
    medians = {}
    for name, rows in results.items():
        medians[name] = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        medians[name]["generator_cpu"] = max(row["generator_cpu"] for row in rows)
        medians[name]["hops"] = sum(row["hops"] for row in rows)
    return medians


def warm(servers: dict[str, tuple[subprocess.Popen, int]]) -> None:
    """Imports, first connections, caches: a few sessions on each server, not measured."""
    for _, port in servers.values():
        asyncio.run(walk(port, 4, sessions=40))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=16, help="sessions in flight at once")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pin_generator()
    with TemporaryDirectory() as folder:
        servers = {name: start(name, Path(folder) / name) for name in ("bare", "gateway")}
        try:
            warm(servers)
            medians = alternate(servers, args.in_flight, args.seconds, args.rounds)
        finally:
            for process, _ in servers.values():
                stop(process)
    print(f"USSD hop benchmark: {args.rounds} alternating rounds of {args.seconds:g} s per server, "
          f"{args.in_flight} sessions in flight, {os.cpu_count()} cores"
          + (f", servers on core {SERVER_CORE}, generator on core {GENERATOR_CORE}" if PINNED else "")
          + " (medians)")
    keys = ["hops_per_s", "p50_ms", "p99_ms", "cpu_us_per_hop", "generator_cpu"]
    print(f"{'':10}" + "".join(f"{k:>16}" for k in keys))
    for name, row in medians.items():
        print(f"{name:10}" + "".join(f"{row[k]:>16.2f}" for k in keys))
    g, b = medians["gateway"], medians["bare"]
    print(f"gateway/bare: throughput {g['hops_per_s'] / b['hops_per_s']:.2f}, "
          f"p50 latency {g['p50_ms'] / b['p50_ms']:.2f}x, CPU per hop {g['cpu_us_per_hop'] / b['cpu_us_per_hop']:.2f}x")


if __name__ == "__main__":
    main()
