"""``crm-kpi sandbox <crm>``: run a sandbox CRM on a loopback port (one command per entry of
``sandbox/registry.py``; each is defined in its sandbox's folder, ``sandbox/<crm>/cli.py``)."""

from __future__ import annotations

import click

from crm_kpi_worker.sandbox.registry import sandboxes


@click.group("sandbox")
def sandbox_group() -> None:
    """Run a sandbox CRM (loopback only) for demos, tests and benchmarks."""


for _entry in sandboxes():
    sandbox_group.add_command(_entry.command())
