"""Benchmark: what a USSD hop costs the gateway, side by side with a bare aiohttp handler.

    make bench        (or: .venv/bin/python tests/bench/ussd_hop.py [--sessions N] [--rounds N])

Two servers run as their own processes on loopback ports: the real gateway
(`kentongan serve`, SQLite in a temporary folder) and a bare aiohttp app that
parses the same form and answers a fixed `CON` screen. The load generator
walks whole problem-report sessions (six hops each, the last one committing a
submission) with a fixed number of sessions in flight, alternating between
the two servers round by round so both see the same machine noise.

Figures per server: hops per second, latency p50/p99, server CPU per hop
(from /proc, so it does not depend on how fast the load generator is) and
server memory after the run. The load generator's own CPU use is printed:
near 100% of a core means it, not the server, set the pace, and only the CPU
figures are then meaningful.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
HOPS = ["", "1", "1*2", "1*2*Dusun Kidul", "1*2*Dusun Kidul*Lampu jalan mati sejak minggu lalu",
        "1*2*Dusun Kidul*Lampu jalan mati sejak minggu lalu*1"]
TICKS = os.sysconf("SC_CLK_TCK")

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(name: str, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if name == "gateway":
        # The hop alone: no embedded central backend, no sync rounds; SMS to the console provider.
        env = {**os.environ, "KENTONGAN_GATEWAY_PORT": str(port), "KENTONGAN_GATEWAY_DATA_DIR": str(data_dir),
               "KENTONGAN_USSD_RESUME_MINUTES": "5", "KENTONGAN_CENTRAL_EMBEDDED": "false",
               "KENTONGAN_SYNC_SECRET": "", "KENTONGAN_SMS_PROVIDER": "console"}
        command = [sys.executable, "-m", "gateway", "serve"]
    else:
        env = dict(os.environ)
        command = [sys.executable, "-c", BARE, str(port)]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/ussd/africastalking"
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{name} did not start")


async def load(url: str, sessions: int, in_flight: int, tag: str) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(sessions):
        queue.put_nowait(number)
    connector = aiohttp.TCPConnector(limit=in_flight)

    async with aiohttp.ClientSession(connector=connector) as http:
        async def worker() -> None:
            while not queue.empty():
                number = queue.get_nowait()
                # Each session its own phone: no resume offers, no per-phone contention.
                phone = f"+628{number:010d}"[:14]
                for text in HOPS:
                    form = {"sessionId": f"{tag}-{number}", "serviceCode": "*384*1#",
                            "phoneNumber": phone, "networkCode": "51010", "text": text}
                    began = time.perf_counter()
                    async with http.post(url, data=form) as response:
                        body = await response.text()
                    latencies.append(time.perf_counter() - began)
                    if response.status != 200 or not body.startswith(("CON ", "END ")):
                        raise SystemExit(f"bad answer {response.status}: {body!r}")

        began = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(in_flight)])
        return time.perf_counter() - began, latencies


def measure(name: str, process: subprocess.Popen, url: str, sessions: int, in_flight: int, tag: str) -> dict:
    server_before = cpu_seconds(process.pid)
    client_before = time.process_time()
    wall, latencies = asyncio.run(load(url, sessions, in_flight, tag))
    hops = len(latencies)
    latencies.sort()
    return {
        "hops_per_s": hops / wall,
        "p50_ms": latencies[hops // 2] * 1000,
        "p99_ms": latencies[int(hops * 0.99)] * 1000,
        "server_cpu_us_per_hop": (cpu_seconds(process.pid) - server_before) / hops * 1e6,
        "client_cpu_share": (time.process_time() - client_before) / wall,
        "rss_mib": rss_mib(process.pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300, help="sessions per round and server")
    parser.add_argument("--in-flight", type=int, default=16, help="sessions in flight at once")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        servers = {name: start(name, Path(folder) / name) for name in ("bare", "gateway")}
        try:
            for name, (process, url) in servers.items():  # warm up: imports, first connections
                measure(name, process, url, 20, 4, f"warm-{name}")
            results: dict[str, list[dict]] = {name: [] for name in servers}
            for round_number in range(args.rounds):
                for name, (process, url) in servers.items():
                    results[name].append(measure(name, process, url, args.sessions, args.in_flight,
                                                 f"r{round_number}-{name}"))
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=10)

    hops = args.sessions * len(HOPS)
    print(f"USSD hop benchmark: {args.rounds} alternating rounds x {hops} hops per server, "
          f"{args.in_flight} sessions in flight, {os.cpu_count()} cores (medians)")
    keys = ["hops_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_hop", "client_cpu_share", "rss_mib"]
    medians = {name: {k: statistics.median(r[k] for r in rows) for k in keys} for name, rows in results.items()}
    print(f"{'':10}" + "".join(f"{k:>24}" for k in keys))
    for name, row in medians.items():
        print(f"{name:10}" + "".join(f"{row[k]:>24.2f}" for k in keys))
    g, b = medians["gateway"], medians["bare"]
    print(f"gateway/bare: throughput {g['hops_per_s'] / b['hops_per_s']:.2f}x, "
          f"p50 latency {g['p50_ms'] / b['p50_ms']:.2f}x, "
          f"server CPU per hop {g['server_cpu_us_per_hop'] / b['server_cpu_us_per_hop']:.2f}x")
    if max(b["client_cpu_share"], g["client_cpu_share"]) > 0.9:
        print("note: the load generator used over 90% of a core; trust the CPU-per-hop figures over throughput")


if __name__ == "__main__":
    main()
