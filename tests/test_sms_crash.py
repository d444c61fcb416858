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

PHONE = "+6281234567890"
OTHER = "+254711082300"


class GatewayProcess:
    """`kentongan serve` as its own process, so that it can be killed for real."""

    def __init__(self, data_dir, standin_url, **settings):
        self.port = None
        self.data_dir = data_dir
        self.env = {**os.environ, "KENTONGAN_GATEWAY_DATA_DIR": str(data_dir),
                    "KENTONGAN_SMS_PROVIDER": "africastalking",
                    "KENTONGAN_SMS_AFRICASTALKING_USERNAME": "kentongan",
                    "KENTONGAN_SMS_AFRICASTALKING_API_KEY": "test-key",
                    "KENTONGAN_SMS_AFRICASTALKING_API_URL": standin_url,
                    "KENTONGAN_SMS_RETRY_SECONDS": "0.2", "KENTONGAN_SMS_TIMEOUT_SECONDS": "10",
                    **{f"KENTONGAN_{k.upper()}": v for k, v in settings.items()}}
        self.process = None

    async def start(self):
        # The free port may be taken by someone else before the gateway binds it: then it exits, try another.
        for _ in range(3):
            self.port = free_port()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "serve", env={**self.env, "KENTONGAN_GATEWAY_PORT": str(self.port)},
                cwd=self.data_dir.parent, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                async def up_or_gone():
                    if self.process.returncode is not None:
                        return "gone"
                    try:
                        async with http.get(f"http://127.0.0.1:{self.port}/healthz") as response:
                            return response.status == 200 and "up"
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        return False

                if await eventually(up_or_gone, timeout=30, interval=0.1) == "up":
                    return self
        raise AssertionError("the gateway exited at start three times")

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
        return re.search(r"Kode: (\w+)\.", body).group(1)

    def outbox(self):
        with sqlite3.connect(self.data_dir / DATABASE_NAME) as conn:
            return conn.execute("SELECT state, attempts, reason FROM outbox ORDER BY created_at").fetchall()


def confirmation(ref):
    return f"Kentongan: Laporan masalah diterima, kode {ref}. Cek status: kirim CEK {ref}"


async def after_everything_queued_so_far(gateway, standin):
    """Report from another phone and wait until its confirmation went out.

    The sender sends due rows one at a time, oldest first: once this one has
    reached the provider, everything queued before it has had its turn.
    """
    ref = await gateway.report("marker", OTHER)
    await eventually(lambda: standin.bodies(OTHER) == [confirmation(ref)], timeout=30)


async def test_sms_queued_while_provider_down_are_sent_after_sigkill_and_restart(tmp_path, standin):
    await standin.stop(keep_port=True)  # Africa's Talking unreachable: connections refused
    gateway = await GatewayProcess(tmp_path / "var", standin.url).start()
    phones = [f"+6281234567{n}0" for n in range(3)]
    refs = [await gateway.report(f"s{n}", phone) for n, phone in enumerate(phones)]
    await eventually(lambda: len(gateway.outbox()) == 3 and all(r[1] >= 1 for r in gateway.outbox()))
    await gateway.kill()

    await standin.start()
    gateway = await GatewayProcess(tmp_path / "var", standin.url).start()
    try:
        await eventually(lambda: [r[0] for r in gateway.outbox()] == ["sent"] * 3, timeout=30)
        await after_everything_queued_so_far(gateway, standin)
    finally:
        await gateway.stop()
    for ref, phone in zip(refs, phones):
        assert standin.bodies(phone) == [confirmation(ref)]


async def test_sms_being_sent_at_sigkill_is_sent_again_at_most_once(tmp_path, standin):
    # "slow": the provider takes the message at once and keeps its answer until released,
    # so the gateway is killed with the request in the provider's hands, never before.
    standin.plan = ["slow"]
    gateway = await GatewayProcess(tmp_path / "var", standin.url).start()
    ref = await gateway.report("s", PHONE)
    await eventually(lambda: standin.holding == 1)
    assert gateway.outbox()[0][0] == "sending"
    await gateway.kill()
    standin.release()  # the answer goes to a dead process
    assert standin.bodies(PHONE) == [confirmation(ref)]

    gateway = await GatewayProcess(tmp_path / "var", standin.url).start()
    try:
        await eventually(lambda: gateway.outbox()[0][0] == "sent", timeout=30)
        await after_everything_queued_so_far(gateway, standin)
    finally:
        await gateway.stop()
    # The one in flight at the crash, and exactly one more: the gateway cannot know it was sent.
    assert standin.bodies(PHONE) == [confirmation(ref)] * 2
    state, attempts, reason = gateway.outbox()[0]
    assert (state, attempts) == ("sent", 2)
    assert reason.startswith("resent after a restart")  # an operator can tell it may be a duplicate
