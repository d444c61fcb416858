"""The gateway's local store: one SQLite file in WAL mode, through sqlite-utils; or, for several workers and
machines serving one short code, one PostgreSQL database they share (`gateway.database_url`, `sync.sql`).

Tables:

    submissions     one row per confirmed submission (ULID id, short reference,
                    service, sealed answers and phone, language, status, sync state)
    claims          unique answers in use (a voter's NIK), by keyed digest
    ussd_sessions   the state of each USSD session, its last input history and answer
    callers         each caller's chosen language, by keyed digest of the phone
    sms_pending     SMS reports waiting for their place, one sealed draft per phone (`pending.py`)
    status_history  every status and note a submission had, oldest first
    feedback        villagers' "is it fixed?" answers, one per submission, sealed words, until synced
    accounts, account_tokens, web_sessions, login_failures, audit
                    operators, their sessions and lock-outs, the append-only audit log (`accounts.py`)

Personal fields go through `Sealer` (sealed at rest, found by digest) and
nowhere else. Every write of a USSD turn happens in one `transaction()`, so
a submission and the session that confirms it are committed together, with
`synchronous=FULL`, before the gateway answers.

The store is synchronous and not thread-safe; the gateway gives it one
thread of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from urllib.parse import urlsplit
from typing import Callable

import sqlite_utils
from ulid import ULID

from . import accounts, outbox
from .accounts import Accounts
from .database import Clock, Database, stamp as _stamp, utc_now
from .errors import AlreadyClaimed
from .outbox import Outbox
from .pending import Pending
from .protocol import HOLD, HOLD_LIMIT, STATUSES
from .seal import Sealer

NO_PHONE = "-"
"""The phone of a submission entered at the kiosk for a walk-in villager who gave none: no number, so no
SMS goes to it (`gateway.turn`), yet not empty, since a sync item's phone must not be. Each such submission
is found by a digest of its own, so no two share a daily limit, a status lookup or a unique answer's claim."""
DATABASE_NAME = "gateway.db"
KEY_FILE_NAME = "gateway.key"


def _v1(db: sqlite_utils.Database) -> None:
    db["submissions"].create({
        "id": str, "ref": str, "service": str, "channel": str, "answers": str,
        "phone": str, "phone_hash": str, "language": str, "status": str,
        "sync_state": str, "session_id": str, "created_at": str, "updated_at": str,
    }, pk="id", not_null={"ref", "service", "channel", "answers", "phone", "phone_hash",
                          "language", "status", "sync_state", "created_at", "updated_at"})
    db["submissions"].create_index(["ref"], unique=True)
    db["submissions"].create_index(["phone_hash", "created_at"])
    db["submissions"].create_index(["sync_state"])
    db["claims"].create({"digest": str, "submission_id": str}, pk="digest", not_null={"submission_id"})
    db["ussd_sessions"].create({
        "id": str, "phone_hash": str, "service_code": str, "state": str, "history": str,
        "response": str, "done": int, "resumable": int, "created_at": str, "updated_at": str,
    }, pk="id", not_null={"phone_hash", "state", "history", "response", "created_at", "updated_at"})
    db["ussd_sessions"].create_index(["phone_hash", "resumable", "updated_at"])
    db["ussd_sessions"].create_index(["updated_at"])
    db["callers"].create({"phone_hash": str, "language": str, "updated_at": str}, pk="phone_hash")


def _v2(db: sqlite_utils.Database) -> None:
    outbox.create_table(db)
    db["sms_inbound"].create({"id": str, "phone_hash": str, "received_at": str}, pk="id",
                             not_null={"phone_hash", "received_at"})
    db["callers"].add_column("notices", int, not_null_default=1)


