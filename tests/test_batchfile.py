"""Batch files carried by a kiosk operator: export, import at the centre, answers back."""

import base64
import gzip
import json
import os
import subprocess
import sys

import pytest
from aiohttp import web

from conftest import free_port, make_config
from flows import Engine
from gateway.config import data_root
from gateway.resources import Rules
from gateway.syncer import Syncer
from sync import batchfile
from sync.central import CentralConfig, CentralStore, create_central_app, export_updates_file, import_batch_file
from sync.errors import BatchFileError
from sync.store import Store
from sync.thread import StoreThread

SECRET = "batch-secret"


def kentongan(home, *args, gateway_id="desa-1", secret=SECRET):
    """Run the CLI beside `home`, from a folder with a config file (every setting from the environment)."""
    (home.parent / "config.yaml").touch()
    env = {**os.environ, "KENTONGAN_GATEWAY_DATA_DIR": str(home), "KENTONGAN_GATEWAY_ID": gateway_id,
           "KENTONGAN_SYNC_SECRET": secret}
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=env, cwd=home.parent,
                          capture_output=True, text=True, timeout=60)


def submit(home, count, start=0, prefix="K"):
    store = Store.open(home)
    refs = []
    for n in range(start, start + count):
        ref = prefix + "".join("23456789ABCDEFGH"[int(d)] for d in f"{n:05d}")
        store.add_submission({"service": "report", "ref": ref, "language": "id", "unique": {},
                              "answers": {"category": "road", "location": "Sukamaju", "description": "Rusak"}},
                             phone=f"+62812345{n:05d}", channel="ussd")
        refs.append(ref)
    store.close()
    return refs


def central_refs(home):
    store = CentralStore.open(home)
    refs = sorted(r["ref"] for r in store.submissions(limit=1000)[0])
    store.close()
    return refs


def pending(home):
    store = Store.open(home)
    count = store.counts()["sync"]["pending"]
    store.close()
    return count


@pytest.fixture
def homes(tmp_path):
    gateway, central = tmp_path / "gateway", tmp_path / "central"
    gateway.mkdir()
    central.mkdir()
    return gateway, central


def test_batchfile_round_trip_and_double_import(homes, tmp_path):
    gateway, central = homes
    refs = submit(gateway, 3)
    out = kentongan(gateway, "export", str(tmp_path / "out.kbf"))
    assert out.returncode == 0 and out.stdout.startswith("exported 3 submissions")
    first = kentongan(central, "central", "import", str(tmp_path / "out.kbf"))
    assert first.stdout.strip() == "3 submissions from desa-1: 3 new, 0 already there, 0 rejected"
    again = kentongan(central, "central", "import", str(tmp_path / "out.kbf"))
    assert again.stdout.strip() == "3 submissions from desa-1: 0 new, 3 already there, 0 rejected"
    assert central_refs(central) == sorted(refs)

    store = CentralStore.open(central)
    store.set_status(refs[0], "resolved", "Sudah diperbaiki")
    store.close()
    back = kentongan(central, "central", "export-updates", "--gateway", "desa-1", str(tmp_path / "back.kbf"))
    assert back.returncode == 0 and "3 acknowledgements and 1 status updates" in back.stdout
    applied = kentongan(gateway, "import", str(tmp_path / "back.kbf"))
    assert applied.stdout.strip() == ("3 submissions acknowledged, 1 status updates applied, 1 SMS notices queued, "
                                      "0 not sent (the number said STOP)")
    assert pending(gateway) == 0
    twice = kentongan(gateway, "import", str(tmp_path / "back.kbf"))
    assert twice.stdout.strip() == ("0 submissions acknowledged, 0 status updates applied, 0 SMS notices queued, "
                                    "0 not sent (the number said STOP)")
    store = Store.open(gateway)
    assert store.submission(refs[0])["status"] == "resolved"
    notices = [m for m in store.outbox.messages() if m["kind"] == "notice"]
    store.close()
    assert [m["body"] for m in notices] == [f"Kentongan: {refs[0]} Laporan masalah kini Selesai. Sudah beres? Balas 1 "
                                             f"ya atau 2 belum, dan nilai 1-5 (mis. 1 5). Sudah diperbaiki"]


