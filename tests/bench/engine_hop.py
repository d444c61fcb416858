"""Benchmark: what the engine alone costs per USSD hop, with no store, network or sealing.

    .venv/bin/python tests/bench/engine_hop.py [--sessions N] [--profile]

Walks whole problem-report sessions (start, then five inputs, the last one
submitting) through `Engine.start`/`Engine.resume` in this process, with a
lookup that answers from memory, and prints microseconds per hop. Compare it
with the server CPU per hop of `make bench` to see what share of a hop is the
engine's. `--profile` prints where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flows import Context, Engine  # noqa: E402
from gateway.config import data_root  # noqa: E402

INPUTS = ["1", "1", "Dusun Kidul RT 03", "Jalan berlubang di depan sekolah", "1"]


class NoHistory:
    """A caller with no earlier submissions."""

    def taken(self, service, answer, value):
        return False

    def recent(self, limit):
        return []

    def find(self, ref):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    root = data_root()
    engine = Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id")
    ctx = Context(dt.date(2026, 11, 29), NoHistory(), lambda: "KABCDE")

    def sessions(count: int) -> None:
        for _ in range(count):
            step = engine.start("id", ctx)
            for raw in INPUTS:
                step = engine.resume(step.session, raw, ctx)
            assert step.done and step.submission is not None

    sessions(50)  # warm up
    started = time.perf_counter()
    sessions(args.sessions)
    hops = args.sessions * (len(INPUTS) + 1)
    print(f"engine: {(time.perf_counter() - started) / hops * 1e6:.1f} us per hop "
          f"({hops} hops of whole report sessions, one process)")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(sessions, args.sessions // 4)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(20)


if __name__ == "__main__":
    main()
