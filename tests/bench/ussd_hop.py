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

The generator keeps one connection per session in flight, each an
`asyncio.Protocol` that parses the answer by its Content-Length where its bytes
arrive and writes the next request, prebuilt for the whole session, from
there: about 2 us of Python a hop, the rest is the event loop and the socket
calls. Its own CPU use is printed: near 100% of a core means it, not the
server, set the pace, and only the server CPU figures (from /proc) are then
meaningful. Hence the last line also gives the servers' CPU per hop as a ratio
beside the throughput ratio: on a noisy machine it is the steadier figure.
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
from urllib.parse import quote_plus

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


# A request is two bytes formattings: the form's fixed fields are already percent-encoded here, the session id
# ("bench-<pid>-<n>") needs no encoding and the phone only its "+", so `walk` encodes each hop's text once.
_HEAD = (b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
         b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n")
_BODY = b"sessionId=%s&serviceCode=%%2A384%%2A1%%23&phoneNumber=%%2B628%09d&networkCode=51010&text=%s"


def session_requests(port: int, texts: list[bytes]) -> list[bytes]:
    """The requests of one new session, one per hop of `texts` (already percent-encoded): built in a go
    when the session starts, so a hop costs the generator only its write and its read."""
    number = next(_numbers)
    session_id = b"bench-%d-%d" % (os.getpid(), number)
    bodies = [_BODY % (session_id, number, text) for text in texts]
    return [_HEAD % (port, len(body)) + body for body in bodies]


class _Connection(asyncio.Protocol):
    """One kept-alive connection of `walk`, walking one session after another on it.

    A protocol rather than StreamReader/StreamWriter: the answer is parsed where its bytes arrive and the
    next request is written from there, with no task switch, future or stream buffer per hop."""

    def __init__(self, next_session, another, record) -> None:
        self.next_session, self.another, self.record = next_session, another, record
        self.done = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.requests: list[bytes] = []
        self.hop = 0
        self.buffer = b""
        self.began = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        """Write the session's next hop, or start another session, or finish when the run is over."""
        if self.hop == len(self.requests):
            if not self.another():
                self.close()
                return
            self.requests, self.hop = self.next_session(), 0
        request = self.requests[self.hop]
        self.hop += 1
        self.began = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        """Gather one answer by its Content-Length; check it and go on with the next hop once it is whole."""
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = buffer
            return
        head = buffer[:end + 2].lower()  # every header line ends in CRLF, the last one too
        start = head.find(b"content-length:") + 15
        if start < 15:
            self.fail(f"answer without Content-Length: {buffer[:200]!r}")
            return
        stop = end + 4 + int(head[start:head.index(b"\r\n", start)])
        if len(buffer) < stop:
            self.buffer = buffer
            return
        self.record(time.perf_counter() - self.began)
        body, self.buffer = buffer[end + 4:stop], buffer[stop:]
        if not head.startswith(b"http/1.1 200") or not body.startswith((b"CON ", b"END ")):
            status = buffer[:buffer.index(b"\r\n")]
            self.fail(f"bad answer {status!r}: {body[:200]!r}")
            return
        self.send()

    def fail(self, reason: str) -> None:
        """Stop the run with `reason`: `walk` raises it as SystemExit, as a bad answer always did."""
        if not self.done.done():
            self.done.set_exception(SystemExit(reason))
        self.transport.close()

    def close(self) -> None:
        """This connection's part of the run is over (or the run is cut short): no error to report."""
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """A server that drops the connection mid-run stops the run, as a short read did with streams."""
        if not self.done.done():
            self.done.set_exception(exc or ConnectionResetError("the server closed the connection mid-run"))


async def walk(port: int, in_flight: int, *, seconds: float = 0.0, sessions: int = 0,
               hops: list[str] = HOPS) -> tuple[float, list[float]]:
    """Walk sessions through `hops` with `in_flight` of them at once, for `seconds` (each session started
    by then is finished) or for `sessions` sessions in all; return the wall time and every hop's latency."""
    latencies: list[float] = []
    left = itertools.count(sessions, -1)
    deadline = time.perf_counter() + seconds
    texts = [quote_plus(text).encode() for text in hops]

    def another() -> bool:
        return time.perf_counter() < deadline if seconds else next(left) > 0

    def connection() -> _Connection:
        return _Connection(lambda: session_requests(port, texts), another, latencies.append)

    loop = asyncio.get_running_loop()
    began = time.perf_counter()
    opened = await asyncio.gather(*[loop.create_connection(connection, "127.0.0.1", port)
                                    for _ in range(in_flight)])
    try:
        await asyncio.gather(*[protocol.done for _, protocol in opened])
    finally:
        for _, protocol in opened:  # after a failure the others stop where they are
            protocol.close()
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
    # The CPU ratio is put the way round of the throughput ratio (what a server-bound run would give): it
    # is the steadier figure on a noisy machine, and the load generator's pace does not enter it.
    print(f"gateway/bare: throughput {g['hops_per_s'] / b['hops_per_s']:.2f}, "
          f"server CPU per hop bare/gateway {b['cpu_us_per_hop'] / g['cpu_us_per_hop']:.2f} "
          f"(throughput ratio if both were CPU-bound), p50 latency {g['p50_ms'] / b['p50_ms']:.2f}x")


if __name__ == "__main__":
    main()
