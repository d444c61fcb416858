"""Hostile requests to every gateway endpoint: a 4xx with a reason and one WARNING line, never an exception.

A hypothesis property test per endpoint posts generated bodies over a real
loopback server started as `serve` starts it: bad and unknown charsets
(utf-7 smuggles lone surrogates), raw invalid UTF-8, lone surrogates, NUL
and control characters, broken multipart bodies and non-text parts, unknown
and undecodable Content-Encodings, huge and deep fields, SQL, HTML and format
strings, random bytes. 2,000 requests in all (10,000 with
KENTONGAN_FUZZ=long). No answer is a 5xx or the apology END, the log holds
no ERROR and no traceback, and nothing of a refused request is stored.
"""

import asyncio
import gzip
import itertools
import logging
import os
import time
import zlib
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PHONE, free_port, make_config, our_errors
from gateway.app import create_apps, serving
from gateway.log import MaskingFilter
from gateway.resources import engine_key, load_engine, store_key

SCALE = 5 if os.environ.get("KENTONGAN_FUZZ") == "long" else 1
EXAMPLES = {"ussd": 700, "inbound": 650, "delivery": 500, "healthz": 150}   # 2,000 in all
ENDPOINTS = {"ussd": "/ussd/africastalking", "inbound": "/sms/africastalking/inbound",
             "delivery": "/sms/africastalking/delivery", "healthz": "/healthz"}
GOOD = {
    "ussd": {"sessionId": "@id", "serviceCode": "*384*1#", "phoneNumber": PHONE, "networkCode": "51010",
             "text": ""},
    "inbound": {"from": PHONE, "to": "21525", "text": "HELP", "date": "2026-11-28 10:00:00", "id": "@id",
                "linkId": "", "networkCode": "51010"},
    "delivery": {"id": "@id", "status": "Failed", "phoneNumber": PHONE, "networkCode": "51010",
                 "failureReason": "UserInBlacklist", "retryCount": "0"},
    "healthz": {},
}
FIELD_TEXT = {"ussd": ["", "1", "1*1", "1*1*2*Jalan Melati", "5", "5*2", "4*K7M2QX", "98*98*0*00"],
              "inbound": ["HELP", "CEK K7M2QX", "LAPOR JALAN Desa Sukamaju: lubang besar", "BAHASA en", "STOP"]}
NASTY = [
    "'; DROP TABLE submissions; --", "\" OR 1=1 --", "1' UNION SELECT * FROM callers --",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "%s%s%s%n%x", "{0.__class__.__mro__}",
    "{{7*7}}", "${jndi:ldap://x/a}", "../../../../etc/passwd", "\r\nERROR gateway.app: FORGED", "\n", "\x00",
    "a\x00b", "\ud800", "x\udfffy", "\x1b[31m", "\u202egnp.exe", "\ufeff", "🙂" * 40, "NaN", "Infinity", "-0",
    "9" * 400, "+" + "6" * 30, "*" * 300, "1*" * 900, "  ", "\t", "ÿ", "é", "null", "[]", "{}",
]
CHARSETS = [None, "utf-8", "UTF-8", "latin-1", "ascii", "utf-7", "utf-16", "utf-32", "foo", "", "utf-8\"",
            "cp1252", "idna", "rot13", "unicode-escape"]
JUNK = [b"", b"\xff\xfe", b"%", b"%zz", b"%ff", b"%ed%a0%80", b"&&&", b"=", b"\x00", b"\xc3", b"%C3%28"]
CODINGS = ["", "identity", "gzip", "deflate", "gzip-broken", "br", "zstd", "foo", "gzip, gzip", "compress"]

values = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=60),
    st.integers(0, 70_000).map(lambda n: "x" * n),                   # up to past the body limit
    st.integers(0, 5_000).map(lambda n: "[" * n + "]" * n),           # deep
    st.binary(max_size=60).map(lambda raw: raw.decode("latin-1")),
)


@st.composite
def forms(draw, endpoint):
    """Field name -> str (sent encoded) or bytes (sent raw); mostly good fields, so bad ones get deep."""
    form = {}
    for name, good in GOOD[endpoint].items():
        if name == "text" and endpoint in FIELD_TEXT:
            good = draw(st.sampled_from(FIELD_TEXT[endpoint]))
        choice = draw(st.integers(0, 19))
        if choice < 16:
            form[name] = good
        elif choice < 19:
            form[name] = draw(values)
        # else: missing
    if not draw(st.integers(0, 3)):
        form[draw(st.sampled_from(["", "extra", "text\x00", "\ud800", "a" * 300]))] = draw(values)
    return form


