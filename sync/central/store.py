"""The central backend's store: what every gateway delivered, and what staff did with it.

Tables:

    gateways      each gateway's id, sync secret (and the previous one, while a new one spreads)
                  and reference prefix
    submissions   one row per submission id (the gateway's ULID), whatever path it came by
    claims        unique answers (a voter's NIK) by keyed digest, one row per submission holding one
    updates       status changes in order; `seq` is the cursor a gateway pulls from
    nonces        request nonces seen in the last minutes (replays are refused)
    meta          which unique answers existing submissions were claimed for
    accounts, account_tokens, web_sessions, login_failures, audit
                  staff, their API tokens, sessions and lock-outs, the append-only audit log
                  (`sync/accounts.py`)

Ingestion is idempotent on the submission id: a batch sent twice, or a
submission that arrives online and again in a batch file, is stored once.

The central backend is the authority on unique answers, since it is the one
place that sees every gateway: a submission holding a unique answer that an
earlier one holds (from any gateway, or from two gateways that were offline,
whichever arrives second) is stored with status `review` and a reason for
staff that names the other reference. Its gateway learns the status from the
update feed; the reason never leaves the centre.

Every answer a villager typed is sealed, the place too: `village` (the
answer with the form's `address` role, which staff filter on) is stored
sealed beside `village_digest`, a keyed digest of its casefolded,
space-normalized text, so that the filter is an indexed equality and nobody
without the key file can read a place or test a guess. Lists are filtered,
ordered and limited in SQL on indexed columns, and only the rows returned
are unsealed. Every time a query compares is stored in one
form, UTC `stamp()` (`2026-11-28T10:00:00.000+00:00`), so text order is time
order. SQLite by default; on PostgreSQL (`central.database_url`) the same
methods run the same SQL (`sync.sql`), on the schema `PG_MIGRATIONS` makes in
one step: the whole of what `MIGRATIONS` built up over the years, since a
PostgreSQL store starts new.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import itertools
import json
import re
import sqlite3
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterator, Mapping, Sequence

import sqlite_utils
from ulid import ULID

from .. import accounts
from ..accounts import Accounts
from ..database import Database, stamp, utc_now
from ..errors import StoreError
from ..protocol import HOLD, HOLD_LIMIT, QUIET, SAME_ANSWER, SILENT_STATUSES, STATUSES
from ..reference import ALPHABET, MAX_LENGTH, RANDOM_LENGTH, check_prefix
from ..seal import Sealer
from .routing import Routing

DATABASE_NAME = "central.db"
KEY_FILE_NAME = "central.key"
NONCE_MINUTES = 15
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_REF = re.compile(r"^[0-9A-Z]{6,8}$")
ITEM_FIELDS = ("id", "ref", "service", "channel", "answers", "phone", "language", "created_at")
NEWEST_FIRST = "created_at DESC, id DESC"
FINAL_STATUSES = ("resolved", "rejected")
"""Statuses after which nothing more is done: retention counts from a submission's last change in one."""
PREFIX_ORDER = "".join(sorted(ALPHABET, key=str.isdigit))
"""The order prefixes are handed out in: letters first (`A`, `B`, ...), then digits, then two characters."""

Key = tuple[str, str]
"""Where a list stopped: the (created_at, id) of its last row."""
Cursor = tuple[str, ...]
"""Where a triage list stopped: (created_at, id) newest first; (phase, now, when, id) most overdue first."""
NoticeText = Callable[[dict, str, str], object]
"""(submission, status, note) -> the notice its phone gets (its `text`): `CentralConfig.notice`."""
RATING_DAYS = 14
ORDERS = ("newest", "overdue")
MAX_CATEGORY = 40
HISTORY_KINDS = ("received", "status", "assign", "escalate", "feedback", "late-feedback", "sms")
VILLAGER_KINDS = ("feedback", "late-feedback")
"""History rows whose note is the villager's own words: sealed at rest, shown only to roles with `personal`,
erased with the rest of what the villager told."""
"""What a history row records: arrival; a status change (status, note, who; `detail` the review reason
when the centre held it); a reassignment (`detail` "old -> new", who); the deadline passed (`detail` the
agency whose supervisors it went to); the villager's answer to "is it fixed?" (`detail` "fixed" or
"not fixed", `rating`, `note` their own words, who `VILLAGER`), or one that came too late to count
(`late-feedback`, the same fields); the SMS a status change sends (`detail` its text)."""
MAX_WORDS = 160
"""The most of a villager's own words an answer to "is it fixed?" keeps."""
VILLAGER = "villager"
"""The history's `who` for what the villager did (answered "is it fixed?")."""


class RegistrationError(StoreError):
    """A gateway cannot be registered or changed as asked; the message says why."""


class GatewayExists(RegistrationError):
    """The gateway id is registered already."""


class PrefixTaken(RegistrationError):
    """The reference prefix asked for is the central backend's own, or another gateway's."""


class NoPrefix(StoreError):
    """A gateway registered before prefixes existed sent a batch: its references cannot be checked."""


class Changed(StoreError):
    """A change was asked of a submission that changed since the caller saw it: nothing was changed.

    `current` is the submission now (as `submission()`), `history` the
    history rows written since the `updated_at` the caller saw.
    """

    def __init__(self, current: dict, history: list[dict]):
        super().__init__(f"{current['ref']} changed at {current['updated_at']}: it is now {current['status']}")
        self.current = current
        self.history = history


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


def _after(now: str, previous: str) -> str:
    """`now`, or the millisecond after `previous` when `now` is not later: a submission's `updated_at` moves
    with each change, even two in one millisecond (a stamp's precision), so a change made from a view of it
    taken before the other is always refused (`Changed`), never let through because the stamps are equal."""
    if now > previous:
        return now
    return stamp(dt.datetime.fromisoformat(previous) + dt.timedelta(milliseconds=1))


def prefix_of(ref: str) -> str:
    """The gateway prefix a reference was drawn with: all but its random part."""
    return ref[:-RANDOM_LENGTH]


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


def _v3(db: sqlite_utils.Database) -> None:
    """Reference prefixes and secret rotation for gateways; claims of unique answers; review reasons.

    A gateway registered before prefixes gets the one its references were
    drawn with, when they all agree (a reference is its prefix and five
    random characters); one with none or several gets none, and its batches
    are refused until an operator gives it one.
    """
    db["gateways"].add_column("prefix", str)
    db["gateways"].add_column("previous_secret", str)
    db["gateways"].add_column("previous_until", str)
    taken = set()
    for (gateway_id,) in db.execute("SELECT id FROM gateways ORDER BY created_at, id").fetchall():
        refs = db.execute("SELECT ref FROM submissions WHERE gateway_id = ?", [gateway_id]).fetchall()
        drawn = {prefix_of(ref) for (ref,) in refs}
        if len(drawn) == 1 and (prefix := drawn.pop()) not in taken and _valid_prefix(prefix):
            db.execute("UPDATE gateways SET prefix = ? WHERE id = ?", [prefix, gateway_id])
            taken.add(prefix)
    db.execute("CREATE UNIQUE INDEX idx_gateways_prefix ON gateways (prefix)")
    db["claims"].create({"digest": str, "submission_id": str}, pk=("digest", "submission_id"))
    db["submissions"].add_column("review_of", str)
    db["submissions"].add_column("review_reason", str)
    db["updates"].add_column("notice", str)
    db["meta"].create({"key": str, "value": str}, pk="key")


def _v4(db: sqlite_utils.Database) -> None:
    """The place sealed: a digest column to filter on instead of the clear `village` and its index.

    A migration has no key: `CentralStore._seal_villages` seals the values
    this leaves in clear (those without a digest) when the store opens.
    """
    db.execute("DROP INDEX IF EXISTS idx_submissions_village")
    db["submissions"].add_column("village_digest", str)
    db.execute("CREATE INDEX idx_submissions_village_digest ON submissions (village_digest, created_at, id)")


def _v5(db: sqlite_utils.Database) -> None:
    """Staff accounts, their sessions, API tokens and lock-outs, and the append-only audit log (`accounts.py`)."""
    accounts.migrate(db)


def _v6(db: sqlite_utils.Database) -> None:
    """When retention erased a submission's personal data (`CentralStore.purge_personal`); NULL while whole."""
    db["submissions"].add_column("purged_at", str)


