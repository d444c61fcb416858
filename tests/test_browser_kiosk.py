"""The dashboard in a real browser against a real central backend: Sync now with live progress, a batch file
carried both ways, Retry of a dead SMS, at 360 px and with no serious accessibility violation."""

import datetime as dt
import urllib.request

from browser import LiveServers, axe_violations, wait_for, wait_for_page
from gateway.resources import rules_key
from gateway.turn import submit
from sync.central import export_updates_file, import_batch_file
from sync.central.app import central_store_key

PHONE = "+6281234567890"
REPORT = {"service": "report", "language": "en", "unique": {},
          "answers": {"category": "road", "location": "Dusun Kidul", "description": "Potholes"}}


def add_report(servers):
    return servers.call(lambda s: submit(s, servers.engine, servers.app[rules_key], REPORT, phone=PHONE,
                                         channel="ussd"))


def dead_sms(store):
    with store.transaction():
        row = store.outbox.add(PHONE, "Report K7M2QX received", "confirmation", ttl=dt.timedelta(hours=1))
        store.outbox.give_up(row["id"], "InvalidPhoneNumber")
    return row["id"]


def main_text(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "main").text


def test_browser_kiosk_sync_batch_files_and_retry(tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with LiveServers(tmp_path / "var", central=True) as servers:
        servers.call(lambda s: s.accounts.add("ani", "operator", "ani-password-1"))
        wait_for(chrome, lambda d: servers.call(lambda s: s.meta("sync_last_success")))  # the first round at start
        add_report(servers)
        message_id = servers.call(dead_sms)
        chrome.get(servers.url + "/kiosk")
        wait_for_page(chrome, lambda url: "/kiosk/login" in url)
        chrome.find_element(By.ID, "name").send_keys("ani", Keys.TAB, "ani-password-1", Keys.ENTER)
        wait_for_page(chrome, lambda url: url.rstrip("/").endswith("/kiosk"))
        assert "+62812****890" in main_text(chrome) and PHONE not in chrome.page_source
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 360
        assert axe_violations(chrome) == []

        chrome.find_element(By.CSS_SELECTOR, "#sync-form button").click()
        wait_for(chrome, lambda d: "Sync finished: 1 submissions sent (1 accepted"
                 in d.find_element(By.ID, "sync-text").text)
        assert chrome.current_url.rstrip("/").endswith("/kiosk")  # followed by the script, not a page load
        assert servers.call(lambda s: s.counts()["sync"]["pending"]) == 0

        added = add_report(servers)
        cookies = "; ".join(f"{c['name']}={c['value']}" for c in chrome.get_cookies())
        request = urllib.request.Request(servers.url + "/kiosk/batch", headers={"Cookie": cookies})
        with urllib.request.urlopen(request, timeout=15) as response:
            assert response.headers["Content-Disposition"].startswith('attachment; filename="kentongan-demo-')
            carried = tmp_path / "carried.batch"
            carried.write_bytes(response.read())
        central = servers.apps[0].app[central_store_key]
        _, results = servers.run(central.call(import_batch_file, carried))
        assert [r["result"] for r in results] == ["accepted"]
        answer = tmp_path / "answer.batch"
        servers.run(central.call(export_updates_file, "demo", answer))
        chrome.find_element(By.ID, "answer-file").send_keys(str(answer))
        chrome.find_element(By.CSS_SELECTOR, "form[action='/kiosk/answer'] button").click()
        wait_for(chrome, lambda d: "1 submissions acknowledged" in d.page_source)  # the new page, whole
        assert servers.call(lambda s: s.submission(added["ref"])["sync_state"]) == "synced"
        assert axe_violations(chrome) == []

        chrome.find_element(By.CSS_SELECTOR, "form[action='/kiosk/outbox/retry'] button").click()
        wait_for(chrome, lambda d: "queued again" in d.page_source)
        wait_for(chrome, lambda d: servers.call(
            lambda s: next(r["state"] for r in s.outbox.latest(None, 50) if r["id"] == message_id)) == "sent")
        assert axe_violations(chrome) == []
