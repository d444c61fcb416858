"""The loop closed, in a real browser: staff resolve a villager's report on the office page, the villager
answers the notice "2" (not fixed) by SMS, and after the next sync the office page shows the request open
again with the villager's own words in its history."""

import urllib.parse
import urllib.request

from browser import LiveServers, axe_violations, wait_for, wait_for_page
from gateway.resources import syncer_key
from sync.central.app import central_store_key

PHONE = "+6281234567890"
PASSWORD = "sari-password-1"
REPORT = ["1", "1", "Sukamaju", "Lubang besar dekat sekolah", "1"]
"""Report a problem: damaged road, where, what, yes."""


def post(url: str, fields: dict) -> str:
    """A callback to the gateway, as Africa's Talking sends it."""
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=15) as response:
        return response.read().decode()


def dial(servers, *inputs) -> str:
    """A whole USSD session; returns the last screen."""
    body = ""
    for n in range(len(inputs) + 1):
        body = post(servers.url + "/ussd/africastalking", {
            "sessionId": "villager-1", "serviceCode": "*384*1#", "phoneNumber": PHONE, "networkCode": "51010",
            "text": "*".join(inputs[:n])})
    return body


def test_browser_office_a_villagers_not_fixed_reopens_the_request_after_the_next_sync(tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    with LiveServers(tmp_path, central=True) as servers:
        central = servers.apps[0].app[central_store_key]
        agency = servers.config["central.default_agency"]
        servers.run(central.call(lambda s: s.accounts.add("sari", "supervisor", PASSWORD, agency)))
        end = dial(servers, *REPORT)
        assert end.startswith("END ")
        ref = servers.call(lambda s: s.db.execute("SELECT ref FROM submissions").fetchone()[0])
        assert ref in end
        sync = servers.app[syncer_key]
        servers.run(sync.round())

        chrome.get(f"{servers.central_url}/office/r/{ref}")
        wait_for_page(chrome, lambda url: "/office/login" in url)
        chrome.switch_to.active_element.send_keys("sari", Keys.TAB, PASSWORD, Keys.ENTER)
        wait_for(chrome, lambda d: d.find_element(By.ID, "new-status"))
        Select(chrome.find_element(By.ID, "new-status")).select_by_value("resolved")
        chrome.find_element(By.ID, "note").send_keys("Sudah ditambal")
        chrome.find_element(By.ID, "preview-button").click()
        preview = wait_for(chrome, lambda d: d.find_element(By.ID, "sms-text")).text
        assert "Balas 1 ya atau 2 belum" in preview  # the notice asks whether it is fixed
        chrome.find_element(By.ID, "confirm").click()
        wait_for(chrome, lambda d: d.find_element(By.CSS_SELECTOR, "p.done"))

        servers.run(sync.round())  # the gateway pulls the resolution and queues the notice
        notices = servers.call(lambda s: [m["body"] for m in s.outbox.messages(PHONE) if m["kind"] == "notice"])
        assert notices == [preview]
        post(servers.url + "/sms/africastalking/inbound", {
            "from": PHONE, "to": "12345", "text": "2 masih berlubang", "date": "2026-11-29 10:00:00",
            "id": "villager-answer-1", "linkId": "", "networkCode": "51010"})
        servers.run(sync.round())  # the answer travels with the next sync

        chrome.get(f"{servers.central_url}/office/r/{ref}")
        history = wait_for(chrome, lambda d: d.find_element(By.CSS_SELECTOR, "ol.history")).text
        assert "masih berlubang" in history
        row = servers.run(central.call(lambda s: s.submission(ref)))
        assert (row["status"], row["reopened"], row["fixed"]) == ("in_progress", 1, 0)
        assert axe_violations(chrome) == []