def _v7(db: sqlite_utils.Database) -> None:
    """The district office: each request's agency, category and deadline, its resolution and the villager's
    answer to "is it fixed?", and its history; existing rows get a history of what is known of them.

    A migration has no key and no config: `CentralStore._route_existing` gives the rows this leaves without
    an agency their agency, category and deadline when the store opens.
    """
    for name in ("agency", "category", "due_at", "escalated_at", "resolved_at", "first_resolved_at", "rated_at"):
        db["submissions"].add_column(name, str)
    db["submissions"].add_column("reopened", int, not_null_default=0)
    db["submissions"].add_column("fixed", int)
    db["submissions"].add_column("rating", int)
    db.execute("UPDATE submissions SET resolved_at = updated_at, first_resolved_at = updated_at "
               "WHERE status = 'resolved'")
    db.execute("CREATE INDEX idx_submissions_agency_created ON submissions (agency, created_at, id)")
    db.execute("CREATE INDEX idx_submissions_agency_due ON submissions (agency, due_at, id)")
    db.execute("CREATE INDEX idx_submissions_due ON submissions (due_at, id)")
    db.execute("CREATE INDEX idx_submissions_gateway_created ON submissions (gateway_id, created_at, id)")
    db.execute("""CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT, submission_id TEXT NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL,
        status TEXT, note TEXT, who TEXT, detail TEXT, rating INTEGER)""")
    db["history"].create_index(["submission_id", "id"])
    db.execute("INSERT INTO history (submission_id, at, kind, status) "
               "SELECT id, received_at, 'received', 'received' FROM submissions ORDER BY received_at, id")
    db.execute("INSERT INTO history (submission_id, at, kind, status, note, detail) "
               "SELECT id, updated_at, 'status', status, note, review_reason FROM submissions "
               "WHERE status != 'received' ORDER BY updated_at, id")
    db["feedback"].create({"id": str, "submission_id": str, "gateway_id": str, "result": str, "at": str},
                          pk="id")


def village_key(village: str) -> str:
    """What a place is compared by: casefolded, runs of spaces as one (`" Dusun  KIDUL"` -> `"dusun kidul"`)."""
    return " ".join(village.casefold().split())


def _valid_prefix(prefix: str) -> bool:
    try:
        return check_prefix(prefix) == prefix
    except ValueError:
        return False


MAX_NOTE = 500
MAX_FEEDBACK_ID = 40
"""The longest id of a villager's answer remembered (a gateway's are 26-character ULIDs)."""
"""The longest staff note kept; an SMS carries as much of it as fits one message."""

MIGRATIONS = [_v1, _v2, _v3, _v4, _v5, _v6, _v7]

_TEXT = 'TEXT COLLATE "C"'
PG_SCHEMA = f"""
CREATE TABLE gateways (
    id {_TEXT} PRIMARY KEY, secret {_TEXT}, created_at {_TEXT}, prefix {_TEXT}, previous_secret {_TEXT},
    previous_until {_TEXT});
CREATE UNIQUE INDEX idx_gateways_prefix ON gateways (prefix);
CREATE TABLE submissions (
    id {_TEXT} PRIMARY KEY, gateway_id {_TEXT} NOT NULL, ref {_TEXT} NOT NULL, service {_TEXT} NOT NULL,
    channel {_TEXT}, answers {_TEXT} NOT NULL, phone {_TEXT} NOT NULL, language {_TEXT}, village {_TEXT},
    status {_TEXT} NOT NULL, note {_TEXT}, created_at {_TEXT} NOT NULL, received_at {_TEXT} NOT NULL,
    updated_at {_TEXT} NOT NULL, review_of {_TEXT}, review_reason {_TEXT}, village_digest {_TEXT},
    purged_at {_TEXT}, agency {_TEXT}, category {_TEXT}, due_at {_TEXT}, escalated_at {_TEXT},
    resolved_at {_TEXT}, first_resolved_at {_TEXT}, rated_at {_TEXT}, reopened INTEGER NOT NULL DEFAULT 0,
    fixed INTEGER, rating INTEGER);
CREATE UNIQUE INDEX idx_submissions_ref ON submissions (ref);
CREATE INDEX idx_submissions_created ON submissions (created_at, id);
CREATE INDEX idx_submissions_service_created ON submissions (service, created_at, id);
CREATE INDEX idx_submissions_status_created ON submissions (status, created_at, id);
CREATE INDEX idx_submissions_updated ON submissions (updated_at);
CREATE INDEX idx_submissions_village_digest ON submissions (village_digest, created_at, id);
CREATE INDEX idx_submissions_agency_created ON submissions (agency, created_at, id);
CREATE INDEX idx_submissions_agency_due ON submissions (agency, due_at, id);
CREATE INDEX idx_submissions_due ON submissions (due_at, id);
CREATE INDEX idx_submissions_gateway_created ON submissions (gateway_id, created_at, id);
CREATE TABLE updates (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, submission_id {_TEXT} NOT NULL,
    gateway_id {_TEXT} NOT NULL, ref {_TEXT} NOT NULL, status {_TEXT} NOT NULL, note {_TEXT}, at {_TEXT} NOT NULL,
    notice {_TEXT});
CREATE INDEX idx_updates_gateway_id_seq ON updates (gateway_id, seq);
CREATE TABLE nonces (nonce {_TEXT} PRIMARY KEY, gateway_id {_TEXT}, at {_TEXT});
CREATE INDEX idx_nonces_at ON nonces (at);
CREATE TABLE claims (digest {_TEXT}, submission_id {_TEXT}, PRIMARY KEY (digest, submission_id));
CREATE TABLE meta (key {_TEXT} PRIMARY KEY, value {_TEXT});
CREATE TABLE history (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, submission_id {_TEXT} NOT NULL, at {_TEXT} NOT NULL,
    kind {_TEXT} NOT NULL, status {_TEXT}, note {_TEXT}, who {_TEXT}, detail {_TEXT}, rating INTEGER);
CREATE INDEX idx_history_submission_id_id ON history (submission_id, id);
CREATE TABLE feedback (
    id {_TEXT} PRIMARY KEY, submission_id {_TEXT}, gateway_id {_TEXT}, result {_TEXT}, at {_TEXT});
"""
"""The central store's own tables on PostgreSQL: the tables and indexes `MIGRATIONS` ends with (`_v7`), every
text column compared by code point as SQLite compares it. The staff accounts and the audit log are
`accounts.PG_SCHEMA`, as `_v5` is `accounts.migrate`."""


def _pg_v1(db) -> None:
    """The whole current schema at once: a PostgreSQL store has no older data to carry forward."""
    db.execute(PG_SCHEMA + accounts.PG_SCHEMA)


PG_MIGRATIONS = [_pg_v1]
LOCK_KEY = 0x4B54_4345_4E54
"""The base of the central store's PostgreSQL advisory locks (per gateway's batches, claims)."""
CLAIMS_LOCK = LOCK_KEY + 1
"""Held, on PostgreSQL, by a transaction that claims unique answers, so that two central workers cannot both
find a NIK free: SQLite's one writer serializes them anyway."""


