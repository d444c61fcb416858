"""Accounts, sessions, lock-out, API tokens and the audit log, on real store files."""

import datetime as dt
import json
import sqlite3

import asyncpg
import pytest

from sync import accounts as accounts_module
from sync.accounts import ABSOLUTE, IDLE, AccountError, digest, hash_password, permissions, verify_password
from sync.central.store import MIGRATIONS as CENTRAL_MIGRATIONS, CentralStore
from sync.store import MIGRATIONS, Store

PASSWORD = "correct horse battery"
TABLES = {"accounts", "account_tokens", "web_sessions", "login_failures", "audit"}


@pytest.fixture
def store(tmp_path, clock, database_url):
    store = Store.open(tmp_path / "var", clock, database_url)
    yield store
    store.close()


@pytest.fixture
def central(tmp_path, clock):
    store = CentralStore.open(tmp_path / "centre", clock)
    yield store
    store.close()


def store_bytes(folder) -> bytes:
    """Every byte of every file of a store (the database, its WAL, the key)."""
    return b"".join(path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file())


def test_accounts_password_is_stored_as_an_argon2id_hash_only(store):
    added = store.accounts.add("ani", "operator", PASSWORD)
    assert added == {"name": "ani", "role": "operator", "agency": "", "created_at": added["created_at"],
                     "disabled_at": None, "last_login_at": None}
    stored = store.accounts.account("ani")["password_hash"]
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + "!")
    assert not verify_password("not a hash", PASSWORD)
    assert not verify_password("$argon2id$é", PASSWORD)
    assert not verify_password(None, PASSWORD)  # an unknown name: checked against a hash of nothing
    assert not verify_password(stored, "\udcff lone surrogate")  # a hostile form field never raises
    assert all("password_hash" not in row for row in store.accounts.list())
    assert store.accounts.account("Ani") is None  # names are compared exactly as given
    assert store.accounts.account("nobody") is None
    if not store.postgres:  # the files hold no password; PostgreSQL's are not ours to read
        assert PASSWORD.encode() not in store_bytes(store.path.parent)


def test_accounts_add_hashed_takes_a_hash_made_off_the_store_thread(central):
    central.accounts.add_hashed("budi", "staff", hash_password(PASSWORD), agency="Dinas PU")
    account = central.accounts.account("budi")
    assert (account["role"], account["agency"]) == ("staff", "Dinas PU")
    assert verify_password(account["password_hash"], PASSWORD)


@pytest.mark.parametrize("name, role, password, agency, message", [
    ("ani", "boss", PASSWORD, "", "unknown role 'boss': the gateway roles are operator, supervisor, admin"),
    ("ANI", "operator", PASSWORD, "", "an account named ani exists already"),
    ("budi", "operator", "123456789", "", "the password is too short: at least 10 characters"),
    ("budi", "operator", "x" * 1025, "", "the password is too long: at most 1024 characters"),
    ("", "operator", PASSWORD, "", "bad account name ''"),
    ("b udi", "operator", PASSWORD, "", "bad account name 'b udi'"),
    ("budi\n", "operator", PASSWORD, "", "bad account name 'budi\\n'"),
    ("b" * 41, "operator", PASSWORD, "", "bad account name"),
    ("budi", "operator", PASSWORD, "Dinas PU", "gateway accounts have no agency"),
])
def test_accounts_add_refuses_with_one_line(store, name, role, password, agency, message):
    store.accounts.add("ani", "operator", PASSWORD)
    with pytest.raises(AccountError) as refused:
        store.accounts.add(name, role, password, agency)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert [row["name"] for row in store.accounts.list()] == ["ani"]


def test_accounts_names_may_hold_letters_digits_and_dot_underscore_at_dash(central):
    for name in ("siti.rahayu", "op_2", "budi@dinas-pu", "Ñoño"):
        central.accounts.add(name, "viewer", PASSWORD, agency="Dinas PU")
    assert [row["name"] for row in central.accounts.list()] == sorted(["siti.rahayu", "op_2", "budi@dinas-pu",
                                                                       "Ñoño"])
    with pytest.raises(AccountError, match="unknown role 'operator': the central roles are viewer, staff, "
                                           "supervisor, admin"):
        central.accounts.add("x", "operator", PASSWORD)


