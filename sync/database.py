"""What both stores share: one SQLite file in WAL mode through sqlite-utils (or a PostgreSQL database through
`sync.sql`), migrations, transactions."""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import sqlite_utils

from .errors import NoFreeReference, StoreError
from .reference import new_reference
from .seal import Sealer

if TYPE_CHECKING:
    from .sql import PgDatabase

REFERENCE_DRAWS = 20
"""References drawn before giving up; with 31**5 per prefix, a store this full needs a longer one."""

Migration = Callable[[sqlite_utils.Database], None]
PgMigration = Callable[["PgDatabase"], None]
IntegrityError = sqlite3.IntegrityError
"""A broken constraint, on either database: `sync.sql` raises its subclass for PostgreSQL's (where it also aborts
the transaction: see there)."""
PG_SCHEMES = ("postgresql://", "postgres://")
PG_VERSION_TABLE = "kentongan_schema"
"""Where a PostgreSQL store records how many of its schema steps have run (SQLite: `PRAGMA user_version`)."""
Clock = Callable[[], dt.datetime]
"""What a store reads as now: `utc_now`, or a clock a test moves."""


class TransactionLost(Exception):
    """SQLite rolled back the whole transaction while a savepoint was open: nothing of it is kept."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def stamp(when: dt.datetime) -> str:
    """How a store writes a moment: UTC ISO 8601 with milliseconds, so text order is time order."""
    if when.tzinfo is not dt.timezone.utc:  # the store's own clock gives UTC already: no conversion per row
        when = when.astimezone(dt.timezone.utc)
    return when.isoformat(timespec="milliseconds")


class Database:
    """A SQLite file with `synchronous=FULL` (a commit survives a power cut), or a PostgreSQL database (whose
    commits are durable by default), with its schema steps applied.

    Not thread-safe: give it one thread (`sync.thread.StoreThread`).
    """

    MIGRATIONS: list[Migration] = []
    """Schema steps in order; `PRAGMA user_version` records how many have run."""
    PG_MIGRATIONS: list[PgMigration] = []
    """The same schema for PostgreSQL, in steps of its own (`PG_VERSION_TABLE` records how many have run)."""
    KIND = "store"
    """What kind of store this is (`gateway`, `central`), as its PostgreSQL version table records it."""

    def __init__(self, location: str | Path, sealer: Sealer, clock: Callable[[], dt.datetime] = utc_now):
        """Open the SQLite file at `location`, or the PostgreSQL database when it is a `postgresql://` address."""
        self.sealer = sealer
        self.clock = clock
        if isinstance(location, str) and location.startswith(PG_SCHEMES):
            from .sql import PgDatabase  # asyncpg is loaded only by a store that uses it
            self.path = None
            self.url = str(location)
            self.db = PgDatabase(self.url)
            try:
                self._migrate_postgres()
            except BaseException:
                self.db.close()
                raise
            return
        self.path = Path(location)
        self.url = ""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=FULL")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, step in enumerate(self.MIGRATIONS[version:], version + 1):
            with self.transaction():
                step(self.db)
                self.db.execute(f"PRAGMA user_version={number}")

    @property
    def postgres(self) -> bool:
        return self.path is None

    def _migrate_postgres(self) -> None:
        """Run the PostgreSQL schema steps not yet run, in one transaction, one process at a time.

        The version table names the kind of store (`KIND`) that owns the
        schema: the gateway's and the central backend's stores have tables of
        the same names, so one opened where the other lives is refused with
        one line, instead of failing later on a column it lacks.
        """
        with self.transaction():
            self.db.advisory_lock(0x4B54_5343_4845)  # "KTSCHE": every kind of store takes this one
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {PG_VERSION_TABLE} "
                            f'(store TEXT COLLATE "C" PRIMARY KEY, version INTEGER NOT NULL)')
            rows = dict(self.db.execute(f"SELECT store, version FROM {PG_VERSION_TABLE}").fetchall())
            others = sorted(set(rows) - {self.KIND})
            if others:
                raise StoreError(f"this PostgreSQL schema holds the {others[0]} store; give the {self.KIND} store a "
                                 f"database or schema of its own (?search_path=... in its address)")
            if self.KIND not in rows:
                self.db.execute(f"INSERT INTO {PG_VERSION_TABLE} (store, version) VALUES (?, 0)", [self.KIND])
            version = rows.get(self.KIND, 0)
            for number, step in enumerate(self.PG_MIGRATIONS[version:], version + 1):
                step(self.db)
                self.db.execute(f"UPDATE {PG_VERSION_TABLE} SET version = ? WHERE store = ?", [number, self.KIND])

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator["Database"]:
        """One write transaction (`BEGIN IMMEDIATE`); nested calls join the outer one."""
        conn = self.db.conn
        if conn.in_transaction:
            yield self
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
            conn.commit()
        except BaseException:
            self.rolled_back()
            # A COMMIT can fail too (a deferred constraint, a full disk) and leave the transaction open.
            if conn.in_transaction:
                conn.rollback()
            raise

    @contextmanager
    def group_transaction(self) -> Iterator["Database"]:
        """`transaction()` for a group of calls, each in a savepoint of its own (`sync.thread.StoreThread`).

        SQLite keeps the page images a savepoint may have to restore in a
        sub-journal that spills to a temporary file past 64 KiB (a submitting
        hop alone touches more): strace showed three quarters of a group's
        writes going there, seven system calls a hop. Begun with `temp_store`
        at MEMORY, the transaction keeps it in memory: a copy, no system call.
        The setting is put back at once, so a query that sorts a million rows
        outside a group still sorts in a file, not in memory.
        """
        if self.postgres or self.db.conn.in_transaction:
            with self.transaction():
                yield self
            return
        self.db.execute("PRAGMA temp_store=MEMORY")  # read when the transaction begins
        try:
            with self.transaction():
                yield self
        finally:
            self.db.execute("PRAGMA temp_store=DEFAULT")

    @contextmanager
    def savepoint(self) -> Iterator["Database"]:
        """Part of the open transaction that is undone alone when it raises (the rest goes on to commit)."""
        conn = self.db.conn
        conn.execute("SAVEPOINT part")
        try:
            yield self
        except BaseException as error:
            self.rolled_back()
            if not conn.in_transaction:  # SQLite undid the whole transaction (a full disk, an I/O error)
                raise TransactionLost(str(error)) from error
            conn.execute("ROLLBACK TO part")
            conn.execute("RELEASE part")
            raise
        conn.execute("RELEASE part")

    def rolled_back(self) -> None:
        """Called as a transaction or a savepoint is undone: what a store keeps in memory of its rows may no
        longer be so."""

    @staticmethod
    def stamp(when: dt.datetime) -> str:
        return stamp(when)

    def phone_digest(self, phone: str) -> str:
        """The keyed digest a phone number is found by."""
        return self.sealer.digest("phone:" + phone)

    def free_reference(self, prefix: str) -> str:
        """A reference no submission uses yet: the one place references are drawn.

        Call it in the transaction that stores the submission, so that the
        reference is still free when the row goes in.
        """
        for _ in range(REFERENCE_DRAWS):
            ref = new_reference(prefix)
            if self.db.execute("SELECT 1 FROM submissions WHERE ref = ?", [ref]).fetchone() is None:
                return ref
        raise NoFreeReference(f"no free reference with prefix {prefix!r} after {REFERENCE_DRAWS} draws")
