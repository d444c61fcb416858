"""Service performance in a real browser: a staff member reads the stats page and downloads its CSV; the public
page needs no sign-in; both at 360 px with no serious accessibility violation."""

from browser import LiveServers, axe_violations, wait_for, wait_for_page
from sync.central.app import central_store_key

PASSWORD = "sari-password-1"


def requests(store):
    """A few requests at the centre: roads and garbage in two villages, some resolved."""
    for n, (category, village) in enumerate((("road", "Sukamaju"), ("road", "Cibodas"), ("garbage", "Sukamaju"),
                                             ("garbage", "Sukamaju"), ("streetlight", "Cibodas"))):
        row = store.add_direct("report", {"category": category, "location": village, "description": "rusak"},
                               f"+6281200000{n:02d}", "open311")
        if n % 2 == 0:
            store.change(row["ref"], "resolved", "", "sari")
    store.accounts.add("sari", "viewer", PASSWORD, "Dinas PU")


def test_browser_stats_page_csv_and_public_page(tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with LiveServers(tmp_path, central=True) as servers:
        central = servers.apps[0].app[central_store_key]
        servers.run(central.call(requests))
        chrome.get(servers.central_url + "/office/stats")
        wait_for_page(chrome, lambda url: "/office/login" in url)
        chrome.switch_to.active_element.send_keys("sari", Keys.TAB, PASSWORD, Keys.ENTER)
        wait_for_page(chrome, lambda url: url.split("?")[0].endswith("/office/stats"))
        total = chrome.find_element(By.CSS_SELECTOR, '#total dd[data-figure="received"]')
        assert total.text == "5"
        villages = [row.text for row in chrome.find_elements(By.CSS_SELECTOR, "#table-village tbody th")]
        assert villages == ["Sukamaju", "Cibodas"]
        assert chrome.find_element(By.CSS_SELECTOR, "svg.stats title").get_attribute("textContent") == "By service"
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 360
        assert axe_violations(chrome) == []

        link = chrome.find_element(By.PARTIAL_LINK_TEXT, "Download CSV")
        csv = chrome.execute_async_script(
            "const done = arguments[1]; fetch(arguments[0]).then(r => r.text()).then(done)", link.get_attribute("href"))
        lines = csv.lstrip("\ufeff").splitlines()
        assert lines[0].split(",")[2:6] == ["group", "key", "label", "received"]
        assert any(",village,Sukamaju,Sukamaju,3," in line for line in lines)

        start = chrome.find_element(By.ID, "from")
        chrome.execute_script("arguments[0].value = '2099-12-31'", start)  # a start after the end: refused
        chrome.find_element(By.CSS_SELECTOR, "form.period button").click()
        wait_for(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, "p.reason"))
        assert "must not be after" in chrome.find_element(By.CSS_SELECTOR, "p.reason").text
        assert chrome.find_element(By.ID, "from").get_attribute("value") == "2099-12-31"  # kept as typed
        assert axe_violations(chrome) == []

        chrome.delete_all_cookies()
        chrome.get(servers.central_url + "/public")
        assert chrome.find_element(By.CSS_SELECTOR, '#total dd[data-figure="received"]').text == "5"
        assert "Sukamaju" not in chrome.page_source and not chrome.find_elements(By.ID, "table-village")
        assert axe_violations(chrome) == []
