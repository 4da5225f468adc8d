"""Run by .ci/container INSIDE the image (chroot, as its user, with its python and package):
the service (`crm-kpi sync`) with ``runtime.http`` on the HEALTHCHECK's port, against a
sandbox Salesforce; the image's HEALTHCHECK command (argv) must fail before the service
listens and pass once it runs; /readyz and /metrics answer after the first run; SIGTERM
stops the service with exit code 0."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

healthcheck = sys.argv[1:]
port = int(re.search(r"127\.0\.0\.1:(\d+)/healthz", " ".join(healthcheck))[1])
crm_kpi = shutil.which("crm-kpi")
assert crm_kpi, "no crm-kpi on the image's PATH"


def healthy() -> bool:
    return subprocess.run(healthcheck, capture_output=True, timeout=30).returncode == 0  # noqa: S603


def wait(condition, what: str, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"container check: timed out waiting until {what}")
        time.sleep(0.5)


folder = Path(tempfile.mkdtemp())
with SalesforceSandbox.start(seed=42, reference_date=dt.date(2026, 9, 30)) as sandbox:
    text = path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
    text = text.replace("login_url: https://127.0.0.1:0", f"login_url: {sandbox.url}")
    text = text.replace(
        "instance_url: https://127.0.0.1:0",
        f"instance_url: {sandbox.url}\n    ca_bundle: {sandbox.ca_path}",
    )
    text = text.replace("url: sqlite:///crm-kpi-demo.sqlite", "url: sqlite:////data/crm-kpi.sqlite")
    text = text.replace(
        "runtime:\n  log_level: INFO", f"runtime:\n  log_level: INFO\n  http: {{port: {port}}}"
    )
    config = folder / "crm-kpi.yaml"
    config.write_text(text + "\nschedule:\n  every_minutes: 60\n", encoding="utf-8")
    assert not healthy(), "the HEALTHCHECK passed with no service listening"
    subprocess.run([crm_kpi, "setup", "--config", str(config)], check=True, capture_output=True)  # noqa: S603
    log = (folder / "service.log").open("w")
    service = subprocess.Popen(  # noqa: S603
        [crm_kpi, "sync", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait(healthy, "the image's HEALTHCHECK passes")
        print(f"container check: HEALTHCHECK passed against the service on port {port}")
        output = folder / "service.log"
        wait(lambda: "run 1 completed" in output.read_text(encoding="utf-8"), "run 1 completed")
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as answer:  # noqa: S310
            assert answer.status == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:  # noqa: S310
            names = {f.name for f in text_string_to_metric_families(answer.read().decode())}
        assert "crm_kpi_runs" in names, names
        with urllib.request.urlopen(f"{base}/", timeout=10) as answer:  # noqa: S310
            assert 'data-label="Alice Martin"' in answer.read().decode()
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=60) == 0, output.read_text(encoding="utf-8")
        print("container check: /readyz, /metrics and / answered; SIGTERM stopped it (exit 0)")
    finally:
        if service.poll() is None:
            service.kill()
        log.close()
        if service.returncode not in (0, None):
            print((folder / "service.log").read_text(encoding="utf-8"), file=sys.stderr)
