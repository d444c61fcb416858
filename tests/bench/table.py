"""`make bench`: every figure issue 12 asks for, measured in one run and printed as one table.

    .venv/bin/python tests/bench/table.py [--seconds 1.5] [--rounds 3] [--big]

- Whole report sessions (six hops, `ussd_hop.HOPS`) at 1, 8, 64 and 256 in
  flight against `kentongan serve` and a bare aiohttp handler, alternating
  round by round (`ussd_hop.alternate`), ratios first: throughput, then server
  CPU per hop the same way round (baseline's over the server's; steadier on a
  noisy machine and independent of the load generator), then p99.
- The same at 8 and 64 against gateways whose store already holds 100,000
  (and with `--big` 1,000,000) submissions, alternating with the gateway that
  started empty: latency must not grow with history. The store is filled by
  SQL before its server starts, every row a copy of one sealed submission.
- The gateway's RSS with 10,000 live sessions (two hops each, unfinished).
- Submissions per second the central backend ingests, on SQLite and on
  PostgreSQL, from 1 and from 50 gateways pushing signed batches of 100 at
  once through the real sync API (`central_ingest.py`; the PostgreSQL rows say
  why when it does not answer).
- Bytes on the wire per submission for batches of 1, 100 and 1,000
  (`sync_wire.measure`).

Servers run pinned to one core and the load generator to the other when two
exist; the generator's CPU share is printed beside each row, so a row it
paced can be told from one the server did.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import central_ingest  # noqa: E402
import sync_wire  # noqa: E402
import ussd_hop  # noqa: E402
from sync.reference import new_reference  # noqa: E402
from sync.store import DATABASE_NAME, Store  # noqa: E402

LEVELS = (1, 8, 64, 256)
HISTORY_LEVELS = (8, 64)
LIVE_SESSIONS = 10_000
WIRE_BATCHES = (1, 100, 1000)

# -- the machine --------------------------------------------------------------

def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ussd_hop.ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ussd_hop.ROOT,
                           capture_output=True, text=True).stdout.strip()
    pinned = (f"servers pinned to core {ussd_hop.SERVER_CORE}, load generator to core {ussd_hop.GENERATOR_CORE}"
              if ussd_hop.PINNED else "one core: servers and load generator share it")
    return (f"commit {commit}{' with uncommitted changes' if dirty else ''}, "
            f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {os.cpu_count()} x {model}, "
            f"Python {platform.python_version()}; {pinned}")


# -- a store with history -------------------------------------------------------

def fill(data_dir: Path, count: int) -> float:
    """Give the gateway store in `data_dir` `count` stored submissions (spread over the last year, most of
    them synced, each with its status history) by copying one sealed submission in SQL; return seconds."""
    began = time.monotonic()
    store = Store.open(data_dir)
    template = store.add_submission({"service": "report", "ref": new_reference("H"), "language": "id",
                                     "answers": {"category": "road", "location": "Dusun Kidul RT 03",
                                                 "description": "Jalan berlubang besar di depan sekolah"},
                                     "unique": {}}, phone="+6281234567890", channel="ussd")
    store.close()
    db = sqlite3.connect(data_dir / DATABASE_NAME)
    columns = [row[1] for row in db.execute("PRAGMA table_info(submissions)")]
    moment = "strftime('%Y-%m-%dT%H:%M:%f+00:00', t.created_at, printf('-%d seconds', (n.i * 31) % 31536000))"
    made = {"id": "printf('00000000%018d', n.i)", "ref": "printf('H%07d', n.i)",
            "phone_hash": "printf('%064x', (n.i * 7919) % 3000017)",
            "status": "CASE n.i % 4 WHEN 0 THEN 'received' WHEN 1 THEN 'in_progress' ELSE 'resolved' END",
            "sync_state": "CASE WHEN n.i % 100 = 0 THEN 'pending' ELSE 'synced' END", "session_id": "NULL",
            "created_at": moment, "updated_at": moment, "status_at": moment}
    values = ", ".join(made.get(column, f"t.{column}") for column in columns)
    with db:
        db.execute("PRAGMA synchronous=OFF")
        db.execute(f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                       INSERT INTO submissions ({", ".join(columns)})
                       SELECT {values} FROM n, (SELECT * FROM submissions WHERE id = ?) AS t""",
                   [count, template["id"]])
        db.execute("""INSERT INTO status_history (submission_id, status, note, at)
                      SELECT id, status, NULL, created_at FROM submissions WHERE id LIKE '00000000%'""")
    db.close()
    return time.monotonic() - began


