"""The ``crm-kpi`` command."""

from __future__ import annotations

import click

from crm_kpi_worker import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crm-kpi")
def main() -> None:
    """crm-kpi-worker: Account Executive KPIs computed from your CRM and written back into it."""


def _register() -> None:
    from crm_kpi_worker.sync.cli_config import config_group
    from crm_kpi_worker.sync.cli_demo import demo_command
    from crm_kpi_worker.sync.cli_sandbox import sandbox_group
    from crm_kpi_worker.sync.cli_sync import kpis_group, setup_command, sync_command

    main.add_command(demo_command)
    main.add_command(config_group)
    main.add_command(sandbox_group)
    main.add_command(sync_command)
    main.add_command(kpis_group)
    main.add_command(setup_command)


_register()
