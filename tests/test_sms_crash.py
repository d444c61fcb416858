"""A gateway killed with SIGKILL loses no SMS: it sends what was queued once it is back."""

import asyncio
import os
import re
import signal
import sqlite3
import sys

import aiohttp

from conftest import eventually, free_port
from sync.store import DATABASE_NAME


class GatewayProcess:
    """`kentongan serve` as its own process, so that it can be killed for real."""

    def __init__(self, data_dir, standin_url, **settings):
        self.port = free_port()
        self.data_dir = data_dir
        self.env = {**os.environ, "KENTONGAN_GATEWAY_PORT": str(self.port),
                    "KENTONGAN_GATEWAY_DATA_DIR": str(data_dir), "KENTONGAN_SMS_PROVIDER": "africastalking",
                    "KENTONGAN_SMS_AFRICASTALKING_USERNAME": "kentongan",
                    "KENTONGAN_SMS_AFRICASTALKING_API_KEY": "test-key",
                    "KENTONGAN_SMS_AFRICASTALKING_API_URL": standin_url,
                    "KENTONGAN_SMS_RETRY_SECONDS": "0.2", "KENTONGAN_SMS_TIMEOUT_SECONDS": "0.5",
                    **{f"KENTONGAN_{k.upper()}": v for k, v in settings.items()}}
        self.process = None

    async def start(self):
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", env=self.env, cwd=self.data_dir.parent,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        async with aiohttp.ClientSession() as http:
            async def up():
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(up, timeout=30, interval=0.1)
        return self

    async def kill(self):
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self):
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()

    async def report(self, session, phone):
        url = f"http://127.0.0.1:{self.port}/ussd/africastalking"
        history = []
        async with aiohttp.ClientSession() as http:
            for typed in [None, "1", "1", "Dusun Kidul", "Jalan berlubang", "1"]:
                if typed is not None:
                    history.append(typed)
                form = {"sessionId": session, "serviceCode": "*384*1#", "phoneNumber": phone,
                        "networkCode": "51010", "text": "*".join(history)}
                async with http.post(url, data=form) as response:
                    body = await response.text()
        return re.search(r"Nomor: (\w+)\.", body).group(1)

    def outbox(self):
        with sqlite3.connect(self.data_dir / DATABASE_NAME) as conn:
            return conn.execute("SELECT state, attempts, reason FROM outbox ORDER BY created_at").fetchall()


async def test_sms_queued_while_provider_down_are_sent_after_sigkill_and_restart(tmp_path, standin):
    port = standin.port
    await standin.stop()  # Africa's Talking unreachable: connections refused
    gateway = await GatewayProcess(tmp_path / "var", standin.url).start()
    phones = [f"+6281234567{n}0" for n in range(3)]
    refs = [await gateway.report(f"s{n}", phone) for n, phone in enumerate(phones)]
    await eventually(lambda: len(gateway.outbox()) == 3 and all(r[1] >= 1 for r in gateway.outbox()))
    await gateway.kill()

    await standin.start(port)
    gateway = await GatewayProcess(tmp_path / "var", standin.url).start()
    try:
        await eventually(lambda: [r[0] for r in gateway.outbox()] == ["sent"] * 3, timeout=30)
    finally:
        await gateway.stop()
    for ref, phone in zip(refs, phones):
        assert [b for b in standin.bodies(phone) if ref in b] == [
            f"Kentongan: Laporan masalah diterima, nomor {ref}. Cek status: kirim CEK {ref}"]


async def test_sms_being_sent_at_sigkill_is_sent_again_at_most_once(tmp_path, standin):
    standin.plan = ["slow"]  # the provider takes the message but answers after the kill
    standin.hang_seconds = 1.0
    gateway = await GatewayProcess(tmp_path / "var", standin.url, SMS_TIMEOUT_SECONDS="10").start()
    ref = await gateway.report("s", "+6281234567890")
    await eventually(lambda: gateway.outbox() and gateway.outbox()[0][0] == "sending")
    await gateway.kill()
    await eventually(lambda: standin.accepted)  # the provider did send it

    gateway = await GatewayProcess(tmp_path / "var", standin.url).start()
    try:
        await eventually(lambda: gateway.outbox()[0][0] == "sent", timeout=30)
        await asyncio.sleep(0.5)
    finally:
        await gateway.stop()
    copies = [b for b in standin.bodies("+6281234567890") if ref in b]
    assert len(copies) == 2  # the one in flight at the crash, and exactly one more
    state, attempts, reason = gateway.outbox()[0]
    assert (state, attempts) == ("sent", 2)
    assert reason.startswith("resent after a restart")  # an operator can tell it may be a duplicate