def stored(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / DATABASE_NAME}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM submissions").fetchone()[0]


# -- the table ------------------------------------------------------------------

HEAD = (f"{'':34}{'ratio':>7}{'ratio':>7}{'ratio':>7} |{'hops/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU us':>8} |"
        f"{'hops/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU us':>8} |{'gen':>5}")
UNDER = (f"{'':34}{'hops/s':>7}{'CPU':>7}{'p99':>7} |{'server':>32} |{'baseline':>32} |{'CPU':>5}")


def line(label: str, server: dict, baseline: dict) -> str:
    def figures(row: dict) -> str:
        return (f"{row['hops_per_s']:8.0f}{row['p50_ms']:8.2f}{row['p99_ms']:8.2f}{row['cpu_us_per_hop']:8.0f}")
    return (f"{label:34}{server['hops_per_s'] / baseline['hops_per_s']:7.2f}"
            f"{baseline['cpu_us_per_hop'] / server['cpu_us_per_hop']:7.2f}"
            f"{server['p99_ms'] / baseline['p99_ms']:7.2f} |{figures(server)} |{figures(baseline)} |"
            f"{max(server['generator_cpu'], baseline['generator_cpu']):5.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one round against one server")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per figure (medians)")
    parser.add_argument("--big", action="store_true", help="also a store of 1,000,000 submissions")
    args = parser.parse_args()
    ussd_hop.pin_generator()
    out: list[str] = [f"Kentongan benchmark: {machine()}",
                      f"{args.rounds} alternating rounds of {args.seconds:g} s per figure and server (medians); "
                      "whole report sessions of 6 hops; CPU us = server CPU per hop; ratio CPU = baseline's CPU us / "
                      "the server's (read like ratio hops/s, but steadier and not paced by the generator); "
                      "gen CPU = load generator's share of its core (near 100%: it set the pace)", ""]
    histories = (100_000, 1_000_000) if args.big else (100_000,)
    with TemporaryDirectory() as name:
        folder = Path(name)
        fills = {count: fill(folder / f"gateway-{count}", count) for count in histories}
        servers = {name: ussd_hop.start(name, folder / name) for name in ("bare", "gateway")}
        servers.update({count: ussd_hop.start("gateway", folder / f"gateway-{count}") for count in histories})
        try:
            ussd_hop.warm(servers)
            pair = {"bare": servers["bare"], "gateway": servers["gateway"]}
            out += [HEAD, UNDER]
            for level in LEVELS:
                medians = ussd_hop.alternate(pair, level, args.seconds, args.rounds)
                out.append(line(f"{level} sessions: gateway vs bare", medians["gateway"], medians["bare"]))
            fresh = stored(folder / "gateway")
            for count in histories:
                for level in HISTORY_LEVELS:
                    medians = ussd_hop.alternate({"full": servers[count], "fresh": servers["gateway"]}, level,
                                                 args.seconds, args.rounds)
                    out.append(line(f"{level} sessions: {count:,} stored", medians["full"], medians["fresh"]))
            out.append(f"  baseline of the stored rows: the gateway above, then holding {fresh:,} submissions; "
                       "filled by SQL before start: "
                       + ", ".join(f"{count:,} in {seconds:.1f} s" for count, seconds in fills.items()))
            process, port = servers["gateway"]
            before = ussd_hop.rss_mib(process.pid)
            wall, _ = asyncio.run(ussd_hop.walk(port, 64, sessions=LIVE_SESSIONS, hops=ussd_hop.HOPS[:2]))
            out += ["", f"{'gateway RSS, ' + format(LIVE_SESSIONS, ',') + ' live sessions':34}"
                        f"{ussd_hop.rss_mib(process.pid):7.1f} MiB ({before:.1f} MiB before them; "
                        f"two hops each, opened in {wall:.1f} s)"]
        finally:
            for process, _ in servers.values():
                ussd_hop.stop(process)
        out += central_ingest.lines(folder)
    for size in WIRE_BATCHES:
        seen = sync_wire.measure(size)
        n = seen["n"]
        out.append(f"{'wire bytes/submission, batch ' + format(size, ','):34}{seen['wire'] / n:7.0f} both ways "
                   f"(request body {seen['body'] / n:.0f}, answer {seen['answer_wire'] / n:.0f}, "
                   f"JSON before gzip {seen['raw'] / n:.0f})")
    print("\n".join(out))


if __name__ == "__main__":
    main()