class CentralStore(Database):
    """The central backend's store: a SQLite file, or a PostgreSQL database (`location` a `postgresql://` address).

    `addresses` names, per service, the answer that holds the place (the
    form's `address` role); ingestion copies it, sealed, into the `village`
    column, and its digest into `village_digest`, which staff filter on.
    `uniques` names, per service, the answers one submission may hold (the
    form's `unique`). `ref_prefix` is the central backend's own reference
    prefix (Open311 requests): no gateway gets it.
    """

    MIGRATIONS = MIGRATIONS
    PG_MIGRATIONS = PG_MIGRATIONS
    KIND = "central"

    def __init__(self, location: str | Path, sealer: Sealer, clock: Callable[[], dt.datetime] = utc_now,
                 addresses: Mapping[str, str] = MappingProxyType({}),
                 uniques: Mapping[str, Sequence[str]] = MappingProxyType({}), ref_prefix: str = "Z", *,
                 routing: Routing = Routing(), categories: Mapping[str, str] = MappingProxyType({}),
                 rating_days: int = RATING_DAYS, notice: NoticeText | None = None):
        super().__init__(location, sealer, clock)
        self.addresses = addresses
        self.uniques = uniques
        self.ref_prefix = ref_prefix
        self.routing = routing
        self.categories = categories
        self.rating_days = rating_days
        self.notice = notice
        self.accounts = Accounts(self.db, "central", clock)
        self._nonces_kept_until: dt.datetime | None = None
        self._seal_villages()
        self._claim_existing()
        self._route_existing()

    @classmethod
    def open(cls, data_dir: str | Path, clock: Callable[[], dt.datetime] = utc_now,
             addresses: Mapping[str, str] = MappingProxyType({}),
             uniques: Mapping[str, Sequence[str]] = MappingProxyType({}), ref_prefix: str = "Z",
             database_url: str = "", **settings) -> "CentralStore":
        """The store in `data_dir`, or in the PostgreSQL database at `database_url` when given (`central.database_url`);
        `settings` are the keyword arguments of the constructor (routing, ...).

        The key stays a file in `data_dir` either way: every machine serving one PostgreSQL store needs the same
        key file, and the database alone (or a dump of it) opens no sealed value.
        """
        data_dir = Path(data_dir)
        return cls(database_url or data_dir / DATABASE_NAME, Sealer.from_key_file(data_dir / KEY_FILE_NAME), clock,
                   addresses, uniques, ref_prefix, **settings)

    def reader(self) -> "CentralStore":
        """A read-only twin of this store on a connection of its own, for a reading thread beside the store's.

        It shares the key and the settings but no connection: SQLite opens the
        file read-only (`mode=ro`, `query_only`), so a twin that was asked to
        write raises instead of competing with the store's one writer. Through
        WAL, its reads never wait for that writer, nor the writer for them.
        On PostgreSQL the twin's connection is read-only
        (`default_transaction_read_only`), and MVCC keeps readers and the
        writer apart as WAL does.
        """
        twin = copy.copy(self)
        if self.postgres:
            from ..sql import PgDatabase  # asyncpg is loaded only by a store that uses it
            twin.db = PgDatabase(self.url, read_only=True, application_name="kentongan-central-read")
        else:
            conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10,
                                   check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA query_only = ON")
            twin.db = sqlite_utils.Database(conn)
        twin.accounts = Accounts(twin.db, "central", self.clock)
        return twin

    # -- gateways and replay protection -----------------------------------------

    def add_gateway(self, gateway_id: str, secret: str, prefix: str | None = None) -> str:
        """Register a new gateway with `secret` and `prefix` (the first free one when None); return the prefix.

        Raises `GatewayExists` for an id that is registered (a registered
        secret is never overwritten: see `rotate_secret`), and `PrefixTaken`.
        """
        with self.transaction():
            known = self.gateway(gateway_id)
            if known:
                raise GatewayExists(f"gateway {gateway_id} is registered already, with reference prefix "
                                    f"{known['prefix'] or '(none)'}")
            prefix = self._free_prefix() if prefix is None else self._check_free(prefix)
            self.db["gateways"].insert({"id": gateway_id, "secret": secret, "prefix": prefix,
                                        "created_at": stamp(self.clock())})
        return prefix

    def rotate_secret(self, gateway_id: str, secret: str, grace: dt.timedelta, prefix: str | None = None) -> dict:
        """Give a registered gateway a new `secret`; its current one keeps working for `grace`.

        A gateway registered before prefixes existed gets `prefix` (or the
        first free one); a registered prefix is never changed, since the
        gateway's pending submissions carry it. Returns the gateway.
        """
        with self.transaction():
            known = self.gateway(gateway_id)
            if known is None:
                raise RegistrationError(f"no gateway {gateway_id} is registered")
            if known["prefix"] and prefix and prefix.upper() != known["prefix"]:
                raise RegistrationError(f"gateway {gateway_id} has reference prefix {known['prefix']}; "
                                        f"a registered prefix is not changed")
            if not known["prefix"]:
                self.give_prefix(gateway_id, prefix)
            # A secret from an earlier rotation, still in its grace period, stops working now.
            self.db.execute("UPDATE gateways SET previous_secret = secret, previous_until = ?, secret = ? "
                            "WHERE id = ?", [stamp(self.clock() + grace), secret, gateway_id])
        return self.gateway(gateway_id)

    def give_prefix(self, gateway_id: str, prefix: str | None = None) -> str:
        """Give a gateway that has no prefix (registered before prefixes) `prefix`, or the first free one."""
        with self.transaction():
            prefix = self._free_prefix() if prefix is None else self._check_free(prefix)
            self.db.execute("UPDATE gateways SET prefix = ? WHERE id = ? AND prefix IS NULL", [prefix, gateway_id])
        return prefix

    def _check_free(self, prefix: str) -> str:
        """`prefix`, upper-cased, when it is well-formed (else `RegistrationError`) and nobody's (else
        `PrefixTaken` saying whose it is)."""
        try:
            prefix = check_prefix(prefix)
        except ValueError as error:
            raise RegistrationError(f"reference prefix {prefix}: {error}") from None
        if prefix == self.ref_prefix:
            raise PrefixTaken(f"{prefix} is the central backend's own reference prefix (central.ref_prefix)")
        holder = self.db.execute("SELECT id FROM gateways WHERE prefix = ?", [prefix]).fetchone()
        if holder:
            raise PrefixTaken(f"{prefix} is the reference prefix of gateway {holder[0]}")
        return prefix

    def _free_prefix(self) -> str:
        taken = {row[0] for row in self.db.execute("SELECT prefix FROM gateways WHERE prefix IS NOT NULL")}
        taken.add(self.ref_prefix)
        for candidate in _prefixes():
            if candidate not in taken:
                return candidate
        raise PrefixTaken("every reference prefix is taken")

    def gateway(self, gateway_id: str) -> dict | None:
        """A registered gateway: id, prefix (None before prefixes), created_at, previous_until; or None."""
        row = self.db.execute("SELECT id, prefix, created_at, previous_until FROM gateways WHERE id = ?",
                              [gateway_id]).fetchone()
        return dict(zip(("id", "prefix", "created_at", "previous_until"), row)) if row else None

    def secret(self, gateway_id: str) -> str | None:
        """The gateway's current secret: what the central backend seals its answer files with."""
        row = self.db.execute("SELECT secret FROM gateways WHERE id = ?", [gateway_id]).fetchone()
        return row[0] if row else None

    def secrets(self, gateway_id: str) -> list[str]:
        """Every secret the gateway may sign with now: the current one, and the previous one in its grace period."""
        row = self.db.execute("SELECT secret, previous_secret, previous_until FROM gateways WHERE id = ?",
                              [gateway_id]).fetchone()
        if row is None:
            return []
        current, previous, until = row
        return [current, previous] if previous and until > stamp(self.clock()) else [current]

    def gateways(self) -> list[dict]:
        """Every registered gateway, by id: id, prefix, created_at, previous_until (while the previous secret
        still works, else None) and how many submissions it delivered."""
        rows = self.db.execute(
            "SELECT g.id, g.prefix, g.created_at, CASE WHEN g.previous_until > ? THEN g.previous_until END, "
            "count(s.id) FROM gateways g LEFT JOIN submissions s ON s.gateway_id = g.id GROUP BY g.id ORDER BY g.id",
            [stamp(self.clock())]).fetchall()
        return [dict(zip(("id", "prefix", "created_at", "previous_until", "submissions"), row)) for row in rows]

    def use_nonce(self, gateway_id: str, nonce: str) -> bool:
        """Record a request nonce; False when it was used before (a replay)."""
        now = self.clock()
        with self.transaction():
            if self._nonces_kept_until is None or now >= self._nonces_kept_until:
                # At most once a minute, not per request: a nonce past NONCE_MINUTES only takes room (its
                # request is refused as stale by its time anyway), and this is a statement less per batch.
                self.db.execute("DELETE FROM nonces WHERE at < ?",
                                [stamp(now - dt.timedelta(minutes=NONCE_MINUTES))])
                self._nonces_kept_until = now + dt.timedelta(minutes=1)
            # Not a caught IntegrityError: on PostgreSQL that would abort the caller's whole transaction.
            return self.db.execute("INSERT OR IGNORE INTO nonces (nonce, gateway_id, at) VALUES (?, ?, ?)",
                                   [nonce, gateway_id, stamp(now)]).rowcount == 1

    # -- ingestion -------------------------------------------------------------

    def _insert(self, submission_id: str, gateway_id: str, ref: str, service: str, channel: str, answers: dict,
                phone: str, language: str, created_at: str, now: str) -> None:
        """A new row, personal fields sealed, `village` (sealed) and its digest from the service's address answer.

        It is `received`, or `review` when it holds a unique answer another submission holds.
        """
        row = self._row(submission_id, gateway_id, ref, service, channel, answers, phone, language, created_at, now)
        self.db.execute(_INSERT_ROW, [row[column] for column in _ROW])
        self._history(submission_id, now, "received", status="received")
        self._claim(submission_id, service, answers, self.uniques.get(service, ()), now)

    def _row(self, submission_id: str, gateway_id: str, ref: str, service: str, channel: str, answers: dict,
             phone: str, language: str, created_at: str, now: str) -> dict:
        """The columns `_ROW` of a new submission, `received`: personal fields sealed, place and routing."""
        address = self.addresses.get(service)
        village = str(answers.get(address) or "") if address else ""
        return {"id": submission_id, "gateway_id": gateway_id, "ref": ref, "service": service, "channel": channel,
                "answers": self.sealer.seal(json.dumps(answers, ensure_ascii=False)),
                "phone": self.sealer.seal(phone), "language": language, **self._village(village),
                "status": "received", "note": None, "created_at": created_at, "received_at": now,
                "updated_at": now, "review_of": None, "review_reason": None, "reopened": 0,
                **self._routed(service, answers, now, village)}

    def _routed(self, service: str, answers: dict, received_at: str, village: str | None = None) -> dict:
        """The `category`, `agency` and `due_at` columns of a request of `service` with `answers`, received
        at `received_at`: the routing rules' agency and the targets' deadline."""
        name = self.categories.get(service)
        category = str(answers[name])[:MAX_CATEGORY] if name and answers.get(name) not in (None, "") else None
        if village is None:
            address = self.addresses.get(service)
            village = str(answers.get(address) or "") if address else ""
        due = self.routing.due(service, category, dt.datetime.fromisoformat(received_at))
        return {"category": category, "agency": self.routing.agency(service, category, village),
                "due_at": stamp(due) if due else None}

    def _route_existing(self) -> None:
        """Give the requests stored before routing (no agency) their category, agency and deadline, once."""
        if not self._has_column("agency"):
            return
        rows = self.db.execute("SELECT id, service, answers, received_at FROM submissions WHERE agency IS NULL "
                               "ORDER BY received_at, id").fetchall()
        if not rows:
            return
        with self.transaction():
            for submission_id, service, answers, received_at in rows:
                routed = self._routed(service, json.loads(self.sealer.open(answers)), received_at)
                self.db.execute("UPDATE submissions SET category = ?, agency = ?, due_at = ? WHERE id = ?",
                                [routed["category"], routed["agency"], routed["due_at"], submission_id])

    def _history(self, submission_id: str, at: str, kind: str, *, status: str | None = None,
                 note: str | None = None, who: str | None = None, detail: str | None = None,
                 rating: int | None = None) -> None:
        """One row of a submission's history (see `HISTORY_KINDS`)."""
        self.db.execute("INSERT INTO history (submission_id, at, kind, status, note, who, detail, rating) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [submission_id, at, kind, status, note, who, detail,
                                                            rating])

    def _village(self, village: str) -> dict:
        """The `village` and `village_digest` columns of a place: sealed and digested, or both empty."""
        if not village_key(village):
            return {"village": "", "village_digest": None}
        return {"village": self.sealer.seal(village), "village_digest": self.village_digest(village)}

    def village_digest(self, village: str) -> str:
        """The keyed digest a place is found by, whatever its case and spacing."""
        return self.sealer.digest("village:" + village_key(village))

    def _seal_villages(self) -> None:
        """Seal the places an older store kept in clear (a value with no digest), then rewrite the file.

        Sealing in place leaves the clear text in freed pages and in the
        WAL: VACUUM rebuilds the file and the checkpoint empties the WAL.
        A store whose schema stops before `_v4` (an older version's) has
        nothing to seal them beside. A PostgreSQL store never held a place
        in clear (its schema starts sealed), so it finds none.
        """
        if not self._has_column("village_digest"):
            return
        rows = self.db.execute("SELECT id, village FROM submissions WHERE village_digest IS NULL "
                               "AND village IS NOT NULL AND village != ''").fetchall()
        if not rows:
            return
        with self.transaction():
            for row_id, village in rows:
                columns = self._village(village)
                self.db.execute("UPDATE submissions SET village = ?, village_digest = ? WHERE id = ?",
                                [columns["village"], columns["village_digest"], row_id])
        if not self.postgres:
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _has_column(self, name: str) -> bool:
        """Whether the submissions table has column `name`: a SQLite store opened by an older version may
        not (yet); a PostgreSQL one is made whole (`PG_MIGRATIONS`), so nothing is asked of it."""
        return self.postgres or name in self.db["submissions"].columns_dict

    def _claim(self, submission_id: str, service: str, answers: dict, names: Sequence[str], now: str) -> None:
        """Claim the answers `names` of a submission; when another submission holds one, hold this one for review."""
        if names and self.postgres:
            self.db.advisory_lock(CLAIMS_LOCK)  # see CLAIMS_LOCK; `ingest` claims in bulk (`_store_new`)
        for name in names:
            value = str(answers.get(name) or "").strip()
            if not value:
                continue
            digest = self.sealer.digest(f"claim:{service}:{name}:{value}")
            holder = self.db.execute(
                "SELECT s.ref FROM claims c JOIN submissions s ON s.id = c.submission_id "
                "WHERE c.digest = ? AND s.id != ? AND s.status != 'rejected' "
                "ORDER BY s.status = 'review', s.received_at, s.id LIMIT 1", [digest, submission_id]).fetchone()
            self.db.execute("INSERT OR IGNORE INTO claims (digest, submission_id) VALUES (?, ?)",
                            [digest, submission_id])
            if holder:
                self._hold(submission_id, holder[0], f"{name} already registered in {holder[0]}", now)

    def _hold(self, submission_id: str, other_ref: str, reason: str, now: str) -> None:
        """Set a submission to `review` naming `other_ref` (for staff only); its gateway learns the status."""
        held = self.db.execute("UPDATE submissions SET status = 'review', review_of = ?, review_reason = ?, "
                               "updated_at = ? WHERE id = ? AND status = 'received'",
                               [other_ref, reason, now, submission_id]).rowcount
        if held:
            self.db.execute("INSERT INTO updates (submission_id, gateway_id, ref, status, note, at) "
                            "SELECT id, gateway_id, ref, status, note, ? FROM submissions WHERE id = ?",
                            [now, submission_id])
            self._history(submission_id, now, "status", status="review", detail=reason)

    def _claim_existing(self) -> None:
        """Claim the unique answers of submissions stored before the answer was unique here (or before claims).

        Runs once per service and answer, oldest first: of two submissions
        already stored with one NIK, the later one, if still `received`, goes
        to review as if it had just arrived.
        """
        unique = {(service, name) for service, names in self.uniques.items() for name in names}
        done = {tuple(pair) for pair in json.loads(self._meta("claimed") or "[]")} if unique else set()
        todo = unique - done
        if not todo:
            return
        now = stamp(self.clock())
        with self.transaction():
            for service in sorted({service for service, _ in todo}):
                names = sorted(name for s, name in todo if s == service)
                rows = self.db.execute("SELECT id, answers FROM submissions WHERE service = ? "
                                       "ORDER BY received_at, id", [service]).fetchall()
                for submission_id, answers in rows:
                    self._claim(submission_id, service, json.loads(self.sealer.open(answers)), names, now)
            self._set_meta("claimed", json.dumps(sorted(done | todo)))

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                        "excluded.value", [key, value])

    def ingest(self, gateway_id: str, items: list, sealed: list[dict | None] | None = None,
               prefix: str | None = None) -> list[dict]:
        """Store a batch; answer each item `accepted`, `duplicate` or `rejected` with a reason.

        A new item whose reference does not carry the gateway's prefix is
        rejected. One its gateway held (`protocol.HOLD`: over the phone's daily
        limit) is stored as `review` with a reason for staff. Raises `NoPrefix`
        (nothing stored) for a gateway that has no prefix yet. `sealed` is
        `seal_batch(items)` when the caller made it already (off the store's
        thread); else it is made here. `prefix` is the gateway's, when the
        caller read it already (a registered prefix never changes).

        The batch is decided in Python first, item by item in order, exactly
        as if each were stored before the next was looked at (an id twice in
        one batch is a duplicate the second time; a unique answer an earlier
        item of the batch holds sends the later one to review), and then
        written with one statement per table: the per-item statements were
        most of a batch's cost, and on PostgreSQL each is a round trip.
        """
        prefix = prefix or (self.gateway(gateway_id) or {}).get("prefix")
        if not prefix:
            raise NoPrefix(f"no reference prefix for gateway {gateway_id}: run `kentongan central gateway add "
                           f"{gateway_id} --rotate --prefix P` at the centre")
        if sealed is None or len(sealed) != len(items):
            sealed = self.seal_batch(items)
        now = stamp(self.clock())
        results: list[dict] = []
        checked: list[tuple[dict, dict, dict]] = []  # (result, item, sealed) of the well-formed items
        for item, columns in zip(items, sealed):
            if columns is None:
                results.append({"id": item.get("id") if isinstance(item, dict) else None, "result": "rejected",
                                "reason": _check_item(item)})
            else:
                results.append({"id": item["id"], "result": "accepted"})
                checked.append((results[-1], item, columns))
        with self.transaction():
            if self.postgres:
                # Two central workers given one gateway's batch at once (a retry while the first is in flight):
                # the second waits here, then finds every id stored. SQLite's one writer does this by itself.
                self.db.advisory_lock(_gateway_lock(gateway_id))
            owners, used = {}, set()
            for start in range(0, len(checked), IN_CHUNK):  # one lookup for ids and references both
                part = checked[start:start + IN_CHUNK]
                for row_id, owner, ref in self._known([item["id"] for _, item, _ in part],
                                                      [item["ref"] for _, item, _ in part]):
                    owners[row_id] = owner
                    used.add(ref)
            fresh = []
            for result, item, columns in checked:
                item_id = item["id"]
                if item_id in owners:
                    if owners[item_id] != gateway_id:
                        result.update(result="rejected", reason="this id belongs to another gateway")
                    else:
                        result.update(result="duplicate")
                elif prefix_of(item["ref"]) != prefix:
                    result.update(result="rejected", reason=f"reference {item['ref']} does not carry this "
                                                            f"gateway's prefix {prefix}")
                elif item["ref"] in used:
                    result.update(result="rejected", reason="reference already in use")
                else:
                    owners[item_id] = gateway_id
                    used.add(item["ref"])
                    fresh.append((item, columns))
            if fresh:
                self._store_new(gateway_id, fresh, now)
        return results

    def seal_batch(self, items: list) -> list[dict | None]:
        """Per item of a batch, None when it is malformed (`_check_item`), else what storing it takes that
        needs no database: its answers and phone sealed, its place sealed and digested, the digests of its
        unique answers, its `created_at` in `stamp()` form. The costly part of a batch (sealing is most of
        it): it touches no connection, so a caller may run it in another thread than the store's, while that
        one writes the batch before."""
        out: list[dict | None] = []
        for item in items:
            if _check_item(item) is not None:
                out.append(None)
                continue
            service, answers = item["service"], item["answers"]
            address = self.addresses.get(service)
            village = str(answers.get(address) or "") if address else ""
            claims = []
            for name in self.uniques.get(service, ()):
                value = str(answers.get(name) or "").strip()
                if value:
                    claims.append((name, self.sealer.digest(f"claim:{service}:{name}:{value}")))
            out.append({"answers": self.sealer.seal(json.dumps(answers, ensure_ascii=False)),
                        "phone": self.sealer.seal(item["phone"]), **self._village(village), "place": village,
                        "claims": claims, "created_at": utc_stamp(item["created_at"])})
        return out

    def _store_new(self, gateway_id: str, fresh: list[tuple[dict, dict]], now: str) -> None:
        """Write the checked new items of a batch (each with its `seal_batch` columns), in batch order: rows,
        claims, holds, history, updates."""
        rows, history, updates = [], [], []
        holders = self._holders({digest for _, columns in fresh for _, digest in columns["claims"]})
        claimed: list[tuple[str, str]] = []
        status_of: dict[str, str] = {}
        for item, columns in fresh:
            item_id, service = item["id"], item["service"]
            hold = None  # (other ref, reason): the first reason to hold it is the one staff read
            for name, digest in columns["claims"]:
                holder = _best_holder(holders.get(digest, {}), item_id, status_of)
                claimed.append((digest, item_id))
                holders.setdefault(digest, {})[item_id] = (item["ref"], now, None)  # its status: `status_of`
                if holder and hold is None:
                    hold = (holder, f"{name} already registered in {holder}")
            if item.get(HOLD) is not None and hold is None:
                hold = (None, f"more {service} submissions from one phone in 24 hours than its gateway's daily "
                              f"limit" if item[HOLD] == HOLD_LIMIT
                        else f"held for review by its gateway ({ascii(item[HOLD])[:40]})")
            status = status_of[item_id] = "review" if hold else "received"
            routed = self._routed(service, item["answers"], now, columns["place"])
            rows.append((item_id, gateway_id, item["ref"], service, item["channel"], columns["answers"],
                         columns["phone"], item["language"], columns["village"], columns["village_digest"], status,
                         None, columns["created_at"], now, now, hold[0] if hold else None, hold[1] if hold else None,
                         routed["category"], routed["agency"], routed["due_at"], 0))
            history.append((item_id, now, "received", "received", None))
            if hold:
                history.append((item_id, now, "status", "review", hold[1]))
                updates.append((item_id, gateway_id, item["ref"], "review", None, now))
        self._insert_many("submissions", _ROW, rows)
        self._insert_many("history", ("submission_id", "at", "kind", "status", "detail"), history)
        self._insert_many("claims", ("digest", "submission_id"), claimed)  # the ids are new: so are their claims
        self._insert_many("updates", ("submission_id", "gateway_id", "ref", "status", "note", "at"), updates)

    def _holders(self, digests: set[str]) -> dict[str, dict[str, tuple]]:
        """Per claim digest, the stored submissions that hold it and may still count (not `rejected`): id ->
        (ref, received_at, status)."""
        if not digests:
            return {}
        if self.postgres:
            self.db.advisory_lock(CLAIMS_LOCK)
        found: dict[str, dict[str, tuple]] = {}
        for digest, submission_id, ref, received_at, status in self._where_in(
                "SELECT c.digest, s.id, s.ref, s.received_at, s.status FROM claims c "
                "JOIN submissions s ON s.id = c.submission_id", "c.digest", sorted(digests),
                "s.status != 'rejected'"):
            found.setdefault(digest, {})[submission_id] = (ref, received_at, status)
        return found

    def _known(self, ids: list[str], refs: list[str]) -> list[tuple]:
        """(id, gateway_id, ref) of the stored submissions with one of `ids` or one of `refs`."""
        if not ids:
            return []
        if self.postgres:  # one statement text for any number of values
            return self.db.execute("SELECT id, gateway_id, ref FROM submissions WHERE id = ANY(?) OR ref = ANY(?)",
                                   [ids, refs]).fetchall()
        marks = ", ".join("?" * len(ids))
        return self.db.execute(f"SELECT id, gateway_id, ref FROM submissions WHERE id IN ({marks}) "
                               f"OR ref IN ({marks})", [*ids, *refs]).fetchall()

    def _where_in(self, select: str, column: str, values: Sequence[str], also: str = "") -> list[tuple]:
        """The rows of `select` whose `column` is one of `values` (and `also`), a few statements at most."""
        rows: list[tuple] = []
        extra = f" AND {also}" if also else ""
        for start in range(0, len(values), IN_CHUNK):
            chunk = list(values[start:start + IN_CHUNK])
            if self.postgres:  # one statement text for any number of values
                rows += self.db.execute(f"{select} WHERE {column} = ANY(?){extra}", [chunk]).fetchall()
            else:
                rows += self.db.execute(f"{select} WHERE {column} IN ({', '.join('?' * len(chunk))}){extra}",
                                        chunk).fetchall()
        return rows

    def _insert_many(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        """New rows into `table` in one go. On PostgreSQL: the wide submission rows by COPY, the narrow rows of
        the other tables by one INSERT of `unnest`ed text arrays (one round trip; COPY first asks for the
        table's columns, and `executemany` is a statement per row), measured the faster way for each. On
        SQLite: one prepared INSERT run for each row, in the C loop of `executemany`. No ON CONFLICT: the rows
        are known to be new."""
        if not rows:
            return
        if self.postgres and table == "submissions":
            self.db.copy_records(table, columns, rows)
        elif self.postgres:
            arrays = ", ".join("?::text[]" for _ in columns)
            self.db.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays})",
                            [list(values) for values in zip(*rows)])
        else:
            self.db.conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                                     f"VALUES ({', '.join('?' * len(columns))})", rows)

    def held(self, gateway_id: str, ids: Sequence[str]) -> list[dict]:
        """Of `gateway_id`'s submissions `ids`, those waiting in `review`, by ref: ref and review_reason (for staff)."""
        wanted = set(ids)
        rows = self.db.execute("SELECT id, ref, review_reason FROM submissions WHERE gateway_id = ? "
                               "AND status = 'review' ORDER BY ref", [gateway_id]).fetchall()
        return [{"ref": ref, "review_reason": reason} for row_id, ref, reason in rows if row_id in wanted]

    def add_direct(self, service: str, answers: dict, phone: str, channel: str, *, language: str = "en") -> dict:
        """A submission made at the centre (an Open311 client), not by a gateway; its reference has the centre's
        prefix."""
        now = stamp(self.clock())
        with self.transaction():
            ref = self.free_reference(self.ref_prefix)
            self._insert(str(ULID()), channel, ref, service, channel, answers, phone, language, now, now)
        return self.submission(ref)

    # -- status changes -----------------------------------------------------------

    def set_status(self, ref: str, status: str, note: str = "", who: str | None = None) -> dict | None:
        """Change a submission's status and note (staff `who`); the change joins its gateway's update feed and
        the submission's history.

        Returns the submission with `changed` (False when status and note
        were already these: nothing joins the feed) and `also_notified`:
        when this decides a submission held for review, the reference of the
        one it was held for, whose phone is told too (an update of its own
        status and note, with `notice` `SAME_ANSWER`); else None.
        None when there is no such submission. A move to `resolved` sets
        `resolved_at` (and `first_resolved_at` the first time); a move away
        clears `resolved_at`.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        note = note or None
        now = stamp(self.clock())
        also = None
        with self.transaction():
            row = self.db.execute("SELECT id, gateway_id, status, note, review_of, updated_at FROM submissions "
                                  "WHERE ref = ?" + self._for_update, [ref]).fetchone()
            if row is None:
                return None
            submission_id, gateway_id, previous, previous_note, review_of, updated_at = row
            now = _after(now, updated_at)
            changed = (status, note) != (previous, previous_note)
            if changed:
                self._move(submission_id, previous, status, now, note=note)
                self.db.execute("INSERT INTO updates (submission_id, gateway_id, ref, status, note, at) "
                                "VALUES (?, ?, ?, ?, ?, ?)", [submission_id, gateway_id, ref, status, note, now])
                self._history(submission_id, now, "status", status=status, note=note, who=who)
            if changed and previous == "review" and status != "review" and review_of:
                also = review_of if self._tell_same_answer(review_of, now) else None
        return {**self.submission(ref), "changed": changed, "also_notified": also}

    @property
    def _for_update(self) -> str:
        """What a SELECT of rows the transaction is about to change ends with: on PostgreSQL, ` FOR UPDATE`, so
        that a change by another worker waits for this transaction and is decided on what it committed; SQLite
        has no such clause (and one writer)."""
        return " FOR UPDATE" if self.postgres else ""

    def _move(self, submission_id: str, previous: str, status: str, now: str, **columns) -> None:
        """Set a submission's status (and `columns`) at `now`, keeping `resolved_at` and `first_resolved_at`."""
        if status == "resolved" and previous != "resolved":
            columns.update(resolved_at=now)
            self.db.execute("UPDATE submissions SET first_resolved_at = ? WHERE id = ? AND first_resolved_at IS NULL",
                            [now, submission_id])
        elif status != "resolved":
            columns.update(resolved_at=None)
        sets = ", ".join(f"{name} = ?" for name in columns)
        self.db.execute(f"UPDATE submissions SET status = ?, updated_at = ?, {sets} WHERE id = ?",
                        [status, now, *columns.values(), submission_id])

    def change(self, ref: str, status: str, note: str, who: str, expected: str | None = None) -> dict | None:
        """`set_status` by staff `who` who saw the submission as it was at `expected` (its `updated_at`), with
        a history row `sms` holding the notice the change sends (when the store has a notice renderer).

        Raises `Changed` (and changes nothing) when it changed since `expected`. None when there is no such
        submission.
        """
        ref = ref.upper()
        with self.transaction():
            self._check_unchanged(ref, expected)
            row = self.set_status(ref, status, note, who)
            if row is not None and row["changed"] and self.notice and status not in SILENT_STATUSES:
                text = getattr(self.notice(row, status, row["note"] or ""), "text", None)
                if text:
                    self._history(row["id"], row["updated_at"], "sms", status=status, detail=text)
        return row

    def reassign(self, ref: str, agency: str, who: str, expected: str | None = None) -> dict | None:
        """Give a submission to `agency` (staff `who`), recorded in its history; its gateway learns the agency
        from a quiet update. Raises `Changed` as `change` does; None when there is no such submission.
        Returns the submission with `changed` (False when it was the agency's already)."""
        agency = agency.strip()
        if not agency:
            raise ValueError("agency must be non-empty text")
        ref = ref.upper()
        now = stamp(self.clock())
        with self.transaction():
            before = self._check_unchanged(ref, expected)
            if before is None:
                return None
            changed = before["agency"] != agency
            if changed:
                now = _after(now, before["updated_at"])
                self.db.execute("UPDATE submissions SET agency = ?, updated_at = ? WHERE id = ?",
                                [agency, now, before["id"]])
                self._history(before["id"], now, "assign", status=before["status"], who=who,
                              detail=f"{before['agency']} -> {agency}")
                self._quiet_update(before["id"], now)
        return {**self.submission(ref), "changed": changed}

    def _check_unchanged(self, ref: str, expected: str | None) -> dict | None:
        """The submission `ref` (None when there is none); `Changed` when `expected` is given and is not its
        `updated_at`.

        On PostgreSQL the row is locked first (for the rest of the caller's transaction): another worker's change
        of it waits here for this one's commit and then sees its `updated_at`, instead of both passing the check
        and the later one overwriting the other. SQLite's one writer serializes them anyway."""
        if self.postgres:
            self.db.execute("SELECT id FROM submissions WHERE ref = ?" + self._for_update, [ref])
        row = self.submission(ref)
        if row is not None and expected is not None and expected != row["updated_at"]:
            raise Changed(row, self.history(row["id"], after=expected))
        return row

    def _quiet_update(self, submission_id: str, now: str) -> None:
        """Queue for a submission's gateway its status as it is, with no SMS (`protocol.QUIET`)."""
        self.db.execute("INSERT INTO updates (submission_id, gateway_id, ref, status, note, at, notice) "
                        "SELECT id, gateway_id, ref, status, note, ?, ? FROM submissions WHERE id = ?",
                        [now, QUIET, submission_id])

    def escalated(self, agency: str) -> int:
        """How many of `agency`'s requests went to its supervisors (past their deadline) and are still open."""
        return self.db.execute(
            f"SELECT count(*) FROM submissions WHERE agency = ? AND escalated_at IS NOT NULL "
            f"AND status NOT IN ({', '.join('?' * len(FINAL_STATUSES))})", [agency, *FINAL_STATUSES]).fetchone()[0]

    def escalate_overdue(self, now: dt.datetime | None = None) -> int:
        """Escalate, once, each submission whose deadline passed while its status is not final: `escalated_at`,
        a history row `escalate` naming the agency whose supervisors now see it, and a quiet update that
        tells its gateway it is overdue. Returns how many were escalated now."""
        at = stamp(now or self.clock())
        with self.transaction():
            rows = self.db.execute(
                f"SELECT id, status, agency FROM submissions WHERE due_at <= ? AND escalated_at IS NULL "
                f"AND status NOT IN ({', '.join('?' * len(FINAL_STATUSES))}) ORDER BY due_at, id",
                [at, *FINAL_STATUSES]).fetchall()
            escalated = 0
            for submission_id, status, agency in rows:
                # Another process on the same PostgreSQL store may be escalating the same rows: the first to
                # update a row takes it, the other waits for its commit and then finds it taken.
                if self.db.execute("UPDATE submissions SET escalated_at = ? WHERE id = ? AND escalated_at IS NULL",
                                   [at, submission_id]).rowcount != 1:
                    continue
                self._history(submission_id, at, "escalate", status=status, detail=agency)
                self._quiet_update(submission_id, at)
                escalated += 1
        return escalated

    def _tell_same_answer(self, ref: str, now: str) -> bool:
        """Queue for `ref`'s gateway an update of its own status and note that asks its phone to be told."""
        cursor = self.db.execute(
            "INSERT INTO updates (submission_id, gateway_id, ref, status, note, at, notice) "
            "SELECT id, gateway_id, ref, status, note, ?, ? FROM submissions WHERE ref = ?", [now, SAME_ANSWER, ref])
        return cursor.rowcount == 1

    def updates(self, gateway_id: str, since: int, limit: int | None = 500) -> list[dict]:
        """Status changes of `gateway_id`'s submissions after cursor `since`, oldest first (all when `limit` is None).

        Each also carries the submission's `agency`, `due_at` and `overdue` as they are now.
        """
        now = stamp(self.clock())
        rows = self.db.execute(
            "SELECT u.seq, u.submission_id, u.ref, u.status, u.note, u.at, u.notice, s.agency, s.due_at, "
            "s.status FROM updates u LEFT JOIN submissions s ON s.id = u.submission_id "
            "WHERE u.gateway_id = ? AND u.seq > ? ORDER BY u.seq LIMIT ?",
            # No limit is LIMIT -1 to SQLite and LIMIT NULL to PostgreSQL (which refuses a negative one).
            [gateway_id, since, (None if self.postgres else -1) if limit is None else limit]).fetchall()
        return [{**dict(zip(("seq", "id", "ref", "status", "note", "at", "notice", "agency", "due_at"), row)),
                 "overdue": _overdue(row[8], row[9], now)} for row in rows]

    def acks(self, gateway_id: str) -> list[str]:
        """Ids of every submission this gateway delivered: what it may mark synced."""
        rows = self.db.execute("SELECT id FROM submissions WHERE gateway_id = ? ORDER BY id", [gateway_id])
        return [row[0] for row in rows.fetchall()]

    # -- "is it fixed?" -------------------------------------------------------------

    def feedback_acks(self, gateway_id: str) -> list[str]:
        """The ids of every answer to "is it fixed?" recorded from `gateway_id`, whatever became of it."""
        return [row[0] for row in self.db.execute("SELECT id FROM feedback WHERE gateway_id = ? ORDER BY id",
                                                  [gateway_id])]

    def record_feedback(self, gateway_id: str, items: list) -> list[dict]:
        """Villagers' answers to "is it fixed?" from `gateway_id` (`protocol.FEEDBACK`); answer each with its id
        and result (`protocol.FEEDBACK_RESULTS`).

        The first answer about a submission counts (`accepted`); another, or
        the same one sent again, is a `duplicate`. One given more than
        `rating_days` after the resolution, or about a submission not
        resolved, is `late`: kept in the history (`late-feedback`), not
        counted. "Fixed" sets `fixed` and the rating; "not fixed" sets the
        status back to `in_progress` (`reopened` one more), with the
        villager's words in the history and a quiet update to the gateway.
        """
        results = []
        now = self.clock()
        with self.transaction():
            for item in items:
                item_id = item.get("id") if isinstance(item, dict) else None
                problem = _check_feedback(item)
                if problem:
                    results.append({"id": item_id, "result": "rejected", "reason": problem})
                    self._answered(item_id, None, gateway_id, "rejected", stamp(now))
                    continue
                results.append({"id": item_id, "result": self._feedback(gateway_id, item, now)})
        return results

    def _answered(self, item_id, submission_id: str | None, gateway_id: str, result: str, at: str) -> None:
        """Remember an answer that counts for nothing (unknown, malformed) by its id, so that the gateway's
        answer file acknowledges it too (`feedback_acks`) and it is not carried again and again."""
        if isinstance(item_id, str) and 0 < len(item_id) <= MAX_FEEDBACK_ID:
            self.db.execute("INSERT OR IGNORE INTO feedback (id, submission_id, gateway_id, result, at) "
                            "VALUES (?, ?, ?, ?, ?)", [item_id, submission_id, gateway_id, result, at])

    def _feedback(self, gateway_id: str, item: dict, now: dt.datetime) -> str:
        """Record one checked answer; its result."""
        if self.db.execute("SELECT 1 FROM feedback WHERE id = ?", [item["id"]]).fetchone():
            return "duplicate"
        row = self.db.execute("SELECT id, status, resolved_at, rated_at FROM submissions WHERE id = ? AND ref = ? "
                              "AND gateway_id = ?", [item["submission_id"], item["ref"], gateway_id]).fetchone()
        if row is None:
            self._answered(item["id"], None, gateway_id, "unknown", stamp(now))
            return "unknown"
        submission_id, status, resolved_at, rated_at = row
        at = stamp(now)
        answered = min(utc_stamp(item["at"]), at)
        if rated_at:
            result = "duplicate"
        elif not resolved_at or answered > stamp(dt.datetime.fromisoformat(resolved_at)
                                                  + dt.timedelta(days=self.rating_days)):
            result = "late"
        else:
            result = "accepted"
        self.db.execute("INSERT INTO feedback (id, submission_id, gateway_id, result, at) VALUES (?, ?, ?, ?, ?)",
                        [item["id"], submission_id, gateway_id, result, at])
        if result == "duplicate":
            return result
        words = " ".join(str(item.get("words") or "").split())[:MAX_WORDS] or None
        fixed, rating = bool(item["fixed"]), item.get("rating")
        if result == "accepted":
            self.db.execute("UPDATE submissions SET fixed = ?, rating = ?, rated_at = ? WHERE id = ?",
                            [int(fixed), rating, answered, submission_id])
            if not fixed:
                self._move(submission_id, status, "in_progress", at)
                self.db.execute("UPDATE submissions SET reopened = reopened + 1 WHERE id = ?", [submission_id])
                status = "in_progress"
                self._quiet_update(submission_id, at)
        # The villager's own words may name someone: sealed like every answer they typed.
        self._history(submission_id, at, "feedback" if result == "accepted" else "late-feedback", status=status,
                      note=self.sealer.seal(words) if words else None, who=VILLAGER,
                      detail="fixed" if fixed else "not fixed", rating=rating)
        return result

    # -- retention ----------------------------------------------------------------

    def purge_personal(self, older_than: dt.timedelta) -> int:
        """Erase what villagers told in submissions whose status has been final (`FINAL_STATUSES`) and
        unchanged for `older_than`; return how many were erased now.

        What stays: reference, service, channel, language, gateway, status, the
        staff's note and review reason, the dates and the place's keyed digest,
        so lists, counts and Open311 still show the submission; its claims stay
        digests, so a NIK still registers once. Answers and phone become sealed
        empty values and the sealed place goes, once: `purged_at` records when.
        On SQLite the freed bytes are zeroed (`secure_delete`) and the WAL is
        emptied, so the erased values do not linger in the files either.
        PostgreSQL has neither: an UPDATE leaves the old row version behind
        until VACUUM frees its space, and the write-ahead log keeps it until
        the segment is recycled. So after erasing, a plain VACUUM of the two
        tables (it takes no lock that stops readers or writers) frees the old
        versions at once instead of whenever autovacuum comes; the bytes are
        then overwritten as the space is reused. What lingers until then is
        only ever sealed: answers, phone, place and the villager's words are
        stored sealed, never in clear, so an old version opens with the key
        file alone, as the live row would have.
        """
        now = self.clock()
        if not self.postgres:
            self.db.execute("PRAGMA secure_delete = ON")
        with self.transaction():
            erased = self.db.execute(
                f"UPDATE submissions SET answers = ?, phone = ?, village = '', purged_at = ? WHERE purged_at IS NULL "
                f"AND status IN ({', '.join('?' * len(FINAL_STATUSES))}) AND updated_at < ?",
                [self.sealer.seal("{}"), self.sealer.seal(""), stamp(now), *FINAL_STATUSES,
                 stamp(now - older_than)]).rowcount
            self.db.execute(f"UPDATE history SET note = NULL WHERE kind IN ({', '.join('?' * len(VILLAGER_KINDS))}) "
                            f"AND submission_id IN (SELECT id FROM submissions WHERE purged_at = ?)",
                            [*VILLAGER_KINDS, stamp(now)])
        if erased and self.postgres:
            if not self.db.conn.in_transaction:  # VACUUM runs outside a transaction, or not at all
                self.db.execute("VACUUM submissions, history")
        elif erased:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return erased

    # -- reading ------------------------------------------------------------------

    def submission(self, ref: str) -> dict | None:
        rows = list(self.db["submissions"].rows_where("ref = ?", [ref]))
        return self._open(rows[0]) if rows else None

    def submission_page(self, ref: str) -> dict | None:
        """One submission (its reference in any case) opened, with `overdue` and its `history`, oldest first."""
        row = self.submission(ref.strip().upper())
        if row is None:
            return None
        return {**row, "history": self.history(row["id"])}

    def history(self, submission_id: str, after: str | None = None) -> list[dict]:
        """A submission's history rows (`HISTORY_KINDS`), oldest first; those later than `after` when given."""
        cursor = self.db.execute("SELECT id, at, kind, status, note, who, detail, rating FROM history "
                                 "WHERE submission_id = ? AND at > ? ORDER BY id", [submission_id, after or ""])
        columns = [column[0] for column in cursor.description]
        rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
        for row in rows:
            if row["kind"] in VILLAGER_KINDS and row["note"]:
                row["note"] = self.sealer.open(row["note"])
        return rows

    def triage(self, *, service: str | None = None, status: str | None = None, village: str | None = None,
               gateway: str | None = None, agency: str | None = None, overdue: bool | None = None,
               since: str | None = None, until: str | None = None, changed_since: str | None = None,
               changed_until: str | None = None, ref: str | None = None, order: str = "newest",
               after: Cursor | None = None, limit: int = 50) -> tuple[list[dict], Cursor | None]:
        """One page of the office's queue and where the next one starts (None on the last page).

        Filters, all optional and combined: `service`, `status`, `village`
        (by its digest, whatever its case and spacing), `gateway`, `agency`,
        `overdue` (True: only those past their deadline with a status not
        final; False: only the others), `since` <= created_at < `until` and
        `changed_since` <= updated_at < `changed_until` (`stamp()`s), `ref`
        (a reference, or its start, in any case). `order` "newest" lists by
        created_at, newest first; "overdue" lists the overdue ones first, the
        longest overdue first, then the others newest first. `after` is the
        cursor an earlier page returned: rows that arrive meanwhile never
        shift a page. Rows are opened as `submissions()`'s, with `overdue`.
        ValueError for an unknown order, a malformed reference or cursor.
        """
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}")
        now = stamp(self.clock())
        where, args = self._triage_filters(service, status, village, gateway, agency, since, until, changed_since,
                                           changed_until, ref)
        if order == "newest":
            rows, more = self._keyset(where, args, _late(overdue, now), after, limit)
            return [self._open_triage(row, now) for row in rows], more
        return self._by_overdue(where, args, overdue, after, limit, now)

    def _triage_filters(self, service, status, village, gateway, agency, since, until, changed_since,
                        changed_until, ref) -> tuple[list[str], list]:
        filters = {"service = ?": service, "status = ?": status, "gateway_id = ?": gateway, "agency = ?": agency,
                   "village_digest = ?": self.village_digest(village) if village else None,
                   "created_at >= ?": since, "created_at < ?": until, "updated_at >= ?": changed_since,
                   "updated_at < ?": changed_until}
        where = [clause for clause, value in filters.items() if value]
        args = [value for value in filters.values() if value]
        if ref:
            start = ref.strip().upper()
            if not re.fullmatch(r"[0-9A-Z]{1,8}", start):
                raise ValueError("a reference is 1 to 8 letters and digits")
            where.append("ref >= ? AND ref < ?")
            args.extend([start, start + "~"])
        return where, args

    def _keyset(self, where: list[str], args: list, late: tuple[str, list] | None, after: Cursor | None,
                limit: int) -> tuple[list[dict], Cursor | None]:
        """Newest first (created_at, id), after `after`, with the overdue condition `late` when given."""
        where, args = list(where), list(args)
        if late:
            where.append(late[0])
            args.extend(late[1])
        if after:
            if len(after) != 2:
                raise ValueError("not a cursor of this order")
            where.append("(created_at, id) < (?, ?)")
            args.extend(after)
        rows = self._select(where, args, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1]["created_at"], rows[-1]["id"]) if more else None

    def _by_overdue(self, where: list[str], args: list, overdue: bool | None, after: Cursor | None, limit: int,
                    now: str) -> tuple[list[dict], Cursor | None]:
        """The overdue ones by deadline, oldest first, then (unless `overdue` asks only for those) the others
        newest first. The cursor keeps the `now` of the first page, so that the two parts never shift."""
        phase = "late"
        if after:
            if len(after) != 4 or after[0] not in ("late", "rest"):
                raise ValueError("not a cursor of this order")
            phase, now = after[0], utc_stamp(after[1])
        rows: list[dict] = []
        if phase == "late" and overdue is not False:
            condition, values = _late(True, now)
            late_where, late_args = [*where, condition], [*args, *values]
            if after:
                late_where.append("(due_at, id) > (?, ?)")
                late_args.extend(after[2:])
            cursor = self.db.execute(f"SELECT * FROM submissions WHERE {' AND '.join(late_where)} "
                                     f"ORDER BY due_at, id LIMIT ?", [*late_args, limit + 1])
            columns = [column[0] for column in cursor.description]
            rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
            if len(rows) > limit:
                rows = rows[:limit]
                return [self._open_triage(r, now) for r in rows], ("late", now, rows[-1]["due_at"], rows[-1]["id"])
            after = None
        opened = [self._open_triage(r, now) for r in rows]
        if overdue is True:
            return opened, None
        rest_after = after[2:] if after and after[2] else None
        if len(rows) == limit:  # the overdue ones filled the page: the others start on the next one, if any
            others, _ = self._keyset(where, args, _late(False, now), rest_after, 1)
            return opened, ("rest", now, "", "") if others else None
        rest, more = self._keyset(where, args, _late(False, now), rest_after, limit - len(rows))
        return opened + [self._open_triage(r, now) for r in rest], ("rest", now, *more) if more else None

    def _open_triage(self, row: dict, now: str) -> dict:
        """`row` opened, `overdue` as at `now` (the list's own moment)."""
        return {**self._open(row), "overdue": _overdue(row["due_at"], row["status"], now)}

    def submissions(self, *, status: str | None = None, service: str | None = None, village: str | None = None,
                    since: str | None = None, after: Key | None = None,
                    limit: int = 100) -> tuple[list[dict], Key | None]:
        """One page of submissions, newest first (by created_at, then id), and where the next page starts.

        `village` matches regardless of case and spacing (by its digest); `since` (a `stamp()`) keeps
        those updated at or after it; `after` continues a list where an
        earlier page stopped (the key it returned), so rows that arrive in
        between never shift a page. The key is None on the last page.
        """
        filters = {"status = ?": status, "service = ?": service,
                   "village_digest = ?": self.village_digest(village) if village else None, "updated_at >= ?": since}
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

        For Open311, which shows neither phone nor `village`: those stay sealed (None), unopened.
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
        return [self._open(row, personal=False) for row in self._select(where, args, limit)]

    def _select(self, where: list[str], args: list, limit: int) -> list[dict]:
        """Sealed rows matching every condition in `where`, newest first, at most `limit`."""
        sql = "SELECT * FROM submissions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        cursor = self.db.execute(f"{sql} ORDER BY {NEWEST_FIRST} LIMIT ?", [*args, limit])
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def _open(self, row: dict, personal: bool = True) -> dict:
        """`row` with its answers opened, and unless `personal` is false its phone and place too (else None);
        with `overdue` (see `triage`)."""
        row = dict(row)
        row["overdue"] = _overdue(row.get("due_at"), row["status"], stamp(self.clock()))
        # A NaN or Infinity stored before ingestion refused them reads as None: answers go out as JSON.
        row["answers"] = json.loads(self.sealer.open(row["answers"]), parse_constant=lambda _: None)
        row["phone"] = self.sealer.open(row["phone"]) if personal else None
        if not personal:
            row["village"] = None
        elif row.get("village"):
            row["village"] = self.sealer.open(row["village"])
        return row

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM submissions").fetchone()[0]

    def performance_rows(self, since: str, until: str, *, places: bool = True) -> list[dict]:
        """What service performance is computed from (`stats.py`), for the submissions created from `since`
        up to (not including) `until`: service, category, agency, created_at, status, due_at,
        first_resolved_at, reopened, fixed, rating, and `village`: with `places`, the place's name (one
        opened per digest, so places that differ only in case and spacing are one; its spaces tidied), else None.
        No answer and no phone is read."""
        cursor = self.db.execute(
            "SELECT service, category, agency, created_at, status, due_at, first_resolved_at, reopened, fixed, "
            "rating, village_digest, village FROM submissions WHERE created_at >= ? AND created_at < ?",
            [since, until])
        names: dict[str, str] = {}
        rows = []
        for *figures, digest, sealed in cursor.fetchall():
            if places and digest and sealed and digest not in names:
                names[digest] = " ".join(self.sealer.open(sealed).split())
            rows.append({**dict(zip(("service", "category", "agency", "created_at", "status", "due_at",
                                     "first_resolved_at", "reopened", "fixed", "rating"), figures)),
                         "village": names.get(digest) if places else None})
        return rows


