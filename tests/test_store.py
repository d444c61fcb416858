"""The local store: transactions, sealing, references, claims."""

import datetime as dt
import threading
import time

import pytest

from conftest import MovableClock, query_plan
from sync.accounts import LOCK_AFTER
from sync.database import REFERENCE_DRAWS, IntegrityError
from sync.errors import AlreadyClaimed, KeyFileError, NoFreeReference
from sync.reference import ALPHABET, check_prefix, new_reference
from sync.store import KEY_FILE_NAME, MIGRATIONS as STORE_MIGRATIONS, Store
from test_accounts import add_as_of_old

SUB = {"service": "voter", "ref": "K7ABCDE", "language": "id", "unique": {"nik": "3201234567890123"},
       "answers": {"nik": "3201234567890123", "name": "Siti Aminah"}}


@pytest.fixture
def store(tmp_path, database_url):
    store = Store.open(tmp_path, database_url=database_url)
    yield store
    store.close()


def test_store_submission_round_trip(store):
    added = store.add_submission(SUB, phone="+6281234567890", channel="ussd", session_id="s1")
    row = store.submission("K7ABCDE")
    assert row["id"] == added["id"] and len(row["id"]) == 26
    assert row["answers"] == SUB["answers"] and row["phone"] == "+6281234567890"
    assert (row["status"], row["sync_state"], row["channel"]) == ("received", "pending", "ussd")


def test_store_uses_wal(store):
    if store.postgres:
        pytest.skip("SQLite's journal: PostgreSQL has its own write-ahead log")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # A group's savepoint journal stays in memory instead of a temporary file written on every hop; outside a
    # group, a large sort still goes to a file.
    with store.group_transaction():
        assert store.db.execute("PRAGMA temp_store").fetchone()[0] == 2
    assert store.db.execute("PRAGMA temp_store").fetchone()[0] == 0


def test_store_duplicate_reference_and_claim_keep_nothing(store):
    store.add_submission(SUB, phone="+6281234567890", channel="ussd")
    with pytest.raises(IntegrityError):  # references come from free_reference, never twice
        store.add_submission({**SUB, "unique": {}}, phone="+62812", channel="ussd")
    with pytest.raises(AlreadyClaimed):
        store.add_submission({**SUB, "ref": "K7BBBBB"}, phone="+6281234567890", channel="ussd")
    assert store.counts()["submissions"]["total"] == 1
    assert store.taken("voter", "nik", "3201234567890123", "+6281234567890")
    assert not store.taken("permit", "nik", "3201234567890123", "+6281234567890")


def test_store_never_tells_another_phone_that_a_unique_answer_is_claimed(store):
    store.add_submission(SUB, phone="+6281234567890", channel="ussd")
    assert not store.taken("voter", "nik", "3201234567890123", "+6285550001111")
    store.add_submission({**SUB, "ref": "K7BBBBB"}, phone="+6285550001111", channel="ussd")
    assert store.counts()["submissions"]["total"] == 2
    # The first phone keeps the claim; the second registration goes to the central backend for review.
    assert store.taken("voter", "nik", "3201234567890123", "+6281234567890")
    assert not store.taken("voter", "nik", "3201234567890123", "+6285550001111")


def test_store_free_reference_draws_again_past_a_taken_one(store, monkeypatch):
    store.add_submission(SUB, phone="+6281234567890", channel="ussd")
    draws = iter(["K7ABCDE", "K7ABCDE", "K9XYZWV"])
    monkeypatch.setattr("sync.database.new_reference", lambda prefix: next(draws))
    assert store.free_reference("K") == "K9XYZWV"


def test_store_free_reference_gives_up_when_every_draw_is_taken(store, monkeypatch):
    store.add_submission(SUB, phone="+6281234567890", channel="ussd")
    drawn = []
    monkeypatch.setattr("sync.database.new_reference", lambda prefix: drawn.append(prefix) or "K7ABCDE")
    with pytest.raises(NoFreeReference, match="prefix 'K'"):
        store.free_reference("K")
    assert len(drawn) == REFERENCE_DRAWS