def _v3(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["submissions"].add_column("sync_reason", str)


def _v4(db: sqlite_utils.Database) -> None:
    """The staff's last note and when the status last changed (CEK shows both); the provider's
    `linkId` of the SMS an answer replies to, and the short code that SMS came to (a premium
    reply goes back from it); SMS reports waiting for their place."""
    db["submissions"].add_column("note", str)
    db["submissions"].add_column("status_at", str)
    db.execute("UPDATE submissions SET status_at = created_at")
    db["outbox"].add_column("link_id", str)
    db["outbox"].add_column("short_code", str)
    db["outbox"].create_index(["cause"])  # the replies to one incoming SMS, to link them back to it
    db["sms_pending"].create({
        "phone_hash": str, "draft": str, "language": str, "inbound_id": str,
        "created_at": str, "expires_at": str,
    }, pk="phone_hash", not_null={"draft", "language", "created_at", "expires_at"})
    db["sms_pending"].create_index(["expires_at"])


def _v5(db: sqlite_utils.Database) -> None:
    """When a submission's personal fields were erased (`purge_personal`): they are erased once."""
    db["submissions"].add_column("purged_at", str)
    db["submissions"].create_index(["sync_state", "purged_at", "created_at"])
    db["outbox"].create_index(["state", "updated_at"])  # final rows past sms.keep_days go


def _v6(db: sqlite_utils.Database) -> None:
    """Operator accounts, their sessions and lock-outs, and the append-only audit log (`accounts.py`)."""
    accounts.migrate(db)


def _v7(db: sqlite_utils.Database) -> None:
    """Each submission's history of statuses and notes, readable at the kiosk with no link; who entered a
    submission for a walk-in villager (`operator`, assisted entry)."""
    db["status_history"].create({"id": int, "submission_id": str, "status": str, "note": str, "at": str}, pk="id")
    db.execute("CREATE INDEX idx_status_history_submission ON status_history (submission_id, id)")
    db["submissions"].add_column("operator", str)
    # What is known of the past: the submission arrived, and is now where it is.
    db.execute("INSERT INTO status_history (submission_id, status, note, at) "
               "SELECT id, 'received', NULL, created_at FROM submissions")
    db.execute("INSERT INTO status_history (submission_id, status, note, at) "
               "SELECT id, status, note, status_at FROM submissions WHERE status != 'received' OR note IS NOT NULL")


def _v8(db: sqlite_utils.Database) -> None:
    """The kiosk's list of requests, newest first (keyset paging on created_at, id); where USSD callers give
    up: one row per session with the screens it reached, in order (`gateway/funnel.py`), no phone."""
    db["submissions"].create_index(["created_at", "id"])
    db["funnel_sessions"].create({"session_id": str, "day": str, "path": str, "last": str, "ended": int,
                                  "resumes": str, "updated_at": str}, pk="session_id",
                                 not_null={"day", "path", "last", "ended", "updated_at"})
    db["funnel_sessions"].create_index(["day"])


def _v9(db: sqlite_utils.Database) -> None:
    """Villagers' "is it fixed?" answers, one per submission (the first counts), kept until the central
    backend has them; the agency that holds each submission, its deadline and whether the central backend
    found it overdue, from its updates (CEK tells an overdue one who holds it now)."""
    db["feedback"].create({"id": str, "submission_id": str, "fixed": int, "rating": int, "words": str,
                           "channel": str, "created_at": str, "sync_state": str, "result": str}, pk="id",
                          not_null={"submission_id", "fixed", "words", "channel", "created_at", "sync_state"},
                          foreign_keys=[("submission_id", "submissions", "id")])
    db["feedback"].create_index(["submission_id"], unique=True)
    db["feedback"].create_index(["sync_state", "id"])
    db["submissions"].add_column("agency", str)
    db["submissions"].add_column("due_at", str)
    db["submissions"].add_column("overdue", int, not_null_default=0)


_SUBMISSION_KEYS = ("id", "ref", "service", "channel", "answers", "phone", "phone_hash", "language", "status",
                    "status_at", "sync_state", "session_id", "operator", "created_at", "updated_at")
_INSERT_SUBMISSION = (f"INSERT INTO submissions ({', '.join(_SUBMISSION_KEYS)}) "
                      f"VALUES ({', '.join('?' * len(_SUBMISSION_KEYS))})")
"""A new submission's row: one prepared statement, for it is on the hop's path."""

_STATUS_KEYS = ("ref", "service", "status", "created_at", "note", "status_at", "agency", "due_at", "overdue")
_STATUS_COLUMNS = ", ".join(_STATUS_KEYS)
"""What a caller may see of their own submission."""


FUNNEL_PATH_LIMIT = 4000
"""Characters of a session's path of screens past which only its last screen is kept (no flow is that deep)."""


def _v10(db: sqlite_utils.Database) -> None:
    """A USSD session's submission, found by the session: with the sessions in Redis, a hop retried after
    its COMMIT but before its session was written reuses the submission instead of storing another."""
    db.execute("CREATE INDEX idx_submissions_session_id ON submissions (session_id)")


_ONE_SUBMISSION_PER_SESSION = (
    "UPDATE submissions SET session_id = NULL WHERE session_id IS NOT NULL AND id > "
    "(SELECT min(s.id) FROM submissions s WHERE s.session_id = submissions.session_id)",
    "DROP INDEX idx_submissions_session_id",
    "CREATE UNIQUE INDEX idx_submissions_session_id ON submissions (session_id) WHERE session_id IS NOT NULL",
)
"""A session makes one submission at most (its submit screen ends it), and now the database holds to it:
two workers handed copies of one hop can no longer both store one. A store from before may hold such twins;
it still opens: every submission stays, the first keeps the session id and the later ones lose it (only a
retried hop looks a submission up by its session, and it must find one)."""


def _v11(db: sqlite_utils.Database) -> None:
    """One submission per USSD session (see `_ONE_SUBMISSION_PER_SESSION`)."""
    for statement in _ONE_SUBMISSION_PER_SESSION:
        db.execute(statement)


_LEANER_SESSIONS = (
    "ALTER TABLE ussd_sessions ADD COLUMN sealed {}",
    "DROP INDEX idx_ussd_sessions_phone_hash_resumable_updated_at",
    "CREATE INDEX idx_ussd_sessions_phone_hash ON ussd_sessions (phone_hash)",
)
"""What a hop writes of its session, made smaller:

- its state, history and answer sealed together in one value (`Store.save_session`): one nonce, one
  encryption and one encoding a hop instead of three of each. New writes leave the three columns of before
  empty; a session written before keeps them and is read from them until it expires;
- the caller's sessions found by the phone's digest alone: the index that also held `resumable` and
  `updated_at` moved on every hop (both change), one entry at a random place of it each time, where this one
  is written once per session. A caller has a handful of sessions at most, so finding the resumable one
  among them costs nothing."""


def _v12(db: sqlite_utils.Database) -> None:
    for statement in _LEANER_SESSIONS:
        db.execute(statement.format("TEXT"))


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10,
                                                             _v11, _v12]