def test_batchfile_items_also_arriving_online_are_not_doubled(homes, tmp_path):
    gateway, central = homes
    submit(gateway, 2)
    kentongan(gateway, "export", str(tmp_path / "a.kbf"))
    submit(gateway, 1, start=10)
    kentongan(gateway, "export", str(tmp_path / "b.kbf"))  # holds the first two again, and the new one
    kentongan(central, "central", "import", str(tmp_path / "a.kbf"))
    second = kentongan(central, "central", "import", str(tmp_path / "b.kbf"))
    assert second.stdout.strip() == "3 submissions from desa-1: 1 new, 2 already there, 0 rejected"
    assert len(central_refs(central)) == 3


def broken(path, how):
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "tampered":
        envelope = json.loads(gzip.decompress(raw))
        sealed = bytearray(base64.b64decode(envelope["payload"]))
        sealed[10] ^= 1
        envelope["payload"] = base64.b64encode(bytes(sealed)).decode()
        path.write_bytes(gzip.compress(json.dumps(envelope).encode()))
    elif how == "relabelled":
        envelope = json.loads(gzip.decompress(raw))
        envelope["created_at"] = "2020-01-01T00:00:00+00:00"
        path.write_bytes(gzip.compress(json.dumps(envelope).encode()))
    elif how == "not a batch":
        path.write_bytes(gzip.compress(b'{"hello": "world"}'))
    elif how == "garbage":
        path.write_bytes(b"PK\x03\x04 this is a zip file")


@pytest.mark.parametrize("how, message", [
    ("truncated", "is truncated or not a Kentongan batch file"),
    ("tampered", "was changed after it was signed, or signed with another secret"),
    ("relabelled", "was changed after it was signed, or signed with another secret"),
    ("not a batch", "is not a Kentongan batch file"),
    ("garbage", "is truncated or not a Kentongan batch file"),
])
def test_batchfile_damaged_file_is_refused_and_changes_nothing(homes, tmp_path, how, message):
    gateway, central = homes
    submit(gateway, 2)
    path = tmp_path / "out.kbf"
    kentongan(gateway, "export", str(path))
    broken(path, how)
    result = kentongan(central, "central", "import", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"kentongan: {path} {message}"]
    assert central_refs(central) == []


def test_batchfile_from_another_gateway_is_refused(homes, tmp_path):
    gateway, central = homes
    submit(gateway, 1)
    path = tmp_path / "out.kbf"
    kentongan(gateway, "export", str(path), gateway_id="desa-2", secret="other")
    result = kentongan(central, "central", "import", str(path))
    assert result.returncode == 2
    assert "comes from gateway 'desa-2', which this central backend does not know" in result.stderr
    forged = kentongan(gateway, "export", str(path), gateway_id="desa-1", secret="guessed")
    assert forged.returncode == 0
    result = kentongan(central, "central", "import", str(path))
    assert result.returncode == 2 and "signed with another secret" in result.stderr
    assert central_refs(central) == []