_ROW = ("id", "gateway_id", "ref", "service", "channel", "answers", "phone", "language", "village", "village_digest",
        "status", "note", "created_at", "received_at", "updated_at", "review_of", "review_reason", "category",
        "agency", "due_at", "reopened")
"""The columns a new submission is written with (`CentralStore._row`)."""
_INSERT_ROW = f"INSERT INTO submissions ({', '.join(_ROW)}) VALUES ({', '.join('?' * len(_ROW))})"
IN_CHUNK = 500
"""The most values one `IN (...)` lookup of a batch carries (SQLite caps a statement's parameters)."""


def _gateway_lock(gateway_id: str) -> int:
    """The PostgreSQL advisory lock one gateway's batches are ingested under (a signed 64-bit key)."""
    return int.from_bytes(hashlib.blake2b(b"ingest:" + gateway_id.encode(), digest_size=8).digest(), "big",
                          signed=True)


def _best_holder(candidates: dict[str, tuple], submission_id: str, status_of: dict[str, str]) -> str | None:
    """The reference of the submission a claim is held by, of `candidates` (id -> (ref, received_at, status;
    None for one of this batch, whose status is in `status_of`)): not `submission_id` itself, one not in review
    first, then the earliest received, then by id (as `_claim` orders them)."""
    best = None
    for other, (ref, received_at, status) in candidates.items():
        if other == submission_id:
            continue
        key = ((status or status_of[other]) == "review", received_at, other)
        if best is None or key < best[0]:
            best = (key, ref)
    return best[1] if best else None


