"""The `kentongan` command."""

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import free_port
from gateway.config import data_root
from sync.store import Store

REPORT = ("", "1", "1*1", "1*1*Dusun Kidul", "1*1*Dusun Kidul*Jalan rusak", "1*1*Dusun Kidul*Jalan rusak*1")


def kentongan(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})}, **kwargs)


def write_config(folder, **sections):
    """A config.yaml in `folder` with data under folder/var, plus `sections` ({"gateway": {"port": 1}})."""
    folder.mkdir(parents=True, exist_ok=True)
    sections.setdefault("gateway", {}).setdefault("data_dir", str(folder / "var"))
    text = "".join(f"{name}:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in keys.items())
                   for name, keys in sections.items())
    (folder / "config.yaml").write_text(text)
    return folder / "config.yaml"


def wait_until(check, timeout=30.0):
    """Poll `check()` until it is true (returning it) or `timeout` seconds have passed (failing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        time.sleep(0.05)


def dial_report(port):
    """A whole problem report through the running gateway's callback; returns the last screen."""
    form = "sessionId=a&serviceCode=*384*1%23&phoneNumber=%2B6281234567890&text="
    for text in REPORT:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/ussd/africastalking",
                                         data=form.replace("text=", f"text={text}").encode())
        body = urllib.request.urlopen(request, timeout=5).read().decode()
        if text == "":
            assert body.startswith("CON Kentongan, layanan desa. Pilih:")
    return body


def healthy(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200


def test_cli_serve_answers_the_main_menu_and_status_counts(tmp_path):
    port = free_port()
    write_config(tmp_path, gateway={"port": port})
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: healthy(port))
        assert dial_report(port).startswith("END Terima kasih")
        # The console provider sends in the background.
        wait_until(lambda: json.loads(kentongan("status", "--json", cwd=tmp_path).stdout)["outbox"]["sent"])
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0]
    assert "+6281234567890" not in output and "+62812****890" in output
    assert "Cek status: kirim CEK" in output  # the console provider prints the confirmation
    result = kentongan("status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["submissions"]["total"] == 1
    assert counts["submissions"]["by_sync_state"] == {"pending": 1}
    assert counts["outbox"]["sent"] == 1 and counts["outbox"]["dead"] == 0  # the console provider
    rows = json.loads(kentongan("outbox", "--json", cwd=tmp_path).stdout)
    assert [(r["kind"], r["state"], r["to"]) for r in rows] == [("confirmation", "sent", "+62812****890")]
    assert "Cek status: kirim CEK" in rows[0]["text"]
    dead = kentongan("outbox", "--state", "dead", cwd=tmp_path)
    assert dead.returncode == 0 and dead.stdout == ""
    human = kentongan("status", cwd=tmp_path)
    assert "submissions: 1" in human.stdout and "sync pending: 1" in human.stdout
    assert "outbox sent: 1" in human.stdout
    assert "sync: 1 pending, 0 sent, 0 rejected; last success never" in human.stdout


def test_cli_serve_refuses_a_broken_menu(tmp_path):
    menus = tmp_path / "menus"
    menus.mkdir()
    (menus / "main.yaml").write_text("spec_version: 1\nflow: main\n")
    result = kentongan("serve", env={"KENTONGAN_USSD_MENUS_DIR": str(menus)}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"kentongan: menu or catalog error: {menus / 'main.yaml'}: 'screens' must be a non-empty mapping"]


async def test_cli_simulate_walks_a_report(gateway):
    import asyncio

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "--url", gateway.url + "/ussd/africastalking",
        "--config", str(gateway.config.source),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(b"1\n1\nDusun Kidul\nJalan rusak\n1\n"), 60)
    assert process.returncode == 0, err
    screens = out.decode()
    assert screens.startswith("Kentongan, layanan desa. Pilih:")
    assert "Terima kasih. Laporan Anda diterima." in screens


