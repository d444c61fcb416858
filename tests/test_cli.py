"""The `kentongan` command."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from conftest import free_port


def kentongan(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})}, **kwargs)


def test_cli_serve_answers_the_main_menu_and_status_counts(tmp_path):
    port = free_port()
    env = {**os.environ, "KENTONGAN_GATEWAY_PORT": str(port), "KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var")}
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = None
        for _ in range(300):
            try:
                form = "sessionId=a&serviceCode=*384*1%23&phoneNumber=%2B6281234567890&text="
                for text in ("", "1", "1*1", "1*1*Dusun Kidul", "1*1*Dusun Kidul*Jalan rusak", "1*1*Dusun Kidul*Jalan rusak*1"):
                    request = urllib.request.Request(f"http://127.0.0.1:{port}/ussd/africastalking",
                                                     data=form.replace("text=", f"text={text}").encode())
                    body = urllib.request.urlopen(request, timeout=5).read().decode()
                    if text == "":
                        assert body.startswith("CON Kentongan, layanan desa. Pilih:")
                break
            except OSError:
                time.sleep(0.1)
        assert body.startswith("END Terima kasih")
        env_status = {"KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var")}
        for _ in range(100):  # the console provider sends in the background
            counts = json.loads(kentongan("status", "--json", env=env_status, cwd=tmp_path).stdout)
            if counts["outbox"]["sent"]:
                break
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0]
    assert "+6281234567890" not in output and "+62812****890" in output
    assert "Cek status: kirim CEK" in output  # the console provider prints the confirmation
    result = kentongan("status", "--json", env={"KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var")}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["submissions"]["total"] == 1
    assert counts["submissions"]["by_sync_state"] == {"pending": 1}
    assert counts["outbox"]["sent"] == 1 and counts["outbox"]["dead"] == 0  # the console provider
    listed = kentongan("outbox", "--json", env={"KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var")}, cwd=tmp_path)
    rows = json.loads(listed.stdout)
    assert [(r["kind"], r["state"], r["to"]) for r in rows] == [("confirmation", "sent", "+62812****890")]
    assert "Cek status: kirim CEK" in rows[0]["text"]
    dead = kentongan("outbox", "--state", "dead", env={"KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var")},
                     cwd=tmp_path)
    assert dead.returncode == 0 and dead.stdout == ""
    human = kentongan("status", env={"KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var")}, cwd=tmp_path)
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
    env = {**os.environ, "KENTONGAN_GATEWAY_PORT": str(port), "KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var"),
           "KENTONGAN_CENTRAL_EMBEDDED": "true", "KENTONGAN_CENTRAL_PORT": str(central_port),
           "KENTONGAN_CENTRAL_URL": f"http://127.0.0.1:{central_port}", "KENTONGAN_SYNC_SECRET": "s",
           "KENTONGAN_SYNC_INTERVAL_SECONDS": "3600", "KENTONGAN_CENTRAL_STAFF_TOKEN": "t"}
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/ussd/africastalking"
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        form = "sessionId=a&serviceCode=*384*1%23&phoneNumber=%2B6281234567890&text="
        for text in ("", "1", "1*1", "1*1*Dusun Kidul", "1*1*Dusun Kidul*Jalan rusak", "1*1*Dusun Kidul*Jalan rusak*1"):
            body = urllib.request.urlopen(urllib.request.Request(url, data=form.replace("text=", f"text={text}").encode()),
                                          timeout=5).read().decode()
        assert body.startswith("END Terima kasih")
        result = subprocess.run([sys.executable, "-m", "gateway", "sync"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "pushed 1 (1 new, 0 already there, 0 rejected)" in result.stdout
        status = json.loads(subprocess.run([sys.executable, "-m", "gateway", "status", "--json"], env=env,
                                           cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout)
        assert status["sync"]["pending"] == 0 and status["sync"]["sent"] == 1
        assert status["sync"]["last_success"] and status["sync"]["last_error"] is None
        staff = urllib.request.Request(f"http://127.0.0.1:{central_port}/api/v1/submissions",
                                       headers={"Authorization": "Bearer t"})
        assert len(json.loads(urllib.request.urlopen(staff, timeout=5).read())["submissions"]) == 1
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def test_cli_sync_with_central_down_says_so(tmp_path):
    result = kentongan("sync", env={"KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var"), "KENTONGAN_SYNC_SECRET": "s",
                                    "KENTONGAN_CENTRAL_URL": f"http://127.0.0.1:{free_port()}"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("kentongan: sync failed: central backend unreachable")
    status = json.loads(kentongan("status", "--json", env={"KENTONGAN_GATEWAY_DATA_DIR": str(tmp_path / "var")},
                                  cwd=tmp_path).stdout)
    assert status["sync"]["last_error"].startswith("central backend unreachable")