_TEXT = 'TEXT COLLATE "C"'
PG_SCHEMA = f"""
CREATE TABLE submissions (
    id {_TEXT} PRIMARY KEY, ref {_TEXT} NOT NULL, service {_TEXT} NOT NULL, channel {_TEXT} NOT NULL,
    answers {_TEXT} NOT NULL, phone {_TEXT} NOT NULL, phone_hash {_TEXT} NOT NULL, language {_TEXT} NOT NULL,
    status {_TEXT} NOT NULL, sync_state {_TEXT} NOT NULL, session_id {_TEXT}, created_at {_TEXT} NOT NULL,
    updated_at {_TEXT} NOT NULL, sync_reason {_TEXT}, note {_TEXT}, status_at {_TEXT}, purged_at {_TEXT},
    operator {_TEXT}, agency {_TEXT}, due_at {_TEXT}, overdue INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX idx_submissions_ref ON submissions (ref);
CREATE INDEX idx_submissions_phone_hash_created_at ON submissions (phone_hash, created_at);
CREATE INDEX idx_submissions_sync_state ON submissions (sync_state);
CREATE INDEX idx_submissions_sync_state_purged_at_created_at ON submissions (sync_state, purged_at, created_at);
CREATE INDEX idx_submissions_created_at_id ON submissions (created_at, id);
CREATE INDEX idx_submissions_session_id ON submissions (session_id);
CREATE TABLE claims (digest {_TEXT} PRIMARY KEY, submission_id {_TEXT} NOT NULL);
CREATE TABLE ussd_sessions (
    id {_TEXT} PRIMARY KEY, phone_hash {_TEXT} NOT NULL, service_code {_TEXT}, state {_TEXT} NOT NULL,
    history {_TEXT} NOT NULL, response {_TEXT} NOT NULL, done INTEGER, resumable INTEGER,
    created_at {_TEXT} NOT NULL, updated_at {_TEXT} NOT NULL);
CREATE INDEX idx_ussd_sessions_phone_hash_resumable_updated_at ON ussd_sessions (phone_hash, resumable, updated_at);
CREATE INDEX idx_ussd_sessions_updated_at ON ussd_sessions (updated_at);
CREATE TABLE callers (
    phone_hash {_TEXT} PRIMARY KEY, language {_TEXT}, updated_at {_TEXT}, notices INTEGER NOT NULL DEFAULT 1);
CREATE TABLE outbox (
    id {_TEXT} PRIMARY KEY, phone {_TEXT} NOT NULL, phone_hash {_TEXT} NOT NULL, body {_TEXT} NOT NULL,
    kind {_TEXT} NOT NULL, auto INTEGER NOT NULL, cause {_TEXT}, state {_TEXT} NOT NULL, attempts INTEGER NOT NULL,
    send_id {_TEXT}, next_attempt_at {_TEXT} NOT NULL, expires_at {_TEXT} NOT NULL, provider_id {_TEXT},
    provider_status {_TEXT}, reason {_TEXT}, created_at {_TEXT} NOT NULL, updated_at {_TEXT} NOT NULL,
    link_id {_TEXT}, short_code {_TEXT});
CREATE INDEX idx_outbox_state_next_attempt_at ON outbox (state, next_attempt_at);
CREATE INDEX idx_outbox_provider_id ON outbox (provider_id);
CREATE INDEX idx_outbox_phone_hash_auto_created_at ON outbox (phone_hash, auto, created_at);
CREATE INDEX idx_outbox_cause ON outbox (cause);
CREATE INDEX idx_outbox_state_updated_at ON outbox (state, updated_at);
CREATE TABLE sms_inbound (id {_TEXT} PRIMARY KEY, phone_hash {_TEXT} NOT NULL, received_at {_TEXT} NOT NULL);
CREATE TABLE meta (key {_TEXT} PRIMARY KEY, value {_TEXT});
CREATE TABLE sms_pending (
    phone_hash {_TEXT} PRIMARY KEY, draft {_TEXT} NOT NULL, language {_TEXT} NOT NULL, inbound_id {_TEXT},
    created_at {_TEXT} NOT NULL, expires_at {_TEXT} NOT NULL);
CREATE INDEX idx_sms_pending_expires_at ON sms_pending (expires_at);
CREATE TABLE status_history (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, submission_id {_TEXT}, status {_TEXT}, note {_TEXT},
    at {_TEXT});
CREATE INDEX idx_status_history_submission ON status_history (submission_id, id);
CREATE TABLE funnel_sessions (
    session_id {_TEXT} PRIMARY KEY, day {_TEXT} NOT NULL, path {_TEXT} NOT NULL, last {_TEXT} NOT NULL,
    ended INTEGER NOT NULL, resumes {_TEXT}, updated_at {_TEXT} NOT NULL);
CREATE INDEX idx_funnel_sessions_day ON funnel_sessions (day);
CREATE TABLE feedback (
    id {_TEXT} PRIMARY KEY, submission_id {_TEXT} NOT NULL REFERENCES submissions (id), fixed INTEGER NOT NULL,
    rating INTEGER, words {_TEXT} NOT NULL, channel {_TEXT} NOT NULL, created_at {_TEXT} NOT NULL,
    sync_state {_TEXT} NOT NULL, result {_TEXT});
CREATE UNIQUE INDEX idx_feedback_submission_id ON feedback (submission_id);
CREATE INDEX idx_feedback_sync_state_id ON feedback (sync_state, id);
""" + accounts.PG_SCHEMA
"""The gateway's store on PostgreSQL: the tables and indexes of `MIGRATIONS` up to `_v10` (later steps follow
in `PG_MIGRATIONS`), every text column compared by code point as SQLite compares it."""


def _pg_v1(db) -> None:
    """The whole schema of its day at once: a PostgreSQL store then had no older data to carry forward."""
    db.execute(PG_SCHEMA)


def _pg_v2(db) -> None:
    """One submission per USSD session, as `_v11`."""
    for statement in _ONE_SUBMISSION_PER_SESSION:
        db.execute(statement)


def _pg_v3(db) -> None:
    """Leaner session rows, as `_v12`."""
    for statement in _LEANER_SESSIONS:
        db.execute(statement.format(_TEXT))


PG_MIGRATIONS = [_pg_v1, _pg_v2, _pg_v3]


DIGESTS_KEPT = 4096
"""Phone digests `Store.phone_digest` keeps: one HMAC per caller while their session lasts, not one per ask."""
SESSIONS_KEPT = 4096
"""USSD sessions under way a SQLite store keeps in memory as it last wrote them (`Store.session`)."""
SESSION_KEPT_SECONDS = 300.0
"""How long after its last write a session is read from memory: a network's USSD session lasts a few
minutes, and what callers typed (a NIK) is not kept in clear longer than it is needed."""


