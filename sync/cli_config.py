"""``crm-kpi config ...``: check configuration files and print the shipped ones."""

from __future__ import annotations

from pathlib import Path

import click

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.registry import plugins
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.config_loader import (
    ConfigError,
    ConfigFileError,
    load_config,
    summarize,
)
from crm_kpi_worker.sync.exit_codes import ExitCode, failure

#: Exit statuses of ``config validate`` (the table of every command: ``sync.exit_codes``).
EXIT_VALID, EXIT_INVALID, EXIT_UNREADABLE = (
    int(ExitCode.OK),
    int(ExitCode.CONFIG),
    int(ExitCode.CONFIG),
)

#: CRM -> its default mapping and its example config (files of the package's config/ folder);
#: the first CRM of the registry is the default, and its demo config is the "demo" example.
_DEFAULT_CRM = plugins()[0].type
_DEFAULT_MAPPINGS = {p.type: p.default_mapping_file for p in plugins() if p.default_mapping_file}
_EXAMPLES = {
    **{p.type: p.example_config_file for p in plugins() if p.example_config_file},
    "demo": f"demo-{_DEFAULT_CRM}.yaml",
}


@click.group("config")
def config_group() -> None:
    """Check configuration files and print the shipped ones."""


@config_group.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--check-secrets",
    is_flag=True,
    help=(
        "Also read every secret ({env: ...}, {file: ...}) and every file the config names"
        " (CA bundles, quota CSVs), reporting each one missing. Secret values are never"
        " printed."
    ),
)
@click.option(
    "--check-crm",
    is_flag=True,
    help=(
        "Also log in to each source's CRM (secrets from the environment, as sync does) and"
        " check every mapped field and stage value against its metadata (problems), and"
        " every rep email of teams, quotas and variable_pay against its users (warnings)."
    ),
)
@click.pass_context
def validate_command(ctx: click.Context, file: Path, check_secrets: bool, check_crm: bool) -> None:
    """Validate FILE and print a summary of it.

    Every problem is printed to stderr as FILE:LINE:COLUMN: KEY.PATH: MESSAGE, a warning
    the same way after "warning: ". Exit status: 0 valid (warnings allowed), 4 problems
    found or the file cannot be read; with --check-crm, 5 the CRM refused the login, 6 the
    CRM cannot be reached.
    """
    try:
        config = load_config(file, check_secrets=check_secrets or check_crm)
    except ConfigFileError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem.file}: {problem.message}", err=True)
        ctx.exit(EXIT_UNREADABLE)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        count = len(exc.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''} found in {file}", err=True)
        ctx.exit(EXIT_INVALID)
    if check_crm:
        _check_crm(ctx, config, file)
    checked = " (secrets and files checked)" if check_secrets else ""
    checked = " (checked against the CRM)" if check_crm else checked
    click.echo(f"{file}: valid{checked}")
    click.echo(summarize(config))


def _check_crm(ctx: click.Context, config: AppConfig, file: Path) -> None:
    """Print every CRM problem and warning; exit 4 on a problem, 5 or 6 on a failed login."""
    from crm_kpi_worker.connectors.errors import ConnectorError
    from crm_kpi_worker.connectors.registry import build_connector
    from crm_kpi_worker.sync.crm_check import check_against_crm

    try:
        errors, warnings = check_against_crm(
            config, lambda source: build_connector(source, config.currency)
        )
    except ConnectorError as exc:  # a login or call refused: its message holds no secret
        click.echo(f"error: cannot check {file} against the CRM: {exc}", err=True)
        ctx.exit(int(failure(exc).code))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    for problem in errors:
        click.echo(str(problem), err=True)
    if errors:
        count = len(errors)
        click.echo(
            f"{count} problem{'s' if count != 1 else ''} found in {file} against the CRM",
            err=True,
        )
        ctx.exit(EXIT_INVALID)


@config_group.command("show-default")
@click.argument("crm", type=click.Choice(sorted(_DEFAULT_MAPPINGS)), default=_DEFAULT_CRM)
def show_default_command(crm: str) -> None:
    """Print the shipped default mapping for CRM (paste it under sources[N].mapping)."""
    click.echo(path_of(_DEFAULT_MAPPINGS[crm]).read_text(encoding="utf-8"), nl=False)


@config_group.command("show-example")
@click.argument("name", type=click.Choice(sorted(_EXAMPLES)), default=_DEFAULT_CRM)
def show_example_command(name: str) -> None:
    """Print a shipped example config (a starting point: copy it and edit)."""
    click.echo(path_of(_EXAMPLES[name]).read_text(encoding="utf-8"), nl=False)
