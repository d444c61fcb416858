"""`kentongan serve --workers N`: refused on the SQLite store; with the PostgreSQL store and Redis sessions, two
workers on one port share the sessions, a worker killed mid-session is replaced while the session finishes on the
other with nothing lost or duplicated, its SMS sent once by whichever worker runs the duties, and `/metrics` on
any worker gives the totals of all of them."""

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from conftest import REDIS, eventually, free_port, postgres_schemas, redis_prefix
from gateway.workers import WORKER_HEADER

REPORT = ("1", "1", "Dusun Kidul", "Jalan berlubang", "1")
"""A whole report: the main menu's first service, its first category, the place, what is wrong, confirm."""
DEADLINE = 60.0
"""Seconds a test waits for a subprocess to come up or an SMS to go: generous, for a busy CI machine."""


def write_config(path: Path, **sections) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sections))  # JSON is YAML
    return path


async def run_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", *args,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    return process.returncode, err.decode()


async def test_workers_refused_on_the_sqlite_store(tmp_path):
    config = write_config(tmp_path / "config.yaml", gateway={"data_dir": str(tmp_path / "var"),
                                                             "port": free_port()})
    code, err = await run_cli("serve", "--workers", "2", "--config", str(config))
    assert code == 2
    assert err.count("\n") == 1 and "gateway.database_url" in err and "--workers 2" in err, err
    assert not (tmp_path / "var" / "gateway.db").exists()  # refused before anything was made

    code, err = await run_cli("central", "serve", "--workers", "3", "--config", str(config))
    assert code == 2
    assert err.count("\n") == 1 and "central.database_url" in err, err


class Phone:
    """Dials the workers' shared port, each hop on a new connection (so SO_REUSEPORT spreads them), noting which
    worker answered."""

    def __init__(self, url: str):
        self.url = url
        self.answered_by: list[int] = []

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
                http.get(self.url + path) as response:
            assert response.status == 200
            return int(response.headers[WORKER_HEADER]), await response.text()

    async def hop(self, session_id: str, phone: str, text: str) -> str:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
                http.post(self.url + "/ussd/africastalking", data={
                    "sessionId": session_id, "serviceCode": "*384*1#", "phoneNumber": phone,
                    "networkCode": "51010", "text": text}) as response:
            body = await response.text()
            assert response.status == 200, body
            self.answered_by.append(int(response.headers[WORKER_HEADER]))
            return body

    async def walk(self, session_id: str, phone: str, inputs: tuple[str, ...], typed: tuple[str, ...] = ()) -> str:
        """Type `inputs` after what was `typed` already (from the dial, when nothing was); the last screen."""
        history = list(typed)
        screen = await self.hop(session_id, phone, "") if not typed else ""
        for value in inputs:
            history.append(value)
            screen = await self.hop(session_id, phone, "*".join(history))
        return screen


def children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def reference(screen: str) -> str:
    assert screen.startswith("END "), screen
    return re.search(r"\b(K[0-9A-Z]{5,7})\b", screen).group(1)


