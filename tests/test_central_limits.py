"""The central backend bounds its work before it knows who asks: body limits, unpacking, depth, ranges, no 5xx.

Each check goes through a real server on a loopback port: `kentongan central serve` as a subprocess where
its memory is measured, an in-process one where its log is read.
"""

import asyncio
import base64
import gzip
import json
import logging
import subprocess
import sys
import time
import zlib
from pathlib import Path

import aiohttp
import pytest

from conftest import free_port, our_errors, served
from sync.central import CentralConfig, create_central_app
from sync.protocol import BATCH_PATH, REFUSAL, UPDATES_PATH, batch_bytes, sign_request
from test_cli import write_config
from test_sync import SECRET, STAFF, batch, forms, item

API_KEY = "open311-key"
MiB = 1024 * 1024
STAFF_HEADERS = {"Authorization": f"Bearer {STAFF}"}


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in kB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: int(value.split()[0]) for key, value in (line.split(":", 1) for line in lines)
            if key in ("VmRSS", "VmHWM")}


async def answers(url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/healthz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise AssertionError("the central backend did not start")


@pytest.fixture(scope="module")
def central_process(tmp_path_factory):
    """`kentongan central serve` in its own process: (url, pid)."""
    folder = tmp_path_factory.mktemp("central")
    port = free_port()
    path = write_config(folder, gateway={"id": "desa-1", "ref_prefix": "K"}, sync={"secret": SECRET},
                        central={"port": port, "staff_token": STAFF})
    with open(folder / "stderr.log", "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "central", "serve", "--config", str(path)],
                                   cwd=Path(__file__).parent.parent, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(answers(url))
        yield url, process.pid, folder / "stderr.log"
    finally:
        process.terminate()
        process.wait(30)


async def test_limits_sixty_large_unsigned_posts_do_not_grow_the_central_backend(central_process):
    url, pid, log = central_process
    before = memory_kb(pid)["VmRSS"]
    body = b"x" * int(15.9 * MiB)

    async def chunks():
        for start in range(0, len(body), MiB):
            yield body[start:start + MiB]

    async def post(n):
        async with http.post(url + BATCH_PATH, data=body if n % 2 else chunks()) as response:
            return response.status

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=6)) as http:
        statuses = await asyncio.gather(*(post(n) for n in range(60)))
    after = memory_kb(pid)["VmRSS"]
    print(f"60 unsigned {len(body) / MiB:.1f} MiB posts in {time.monotonic() - started:.1f} s: "
          f"RSS {before / 1024:.0f} MB -> {after / 1024:.0f} MB")
    assert statuses == [413] * 60  # half with Content-Length (refused unread), half chunked (cut off reading)
    assert after - before < 50 * 1024
    assert "Traceback" not in log.read_text() and " ERROR " not in log.read_text()


async def test_limits_a_signed_gzip_bomb_is_unpacked_only_up_to_the_batch_limit(central_process):
    url, pid, log = central_process
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    bomb = b"".join(packer.compress(zeros) for _ in range(1024)) + packer.flush()  # 1 GiB of zeros
    assert len(bomb) < 1.1 * MiB
    peak = memory_kb(pid)["VmHWM"]
    async with aiohttp.ClientSession() as http:
        headers = sign_request("desa-1", SECRET, "POST", BATCH_PATH, bomb)
        async with http.post(url + BATCH_PATH, data=bomb, headers=headers) as response:
            status, code, text = response.status, response.headers.get(REFUSAL), await response.text()
    grown = memory_kb(pid)["VmHWM"] - peak
    print(f"signed {len(bomb) / MiB:.2f} MiB gzip bomb: peak RSS grew {grown / 1024:.1f} MB")
    assert (status, code) == (400, "bad-batch") and f"more than {batch_bytes(100)} bytes" in text
    assert grown < 50 * 1024


# -- in-process: the answers and the log --------------------------------------------------------------

@pytest.fixture
async def central(tmp_path):
    config = CentralConfig(tmp_path / "central", STAFF, forms(), open311_api_key=API_KEY,
                           gateways={"desa-1": SECRET}, prefixes={"desa-1": "K"})
    app = create_central_app(config)
    async with served(app) as url:
        async with aiohttp.ClientSession() as http:
            yield Client(url, http)


