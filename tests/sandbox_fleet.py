"""A fleet of sandbox orgs for the scale-out tests and benchmark: Salesforce and HubSpot
sandboxes (in this process), one tenant config each in a folder, set up as ``crm-kpi setup``
sets up an org."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

REFERENCE = dt.date(2026, 9, 30)
AS_OF = "2026-11-26T12:00:00+00:00"


@dataclass
class Org:
    tenant: str
    crm: str
    sandbox: Any
    config: Path


def tenant_config(crm: str, sandbox: Any, path: Path, *, extra: str = "") -> Path:
    """The shipped demo config of ``crm``, pointed at ``sandbox``, without a store section
    (the deployment's), evaluated as of :data:`AS_OF`."""
    text = path_of(f"demo-{crm}.yaml").read_text(encoding="utf-8")
    if crm == "salesforce":
        text = text.replace("login_url: https://127.0.0.1:0", f"login_url: {sandbox.url}")
        text = text.replace(
            "instance_url: https://127.0.0.1:0",
            f"instance_url: {sandbox.url}\n    ca_bundle: {sandbox.ca_path}",
        )
        text = text.replace("store:\n  url: sqlite:///crm-kpi-demo.sqlite\n", "")
    else:
        text = text.replace(
            "base_url: https://127.0.0.1:0",
            f"base_url: {sandbox.url}\n    ca_bundle: {sandbox.ca_path}\n"
            "    rate_limits: {search_per_second: 100, per_10_seconds: 10000}",
        )
        text = text.replace("store:\n  url: sqlite:///crm-kpi-demo-hubspot.sqlite\n", "")
    assert "store:" not in text
    text = text.replace("runtime:\n", f"runtime:\n  as_of: '{AS_OF}'\n", 1)
    path.write_text(text + extra, encoding="utf-8")
    return path


def set_up(config_path: Path) -> None:
    """What ``crm-kpi setup`` does for the config's sources (in this process)."""
    from crm_kpi_worker.connectors.registry import build_connector
    from crm_kpi_worker.sync.config_loader import load_config
    from crm_kpi_worker.sync.setup import set_up_source

    config = load_config(config_path)
    for source in config.sources:
        connector = build_connector(source, config.currency)
        set_up_source(config, source, connector, dry_run=False, say=lambda _line: None)


@contextlib.contextmanager
def fleet(
    folder: Path, count: int, *, seed: int = 100, deals: int | None = None, extra: str = ""
) -> Iterator[list[Org]]:
    """``count`` sandbox orgs, Salesforce and HubSpot in turn, their tenant configs in
    ``folder`` (``org-00.yaml``...), set up; stopped on leaving."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        orgs = []
        for index in range(count):
            crm = "salesforce" if index % 2 == 0 else "hubspot"
            if crm == "salesforce":
                sandbox: Any = SalesforceSandbox.start(
                    seed=seed + index, deals=deals, reference_date=REFERENCE
                )
            else:
                limits = RateLimits(search_per_second=None, burst_per_10s=None, daily=1_000_000)
                sandbox = HubSpotSandbox.start(
                    seed=seed + index, deals=deals, reference_date=REFERENCE, limits=limits
                )
            stack.enter_context(sandbox)
            tenant = f"org-{index:02d}"
            path = tenant_config(crm, sandbox, folder / f"{tenant}.yaml", extra=extra)
            set_up(path)
            orgs.append(Org(tenant, crm, sandbox, path))
        yield orgs
