"""The web phone in a real browser: a whole report by clicking its keypad, in each language, at 360 px."""

import re

import pytest

from browser import LiveServers, axe_violations, open_chromium, wait_for

THANKS = {"id": "Terima kasih.", "en": "Thank you.", "sw": "Asante."}
PHONES = {"id": "+6281234500001", "en": "+6281234500002", "sw": "+254712345003"}
KEYS = ("1", "1", "123", "456", "1")
"""Report, damaged road, place 123, what 456, confirm: each typed on the keypad, then Send."""


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with LiveServers(tmp_path_factory.mktemp("simulator"), simulator__enabled=True,
                     gateway__callback_secret="browser-callback-secret") as live:
        yield live


@pytest.mark.parametrize("lang", ["id", "en", "sw"])
def test_browser_simulator_walks_a_report_by_keypad(servers, lang):
    from selenium.webdriver.common.by import By

    chrome = open_chromium(lang)
    try:
        chrome.get(servers.url + "/simulator")
        assert chrome.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
        assert axe_violations(chrome) == []
        phone = chrome.find_element(By.ID, "phone")
        phone.clear()
        phone.send_keys(PHONES[lang])
        screen = chrome.find_element(By.ID, "screen")
        send = chrome.find_element(By.ID, "send")
        keypad = {b.text: b for b in chrome.find_elements(By.CSS_SELECTOR, ".keypad button")}
        send.click()  # Call: the entry holds *384*1#
        wait_for(chrome, lambda d: d.find_element(By.NAME, "session").get_attribute("value"))
        for answer in KEYS:
            before = screen.text
            for key in answer:
                keypad[key].click()
            assert chrome.find_element(By.ID, "entry").get_attribute("value") == answer
            send.click()
            wait_for(chrome, lambda d: screen.text != before)
        assert screen.text.startswith(THANKS[lang])
        ref = re.search(r"\b(K[0-9A-Z]{5,7})\b", screen.text).group(1)
        count = chrome.find_element(By.ID, "count").text
        assert re.search(rf"\b{len('END ' + screen.text)}\b.*\b182\b", count), count
        sms = chrome.find_element(By.ID, "sms")
        assert ref in sms.text and sms.text.count("Kentongan:") == 1
        assert servers.call(lambda s: s.language(PHONES[lang])) == lang
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 360
        assert axe_violations(chrome) == []
    finally:
        chrome.quit()


def test_browser_simulator_keyboard_alone(servers):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    chrome = open_chromium("en")
    try:
        chrome.get(servers.url + "/simulator")
        entry = chrome.switch_to.active_element  # the answer field has the focus on arrival
        assert entry.get_attribute("id") == "entry"
        entry.send_keys(Keys.ENTER)  # Enter is Call
        screen = chrome.find_element(By.ID, "screen")
        wait_for(chrome, lambda d: screen.text.startswith("Kentongan village services"))
        chrome.find_element(By.ID, "screen").click()  # focus off the field: keys type on the keypad
        chrome.switch_to.active_element.send_keys("5", Keys.ENTER)  # Language
        wait_for(chrome, lambda d: screen.text.startswith("Choose language"))
        chrome.switch_to.active_element.send_keys("2", Keys.BACK_SPACE, "3", Keys.ENTER)  # Kiswahili
        wait_for(chrome, lambda d: screen.text.startswith("Lugha imehifadhiwa: Kiswahili."))
        chrome.switch_to.active_element.send_keys(Keys.ESCAPE)  # End
        wait_for(chrome, lambda d: d.find_element(By.ID, "entry").get_attribute("value") == "*384*1#")
        assert chrome.find_element(By.NAME, "session").get_attribute("value") == ""
    finally:
        chrome.quit()
