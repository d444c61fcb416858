"""PostgreSQL for the stores, through asyncpg, behind the part of sqlite-utils' `Database` that they use.

The stores (`sync.store.Store`, `sync.central.store.CentralStore`) are
synchronous and run in a thread of their own (`sync.thread.StoreThread`), with
their SQL written once, in the dialect SQLite and PostgreSQL share. Opened on
a `postgresql://` address instead of a file, a store's `db` is a
`PgDatabase`: the same `execute`, `query`, `conn.in_transaction`, `commit`,
`rollback`, `executemany` and `db[table].insert/upsert/update/rows_where`,
run by asyncpg on an event loop private to the store's thread (asyncpg is
asynchronous; the store's thread waits for each statement, as it waits for
SQLite's).

What is translated on the way, once per statement text (the translation is
cached with the prepared statement):

- `?` placeholders become `$1, $2, ...` (outside quoted text);
- `INSERT OR IGNORE INTO` becomes `INSERT INTO ... ON CONFLICT DO NOTHING`;
- `BEGIN IMMEDIATE` becomes `BEGIN`: PostgreSQL locks rows, not the file;
- a parameter of another Python type than its column's is converted where
  SQLite would have taken it (an int for a text column, a bool for an
  integer one), since asyncpg refuses what SQLite stores as given.

What is not: a failed statement inside a PostgreSQL transaction aborts the
whole transaction until `ROLLBACK` or `ROLLBACK TO` a savepoint, where
SQLite lets the transaction go on. Store code therefore never catches a
constraint error to carry on in the same transaction; it asks first or uses
`ON CONFLICT`. Schemas are not translated either: each store keeps its
PostgreSQL schema steps beside its SQLite ones (`PG_MIGRATIONS`), with every
text column `COLLATE "C"`, so text sorts by code point as in SQLite
(stamps and ULIDs sort by time).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import re
import sqlite3
from typing import Any, Iterable, Iterator, Sequence

import asyncpg

from .errors import Deadlock

PREPARED_LIMIT = 512
"""Statements kept described per connection (their parameter types and columns, which saves a round trip each
time they run again), the least recently used dropped first: some are built for a list's length
(`IN (?, ?, ...)`), and the store runs for months. asyncpg prepares them unnamed, so the server keeps none."""


class IntegrityError(sqlite3.IntegrityError):
    """A broken unique, foreign-key, not-null or check constraint on PostgreSQL, raised as the subclass of
    SQLite's own that it is, so that one `except` (`sync.database.IntegrityError`) takes either."""


_UTILITY = re.compile(r"^\s*(CREATE|ALTER|DROP|DO|COMMENT|GRANT|TRUNCATE|LOCK|SET|VACUUM|ANALYZE)\b", re.I)
_TEXT_TYPES = {"text", "varchar", "bpchar", "name"}
_INTEGER_TYPES = {"int2", "int4", "int8"}
_FLOAT_TYPES = {"float4", "float8", "numeric"}


def translate(sql: str) -> str:
    """`sql` in SQLite's dialect (as the stores write it) for PostgreSQL; see the module's docstring."""
    out, number, quote = [], 0, ""
    for char in sql:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    text = "".join(out)
    if re.match(r"\s*INSERT\s+OR\s+IGNORE\s+INTO\b", text, re.I):
        text = re.sub(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", "INSERT INTO", text, count=1, flags=re.I)
        text = text.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    elif re.fullmatch(r"\s*BEGIN\s+(IMMEDIATE|EXCLUSIVE|DEFERRED)\s*", text, re.I):
        text = "BEGIN"
    return text


def _convert(value: Any, kind: str) -> Any:
    """`value` as asyncpg takes it for a parameter of PostgreSQL type `kind` (SQLite takes anything)."""
    if value is None:
        return None
    if kind in _TEXT_TYPES and not isinstance(value, str):
        if isinstance(value, (dt.datetime, dt.date)):
            return value.isoformat()
        return str(value) if not isinstance(value, bool) else str(int(value))
    if kind in _INTEGER_TYPES:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, str):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if kind in _FLOAT_TYPES and isinstance(value, (int, str)) and not isinstance(value, bool):
        return float(value)
    return value


class Cursor:
    """What `execute` returns: the rows (as tuples) and how many rows the statement changed."""

    def __init__(self, rows: list[tuple], rowcount: int, description: tuple = ()):
        self._rows = rows
        self._at = 0
        self.rowcount = rowcount
        self.description = description

    def fetchone(self) -> tuple | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[tuple]:
        rows, self._at = self._rows[self._at:], len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.fetchall())