def urlencoded(draw, form):
    raw = draw(st.booleans())
    pieces = []
    for name, value in form.items():
        data = [part.encode("utf-8", "surrogatepass") for part in (name, value)]
        pieces.append(b"=".join(part if raw else quote_from_bytes(part).encode() for part in data))
    body = b"&".join(pieces) + draw(st.one_of(st.just(b""), st.sampled_from(JUNK)))
    charset = draw(st.one_of(st.none(), st.sampled_from(CHARSETS)))
    kind = "application/x-www-form-urlencoded" + (f"; charset={charset}" if charset is not None else "")
    return kind, body


def multipart(draw, form):
    boundary = "kentonganfuzz"
    parts = []
    for name, value in form.items():
        head = draw(st.sampled_from([
            "", "Content-Type: text/plain\r\n", "Content-Type: application/octet-stream\r\n",
            "Content-Type: text/plain; charset=utf-7\r\n", "Content-Type: text/plain; charset=foo\r\n",
            "Content-Type: text/plain; charset=utf-16\r\n", "Content-Transfer-Encoding: base64\r\n",
            "Content-Transfer-Encoding: quoted-printable\r\n", "Content-Type: multipart/mixed; boundary=x\r\n",
        ]))
        disposition = draw(st.sampled_from([f'; name="{name}"', f'; name="{name}"; filename="a.txt"', ""]))
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data{disposition}\r\n{head}\r\n".encode(
            "utf-8", "surrogatepass") + value.encode("utf-8", "surrogatepass") + b"\r\n")
    ending = draw(st.sampled_from([f"--{boundary}--\r\n".encode(), b"", b"--wrong--\r\n", b"\xff"]))
    kind = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data",
                                 "multipart/form-data; boundary=other", "multipart/mixed; boundary=x"]))
    return kind, b"".join(parts) + ending


@st.composite
def requests(draw, endpoint):
    """(headers, body) of one hostile POST to `endpoint`."""
    form = draw(forms(endpoint))
    shape = draw(st.sampled_from(["urlencoded", "urlencoded", "multipart", "bytes"]))
    if shape == "urlencoded":
        kind, body = urlencoded(draw, form)
    elif shape == "multipart":
        kind, body = multipart(draw, form)
    else:
        kind = draw(st.sampled_from(["application/x-www-form-urlencoded", "text/plain", "application/json", "",
                                     "multipart/form-data; boundary=b", "application/x-www-form-urlencoded; charset"]))
        body = draw(st.binary(max_size=400))
    coding = draw(st.one_of(st.just(""), st.sampled_from(CODINGS)))
    headers = {"Content-Type": kind}
    if coding == "gzip":
        body = gzip.compress(body)
    elif coding == "deflate":
        body = zlib.compress(body)
    elif coding == "gzip-broken":
        body, coding = b"\x1f\x8b\x08\x00" + body, "gzip"
    if coding:
        headers["Content-Encoding"] = coding
    return headers, body


TABLES = ("ussd_sessions", "sms_inbound", "sms_pending", "submissions", "claims", "outbox", "callers")


