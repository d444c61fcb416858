"""Assisted entry at /kiosk/assist: an operator runs a flow for a walk-in villager, with or without a phone.

A real gateway on loopback (the SMS through the real SDK to the stand-in where one is sent, a real central
backend where the entry syncs), operators signed in through the sign-in page by an aiohttp client.
"""

import html
import re

import pytest

from conftest import PHONE, Gateway, eventually, sms_config
from gateway.resources import engine_key, store_key, syncer_key
from sync import accounts
from sync.store import NO_PHONE
from test_signin import FIELD, Browser, add
from test_sync import Central, make_sync_config


pytestmark = pytest.mark.backends

HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')
REPORT = ("1", "1", "Dusun Krajan", "Jalan berlubang besar", "1")
"""Report a problem: damaged road, where, what, yes."""


class Entry:
    """One assisted entry as a browser holds it: the last page and the hidden fields of its form."""

    def __init__(self, browser):
        self.browser = browser
        self.status, self.body, self.fields = 0, "", {}

    def _read(self, status, body):
        self.status, self.body = status, body
        self.fields = dict(HIDDEN.findall(body))
        return self

    async def start(self, phone=""):
        csrf = await self.browser.csrf("/kiosk/assist")
        return self._read(*(await self.browser.post("/kiosk/assist", {"csrf": csrf, "phone": phone}))[:2])

    async def press(self, key=None, typed=None, **override):
        data = {name: self.fields[name] for name in ("csrf", "session", "turn")}
        data.update({"key": key} if key is not None else {"input": typed})
        data.update(override)
        return self._read(*(await self.browser.post("/kiosk/assist/step", data))[:2])

    async def walk(self, *inputs):
        """Each input as the page takes it: a button's key on a screen of choices, else typed in its field."""
        for value in inputs:
            field = 'name="input"' in self.body
            await (self.press(typed=value) if field else self.press(key=value))
            assert self.status == 200, self.body
        return self

    @property
    def text(self):
        return html.unescape(re.sub(r"<[^>]+>", " ", self.body))


@pytest.fixture
async def operator(gateway):
    await add(gateway.app[store_key], "ani", "operator")
    browser = Browser(gateway.url, "/kiosk")
    await browser.sign_in("ani")
    yield browser
    await browser.close()


async def submissions(gateway):
    def rows(store):
        return [store.submission(ref) for (ref,) in store.db.execute("SELECT ref FROM submissions")]
    return await gateway.app[store_key].call(rows)


async def test_assist_report_with_a_phone_confirms_by_sms(tmp_path, standin, backend):
    gateway = await Gateway(sms_config(tmp_path / "var", standin, **backend)).start()
    browser = Browser(gateway.url, "/kiosk")
    try:
        await add(gateway.app[store_key], "ani", "operator")
        await browser.sign_in("ani")
        entry = await Entry(browser).start(" +62 812-3456-7890 ")
        assert entry.status == 200 and "+62812****890" in entry.text and PHONE not in entry.text
        assert '<button type="submit" name="key" value="1" autofocus>1. Lapor masalah</button>' in entry.body
        await entry.walk(*REPORT[:-1])
        confirm = {**entry.fields, "key": "1"}
        await entry.walk(REPORT[-1])
        [made] = await submissions(gateway)
        assert (made["channel"], made["operator"], made["phone"], made["service"]) == ("kiosk", "ani", PHONE, "report")
        assert made["answers"] == {"category": "road", "location": "Dusun Krajan",
                                   "description": "Jalan berlubang besar"}
        assert made["ref"] in entry.text and "Tanda terima" not in entry.text
        assert f"Referensi {made['ref']}: SMS konfirmasi dikirim ke +62812****890." in entry.text
        sent = await eventually(lambda: standin.bodies(PHONE))
        assert len(sent) == 1 and made["ref"] in sent[0]
        log = await gateway.app[store_key].call(lambda s: s.accounts.audit_log())
        assert (log[0]["who"], log[0]["action"], log[0]["target"]) == ("ani", "assist", made["ref"])
        status, body, _ = await browser.post("/kiosk/assist/step", confirm)  # posted twice: made once
        assert status == 200 and made["ref"] in body and len(await submissions(gateway)) == 1
    finally:
        await browser.close()
        await gateway.stop()


async def test_assist_report_without_a_phone_prints_a_receipt_and_sends_nothing(gateway, operator):
    entry = await Entry(operator).start("")
    assert "Untuk warga tanpa ponsel" in entry.text
    await entry.walk(*REPORT)
    [made] = await submissions(gateway)
    assert (made["channel"], made["operator"], made["phone"]) == ("kiosk", "ani", NO_PHONE)
    receipt = re.search(r'<section class="receipt".*?</section>', entry.body, re.S).group(0)
    assert made["ref"] in receipt and "Laporan masalah" in receipt and "Jalan rusak" in receipt
    assert "Dusun Krajan" not in receipt  # typed answers only for a role that may see personal fields
    assert "@media print" in entry.body.split("</head>")[0] and "window.print()" in entry.body
    assert await gateway.app[store_key].call(lambda s: s.outbox.messages()) == []
    # The reference on the receipt is found again at the kiosk, still with no phone.
    status = await Entry(operator).start("")
    await status.walk("4", "2", made["ref"].lower())
    assert made["ref"] in status.text and "Diterima" in status.text


