"""`serve --workers N`: N processes serving one port, under a parent that keeps them running.

Each worker is `kentongan serve --workers N --worker I` (or `central serve`
...), a process of its own started from the same executable with the same
config and environment, listening with SO_REUSEPORT: the kernel spreads new
connections among the listening workers, and a dead worker's socket leaves
the group at once. The parent starts them, starts another when one dies
(one WARNING line naming its exit code or signal), and on SIGTERM or SIGINT
stops them all (SIGTERM each, so each finishes the requests it holds) and
waits for them, those it was starting at that moment too. A worker that
exits with the CLI's code 2 before any worker has served said in one line
what the operator must fix (a port taken, a bad config, the store out of
reach): starting it again would say it again, so the parent stops the rest
and exits with 2 as well. Once a worker has served (the parent saw it
listen), the config and the port are known good: a 2 then means the store
is out of reach for now (a PostgreSQL failover), and the worker is started
again after a pause like any other, while the others go on serving.

The parent also serves what must run once (the embedded central backend),
and sets PROMETHEUS_MULTIPROC_DIR for the workers to a fresh folder of its
own, removed at the end, so that `/metrics` on any worker sums every
worker's counters, those of dead workers included (their files stay; only
their live gauges are dropped, by `mark_process_dead`). When the
environment names a folder, the fresh one is made inside it (one per
supervisor: two supervisors sharing the folder never touch each other's
files), and the parent's own files, made there while its apps were built,
move into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from aiohttp import web

from .app import SHUTDOWN_SECONDS, Served, serving

log = logging.getLogger(__name__)

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"
WORKER_HEADER = "X-Kentongan-Worker"
"""Every answer of a worker names its process id: which worker answered, when one misbehaves."""
QUICK_DEATH_SECONDS = 10.0
"""A worker that dies sooner than this after its start is started again only after a growing pause."""
MAX_PAUSE_SECONDS = 30.0
STOP_SECONDS = SHUTDOWN_SECONDS + 5.0
"""How long stopping waits for a worker after SIGTERM before SIGKILL."""
OPERATOR_ERROR = 2
"""The CLI's exit code for a failure the operator must fix (`cli._fail`)."""
LISTEN_POLL_SECONDS = 0.1
"""How often the parent looks whether a worker it started listens yet (`_listening`)."""
OWN_FOLDER = "supervisor-"
"""How the metrics folder of one supervisor inside a folder the operator named begins: then its pid."""


