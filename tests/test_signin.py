"""Sign-in pages of both servers: cookies, CSRF, lock-out, per-address limit, roles, the audit page, languages.

Real servers on loopback ports (the gateway fixture; a central backend from `create_central_app`), accounts made
through the stores, a browser played by an aiohttp client with its own cookie jar.
"""

import asyncio
import logging
import re

import aiohttp
import pytest

from conftest import Gateway, make_config, our_errors, served
from gateway.pages import page_settings
from gateway.resources import load_engine, store_key
from sync.central import CentralConfig, create_central_app
from sync.central.app import central_store_key
from test_sync import STAFF, forms

PASSWORD = "correct horse battery"
FIELD = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """A browser: one cookie jar (unsafe: the servers are on an IP address), following no redirect by itself."""

    def __init__(self, url, prefix):
        self.url, self.prefix = url, prefix
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path, **kwargs):
        async with self.http.get(self.url + path, allow_redirects=False, **kwargs) as response:
            return response.status, await response.text(), response.headers

    async def post(self, path, data, **kwargs):
        async with self.http.post(self.url + path, data=data, allow_redirects=False, **kwargs) as response:
            return response.status, await response.text(), response.headers

    async def csrf(self, path=None):
        status, body, _ = await self.get(path or f"{self.prefix}/login")
        return FIELD.search(body).group(1)

    async def sign_in(self, name, password=PASSWORD, nxt=""):
        token = await self.csrf()
        return await self.post(f"{self.prefix}/login", {"csrf": token, "name": name, "password": password,
                                                        "next": nxt})

    async def close(self):
        await self.http.close()


async def add(thread, name, role, agency=""):
    await thread.call(lambda s: s.accounts.add(name, role, PASSWORD, agency))


@pytest.fixture
async def kiosk(gateway):
    thread = gateway.app[store_key]
    for name, role in (("ani", "operator"), ("budi", "admin"), ("gone", "operator")):
        await add(thread, name, role)
    await thread.call(lambda s: s.accounts.disable("gone"))
    browser = Browser(gateway.url, "/kiosk")
    yield browser
    await browser.close()


@pytest.fixture
async def office(tmp_path):
    config = make_config(tmp_path / "cfg")
    app = create_central_app(CentralConfig(tmp_path / "central", STAFF, forms()),
                             page_settings(config, load_engine(config)))
    async with served(app) as url:
        thread = app[central_store_key]
        await add(thread, "sari", "admin", "Dinas PU")
        await add(thread, "tono", "viewer", "Dinas PU")
        browser = Browser(url, "/office")
        yield browser, thread
        await browser.close()


def cookie(headers, name):
    """The Set-Cookie header that sets `name`."""
    return next(value for value in headers.getall("Set-Cookie", []) if value.startswith(f"{name}="))


async def test_signin_kiosk_in_and_out_with_strict_cookies(kiosk, gateway):
    status, _, headers = await kiosk.get("/kiosk")
    assert status == 303 and headers["Location"] == "/kiosk/login?next=/kiosk"
    status, _, headers = await kiosk.sign_in("ani", nxt="/kiosk")
    assert status == 303 and headers["Location"] == "/kiosk"
    set_cookie = cookie(headers, "kentongan_session")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/kiosk" in set_cookie
    assert "Secure" not in set_cookie
    status, body, _ = await kiosk.get("/kiosk")
    assert status == 200 and "ani (operator)" in body
    assert "/kiosk/audit" not in body  # an operator may not read the audit log
    status, _, _ = await kiosk.post("/kiosk/logout", {"csrf": FIELD.search(body).group(1)})
    assert status == 303
    assert (await kiosk.get("/kiosk"))[0] == 303
    log = await gateway.app[store_key].call(lambda s: s.accounts.audit_log())
    assert [(row["who"], row["action"]) for row in log] == [("ani", "logout"), ("ani", "login")]


async def test_signin_goes_only_to_local_pages_under_the_prefix(kiosk):
    for wanted in ("https://evil.example/", "//evil.example/kiosk", "/simulator", "/kiosk/audit"):
        await kiosk.http.close()
        kiosk.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        status, _, headers = await kiosk.sign_in("ani", nxt=wanted)
        assert headers["Location"] == (wanted if wanted == "/kiosk/audit" else "/kiosk")


