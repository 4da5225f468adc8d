"""A config without ``kpi_fields`` is valid and runs compute-only: the KPIs are computed and
stored (``kpis show`` reads them), nothing is written to the CRM, and every command says so."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_demo_config

from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli import main

AS_OF = "2026-11-26T12:00:00+00:00"
#: The sandbox Salesforce routes that write records or create fields.
WRITE_ROUTES = {
    "collections",
    "collections_typed",
    "collections_upsert",
    "external",
    "tooling_create",
}


def _without_kpi_fields(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    stripped = re.sub(r"(?ms)^kpi_fields:\n.*?(?=^write:)", "", text)
    assert stripped != text and "\nkpi_fields:" not in stripped
    path.write_text(stripped, encoding="utf-8")


@pytest.fixture
def sandbox_and_config(tmp_path: Path) -> Iterator[tuple[SalesforceSandbox, Path]]:
    with SalesforceSandbox.start() as sandbox:
        path = write_demo_config(sandbox, tmp_path)
        _without_kpi_fields(path)
        yield sandbox, path


def _run(*args: str) -> tuple[str, str]:
    outcome = CliRunner().invoke(main, list(args))
    assert outcome.exit_code == 0, outcome.output
    return outcome.stdout, outcome.stderr


def test_a_config_without_kpi_fields_validates_and_says_it_writes_nothing(
    sandbox_and_config: tuple[SalesforceSandbox, Path],
) -> None:
    _, path = sandbox_and_config
    out, _ = _run("config", "validate", str(path))
    assert "valid" in out
    assert "KPI fields: sandbox: none (compute only: nothing is written to the CRM)" in out


def test_setup_has_nothing_to_create_without_kpi_fields(
    sandbox_and_config: tuple[SalesforceSandbox, Path],
) -> None:
    sandbox, path = sandbox_and_config
    for args in (("setup", "--dry-run"), ("setup",)):
        out, _ = _run(*args, "--config", str(path))
        assert out.strip() == "sandbox: no kpi_fields configured: nothing to create"
    # Setup still checks the mapping against the CRM (reads only), and creates nothing.
    assert set(sandbox.stats.by_route) <= {"query", "describe"}, sandbox.stats.by_route


def test_sync_without_kpi_fields_stores_the_kpis_and_writes_nothing(
    sandbox_and_config: tuple[SalesforceSandbox, Path],
) -> None:
    sandbox, path = sandbox_and_config
    table, progress = _run("sync", "--once", "--as-of", AS_OF, "--config", str(path))
    assert "completed" in table
    assert "no kpi_fields configured: nothing written to the CRM" in table
    assert "sandbox: no kpi_fields configured: nothing written to the CRM" in progress
    assert not WRITE_ROUTES & set(sandbox.stats.by_route)

    report = json.loads(
        _run("sync", "--once", "--as-of", AS_OF, "--format", "json", "--config", str(path))[0]
    )
    (source,) = report["sources"]
    assert report["status"] == "completed"
    assert source["planned"] == [] and source["written"] == []

    shown = json.loads(
        _run(
            "kpis",
            "show",
            "--rep",
            "alice.martin@sandbox.local",
            "--period",
            "2026-Q3",
            "--format",
            "json",
            "--config",
            str(path),
        )[0]
    )
    (alice,) = shown
    assert alice["bookings_arr"] == 150000 and alice["quota_attainment"] == 1.25