def test_cli_simulate_without_a_gateway(tmp_path):
    result = kentongan("simulate", "--url", f"http://127.0.0.1:{free_port()}/ussd/africastalking",
                       cwd=tmp_path, input="")
    assert result.returncode == 2
    assert result.stderr.startswith("kentongan: cannot reach the gateway at http://127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_serve_with_embedded_central_then_sync_and_status(tmp_path):
    port, central_port = free_port(), free_port()
    write_config(tmp_path, gateway={"port": port}, sync={"secret": "s", "interval_seconds": 3600},
                 central={"embedded": True, "port": central_port, "url": f"http://127.0.0.1:{central_port}",
                          "staff_token": "t"})
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: healthy(port))
        assert dial_report(port).startswith("END Terima kasih")
        result = kentongan("sync", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "pushed 1 (1 new, 0 already there, 0 rejected)" in result.stdout
        status = json.loads(kentongan("status", "--json", cwd=tmp_path).stdout)
        assert status["sync"]["pending"] == 0 and status["sync"]["sent"] == 1
        assert status["sync"]["last_success"] and status["sync"]["last_error"] is None
        staff = urllib.request.Request(f"http://127.0.0.1:{central_port}/api/v1/submissions",
                                       headers={"Authorization": "Bearer t"})
        assert len(json.loads(urllib.request.urlopen(staff, timeout=5).read())["submissions"]) == 1
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def test_cli_sync_with_central_down_says_so(tmp_path):
    write_config(tmp_path, sync={"secret": "s"}, central={"url": f"http://127.0.0.1:{free_port()}"})
    Store.open(tmp_path / "var").close()
    result = kentongan("sync", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("kentongan: sync failed: central backend unreachable")
    status = json.loads(kentongan("status", "--json", cwd=tmp_path).stdout)
    assert status["sync"]["last_error"].startswith("central backend unreachable")


def test_cli_sync_refused_secret_says_so_in_words(tmp_path):
    port, central_port = free_port(), free_port()
    write_config(tmp_path / "centre", gateway={"id": "desa-1"}, sync={"secret": "the-real-one"},
                 central={"port": central_port})
    central = subprocess.Popen([sys.executable, "-m", "gateway", "central", "serve"], cwd=tmp_path / "centre",
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: healthy(central_port))
        write_config(tmp_path, gateway={"id": "desa-1", "port": port}, sync={"secret": "a-wrong-one"},
                     central={"url": f"http://127.0.0.1:{central_port}"})
        Store.open(tmp_path / "var").close()
        result = kentongan("sync", cwd=tmp_path)
    finally:
        central.send_signal(signal.SIGINT)
        central.wait(timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "kentongan: sync failed: central refuses this gateway's secret")
    human = kentongan("status", cwd=tmp_path).stdout
    assert "sync: refused: central refuses this gateway's secret" in human


def test_cli_store_commands_refuse_without_a_config_and_say_where_they_looked(tmp_path):
    for command in (["status"], ["outbox"], ["sync"], ["export", "x.batch"], ["import", "x.batch"],
                    ["central", "gateway", "list"]):
        result = kentongan(*command, cwd=tmp_path)
        assert result.returncode == 2, command
        assert result.stderr.strip().splitlines() == [
            f"kentongan: config error: no config file: looked for {tmp_path / 'config.yaml'}; "
            f"pass --config PATH or run from the folder that has config.yaml"], command
    assert not (tmp_path / "var").exists()  # no empty store, no new key


def test_cli_store_commands_refuse_a_folder_with_no_store(tmp_path):
    write_config(tmp_path)
    result = kentongan("status", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"kentongan: no gateway store in {tmp_path / 'var'} (gateway.db); "
        f"check gateway.data_dir, or run `kentongan serve` there first"]
    assert not (tmp_path / "var" / "gateway.key").exists()


def test_cli_misspelt_variable_stops_with_a_hint(tmp_path):
    result = kentongan("serve", env={"KENTONGAN_GATEWAY_PORTT": "9999"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kentongan: config error: KENTONGAN_GATEWAY_PORTT: unknown setting (did you mean KENTONGAN_GATEWAY_PORT?)"]


def test_cli_open311_service_that_is_no_form_stops_start_up(tmp_path):
    write_config(tmp_path, central={"open311_services": ["report", "status"]})
    result = kentongan("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kentongan: config error: central.open311_services: 'status' is not a flow that makes submissions "
        "(these do: permit, report, voter)"]


def test_cli_serve_without_a_config_says_it_runs_on_defaults(tmp_path):
    with socket.socket() as taken:  # a port in use, so that serve stops right after saying how it runs
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kentongan("serve", env={"KENTONGAN_GATEWAY_PORT": str(port)}, cwd=tmp_path)
    assert "no config.yaml here: serving on defaults" in result.stderr
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("kentongan: cannot serve: ")


def test_cli_serve_off_loopback_refuses_demo_secrets_and_open_callbacks(tmp_path):
    shipped = (data_root() / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(shipped.replace("data_dir: ./var", f"data_dir: {tmp_path / 'var'}"))
    with socket.socket() as taken:  # on loopback the demo is served: here it stops at a port in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = {"KENTONGAN_GATEWAY_PORT": str(taken.getsockname()[1]), "KENTONGAN_CENTRAL_PORT": str(free_port())}
        on_loopback = kentongan("serve", env=ports, cwd=tmp_path)
    assert on_loopback.stderr.strip().splitlines()[-1].startswith("kentongan: cannot serve: ")
    (tmp_path / "var").rename(tmp_path / "var-of-the-loopback-run")

    exposed = {"KENTONGAN_GATEWAY_HOST": "0.0.0.0"}
    result = kentongan("serve", env=exposed, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kentongan: config error: sync.secret: still the demo's secret, and the gateway on 0.0.0.0:8080 is not "
        "on loopback; set a secret of your own"]
    own = {**exposed, "KENTONGAN_SYNC_SECRET": "s3cret-of-desa", "KENTONGAN_CENTRAL_STAFF_TOKEN": "t0ken-of-staff",
           "KENTONGAN_CENTRAL_OPEN311_API_KEY": "k3y-of-open311"}
    result = kentongan("serve", env=own, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[0].startswith(
        "kentongan: config error: simulator.enabled: true, and the gateway on 0.0.0.0:8080 is not on loopback")
    result = kentongan("serve", env={**own, "KENTONGAN_SIMULATOR_ENABLED": "false"}, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[0].startswith(
        "kentongan: config error: gateway.callback_secret: empty, and the gateway on 0.0.0.0:8080 is not on "
        "loopback")
    assert not (tmp_path / "var").exists()  # refused before anything was opened or served


def test_cli_purge_erases_what_is_kept_no_longer(tmp_path):
    write_config(tmp_path, privacy={"retention_days": 30}, sms={"keep_days": 7})
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)
    store = Store.open(tmp_path / "var", clock=lambda: long_ago)
    try:
        sent = {"service": "report", "language": "id", "unique": {}, "answers": {"location": "Gang Melati"}}
        done = store.add_submission({**sent, "ref": "K7AAAAA"}, phone="+6281234567890", channel="ussd")
        store.add_submission({**sent, "ref": "K7BBBBB"}, phone="+6281234567890", channel="ussd")
        store.mark_synced([{"id": done["id"], "result": "accepted"}])
        row = store.outbox.add("+6281234567890", "Kentongan: ...", "confirmation", ttl=dt.timedelta(hours=1))
        store.outbox.give_up(row["id"], "406 UserInBlacklist")
    finally:
        store.close()

    result = kentongan("purge", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1 submissions acknowledged over 30 days ago erased to reference, service, "
                                    "status and dates; 1 old SMS")
    store = Store.open(tmp_path / "var")
    try:
        assert store.submission("K7AAAAA")["answers"] == {}
        assert store.submission("K7BBBBB")["answers"] == {"location": "Gang Melati"}  # never reached the centre
        assert store.outbox.messages() == []
    finally:
        store.close()
