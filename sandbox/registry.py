"""The sandbox CRMs: one :class:`SandboxEntry` per CRM the worker can demo without an account.

``crm-kpi demo --crm <type>`` and ``crm-kpi sandbox <type>`` know the sandboxes only through
these entries, as ``sync/`` knows CRMs only through ``connectors/registry.py``: a sandbox for
another CRM is a folder ``sandbox/<crm>/`` plus one entry in :func:`sandboxes`. An entry is
light: the sandbox's server and its command are imported when first used.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SandboxEntry", "sandbox_for", "sandboxes"]


@dataclass(frozen=True)
class SandboxEntry:
    """One sandbox CRM, as the demo and sandbox commands see it."""

    #: The CRM's ``sources[].type`` (its demo config is ``config/demo-<type>.yaml``).
    crm: str
    #: The CRM's name for people, e.g. "Salesforce".
    label: str
    #: What one instance of the CRM is called: an "org", a "portal".
    instance: str
    #: ``start(reference_date=, deals=)``: the sandbox running in this process with the demo
    #: scenario (a context manager with ``url`` and ``ca_path``).
    start: Callable[..., Any]
    #: ``source_changes(sandbox)``: what the demo config's source changes to reach it.
    source_changes: Callable[[Any], dict[str, Any]]
    #: ``command()``: the ``crm-kpi sandbox <type>`` click command.
    command: Callable[[], Any]


def _salesforce() -> SandboxEntry:
    def start(*, reference_date: dt.date, deals: int | None) -> Any:
        from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

        return SalesforceSandbox.start(reference_date=reference_date, deals=deals)

    def command() -> Any:
        from crm_kpi_worker.sandbox.salesforce.cli import sandbox_salesforce

        return sandbox_salesforce

    return SandboxEntry(
        crm="salesforce",
        label="Salesforce",
        instance="org",
        start=start,
        source_changes=lambda sandbox: {
            "login_url": sandbox.url,
            "instance_url": sandbox.url,
            "ca_bundle": str(sandbox.ca_path),
        },
        command=command,
    )


def _hubspot() -> SandboxEntry:
    def start(*, reference_date: dt.date, deals: int | None) -> Any:
        from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox

        return HubSpotSandbox.start(reference_date=reference_date, deals=deals)

    def command() -> Any:
        from crm_kpi_worker.sandbox.hubspot.cli import sandbox_hubspot

        return sandbox_hubspot

    return SandboxEntry(
        crm="hubspot",
        label="HubSpot",
        instance="portal",
        start=start,
        source_changes=lambda sandbox: {
            "base_url": sandbox.url,
            "ca_bundle": str(sandbox.ca_path),
        },
        command=command,
    )


def sandboxes() -> tuple[SandboxEntry, ...]:
    """Every sandbox CRM, the default (the demo's) first."""
    return _salesforce(), _hubspot()


def sandbox_for(crm: str) -> SandboxEntry:
    """The sandbox of ``crm`` (a source's ``type``)."""
    for entry in sandboxes():
        if entry.crm == crm:
            return entry
    known = ", ".join(entry.crm for entry in sandboxes())
    raise ValueError(f"no sandbox for a CRM of type {crm!r} (sandboxes: {known})")