def _count(status: str | None) -> int:
    """The number of rows a command status (`UPDATE 3`, `INSERT 0 1`) reports; -1 when it reports none."""
    if not status:
        return -1
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


class _Prepared:
    __slots__ = ("statement", "kinds", "names")

    def __init__(self, statement: asyncpg.prepared_stmt.PreparedStatement):
        self.statement = statement
        self.kinds = [parameter.name for parameter in statement.get_parameters()]
        self.names = tuple(attribute.name for attribute in statement.get_attributes())


class PgDatabase:
    """One asyncpg connection, driven from one thread, answering as a `sqlite_utils.Database` does.

    `conn` is the object itself, so that code written for sqlite3's connection
    (`db.conn.in_transaction`, `db.conn.commit()`) reads the same.
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, read_only: bool = False, application_name: str = "kentongan"):
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._aside: concurrent.futures.ThreadPoolExecutor | None = None
        self._settings = {"application_name": application_name}
        if read_only:
            self._settings["default_transaction_read_only"] = "on"
        self._prepared: collections.OrderedDict[str, _Prepared] = collections.OrderedDict()
        self._conn: asyncpg.Connection = self._connect()
        self._tables: dict[str, PgTable] = {}
        self.in_transaction = False

    @property
    def conn(self) -> "PgDatabase":
        return self

    def _connect(self) -> asyncpg.Connection:
        self._prepared.clear()
        return self._run(asyncpg.connect(self.url, server_settings=self._settings, statement_cache_size=0))

    def _alive(self) -> asyncpg.Connection:
        """The connection, opened again when the server closed it (a restart, a failover): the statement that
        met the closed one failed, and so did its transaction, but the store goes on without a restart."""
        if self._conn.is_closed():
            self.in_transaction = False
            self._conn = self._connect()
        return self._conn

    def _run(self, coroutine):
        try:
            if asyncio._get_running_loop() is None:  # the store's thread: the usual case
                return self._loop.run_until_complete(coroutine)
            # Called from a thread that runs an event loop (a test or a command reading the store directly):
            # the private loop runs in a thread of its own meanwhile, and this thread waits, as on SQLite.
            if self._aside is None:
                self._aside = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pg-aside")
            return self._aside.submit(self._loop.run_until_complete, coroutine).result()
        except asyncpg.IntegrityConstraintViolationError as error:
            raise IntegrityError(str(error)) from error
        except asyncpg.DeadlockDetectedError as error:
            raise Deadlock(str(error)) from error

    # -- statements --------------------------------------------------------

    def _prepare(self, sql: str) -> _Prepared:
        prepared = self._prepared.get(sql)
        if prepared is None:
            prepared = self._prepared[sql] = _Prepared(self._run(self._alive().prepare(translate(sql))))
            if len(self._prepared) > PREPARED_LIMIT:
                self._prepared.popitem(last=False)
        else:
            self._prepared.move_to_end(sql)
        return prepared

    def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> Cursor:
        """Run one statement; a statement without parameters may be several (a schema step)."""
        word = sql.lstrip()[:10].upper()
        if not self.in_transaction:
            self._alive()
        if word.startswith("BEGIN"):
            self._run(self._conn.execute("BEGIN"))
            self.in_transaction = True
            return Cursor([], -1)
        if word.startswith("COMMIT") or word.startswith("END"):
            self.commit()
            return Cursor([], -1)
        if word.startswith("ROLLBACK") and " TO " not in sql.upper():
            self.rollback()
            return Cursor([], -1)
        if not params and (_UTILITY.match(sql) or word.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))):
            return Cursor([], _count(self._run(self._conn.execute(translate(sql)))))
        if isinstance(params, dict):
            raise TypeError("named parameters are not supported on PostgreSQL; use ?")
        prepared = self._prepare(sql)
        args = [_convert(value, kind) for value, kind in zip(params, prepared.kinds)]
        records = self._run(prepared.statement.fetch(*args))
        return Cursor([tuple(record) for record in records], _count(prepared.statement.get_statusmsg()),
                      tuple((name,) for name in prepared.names))

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        rows = list(seq)
        if not rows:
            return
        prepared = self._prepare(sql)
        self._run(prepared.statement.executemany(
            [[_convert(value, kind) for value, kind in zip(row, prepared.kinds)] for row in rows]))

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict]:
        """The rows of a SELECT as dicts, as sqlite-utils' `query` gives them."""
        prepared = self._prepare(sql)
        args = [_convert(value, kind) for value, kind in zip(params, prepared.kinds)]
        for record in self._run(prepared.statement.fetch(*args)):
            yield dict(zip(prepared.names, record))

    def copy_records(self, table: str, columns: Sequence[str], records: list[tuple]) -> None:
        """Insert many rows at once with COPY (the fastest path in; no ON CONFLICT: rows known to be new)."""
        self._run(self._conn.copy_records_to_table(table, columns=list(columns), records=records))

    # -- transactions ------------------------------------------------------

    def commit(self) -> None:
        if self.in_transaction:
            try:
                self._run(self._conn.execute("COMMIT"))
            finally:
                self.in_transaction = False

    def rollback(self) -> None:
        if self.in_transaction and self._conn.is_closed():  # the server ended the transaction with the connection
            self.in_transaction = False
        if self.in_transaction:
            try:
                self._run(self._conn.execute("ROLLBACK"))
            finally:
                self.in_transaction = False

    def advisory_lock(self, key: int) -> None:
        """Wait for the transaction-scoped advisory lock `key` (released at COMMIT or ROLLBACK)."""
        self.execute("SELECT pg_advisory_xact_lock(?)", [key])

    # -- tables ------------------------------------------------------------

    def __getitem__(self, name: str) -> "PgTable":
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = PgTable(self, name)
        return table

    def table_names(self) -> list[str]:
        return [row[0] for row in self.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]

    def close(self) -> None:
        try:
            if not self._conn.is_closed():
                self._run(self._conn.close(timeout=5))
        finally:
            if self._aside is not None:
                self._aside.shutdown(wait=True)
            self._loop.close()


