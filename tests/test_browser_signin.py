"""Sign-in in a real browser: by keyboard alone, at 360 px, with no serious accessibility violation."""

import pytest

from browser import LiveServers, axe_violations, open_chromium, wait_for_page


@pytest.fixture
def chrome():
    driver = open_chromium("id")
    yield driver
    driver.quit()


def test_browser_signin_by_keyboard_and_no_serious_accessibility_violation(tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with LiveServers(tmp_path) as servers:
        servers.call(lambda s: s.accounts.add("ani", "admin", "ani-password-1"))
        chrome.get(servers.url + "/kiosk")
        wait_for_page(chrome, lambda url: "/kiosk/login" in url)
        assert chrome.find_element(By.TAG_NAME, "html").get_attribute("lang") == "id"
        assert axe_violations(chrome) == []
        field = chrome.switch_to.active_element  # the name field has the focus on arrival
        assert field.get_attribute("name") == "name"
        field.send_keys("ani", Keys.TAB, "ani-password-1", Keys.ENTER)
        wait_for_page(chrome, lambda url: url.rstrip("/").endswith("/kiosk"))
        assert "Masuk sebagai ani" in chrome.find_element(By.TAG_NAME, "main").text
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 360
        assert axe_violations(chrome) == []
        chrome.get(servers.url + "/kiosk/audit")
        assert axe_violations(chrome) == []
        assert servers.call(lambda s: [r["action"] for r in s.accounts.audit_log()]) == ["login"]
