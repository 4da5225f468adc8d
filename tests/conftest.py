"""Shared fixtures: a running sandbox Salesforce, the public references, server URLs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

IN_CI = os.environ.get("CI", "").lower() == "true"


def reference_dir() -> Path | None:
    """The public API references (shared/reference beside the checkout), if present."""
    configured = os.environ.get("CRM_KPI_REFERENCE_DIR")
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "reference")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def references() -> Path:
    """Skip where the references are absent (a user's clone); in CI they must be there."""
    found = reference_dir()
    if found is None:
        message = (
            "the public API references (../shared/reference beside the checkout, or"
            " CRM_KPI_REFERENCE_DIR) are not on this machine"
        )
        if IN_CI:
            pytest.fail(message + " and CI=true: CI must run the conformance tests")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def sf_sandbox() -> Iterator[SalesforceSandbox]:
    """The demo scenario plus filler, shared by read-only tests."""
    with SalesforceSandbox.start(seed=42, deals=6000) as sandbox:
        yield sandbox


@pytest.fixture
def fresh_sandbox() -> Iterator[SalesforceSandbox]:
    """A sandbox of its own, for tests that write or inject faults."""
    with SalesforceSandbox.start(seed=7) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def sf(sf_sandbox: SalesforceSandbox):  # type: ignore[no-untyped-def]
    return sf_sandbox.client()


def write_demo_config(sandbox: SalesforceSandbox, folder: Path) -> Path:
    """The shipped demo config, pointed at ``sandbox``, with its store in ``folder``."""
    text = path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
    text = text.replace("login_url: https://127.0.0.1:0", f"login_url: {sandbox.url}")
    text = text.replace(
        "instance_url: https://127.0.0.1:0",
        f"instance_url: {sandbox.url}\n    ca_bundle: {sandbox.ca_path}",
    )
    text = text.replace(
        "url: sqlite:///crm-kpi-demo.sqlite", f"url: sqlite:///{folder / 'store.sqlite'}"
    )
    path = folder / "crm-kpi.yaml"
    path.write_text(text, encoding="utf-8")
    return path
