"""The web phone (`/simulator`) and the terminal phone (`kentongan simulate`) against a real gateway."""

import asyncio
import html
import re
import sys

import pytest

from conftest import PHONE, Gateway, make_config
from flows.text import USSD_LIMIT, ussd_cost
from gateway.resources import store_key

SECRET = "callback-secret-never-in-a-page"
REPORT = ("1", "1", "Dusun Kidul", "Jalan rusak", "1")


@pytest.fixture
async def phone_gateway(tmp_path, clock):
    gw = await Gateway(make_config(tmp_path / "var", simulator__enabled=True,
                                   gateway__callback_secret=SECRET), clock).start()
    yield gw
    await gw.stop()


async def press(gw, handset, key, *, entry=None, as_json=True, lang="en"):
    """One key of the web phone, as its script (JSON) or its plain form (HTML) posts it."""
    names = ("phone", "language", "session", "code", "history", "inputs")
    fields = {name: str(handset.get(name, "")) for name in names}
    fields.update(entry=handset.get("entry", "") if entry is None else entry, press=key)
    headers = {"Accept": "application/json"} if as_json else {}
    async with gw.http.post(gw.url + f"/simulator?lang={lang}", data=fields, headers=headers) as response:
        return response.status, await (response.json() if as_json else response.text())


async def walk(gw, inputs, phone=PHONE, language="en"):
    """Call, then send each of `inputs` as typed; every JSON answer."""
    status, handset = await press(gw, {"phone": phone, "language": language}, "send", entry="*384*1#")
    assert status == 200, handset
    answers = [handset]
    for typed in inputs:
        status, handset = await press(gw, handset, "send", entry=typed)
        assert status == 200, handset
        answers.append(handset)
    return answers


async def test_simulator_is_a_404_when_disabled(gateway):
    assert not gateway.config["simulator.enabled"]
    for path in ("/simulator", "/simulator/sms?phone=%2B6281234567890", "/simulator/simulator.js"):
        async with gateway.http.get(gateway.url + path) as response:
            assert response.status == 404, path
    for path in ("/simulator", "/simulator/language"):
        status, _, _ = await gateway.post(path, {"phone": PHONE, "language": "en", "press": "send"})
        assert status == 404, path


async def test_simulator_walks_a_report_through_the_secret_callback_and_shows_the_sms(phone_gateway):
    gw = phone_gateway
    # The callback itself wants the key, which the page never holds.
    status, _, _ = await gw.post("/ussd/africastalking", {"sessionId": "x", "serviceCode": "*384*1#",
                                                          "phoneNumber": PHONE, "text": ""})
    assert status == 403
    async with gw.http.get(gw.url + "/simulator?lang=en") as response:
        page = await response.text()
    assert response.status == 200 and SECRET not in page
    assert 'action="/simulator"' in page and 'src="/simulator/simulator.js"' in page
    answers = await walk(gw, REPORT)
    assert answers[0]["screen"].startswith("CON Kentongan village services. Choose:")
    assert answers[0]["session"] and answers[0]["entry"] == ""
    assert [a["inputs"] for a in answers[:-1]] == [0, 1, 2, 3, 4]
    assert answers[-2]["history"] == "1*1*Dusun Kidul*Jalan rusak"
    saved = await gw.app[store_key].call(lambda s: s.db.execute(
        "SELECT service_code FROM ussd_sessions WHERE id = ?", [answers[0]["session"]]).fetchone())
    assert saved == ("*384*1#",)
    end = answers[-1]
    ref = re.search(r"\b(K[0-9A-Z]{5,7})\b", end["screen"]).group(1)
    assert end["screen"].startswith("END Thank you") and end["session"] == "" and end["entry"] == "*384*1#"
    for answer in answers:
        assert answer["count"] == ussd_cost(answer["screen"]) <= answer["limit"] == USSD_LIMIT
        assert SECRET not in str(answer)
    confirmation = end["sms"][0]
    assert ref in confirmation["text"] and confirmation["kind"] == "confirmation"
    assert confirmation["state"] in ("waiting to be sent", "sending", "sent")
    async with gw.http.get(gw.url + "/simulator/sms", params={"phone": PHONE}) as response:
        assert response.status == 200
        assert [m["id"] for m in (await response.json())["sms"]] == [confirmation["id"]]
    async with gw.http.get(gw.url + "/simulator", params={"phone": PHONE, "lang": "en"}) as response:
        page = html.unescape(await response.text())
    assert ref in page and "SMS received by this number" in page