def _overdue(due_at: str | None, status: str | None, now: str) -> bool:
    """Whether a submission is overdue: its deadline passed while its status is not final."""
    return bool(due_at) and due_at <= now and status not in FINAL_STATUSES


def _late(overdue: bool | None, now: str) -> tuple[str, list] | None:
    """The SQL condition (and its arguments) for overdue submissions at `now` (`overdue` True), the others
    (False), or None for any."""
    if overdue is None:
        return None
    finals = ", ".join("?" * len(FINAL_STATUSES))
    condition = f"due_at <= ? AND status NOT IN ({finals})"
    if overdue:
        return condition, [now, *FINAL_STATUSES]
    return f"NOT ({condition} AND due_at IS NOT NULL)", [now, *FINAL_STATUSES]


def _prefixes() -> Iterator[str]:
    """Every possible reference prefix, in the order they are handed out."""
    for length in range(1, MAX_LENGTH - RANDOM_LENGTH + 1):
        for letters in itertools.product(PREFIX_ORDER, repeat=length):
            yield "".join(letters)


def _check_feedback(item) -> str | None:
    """Why a villager's answer (`protocol.FEEDBACK`) cannot be recorded, or None."""
    if not isinstance(item, dict):
        return "an answer must be an object"
    for name in ("id", "submission_id", "ref", "at"):
        if not isinstance(item.get(name), str) or not item[name]:
            return f"{name} must be a non-empty string"
    if not _ULID.match(item["id"]):
        return "id must be a ULID"
    if not isinstance(item.get("fixed"), bool):
        return "fixed must be true or false"
    rating = item.get("rating")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5):
        return "rating must be a whole number from 1 to 5, or null"
    if not isinstance(item.get("words") or "", str):
        return "words must be text"
    try:
        utc_stamp(item["at"])
    except ValueError:
        return "at must be an ISO 8601 time"
    return None


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
