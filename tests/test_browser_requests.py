"""The village's requests and the funnel in a real browser: a supervisor opens a request (an audit row is
written), the funnel renders its charts, and axe finds no serious violation on the three pages."""

from browser import LiveServers, axe_violations, wait_for_page
from conftest import PHONE
from gateway.ussd import Hop, ussd_turn
from gateway.resources import rules_key

PASSWORD = "sari-password-1"


def dial(store, engine, rules, session_id, *inputs):
    """A USSD session typed hop by hop, as the callback would run it."""
    typed = []
    ussd_turn(store, engine, rules, Hop(session_id, "*384*1#", PHONE, "", "51010"))
    for value in inputs:
        typed.append(value)
        ussd_turn(store, engine, rules, Hop(session_id, "*384*1#", PHONE, "*".join(typed), "51010"))


def test_browser_supervisor_opens_a_request_and_the_funnel(tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with LiveServers(tmp_path) as servers:
        engine, rules = servers.engine, servers.app[rules_key]
        servers.call(lambda s: s.accounts.add("sari", "supervisor", PASSWORD))
        servers.call(dial, engine, rules, "a", "1", "1", "Jalan Mawar RT 02", "Lubang besar", "1")
        servers.call(dial, engine, rules, "b", "1", "2")
        ref = servers.call(lambda s: s.list_submissions(1)[0]["ref"])

        chrome.get(servers.url + "/kiosk/requests")
        wait_for_page(chrome, lambda url: "/kiosk/login" in url)
        chrome.switch_to.active_element.send_keys("sari", Keys.TAB, PASSWORD, Keys.ENTER)
        wait_for_page(chrome, lambda url: url.endswith("/kiosk/requests"))
        assert axe_violations(chrome) == []
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 360
        chrome.find_element(By.LINK_TEXT, ref).send_keys(Keys.ENTER)
        wait_for_page(chrome, lambda url: url.endswith(f"/kiosk/requests/{ref}"))
        assert "Lubang besar" in chrome.find_element(By.TAG_NAME, "main").text
        assert axe_violations(chrome) == []
        audit = servers.call(lambda s: [(r["who"], r["action"], r["target"]) for r in s.accounts.audit_log()])
        assert ("sari", "personal-view", ref) in audit

        chrome.get(servers.url + "/kiosk/funnel")
        charts = chrome.find_elements(By.CSS_SELECTOR, "svg.funnel")
        assert len(charts) == 2  # the main menu and the report
        assert "location 2 0" in chrome.find_element(By.TAG_NAME, "main").text  # the table under the chart
        assert "location: 2 reached, 0 dropped" in charts[1].get_attribute("innerHTML")
        assert axe_violations(chrome) == []
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 360