def test_store_transaction_rolls_back_everything(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_submission(SUB, phone="+6281234567890", channel="ussd")
            store.save_session("s", phone="+62", service_code="*1#", state={}, history="", response="CON x",
                               done=False, resumable=False)
            raise RuntimeError("crash before commit")
    assert store.submission("K7ABCDE") is None and store.session("s") is None
    assert not store.taken("voter", "nik", "3201234567890123", "+6281234567890")


def test_store_reopens_with_its_key_and_refuses_another(tmp_path, database_url):
    store = Store.open(tmp_path, database_url=database_url)
    store.add_submission(SUB, phone="+6281234567890", channel="ussd")
    store.close()
    again = Store.open(tmp_path, database_url=database_url)
    assert again.submission("K7ABCDE")["answers"]["name"] == "Siti Aminah"
    again.close()
    (tmp_path / KEY_FILE_NAME).write_bytes(b"x" * 64)
    other = Store.open(tmp_path, database_url=database_url)
    with pytest.raises(KeyFileError, match="another key"):
        other.submission("K7ABCDE")
    other.close()


def test_store_key_file_is_private(tmp_path):
    Store.open(tmp_path).close()
    assert (tmp_path / KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600


def test_store_recent_is_per_phone_and_newest_first(tmp_path, database_url):
    clock = iter(dt.datetime(2026, 11, day, tzinfo=dt.timezone.utc) for day in range(1, 20))
    store = Store.open(tmp_path, lambda: next(clock), database_url)
    for n in range(3):
        store.add_submission({**SUB, "ref": f"K7AAAA{n + 2}", "unique": {}}, phone="+6281234567890", channel="ussd")
    store.add_submission({**SUB, "ref": "K7ZZZZZ", "unique": {}}, phone="+254711082300", channel="ussd")
    assert [r["ref"] for r in store.recent_submissions("+6281234567890", 2)] == ["K7AAAA4", "K7AAAA3"]
    assert store.find_submission("K7ZZZZZ", "+6281234567890") is None
    assert store.find_submission("K7ZZZZZ", "+254711082300")["service"] == "voter"
    store.close()


def test_store_purges_old_sessions(tmp_path, database_url):
    now = [dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)]
    store = Store.open(tmp_path, lambda: now[0], database_url)
    store.save_session("old", phone="+62", service_code="*1#", state={}, history="", response="CON x",
                       done=False, resumable=True)
    now[0] += dt.timedelta(hours=30)
    store.save_session("new", phone="+62", service_code="*1#", state={}, history="", response="CON x",
                       done=False, resumable=True)
    assert store.purge_sessions(dt.timedelta(hours=24)) == 1
    assert store.session("old") is None and store.session("new") is not None
    store.close()


def test_reference_shape():
    prefix = check_prefix("k7")
    refs = {new_reference(prefix) for _ in range(2000)}
    assert len(refs) >= 1990  # 31^5 per prefix: a few collisions among thousands are expected, and retried
    for ref in refs:
        assert len(ref) == 7 and ref.startswith("K7") and set(ref) <= set(ALPHABET)
    assert not set("01ILO") & set(ALPHABET)
    # Every character at every place: with 2,000 draws one missing by chance is about a 1 in 10^26 event.
    for place in range(2, 7):
        assert {ref[place] for ref in refs} == set(ALPHABET)


def test_store_inbound_ids_are_remembered_then_forgotten(tmp_path, database_url):
    now = [dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)]
    store = Store.open(tmp_path, lambda: now[0], database_url)
    assert store.record_inbound("ATXid_1", "+6281234567890")
    assert not store.record_inbound("ATXid_1", "+6281234567890")
    now[0] += dt.timedelta(days=8)
    assert store.purge_inbound(dt.timedelta(days=7)) == 1
    assert store.record_inbound("ATXid_1", "+6281234567890")
    store.close()


def test_store_status_change(tmp_path, database_url):
    store = Store.open(tmp_path, database_url=database_url)
    store.add_submission(SUB, phone="+6281234567890", channel="ussd")
    changed = store.set_status("K7ABCDE", "in_progress")
    assert changed == {"phone": "+6281234567890", "language": "id", "service": "voter", "previous": "received"}
    assert store.set_status("K7ABCDE", "in_progress") is None
    assert store.set_status("NOSUCH", "resolved") is None
    with pytest.raises(ValueError, match="unknown status"):
        store.set_status("K7ABCDE", "lost")
    store.close()