def test_batchfile_answer_for_another_gateway_is_refused(homes, tmp_path):
    gateway, central = homes
    Store.open(gateway).close()
    path = tmp_path / "back.kbf"
    batchfile.write(path, "updates", "desa-9", SECRET, {"acks": [], "updates": []})
    result = kentongan(gateway, "import", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"kentongan: {path} belongs to gateway 'desa-9', not 'desa-1'"
    submissions_file = tmp_path / "subs.kbf"
    batchfile.write(submissions_file, "submissions", "desa-1", SECRET, {"items": []})
    result = kentongan(gateway, "import", str(submissions_file))
    assert result.returncode == 2 and "holds submissions, not updates" in result.stderr


def test_batchfile_write_is_atomic(tmp_path):
    path = tmp_path / "x.kbf"
    batchfile.write(path, "updates", "desa-1", SECRET, {"acks": ["a"], "updates": []})
    assert batchfile.read(path, "updates", "desa-1", SECRET) == {"acks": ["a"], "updates": []}
    assert [p.name for p in tmp_path.iterdir()] == ["x.kbf"]


def test_batchfile_shows_no_personal_data(homes, tmp_path):
    gateway, _ = homes
    store = Store.open(gateway)
    store.add_submission({"service": "voter", "ref": "KBVOTER", "language": "id", "unique": {},
                          "answers": {"nik": "3201234567890123", "name": "Siti Aminah"}},
                         phone="+6281234567890", channel="ussd")
    store.close()
    kentongan(gateway, "export", str(tmp_path / "out.kbf"))
    opened = gzip.decompress((tmp_path / "out.kbf").read_bytes())
    for secret in (b"3201234567890123", b"Siti Aminah", b"6281234567890", b"KBVOTER"):
        assert secret not in opened


def test_batchfile_central_knows_gateways_added_by_the_operator(homes, tmp_path):
    gateway, central = homes
    added = kentongan(central, "central", "gateway", "add", "desa-7")
    assert added.returncode == 0, added.stderr
    told = dict(line.strip().split(": ", 1) for line in added.stdout.splitlines()[-2:])
    secret, prefix = told["sync.secret"], told["gateway.ref_prefix"]
    assert len(secret) >= 40 and prefix not in ("K", "Z")  # desa-1's (the config's own), the centre's
    submit(gateway, 2, prefix=prefix)
    kentongan(gateway, "export", str(tmp_path / "out.kbf"), gateway_id="desa-7", secret=secret)
    result = kentongan(central, "central", "import", str(tmp_path / "out.kbf"))
    assert result.stdout.strip() == "2 submissions from desa-7: 2 new, 0 already there, 0 rejected"
    listed = kentongan(central, "central", "gateway", "list").stdout
    assert f"desa-7\tprefix {prefix}\tsince" in listed and "2 submissions" in listed


async def test_batchfile_items_arriving_online_after_the_file_are_duplicates(homes, tmp_path):
    gateway, central_home = homes
    refs = submit(gateway, 3)
    kentongan(gateway, "export", str(tmp_path / "out.kbf"))
    assert "3 new" in kentongan(central_home, "central", "import", str(tmp_path / "out.kbf")).stdout
    port = free_port()
    engine = Engine.load(data_root() / "menus", data_root() / "locale", ["id", "en", "sw"], "id")
    runner = web.AppRunner(create_central_app(CentralConfig(central_home, "staff", engine.forms("en"),
                                                            gateways={"desa-1": SECRET}, prefixes={"desa-1": "K"})))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    store = await StoreThread.open(Store.open, gateway)
    try:
        syncer = Syncer(store, engine, Rules.from_config(make_config(tmp_path / "cfg")),
                        url=f"http://127.0.0.1:{port}", gateway_id="desa-1", secret=SECRET, batch_size=100,
                        timeout=5)
        summary = await syncer.round()  # the link came back before the answer file did
        assert (summary.pushed, summary.accepted, summary.duplicate) == (3, 0, 3)
    finally:
        store.close()
        await runner.cleanup()
    assert central_refs(central_home) == sorted(refs)


def test_batchfile_import_and_export_at_the_centre_as_library_calls(homes, tmp_path):
    gateway, central = homes
    refs = submit(gateway, 2)
    assert kentongan(gateway, "export", str(tmp_path / "out.kbf")).returncode == 0
    store = CentralStore.open(central)
    try:
        with pytest.raises(BatchFileError, match="gateway 'desa-1', which this central backend does not know"):
            import_batch_file(store, tmp_path / "out.kbf")
        with pytest.raises(BatchFileError, match="unknown gateway 'desa-1'"):
            export_updates_file(store, "desa-1", tmp_path / "back.kbf")
        store.add_gateway("desa-1", SECRET, "K")
        gateway_id, results = import_batch_file(store, tmp_path / "out.kbf")
        assert (gateway_id, [r["result"] for r in results]) == ("desa-1", ["accepted", "accepted"])
        assert [r["result"] for r in import_batch_file(store, tmp_path / "out.kbf")[1]] == ["duplicate"] * 2
        store.set_status(refs[1], "in_progress")
        acks, updates, size = export_updates_file(store, "desa-1", tmp_path / "back.kbf")
        assert (acks, updates) == (2, 1) and size == (tmp_path / "back.kbf").stat().st_size
        payload = batchfile.read(tmp_path / "back.kbf", "updates", "desa-1", SECRET)
        assert [u["ref"] for u in payload["updates"]] == [refs[1]] and len(payload["acks"]) == 2
        with pytest.raises(BatchFileError, match="cannot write"):
            export_updates_file(store, "desa-1", tmp_path / "no such folder" / "back.kbf")
        assert [g["id"] for g in store.gateways()] == ["desa-1"] and store.gateways()[0]["submissions"] == 2
    finally:
        store.close()


def test_batchfile_a_nik_registered_at_two_gateways_is_held_for_review_and_the_import_says_so(homes, tmp_path):
    gateway, central = homes
    other = tmp_path / "gateway-2"
    other.mkdir()
    added = kentongan(central, "central", "gateway", "add", "desa-2")
    told = dict(line.strip().split(": ", 1) for line in added.stdout.splitlines() if line.startswith("  "))
    refs = []
    for home, prefix in ((gateway, "K"), (other, told["gateway.ref_prefix"])):
        store = Store.open(home)
        ref = prefix + "VOTE2"
        store.add_submission({"service": "voter", "ref": ref, "language": "id", "unique": {"nik": "3201231708900001"},
                              "answers": {"nik": "3201231708900001", "name": "Siti Aminah"}},
                             phone=f"+6281234567{len(refs)}", channel="ussd")
        store.close()
        refs.append(ref)
    kentongan(gateway, "export", str(tmp_path / "one.kbf"))
    kentongan(other, "export", str(tmp_path / "two.kbf"), gateway_id="desa-2", secret=told["sync.secret"])
    first = kentongan(central, "central", "import", str(tmp_path / "one.kbf"))
    assert first.stdout.strip() == "1 submissions from desa-1: 1 new, 0 already there, 0 rejected"
    second = kentongan(central, "central", "import", str(tmp_path / "two.kbf"))
    assert second.stdout.strip().splitlines() == [
        "1 submissions from desa-2: 1 new, 0 already there, 0 rejected",
        f"  held for review {refs[1]}: nik already registered in {refs[0]}"]


def test_batchfile_carries_a_villagers_not_fixed_to_the_centre_and_its_acknowledgement_back(homes, tmp_path):
    gateway, central = homes
    (ref,) = submit(gateway, 1)
    assert kentongan(gateway, "export", str(tmp_path / "out.kbf")).returncode == 0
    assert kentongan(central, "central", "import", str(tmp_path / "out.kbf")).returncode == 0
    store = CentralStore.open(central)
    store.set_status(ref, "resolved", "Sudah diperbaiki")
    store.close()
    assert kentongan(central, "central", "export-updates", "--gateway", "desa-1", str(tmp_path / "back.kbf"))\
        .returncode == 0
    assert kentongan(gateway, "import", str(tmp_path / "back.kbf")).returncode == 0

    store = Store.open(gateway)
    assert store.add_feedback(store.submission(ref)["id"], fixed=False, rating=1, words="masih berlubang",
                              channel="sms")
    store.close()
    assert kentongan(gateway, "export", str(tmp_path / "answers.kbf")).returncode == 0  # no submission, one answer
    assert kentongan(central, "central", "import", str(tmp_path / "answers.kbf")).returncode == 0
    store = CentralStore.open(central)
    row = store.submission(ref)
    words = [h["note"] for h in store.history(row["id"]) if h["kind"] == "feedback"]
    store.close()
    assert (row["status"], row["reopened"], row["fixed"], words) == ("in_progress", 1, 0, ["masih berlubang"])

    assert kentongan(central, "central", "export-updates", "--gateway", "desa-1", str(tmp_path / "back2.kbf"))\
        .returncode == 0
    assert kentongan(gateway, "import", str(tmp_path / "back2.kbf")).returncode == 0
    store = Store.open(gateway)
    try:
        assert store.pending_feedback(10) == []  # acknowledged: carried no more
        assert store.submission(ref)["status"] == "in_progress"
    finally:
        store.close()