def test_accounts_roles_decide_the_permissions():
    assert permissions("gateway", "operator") == {"read", "act"}
    assert permissions("gateway", "supervisor") == {"read", "act", "personal"}
    assert permissions("central", "viewer") == {"read"}
    assert permissions("central", "admin") == {"read", "act", "personal", "audit", "accounts"}
    assert permissions("central", "operator") == frozenset()  # a role the realm does not know: nothing
    assert isinstance(permissions("gateway", "admin"), frozenset)


def test_accounts_lock_out_grows_with_each_failure_up_to_an_hour(store, clock):
    store.accounts.add("ani", "operator", PASSWORD)
    assert [store.accounts.record_failure("ani") for _ in range(4)] == [0.0] * 4
    assert store.accounts.locked_for("ani") == 0.0
    assert store.accounts.record_failure("ani") == 30.0
    assert 25 < store.accounts.locked_for("ani") <= 30
    assert 25 < store.accounts.locked_for("ANI") <= 30  # the name's letter case makes no other key
    clock.advance(seconds=31)
    assert store.accounts.locked_for("ani") == 0.0
    assert [store.accounts.record_failure("ani") for _ in range(3)] == [60.0, 120.0, 240.0]
    assert 235 < store.accounts.locked_for("ani") <= 240
    assert [store.accounts.record_failure("ani") for _ in range(6)][-3:] == [3600.0, 3600.0, 3600.0]
    clock.advance(seconds=3601)
    assert store.accounts.locked_for("ani") == 0.0

    store.accounts.record_success("ani")
    assert store.accounts.account("ani")["last_login_at"] == store.accounts.list()[0]["last_login_at"] is not None
    assert [store.accounts.record_failure("ani") for _ in range(5)][-1] == 30.0  # counted from the start again


def test_accounts_an_unknown_name_is_locked_out_exactly_like_a_known_one(store):
    store.accounts.add("ani", "operator", PASSWORD)
    known = [store.accounts.record_failure("ani") for _ in range(7)]
    unknown = [store.accounts.record_failure("nobody") for _ in range(7)]
    assert known == unknown == [0.0, 0.0, 0.0, 0.0, 30.0, 60.0, 120.0]
    assert store.accounts.locked_for("NoBody") > 115


def test_accounts_failures_are_forgotten_a_day_after_their_lock(store, clock):
    for name in ("ani", "budi"):
        for _ in range(5):
            store.accounts.record_failure(name)
    clock.advance(hours=12)
    store.accounts.record_failure("budi")
    clock.advance(hours=12, minutes=1)
    assert store.accounts.housekeep() == {"web_sessions": 0, "login_failures": 1}
    assert store.db.execute("SELECT name_key FROM login_failures").fetchall() == [("budi",)]
    clock.advance(days=1, minutes=1)
    assert store.accounts.record_failure("budi") == 0.0  # a run of failures a day old starts again


def test_accounts_session_ends_when_idle_and_after_a_day_however_busy(store, clock):
    store.accounts.add("ani", "supervisor", PASSWORD)
    token, csrf = store.accounts.start_session("ani")
    assert store.accounts.session(token) == {"name": "ani", "role": "supervisor", "agency": "", "csrf": csrf,
                                             "permissions": frozenset({"read", "act", "personal"})}
    assert store.accounts.session(token + "x") is None
    for _ in range(3):  # used every 7 hours: never idle, yet over after 24 hours
        clock.advance(hours=7)
        assert store.accounts.session(token)["name"] == "ani"
    clock.advance(hours=3, minutes=1)  # 3 hours since last used, over 24 since signing in
    assert clock() - clock.start > ABSOLUTE
    assert store.accounts.session(token) is None
    assert store.db.execute("SELECT count(*) FROM web_sessions").fetchone()[0] == 0

    idle, _ = store.accounts.start_session("ani")
    clock.advance(hours=IDLE.total_seconds() / 3600, minutes=1)
    assert store.accounts.session(idle) is None