class PgTable:
    """The part of sqlite-utils' `Table` the stores use."""

    def __init__(self, db: PgDatabase, name: str):
        self.db = db
        self.name = name
        self._pks: list[str] | None = None

    @property
    def columns_dict(self) -> dict[str, str]:
        return {name: kind for name, kind in self.db.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position", [self.name])}

    @property
    def pks(self) -> list[str]:
        if self._pks is None:
            self._pks = [row[0] for row in self.db.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = to_regclass(?) AND i.indisprimary ORDER BY a.attnum", [self.name])]
        return self._pks

    def insert(self, row: dict, **_ignored) -> "PgTable":
        columns = list(row)
        self.db.execute(f"INSERT INTO {self.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                        [row[column] for column in columns])
        return self

    def upsert(self, row: dict, pk: str | Sequence[str] | None = None, **_ignored) -> "PgTable":
        keys = [pk] if isinstance(pk, str) else list(pk or self.pks)
        columns = list(row)
        changes = [column for column in columns if column not in keys]
        action = ("DO UPDATE SET " + ", ".join(f"{column} = excluded.{column}" for column in changes)
                  if changes else "DO NOTHING")
        self.db.execute(f"INSERT INTO {self.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                        f"ON CONFLICT ({', '.join(keys)}) {action}", [row[column] for column in columns])
        return self

    def update(self, pk_values: Any, updates: dict | None = None, **_ignored) -> "PgTable":
        if not updates:
            return self
        values = list(pk_values) if isinstance(pk_values, (list, tuple)) else [pk_values]
        where = " AND ".join(f"{key} = ?" for key in self.pks)
        columns = list(updates)
        self.db.execute(f"UPDATE {self.name} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {where}",
                        [updates[c] for c in columns] + values)
        return self

    def rows_where(self, where: str | None = None, where_args: Sequence[Any] = (), order_by: str | None = None,
                   select: str = "*", limit: int | None = None, offset: int | None = None) -> Iterator[dict]:
        sql = f"SELECT {select} FROM {self.name}"
        if where:
            sql += f" WHERE {where}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if offset is not None:
            sql += f" OFFSET {int(offset)}"
        return self.db.query(sql, list(where_args))

    def get(self, pk_values: Any) -> dict:
        values = list(pk_values) if isinstance(pk_values, (list, tuple)) else [pk_values]
        rows = list(self.rows_where(" AND ".join(f"{key} = ?" for key in self.pks), values))
        if not rows:
            raise KeyError(pk_values)
        return rows[0]

    def count_where(self, where: str | None = None, where_args: Sequence[Any] = ()) -> int:
        sql = f"SELECT count(*) FROM {self.name}" + (f" WHERE {where}" if where else "")
        return self.db.execute(sql, list(where_args)).fetchone()[0]

    @property
    def count(self) -> int:
        return self.count_where()