async def test_assist_receipt_shows_typed_answers_to_a_role_with_personal(gateway):
    await add(gateway.app[store_key], "sari", "supervisor")
    browser = Browser(gateway.url, "/kiosk")
    await browser.sign_in("sari")
    entry = await (await Entry(browser).start("")).walk(*REPORT)
    await browser.close()
    receipt = re.search(r'<section class="receipt".*?</section>', entry.body, re.S).group(0)
    assert "Dusun Krajan" in receipt and "Jalan berlubang besar" in receipt


async def test_assist_wrong_input_is_reasked_with_the_engines_reason_and_kept(gateway, operator):
    entry = await (await Entry(operator).start("")).walk("1", "1")
    before = entry.fields["turn"]
    await entry.press(typed="ab")
    assert entry.status == 200
    reason = re.search(r'<p class="reason" role="alert" id="head" lang="id">([^<]+)</p>', entry.body).group(1)
    engine = gateway.app[engine_key]
    invalid = engine.flows["report"].screens["location"].validator("ab", None, {})
    assert html.unescape(reason) == engine.catalog.text("id", invalid.reason, **invalid.values)
    assert 'name="input" value="ab"' in entry.body
    assert entry.fields["turn"] == str(int(before) + 1)
    await entry.press(typed="Dusun Krajan")
    assert 'name="input" value=""' in entry.body  # the next question, empty
    await entry.press(key="0")  # back to the place, its answer dropped
    assert 'name="input" value=""' in entry.body and "Di mana" in entry.text


async def test_assist_invalid_phone_is_reasked_and_kept(gateway, operator):
    entry = await Entry(operator).start("0812 34")
    assert entry.status == 400
    assert "Ini bukan nomor ponsel dalam bentuk internasional" in entry.text
    assert 'value="0812 34"' in entry.body
    assert await submissions(gateway) == []


async def test_assist_csrf_missing_is_403(gateway, operator):
    entry = await Entry(operator).start("")
    status, _, _ = await operator.post("/kiosk/assist", {"phone": ""})
    assert status == 403
    session, turn = entry.fields["session"], entry.fields["turn"]
    status, _, _ = await operator.post("/kiosk/assist/step", {"session": session, "turn": turn, "key": "1"})
    assert status == 403
    assert (await entry.press(key="1")).status == 200 and "Jalan rusak" in entry.text  # the entry moved only now


async def test_assist_needs_the_act_permission(gateway, monkeypatch):
    monkeypatch.setitem(accounts.ROLES["gateway"], "viewer", frozenset({"read"}))
    await add(gateway.app[store_key], "tono", "viewer")
    browser = Browser(gateway.url, "/kiosk")
    await browser.sign_in("tono")
    status, body, _ = await browser.get("/kiosk/assist")
    csrf = FIELD.search(body).group(1)
    posted, _, _ = await browser.post("/kiosk/assist", {"csrf": csrf, "phone": ""})
    await browser.close()
    assert status == 403 and posted == 403 and "operator" in body
    assert await submissions(gateway) == []


async def test_assist_entry_is_not_usable_by_another_operator(gateway, operator):
    entry = await Entry(operator).start("")
    await add(gateway.app[store_key], "budi", "admin")
    other = Browser(gateway.url, "/kiosk")
    await other.sign_in("budi")
    csrf = await other.csrf("/kiosk/assist")
    status, body, _ = await other.post("/kiosk/assist/step", {"csrf": csrf, "session": entry.fields["session"],
                                                              "turn": entry.fields["turn"], "key": "1"})
    assert status == 403 and "sesi masuk lain" in body
    status, _, _ = await other.post("/kiosk/assist/step", {"csrf": csrf, "session": "kiosk-" + "x" * 24,
                                                           "turn": "0", "key": "1"})
    assert status == 404
    await other.close()
    assert (await entry.press(key="1")).status == 200 and "1. Jalan rusak" in entry.text


async def test_assist_without_a_phone_syncs_and_its_status_change_sends_nothing(tmp_path, backend):
    central = await Central(tmp_path / "central").start()
    gateway = await Gateway(make_sync_config(tmp_path / "gw", central.url, **backend)).start()
    browser = Browser(gateway.url, "/kiosk")
    try:
        await add(gateway.app[store_key], "ani", "operator")
        await browser.sign_in("ani")
        await (await Entry(browser).start("")).walk(*REPORT)
        [made] = await submissions(gateway)
        syncer = gateway.app[syncer_key]
        summary = await syncer.round()
        assert (summary.pushed, summary.accepted) == (1, 1)
        status, body = await central.staff("PATCH", f"/api/v1/submissions/{made['ref']}",
                                           json={"status": "resolved", "note": "Sudah ditambal."})
        assert status == 200
        summary = await syncer.round()
        assert (summary.updates, summary.notices) == (1, 0)
        assert await gateway.app[store_key].call(lambda s: s.outbox.messages()) == []
        assert [h["status"] for h in await gateway.app[store_key].call(lambda s: s.history(made["ref"]))] == \
            ["received", "resolved"]
    finally:
        await browser.close()
        await gateway.stop()
        await central.stop()


async def test_assist_a_language_picked_mid_entry_comes_back_to_the_same_screen(operator):
    entry = await Entry(operator).start()
    await entry.press(key="1")
    session, turn = entry.fields["session"], entry.fields["turn"]
    status, body, _ = await operator.get(f"/kiosk/assist/{session}?lang=sw")
    assert status == 200 and '<html lang="sw">' in body
    assert dict(HIDDEN.findall(body))["session"] == session and dict(HIDDEN.findall(body))["turn"] == turn
    assert 'href="/kiosk/assist/' + entry.fields["session"] + '?lang=id"' in body  # the links stay on it
    assert (await operator.get("/kiosk/assist/kiosk-" + "y" * 24))[0] == 404
