"""Benchmark: instructions a USSD hop costs the gateway, counted by callgrind (machine noise does not move them).

    .venv/bin/python tests/bench/hop_instructions.py [--in-flight 64]

`kentongan serve` (SQLite, as in `ussd_hop.py`) runs under `valgrind
--tool=callgrind` twice: once while 50 report sessions are walked, once
while 250 are. The difference over the 200 sessions' 1,200 hops leaves out
start-up and warm-up. User-space instructions only: the kernel's share (the
fsync, the sockets) and time spent waiting are not in it, so it says what the
code costs, not how fast a run goes. Takes about a minute and a half.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import ussd_hop

FEW, MANY = 50, 250


def instructions(sessions: int, in_flight: int) -> int:
    """Instructions the gateway ran from its start to its stop, with `sessions` walked in between."""
    with TemporaryDirectory() as folder:
        port = ussd_hop.free_port()
        out = Path(folder) / "callgrind.out"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "gateway", "serve"],
            env=ussd_hop.gateway_env(port, Path(folder) / "gateway"), cwd=ussd_hop.ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300  # a start under valgrind takes tens of seconds
        while time.monotonic() < deadline and server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        asyncio.run(ussd_hop.walk(port, in_flight, sessions=sessions))
        server.send_signal(signal.SIGTERM)
        report = server.communicate(timeout=600)[1].decode(errors="replace")
        found = re.search(r"Collected : (\d+)", report)
        if found is None:
            raise SystemExit(f"callgrind gave no count: {report[-2000:]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=64, help="sessions in flight at once")
    args = parser.parse_args()
    few, many = instructions(FEW, args.in_flight), instructions(MANY, args.in_flight)
    hops = (MANY - FEW) * len(ussd_hop.HOPS)
    print(f"gateway: {(many - few) / hops:,.0f} instructions per hop ({hops} hops of whole report sessions, "
          f"{args.in_flight} in flight, callgrind)")


if __name__ == "__main__":
    main()
