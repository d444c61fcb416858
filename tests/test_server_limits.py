"""Every server `kentongan serve` runs closes idle and slowloris connections, and caps how many it holds."""

import asyncio
import logging
import resource
import time

import aiohttp
import pytest

from conftest import PHONE, eventually, free_port, make_config
from gateway.app import connection_cap, create_apps, serving
from gateway.resources import load_engine

IDLE = 0.5


def apps_of(tmp_path, **overrides):
    """What `serve` runs: the central backend (urls[0]) and the gateway (urls[1]), on free loopback ports."""
    central = free_port()
    config = make_config(tmp_path / "var", gateway__port=free_port(), central__port=central,
                         central__url=f"http://127.0.0.1:{central}", central__embedded=True,
                         sync__secret="s" * 32, **overrides)
    return create_apps(config, load_engine(config))


async def connect(url):
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def closed_by_server(reader, deadline):
    """True when the server closes the connection (EOF, or a reset) before `deadline`; what it said is dropped."""
    try:
        while await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic())):
            pass
    except (ConnectionResetError, TimeoutError):
        return time.monotonic() < deadline
    return True


async def test_server_limits_idle_connections_are_closed_within_the_idle_time(tmp_path):
    async with serving(apps_of(tmp_path, server__idle_seconds=IDLE)) as urls:
        opened = [await connect(url) for url in urls for _ in range(20)]
        started = time.monotonic()
        closed = await asyncio.gather(*(closed_by_server(reader, started + IDLE + 5) for reader, _ in opened))
        assert all(closed) and len(closed) == 40
        for _, writer in opened:
            writer.close()


async def test_server_limits_a_kept_alive_connection_is_closed_after_its_answer(tmp_path):
    async with serving(apps_of(tmp_path, server__idle_seconds=IDLE)) as urls:
        reader, writer = await connect(urls[1])
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        assert await closed_by_server(reader, time.monotonic() + IDLE + 5)
        writer.close()


async def test_server_limits_slowloris_headers_are_closed(tmp_path):
    """Headers that trickle in a byte at a time and never end are cut off, however busy the trickle."""
    async with serving(apps_of(tmp_path, server__idle_seconds=IDLE)) as urls:
        for url in urls:
            reader, writer = await connect(url)
            writer.write(b"POST /ussd/africastalking HTTP/1.1\r\nHost: x\r\n")
            deadline = time.monotonic() + IDLE + 5
            while time.monotonic() < deadline:
                writer.write(b"X")
                try:
                    if not await asyncio.wait_for(reader.read(1), IDLE / 10):
                        break  # closed by the server
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    break
            assert time.monotonic() < deadline, f"{url} kept a slowloris connection open"
            writer.close()


async def test_server_limits_a_slow_callback_body_gets_408(tmp_path, caplog):
    async with serving(apps_of(tmp_path, server__read_seconds=0.3)) as urls:
        reader, writer = await connect(urls[1])
        writer.write(b"POST /ussd/africastalking HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nsessionId=")
        answer = await asyncio.wait_for(reader.read(65536), 10)
        assert answer.startswith(b"HTTP/1.1 408")
        writer.close()
    assert "408, the body did not arrive in time" in caplog.text


async def test_server_limits_connections_past_the_cap_get_503_and_one_log_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    async with serving(apps_of(tmp_path, server__max_connections=5, server__idle_seconds=60)) as urls:
        gateway = urls[1]
        held = [await connect(gateway) for _ in range(5)]
        refused = [await connect(gateway) for _ in range(30)]
        answers = await asyncio.gather(*(asyncio.wait_for(reader.read(), 10) for reader, _ in refused))
        assert all(answer.startswith(b"HTTP/1.1 503") for answer in answers)
        for _, writer in held + refused:
            writer.close()

        async def answered():
            reader, writer = await connect(gateway)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer.startswith(b"HTTP/1.1 200")

        assert await eventually(answered)   # the held ones gone, there is room again
    capped = [r for r in caplog.records if "server.max_connections" in r.getMessage()]
    assert len(capped) == 1 and capped[0].levelno == logging.WARNING
    assert "socket.accept() out of system resource" not in caplog.text


async def test_server_limits_a_hop_is_answered_within_the_limits(tmp_path):
    async with serving(apps_of(tmp_path, server__idle_seconds=IDLE, server__max_connections=5)) as urls:
        async with aiohttp.ClientSession() as http:
            form = {"sessionId": "s1", "serviceCode": "*384*1#", "phoneNumber": PHONE, "text": ""}
            async with http.post(urls[1] + "/ussd/africastalking", data=form) as response:
                assert response.status == 200 and (await response.text()).startswith("CON ")


def test_server_limits_caps_stay_within_half_the_open_file_limit():
    files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files == resource.RLIM_INFINITY:
        pytest.skip("no open-file limit to stay within")
    caps = connection_cap([10 ** 6, 10 ** 6])
    assert sum(caps) <= files // 2
    assert connection_cap([1, 2]) == [1, 2]