def test_accounts_session_is_touched_at_most_once_a_minute(store, clock):
    store.accounts.add("ani", "operator", PASSWORD)
    token, _ = store.accounts.start_session("ani")

    def seen_at():
        return store.db.execute("SELECT seen_at FROM web_sessions").fetchone()[0]

    started = seen_at()
    clock.advance(seconds=30)
    store.accounts.session(token)
    assert seen_at() == started
    clock.advance(seconds=31)
    store.accounts.session(token)
    assert seen_at() > started


def test_accounts_housekeeping_deletes_expired_sessions(store, clock):
    store.accounts.add("ani", "operator", PASSWORD)
    store.accounts.start_session("ani")
    clock.advance(hours=4)
    live, _ = store.accounts.start_session("ani")
    clock.advance(hours=4, minutes=1)
    assert store.accounts.housekeep() == {"web_sessions": 1, "login_failures": 0}
    assert store.accounts.session(live)["name"] == "ani"
    store.accounts.end_session(live)
    assert store.accounts.session(live) is None


def test_accounts_disable_ends_sessions_and_revokes_tokens(central, clock):
    central.accounts.add("budi", "staff", PASSWORD, agency="Dinas PU")
    central.accounts.add("siti", "viewer", PASSWORD, agency="Dinas PU")
    session, _ = central.accounts.start_session("budi")
    other, _ = central.accounts.start_session("siti")
    token = central.accounts.issue_token("budi", "spreadsheet")
    assert token.startswith("kt_") and len(token) > 40
    assert central.accounts.token_account(token) == {"name": "budi", "role": "staff", "agency": "Dinas PU",
                                                     "label": "spreadsheet",
                                                     "permissions": frozenset({"read", "act"})}

    disabled = central.accounts.disable("budi")
    assert disabled["disabled_at"] is not None
    assert central.accounts.session(session) is None
    assert central.accounts.token_account(token) is None
    assert central.db.execute("SELECT count(*) FROM web_sessions WHERE name = 'budi'").fetchone()[0] == 0
    assert central.db.execute("SELECT revoked_at FROM account_tokens").fetchone()[0] is not None
    assert central.accounts.session(other)["name"] == "siti"  # nobody else's

    clock.advance(minutes=5)
    assert central.accounts.disable("budi")["disabled_at"] == disabled["disabled_at"]  # the first time stays
    for refused in (lambda: central.accounts.issue_token("budi"), lambda: central.accounts.start_session("budi")):
        with pytest.raises(AccountError, match="account budi is disabled"):
            refused()
    for refused in (lambda: central.accounts.disable("nobody"), lambda: central.accounts.issue_token("nobody")):
        with pytest.raises(AccountError, match="no account named nobody"):
            refused()


def test_accounts_tokens_are_stored_only_as_digests(central, clock):
    central.accounts.add("budi", "staff", PASSWORD, agency="Dinas PU")
    token = central.accounts.issue_token("budi")
    session, csrf = central.accounts.start_session("budi")
    files = store_bytes(central.path.parent)
    assert token.encode() not in files and session.encode() not in files
    assert digest(token).encode() in files and digest(session).encode() in files
    assert csrf.encode() in files  # the CSRF token is no secret of its own: it is stored clear


def test_accounts_token_use_is_recorded_at_most_once_a_minute(central, clock):
    central.accounts.add("budi", "staff", PASSWORD, agency="Dinas PU")
    token = central.accounts.issue_token("budi")

    def last_used():
        return central.db.execute("SELECT last_used_at FROM account_tokens").fetchone()[0]

    assert last_used() is None
    central.accounts.token_account(token)
    first = last_used()
    clock.advance(seconds=30)
    central.accounts.token_account(token)
    assert last_used() == first
    clock.advance(seconds=31)
    central.accounts.token_account(token)
    assert last_used() > first
    assert central.accounts.token_account("kt_" + "A" * 43) is None


