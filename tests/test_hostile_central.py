"""Generated hostile requests at every central endpoint: never a 5xx, an ERROR line or a traceback, never
anything stored from a refused request, never an answer that is not JSON or well-formed XML.

About 2,000 requests in all; `KENTONGAN_FUZZ=long` sends 10,000. One real central backend on a loopback
port serves them all, from a thread of its own, so that hypothesis drives it from plain test functions.
"""

import asyncio
import gzip
import json
import logging
import os
import threading
import time
import urllib.parse
from xml.etree import ElementTree as ET

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import our_errors, served
from sync.central import CentralConfig, create_central_app
from sync.central.app import central_store_key
from sync.protocol import BATCH_PATH, UPDATES_PATH, sign_request
from test_sync import SECRET, STAFF, forms, item

API_KEY = "open311-key"
PER_ENDPOINT = 1250 if os.environ.get("KENTONGAN_FUZZ") == "long" else 250
EXAMPLES = settings(max_examples=PER_ENDPOINT, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
SENT = {"requests": 0}

NASTY = ["' OR 1=1 --", "'; DROP TABLE submissions; --", "<script>alert(1)</script>", "]]>&lt;&#0;", "%s%n%x{0}",
         "{{7*7}}", "${jndi:ldap://x}", "\x00", "\x1b[31m", "line\nERROR forged", "\u202e", "\ufeff", "𝕂", "ÿ",
         "../../etc/passwd", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "99999999999999999999",
         "-1", "1e999", "NaN", "-Infinity", "Infinity", "0x10", "1_000", "٣", "", " ", "null", "[]", "{}"]
DATES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "0000-00-00", "2026-02-30T00:00:00Z",
         "2026-11-01T00:00:00Z", "2026-11-01T25:61:61", "2026-11-01T00:00:00+24:00", "20261101", "now"]
NUMBERS = ["99999999999999999999", "9223372036854775808", "9223372036854775807", "-9223372036854775809", "-1",
           "0", "1e999", "nan", "inf", "-0", "1.5", "1" * 5000, "٣"]
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
hostile = st.one_of(text, st.sampled_from(NASTY + DATES + NUMBERS),
                    st.integers(0, 5000).map(lambda n: "x" * n))
deep = st.integers(30, 3000).map(lambda n: "[" * n + "]" * n)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False), hostile)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile, inner,
                                                                                            max_size=4), max_leaves=12)
raw_bytes = st.one_of(st.binary(max_size=300), st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"+2D8-", b"%FF%ED%A0%80",
                                                                b'"\\ud800"', b"\x1f\x8b\x08\x00garbage"]))
charsets = st.sampled_from(["", "; charset=utf-8", "; charset=utf-7", "; charset=utf-16", "; charset=x-nope",
                            "; charset=latin-1", "; charset=\"", "; boundary=zz", "; boundary="])
encodings = st.sampled_from([None, None, None, "gzip", "deflate", "br", "x-unknown", "gzip, gzip", "identity"])
segments = st.one_of(hostile.map(lambda t: urllib.parse.quote(t, safe="")),
                     st.sampled_from(["%ED%A0%80", "%FF", "%00", "..%2F..", "K2345678", "report", "%"]))


class Backend:
    """A central backend served from its own thread and event loop, for the whole module."""

    def __init__(self, data_dir):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = CentralConfig(data_dir, STAFF, forms(), open311_api_key=API_KEY, gateways={"desa-1": SECRET},
                               prefixes={"desa-1": "K"})
        self.app = create_central_app(config)
        self.serving = served(self.app)
        self.url = self.run(self.serving.__aenter__())
        self.http = requests.Session()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def count(self) -> int:
        return self.run(self.app[central_store_key].call(lambda s: s.count()))

    def close(self):
        self.http.close()
        self.run(self.serving.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    server = Backend(tmp_path_factory.mktemp("central"))
    started = time.monotonic()
    yield server
    server.close()
    print(f"\n{SENT['requests']} hostile requests in {time.monotonic() - started:.1f} s")


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.WARNING)
    return caplog


def send(backend, log, method, path, *, body=None, headers=None, stores=False):
    """One request; it is answered below 500 with JSON or well-formed XML, the log stays clean, and a refused
    request stores nothing. `stores`: whether this request may store a submission when it is accepted."""
    log.clear()
    before = backend.count()
    response = backend.http.request(method, backend.url + path, data=body, headers=headers or {}, timeout=30)
    SENT["requests"] += 1
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
    kind = response.headers.get("Content-Type", "")
    if kind.startswith("application/json"):
        json.loads(response.content, parse_constant=_not_json)
    elif kind.startswith("text/xml"):
        ET.fromstring(response.content)
    bad = our_errors(log.records)
    assert not bad, [r.getMessage() for r in bad]
    if response.status_code >= 400 or not stores:
        assert backend.count() == before, (method, path, response.status_code)
    return response


def _not_json(name):
    raise AssertionError(f"{name} went out, which is not JSON")


def with_encoding(headers, encoding):
    return {**headers, "Content-Encoding": encoding} if encoding else headers


# -- the sync API -------------------------------------------------------------------------------------

items = st.one_of(
    st.builds(lambda n, changes: item(n, **changes), st.integers(0, 99999),
              st.dictionaries(st.sampled_from(["id", "ref", "service", "channel", "answers", "phone", "language",
                                               "created_at"]), values, max_size=3)),
    values)
batch_bodies = st.one_of(
    st.lists(items, max_size=4).map(lambda xs: gzip.compress(json.dumps({"gateway": "desa-1", "items": xs})
                                                             .encode("utf-8", "surrogatepass"))),
    st.builds(lambda v: gzip.compress(json.dumps(v).encode()), values),
    deep.map(lambda d: gzip.compress(d.encode())),
    hostile.map(lambda t: gzip.compress(t.encode())),
    raw_bytes,
    st.integers(1, 8).map(lambda m: gzip.compress(bytes(m * 1024 * 1024))))