async def test_signin_secure_cookie_when_configured(tmp_path):
    gateway = await Gateway(make_config(tmp_path / "var", web__secure_cookies=True)).start()
    try:
        await add(gateway.app[store_key], "ani", "operator")
        browser = Browser(gateway.url, "/kiosk")
        token = await browser.csrf()  # a Secure cookie does not come back over http: the test sends it
        status, _, headers = await browser.post("/kiosk/login", {"csrf": token, "name": "ani", "password": PASSWORD},
                                                headers={"Cookie": f"kentongan_csrf={token}"})
        await browser.close()
        assert status == 303 and "Secure" in cookie(headers, "kentongan_session")
    finally:
        await gateway.stop()


async def test_signin_failures_read_the_same_whatever_was_wrong(kiosk, gateway):
    pages = []
    for name, password in (("ani", "not the password"), ("nobody", PASSWORD), ("gone", PASSWORD)):
        status, body, _ = await kiosk.sign_in(name, password)
        assert status == 401
        assert 'value="%s"' % name in body  # the name is kept
        pages.append(FIELD.sub("", body).replace(name, "NAME"))
    assert pages[0] == pages[1] == pages[2]
    assert "Nama atau kata sandi salah." in pages[0]  # the default language, id
    log = await gateway.app[store_key].call(lambda s: s.accounts.audit_log())
    assert [row["action"] for row in log] == ["login-failed"] * 3


async def test_signin_locks_a_name_after_five_failures_even_with_the_right_password(kiosk):
    for _ in range(5):
        assert (await kiosk.sign_in("ani", "wrong password"))[0] == 401
    status, body, headers = await kiosk.sign_in("ani")
    assert status == 429 and "Coba lagi dalam 1 menit" in body
    assert "kentongan_session" not in headers.get("Set-Cookie", "")


async def test_signin_per_address_limit(tmp_path):
    gateway = await Gateway(make_config(tmp_path / "var", web__login_per_minute=3)).start()
    try:
        await add(gateway.app[store_key], "ani", "operator")
        browser = Browser(gateway.url, "/kiosk")
        statuses = [(await browser.sign_in("nobody", "x" * 12))[0] for _ in range(3)]
        status, body, _ = await browser.sign_in("ani")
        await browser.close()
        assert statuses == [401] * 3 and status == 429
        assert "Terlalu banyak percobaan masuk dari alamat ini" in body
    finally:
        await gateway.stop()


async def test_signin_csrf_missing_or_wrong_is_403_and_changes_nothing(kiosk, gateway, caplog):
    caplog.set_level(logging.WARNING)
    await kiosk.csrf()
    for data in ({"name": "ani", "password": PASSWORD}, {"csrf": "x" * 43, "name": "ani", "password": PASSWORD}):
        status, body, headers = await kiosk.post("/kiosk/login", data)
        assert status == 403 and "muat ulang halaman" in body
        assert "kentongan_session" not in headers.get("Set-Cookie", "")
    await kiosk.sign_in("ani")
    for data in ({}, {"csrf": "wrong"}):
        assert (await kiosk.post("/kiosk/logout", data))[0] == 403
    assert (await kiosk.get("/kiosk"))[0] == 200  # still signed in
    log = await gateway.app[store_key].call(lambda s: s.accounts.audit_log())
    assert [row["action"] for row in log] == ["login"]
    assert sum("csrf" in r.getMessage() for r in caplog.records) == 4


