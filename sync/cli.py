"""The ``crm-kpi`` command.

Every command's expected failures (config, CRM, store, another run) end with one clear line on
stderr and their exit code (:mod:`crm_kpi_worker.sync.exit_codes`); ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import click

from crm_kpi_worker import __version__
from crm_kpi_worker.sync.exit_codes import EXIT_CODES, ExitCode, failure

log = logging.getLogger("crm_kpi_worker")


def debug_enabled() -> bool:
    """Whether the global ``--debug`` was given (tracebacks, debug logging)."""
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get("debug"))


class CrmKpiGroup(click.Group):
    """Maps every command's exceptions to their exit code and one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`crm-kpi runs show 1 | head`): stop quietly, as cat does.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(int(ExitCode.OK))
        except Exception as exc:
            found = failure(exc)
            if ctx.params.get("debug"):
                traceback.print_exc(file=sys.stderr)
            click.echo(f"error: {found.line}", err=True)
            if found.code == ExitCode.ERROR and not ctx.params.get("debug"):
                click.echo("(crm-kpi --debug ... prints the traceback)", err=True)
            ctx.exit(int(found.code))


def _exit_codes_epilog() -> str:
    codes = ", ".join(f"{code.value} {code.name.lower()}" for code, _ in EXIT_CODES)
    return f"Exit codes (every command): {codes} (see the README)."


@click.group(
    cls=CrmKpiGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_exit_codes_epilog(),
)
@click.version_option(__version__, prog_name="crm-kpi")
@click.option("--debug", is_flag=True, help="Print tracebacks of failures and log at DEBUG level.")
def main(debug: bool) -> None:
    """crm-kpi-worker: Account Executive KPIs computed from your CRM and written back into it."""


def _register() -> None:
    from crm_kpi_worker.sync.cli_config import config_group
    from crm_kpi_worker.sync.cli_demo import demo_command
    from crm_kpi_worker.sync.cli_explain import explain_command
    from crm_kpi_worker.sync.cli_runs import runs_group
    from crm_kpi_worker.sync.cli_sandbox import sandbox_group
    from crm_kpi_worker.sync.cli_sync import kpis_group, setup_command, sync_command

    main.add_command(demo_command)
    main.add_command(config_group)
    main.add_command(sandbox_group)
    main.add_command(sync_command)
    kpis_group.add_command(explain_command)
    main.add_command(kpis_group)
    main.add_command(runs_group)
    main.add_command(setup_command)
    from crm_kpi_worker.sync.scale.cli import scale_commands

    for command in scale_commands():
        main.add_command(command)


_register()
