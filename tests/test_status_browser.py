"""The status page for real (issue 12, point 2): ``crm-kpi sync`` runs as a service in its own
process against the sandbox Salesforce with ``runtime.http`` on; once its first run is done,
its port answers /healthz, /readyz and /metrics (parsed by prometheus-client), and headless
Chromium opens the page: the chart's bar for Alice stands at 125% (her demo quarter, KPIS.md),
the run table lists run 1, and a screenshot is saved under the test's temporary folder.

``CRM_KPI_STATUS_SCREENSHOT=docs/status-page.png`` also saves it there (the README's picture).
Without Chromium the test skips, saying how to install it; with ``CI=true`` it fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from conftest import IN_CI, write_demo_config
from prometheus_client.parser import text_string_to_metric_families
from status_browser import browser_paths, full_page_screenshot, headless_chromium
from test_unattended import Worker

from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

AS_OF = "2026-09-30T20:00:00+02:00"  # the demo quarter (2026-Q3) is the current one
SCREENSHOT_ENV = "CRM_KPI_STATUS_SCREENSHOT"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode("utf-8")


@pytest.fixture
def browser_binaries() -> tuple[str, str]:
    found = browser_paths()
    if isinstance(found, str):
        if IN_CI:
            pytest.fail(f"{found}; CI=true: .ci/run must install it")
        pytest.skip(found)
    return found


@pytest.mark.slow
def test_the_status_page_in_chromium(tmp_path: Path, browser_binaries: tuple[str, str]) -> None:
    from selenium.webdriver.common.by import By

    port = _free_port()
    with SalesforceSandbox.start(seed=42, reference_date=dt.date(2026, 9, 30)) as sandbox:
        config = write_demo_config(sandbox, tmp_path)
        text = config.read_text(encoding="utf-8").replace("  language: fr", "  language: en")
        text = text.replace(
            "runtime:\n  log_level: INFO",
            f"runtime:\n  log_level: INFO\n  as_of: {AS_OF}\n  http: {{port: {port}}}",
        )
        config.write_text(text + "\nschedule:\n  every_minutes: 60\n", encoding="utf-8")
        setup = Worker("setup", config=config)
        assert setup.finish() == 0, setup.output
        service = Worker("sync", config=config)
        try:
            url = service.wait_for_line(r"crm-kpi: status page at ").split(" at ", 1)[1]
            url = url.split("/ ", 1)[0]
            assert url == f"http://127.0.0.1:{port}"
            service.wait_for_line(r"run 1 completed")
            _check_endpoints(url)
            chromium, driver = browser_binaries
            with headless_chromium(chromium, driver) as browser:
                browser.get(f"{url}/")
                assert browser.title == "crm-kpi-worker status"
                alice = browser.find_element(
                    By.CSS_SELECTOR, 'g.attainment[data-label="Alice Martin"]'
                )
                assert float(alice.get_attribute("data-attainment")) == pytest.approx(1.25)
                assert alice.find_element(By.CSS_SELECTOR, "text.percent").text == "125%"
                bar = alice.find_element(By.CSS_SELECTOR, "rect.bar")
                line = browser.find_element(By.CSS_SELECTOR, "line.line100")
                # The bar is drawn past the 100% line by a quarter of the way to it.
                left = float(bar.get_attribute("x"))
                hundred = float(line.get_attribute("x1")) - left
                ratio = float(bar.get_attribute("width")) / hundred
                assert ratio == pytest.approx(1.25, abs=0.01)
                assert bar.size["width"] > 0 and bar.is_displayed()
                run = browser.find_element(By.CSS_SELECTOR, "table.runs tr.run")
                assert run.get_attribute("data-run-id") == "1"
                assert "completed" in run.text
                calls = run.find_element(By.CSS_SELECTOR, "td.calls").text
                run.find_element(By.LINK_TEXT, "1").click()
                record = json.loads(browser.find_element(By.TAG_NAME, "body").text)
                assert record["id"] == 1
                # The API calls column is the run report's count.
                reported = sum(s["api_calls"] for s in record["report"]["sources"])
                assert calls == str(reported) and reported > 10
                browser.get(f"{url}/")
                shot = full_page_screenshot(browser, tmp_path / "status-page.png")
                assert shot.stat().st_size > 10_000
                wanted = os.environ.get(SCREENSHOT_ENV)
                if wanted:
                    full_page_screenshot(browser, Path(wanted))
            service.process.send_signal(signal.SIGTERM)
            assert service.finish(timeout=60) == 0, service.output
        finally:
            if service.process.poll() is None:
                service.process.kill()
    assert "Traceback" not in service.output


def _check_endpoints(url: str) -> None:
    status, body = _get(f"{url}/healthz")
    assert status == 200 and json.loads(body)["scheduler"] == "running"
    status, body = _get(f"{url}/readyz")
    assert status == 200, body
    status, body = _get(f"{url}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    runs = {
        (s.labels["source"], s.labels["outcome"]): s.value
        for s in families["crm_kpi_runs"].samples
        if s.name == "crm_kpi_runs_total"
    }
    assert runs == {("sandbox", "completed"): 1.0}
    assert families["crm_kpi_last_success_timestamp_seconds"].samples[0].value > 0