def test_store_purge_personal_erases_only_acknowledged_old_submissions(tmp_path, database_url):
    clock = MovableClock()
    store = Store.open(tmp_path, clock, database_url)
    try:
        old = store.add_submission(SUB, phone="+6281234567890", channel="ussd", session_id="s1")
        store.add_submission({**SUB, "ref": "K7BBBBB", "unique": {}}, phone="+6281234567890", channel="ussd")
        store.mark_synced([{"id": old["id"], "result": "accepted"}])
        clock.advance(days=91)
        fresh = store.add_submission({**SUB, "ref": "K7CCCCC", "unique": {}}, phone="+6281234567890", channel="ussd")
        store.mark_synced([{"id": fresh["id"], "result": "accepted"}])

        assert store.purge_personal(dt.timedelta(days=90)) == 1
        assert store.purge_personal(dt.timedelta(days=90)) == 0  # erased once
        erased = store.submission("K7ABCDE")
        assert (erased["answers"], erased["phone"], erased["session_id"]) == ({}, "", None)
        assert (erased["service"], erased["status"], erased["created_at"]) == ("voter", "received", old["created_at"])
        assert store.submission("K7BBBBB")["answers"] == SUB["answers"]  # not yet at the centre: kept whole
        assert store.submission("K7CCCCC")["answers"] == SUB["answers"]  # too recent
        # The villager can still ask for its status, and the NIK still registers once.
        assert store.find_submission("K7ABCDE", "+6281234567890")["status"] == "received"
        assert store.taken("voter", "nik", SUB["answers"]["nik"], "+6281234567890")
    finally:
        store.close()


def test_store_history_keeps_every_status_and_note_in_order(tmp_path, database_url):
    clock = MovableClock()
    store = Store.open(tmp_path, clock, database_url)
    try:
        store.add_submission(SUB, phone="+6281234567890", channel="ussd")
        clock.advance(hours=1)
        store.set_status("K7ABCDE", "in_progress", "team sent")
        clock.advance(hours=1)
        store.set_status("K7ABCDE", "in_progress", "team sent")  # no change: no new line
        store.set_status("K7ABCDE", "resolved")
        history = store.history("K7ABCDE")
        assert [(h["status"], h["note"]) for h in history] == [
            ("received", None), ("in_progress", "team sent"), ("resolved", None)]
        assert [h["at"] for h in history] == sorted(h["at"] for h in history) and history[0]["at"] < history[1]["at"]
        assert store.history("NOSUCH") == []
    finally:
        store.close()


def test_store_history_of_submissions_stored_before_it_existed(tmp_path):
    class OldStore(Store):
        MIGRATIONS = STORE_MIGRATIONS[:6]

    old = OldStore.open(tmp_path)
    add_as_of_old(old, "K7AAAAA", {"location": "x"})
    add_as_of_old(old, "K7BBBBB", {"location": "y"}, status="resolved")
    old.close()
    store = Store.open(tmp_path)
    try:
        assert [h["status"] for h in store.history("K7AAAAA")] == ["received"]
        assert [h["status"] for h in store.history("K7BBBBB")] == ["received", "resolved"]
        assert store.submission("K7AAAAA")["operator"] is None
    finally:
        store.close()


# -- two processes sharing one store (workers, machines on one PostgreSQL) --------------------------------