@EXAMPLES
@given(body=batch_bodies, signed=st.sampled_from(["signed", "signed", "unsigned", "stranger", "wrong"]),
       encoding=encodings, charset=charsets)
def test_hostile_sync_batches(backend, log, body, signed, encoding, charset):
    gateway, secret = {"signed": ("desa-1", SECRET), "stranger": ("desa-9", SECRET),
                       "wrong": ("desa-1", "nope"), "unsigned": ("", "")}[signed]
    headers = sign_request(gateway, secret, "POST", BATCH_PATH, body) if gateway else {}
    headers["Content-Type"] = "application/vnd.kentongan.batch+json+gzip" + charset
    send(backend, log, "POST", BATCH_PATH, body=body, headers=with_encoding(headers, encoding), stores=True)


@EXAMPLES
@given(since=st.one_of(hostile, st.integers(-2 ** 80, 2 ** 80).map(str)), signed=st.booleans(),
       gateway=st.sampled_from(["desa-1", "desa-9", "désa", "x" * 500]))
def test_hostile_sync_updates(backend, log, since, signed, gateway):
    path = f"{UPDATES_PATH}?since={urllib.parse.quote(since, safe='')}"
    headers = sign_request(gateway, SECRET if signed else "nope", "GET", path, b"")
    headers = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
    send(backend, log, "GET", path, headers=headers)


# -- the staff API ------------------------------------------------------------------------------------

staff_tokens = st.sampled_from([f"Bearer {STAFF}", f"Bearer {STAFF}", "Bearer nope", "", "Basic x", "Bearer ÿ"])


@EXAMPLES
@given(query=st.dictionaries(st.sampled_from(["status", "service", "village", "since", "limit", "cursor"]),
                             st.one_of(hostile, deep), max_size=4), token=staff_tokens)
def test_hostile_staff_list(backend, log, query, token):
    path = "/api/v1/submissions?" + urllib.parse.urlencode(query)
    send(backend, log, "GET", path, headers={"Authorization": token.encode().decode("latin-1")})


@EXAMPLES
@given(ref=segments, body=st.one_of(
    st.builds(lambda s, n: json.dumps({"status": s, "note": n}).encode("utf-8", "surrogatepass"),
              st.one_of(hostile, st.sampled_from(["resolved", "in_progress"])), values),
    deep.map(str.encode), raw_bytes, hostile.map(str.encode)), charset=charsets, encoding=encodings, token=staff_tokens)
def test_hostile_staff_change(backend, log, ref, body, charset, encoding, token):
    headers = {"Authorization": token.encode().decode("latin-1"), "Content-Type": "application/json" + charset}
    send(backend, log, "PATCH", f"/api/v1/submissions/{ref}", body=body, headers=with_encoding(headers, encoding))


# -- Open311 and /healthz ---------------------------------------------------------------------------

formats = st.sampled_from(["json", "xml", "json", "xml", "yaml", "%FF", "JSON"])


@EXAMPLES
@given(fmt=formats, query=st.dictionaries(
    st.sampled_from(["service_request_id", "service_code", "start_date", "end_date", "status"]),
    st.one_of(hostile, st.sampled_from(DATES), st.lists(hostile, max_size=120).map(",".join)), max_size=4))
def test_hostile_open311_lists(backend, log, fmt, query):
    send(backend, log, "GET", f"/open311/v2/requests.{fmt}?" + urllib.parse.urlencode(query))


def form_body(fields: dict, kind: str) -> tuple[bytes, str]:
    if kind == "multipart":
        parts = b"".join(b'--zz\r\nContent-Disposition: form-data; name="' + k.encode("utf-8", "replace") + b'"\r\n\r\n'
                         + v.encode("utf-8", "surrogatepass") + b"\r\n" for k, v in fields.items())
        return parts + b"--zz--\r\n", "multipart/form-data; boundary=zz"
    return urllib.parse.urlencode(fields).encode(), "application/x-www-form-urlencoded"


@EXAMPLES
@given(fmt=formats, fields=st.fixed_dictionaries(
    {"api_key": st.sampled_from([API_KEY, API_KEY, API_KEY, "", "nope"]),
     "service_code": st.sampled_from(["report", "report", "voter", ""]) | hostile},
    optional={"attribute[category]": st.sampled_from(["road", "streetlight"]) | hostile, "description": hostile,
              "address_string": hostile, "lat": st.sampled_from(NUMBERS) | hostile,
              "long": st.sampled_from(NUMBERS) | hostile, "phone": hostile}),
    kind=st.sampled_from(["urlencoded", "multipart", "raw"]), raw=raw_bytes, charset=charsets, encoding=encodings)
def test_hostile_open311_post(backend, log, fmt, fields, kind, raw, charset, encoding):
    body, content_type = form_body(fields, kind)
    if kind == "raw":
        body = f"api_key={API_KEY}&service_code=report&".encode() + raw
    headers = with_encoding({"Content-Type": content_type + charset}, encoding)
    send(backend, log, "POST", f"/open311/v2/requests.{fmt}", body=body, headers=headers, stores=True)


@EXAMPLES
@given(kind=st.sampled_from(["requests", "services"]), name=segments, fmt=formats, body=st.none() | raw_bytes)
def test_hostile_open311_one_and_healthz(backend, log, kind, name, fmt, body):
    send(backend, log, "GET", f"/open311/v2/{kind}/{name}.{fmt}", body=body)
    send(backend, log, "GET", f"/open311/v2/services.{fmt}")
    send(backend, log, "GET", f"/healthz?{name}={name}", body=body)
