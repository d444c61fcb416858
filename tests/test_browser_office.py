"""The district office in a real browser: an agency's staff member signs in, finds an overdue request,
resolves it with a note after seeing the SMS the villager will get, and downloads the CSV; at 360 px, with no
serious accessibility violation on any page."""

import datetime as dt

from ulid import ULID

from browser import LiveServers, axe_violations, wait_for, wait_for_page
from sync.central.app import central_store_key

PASSWORD = "dewi-password-1"


def requests(prefix: str) -> list[dict]:
    """Three problem reports of the gateway with `prefix`, the first one overdue once its deadline is moved."""
    return [{"id": str(ULID()), "ref": f"{prefix}{ref}", "service": "report", "channel": "ussd",
             "answers": {"category": category, "location": "Sukamaju", "description": words},
             "phone": "+6281234567890", "language": "en", "created_at": f"2026-11-0{day}T08:00:00Z"}
            for ref, category, words, day in (("K7M2Q", "road", "Deep hole by the school", 1),
                                              ("P4R8T", "streetlight", "Dark since Monday", 2),
                                              ("W9X3Z", "garbage", "Not collected", 3))]


def seed(store, gateway_id: str, prefix: str, agency: str) -> None:
    store.ingest(gateway_id, requests(prefix))
    store.accounts.add("dewi", "staff", PASSWORD, agency)
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).isoformat(timespec="milliseconds")
    store.db.execute("UPDATE submissions SET due_at = ? WHERE ref = ?", [past, f"{prefix}K7M2Q"])


def test_browser_office_staff_resolve_an_overdue_request_after_the_sms_preview_and_download_csv(tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    with LiveServers(tmp_path, central=True) as servers:
        central = servers.apps[0].app[central_store_key]
        prefix, gateway_id = servers.config["gateway.ref_prefix"], servers.config["gateway.id"]
        agency = servers.config["central.default_agency"]
        servers.run(central.call(seed, gateway_id, prefix, agency))
        ref = f"{prefix}K7M2Q"

        chrome.get(servers.central_url + "/office")
        wait_for_page(chrome, lambda url: "/office/login" in url)
        chrome.switch_to.active_element.send_keys("dewi", Keys.TAB, PASSWORD, Keys.ENTER)
        wait_for(chrome, lambda d: d.find_element(By.ID, "order"))
        assert axe_violations(chrome) == []
        Select(chrome.find_element(By.ID, "order")).select_by_value("overdue")
        chrome.find_element(By.ID, "overdue").click()
        chrome.find_element(By.CSS_SELECTOR, "form.filters button").click()
        wait_for_page(chrome, lambda url: "overdue=1" in url)
        rows = chrome.find_elements(By.CSS_SELECTOR, "ul.requests li")
        assert len(rows) == 1 and ref in rows[0].text and "Overdue since" in rows[0].text
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 360
        assert axe_violations(chrome) == []

        rows[0].find_element(By.LINK_TEXT, ref).click()
        wait_for(chrome, lambda d: d.find_element(By.ID, "new-status"))
        assert axe_violations(chrome) == []
        Select(chrome.find_element(By.ID, "new-status")).select_by_value("resolved")
        chrome.find_element(By.ID, "note").send_keys("The hole is patched")
        chrome.find_element(By.ID, "preview-button").click()
        sms = wait_for(chrome, lambda d: d.find_element(By.ID, "sms-text")).text
        assert ref in sms and "The hole is patched" in sms
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 360
        assert axe_violations(chrome) == []
        assert servers.run(central.call(lambda s: s.submission(ref)))["status"] == "received"
        chrome.find_element(By.ID, "confirm").click()
        done = wait_for(chrome, lambda d: d.find_element(By.CSS_SELECTOR, "p.done"))
        assert "Status changed" in done.text
        assert sms in chrome.find_element(By.CSS_SELECTOR, "ol.history").text
        assert axe_violations(chrome) == []
        assert servers.run(central.call(lambda s: s.submission(ref)))["status"] == "resolved"

        chrome.get(servers.central_url + "/office?agency=")
        link = chrome.find_element(By.PARTIAL_LINK_TEXT, "CSV").get_attribute("href")
        text = chrome.execute_async_script(
            "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.text()).then(done);", link)
        lines = text.lstrip("\ufeff").splitlines()
        assert lines[0].startswith("reference,service,category,village,agency,status")
        assert any(line.startswith(f"{ref},report,road,Sukamaju,{agency},resolved") for line in lines)
        assert "+6281234567890" not in text