def rows(store) -> dict[str, int]:
    return {table: store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


class Fuzz:
    """One gateway served as `serve` serves it, for one whole property test, and what it answered."""

    def __init__(self, tmp_path):
        # The per-phone limits would answer most of a run's few phones with one polite refusal, and the
        # hostile bodies would never reach the parsers and flows behind them (test_rate_limits tests those).
        config = make_config(tmp_path / "var", gateway__port=free_port(), limits__ussd_sessions_per_hour=0,
                             limits__sms_per_hour=0, limits__submissions_per_day=0)
        self.apps = create_apps(config, load_engine(config))
        self.counter = itertools.count()
        self.sent = self.accepted = 0
        self.rows = None

    async def start(self):
        self.serving = serving(self.apps)
        self.url = (await self.serving.__aenter__())[0]
        self.http = aiohttp.ClientSession(auto_decompress=False)
        self.rows = await self.stored()
        catalog = self.apps[0].app[engine_key].catalog
        self.apologies = {catalog.text(lang, "error.sorry") for lang in catalog.languages}

    async def stop(self):
        await self.http.close()
        await self.serving.__aexit__(None, None, None)

    async def send(self, endpoint, headers, body):
        marker = f"fz{next(self.counter)}"
        body = body.replace(b"%40id", marker.encode()).replace(b"@id", marker.encode())
        method = self.http.get if endpoint == "healthz" else self.http.post
        async with method(self.url + ENDPOINTS[endpoint], data=body, headers=headers) as response:
            answer = await response.text(errors="replace")
            self.sent += 1
            assert response.status < 500, (response.status, answer, headers, body[:300])
            assert not any(sorry in answer for sorry in self.apologies), (answer, headers, body[:300])
            if response.status != 200:
                assert answer.strip(), "a refusal says why"
        stored, self.rows = self.rows, await self.stored()
        if response.status == 200:
            self.accepted += 1
        else:
            assert self.rows == stored, ("a refused request left rows in the store", headers, body[:300])

    async def stored(self) -> dict[str, int]:
        return await self.apps[0].app[store_key].call(rows)


def run_property(tmp_path, caplog, endpoint):
    caplog.set_level(logging.WARNING)
    fuzz = Fuzz(tmp_path)
    started = time.monotonic()
    with asyncio.Runner() as runner:
        runner.run(fuzz.start())
        try:
            @settings(max_examples=EXAMPLES[endpoint] * SCALE, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(requests(endpoint))
            def property_(request):
                runner.run(fuzz.send(endpoint, *request))

            property_()
        finally:
            runner.run(fuzz.stop())
    bad = our_errors(caplog.records)
    assert not bad, [(r.name, r.getMessage()) for r in bad[:5]]
    print(f"{endpoint}: {fuzz.sent} hostile requests, {fuzz.accepted} answered 200, "
          f"{time.monotonic() - started:.1f} s")
    assert fuzz.sent >= EXAMPLES[endpoint] * SCALE * 0.9


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_hostile_gateway_requests_get_a_reason_never_an_exception(tmp_path, caplog, endpoint):
    run_property(tmp_path, caplog, endpoint)


FORGED = "m1\nERROR gateway.app: FORGED"


async def test_hostile_gateway_a_delivery_id_cannot_forge_a_log_line(tmp_path, caplog):
    """The id with a newline that once wrote `ERROR gateway.app: FORGED` is refused, and never logged raw."""
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(MaskingFilter())   # what `serve` puts on its one handler
    config = make_config(tmp_path / "var", gateway__port=free_port())
    async with serving(create_apps(config, load_engine(config))) as (url,), aiohttp.ClientSession() as http:
        for path, form in [("/sms/africastalking/delivery", {"id": FORGED, "status": "Failed"}),
                           ("/sms/africastalking/delivery", {"id": "m1", "status": "Failed\r\nERROR x: FORGED"}),
                           ("/sms/africastalking/inbound", {"id": FORGED, "from": "INFO", "text": "x"})]:
            async with http.post(url + path, data=form) as response:
                assert response.status == 400
                assert "printable characters only" in await response.text()
    assert not [line for line in caplog.text.splitlines() if "FORGED" in line and "ERROR" in line.split()[0]]
    assert all("\n" not in r.getMessage() for r in caplog.records)


def test_hostile_gateway_control_characters_are_escaped_in_every_log_line(caplog):
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(MaskingFilter())
    logging.getLogger("gateway.sms").warning("delivery report for unknown message %s (%s)", FORGED, "x\x1b[31m")
    assert caplog.text.count("\n") == 1   # the record's own end of line
    assert "m1\\x0aERROR gateway.app: FORGED (x\\x1b[31m)" in caplog.text


@pytest.mark.parametrize("head", [
    b"POST /ussd/africastalking HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\na=1",
    b"POST /ussd/africastalking HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"POST /ussd/africastalking HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /ussd/africastalking HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",   # TLS spoken to plain HTTP
])
async def test_hostile_gateway_requests_aiohttp_refuses_are_one_warning_line(tmp_path, caplog, head):
    """What aiohttp refuses before any handler runs is a 400 and a WARNING, not an ERROR with a traceback."""
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    config = make_config(tmp_path / "var", gateway__port=free_port())
    async with serving(create_apps(config, load_engine(config))) as (url,):
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer
    assert not our_errors(caplog.records)


FORM = "application/x-www-form-urlencoded"
HOP = b"sessionId=named&serviceCode=*384*1%23&phoneNumber=%2B6281234567890&text="


def part(name, value, head=""):
    return (f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n{head}\r\n'.encode() + value + b"\r\n")


@pytest.mark.parametrize("headers, body, reason", [
    ({"Content-Type": FORM + "; charset=utf-7"}, HOP + b"+2D3-", "charset must be utf-8"),
    ({"Content-Type": FORM + "; charset=no-such-charset"}, HOP, "charset must be utf-8"),
    ({"Content-Type": FORM}, HOP + b"\xff", "not valid utf-8"),
    ({"Content-Type": FORM}, HOP + b"%ED%A0%80", "not valid utf-8"),   # a lone surrogate, percent-encoded
    ({"Content-Type": "multipart/form-data; boundary=b"}, b"--b\r\nno end", "broken multipart body"),
    ({"Content-Type": "multipart/form-data; boundary=b"},
     part("sessionId", b"named") + part("serviceCode", b"*384*1#") + part("phoneNumber", b"+6281234567890")
     + part("text", b"r5", "Content-Type: application/octet-stream\r\n") + b"--b--\r\n", "is not text"),
    ({"Content-Type": "multipart/form-data; boundary=b"},
     part("text", b"+2AA-", "Content-Type: text/plain; charset=utf-7\r\n") + b"--b--\r\n", "not valid Unicode text"),
    ({"Content-Type": FORM, "Content-Encoding": "x-unknown"}, HOP, "Content-Encoding must be one of"),
    ({"Content-Type": FORM, "Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00" + HOP, "the body cannot be read"),
    ({"Content-Type": FORM}, HOP + b"1" * 9000, "longer than"),
])
async def test_hostile_gateway_each_malformed_body_is_a_400_with_a_reason_and_one_warning(
        tmp_path, caplog, headers, body, reason):
    caplog.set_level(logging.DEBUG)
    config = make_config(tmp_path / "var", gateway__port=free_port())
    apps = create_apps(config, load_engine(config))
    async with serving(apps) as (url,), aiohttp.ClientSession() as http:
        before = await apps[0].app[store_key].call(rows)
        async with http.post(url + "/ussd/africastalking", data=body, headers=headers) as response:
            assert response.status == 400 and reason in await response.text()
        assert await apps[0].app[store_key].call(rows) == before
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    assert not our_errors(caplog.records)


async def test_hostile_gateway_nul_never_reaches_the_engine_or_the_store(tmp_path):
    """A NUL typed through a broken proxy is dropped: the caller gets the same screen as without it."""
    config = make_config(tmp_path / "var", gateway__port=free_port())
    apps = create_apps(config, load_engine(config))
    async with serving(apps) as (url,), aiohttp.ClientSession() as http:
        screens = []
        for session, text in [("plain", "1"), ("nul", "1\x00")]:
            await http.post(url + "/ussd/africastalking", data={
                "sessionId": session, "serviceCode": "*384*1#", "phoneNumber": PHONE, "text": ""})
            async with http.post(url + "/ussd/africastalking", data={
                    "sessionId": session, "serviceCode": "*384*1#", "phoneNumber": PHONE, "text": text}) as response:
                screens.append(await response.text())
        history = await apps[0].app[store_key].call(lambda store: store.session("nul")["history"])
    assert screens[0] == screens[1] and history == "1"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab=&%+2F0xé;*", max_size=60))
def test_hostile_gateway_a_form_body_reads_as_the_standard_library_reads_it(body):
    # The callback's own form reader skips unquoting where there is nothing to unquote; what it gives (or
    # refuses) must be exactly what urllib's parse_qsl gives, for any body.
    from urllib.parse import parse_qsl

    from gateway.callback import _parse_qsl

    def outcome(parse):
        try:
            return parse()
        except (UnicodeDecodeError, ValueError) as error:
            return type(error).__name__

    assert outcome(lambda: _parse_qsl(body, "utf-8")) == outcome(lambda: parse_qsl(
        body, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=32))
