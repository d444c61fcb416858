"""Accounts of the people who run Kentongan: kiosk operators (gateway) and district staff (central backend).

Tables (in the store of each realm, made by `migrate`):

    accounts        one row per person: name, role, agency (central only), argon2 password hash,
                    when made, disabled (never deleted: audit rows name them) and last signed in
    account_tokens  per-person API tokens, by SHA-256 digest only (the token is shown once)
    web_sessions    signed-in browsers, by SHA-256 digest of the cookie, with their CSRF token
    login_failures  failed sign-ins per casefolded name, whether or not such an account exists,
                    so that an unknown name is locked out exactly like a known one
    audit           who did what when; append-only (triggers refuse UPDATE and DELETE)

A role is a set of permissions (`ROLES`): `read` the queue, `act` on it
(sync, status changes, assisted entry), see `personal` fields (phone, NIK,
name, birth date), read the `audit` log, manage `accounts`.

Hashing is deliberately slow (argon2id), so `hash_password` and
`verify_password` are module functions that the web layer runs off the
store's thread; `Accounts` does only quick SQL, on the store's thread.
Tokens are random (256 bits), so one SHA-256 digest is enough to keep a
stolen database from giving them away. Audit rows hold account names (that
is their purpose), never a password, token, phone number or NIK.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
from contextlib import contextmanager
from typing import Callable, Iterator

import sqlite_utils
from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error

from .database import stamp
from .errors import StoreError

ROLES: dict[str, dict[str, frozenset[str]]] = {
    "gateway": {
        "operator": frozenset({"read", "act"}),
        "supervisor": frozenset({"read", "act", "personal"}),
        "admin": frozenset({"read", "act", "personal", "audit", "accounts"}),
    },
    "central": {
        "viewer": frozenset({"read"}),
        "staff": frozenset({"read", "act"}),
        "supervisor": frozenset({"read", "act", "personal"}),
        "admin": frozenset({"read", "act", "personal", "audit", "accounts"}),
    },
}

PASSWORD_MIN = 10
PASSWORD_MAX = 1024
"""Characters; the upper bound keeps one hash from costing more than any other."""
AGENCY_MAX = 80
LABEL_MAX = 80
_NAME = re.compile(r"[\w.@-]{1,40}")

IDLE = dt.timedelta(hours=8)
"""A session unused this long ends."""
ABSOLUTE = dt.timedelta(hours=24)
"""A session ends this long after sign-in, however busy."""
TOUCH = dt.timedelta(minutes=1)
"""`seen_at` and `last_used_at` are written at most this often: a busy page is not a write per request."""

LOCK_AFTER = 5
"""Failures before the first lock; each one after doubles it."""
FIRST_LOCK = 30.0
MAX_LOCK = 3600.0
FAILURES_KEPT = dt.timedelta(days=1)
"""Failures whose lock ended longer ago than this are forgotten."""

AUDIT_PAGE_MAX = 1000
TOKEN_PREFIX = "kt_"

_PUBLIC = ("name", "role", "agency", "created_at", "disabled_at", "last_login_at")
_PUBLIC_COLUMNS = ", ".join(_PUBLIC)
_AUDIT = ("id", "at", "who", "action", "target", "detail")

_HASHER = PasswordHasher()


class AccountError(StoreError):
    """An account cannot be made or used as asked; the message is one line for the operator."""


def permissions(realm: str, role: str) -> frozenset[str]:
    """What `role` may do in `realm`; nothing for a role the realm does not know (any more)."""
    return ROLES.get(realm, {}).get(role, frozenset())


def _secret_bytes(text: str) -> bytes:
    """A password or token as bytes; a lone surrogate from a hostile form is encoded, not an exception."""
    return text.encode("utf-8", "surrogatepass")


def check_password(password: str) -> None:
    """AccountError when `password` is too short or too long to become an account's password."""
    if len(password) < PASSWORD_MIN:
        raise AccountError(f"the password is too short: at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise AccountError(f"the password is too long: at most {PASSWORD_MAX} characters")


def hash_password(password: str) -> str:
    """The argon2id hash of `password` (slow on purpose: call it off the store's thread)."""
    return _HASHER.hash(_secret_bytes(password))


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches `password_hash`; False on a mismatch or a hash that is no argon2 hash.

    With no hash (an unknown name), it checks against a hash of nothing in
    particular, so that an unknown name takes as long as a known one.
    """
    try:
        return _HASHER.verify(password_hash or _dummy_hash(), _secret_bytes(password))
    except (Argon2Error, ValueError):  # InvalidHashError, or a hash that is not even ASCII
        return False


def digest(token: str) -> str:
    """How a session or API token is stored and found: its SHA-256, in hex."""
    return hashlib.sha256(_secret_bytes(token)).hexdigest()


def migrate(db: sqlite_utils.Database) -> None:
    """Make the account tables, their indexes and the audit log's triggers: whatever is missing."""
    db["accounts"].create({
        "name": str, "role": str, "agency": str, "password_hash": str, "created_at": str,
        "disabled_at": str, "last_login_at": str,
    }, pk="name", not_null={"role", "agency", "password_hash", "created_at"}, if_not_exists=True)
    db["account_tokens"].create({
        "digest": str, "name": str, "label": str, "created_at": str, "revoked_at": str, "last_used_at": str,
    }, pk="digest", not_null={"name", "label", "created_at"}, if_not_exists=True)
    db["account_tokens"].create_index(["name"], if_not_exists=True)
    db["web_sessions"].create({"digest": str, "name": str, "csrf": str, "created_at": str, "seen_at": str},
                              pk="digest", not_null={"name", "csrf", "created_at", "seen_at"}, if_not_exists=True)
    db["web_sessions"].create_index(["name"], if_not_exists=True)
    db["web_sessions"].create_index(["seen_at"], if_not_exists=True)
    db["web_sessions"].create_index(["created_at"], if_not_exists=True)
    db["login_failures"].create({"name_key": str, "failures": int, "locked_until": str}, pk="name_key",
                                not_null={"failures", "locked_until"}, if_not_exists=True)
    db["login_failures"].create_index(["locked_until"], if_not_exists=True)
    db.execute("""CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '')""")
    db["audit"].create_index(["at"], if_not_exists=True)
    for event in ("UPDATE", "DELETE"):
        db.execute(f"""CREATE TRIGGER IF NOT EXISTS audit_no_{event.lower()} BEFORE {event} ON audit
                       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""")


_TEXT = 'TEXT COLLATE "C"'
PG_SCHEMA = f"""
CREATE TABLE accounts (
    name {_TEXT} PRIMARY KEY, role {_TEXT} NOT NULL, agency {_TEXT} NOT NULL, password_hash {_TEXT} NOT NULL,
    created_at {_TEXT} NOT NULL, disabled_at {_TEXT}, last_login_at {_TEXT});
CREATE TABLE account_tokens (
    digest {_TEXT} PRIMARY KEY, name {_TEXT} NOT NULL, label {_TEXT} NOT NULL, created_at {_TEXT} NOT NULL,
    revoked_at {_TEXT}, last_used_at {_TEXT});
CREATE INDEX idx_account_tokens_name ON account_tokens (name);
CREATE TABLE web_sessions (
    digest {_TEXT} PRIMARY KEY, name {_TEXT} NOT NULL, csrf {_TEXT} NOT NULL, created_at {_TEXT} NOT NULL,
    seen_at {_TEXT} NOT NULL);
CREATE INDEX idx_web_sessions_name ON web_sessions (name);
CREATE INDEX idx_web_sessions_seen_at ON web_sessions (seen_at);
CREATE INDEX idx_web_sessions_created_at ON web_sessions (created_at);
CREATE TABLE login_failures (name_key {_TEXT} PRIMARY KEY, failures INTEGER NOT NULL, locked_until {_TEXT} NOT NULL);
CREATE INDEX idx_login_failures_locked_until ON login_failures (locked_until);
CREATE TABLE audit (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at {_TEXT} NOT NULL, who {_TEXT} NOT NULL,
    action {_TEXT} NOT NULL, target {_TEXT} NOT NULL DEFAULT '', detail {_TEXT} NOT NULL DEFAULT '');
CREATE INDEX idx_audit_at ON audit (at);
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""
"""What `migrate` makes, for a store on PostgreSQL (part of its one schema step): text compared by code point
as in SQLite, the audit log append-only by PL/pgSQL triggers (TRUNCATE too, which SQLite does not have)."""


def _postgres(db) -> bool:
    return getattr(db, "dialect", "") == "postgresql"


@contextmanager
def _transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """One write transaction (`BEGIN IMMEDIATE`), joining the store's when one is open."""
    conn = db.conn
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _lock_seconds(failures: int) -> float:
    """The lock the `failures`th failure in a row imposes: none before LOCK_AFTER, then doubling, capped."""
    if failures < LOCK_AFTER:
        return 0.0
    return min(FIRST_LOCK * 2 ** min(failures - LOCK_AFTER, 16), MAX_LOCK)


class Accounts:
    """The accounts of one realm (`gateway` or `central`) in a store's database.

    Not thread-safe: it runs on its store's thread. `clock()` is the store's
    now (an aware UTC datetime).
    """

    def __init__(self, db: sqlite_utils.Database, realm: str, clock: Callable[[], dt.datetime]):
        if realm not in ROLES:
            raise ValueError(f"unknown realm {realm!r}")
        self.db = db
        self.realm = realm
        self.clock = clock

    # -- accounts ----------------------------------------------------------

    def add(self, name: str, role: str, password: str, agency: str = "") -> dict:
        """Make an account; return its public row. AccountError for a bad name, role, agency or password,
        or a name that is taken (in any letter case)."""
        self._check_new(name, role, agency)
        check_password(password)
        return self.add_hashed(name, role, hash_password(password), agency)

    def add_hashed(self, name: str, role: str, password_hash: str, agency: str = "") -> dict:
        """`add` for a caller that hashed the password already (off the store's thread)."""
        self._check_new(name, role, agency)
        with _transaction(self.db):
            taken = self._taken(name)
            if taken:
                raise AccountError(f"an account named {taken} exists already")
            # Another process may have made the same name since (a shared PostgreSQL store): asked with
            # ON CONFLICT, so a clash is an answer, not an error that aborts the transaction.
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO accounts (name, role, agency, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                [name, role, agency, password_hash, stamp(self.clock())])
            if cursor.rowcount != 1:
                raise AccountError(f"an account named {name} exists already")
        return self._public(name)

    def _check_new(self, name: str, role: str, agency: str) -> None:
        if not _NAME.fullmatch(name):
            raise AccountError(f"bad account name {name!r}: 1-40 letters, digits and . _ @ -")
        roles = ROLES[self.realm]
        if role not in roles:
            raise AccountError(f"unknown role {role!r}: the {self.realm} roles are {', '.join(roles)}")
        if self.realm == "gateway" and agency:
            raise AccountError("gateway accounts have no agency")
        if len(agency) > AGENCY_MAX or not agency.isprintable():
            raise AccountError(f"bad agency: at most {AGENCY_MAX} printable characters")

    def _taken(self, name: str) -> str | None:
        """The account name that equals `name` but for letter case, if any: the two would share a lock-out."""
        key = name.casefold()
        return next((taken for (taken,) in self.db.execute("SELECT name FROM accounts") if taken.casefold() == key),
                    None)

    def list(self) -> list[dict]:
        """Every account's public row (never the hash), by name."""
        rows = self.db.execute(f"SELECT {_PUBLIC_COLUMNS} FROM accounts ORDER BY name").fetchall()
        return [dict(zip(_PUBLIC, row)) for row in rows]

    def account(self, name: str) -> dict | None:
        """The account named exactly `name`: its public row and `password_hash`; None when there is none."""
        row = self.db.execute(f"SELECT {_PUBLIC_COLUMNS}, password_hash FROM accounts WHERE name = ?",
                              [name]).fetchone()
        return dict(zip(_PUBLIC + ("password_hash",), row)) if row else None

    def _public(self, name: str) -> dict | None:
        row = self.db.execute(f"SELECT {_PUBLIC_COLUMNS} FROM accounts WHERE name = ?", [name]).fetchone()
        return dict(zip(_PUBLIC, row)) if row else None

    def disable(self, name: str) -> dict:
        """Disable an account: its sessions end and its tokens are revoked at once. Disabling again keeps
        the first time. Returns the public row; AccountError when there is no such account."""
        now = stamp(self.clock())
        with _transaction(self.db):
            if self._public(name) is None:
                raise AccountError(f"no account named {name}")
            self.db.execute("UPDATE accounts SET disabled_at = coalesce(disabled_at, ?) WHERE name = ?", [now, name])
            self.db.execute("DELETE FROM web_sessions WHERE name = ?", [name])
            self.db.execute("UPDATE account_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                            [now, name])
        return self._public(name)

    def _enabled(self, name: str) -> dict:
        account = self._public(name)
        if account is None:
            raise AccountError(f"no account named {name}")
        if account["disabled_at"]:
            raise AccountError(f"account {name} is disabled")
        return account

    # -- lock-out ----------------------------------------------------------

    def locked_for(self, name: str) -> float:
        """Seconds until `name` may try to sign in again; 0.0 when it may now."""
        row = self.db.execute("SELECT locked_until FROM login_failures WHERE name_key = ?",
                              [name.casefold()]).fetchone()
        if row is None:
            return 0.0
        return max(0.0, (dt.datetime.fromisoformat(row[0]) - self.clock()).total_seconds())

    def record_failure(self, name: str) -> float:
        """Count a failed sign-in as `name` (an account or not); return the seconds of lock it imposes.

        Failures in a row: the first LOCK_AFTER - 1 lock nothing, the next
        locks FIRST_LOCK seconds, each one after doubles it, up to MAX_LOCK.
        A run of failures is forgotten FAILURES_KEPT after its lock ended.
        """
        now = self.clock()
        key = name.casefold()
        with _transaction(self.db):
            # Several processes may count failures of one name at once (a shared PostgreSQL store): the row is
            # made if missing and locked before it is read, so no failure is lost between the read and the
            # write. SQLite's BEGIN IMMEDIATE serialises writers already. An empty `locked_until` is no run.
            self.db.execute("INSERT OR IGNORE INTO login_failures (name_key, failures, locked_until) "
                            "VALUES (?, 0, '')", [key])
            row = self.db.execute("SELECT failures, locked_until FROM login_failures WHERE name_key = ?"
                                  + (" FOR UPDATE" if _postgres(self.db) else ""), [key]).fetchone()
            fresh = row[1] >= stamp(now - FAILURES_KEPT)
            failures = row[0] + 1 if fresh else 1
            lock = _lock_seconds(failures)
            self.db.execute("INSERT INTO login_failures (name_key, failures, locked_until) VALUES (?, ?, ?) "
                            "ON CONFLICT(name_key) DO UPDATE SET failures = excluded.failures, "
                            "locked_until = excluded.locked_until",
                            [key, failures, stamp(now + dt.timedelta(seconds=lock))])
        return lock

    def record_success(self, name: str) -> None:
        """A sign-in as `name` succeeded: its failures are forgotten and its last sign-in is now."""
        with _transaction(self.db):
            self.db.execute("DELETE FROM login_failures WHERE name_key = ?", [name.casefold()])
            self.db.execute("UPDATE accounts SET last_login_at = ? WHERE name = ?", [stamp(self.clock()), name])

    def forget_failures(self, older_than: dt.timedelta) -> int:
        """Delete failure counts whose last failure (and lock) ended over `older_than` ago; return how many."""
        cursor = self.db.execute("DELETE FROM login_failures WHERE locked_until < ?",
                                 [stamp(self.clock() - older_than)])
        return cursor.rowcount

    # -- web sessions ------------------------------------------------------

    def start_session(self, name: str) -> tuple[str, str]:
        """A new session for the enabled account `name`: (session token for the cookie, CSRF token).

        Only the session token's digest is stored; AccountError for an
        unknown or disabled account.
        """
        self._enabled(name)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = stamp(self.clock())
        self.db["web_sessions"].insert({"digest": digest(token), "name": name, "csrf": csrf,
                                        "created_at": now, "seen_at": now})
        return token, csrf

    def session(self, token: str) -> dict | None:
        """The live session of `token`: name, role, agency, csrf and permissions; None when there is none.

        A session ends (and is deleted) when unused for IDLE, ABSOLUTE after
        it started, or when its account is disabled.
        """
        key = digest(token)
        row = self.db.execute(
            "SELECT s.name, a.role, a.agency, s.csrf, s.created_at, s.seen_at, a.disabled_at "
            "FROM web_sessions s JOIN accounts a ON a.name = s.name WHERE s.digest = ?", [key]).fetchone()
        if row is None:
            return None
        name, role, agency, csrf, created_at, seen_at, disabled_at = row
        now = self.clock()
        if disabled_at or seen_at < stamp(now - IDLE) or created_at < stamp(now - ABSOLUTE):
            self.end_session(token)
            return None
        if seen_at < stamp(now - TOUCH):
            self.db.execute("UPDATE web_sessions SET seen_at = ? WHERE digest = ?", [stamp(now), key])
        return {"name": name, "role": role, "agency": agency, "csrf": csrf,
                "permissions": permissions(self.realm, role)}

    def end_session(self, token: str) -> None:
        """Sign out: the session of `token` ends (nothing happens for an unknown one)."""
        self.db.execute("DELETE FROM web_sessions WHERE digest = ?", [digest(token)])

    def end_expired_sessions(self) -> int:
        """Delete sessions past IDLE or ABSOLUTE; return how many."""
        now = self.clock()
        cursor = self.db.execute("DELETE FROM web_sessions WHERE seen_at < ? OR created_at < ?",
                                 [stamp(now - IDLE), stamp(now - ABSOLUTE)])
        return cursor.rowcount

    def housekeep(self) -> dict[str, int]:
        """Delete expired sessions and failure counts over FAILURES_KEPT old: how many of each went."""
        return {"web_sessions": self.end_expired_sessions(), "login_failures": self.forget_failures(FAILURES_KEPT)}

    # -- API tokens ----------------------------------------------------------

    def issue_token(self, name: str, label: str = "") -> str:
        """A new API token for the enabled account `name`, to show once: only its digest is stored.

        AccountError for an unknown or disabled account, or a bad label.
        """
        if len(label) > LABEL_MAX or not label.isprintable():
            raise AccountError(f"bad token label: at most {LABEL_MAX} printable characters")
        with _transaction(self.db):
            self._enabled(name)
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            self.db["account_tokens"].insert({"digest": digest(token), "name": name, "label": label,
                                              "created_at": stamp(self.clock())})
        return token

    def token_account(self, token: str) -> dict | None:
        """Whose live API token `token` is: name, role, agency, label and permissions; None when it is no
        live token of an enabled account."""
        key = digest(token)
        row = self.db.execute(
            "SELECT t.name, a.role, a.agency, t.label, t.last_used_at FROM account_tokens t "
            "JOIN accounts a ON a.name = t.name "
            "WHERE t.digest = ? AND t.revoked_at IS NULL AND a.disabled_at IS NULL", [key]).fetchone()
        if row is None:
            return None
        name, role, agency, label, last_used_at = row
        now = self.clock()
        if last_used_at is None or last_used_at < stamp(now - TOUCH):
            self.db.execute("UPDATE account_tokens SET last_used_at = ? WHERE digest = ?", [stamp(now), key])
        return {"name": name, "role": role, "agency": agency, "label": label,
                "permissions": permissions(self.realm, role)}

    # -- audit ---------------------------------------------------------------

    def audit(self, who: str, action: str, target: str = "", detail: str = "") -> None:
        """Append one row to the audit log: `who` did `action` to `target`. Never a password, token,
        phone number or NIK in any of them."""
        self.db.execute("INSERT INTO audit (at, who, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                        [stamp(self.clock()), who, action, target, detail])

    def audit_log(self, limit: int = 100, before_id: int | None = None) -> list[dict]:
        """Audit rows newest first, at most `limit` (capped at AUDIT_PAGE_MAX), older than `before_id` when
        given (the id of the last row of the page before)."""
        limit = max(1, min(limit, AUDIT_PAGE_MAX))
        where, args = ("WHERE id < ?", [before_id]) if before_id is not None else ("", [])
        rows = self.db.execute(f"SELECT {', '.join(_AUDIT)} FROM audit {where} ORDER BY id DESC LIMIT ?",
                               [*args, limit]).fetchall()
        return [dict(zip(_AUDIT, row)) for row in rows]