class Client:
    def __init__(self, url, http):
        self.url = url
        self.http = http

    async def call(self, method, path, **kwargs):
        async with self.http.request(method, self.url + path, **kwargs) as response:
            return response.status, await response.text()

    async def signed(self, method, path, body=b"", gateway="desa-1", secret=SECRET, **kwargs):
        headers = sign_request(gateway, secret, method, path, body)
        async with self.http.request(method, self.url + path, data=body or None, headers=headers) as response:
            return response.status, response.headers.get(REFUSAL), await response.text()

    async def open311_list(self, query=""):
        status, text = await self.call("GET", "/open311/v2/requests.json" + query)
        assert status == 200, text
        return strict_json(text)


def strict_json(text):
    """JSON as a strict parser reads it: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def clean(caplog):
    """No ERROR line and no traceback in the log."""
    return not our_errors(caplog.records)


async def test_limits_json_nested_2000_deep_is_400_everywhere(central, caplog):
    deep = "[" * 2000 + "]" * 2000
    body = gzip.compress(deep.encode())
    status, code, text = await central.signed("POST", BATCH_PATH, body)
    assert (status, code) == (400, "bad-batch") and "nested deeper than 32" in text
    status, text = await central.call("PATCH", "/api/v1/submissions/K2345678", data=deep, headers=STAFF_HEADERS)
    assert status == 400 and "nested deeper than 32" in text
    cursor = base64.urlsafe_b64encode(deep[:3000].encode()).decode()
    status, text = await central.call("GET", f"/api/v1/submissions?cursor={cursor}", headers=STAFF_HEADERS)
    assert status == 400 and "cursor" in text
    assert clean(caplog)


async def test_limits_out_of_range_dates_and_numbers_are_400_not_500(central, caplog):
    status, text = await central.call("GET", "/open311/v2/requests.json?start_date=0001-01-01T00:00:00%2B01:00")
    assert status == 400 and "start_date must be a W3C datetime" in text
    path = UPDATES_PATH + "?since=99999999999999999999"
    status, _, text = await central.signed("GET", path)
    assert status == 400 and "since must be a whole number from 0" in text
    status, text = await central.call("GET", "/api/v1/submissions?since=9999-12-31T23:59:59-05:00",
                                      headers=STAFF_HEADERS)
    assert status == 400 and "since must be an ISO 8601 time" in text
    early = batch([item(1, created_at="0001-01-01T00:00:00+01:00"), item(2, answers={"lat": 1e308})])
    status, _, text = await central.signed("POST", BATCH_PATH, early)
    assert status == 200 and json.loads(text)["results"][0]["result"] == "rejected"
    assert [r["service_request_id"] for r in await central.open311_list("?start_date=2000-01-01T00:00:00Z")] \
        == [item(2)["ref"]]
    assert clean(caplog)


async def test_limits_open311_never_takes_or_emits_nan_or_infinity(central, caplog):
    form = {"api_key": API_KEY, "service_code": "report", "attribute[category]": "road", "description": "Rusak"}
    for lat, long_ in (("nan", "1"), ("1", "inf"), ("-Infinity", "1"), ("1e999", "1"), ("91", "1"), ("1", "-181")):
        status, text = await central.call("POST", "/open311/v2/requests.json", data={**form, "lat": lat,
                                                                                       "long": long_})
        assert status == 400 and "lat and long must be numbers" in text, (lat, long_)
    # a NaN inside a signed batch is not JSON either
    raw = gzip.compress(json.dumps({"items": [item(3, answers={"lat": float("nan")})]}).encode())
    status, code, text = await central.signed("POST", BATCH_PATH, raw)
    assert (status, code) == (400, "bad-batch") and "NaN" in text
    status, text = await central.call("POST", "/open311/v2/requests.json", data={**form, "lat": "-6.2",
                                                                                 "long": "106.8"})
    assert status == 200
    listed = await central.open311_list()
    assert [(r["lat"], r["long"]) for r in listed] == [(-6.2, 106.8)]
    assert clean(caplog)


def warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("path, content_type, body, extra, reason", [
    ("/open311/v2/requests.json", "application/x-www-form-urlencoded", b"api_key=open311-key&description=\377",
     {}, "cannot be read as form fields"),
    ("/open311/v2/requests.json", "application/x-www-form-urlencoded; charset=utf-7", b"api_key=+2D8-", {},
     "must be UTF-8, not charset 'utf-7'"),
    ("/open311/v2/requests.json", "application/x-www-form-urlencoded; charset=x-unheard-of", b"a=b", {},
     "must be UTF-8"),
    ("/open311/v2/requests.json", "multipart/form-data; boundary=zz", b"--zz\r\nbroken", {},
     "the body cannot be read"),
    ("/open311/v2/requests.json", "multipart/form-data; boundary=zz",
     b'--zz\r\nContent-Disposition: form-data; name="api_key"; filename="k.bin"\r\n'
     b"Content-Type: application/octet-stream\r\n\r\nr5\r\n--zz--\r\n", {}, "must be UTF-8 text"),
    ("/open311/v2/requests.json", "application/x-www-form-urlencoded", b"api_key=k", {"Content-Encoding": "gzip"},
     "must not be compressed"),
    # aiohttp's parser meets a whole broken deflate body before any handler, and answers it itself
    ("/open311/v2/requests.json", "application/x-www-form-urlencoded", b"!", {"Content-Encoding": "deflate"},
     "deflate"),
    ("/api/v1/submissions/K2345678", "application/json", b'{"status": "resolved", "note": "\xff"}', STAFF_HEADERS,
     "must be UTF-8 JSON"),
    ("/api/v1/submissions/K2345678", "application/json", b'{"status": "resolved", "note": "\\ud800"}',
     STAFF_HEADERS, "lone surrogate"),
    ("/api/v1/submissions/K2345678", "application/json; charset=utf-16", b'{}', STAFF_HEADERS, "charset"),
    ("/api/v1/submissions/K2345678", "application/json", b'x' * (17 * 1024), STAFF_HEADERS, "Maximum request body"),
])
async def test_limits_malformed_bodies_are_400_with_a_reason_and_one_warning(central, caplog, path, content_type,
                                                                              body, extra, reason):
    caplog.set_level(logging.WARNING)
    method = "POST" if path.startswith("/open311") else "PATCH"
    status, text = await central.call(method, path, data=body, headers={"Content-Type": content_type, **extra})
    assert status in (400, 413, 415) and reason.lower() in text.lower(), text
    assert len(warnings(caplog)) == 1 and clean(caplog)
    assert await central.open311_list() == []


async def test_limits_a_known_gateway_id_is_refused_exactly_as_an_unknown_one(central):
    body = batch([item(1)])
    for gateway in ("desa-1", "desa-9", ""):
        answers = []
        for sign in ({"secret": "not-the-secret"}, {"now": time.time() - 3600}):
            headers = sign_request(gateway, sign.get("secret", "x"), "POST", BATCH_PATH, body, now=sign.get("now"))
            async with central.http.post(central.url + BATCH_PATH, data=body, headers=headers) as response:
                answers.append((response.status, response.headers.get(REFUSAL), await response.text()))
        async with central.http.post(central.url + BATCH_PATH, data=body, headers={"X-Kentongan-Gateway": gateway}) \
                as response:
            answers.append((response.status, response.headers.get(REFUSAL), await response.text()))
        assert answers == [(401, "wrong-secret", "wrong signature"),
                           (401, "clock-skew", "stale request: timestamp more than 5 minutes off"),
                           (401, "wrong-secret", "unsigned request")], gateway


async def test_limits_open311_lists_are_bounded(central):
    many = ",".join(f"Z{n:05d}" for n in range(101))
    status, text = await central.call("GET", f"/open311/v2/requests.json?service_request_id={many}")
    assert status == 400 and "at most 100" in text
    status, text = await central.call("GET", "/open311/v2/requests/%ED%A0%80.xml")
    assert status == 404 and text.startswith("<?xml")