class Store(Database):
    """The local store of one gateway."""

    MIGRATIONS = MIGRATIONS
    PG_MIGRATIONS = PG_MIGRATIONS
    KIND = "gateway"

    def __init__(self, path: str | Path, sealer: Sealer, clock: Clock = utc_now):
        """The store in the SQLite file `path`, or in the PostgreSQL database when `path` is a
        `postgresql://` address."""
        self._digests: dict[str, str] = {}
        self._sessions: dict[str, tuple[str, str, float]] | None = {}
        super().__init__(path, sealer, clock)
        if self.postgres:
            self._sessions = None  # other processes write the same rows: always read them
        if not self.postgres:  # PostgreSQL always enforces foreign keys
            self.db.execute("PRAGMA foreign_keys=ON")
        self.outbox = Outbox(self)
        self.pending = Pending(self)
        self.accounts = Accounts(self.db, "gateway", clock)

    @classmethod
    def open(cls, data_dir: str | Path, clock: Clock = utc_now, database_url: str = "") -> "Store":
        """The store in `data_dir` (`gateway.db`, sealed with `gateway.key` beside it), or in the PostgreSQL
        database at `database_url` when one is given (`gateway.database_url`): sealed with `gateway.key` in
        `data_dir` all the same, so every machine sharing that database needs a copy of the same key file."""
        data_dir = Path(data_dir)
        return cls(database_url or data_dir / DATABASE_NAME, Sealer.from_key_file(data_dir / KEY_FILE_NAME), clock)

    @property
    def where(self) -> str:
        """Where the store lives, for a log line: its file, or its PostgreSQL database without the password."""
        if not self.postgres:
            return str(self.path)
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"

    # -- digests -----------------------------------------------------------

    def phone_digest(self, phone: str) -> str:
        """The keyed digest a phone number is found by. A turn asks for its caller's several times, and the
        hops of many sessions interleave: the digests of up to DIGESTS_KEPT numbers are kept, in memory only,
        all forgotten when that many were asked for: a number stays in memory until then (as in the
        callbacks' cache of parsed numbers, `gateway.callback.e164`)."""
        digest = self._digests.get(phone)
        if digest is None:
            if len(self._digests) >= DIGESTS_KEPT:
                self._digests.clear()  # cheaper than keeping an order; refilled by the hops that follow
            digest = self._digests[phone] = super().phone_digest(phone)
        return digest

    def _claim(self, service: str, answer: str, value: str) -> str:
        return self.sealer.digest(f"claim:{service}:{answer}:{value}")

    # -- USSD sessions -----------------------------------------------------

    def session(self, session_id: str) -> dict | None:
        """The stored session `session_id`: state, history, response, done, phone_hash; or None.

        On SQLite, where this process is the one writer, a session under way is
        read from memory as this store last wrote it (the next hop of a session
        comes seconds after the last): no query and no opening of its sealed
        value on most hops. What is kept there is only what the row holds once
        committed: a transaction or savepoint undone forgets it all. A session
        last written SESSION_KEPT_SECONDS ago or more is read from the row.
        """
        kept = self._sessions.get(session_id) if self._sessions is not None else None
        if kept is not None and time.monotonic() - kept[2] < SESSION_KEPT_SECONDS:
            return {**json.loads(kept[0]), "done": False, "phone_hash": kept[1]}
        row = self.db.execute(
            "SELECT sealed, state, history, response, done, phone_hash FROM ussd_sessions WHERE id = ?",
            [session_id]).fetchone()
        if row is None:
            return None
        return {**self._opened_session(row), "done": bool(row[4]), "phone_hash": row[5]}

    def _opened_session(self, row: tuple) -> dict:
        """State, history and response of a session row that begins `sealed, state, history, response`."""
        if row[0] is not None and row[1] == "":
            return json.loads(self.sealer.open(row[0]))
        # Written before they were sealed together (`_v12`), each on its own; or by a worker still running the
        # code of before on a PostgreSQL store since migrated (it leaves `sealed` as it was): the three columns.
        return {"state": json.loads(self.sealer.open(row[1])), "history": self.sealer.open(row[2]),
                "response": self.sealer.open(row[3])}

    def save_session(self, session_id: str, *, phone: str, service_code: str, state: dict,
                     history: str, response: str, done: bool, resumable: bool) -> None:
        """Record the session after a turn: its state, the history answered, the answer given (sealed
        together: see `_LEANER_SESSIONS`)."""
        now = _stamp(self.clock())
        opened = json.dumps({"state": state, "history": history, "response": response}, separators=(",", ":"))
        sealed = self.sealer.seal(opened)
        self.db.execute(
            """INSERT INTO ussd_sessions
                 (id, phone_hash, service_code, sealed, state, history, response, done, resumable,
                  created_at, updated_at)
               VALUES (?, ?, ?, ?, '', '', '', ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed, state = '', history = '', response = '',
                 done = excluded.done, resumable = excluded.resumable, updated_at = excluded.updated_at""",
            [session_id, self.phone_digest(phone), service_code, sealed, int(done), int(resumable and not done),
             now, now],
        )
        if self._sessions is not None:
            self._sessions.pop(session_id, None)  # kept in the order of their last write: the oldest go first
            if not done:  # an ended session is read again only by a retry of its last hop
                if len(self._sessions) >= SESSIONS_KEPT:
                    del self._sessions[next(iter(self._sessions))]
                self._sessions[session_id] = (opened, self.phone_digest(phone), time.monotonic())

    def rolled_back(self) -> None:
        """What the cache of sessions holds may have been undone: it starts afresh."""
        if self._sessions:
            self._sessions.clear()

    def lock_session(self, session_id: str) -> None:
        """Wait until no other process's transaction is at USSD session `session_id`, and keep it ours until this
        transaction ends: on a PostgreSQL store shared by several workers, two copies of one hop (the network
        retrying a slow one, sent elsewhere) then run one after the other, and the second sees what the first
        stored. A SQLite store has one writer at a time already, so nothing is done there."""
        if self.postgres:
            self.db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [session_id])

    def resumable_session(self, phone: str, within: dt.timedelta, exclude: str) -> tuple[str, dict] | None:
        """The caller's latest unfinished session touched within `within`: (id, state), or None."""
        since = _stamp(self.clock() - within)
        row = self.db.execute(
            """SELECT id, sealed, state, history, response FROM ussd_sessions
               WHERE phone_hash = ? AND resumable = 1 AND updated_at >= ? AND id != ?
               ORDER BY updated_at DESC LIMIT 1""",
            [self.phone_digest(phone), since, exclude],
        ).fetchone()
        if row is None:
            return None
        return row[0], self._opened_session(row[1:])["state"]

    def forget_resumable(self, phone: str, exclude: str) -> None:
        """No other session of this caller is to be offered again."""
        self.db.execute("UPDATE ussd_sessions SET resumable = 0 WHERE phone_hash = ? AND id != ?",
                        [self.phone_digest(phone), exclude])

    def purge_sessions(self, older_than: dt.timedelta) -> int:
        """Delete sessions untouched for `older_than`; return how many went."""
        with self.transaction():
            cursor = self.db.execute("DELETE FROM ussd_sessions WHERE updated_at < ?",
                                     [_stamp(self.clock() - older_than)])
        if cursor.rowcount and self._sessions:
            self._sessions.clear()
        return cursor.rowcount

    def purge_inbound(self, older_than: dt.timedelta) -> int:
        """Forget the ids of incoming SMS older than `older_than` (no provider redelivers that late),
        and SMS reports that waited for their place in vain (see `pending.py`); return how many went."""
        with self.transaction():
            cursor = self.db.execute("DELETE FROM sms_inbound WHERE received_at < ?",
                                     [_stamp(self.clock() - older_than)])
            return cursor.rowcount + self.pending.purge()

    def purge_personal(self, older_than: dt.timedelta) -> int:
        """Erase what villagers told in submissions made before `older_than` ago that the central
        backend has acknowledged; return how many were erased.

        What stays: reference, service, channel, language, status, the staff's
        note and the dates, so the operator's counts and a villager's status
        check still work (the phone is kept only as its keyed digest, which
        CEK and the USSD status look up; the claim of a unique answer is a
        keyed digest too, and stays so a NIK still registers once). A
        submission not yet acknowledged is never erased: the centre must get
        it whole first.
        """
        now = self.clock()
        with self.transaction():
            cursor = self.db.execute(
                "UPDATE submissions SET answers = ?, phone = ?, session_id = NULL, purged_at = ? "
                "WHERE sync_state = 'synced' AND purged_at IS NULL AND created_at < ?",
                [self.sealer.seal("{}"), self.sealer.seal(""), _stamp(now), _stamp(now - older_than)])
            # What the villager said of the fix goes with the rest of what they told.
            self.db.execute("UPDATE feedback SET words = ? WHERE submission_id IN "
                            "(SELECT id FROM submissions WHERE purged_at = ?)", [self.sealer.seal(""), _stamp(now)])
        return cursor.rowcount

    def housekeep(self, *, sessions: dt.timedelta, inbound: dt.timedelta, personal: dt.timedelta,
                  final_sms: dt.timedelta) -> dict[str, int]:
        """One round of deleting what is kept no longer: how many of each went.

        USSD sessions untouched for `sessions`; ids of incoming SMS older than
        `inbound` (and SMS reports that waited for their place in vain);
        personal fields of acknowledged submissions older than `personal`;
        outbox rows in a final state older than `final_sms`.
        """
        return {"ussd_sessions": self.purge_sessions(sessions), "sms_ids": self.purge_inbound(inbound),
                "submissions_erased": self.purge_personal(personal), "sms": self.outbox.purge(final_sms)}

    # -- callers -----------------------------------------------------------

    def language(self, phone: str) -> str | None:
        """The language this phone chose, if it ever chose one."""
        row = self.db.execute("SELECT language FROM callers WHERE phone_hash = ?",
                              [self.phone_digest(phone)]).fetchone()
        return row[0] if row else None

    def set_language(self, phone: str, language: str) -> None:
        self.db.execute("INSERT INTO callers (phone_hash, language, updated_at) VALUES (?, ?, ?) "
                        "ON CONFLICT(phone_hash) DO UPDATE SET language = excluded.language, "
                        "updated_at = excluded.updated_at",
                        [self.phone_digest(phone), language, _stamp(self.clock())])

    def wants_notices(self, phone: str) -> bool:
        """False once the phone said STOP (and not START since)."""
        row = self.db.execute("SELECT notices FROM callers WHERE phone_hash = ?",
                              [self.phone_digest(phone)]).fetchone()
        return row is None or bool(row[0])

    def set_notices(self, phone: str, wanted: bool) -> None:
        self.db["callers"].upsert({"phone_hash": self.phone_digest(phone), "notices": int(wanted),
                                   "updated_at": _stamp(self.clock())}, pk="phone_hash")

    def record_inbound(self, message_id: str, phone: str) -> bool:
        """Remember an incoming SMS by the provider's id; False when it was seen before."""
        # Asked with ON CONFLICT, not caught: a broken constraint aborts a PostgreSQL transaction, and two
        # workers handed the same redelivered SMS at once must see one True and one False.
        cursor = self.db.execute("INSERT OR IGNORE INTO sms_inbound (id, phone_hash, received_at) VALUES (?, ?, ?)",
                                 [message_id, self.phone_digest(phone), _stamp(self.clock())])
        return cursor.rowcount == 1

    # -- submissions -------------------------------------------------------

    def add_submission(self, submission: dict, *, phone: str, channel: str,
                       session_id: str | None = None, operator: str | None = None) -> dict:
        """Store a new submission (`service`, `ref`, `answers`, `language`, `unique`); `operator` is the
        kiosk account that entered it for a walk-in villager (whose `phone` may be `NO_PHONE`).

        Draw `ref` with `free_reference` in the same transaction. Raises
        `AlreadyClaimed` when a `unique` answer is claimed by this same phone;
        nothing is kept then. A unique answer claimed by another phone is
        stored without a claim and not refused: telling a caller that a
        neighbour's NIK is registered would let anyone find out, so the
        central backend, which sees every gateway, holds the duplicate for
        staff review instead.
        """
        now = _stamp(self.clock())
        submission_id = str(ULID())
        row = {
            "id": submission_id,
            "ref": submission["ref"],
            "service": submission["service"],
            "channel": channel,
            "answers": self.sealer.seal(json.dumps(submission["answers"], ensure_ascii=False)),
            "phone": self.sealer.seal(phone),
            "phone_hash": (self.phone_digest(phone) if phone != NO_PHONE
                           else self.sealer.digest(f"no-phone:{submission_id}")),
            "language": submission["language"],
            "status": "received",
            "status_at": now,
            "sync_state": "pending",
            "session_id": session_id,
            "operator": operator,
            "created_at": now,
            "updated_at": now,
        }
        with self.transaction():
            claims = []
            for answer, value in sorted(submission.get("unique", {}).items()):
                digest = self._claim(row["service"], answer, value)
                holder = self._claimant(digest)
                if holder == row["phone_hash"]:
                    raise AlreadyClaimed(row["service"])
                if holder is None:
                    claims.append(digest)
            self.db.execute(_INSERT_SUBMISSION, [row[key] for key in _SUBMISSION_KEYS])
            for digest in claims:
                # Another process sharing the store may have claimed it since we looked: the claim then
                # waits for that one's commit, and is told apart like the one found above.
                if self.db.execute("INSERT OR IGNORE INTO claims (digest, submission_id) VALUES (?, ?)",
                                   [digest, row["id"]]).rowcount != 1 \
                        and self._claimant(digest) == row["phone_hash"]:
                    raise AlreadyClaimed(row["service"])
            self._record_status(row["id"], "received", None, now)
        return {"id": row["id"], "ref": row["ref"], "created_at": now}

    def set_status(self, ref: str, status: str, note: str = "") -> dict | None:
        """Move submission `ref` to `status` with the staff's `note`; return its phone, language,
        service and the old status.

        None when there is no such submission, or it already has that status and that note.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
        note = note or None
        with self.transaction():
            # Locked on PostgreSQL until the change commits: a second process changing the same submission at
            # once then reads the new status, and writes no second history line (SQLite: BEGIN IMMEDIATE).
            row = self.db.execute("SELECT phone, language, service, status, note, id FROM submissions WHERE ref = ?"
                                  + (" FOR UPDATE" if self.postgres else ""), [ref]).fetchone()
            if row is None or (row[3], row[4]) == (status, note):
                return None
            now = _stamp(self.clock())
            self.db.execute("UPDATE submissions SET status = ?, note = ?, status_at = ?, updated_at = ? WHERE ref = ?",
                            [status, note, now, now, ref])
            self._record_status(row[5], status, note, now)
        return {"phone": self.sealer.open(row[0]), "language": row[1], "service": row[2], "previous": row[3]}

    def _record_status(self, submission_id: str, status: str, note: str | None, at: str) -> None:
        self.db.execute("INSERT INTO status_history (submission_id, status, note, at) VALUES (?, ?, ?, ?)",
                        [submission_id, status, note, at])

    def history(self, ref: str) -> list[dict]:
        """Submission `ref`'s statuses and notes, oldest first (`status`, `note`, `at`); empty when unknown."""
        rows = self.db.execute(
            "SELECT h.status, h.note, h.at FROM status_history h JOIN submissions s ON s.id = h.submission_id "
            "WHERE s.ref = ? ORDER BY h.id", [ref]).fetchall()
        return [{"status": status, "note": note, "at": at} for status, note, at in rows]

    def taken(self, service: str, answer: str, value: str, phone: str) -> bool:
        """True when `phone` itself already claimed `value` for `answer` of `service`.

        Another phone's claim is not told: see `add_submission`.
        """
        return self._claimant(self._claim(service, answer, value)) == self.phone_digest(phone)

    def _claimant(self, digest: str) -> str | None:
        """The phone digest of the submission holding the claim `digest`, or None."""
        row = self.db.execute("SELECT s.phone_hash FROM claims c JOIN submissions s ON s.id = c.submission_id "
                              "WHERE c.digest = ?", [digest]).fetchone()
        return row[0] if row else None

    def recent_submissions(self, phone: str, limit: int = 5) -> list[dict]:
        """This phone's latest submissions, newest first: ref, service, status, created_at,
        note (the staff's last, or None) and status_at (when the status last changed)."""
        rows = self.db.execute(
            f"""SELECT {_STATUS_COLUMNS} FROM submissions
               WHERE phone_hash = ? ORDER BY created_at DESC, id DESC LIMIT ?""",
            [self.phone_digest(phone), limit],
        ).fetchall()
        return [dict(zip(_STATUS_KEYS, row)) for row in rows]

    def submissions_since(self, phone: str, service: str, since: dt.datetime) -> int:
        """How many submissions of `service` this phone made at or after `since` (the daily limit)."""
        return self.db.execute(
            "SELECT count(*) FROM submissions WHERE phone_hash = ? AND created_at >= ? AND service = ?",
            [self.phone_digest(phone), _stamp(since), service]).fetchone()[0]

    def submission_of_session(self, session_id: str) -> dict | None:
        """The submission USSD session `session_id` made (`id`, `ref`, `status`), or None; on its index."""
        row = self.db.execute("SELECT id, ref, status FROM submissions WHERE session_id = ? LIMIT 1",
                              [session_id]).fetchone()
        return dict(zip(("id", "ref", "status"), row)) if row else None

    def find_submission(self, ref: str, phone: str) -> dict | None:
        """The submission `ref` if `phone` made it (same keys as `recent_submissions`)."""
        row = self.db.execute(
            f"SELECT {_STATUS_COLUMNS} FROM submissions WHERE ref = ? AND phone_hash = ?",
            [ref, self.phone_digest(phone)],
        ).fetchone()
        return dict(zip(_STATUS_KEYS, row)) if row else None

    def figures_between(self, marks: dict[str, str], until: str, dropped_until: str,
                        final_states: tuple[str, ...]) -> dict:
        """What the metrics count since their last look (`marks`, stamps) up to `until`: submissions by
        (service, channel), SMS that reached one of `final_states` by state, funnel sessions left unended and
        idle up to `dropped_until`; and the oldest pending submission's creation (`oldest_pending`)."""
        submissions = {(service, channel): count for service, channel, count in self.db.execute(
            "SELECT service, channel, count(*) FROM submissions WHERE created_at >= ? AND created_at < ? "
            "GROUP BY service, channel", [marks["submissions"], until]).fetchall()}
        final_sms = dict(self.db.execute(
            f"SELECT state, count(*) FROM outbox WHERE state IN ({', '.join('?' * len(final_states))}) "
            "AND updated_at >= ? AND updated_at < ? GROUP BY state", [*final_states, marks["sms"], until]).fetchall())
        first_day = (dt.datetime.fromisoformat(marks["dropped"]) - dt.timedelta(days=1)).date().isoformat()
        dropped = self.db.execute(
            "SELECT count(*) FROM funnel_sessions WHERE day >= ? AND ended = 0 AND updated_at >= ? AND updated_at < ?",
            [first_day, marks["dropped"], dropped_until]).fetchone()[0]
        oldest = self.db.execute("SELECT min(created_at) FROM submissions WHERE sync_state = 'pending'").fetchone()[0]
        return {"submissions": submissions, "final_sms": final_sms, "dropped": dropped, "oldest_pending": oldest}

    def refused(self, limit: int) -> list[dict]:
        """The latest submissions the central backend refused (`ref`, `reason`, `at`), newest first."""
        rows = self.db.execute("SELECT ref, sync_reason, updated_at FROM submissions WHERE sync_state = 'rejected' "
                               "ORDER BY updated_at DESC, id DESC LIMIT ?", [limit]).fetchall()
        return [{"ref": ref, "reason": reason, "at": at} for ref, reason, at in rows]

    def submission(self, ref: str) -> dict | None:
        """The whole submission `ref`, personal fields opened; for operators and tests."""
        rows = list(self.db["submissions"].rows_where("ref = ?", [ref]))
        if not rows:
            return None
        row = rows[0]
        row["answers"] = json.loads(self.sealer.open(row["answers"]))
        row["phone"] = self.sealer.open(row["phone"])
        del row["phone_hash"]
        return row

    # -- replication ---------------------------------------------------------

    def pending_submissions(self, limit: int, after: str = "") -> list[dict]:
        """Submissions not yet at the central backend, oldest first, as sync items (personal fields opened).

        One still pending in `review` was held here (over the daily limit): it
        carries `protocol.HOLD`, so the central backend holds it for staff too.
        """
        rows = self.db.execute(
            "SELECT id, ref, service, channel, answers, phone, language, created_at, status FROM submissions "
            "WHERE sync_state = 'pending' AND id > ? ORDER BY id LIMIT ?", [after, limit]).fetchall()
        keys = ("id", "ref", "service", "channel", "answers", "phone", "language", "created_at")
        items = []
        for row in rows:
            item = dict(zip(keys, row))
            item["answers"] = json.loads(self.sealer.open(item["answers"]))
            item["phone"] = self.sealer.open(item["phone"])
            if row[-1] == "review":
                item[HOLD] = HOLD_LIMIT
            items.append(item)
        return items

    def mark_synced(self, results: list[dict]) -> dict[str, int]:
        """Apply the central backend's answer per item: accepted and duplicate are synced, rejected is kept aside."""
        tally = {"accepted": 0, "duplicate": 0, "rejected": 0}
        now = _stamp(self.clock())
        with self.transaction():
            for result in results:
                outcome = result.get("result")
                if outcome not in tally or not isinstance(result.get("id"), str):
                    continue
                state = "rejected" if outcome == "rejected" else "synced"
                cursor = self.db.execute(
                    "UPDATE submissions SET sync_state = ?, sync_reason = ?, updated_at = ? "
                    "WHERE id = ? AND sync_state = 'pending'",
                    [state, result.get("reason") if state == "rejected" else None, now, result["id"]])
                tally[outcome] += cursor.rowcount
        return tally

    def set_deadline(self, ref: str, *, agency: str | None, due_at: str | None, overdue: bool) -> None:
        """What the central backend said of `ref` in an update: the agency holding it, its deadline, and
        whether it is past it."""
        self.db.execute("UPDATE submissions SET agency = ?, due_at = ?, overdue = ? WHERE ref = ?",
                        [agency, due_at, int(overdue), ref])

    # -- "is it fixed?" ----------------------------------------------------------

    def rateable(self, phone: str, services: frozenset[str], ref: str = "") -> dict | None:
        """The resolved submission of `phone`, of one of `services`, that a villager's "is it fixed?" answer
        is about: `ref` when given, else the latest resolved; `id`, `ref`, `service`, `language` and
        `answered` (it has an answer already). None when there is none."""
        marks = ", ".join("?" * len(services))
        where = f"s.phone_hash = ? AND s.status = 'resolved' AND s.service IN ({marks})" + (" AND s.ref = ?" if ref else "")
        row = self.db.execute(
            f"SELECT s.id, s.ref, s.service, s.language, f.id IS NOT NULL FROM submissions s "
            f"LEFT JOIN feedback f ON f.submission_id = s.id WHERE {where} "
            f"ORDER BY s.status_at DESC, s.id DESC LIMIT 1",
            [self.phone_digest(phone), *sorted(services), *([ref] if ref else [])]).fetchone()
        if row is None:
            return None
        return dict(zip(("id", "ref", "service", "language"), row[:4]), answered=bool(row[4]))

    def fixed(self, ref: str) -> bool | None:
        """The villager's answer to "is it fixed?" on submission `ref`; None when they gave none."""
        row = self.db.execute("SELECT f.fixed FROM feedback f JOIN submissions s ON s.id = f.submission_id "
                              "WHERE s.ref = ?", [ref]).fetchone()
        return None if row is None else bool(row[0])

    def add_feedback(self, submission_id: str, *, fixed: bool, rating: int | None, words: str,
                     channel: str) -> bool:
        """Keep a villager's answer to "is it fixed?" (`words` sealed: they may name someone); False, and
        nothing kept, when the submission has one already (the first answer counts)."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO feedback (id, submission_id, fixed, rating, words, channel, created_at, "
            "sync_state) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
            [str(ULID()), submission_id, int(fixed), rating, self.sealer.seal(words), channel,
             _stamp(self.clock())])
        return cursor.rowcount == 1

    def pending_feedback(self, limit: int) -> list[dict]:
        """Answers not yet at the central backend, oldest first, as a batch's `feedback` items."""
        rows = self.db.execute(
            "SELECT f.id, f.submission_id, s.ref, f.fixed, f.rating, f.words, f.created_at FROM feedback f "
            "JOIN submissions s ON s.id = f.submission_id WHERE f.sync_state = 'pending' ORDER BY f.id LIMIT ?",
            [limit]).fetchall()
        return [{"id": id_, "submission_id": submission_id, "ref": ref, "fixed": bool(fixed), "rating": rating,
                 "words": self.sealer.open(words), "at": at}
                for id_, submission_id, ref, fixed, rating, words, at in rows]

    def mark_feedback_synced(self, results: list[dict]) -> int:
        """The central backend answered for these answers (any result: accepted, duplicate, late, unknown);
        they are sent no more. Returns how many were marked."""
        marked = 0
        with self.transaction():
            for result in results:
                if not isinstance(result, dict) or not isinstance(result.get("id"), str):
                    continue
                cursor = self.db.execute("UPDATE feedback SET sync_state = 'synced', result = ? "
                                         "WHERE id = ? AND sync_state = 'pending'",
                                         [str(result.get("result"))[:32], result["id"]])
                marked += cursor.rowcount
        return marked

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def set_meta(self, **values: object) -> None:
        with self.transaction():
            for key, value in values.items():
                self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                [key, None if value is None else str(value)])

    def count_meta(self, key: str, by: int = 1) -> None:
        """Add `by` to the counter `key` in one statement: processes sharing the store count together,
        where a read and a write of the sum would lose the other's count."""
        with self.transaction():
            self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                            "value = CAST(CAST(COALESCE(meta.value, '0') AS INTEGER) + ? AS TEXT)",
                            [key, str(by), by])

    def pending_count(self) -> int:
        """Submissions not yet at the central backend: one count on the `sync_state` index (`/healthz`)."""
        return self.db.execute("SELECT count(*) FROM submissions WHERE sync_state = 'pending'").fetchone()[0]

    def counts(self) -> dict:
        """Submissions by sync state and by status, open USSD sessions, SMS reports waiting for their place."""
        by_sync = dict(self.db.execute(
            "SELECT sync_state, count(*) FROM submissions GROUP BY sync_state").fetchall())
        by_status = dict(self.db.execute(
            "SELECT status, count(*) FROM submissions GROUP BY status").fetchall())
        sessions = self.db.execute("SELECT count(*) FROM ussd_sessions WHERE done = 0").fetchone()[0]
        return {"submissions": {"by_sync_state": by_sync, "by_status": by_status,
                                "total": sum(by_sync.values())},
                "ussd_sessions_open": sessions,
                "sms_reports_waiting": self.pending.count(),
                "outbox": self.outbox.counts(),
                "sync": {"pending": by_sync.get("pending", 0), "sent": by_sync.get("synced", 0),
                         "rejected": by_sync.get("rejected", 0),
                         "last_success": self.meta("sync_last_success"),
                         "last_error": self.meta("sync_last_error"),
                         "refused": self.meta("sync_refused"),
                         "last_error_at": self.meta("sync_last_error_at")}}

    # -- the kiosk: the village's requests, where callers give up ------------

    def list_submissions(self, limit: int, *, ref: str = "", service: str = "", status: str = "",
                         since: str = "", until: str = "", before: str = "") -> list[dict]:
        """Up to `limit` of this gateway's submissions, newest first, with no personal field.

        `ref` matches a reference or its start; `since` and `until` are
        stamps (from, inclusive; to, exclusive); `before` is the id of the
        previous page's last row (keyset paging on the `created_at, id` index).
        """
        where, params = [], []
        if ref:
            where.append("ref >= ? AND ref < ?")
            params += [ref, ref + "\uffff"]
        for column, value in (("service", service), ("status", status)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if since:
            where.append("created_at >= ?")
            params.append(since)
        if until:
            where.append("created_at < ?")
            params.append(until)
        if before:
            where.append("(created_at, id) < (SELECT created_at, id FROM submissions WHERE id = ?)")
            params.append(before)
        keys = ("id", "ref", "service", "channel", "status", "status_at", "created_at", "sync_state", "operator")
        rows = self.db.execute(
            f"SELECT {', '.join(keys)} FROM submissions {'WHERE ' + ' AND '.join(where) if where else ''} "
            "ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit]).fetchall()
        return [dict(zip(keys, row)) for row in rows]

    def services(self) -> list[str]:
        """The services this gateway's submissions are of."""
        return [row[0] for row in self.db.execute("SELECT DISTINCT service FROM submissions ORDER BY service")]

    def funnel_step(self, session_id: str, step: str, *, ended: bool, restarted: bool = False) -> None:
        """Session `session_id` shows screen `step` (`flow/screen`): appended to its path when it moved there.

        One UPSERT, in the hop's transaction. `restarted`: the caller was
        offered to resume a dropped session and chose to start afresh.
        """
        now = _stamp(self.clock())
        self.db.execute(
            """INSERT INTO funnel_sessions AS f (session_id, day, path, last, ended, resumes, updated_at)
               VALUES (?, ?, ?, ?, ?, NULL, ?)
               ON CONFLICT(session_id) DO UPDATE SET
                 path = CASE WHEN f.path = '' THEN excluded.last
                             WHEN f.last = excluded.last OR length(f.path) >= ? THEN f.path
                             ELSE f.path || ' ' || excluded.last END,
                 last = excluded.last, ended = excluded.ended, updated_at = excluded.updated_at,
                 resumes = CASE WHEN ? = 1 THEN NULL ELSE f.resumes END""",
            [session_id, now[:10], step, step, int(ended), now, FUNNEL_PATH_LIMIT, int(restarted)])

    def funnel_resumed(self, session_id: str, resumed: str) -> None:
        """Session `session_id` offers to continue the dropped session `resumed`: one caller's session, counted once."""
        now = _stamp(self.clock())
        self.db.execute("INSERT OR IGNORE INTO funnel_sessions (session_id, day, path, last, ended, resumes, "
                        "updated_at) VALUES (?, ?, '', '', 0, ?, ?)", [session_id, now[:10], resumed, now])

    def funnel_sessions(self, since_day: str) -> list[dict]:
        """The funnel's sessions begun on `since_day` (YYYY-MM-DD, UTC) or later."""
        keys = ("session_id", "day", "path", "last", "ended", "resumes", "updated_at")
        rows = self.db.execute(f"SELECT {', '.join(keys)} FROM funnel_sessions WHERE day >= ?", [since_day])
        return [dict(zip(keys, row)) for row in rows]

    def purge_funnel(self, older_than: dt.timedelta) -> int:
        """Forget the funnel's sessions begun before `older_than` ago; return how many went."""
        with self.transaction():
            cursor = self.db.execute("DELETE FROM funnel_sessions WHERE day < ?",
                                     [_stamp(self.clock() - older_than)[:10]])
        return cursor.rowcount
