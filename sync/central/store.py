"""The central backend's store: what every gateway delivered, and what staff did with it.

Tables:

    gateways      each gateway's id and sync secret
    submissions   one row per submission id (the gateway's ULID), whatever path it came by
    updates       status changes in order; `seq` is the cursor a gateway pulls from
    nonces        request nonces seen in the last minutes (replays are refused)

Ingestion is idempotent on the submission id: a batch sent twice, or a
submission that arrives online and again in a batch file, is stored once.

Lists are filtered, ordered and limited in SQL on indexed columns, and only
the rows returned are unsealed. Every time a query compares is stored in one
form, UTC `stamp()` (`2026-11-28T10:00:00.000+00:00`), so text order is time
order. SQLite by default; the methods are the interface a PostgreSQL store
will implement.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import sqlite_utils
from ulid import ULID

from ..database import Database, stamp, utc_now
from ..protocol import STATUSES
from ..seal import Sealer

DATABASE_NAME = "central.db"
KEY_FILE_NAME = "central.key"
NONCE_MINUTES = 15
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_REF = re.compile(r"^[0-9A-Z]{6,8}$")
ITEM_FIELDS = ("id", "ref", "service", "channel", "answers", "phone", "language", "created_at")
NEWEST_FIRST = "created_at DESC, id DESC"

Key = tuple[str, str]
"""Where a list stopped: the (created_at, id) of its last row."""


def utc_stamp(text: str) -> str:
    """An ISO 8601 time as a store writes it (UTC `stamp()`); a time without offset is UTC.

    ValueError when `text` is no such time, or one that has no UTC form
    (`0001-01-01T00:00:00+01:00` falls before year 1).
    """
    when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    try:
        return stamp(when)
    except OverflowError:
        raise ValueError(f"{text!r} has no UTC time") from None


def _v1(db: sqlite_utils.Database) -> None:
    db["gateways"].create({"id": str, "secret": str, "created_at": str}, pk="id")
    db["submissions"].create({
        "id": str, "gateway_id": str, "ref": str, "service": str, "channel": str, "answers": str,
        "phone": str, "language": str, "village": str, "status": str, "note": str,
        "created_at": str, "received_at": str, "updated_at": str,
    }, pk="id", not_null={"gateway_id", "ref", "service", "answers", "phone", "status", "created_at",
                          "received_at", "updated_at"})
    db["submissions"].create_index(["ref"], unique=True)
    db["submissions"].create_index(["status", "service"])
    db.execute("""CREATE TABLE updates (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, submission_id TEXT NOT NULL, gateway_id TEXT NOT NULL,
        ref TEXT NOT NULL, status TEXT NOT NULL, note TEXT, at TEXT NOT NULL)""")
    db["updates"].create_index(["gateway_id", "seq"])
    db["nonces"].create({"nonce": str, "gateway_id": str, "at": str}, pk="nonce")
    db["nonces"].create_index(["at"])


def _v2(db: sqlite_utils.Database) -> None:
    """`created_at` in UTC `stamp()` form, so SQL compares it as text; an index for every list filter."""
    for row_id, created_at in db.execute("SELECT id, created_at FROM submissions").fetchall():
        try:
            canonical = utc_stamp(created_at)
        except ValueError:
            continue  # ingestion checked it; a row that slipped through keeps its text
        if canonical != created_at:
            db.execute("UPDATE submissions SET created_at = ? WHERE id = ?", [canonical, row_id])
    db.execute("DROP INDEX IF EXISTS idx_submissions_status_service")
    db.execute("CREATE INDEX idx_submissions_created ON submissions (created_at, id)")
    db.execute("CREATE INDEX idx_submissions_service_created ON submissions (service, created_at, id)")
    db.execute("CREATE INDEX idx_submissions_status_created ON submissions (status, created_at, id)")
    db.execute("CREATE INDEX idx_submissions_village ON submissions (village COLLATE NOCASE)")
    db.execute("CREATE INDEX idx_submissions_updated ON submissions (updated_at)")


MIGRATIONS = [_v1, _v2]


class CentralStore(Database):
    """The central backend's SQLite store.

    `addresses` names, per service, the answer that holds the place (the
    form's `address` role); ingestion copies it into the `village` column
    that staff filter on.
    """

    MIGRATIONS = MIGRATIONS

    def __init__(self, path: str | Path, sealer: Sealer, clock: Callable[[], dt.datetime] = utc_now,
                 addresses: Mapping[str, str] = MappingProxyType({})):
        super().__init__(path, sealer, clock)
        self.addresses = addresses

    @classmethod
    def open(cls, data_dir: str | Path, clock: Callable[[], dt.datetime] = utc_now,
             addresses: Mapping[str, str] = MappingProxyType({})) -> "CentralStore":
        data_dir = Path(data_dir)
        return cls(data_dir / DATABASE_NAME, Sealer.from_key_file(data_dir / KEY_FILE_NAME), clock, addresses)

    # -- gateways and replay protection -----------------------------------------

    def register_gateway(self, gateway_id: str, secret: str) -> None:
        """Know `gateway_id` by `secret` (a new secret replaces the old one)."""
        with self.transaction():
            known = self.db.execute("SELECT created_at FROM gateways WHERE id = ?", [gateway_id]).fetchone()
            self.db["gateways"].upsert({"id": gateway_id, "secret": secret,
                                        "created_at": known[0] if known else stamp(self.clock())}, pk="id")

    def secret(self, gateway_id: str) -> str | None:
        row = self.db.execute("SELECT secret FROM gateways WHERE id = ?", [gateway_id]).fetchone()
        return row[0] if row else None

    def gateways(self) -> list[dict]:
        """Every registered gateway: id, created_at, and how many submissions it delivered; by id."""
        rows = self.db.execute(
            "SELECT g.id, g.created_at, count(s.id) FROM gateways g "
            "LEFT JOIN submissions s ON s.gateway_id = g.id GROUP BY g.id ORDER BY g.id").fetchall()
        return [{"id": row[0], "created_at": row[1], "submissions": row[2]} for row in rows]

    def use_nonce(self, gateway_id: str, nonce: str) -> bool:
        """Record a request nonce; False when it was used before (a replay)."""
        now = self.clock()
        with self.transaction():
            self.db.execute("DELETE FROM nonces WHERE at < ?", [stamp(now - dt.timedelta(minutes=NONCE_MINUTES))])
            try:
                self.db.execute("INSERT INTO nonces (nonce, gateway_id, at) VALUES (?, ?, ?)",
                                [nonce, gateway_id, stamp(now)])
            except sqlite3.IntegrityError:
                return False
        return True

    # -- ingestion -------------------------------------------------------------

    def _insert(self, submission_id: str, gateway_id: str, ref: str, service: str, channel: str, answers: dict,
                phone: str, language: str, created_at: str, now: str) -> None:
        """A new row, `received`, personal fields sealed, `village` copied from the service's address answer."""
        address = self.addresses.get(service)
        self.db["submissions"].insert({
            "id": submission_id, "gateway_id": gateway_id, "ref": ref, "service": service, "channel": channel,
            "answers": self.sealer.seal(json.dumps(answers, ensure_ascii=False)), "phone": self.sealer.seal(phone),
            "language": language, "village": str(answers.get(address) or "") if address else "",
            "status": "received", "note": None, "created_at": created_at, "received_at": now, "updated_at": now,
        })

    def ingest(self, gateway_id: str, items: list) -> list[dict]:
        """Store a batch; answer each item `accepted`, `duplicate` or `rejected` with a reason."""
        results = []
        now = stamp(self.clock())
        with self.transaction():
            for item in items:
                item_id = item.get("id") if isinstance(item, dict) else None
                problem = _check_item(item)
                if problem:
                    results.append({"id": item_id, "result": "rejected", "reason": problem})
                    continue
                known = self.db.execute("SELECT gateway_id FROM submissions WHERE id = ?", [item_id]).fetchone()
                if known:
                    if known[0] != gateway_id:
                        results.append({"id": item_id, "result": "rejected",
                                        "reason": "this id belongs to another gateway"})
                    else:
                        results.append({"id": item_id, "result": "duplicate"})
                    continue
                if self.db.execute("SELECT 1 FROM submissions WHERE ref = ?", [item["ref"]]).fetchone():
                    results.append({"id": item_id, "result": "rejected", "reason": "reference already in use"})
                    continue
                self._insert(item_id, gateway_id, item["ref"], item["service"], item["channel"], item["answers"],
                             item["phone"], item["language"], utc_stamp(item["created_at"]), now)
                results.append({"id": item_id, "result": "accepted"})
        return results

    def add_direct(self, service: str, answers: dict, phone: str, channel: str, *, prefix: str,
                   language: str = "en") -> dict:
        """A submission made at the centre (an Open311 client), not by a gateway; its reference starts with `prefix`."""
        now = stamp(self.clock())
        with self.transaction():
            ref = self.free_reference(prefix)
            self._insert(str(ULID()), channel, ref, service, channel, answers, phone, language, now, now)
        return self.submission(ref)

    # -- status changes -----------------------------------------------------------

    def set_status(self, ref: str, status: str, note: str = "") -> dict | None:
        """Change a submission's status (staff); the change joins its gateway's update feed."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        now = stamp(self.clock())
        with self.transaction():
            row = self.db.execute("SELECT id, gateway_id FROM submissions WHERE ref = ?", [ref]).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE submissions SET status = ?, note = ?, updated_at = ? WHERE id = ?",
                            [status, note or None, now, row[0]])
            self.db.execute("INSERT INTO updates (submission_id, gateway_id, ref, status, note, at) "
                            "VALUES (?, ?, ?, ?, ?, ?)", [row[0], row[1], ref, status, note or None, now])
        return self.submission(ref)

    def updates(self, gateway_id: str, since: int, limit: int | None = 500) -> list[dict]:
        """Status changes of `gateway_id`'s submissions after cursor `since`, oldest first (all when `limit` is None)."""
        rows = self.db.execute(
            "SELECT seq, submission_id, ref, status, note, at FROM updates WHERE gateway_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", [gateway_id, since, -1 if limit is None else limit]).fetchall()
        return [dict(zip(("seq", "id", "ref", "status", "note", "at"), row)) for row in rows]

    def acks(self, gateway_id: str) -> list[str]:
        """Ids of every submission this gateway delivered: what it may mark synced."""
        rows = self.db.execute("SELECT id FROM submissions WHERE gateway_id = ? ORDER BY id", [gateway_id])
        return [row[0] for row in rows.fetchall()]

    # -- reading ------------------------------------------------------------------

    def submission(self, ref: str) -> dict | None:
        rows = list(self.db["submissions"].rows_where("ref = ?", [ref]))
        return self._open(rows[0]) if rows else None

    def submissions(self, *, status: str | None = None, service: str | None = None, village: str | None = None,
                    since: str | None = None, after: Key | None = None,
                    limit: int = 100) -> tuple[list[dict], Key | None]:
        """One page of submissions, newest first (by created_at, then id), and where the next page starts.

        `village` matches regardless of case; `since` (a `stamp()`) keeps
        those updated at or after it; `after` continues a list where an
        earlier page stopped (the key it returned), so rows that arrive in
        between never shift a page. The key is None on the last page.
        """
        filters = {"status = ?": status, "service = ?": service, "village = ? COLLATE NOCASE": village,
                   "updated_at >= ?": since}
        where = [clause for clause, value in filters.items() if value]
        args = [value for value in filters.values() if value]
        if after:
            where.append("(created_at, id) < (?, ?)")
            args.extend(after)
        rows = self._select(where, args, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return [self._open(row) for row in rows], (rows[-1]["created_at"], rows[-1]["id"]) if more else None

    def service_requests(self, services: Sequence[str], *, refs: Sequence[str] = (), start: str | None = None,
                         end: str | None = None, statuses: Sequence[str] = (), limit: int = 1000) -> list[dict]:
        """Submissions of `services`, newest first: those with references `refs` when given, else
        those created from `start` to `end` (`stamp()`s, both inclusive) with one of `statuses` (any when empty).
        """
        if not services:
            return []
        where = [f"service IN ({', '.join('?' * len(services))})"]
        args: list = list(services)
        if refs:
            where.append(f"ref IN ({', '.join('?' * len(refs))})")
            args.extend(refs)
        else:
            if start:
                where.append("created_at >= ?")
                args.append(start)
            if end:
                where.append("created_at <= ?")
                args.append(end)
            if statuses:
                where.append(f"status IN ({', '.join('?' * len(statuses))})")
                args.extend(statuses)
        return [self._open(row) for row in self._select(where, args, limit)]

    def _select(self, where: list[str], args: list, limit: int) -> list[dict]:
        """Sealed rows matching every condition in `where`, newest first, at most `limit`."""
        sql = "SELECT * FROM submissions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        cursor = self.db.execute(f"{sql} ORDER BY {NEWEST_FIRST} LIMIT ?", [*args, limit])
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def _open(self, row: dict) -> dict:
        row = dict(row)
        row["answers"] = json.loads(self.sealer.open(row["answers"]))
        row["phone"] = self.sealer.open(row["phone"])
        return row

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM submissions").fetchone()[0]


def _check_item(item) -> str | None:
    """Why an item cannot be stored, or None."""
    if not isinstance(item, dict):
        return "an item must be an object"
    missing = [name for name in ITEM_FIELDS if name not in item]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(item["id"], str) or not _ULID.match(item["id"]):
        return "id must be a ULID"
    if not isinstance(item["ref"], str) or not _REF.match(item["ref"]):
        return "ref must be 6-8 letters and digits"
    if not isinstance(item["answers"], dict):
        return "answers must be an object"
    for name in ("service", "channel", "phone", "language", "created_at"):
        if not isinstance(item[name], str) or not item[name]:
            return f"{name} must be a non-empty string"
    try:
        utc_stamp(item["created_at"])
    except ValueError:
        return "created_at must be an ISO 8601 time"
    return None
