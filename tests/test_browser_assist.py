"""Assisted entry in a real browser: a report for a walk-in villager with and without a phone, by keyboard
and click at 360 px, with no serious accessibility violation on any kind of screen."""

from browser import LiveServers, axe_violations, wait_for, wait_for_page
from sync.store import NO_PHONE

PHONE = "+6281234567890"


def test_browser_assist_report_with_and_without_a_phone(tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def press(key):
        chrome.find_element(By.CSS_SELECTOR, f'button[name="key"][value="{key}"]').click()

    def answer(text):
        chrome.find_element(By.NAME, "input").send_keys(text, Keys.ENTER)

    def screen_shows(words):
        return lambda d: words in d.find_element(By.ID, "screen").text

    with LiveServers(tmp_path) as servers:
        servers.call(lambda s: s.accounts.add("ani", "operator", "ani-password-1"))
        chrome.get(servers.url + "/kiosk/assist")
        chrome.switch_to.active_element.send_keys("ani", Keys.TAB, "ani-password-1", Keys.ENTER)
        wait_for_page(chrome, lambda url: url.endswith("/kiosk/assist"))
        assert axe_violations(chrome) == []  # the start form
        for phone in (PHONE, ""):
            chrome.get(servers.url + "/kiosk/assist")
            chrome.switch_to.active_element.send_keys(phone, Keys.ENTER)
            wait_for(chrome, screen_shows("Kentongan"))
            assert axe_violations(chrome) == []  # a screen of choices
            press("1")
            wait_for(chrome, screen_shows("What is the problem?"))
            chrome.switch_to.active_element.send_keys(Keys.ENTER)  # the first choice has the focus: road
            wait_for(chrome, screen_shows("Where is it?"))
            assert chrome.switch_to.active_element.get_attribute("name") == "input"  # the focus is on the answer
            answer("ab")
            wait_for(chrome, lambda d: d.find_elements(By.ID, "head"))
            assert axe_violations(chrome) == []  # an answer field re-asked with its reason
            assert chrome.find_element(By.NAME, "input").get_attribute("value") == "ab"
            chrome.find_element(By.NAME, "input").clear()
            answer("Dusun Krajan")
            wait_for(chrome, screen_shows("Describe the problem"))
            answer("Deep holes near the school")
            wait_for(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, 'button[name="key"][value="2"]'))
            press("1")
            wait_for(chrome, lambda d: d.find_elements(By.CLASS_NAME, "actions"))
            assert axe_violations(chrome) == []  # the last screen: the SMS line, or the receipt
            assert chrome.execute_script("return document.documentElement.scrollWidth") <= 360
            if phone:
                assert "the confirmation SMS goes to +62812****890" in chrome.find_element(By.TAG_NAME, "main").text
            else:
                receipt = chrome.find_element(By.CLASS_NAME, "receipt").text
                assert "Damaged road" in receipt and "Dusun Krajan" not in receipt
        made = servers.call(lambda s: [s.submission(r) for (r,) in s.db.execute("SELECT ref FROM submissions")])
        assert sorted((m["phone"], m["channel"], m["operator"]) for m in made) == \
            sorted([(PHONE, "kiosk", "ani"), (NO_PHONE, "kiosk", "ani")])
        assert next(m["ref"] for m in made if m["phone"] == NO_PHONE) in receipt
        assert len(servers.call(lambda s: s.outbox.messages())) == 1
