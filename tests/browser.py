"""What browser tests share: Debian's Chromium through selenium, servers on a thread of their own, axe-core.

Selenium's calls block, so a browser test is a plain (not async) test and
the servers it drives run on their own event loop in a background thread
(`LiveServers`); `servers.call(fn)` runs `fn(store)` in the gateway's store
thread from the test, for set-up and for checking what the page did.

Without Chromium (`/usr/bin/chromium` and `/usr/bin/chromedriver`, Debian's
`chromium` and `chromium-driver`) browser tests skip with that reason; with
`KENTONGAN_REQUIRE_BROWSER=1` (CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from conftest import free_port, make_config
from gateway.app import create_apps, serving
from gateway.resources import engine_key, load_engine, store_key

WIDTH, HEIGHT = 360, 740
"""A cheap tablet held upright: every page must work at this size."""
WAIT_SECONDS = 15.0


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or skip (fail with KENTONGAN_REQUIRE_BROWSER=1) when either is missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    reason = "Chromium is absent (apt-get install chromium chromium-driver)"
    if os.environ.get("KENTONGAN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and KENTONGAN_REQUIRE_BROWSER=1")
    pytest.skip(reason)


def open_chromium(language: str = "en"):
    """A headless Chromium at WIDTH x HEIGHT whose Accept-Language is `language`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WIDTH},{HEIGHT}", f"--lang={language}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language,
                                              "download.prompt_for_download": False})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_window_size(WIDTH, HEIGHT)
    return chrome


def wait_for(driver, condition, timeout: float = WAIT_SECONDS):
    """`condition(driver)` once it is truthy (selenium's WebDriverWait: polls, never a fixed sleep).

    An element that is missing, or that a page load replaced between finding it and reading it, is
    "not yet": the condition is asked again. Chromium reports the second case in more than one way
    (a stale element, or "Node with given id does not belong to the document"), so every WebDriver
    error inside the condition counts as "not yet"; one that lasts ends in a timeout that carries it.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(condition)


def wait_for_page(driver, arrived, timeout: float = WAIT_SECONDS):
    """Wait until the page shown is one `arrived(url)` accepts and it has loaded whole.

    The URL changes when a navigation commits, before the new page's
    elements exist: a test that read the page on the URL alone could find no
    `<main>` yet (seen once in CI, after a sign-in redirect).
    """
    return wait_for(driver, lambda d: arrived(d.current_url)
                    and d.execute_script("return document.readyState") == "complete", timeout)


def axe_violations(driver, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of the page now in `driver` with one of `impacts`, one line each."""
    from axe_core_python.selenium import Axe

    results = Axe().run(driver)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in results["violations"] if v["impact"] in impacts]


class LiveServers:
    """A gateway (and, with `central`, its embedded central backend) served on a background thread."""

    def __init__(self, data_dir: Path, central: bool = False, **overrides):
        central_port = free_port()
        if central:
            overrides = {"central__embedded": True, "central__port": central_port,
                         "central__url": f"http://127.0.0.1:{central_port}", "sync__secret": "browser-sync-secret",
                         "sync__interval_seconds": 3600, **overrides}
        self.config = make_config(data_dir, gateway__port=free_port(), **overrides)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.urls: list[str] = []
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="live-servers", daemon=True)

    def __enter__(self) -> "LiveServers":
        self.thread.start()
        if not self.ready.wait(WAIT_SECONDS) or self.failure:
            raise RuntimeError(f"servers did not start: {self.failure!r}")
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(WAIT_SECONDS)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as error:  # told to __enter__, which raises it in the test
            self.failure = error
            self.ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self.stopping = asyncio.Event()
        self.apps = create_apps(self.config, load_engine(self.config))
        async with serving(self.apps) as urls:
            self.urls = urls
            self.ready.set()
            await self.stopping.wait()

    @property
    def app(self):
        return self.apps[-1].app

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return self.urls[-1]

    @property
    def central_url(self) -> str:
        return self.urls[0]

    @property
    def engine(self):
        return self.app[engine_key]

    def run(self, coroutine):
        """Run `coroutine` on the servers' loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT_SECONDS * 4)

    def call(self, fn, *args):
        """`fn(store, *args)` in the gateway's store thread."""
        return self.run(self.app[store_key].call(fn, *args))