def samples(text: str) -> dict[tuple, float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(scrape: dict, name: str, **labels) -> float:
    """The sum of `name`'s samples that carry `labels`."""
    return sum(value for (sample, sample_labels), value in scrape.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


async def test_workers_share_sessions_survive_a_killed_worker_and_count_once(tmp_path, standin):
    async with postgres_schemas("gateway") as (dsn,), redis_prefix() as prefix:
        port = free_port()
        config = write_config(
            tmp_path / "config.yaml",
            gateway={"data_dir": str(tmp_path / "var"), "port": port, "database_url": dsn,
                     "id": f"workers-{os.getpid()}-{port}"},
            central={"embedded": False},
            sessions={"backend": "redis", "redis_url": REDIS, "redis_prefix": prefix},
            sms={"provider": "africastalking", "retry_seconds": 0.05, "timeout_seconds": 10,
                 "africastalking": {"username": standin.username, "api_key": standin.api_key,
                                    "api_url": standin.url}})
        log = tmp_path / "serve.log"
        with log.open("wb") as err:
            parent = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "serve", "--workers", "2", "--config", str(config),
                stdout=asyncio.subprocess.DEVNULL, stderr=err)
        try:
            await _walk_kill_and_count(Phone(f"http://127.0.0.1:{port}"), parent.pid, standin, log, dsn)
        finally:
            with contextlib.suppress(ProcessLookupError):
                parent.send_signal(signal.SIGTERM)
            await asyncio.wait_for(parent.wait(), DEADLINE)
        assert parent.returncode == 0, log.read_text()[-2000:]


async def _walk_kill_and_count(phone: Phone, parent: int, standin, log: Path, dsn: str) -> None:
    async def up() -> bool:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            return len(children(parent)) == 2 and bool(await phone.get("/healthz"))
        return False

    await eventually(up, timeout=DEADLINE)
    first = children(parent)
    refs = [reference(await phone.walk(f"s-{n}", f"+62812345670{n}", REPORT)) for n in range(4)]
    assert set(phone.answered_by) == first  # both workers answered hops of the same sessions
    await eventually(lambda: len(standin.accepted) == 4, timeout=DEADLINE)

    typed = REPORT[:3]
    await phone.walk("s-killed", "+628123456709", typed)  # mid-session: the place typed, the problem not yet

    async def leader() -> int | None:
        pid, body = await phone.get("/healthz")
        return pid if json.loads(body)["duties"] else None

    killed = await eventually(leader, timeout=DEADLINE)  # the one sending SMS: the hardest to lose
    os.kill(killed, signal.SIGKILL)
    await eventually(lambda: killed not in children(parent) and len(children(parent)) == 2, timeout=DEADLINE)
    await eventually(up, timeout=DEADLINE)
    after = len(phone.answered_by)
    refs.append(reference(await phone.walk("s-killed", "+628123456709", REPORT[3:], typed)))
    refs.append(reference(await phone.walk("s-after", "+628123456708", REPORT)))
    assert killed not in phone.answered_by[after:]
    assert len(set(refs)) == 6
    warnings = [line for line in log.read_text().splitlines() if "WARNING" in line and f"(pid {killed})" in line]
    assert len(warnings) == 1 and "SIGKILL" in warnings[0], log.read_text()[-2000:]

    # Every finished session is one submission and one SMS, sent by whichever worker runs the duties now.
    await eventually(lambda: len(standin.accepted) >= 6, timeout=DEADLINE)
    conn = await asyncpg.connect(dsn)
    try:
        assert sorted(await conn.fetchval("SELECT array_agg(ref) FROM submissions")) == sorted(refs)

        async def all_sent() -> bool:
            return await conn.fetchval("SELECT count(*) FROM outbox WHERE state NOT IN ('sent', 'delivered')") == 0

        await eventually(all_sent, timeout=DEADLINE)
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 6
    finally:
        await conn.close()
    assert sorted(ref for ref in refs for m in standin.accepted if ref in m["message"]) == sorted(refs)
    assert len(standin.accepted) == 6

    # /metrics on either worker: the totals of all of them, the killed one's hops included, each counted once.
    hops = len(phone.answered_by)
    seen: dict[int, dict] = {}

    async def both_scraped() -> bool:
        pid, text = await phone.get("/metrics")
        scrape = samples(text)
        if total(scrape, "kentongan_submissions_total") == 6:  # the store's window ends a few seconds back
            seen[pid] = scrape
        return len(seen) == 2

    await eventually(both_scraped, timeout=DEADLINE)
    for scrape in seen.values():
        assert total(scrape, "kentongan_hop_seconds_count") == hops
        assert total(scrape, "kentongan_sessions_total", outcome="started") == 6
        assert total(scrape, "kentongan_sessions_total", outcome="completed") == 6
        assert total(scrape, "kentongan_submissions_total", service="report", channel="ussd") == 6
        assert total(scrape, "kentongan_sms_total", result="sent") == 6
        assert total(scrape, "kentongan_outbox_messages", state="sent") == 6
        assert total(scrape, "kentongan_rate_limited_total", limit="ussd_sessions") == 0


# -- the supervisor alone, with stand-in workers (one `python -c` each start) -------------------------------

SUPERVISOR = """
import logging, sys
from gateway.workers import Supervisor

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
plan = sys.argv[1:]  # the code of each start of worker 1, in order; the last one for every later start
starts = []


def command(index):
    code = plan[min(len(starts), len(plan) - 1)]
    starts.append(code)
    if code == "stop while starting":  # SIGTERM reaches the parent as this worker is being started
        supervisor.stopping.set()
        code = "import signal; signal.pause()"
    return [sys.executable, "-c", code]


supervisor = Supervisor("test", 1, command, [])
sys.exit(supervisor.run())
"""
EXIT_2 = "import sys; sys.exit(2)"
"""A worker that cannot open the store (`cli._fail`)."""


def listening(port: int, then: str = "") -> str:
    """A worker that listens on `port` and, when `then` is "die", exits with 1 at the first connection."""
    return ("import socket, sys\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1', {port})); s.listen(); s.accept()\n"
            + ("sys.exit(1)\n" if then == "die" else "import signal; signal.pause()\n"))


async def supervise(log: Path, *plan: str) -> asyncio.subprocess.Process:
    with log.open("wb") as err:
        return await asyncio.create_subprocess_exec(sys.executable, "-c", SUPERVISOR, *plan,
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=err)


async def ended(process: asyncio.subprocess.Process, log: Path) -> int:
    try:
        return await asyncio.wait_for(process.wait(), DEADLINE)
    except asyncio.TimeoutError:
        process.kill()  # its workers die with it (PR_SET_PDEATHSIG)
        await process.wait()
        raise AssertionError(f"the supervisor did not stop: {log.read_text()[-2000:]}") from None


async def test_supervisor_stops_with_2_when_no_worker_has_served(tmp_path):
    log = tmp_path / "supervisor.log"
    assert await ended(await supervise(log, EXIT_2), log) == 2
    assert "exited with code 2: stopping" in log.read_text()


async def test_supervisor_starts_again_a_worker_that_exits_2_after_one_served(tmp_path):
    """A worker dies during a PostgreSQL failover and its replacement cannot open the store: the parent keeps
    serving and tries again, as for any other death."""
    port, log = free_port(), tmp_path / "supervisor.log"
    parent = await supervise(log, listening(port, then="die"), EXIT_2, listening(port))
    try:
        await eventually(lambda: log.read_text().count(" serving") == 1, timeout=DEADLINE)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # the first worker dies now
        writer.close()
        await eventually(lambda: log.read_text().count(" serving") == 2 or parent.returncode is not None,
                         timeout=DEADLINE)
        assert parent.returncode is None, log.read_text()
        assert "exited with code 2; starting another" in log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            parent.send_signal(signal.SIGTERM)
    assert await ended(parent, log) == 0


async def test_supervisor_stops_a_worker_it_was_starting_when_told_to_stop(tmp_path):
    log = tmp_path / "supervisor.log"
    assert await ended(await supervise(log, "stop while starting"), log) == 0


async def test_workers_keep_their_counts_in_a_metrics_folder_the_operator_named(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR named by the operator: the parent's embedded central backend keeps its counts,
    and a second supervisor sharing the folder leaves the first one's counts alone."""
    named = tmp_path / "metrics"
    named.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(named)}
    async with postgres_schemas("gateway", "central") as (gateway_dsn, central_dsn):
        port, central_port, other_port = free_port(), free_port(), free_port()
        gateway = write_config(
            tmp_path / "a" / "config.yaml",
            gateway={"data_dir": str(tmp_path / "a" / "var"), "port": port, "database_url": gateway_dsn,
                     "id": f"metrics-{os.getpid()}-{port}"},
            central={"embedded": True, "port": central_port, "url": f"http://127.0.0.1:{central_port}"})
        central = write_config(tmp_path / "b" / "config.yaml", gateway={"data_dir": str(tmp_path / "b" / "var")},
                               central={"port": other_port, "database_url": central_dsn})
        parents = []
        try:
            for args, log in ((("serve", "--workers", "2", "--config", str(gateway)), tmp_path / "a.log"),
                              (("central", "serve", "--workers", "2", "--config", str(central)), tmp_path / "b.log")):
                with log.open("wb") as err:
                    parents.append(await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "gateway", *args, env=env, stdout=asyncio.subprocess.DEVNULL,
                        stderr=err))
                await eventually(lambda: _up(parents[-1].pid, port if args[0] == "serve" else other_port),
                                 timeout=DEADLINE)
                if len(parents) == 1:  # a hop counted by a worker of the first, before the second starts
                    await Phone(f"http://127.0.0.1:{port}").hop("m-1", "+6281234567801", "")

            _, text = await Phone(f"http://127.0.0.1:{port}").get("/metrics")
            assert total(samples(text), "kentongan_hop_seconds_count") == 1
            for central_url in (f"http://127.0.0.1:{central_port}", f"http://127.0.0.1:{other_port}"):
                async with aiohttp.ClientSession() as http, http.get(central_url + "/metrics") as response:
                    scrape = samples(await response.text())
                assert total(scrape, "kentongan_central_staff_changes_total") == 0
                assert any(name == "kentongan_central_staff_changes_total" for name, _ in scrape)
        finally:
            for parent in parents:
                with contextlib.suppress(ProcessLookupError):
                    parent.send_signal(signal.SIGTERM)
            codes = [await asyncio.wait_for(parent.wait(), DEADLINE) for parent in parents]
        assert codes == [0, 0], (tmp_path / "a.log").read_text()[-2000:] + (tmp_path / "b.log").read_text()[-2000:]
    assert list(named.iterdir()) == []  # each supervisor removed its own folder


async def _up(parent: int, port: int) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError):
        return len(children(parent)) == 2 and bool(await Phone(f"http://127.0.0.1:{port}").get("/healthz"))
    return False
