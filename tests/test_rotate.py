"""`kentongan rotate-key`: every sealed value re-sealed under a new key, resumable after a kill."""

import datetime as dt
import signal
import socket
import sqlite3
import subprocess
import sys
import time

from conftest import free_port
from sync.seal import read_keys
from sync.sql import PgDatabase
from sync.store import DATABASE_NAME, KEY_FILE_NAME, Store
from test_cli import kentongan, write_config

DAY = dt.timedelta(days=1)
SHARED = "copy gateway.key to every machine that serves this PostgreSQL store before starting it\n"
"""What rotate-key adds on a PostgreSQL store: the other machines need the new key before they serve."""


def phone(i):
    return f"+62812{i:07d}"


SEALED_EACH = 6
"""Sealed values a caller of `fill` leaves: submission answers and phone, session (one value), SMS body and
phone, SMS draft."""


def fill(data_dir, count, url=""):
    """`count` callers, each with a submission, a USSD session, an SMS in the outbox and an SMS draft;
    the first submission is purged (only its digests are left to find it by)."""
    store = Store.open(data_dir, database_url=url)
    with store.transaction():
        for i in range(count):
            store.add_submission({"service": "voter", "ref": f"K{i:06d}", "language": "id",
                                  "answers": {"nik": f"{i:016d}", "name": f"Warga {i}"},
                                  "unique": {"nik": f"{i:016d}"}}, phone=phone(i), channel="ussd")
            store.save_session(f"session-{i}", phone=phone(i), service_code="*384*1#", state={"step": i},
                               history=f"1*{i}", response=f"CON layar {i}", done=False, resumable=True)
            store.outbox.add(phone(i), f"Terima kasih {i}", "confirmation", ttl=DAY)
            store.pending.hold(phone(i), {"text": f"jalan rusak {i}"}, language="id", inbound_id=f"in-{i}",
                               ttl=DAY)
        store.db.execute("UPDATE submissions SET sync_state = 'synced' WHERE ref = 'K000000'")
    store.purge_personal(dt.timedelta(0))
    store.close()


def assert_everything_opens(data_dir, count, url=""):
    """Every value of every kind opens, and every digest still finds its row."""
    store = Store.open(data_dir, database_url=url)
    try:
        for i in range(count):
            [mine] = store.recent_submissions(phone(i))
            full = store.submission(mine["ref"])
            assert full["answers"] == ({} if i == 0 else {"nik": f"{i:016d}", "name": f"Warga {i}"})
            assert full["phone"] == ("" if i == 0 else phone(i))
            assert store.taken("voter", "nik", f"{i:016d}", phone(i))
            assert store.session(f"session-{i}")["history"] == f"1*{i}"
            assert store.resumable_session(phone(i), DAY * 365, "")[1] == {"step": i}
            assert [m["body"] for m in store.outbox.messages(phone(i))] == [f"Terima kasih {i}"]
            assert store.pending.waiting(phone(i)).draft == {"text": f"jalan rusak {i}"}
    finally:
        store.close()


def sealed_under(data_dir, generation, url=""):
    """How many values in the raw database, in any column of any table, are sealed under `generation`."""
    if url:
        db = PgDatabase(url)
        try:
            columns = db.execute("SELECT table_name, column_name FROM information_schema.columns "
                                 "WHERE table_schema = current_schema() AND data_type = 'text'").fetchall()
            return sum(db.execute(f'SELECT count(*) FROM "{table}" WHERE starts_with("{column}", ?)',
                                  [f"s{generation}:"]).fetchone()[0] for table, column in columns)
        finally:
            db.close()
    with sqlite3.connect(data_dir / DATABASE_NAME) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return sum(conn.execute(f'SELECT count(*) FROM "{table}" WHERE "{column[1]}" GLOB ?',
                                [f"s{generation}:*"]).fetchone()[0]
                   for table in tables for column in conn.execute(f'PRAGMA table_info("{table}")'))


def generations(data_dir):
    return [generation for generation, _ in read_keys(data_dir / KEY_FILE_NAME).sealing]


def store_of(tmp_path, count, url=""):
    write_config(tmp_path, gateway={"port": free_port(), "database_url": url})
    fill(tmp_path / "var", count, url)
    return tmp_path / "var"


