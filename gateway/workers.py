"""`serve --workers N`: N processes serving one port, under a parent that keeps them running.

Each worker is `kentongan serve --workers N --worker I` (or `central serve`
...), a process of its own started from the same executable with the same
config and environment, listening with SO_REUSEPORT: the kernel spreads new
connections among the listening workers, and a dead worker's socket leaves
the group at once. The parent starts them, starts another when one dies
(one WARNING line naming its exit code or signal), and on SIGTERM or SIGINT
stops them all (SIGTERM each, so each finishes the requests it holds) and
waits for them. A worker that exits with the CLI's code 2 said in one line
what the operator must fix (a port taken, a bad config, the store out of
reach): starting it again would say it again, so the parent stops the rest
and exits with 2 as well.

The parent also serves what must run once (the embedded central backend),
and sets PROMETHEUS_MULTIPROC_DIR for the workers to a fresh folder (one of
its own, removed at the end, unless the environment names one: that one is
emptied at start), so that `/metrics` on any worker sums every worker's
counters, those of dead workers included (their files stay; only their
live gauges are dropped, by `mark_process_dead`).
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
        self.metrics_dir = ""

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM, or until a worker fails for good; the exit code for the CLI."""
        named = os.environ.get(MULTIPROCESS)
        self.metrics_dir = named or tempfile.mkdtemp(prefix="kentongan-metrics-")
        try:
            _empty(Path(self.metrics_dir))
            return asyncio.run(self._serve())
        finally:
            if not named:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

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
            code = await process.wait()
            self.processes.pop(index, None)
            _forget(process.pid, self.metrics_dir)
            if self.stopping.is_set():
                return
            if code == OPERATOR_ERROR:  # the worker said what to fix; again would say it again
                log.error("%s worker %d (pid %d) %s: stopping", self.name, index, process.pid, describe(code))
                self.failed = OPERATOR_ERROR
                self.stopping.set()
                return
            quick = time.monotonic() - began < QUICK_DEATH_SECONDS
            log.warning("%s worker %d (pid %d) %s; starting another%s", self.name, index, process.pid,
                        describe(code), f" in {pause:.0f} s" if quick else "")
            if quick:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), pause)
                pause = min(MAX_PAUSE_SECONDS, pause * 2)
            else:
                pause = 1.0

    async def _stop_all(self) -> None:
        processes = list(self.processes.values())
        for process in processes:
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


def _empty(path: Path) -> None:
    """Counts of an earlier run are no counts of this one."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()


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
