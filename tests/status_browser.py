"""Headless Chromium driven by Selenium, for the status page: Debian's ``chromium`` and
``chromium-driver`` (never a browser downloaded by a tool). ``.ci/run`` installs them and
exports their paths; without them the browser test skips, or fails with ``CI=true``.

Used by ``test_status_browser.py`` and, with ``CRM_KPI_STATUS_SCREENSHOT`` set, to make the
README's screenshot (``docs/status-page.png``) on the demo data.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_ENV = "CRM_KPI_TEST_CHROMIUM"
CHROMEDRIVER_ENV = "CRM_KPI_TEST_CHROMEDRIVER"


def browser_paths() -> tuple[str, str] | str:
    """(chromium, chromedriver), or why they cannot be had."""
    chromium = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium")
    driver = os.environ.get(CHROMEDRIVER_ENV) or shutil.which("chromedriver")
    if not chromium or not Path(chromium).exists():
        return (
            f"no Chromium (${CHROMIUM_ENV} or `chromium` on PATH):"
            " apt-get install chromium chromium-driver"
        )
    if not driver or not Path(driver).exists():
        return (
            f"no ChromeDriver (${CHROMEDRIVER_ENV} or `chromedriver` on PATH):"
            " apt-get install chromium-driver"
        )
    return chromium, driver


@contextmanager
def headless_chromium(chromium: str, driver: str, width: int = 1100) -> Iterator[Any]:
    """A Selenium WebDriver on headless Chromium, with a fresh profile, that never reaches
    past the machine (no background networking, updates or sync)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="crm-kpi-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",  # as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},900",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def full_page_screenshot(browser: Any, path: Path) -> Path:
    """The whole page as a PNG, beyond the window's height (Chromium's DevTools protocol)."""
    size = browser.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight];"
    )
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