class Racing:
    """Store `other` runs `fn(other)` in a thread while `first` holds a transaction open, the way a second worker
    runs the same statement while the first has not committed yet; `result()` is what it returned."""

    def __init__(self, first: Store, other: Store):
        self.first, self.other = first, other
        self.pid = other.db.execute("SELECT pg_backend_pid()").fetchone()[0] if other.postgres else None

    def run(self, hold, fn):
        outcome = {}

        def second():
            try:
                outcome["value"] = fn(self.other)
            except Exception as error:  # handed to the test, which asserts on it
                outcome["error"] = error

        with self.first.transaction():
            hold(self.first)
            thread = threading.Thread(target=second)
            thread.start()
            if self.pid is not None:  # the second one must really wait for the first's row, not run after it
                waiting = "SELECT cardinality(pg_blocking_pids(?)) > 0"
                wait_until(lambda: self.first.db.execute(waiting, [self.pid]).fetchone()[0])
        thread.join(timeout=30)
        assert not thread.is_alive()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def wait_until(check, timeout=15.0):
    """`eventually` for a synchronous test: poll `check()` until it is true, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.01)


@pytest.fixture
def two(tmp_path, database_url):
    first = Store.open(tmp_path, database_url=database_url)
    other = Store.open(tmp_path, database_url=database_url)
    yield Racing(first, other)
    other.close()
    first.close()


def test_two_stores_take_one_redelivered_sms_once(two):
    won = two.run(lambda s: s.record_inbound("ATXid_9", "+6281234567890"),
                  lambda s: s.record_inbound("ATXid_9", "+6281234567890"))
    assert won is False
    assert two.other.purge_inbound(dt.timedelta(days=-1)) == 1  # one row, whoever stored it


def test_two_stores_claim_a_unique_answer_once_for_one_phone(two):
    def add(store, ref, phone):
        return store.add_submission({**SUB, "ref": ref}, phone=phone, channel="ussd")

    with pytest.raises(AlreadyClaimed):
        two.run(lambda s: add(s, "K7AAAAA", "+6281234567890"), lambda s: add(s, "K7BBBBB", "+6281234567890"))
    assert two.other.submission("K7BBBBB") is None  # nothing of the refused one is kept
    assert two.other.taken("voter", "nik", SUB["answers"]["nik"], "+6281234567890")


def test_two_stores_store_both_phones_of_one_unique_answer_and_the_first_holds_it(two):
    def add(store, ref, phone):
        return store.add_submission({**SUB, "ref": ref}, phone=phone, channel="ussd")

    # Not refused, not told (see add_submission): the central backend holds the second for staff review.
    two.run(lambda s: add(s, "K7AAAAA", "+6281234567890"), lambda s: add(s, "K7BBBBB", "+6285550001111"))
    assert two.other.counts()["submissions"]["total"] == 2
    assert two.other.taken("voter", "nik", SUB["answers"]["nik"], "+6281234567890")
    assert not two.other.taken("voter", "nik", SUB["answers"]["nik"], "+6285550001111")


def test_two_stores_never_store_one_reference_twice(two):
    def add(store, phone):
        return store.add_submission({**SUB, "unique": {}}, phone=phone, channel="ussd")

    with pytest.raises(IntegrityError):
        two.run(lambda s: add(s, "+6281234567890"), lambda s: add(s, "+6285550001111"))
    assert two.other.counts()["submissions"]["total"] == 1


def test_two_stores_count_together(two):
    two.run(lambda s: s.count_meta("held_submissions"), lambda s: s.count_meta("held_submissions"))
    assert two.other.meta("held_submissions") == "2"


def test_two_stores_lose_no_failed_sign_in(two):
    for _ in range(LOCK_AFTER - 2):
        two.first.accounts.record_failure("ani")
    lock = two.run(lambda s: s.accounts.record_failure("ani"), lambda s: s.accounts.record_failure("Ani"))
    assert lock > 0 and two.first.accounts.locked_for("ani") > 0  # the LOCK_AFTERth failure locked it


def test_two_stores_hand_one_sms_to_the_provider_once(two):
    queued = two.first.outbox.add("+6281234567890", "Terima kasih", "confirmation", ttl=dt.timedelta(hours=1))
    first = []
    second = two.run(lambda s: first.append(s.outbox.begin(queued["id"])), lambda s: s.outbox.begin(queued["id"]))
    assert first[0]["send_id"] == f"{queued['id']}-1" and second is None  # the second sender finds it taken


def test_two_stores_never_move_a_delivered_sms_back(two):
    queued = two.first.outbox.add("+6281234567890", "Terima kasih", "confirmation", ttl=dt.timedelta(hours=1))
    two.first.outbox.begin(queued["id"])
    two.first.outbox.sent(queued["id"], "ATPid_1", "Success")
    # Success and a late Buffered report for one SMS reach two workers at once.
    late = two.run(lambda s: s.outbox.report("ATPid_1", "Success", None),
                   lambda s: s.outbox.report("ATPid_1", "Buffered", None))
    assert late == "delivered"
    assert two.other.outbox.messages()[0]["state"] == "delivered"


def test_two_stores_record_one_status_change_once(two):
    two.first.add_submission(SUB, phone="+6281234567890", channel="ussd")
    # One change reaches two processes at once: one of them makes it, the other finds it made.
    second = two.run(lambda s: s.set_status("K7ABCDE", "in_progress", "Tim berangkat"),
                     lambda s: s.set_status("K7ABCDE", "in_progress", "Tim berangkat"))
    assert second is None
    assert [h["status"] for h in two.other.history("K7ABCDE")] == ["received", "in_progress"]


# -- one submission per USSD session ------------------------------------------------------------------------

def test_store_keeps_one_submission_per_session(store):
    store.add_submission(SUB, phone="+6281234567890", channel="ussd", session_id="s1")
    with pytest.raises(IntegrityError):
        store.add_submission({**SUB, "ref": "K7BBBBB", "unique": {}}, phone="+6281234567890", channel="ussd",
                             session_id="s1")
    # Submissions of no session (SMS) are as many as they come.
    for ref in ("K7CCCCC", "K7DDDDD"):
        store.add_submission({**SUB, "ref": ref, "unique": {}}, phone="+6281234567890", channel="sms")
    assert store.counts()["submissions"]["total"] == 3
    assert store.submission_of_session("s1")["ref"] == "K7ABCDE"


def test_store_with_two_submissions_of_one_session_from_before_still_opens(tmp_path, database_url):
    class OldStore(Store):
        MIGRATIONS = STORE_MIGRATIONS[:10]
        PG_MIGRATIONS = Store.PG_MIGRATIONS[:1]

    old = OldStore.open(tmp_path, database_url=database_url)
    for ref in ("K7AAAAA", "K7BBBBB"):  # two workers' copies of one confirm hop, before they took turns
        old.add_submission({**SUB, "ref": ref, "unique": {}}, phone="+6281234567890", channel="ussd",
                           session_id="s1")
    old.close()
    store = Store.open(tmp_path, database_url=database_url)
    try:
        assert store.counts()["submissions"]["total"] == 2  # nothing is lost
        assert store.submission("K7BBBBB")["answers"] == SUB["answers"]
        assert store.submission_of_session("s1")["ref"] == "K7AAAAA"  # the first keeps its session
        with pytest.raises(IntegrityError):
            store.add_submission({**SUB, "ref": "K7CCCCC", "unique": {}}, phone="+6281234567890", channel="ussd",
                                 session_id="s1")
    finally:
        store.close()


def test_two_stores_take_turns_at_one_session(two):
    def confirm(store, ref):
        # What a confirm hop does at a worker (`gateway.ussd.ussd_turn`): wait for the session, then store
        # its submission unless one is stored already.
        with store.transaction():
            store.lock_session("s1")
            made = store.submission_of_session("s1")
            if made is None:
                store.add_submission({**SUB, "ref": ref, "unique": {}}, phone="+6281234567890", channel="ussd",
                                     session_id="s1")
            return made

    reused = two.run(lambda s: confirm(s, "K7AAAAA"), lambda s: confirm(s, "K7BBBBB"))
    assert reused["ref"] == "K7AAAAA" and two.other.counts()["submissions"]["total"] == 1


def test_sessions_written_before_they_were_sealed_together_still_read_and_resume(tmp_path, database_url):
    class OldStore(Store):
        MIGRATIONS = STORE_MIGRATIONS[:11]
        PG_MIGRATIONS = Store.PG_MIGRATIONS[:2]

    phone = "+6281234567890"
    old = OldStore.open(tmp_path, database_url=database_url)
    for session_id, history in (("open", "1*2"), ("done", "1*2*3")):
        # What a gateway of before wrote: state, history and answer sealed each in a column of its own.
        old.db.execute(
            "INSERT INTO ussd_sessions (id, phone_hash, service_code, state, history, response, done, resumable, "
            "created_at, updated_at) VALUES (?, ?, '*384#', ?, ?, ?, ?, ?, ?, ?)",
            [session_id, old.phone_digest(phone), old.sealer.seal('{"flow":"report","screen":"place"}'),
             old.sealer.seal(history), old.sealer.seal("CON Di mana?"), int(session_id == "done"),
             int(session_id == "open"), old.stamp(old.clock()), old.stamp(old.clock())])
    old.close()
    store = Store.open(tmp_path, database_url=database_url)
    try:
        assert store.session("open") == {"state": {"flow": "report", "screen": "place"}, "history": "1*2",
                                         "response": "CON Di mana?", "done": False,
                                         "phone_hash": store.phone_digest(phone)}
        assert store.session("done")["done"] is True
        assert store.resumable_session(phone, dt.timedelta(minutes=5), exclude="new") == (
            "open", {"flow": "report", "screen": "place"})
        # Its next hop writes it the new way: one sealed value, the old columns emptied.
        store.save_session("open", phone=phone, service_code="*384#", state={"flow": "report", "screen": "what"},
                           history="1*2*Dusun", response="CON Apa?", done=False, resumable=True)
        assert store.session("open")["history"] == "1*2*Dusun"
        sealed, state, history, response = store.db.execute(
            "SELECT sealed, state, history, response FROM ussd_sessions WHERE id = 'open'").fetchone()
        assert (state, history, response) == ("", "", "") and sealed.startswith("s1:")
        assert "Dusun" not in sealed
    finally:
        store.close()
    store = Store.open(tmp_path, database_url=database_url)  # read from the row this time, not from memory
    try:
        assert store.session("open")["state"] == {"flow": "report", "screen": "what"}
        assert store.session("open")["history"] == "1*2*Dusun"
    finally:
        store.close()


def test_a_hop_of_a_session_under_way_leaves_the_phone_index_alone(store):
    if store.postgres:
        pytest.skip("SQLite's query plans")
    phone = "+6281234567890"
    store.save_session("s1", phone=phone, service_code="*384#", state={}, history="", response="CON a",
                       done=False, resumable=True)
    # The caller's sessions are found by the phone's digest, through an index of that column only, which the
    # later hops of the session (they change state, resumable and updated_at) never rewrite.
    plan = query_plan(store.db, "SELECT id FROM ussd_sessions WHERE phone_hash = 'x' AND resumable = 1 "
                                "AND updated_at >= '2024' AND id != 'y' ORDER BY updated_at DESC LIMIT 1")
    assert "idx_ussd_sessions_phone_hash" in plan
    indexed = {row[2] for index in store.db.execute("PRAGMA index_list(ussd_sessions)").fetchall()
               for row in store.db.execute(f"PRAGMA index_info({index[1]})")}
    assert not indexed & {"state", "sealed", "resumable", "done"}
    store.save_session("s1", phone=phone, service_code="*384#", state={"a": 1}, history="1", response="CON b",
                       done=False, resumable=True)
    assert store.resumable_session(phone, dt.timedelta(minutes=5), exclude="s2") == ("s1", {"a": 1})


def test_a_session_write_that_was_undone_is_not_read_back(store):
    phone = "+6281234567890"

    def save(history):
        store.save_session("s1", phone=phone, service_code="*384#", state={"at": history}, history=history,
                           response=f"CON {history}", done=False, resumable=True)

    with store.transaction():
        save("1")
    # One hop of a group fails in its savepoint and the group commits the others' work.
    with store.transaction():
        with pytest.raises(RuntimeError):
            with store.savepoint():
                save("1*2")
                raise RuntimeError("this hop fails")
        store.set_meta(other_hop="committed")
    assert store.session("s1")["history"] == "1" and store.session("s1")["state"] == {"at": "1"}
    # A whole transaction undone.
    with pytest.raises(RuntimeError):
        with store.transaction():
            save("1*2")
            raise RuntimeError("this transaction fails")
    # What the next hop reads is what was committed, whatever this process had in memory of the undone write.
    assert store.session("s1")["history"] == "1" and store.session("s1")["state"] == {"at": "1"}
    with store.transaction():
        save("1*3")
    assert store.session("s1")["response"] == "CON 1*3"


def test_sessions_under_way_past_what_is_kept_in_memory_still_read(store, monkeypatch):
    monkeypatch.setattr("sync.store.SESSIONS_KEPT", 3)
    with store.transaction():
        for n in range(5):
            store.save_session(f"s{n}", phone=f"+62812345678{n}", service_code="*384#", state={"n": n},
                               history=str(n), response=f"CON {n}", done=False, resumable=True)
    assert [store.session(f"s{n}")["state"] for n in range(5)] == [{"n": n} for n in range(5)]
    assert store.session("s0")["phone_hash"] == store.phone_digest("+628123456780")
    assert store.postgres or len(store._sessions) == 3  # the oldest went; on PostgreSQL nothing is kept


def test_a_session_idle_past_what_memory_keeps_is_read_from_its_row(store, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("sync.store.time.monotonic", lambda: clock[0])
    with store.transaction():
        store.save_session("s1", phone="+6281234567890", service_code="*384#", state={"n": 1}, history="1",
                           response="CON 1", done=False, resumable=True)
    # Another process changed the row meanwhile (a command run beside the server): seen once memory let go.
    store.db.execute("UPDATE ussd_sessions SET done = 1 WHERE id = 's1'")
    assert store.session("s1")["done"] is store.postgres
    clock[0] += 301
    assert store.session("s1")["done"] is True