def test_rotate_key_reseals_every_kind_and_deletes_the_old_key(tmp_path, database_url):
    url = database_url
    data_dir = store_of(tmp_path, 20, url)
    digest_before = Store.open(data_dir, database_url=url).phone_digest(phone(1))
    assert sealed_under(data_dir, 1, url) == 20 * SEALED_EACH

    result = kentongan("rotate-key", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"re-sealed {20 * SEALED_EACH} values under key 2; key 1 is gone from gateway.key\n"
                             + (SHARED if url else ""))
    assert sealed_under(data_dir, 1, url) == 0 and sealed_under(data_dir, 2, url) == 20 * SEALED_EACH
    assert generations(data_dir) == [2]
    assert (data_dir / KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert_everything_opens(data_dir, 20, url)
    assert Store.open(data_dir, database_url=url).phone_digest(phone(1)) == digest_before


def test_rotate_key_twice_rotates_again(tmp_path, database_url):
    url = database_url
    data_dir = store_of(tmp_path, 5, url)
    assert kentongan("rotate-key", cwd=tmp_path).returncode == 0

    result = kentongan("rotate-key", cwd=tmp_path)

    assert result.stdout == (f"re-sealed {5 * SEALED_EACH} values under key 3; key 2 is gone from gateway.key\n"
                             + (SHARED if url else ""))
    assert generations(data_dir) == [3]
    assert sealed_under(data_dir, 2, url) == 0 and sealed_under(data_dir, 3, url) == 5 * SEALED_EACH
    assert_everything_opens(data_dir, 5, url)


def test_rotate_key_killed_midway_leaves_every_value_open_and_a_rerun_finishes(tmp_path):
    count = 3000
    data_dir = store_of(tmp_path, count)
    total = count * SEALED_EACH
    watch = sqlite3.connect(data_dir / DATABASE_NAME)
    rotating = subprocess.Popen([sys.executable, "-m", "gateway", "rotate-key", "--batch-size", "50"],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not watch.execute("SELECT count(*) FROM outbox WHERE rowid = 1 AND phone GLOB 's2:*'").fetchone()[0]:
            assert rotating.poll() is None, rotating.communicate()
            assert time.monotonic() < deadline, "no batch committed within 60 s"
            time.sleep(0.002)
        rotating.send_signal(signal.SIGKILL)
    finally:
        rotating.wait(timeout=30)
        watch.close()

    left = sealed_under(data_dir, 1)
    assert 0 < left < total and sealed_under(data_dir, 2) == total - left
    assert generations(data_dir) == [2, 1]  # the old key stays until every value is re-sealed
    assert_everything_opens(data_dir, count)

    result = kentongan("rotate-key", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"finished the interrupted rotation: re-sealed {left} values under key 2; "
                             f"key 1 is gone from gateway.key\n")
    assert sealed_under(data_dir, 1) == 0 and sealed_under(data_dir, 2) == total
    assert generations(data_dir) == [2]
    assert_everything_opens(data_dir, count)


def test_rotate_key_refuses_while_something_answers_on_the_gateway_port(tmp_path):
    port = free_port()
    write_config(tmp_path, gateway={"port": port})
    fill(tmp_path / "var", 2)
    with socket.create_server(("127.0.0.1", port)):
        result = kentongan("rotate-key", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"kentongan: the gateway answers on 127.0.0.1:{port}: stop `kentongan serve` "
                             f"first, or it would keep sealing with the old key\n")
    assert generations(tmp_path / "var") == [1] and sealed_under(tmp_path / "var", 1) == 2 * SEALED_EACH


def test_rotate_key_leaves_a_look_alike_value_as_it_is(tmp_path, database_url):
    """An SMS id is the provider's text: one that looks sealed is not re-sealed, and does not stop the rotation."""
    url = database_url
    data_dir = store_of(tmp_path, 1, url)
    store = Store.open(data_dir, database_url=url)
    store.record_inbound("s1:QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", phone(0))
    store.close()

    result = kentongan("rotate-key", cwd=tmp_path)

    assert result.stdout == (f"re-sealed {SEALED_EACH} values under key 2; key 1 is gone from gateway.key; "
                             "1 values that look sealed but do not open left as they are\n" + (SHARED if url else ""))
    assert not Store.open(data_dir, database_url=url).record_inbound("s1:QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", phone(0))