async def test_signin_audit_page_needs_the_audit_role(kiosk):
    await kiosk.sign_in("nobody", "wrong password")
    await kiosk.sign_in("ani")
    status, body, _ = await kiosk.get("/kiosk/audit")
    assert status == 403 and "admin" in body
    await kiosk.http.close()
    kiosk.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    await kiosk.sign_in("budi")
    status, body, _ = await kiosk.get("/kiosk/audit?lang=en")
    assert status == 200 and "Audit log" in body
    rows = re.findall(r"<tr><td><time[^>]*>([^<]+)</time></td><td>([^<]*)</td><td>([^<]*)</td>", body)
    assert [(who, action) for _, who, action in rows] == [("budi", "login"), ("ani", "login"), ("?", "login-failed")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", at) for at, _, _ in rows)  # UTC, as the header says
    assert (await kiosk.get("/kiosk/audit?before=abc"))[0] == 400


async def test_signin_audit_page_pages_with_before(kiosk, gateway):
    thread = gateway.app[store_key]
    await thread.call(lambda s: [s.accounts.audit("cli", "account-add", f"n{i}") for i in range(60)])
    await kiosk.sign_in("budi")
    body = (await kiosk.get("/kiosk/audit"))[1]
    older = re.search(r'href="/kiosk/audit\?before=(\d+)"', body).group(1)
    rest = (await kiosk.get(f"/kiosk/audit?before={older}"))[1]
    assert rest.count("account-add") == 11 and "before=" not in rest


async def test_signin_pages_speak_the_chosen_language(kiosk):
    body = (await kiosk.get("/kiosk/login", headers={"Accept-Language": "sw-KE, en;q=0.5"}))[1]
    assert '<html lang="sw">' in body and "Nenosiri" in body
    status, body, headers = await kiosk.get("/kiosk/login?lang=en")
    assert "Password" in body and "kentongan_lang=en" in cookie(headers, "kentongan_lang")
    body = (await kiosk.get("/kiosk/login", headers={"Accept-Language": "sw"}))[1]
    assert "Password" in body  # the cookie wins over Accept-Language
    body = (await kiosk.get("/kiosk/login?lang=id"))[1]
    assert "Kata sandi" in body and "Kiswahili" in body and 'hreflang="sw"' in body


async def test_signin_office_in_and_out_and_audit(office):
    browser, thread = office
    status, body, headers = await browser.sign_in("tono", nxt="/office")
    assert status == 303 and "HttpOnly" in cookie(headers, "kentongan_session")
    assert "Path=/office" in cookie(headers, "kentongan_session")
    body = (await browser.get("/office?lang=sw"))[1]
    assert "tono (viewer)" in body and "Foleni ya maombi" in body
    assert (await browser.get("/office/audit"))[0] == 403
    await browser.post("/office/logout", {"csrf": FIELD.search(body).group(1)})
    await browser.sign_in("sari")
    status, body, _ = await browser.get("/office/audit")
    assert status == 200 and body.count("<td>login</td>") == 2 and "<td>logout</td>" in body


async def test_signin_logs_no_password_or_name(kiosk, caplog):
    caplog.set_level(logging.DEBUG)
    await kiosk.sign_in("ani", "my secret guess")
    await kiosk.sign_in("ani")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "my secret guess" not in text and PASSWORD not in text and "ani" not in text.replace("kentongan", "")


async def test_signin_unreadable_forms_are_4xx_without_an_error(kiosk, office, caplog):
    browser, _ = office
    for client in (kiosk, browser):
        await client.csrf()
        for body, kind in ((b"csrf=\xff&name=a", "application/x-www-form-urlencoded"),
                           (b"name=%ED%A0%80", "application/x-www-form-urlencoded"),
                           (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
                           (b"name=" + b"a" * 70_000, "application/x-www-form-urlencoded")):
            status, _, _ = await client.post(f"{client.prefix}/login", body, headers={"Content-Type": kind})
            assert 400 <= status < 500, (client.prefix, body[:20])
        assert (await client.get(f"{client.prefix}/audit?before=99999999999999999999"))[0] in (303, 400)
    assert not our_errors(caplog.records)


async def test_signin_attempts_in_flight_together_cannot_pass_the_lock_out(tmp_path):
    gateway = await Gateway(make_config(tmp_path / "var", web__login_per_minute=0)).start()
    try:
        await add(gateway.app[store_key], "ani", "operator")
        browsers = [Browser(gateway.url, "/kiosk") for _ in range(20)]
        tokens = await asyncio.gather(*(b.csrf() for b in browsers))
        answers = await asyncio.gather(*(b.post("/kiosk/login", {"csrf": t, "name": "ani", "password": "wrong-pw-123",
                                                                  "next": ""}) for b, t in zip(browsers, tokens)))
        statuses = sorted(status for status, _, _ in answers)
        assert statuses.count(401) == 5 and statuses.count(429) == 15  # LOCK_AFTER checks, never more
        for browser in browsers:
            await browser.close()
    finally:
        await gateway.stop()