def test_accounts_audit_log_is_append_only_and_pages_newest_first(store):
    for n in range(5):
        store.accounts.audit("ani", "status", f"K7AAAA{n}", "received -> in_progress")
    rows = store.accounts.audit_log(limit=2)
    assert [row["target"] for row in rows] == ["K7AAAA4", "K7AAAA3"]
    assert rows[0]["who"] == "ani" and rows[0]["action"] == "status" and rows[0]["at"]
    older = store.accounts.audit_log(limit=10, before_id=rows[-1]["id"])
    assert [row["target"] for row in older] == ["K7AAAA2", "K7AAAA1", "K7AAAA0"]
    refused = (sqlite3.DatabaseError, asyncpg.PostgresError)
    with pytest.raises(refused, match="the audit log is append-only"):
        store.db.execute("UPDATE audit SET who = 'mallory'")
    with pytest.raises(refused, match="the audit log is append-only"):
        store.db.execute("DELETE FROM audit WHERE id = 1")
    assert len(store.accounts.audit_log()) == 5
    assert {row["who"] for row in store.accounts.audit_log()} == {"ani"}


def add_as_of_old(store, ref, answers, status="received", phone="+6281234567890"):
    """A submission as a store of an older version wrote it (today's code writes columns it did not have)."""
    now = "2026-11-01T00:00:00.000+00:00"
    store.db.execute(
        "INSERT INTO submissions (id, ref, service, channel, answers, phone, phone_hash, language, status, status_at, "
        "sync_state, created_at, updated_at) VALUES (?, ?, 'report', 'ussd', ?, ?, ?, 'id', ?, ?, 'pending', ?, ?)",
        [f"01KB{ref:0>22}", ref, store.sealer.seal(json.dumps(answers)), store.sealer.seal(phone),
         store.phone_digest(phone), status, now, now, now])


def test_accounts_migration_adds_the_tables_to_a_gateway_store_of_the_previous_version(tmp_path):
    class OldStore(Store):
        MIGRATIONS = MIGRATIONS[:5]

    old = OldStore.open(tmp_path)
    add_as_of_old(old, "K7AAAAA", {"location": "x"})
    assert not TABLES & set(old.db.table_names())
    old.close()
    store = Store.open(tmp_path)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 6
        assert TABLES <= set(store.db.table_names())
        assert store.submission("K7AAAAA")["answers"] == {"location": "x"}
        store.accounts.add("ani", "admin", PASSWORD)
        accounts_module.migrate(store.db)  # again: only what is missing, so nothing
        assert [row["name"] for row in store.accounts.list()] == ["ani"]
    finally:
        store.close()


def test_accounts_migration_adds_the_tables_to_a_central_store_of_the_previous_version(tmp_path):
    class OldCentralStore(CentralStore):
        MIGRATIONS = CENTRAL_MIGRATIONS[:4]

    old = OldCentralStore.open(tmp_path)
    old.add_gateway("desa-a", "secret")
    old.close()
    store = CentralStore.open(tmp_path)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(CENTRAL_MIGRATIONS) >= 5
        assert TABLES <= set(store.db.table_names())
        assert store.gateway("desa-a")["id"] == "desa-a"
        store.accounts.add("budi", "admin", PASSWORD)
        store.accounts.audit("cli", "account-add", "budi")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            store.db.execute("DELETE FROM audit")
    finally:
        store.close()


def test_accounts_times_are_the_stores_clock(store, clock):
    clock.advance(days=3)
    added = store.accounts.add("ani", "operator", PASSWORD)
    assert dt.datetime.fromisoformat(added["created_at"]) - clock() < dt.timedelta(seconds=5)
    assert dt.datetime.fromisoformat(added["created_at"]) > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