def tag_worker(app: web.Application) -> None:
    """Make every answer of `app` carry this process's id in WORKER_HEADER."""
    pid = str(os.getpid())

    async def tag(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[WORKER_HEADER] = pid

    app.on_response_prepare.append(tag)


def worker_command(argv: list[str], index: int) -> list[str]:
    """The command of worker `index`: this one again, as `python -m gateway ...`, marked as that worker."""
    return [sys.executable, "-m", "gateway", *argv, "--worker", str(index)]


def describe(code: int) -> str:
    """How a process ended, from its return code: a signal's name, or its exit code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Keeps `count` workers (`command(index)`) running beside the parent's own `apps`, until stopped."""

    def __init__(self, name: str, count: int, command: Callable[[int], list[str]], apps: list[Served]) -> None:
        self.name, self.count, self.command, self.apps = name, count, command, apps
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()
        self.failed: int | None = None
        self.served = False
        """A worker was seen listening: it got past the config, the store and the port (see the module)."""
        self.metrics_dir = ""
        self._signalled: set[int] = set()

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM, or until a worker fails for good; the exit code for the CLI."""
        named = os.environ.get(MULTIPROCESS)
        if named:
            self.metrics_dir = _own_folder(Path(named))
            os.environ[MULTIPROCESS] = self.metrics_dir  # where the parent's own apps count and read, from now
        else:  # the parent's own apps count in memory: the variable was not set when prometheus-client loaded
            self.metrics_dir = tempfile.mkdtemp(prefix="kentongan-metrics-")
        try:
            return asyncio.run(self._serve())
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            if named:
                os.environ[MULTIPROCESS] = named

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stopping.set)
        async with serving(self.apps):
            keepers = [asyncio.create_task(self._keep(index)) for index in range(1, self.count + 1)]
            log.info("%s: %d workers", self.name, self.count)
            await self.stopping.wait()
            await self._stop_all()
            await asyncio.gather(*keepers, return_exceptions=True)
        return self.failed or 0

    async def _keep(self, index: int) -> None:
        """Worker `index`, started again whenever it dies, until the parent stops."""
        pause = 1.0
        while not self.stopping.is_set():
            began = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *self.command(index), env={**os.environ, MULTIPROCESS: self.metrics_dir},
                preexec_fn=_die_with_parent)
            self.processes[index] = process
            if self.stopping.is_set():  # stopping began while it was being started: `_stop_all` missed it
                await self._stop([process])
            watch = asyncio.create_task(self._watch_start(index, process))
            code = await process.wait()
            watch.cancel()
            self.processes.pop(index, None)
            _forget(process.pid, self.metrics_dir)
            if self.stopping.is_set():
                return
            quick = time.monotonic() - began < QUICK_DEATH_SECONDS
            self.served = self.served or not quick  # lived past any start: it served (where /proc cannot tell)
            if code == OPERATOR_ERROR and not self.served:  # the worker said what to fix; again would say it again
                log.error("%s worker %d (pid %d) %s: stopping", self.name, index, process.pid, describe(code))
                self.failed = OPERATOR_ERROR
                self.stopping.set()
                return
            log.warning("%s worker %d (pid %d) %s; starting another%s", self.name, index, process.pid,
                        describe(code), f" in {pause:.0f} s" if quick else "")
            if quick:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), pause)
                pause = min(MAX_PAUSE_SECONDS, pause * 2)
            else:
                pause = 1.0

    async def _watch_start(self, index: int, process: asyncio.subprocess.Process) -> None:
        """Note when worker `index` listens (then it serves), and say so."""
        while process.returncode is None:
            if _listening(process.pid):
                self.served = True
                log.info("%s worker %d (pid %d) serving", self.name, index, process.pid)
                return
            await asyncio.sleep(LISTEN_POLL_SECONDS)

    async def _stop_all(self) -> None:
        await self._stop(list(self.processes.values()))

    async def _stop(self, processes: list[asyncio.subprocess.Process]) -> None:
        """SIGTERM each of `processes` (once: a second one would cut its graceful stop short), wait for them,
        and SIGKILL any still running STOP_SECONDS later."""
        for process in processes:
            if process.pid not in self._signalled:
                self._signalled.add(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            except asyncio.TimeoutError:
                log.warning("%s worker (pid %d) still running %.0f s after SIGTERM: killing it", self.name,
                            process.pid, STOP_SECONDS)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


def _forget(pid: int, path: str) -> None:
    """Drop a dead worker's live gauges from the metrics folder (its counters stay: what it counted happened)."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, path)


def _own_folder(named: Path) -> str:
    """A fresh metrics folder of this supervisor inside the folder the operator `named`, with this process's own
    files (made there as its apps were built) moved in; folders of supervisors no longer running are removed.

    Moving a file prometheus-client holds open and mapped is safe: it keeps writing to the same file.
    """
    named.mkdir(parents=True, exist_ok=True)
    for old in named.glob(f"{OWN_FOLDER}*"):
        pid = old.name[len(OWN_FOLDER):].split("-", 1)[0]
        if old.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)  # counts of an earlier run are no counts of this one
    own = tempfile.mkdtemp(prefix=f"{OWN_FOLDER}{os.getpid()}-", dir=named)
    for mine in named.glob(f"*_{os.getpid()}.db"):  # prometheus-client names a process's files so
        mine.rename(Path(own) / mine.name)
    return own


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def _listening(pid: int) -> bool:
    """Whether process `pid` holds a listening TCP socket (Linux: /proc); False when that cannot be told."""
    try:
        sockets = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    sockets.add(target[8:-1])
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{pid}/net/{table}") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A" and fields[9] in sockets:  # 0A: LISTEN
                        return True
    except OSError:
        return False
    return False


PR_SET_PDEATHSIG = 1
try:  # looked up here: between fork and exec only the call itself is safe
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the worker before it runs (Linux): SIGTERM it when the parent dies, even by SIGKILL, so that no
    orphan keeps serving the port unsupervised."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
