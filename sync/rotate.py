"""Key rotation: re-seal every sealed value of a store under a new sealing key, and a kill at any point
loses nothing.

The steps, each safe to interrupt:

1. A new sealing key goes into the key file in front of the old one
   (written atomically). From then on new values are sealed under it, and
   values under either key open.
2. Values sealed under an old key are re-sealed in small transactions. A
   kill loses one uncommitted batch; running the rotation again finds the
   key file still holding the old key and carries on where it stopped.
3. When no value under an old key is left, the key file is written again
   without it (atomically): what it sealed can no longer be opened.

Every column of every table is searched, not a list of the sealed ones: a
sealed column added later can never be left behind under a key that is
about to be deleted. A value that looks sealed (`s1:...`) but does not open
under the key is left as it is: it is not one this key sealed.

The digest key is not rotated (see `sync.seal`).

No other process may seal with the old key meanwhile: a gateway serving
from the store would keep sealing under the key it read at start, and what
it sealed after step 3 could not be opened again. On a PostgreSQL store that means every gateway of
every machine sharing it is stopped; the rotation runs on one of them, and its new key file is then copied
to the others before they start again.
"""

from __future__ import annotations

from dataclasses import dataclass

from .database import Database
from .errors import KeyFileError
from .seal import Sealer, prefix, read_keys, write_keys

BATCH_SIZE = 500


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: values re-sealed, under which key, which keys went, whether it resumed one."""

    resealed: int
    generation: int
    removed: tuple[int, ...]
    resumed: bool
    unopened: int
    """Values that look sealed under an old key but do not open with it; left as they are."""


def rotate_key(database: Database, batch_size: int = BATCH_SIZE) -> Rotation:
    """Rotate the sealing key of `database`'s key file, or finish a rotation a kill interrupted."""
    key_file = database.sealer.key_file
    if key_file is None:
        raise KeyFileError("these keys were not read from a key file: there is nothing to rotate")
    keys = read_keys(key_file)
    resumed = bool(keys.old)
    if not resumed:
        keys = keys.rotated()
        write_keys(key_file, keys)
    database.sealer = Sealer(keys, key_file)
    resealed = unopened = 0
    for table, column in _columns(database):
        done, skipped = _reseal(database, table, column, keys.old, batch_size)
        resealed, unopened = resealed + done, unopened + skipped
    write_keys(key_file, keys.current_only())
    database.sealer = Sealer(keys.current_only(), key_file)
    return Rotation(resealed, keys.generation, keys.old, resumed, unopened)


def _columns(database: Database) -> list[tuple[str, str]]:
    if database.postgres:
        # Only text can hold a sealed value; the store's own tables, in its schema (search_path).
        return [(table, column) for table, column in database.db.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
            "AND c.data_type IN ('text', 'character varying') ORDER BY c.table_name, c.ordinal_position")]
    tables = [row[0] for row in database.db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return [(table, row[1]) for table in tables
            for row in database.db.execute(f"PRAGMA table_info({_quoted(table)})")]


def _reseal(database: Database, table: str, column: str, old: tuple[int, ...],
            batch_size: int) -> tuple[int, int]:
    """Re-seal the values of one column sealed under an `old` key, `batch_size` to a transaction;
    return how many were re-sealed and how many looked sealed but did not open."""
    # substr, not GLOB or LIKE: the one prefix test both databases have, case-sensitive on both.
    where = " OR ".join(f"substr({_quoted(column)}, 1, {len(prefix(generation))}) = '{prefix(generation)}'"
                        for generation in old)
    if database.postgres:
        # PostgreSQL has no rowid; a row's place (ctid) serves within one run, as nothing else writes meanwhile.
        # A re-sealed row moves to a new place, maybe further on, but no longer matches `where` there.
        select = (f"SELECT ctid::text, {_quoted(column)} FROM {_quoted(table)} "
                  f"WHERE ctid > CAST(CAST(? AS TEXT) AS tid) AND ({where}) ORDER BY ctid LIMIT ?")
        update = f"UPDATE {_quoted(table)} SET {_quoted(column)} = ? WHERE ctid = CAST(CAST(? AS TEXT) AS tid)"
        start = "(0,0)"
    else:
        select = (f"SELECT rowid, {_quoted(column)} FROM {_quoted(table)} WHERE rowid > ? AND ({where}) "
                  f"ORDER BY rowid LIMIT ?")
        update = f"UPDATE {_quoted(table)} SET {_quoted(column)} = ? WHERE rowid = ?"
        start = 0
    after, resealed, unopened = start, 0, 0
    while True:
        with database.transaction():
            rows = database.db.execute(select, [after, batch_size]).fetchall()
            for rowid, value in rows:
                try:
                    text = database.sealer.open(value)
                except KeyFileError:
                    unopened += 1
                    continue
                database.db.execute(update, [database.sealer.seal(text), rowid])
                resealed += 1
        if not rows:
            return resealed, unopened
        after = rows[-1][0]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