async def test_simulator_plain_form_without_script(phone_gateway):
    gw = phone_gateway
    handset = {"phone": PHONE, "language": "sw"}
    status, page = await press(gw, handset, "1", entry="*384*1", as_json=False, lang="sw")
    assert status == 200 and 'value="*384*11"' in page  # a key types; nothing dials
    status, page = await press(gw, handset, "clear", entry="*384*1#", as_json=False, lang="sw")
    assert 'value="*384*1"' in page
    status, page = await press(gw, handset, "send", entry="*384*1#", as_json=False, lang="sw")
    text = html.unescape(page)
    assert status == 200 and "Kentongan, huduma za kijiji. Chagua:" in text
    screen = re.search(r'<pre class="screen"[^>]*>(.*?)</pre>', page, re.S).group(1)
    body = "CON " + html.unescape(screen)
    assert f"Herufi {ussd_cost(body)} kati ya 182" in text
    session = re.search(r'name="session" value="([0-9A-Z]+)"', page).group(1)
    assert 'name="code" value="*384*1#"' in page
    status, page = await press(gw, {**handset, "session": session, "code": "*384*1#"}, "end", as_json=False,
                               lang="sw")
    assert status == 200 and 'name="session" value=""' in page


async def test_simulator_language_is_the_callers_as_the_menu_sets_it(phone_gateway):
    gw = phone_gateway
    answers = await walk(gw, [], language="sw")
    assert answers[0]["screen"].startswith("CON Kentongan, huduma za kijiji. Chagua:")
    assert await gw.app[store_key].call(lambda s: s.language(PHONE)) == "sw"
    status, body, _ = await gw.post("/simulator/language", {"phone": PHONE, "language": "en"})
    assert status == 200
    assert await gw.app[store_key].call(lambda s: s.language(PHONE)) == "en"
    for fields, reason in (({"phone": "12", "language": "en"}, "E.164"), ({"phone": PHONE, "language": "fr"},
                                                                            "language must be one of id, en, sw")):
        status, body, _ = await gw.post("/simulator/language", fields)
        assert status == 400 and reason in body


async def test_simulator_bad_input_reshows_the_form_with_the_reason(phone_gateway):
    gw = phone_gateway
    cases = [({"phone": "0812 not a number", "language": "en"}, "*384*1#",
              "Type the phone number in international form"),
             ({"phone": PHONE, "language": "fr"}, "*384*1#", "Choose one of the languages in the list."),
             ({"phone": PHONE, "language": "en"}, "12345", "To call, type a code such as *384*1#.")]
    for handset, entry, reason in cases:
        status, page = await press(gw, handset, "send", entry=entry, as_json=False)
        assert status == 400, reason
        text = html.unescape(page)
        assert reason in text and f'value="{handset["phone"]}"' in text and f'value="{entry}"' in text
    # A tampered call is hung up, not forwarded; the next Call starts afresh.
    status, handset = await press(gw, {"phone": PHONE, "language": "en", "session": "../../etc",
                                       "history": "1", "inputs": "\u00b2"}, "send", entry="*384*1#")
    assert status == 200 and handset["screen"].startswith("CON Kentongan village services")
    async with gw.http.post(gw.url + "/simulator", data=b"\xff\xfe", headers={
            "Content-Type": "application/x-www-form-urlencoded"}) as response:
        assert response.status == 400
    async with gw.http.get(gw.url + "/simulator/sms", params={"phone": "nope"}) as response:
        assert response.status == 400 and "E.164" in (await response.json())["error"]


async def test_cli_simulate_in_english_shows_the_sms_after_end(phone_gateway):
    gw = phone_gateway
    config = gw.config.source
    config.write_text(f"gateway:\n  callback_secret: {SECRET}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "--lang", "en", "--url", gw.url + "/ussd/africastalking",
        "--config", str(config), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate("\n".join(REPORT).encode() + b"\n"), 60)
    assert process.returncode == 0, err
    screens = out.decode()
    assert screens.startswith("Kentongan village services. Choose:")
    thanks = re.search(r"Thank you\. .*?\b(K[0-9A-Z]{5,7})\b", screens, re.S)
    assert thanks, screens
    sms = screens[thanks.end():]
    assert re.search(rf"SMS \((queued|sending|sent)\): .*{thanks.group(1)}", sms), screens


async def test_cli_simulate_lang_needs_the_simulator(gateway):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "--lang", "sw", "--url", gateway.url + "/ussd/africastalking",
        "--config", str(gateway.config.source), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(b""), 60)
    assert process.returncode == 2 and out == b""
    assert err.decode().startswith("kentongan: cannot set the language:") and len(err.splitlines()) == 1


async def test_simulator_refuses_posts_another_site_made_the_browser_send(phone_gateway):
    gw = phone_gateway
    fields = {"phone": PHONE, "language": "en", "entry": "*384*1#", "press": "send"}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        status, body, _ = await gw.post("/simulator", fields, headers=headers)
        assert status == 403 and "its own page only" in body
        status, _, _ = await gw.post("/simulator/language", {"phone": PHONE, "language": "sw"}, headers=headers)
        assert status == 403
    assert await gw.app[store_key].call(lambda s: (s.language(PHONE), s.counts()["submissions"]["total"])) == \
        (None, 0)
    status, _, _ = await gw.post("/simulator", fields, headers={"Origin": gw.url, "Accept": "application/json"})
    assert status == 200  # its own page
