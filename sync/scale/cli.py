"""The commands of a deployment of many tenants: ``crm-kpi worker``, ``crm-kpi scheduler``,
``crm-kpi status-page``, ``crm-kpi tenants check``, and ``crm-kpi sync --once --configs DIR``
(:func:`sync_tenants_once`, every tenant in turn, in this process).

Every command takes the tenants as ``--configs DIR`` (one tenant per file) or ``--config FILE``
(one tenant), and the shared store as ``--store-url`` (``$CRM_KPI_STORE_URL``); the workers and
the scheduler also take the broker (``--broker``, ``$CRM_KPI_BROKER_URL``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from crm_kpi_worker.sync.exit_codes import ExitCode, Refused

log = logging.getLogger("crm_kpi_worker.scale")

__all__ = ["scale_commands", "sync_tenants_once"]


def tenants_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The tenants (``--configs`` or ``--config``) and the shared store."""
    command = click.option(
        "--schema-prefix",
        default="crm_kpi_",
        show_default=True,
        envvar="CRM_KPI_SCHEMA_PREFIX",
        help="Prefix of the PostgreSQL schema and role names (tenant acme: <prefix>t_acme).",
    )(command)
    command = click.option(
        "--store-url",
        envvar="CRM_KPI_STORE_URL",
        help="The shared PostgreSQL store, one schema per tenant (or $CRM_KPI_STORE_URL);"
        " without it each tenant keeps its own SQLite file.",
    )(command)
    return tenant_files_options(command)


def tenant_files_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The tenants: ``--configs DIR`` or ``--config FILE``."""
    command = click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="One config: one tenant, named after the file.",
    )(command)
    return click.option(
        "--configs",
        "configs_dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        envvar="CRM_KPI_CONFIGS",
        help="A folder of configs, one tenant per file (or $CRM_KPI_CONFIGS).",
    )(command)


def broker_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--queue",
        default="crm-kpi-runs",
        show_default=True,
        envvar="CRM_KPI_QUEUE",
        help="The broker's queue of runs.",
    )(command)
    return click.option(
        "--broker",
        envvar="CRM_KPI_BROKER_URL",
        required=True,
        help="The broker's URL (amqp://user:password@host:5672// or redis://host:6379/0;"
        " or $CRM_KPI_BROKER_URL).",
    )(command)


def _tenant_files(configs_dir: Path | None, config_file: Path | None) -> Any:
    from crm_kpi_worker.sync.scale.tenants import TenantFiles

    if (configs_dir is None) == (config_file is None):
        raise click.UsageError("give --configs DIR (one tenant per file) or --config FILE")
    return TenantFiles(configs_dir, config_file)


def _deployment(store_url: str | None, prefix: str, *, required: bool = False) -> Any:
    from crm_kpi_worker.sync.scale.stores import Deployment

    if required and not store_url:
        raise Refused(
            "the workers, the scheduler and the status page share a PostgreSQL store: give"
            " --store-url postgresql://user@host/db (or $CRM_KPI_STORE_URL)"
        )
    try:
        return Deployment(SecretStr(store_url) if store_url else None, prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--schema-prefix'") from None


def _logging(debug: bool) -> None:
    from crm_kpi_worker.sync.logs import configure_logging, log_format

    configure_logging("INFO", log_format(None), debug=debug)


def _report_broken(found: Any) -> None:
    for broken in found.broken:
        click.echo(f"error: {broken.describe()}", err=True)


# ---- crm-kpi sync --once --configs DIR


def sync_tenants_once(
    configs_dir: Path | None,
    config_file: Path | None,
    store_url: str | None,
    prefix: str,
    *,
    tenant: str | None,
    options: Any,
    output: str,
) -> int:
    """Every tenant's sources, one tenant after the other, each in its own store; a broken
    tenant is reported and the others run. The exit code: 4 when a tenant is broken, else the
    first tenant's that did not end OK (0 when all did)."""
    from crm_kpi_worker.connectors.registry import build_connector
    from crm_kpi_worker.sync.cli_sync import print_report
    from crm_kpi_worker.sync.exit_codes import failure, run_exit_code
    from crm_kpi_worker.sync.pipeline import run_once
    from crm_kpi_worker.sync.stops import stop_on_signals

    files = _tenant_files(configs_dir, config_file)
    deployment = _deployment(store_url, prefix)
    found = files.scan()
    if tenant is not None:
        if tenant not in found.names and tenant not in [b.name for b in found.broken]:
            raise click.BadParameter(
                f"no tenant {tenant} in {files.describe()}", param_hint="'--tenant'"
            )
        found.tenants = [t for t in found.tenants if t.name == tenant]
        found.broken = [b for b in found.broken if b.name == tenant]
    _report_broken(found)
    codes = [ExitCode.CONFIG for _ in found.broken]
    with stop_on_signals() as stop:
        for each in found.tenants:
            if stop.is_set():
                break
            click.echo(f"tenant {each.name} ({each.file})")
            connect = partial(build_connector, environ=each.environ)
            try:
                with deployment.open_store(each) as store:
                    result = run_once(
                        each.config,
                        store,
                        _with_as_of(options, each.config),
                        connector_factory=connect,
                        stop=stop,
                    )
                print_report(result.report(), output)
                codes.append(run_exit_code(result.status, lock_lost=result.lock_lost))
            except Exception as exc:
                found_failure = failure(exc)
                click.echo(f"error: tenant {each.name}: {found_failure.line}", err=True)
                codes.append(found_failure.code)
    return int(next((code for code in codes if code != ExitCode.OK), ExitCode.OK))


def _with_as_of(options: Any, config: Any) -> Any:
    from dataclasses import replace

    return replace(options, as_of=options.as_of or config.runtime.as_of)


# ---- crm-kpi tenants check


@click.group("tenants")
def tenants_group() -> None:
    """The tenants of a deployment: one config each."""


@tenants_group.command("check")
@tenants_options
@click.option(
    "--check-secrets", is_flag=True, help="Also resolve every tenant's secrets and files."
)
def tenants_check(
    configs_dir: Path | None,
    config_file: Path | None,
    store_url: str | None,
    schema_prefix: str,
    check_secrets: bool,
) -> None:
    """Validate every tenant's config on its own; list the good ones, report the broken ones.

    Exits 4 when any tenant is broken (every one is checked)."""
    from crm_kpi_worker.sync.config_loader import ConfigError, load_config

    files = _tenant_files(configs_dir, config_file)
    deployment = _deployment(store_url, schema_prefix)
    found = files.scan()
    broken = [b.describe() for b in found.broken]
    for tenant in found.tenants:
        if check_secrets:
            try:
                load_config(tenant.file, check_secrets=True, environ=tenant.environ)
            except ConfigError as exc:
                problems = "; ".join(str(p) for p in exc.problems)
                broken.append(f"tenant {tenant.name} ({tenant.file}): {problems}")
                continue
        where = f"schema {deployment.schema(tenant.name)}" if deployment.shared else "its own store"
        sources = ", ".join(tenant.source_names())
        click.echo(f"ok: tenant {tenant.name} ({tenant.file}): sources {sources}; {where}")
    for line in broken:
        click.echo(f"error: {line}", err=True)
    if broken:
        raise click.exceptions.Exit(int(ExitCode.CONFIG))


@tenants_group.command("setup")
@tenant_files_options
@click.option("--tenant", help="Only this tenant.")
@click.option("--dry-run", is_flag=True, help="List what would be created; create nothing.")
def tenants_setup(
    configs_dir: Path | None,
    config_file: Path | None,
    tenant: str | None,
    dry_run: bool,
) -> None:
    """What crm-kpi setup does, for every tenant (or one), each with its own secrets.

    Exits 4 when a tenant is broken, else with the first failing tenant's code."""
    from crm_kpi_worker.sync.cli_sync import set_up_config
    from crm_kpi_worker.sync.exit_codes import failure

    found = _tenant_files(configs_dir, config_file).scan()
    if tenant is not None:
        found.tenants = [t for t in found.tenants if t.name == tenant]
        found.broken = [b for b in found.broken if b.name == tenant]
        if not found.tenants and not found.broken:
            raise click.BadParameter(f"no tenant {tenant}", param_hint="'--tenant'")
    _report_broken(found)
    codes = [ExitCode.CONFIG for _ in found.broken]
    for each in found.tenants:
        click.echo(f"tenant {each.name} ({each.file})")
        try:
            set_up_config(each.config, dry_run=dry_run, environ=each.environ)
        except Exception as exc:
            found_failure = failure(exc)
            click.echo(f"error: tenant {each.name}: {found_failure.line}", err=True)
            codes.append(found_failure.code)
    code = next((code for code in codes if code != ExitCode.OK), ExitCode.OK)
    if code != ExitCode.OK:
        raise click.exceptions.Exit(int(code))


# ---- crm-kpi worker


@click.command("worker")
@tenants_options
@broker_options
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Runs at a time in this worker.",
)
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork", "solo"]),
    default="threads",
    show_default=True,
    help="Celery's pool: threads suit runs that wait on the CRM.",
)
@click.option(
    "--slice-seconds",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="A run yields after this long and goes on in a new task (fairness).",
)
@click.option(
    "--redelivery-seconds",
    type=click.FloatRange(min=1),
    default=None,
    help="Redis broker only: a task left unacknowledged this long (its worker died) is"
    " delivered again. Keep it above the slice. [default: 2 x slice + 300]",
)
@click.pass_context
def worker_command(
    ctx: click.Context,
    configs_dir: Path | None,
    config_file: Path | None,
    store_url: str | None,
    schema_prefix: str,
    broker: str,
    queue: str,
    concurrency: int,
    pool: str,
    slice_seconds: float,
    redelivery_seconds: float | None,
) -> None:
    """A Celery worker running the tenants' runs from the broker's queue."""
    from crm_kpi_worker.sync.scale.control import ControlStore
    from crm_kpi_worker.sync.scale.runner import SourceRunner
    from crm_kpi_worker.sync.scale.tasks import broker_transport_options, configure

    try:  # refused before anything is opened
        broker_transport_options(broker, slice_seconds=slice_seconds, redelivery=redelivery_seconds)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _logging(bool(ctx.find_root().params.get("debug")))
    files = _tenant_files(configs_dir, config_file)
    deployment = _deployment(store_url, schema_prefix, required=True)
    found = files.scan()
    for broken in found.broken:
        log.error("tenant not run: %s", broken.describe())
    control = ControlStore.open(deployment)
    runner = SourceRunner(deployment, files, control, slice_seconds=slice_seconds)
    for tenant in found.tenants:  # schemas, roles and migrations before the first task
        runner.store(tenant).close()
    app = configure(broker, queue, runner, redelivery=redelivery_seconds)
    log.info(
        "crm-kpi worker: %d tenant(s) of %s, queue %s, %d at a time (%s pool)",
        len(found.tenants),
        files.describe(),
        queue,
        concurrency,
        pool,
        extra={"event": "worker_started"},
    )
    visibility = app.conf.broker_transport_options.get("visibility_timeout")
    if visibility is not None:
        log.info("Redis broker: a dead worker's task is delivered again after %g s", visibility)
    app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--queues={queue}",
            f"--hostname=crm-kpi-{os.getpid()}@%h",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ]
    )


# ---- crm-kpi scheduler


@click.command("scheduler")
@tenants_options
@broker_options
@click.option(
    "--tick-seconds",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="How often the schedules are looked at.",
)
@click.pass_context
def scheduler_command(
    ctx: click.Context,
    configs_dir: Path | None,
    config_file: Path | None,
    store_url: str | None,
    schema_prefix: str,
    broker: str,
    queue: str,
    tick_seconds: float,
) -> None:
    """Enqueue each tenant's runs on its schedule (one active scheduler; others stand by).

    SIGTERM or SIGINT stop it (exit 0)."""
    from crm_kpi_worker.sync.scale.control import ControlStore
    from crm_kpi_worker.sync.scale.scheduler import Scheduler, serve_scheduler
    from crm_kpi_worker.sync.scale.tasks import configure, publish
    from crm_kpi_worker.sync.stops import stop_on_signals

    _logging(bool(ctx.find_root().params.get("debug")))
    files = _tenant_files(configs_dir, config_file)
    deployment = _deployment(store_url, schema_prefix, required=True)
    configure(broker, queue)
    with ControlStore.open(deployment) as control, stop_on_signals() as stop:
        scheduler = Scheduler(control, files, publish)
        log.info(
            "crm-kpi scheduler: %s, queue %s",
            files.describe(),
            queue,
            extra={"event": "scheduler_started"},
        )
        serve_scheduler(
            control, scheduler, stop, tick_seconds=tick_seconds, standby_seconds=tick_seconds
        )
    log.info("crm-kpi scheduler: stopped (%s)", stop.reason)


# ---- crm-kpi status-page


@click.command("status-page")
@tenants_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.pass_context
def status_page_command(
    ctx: click.Context,
    configs_dir: Path | None,
    config_file: Path | None,
    store_url: str | None,
    schema_prefix: str,
    host: str,
    port: int,
) -> None:
    """Every tenant's runs, whichever worker ran them: a status page, /metrics and /healthz
    read from the shared store. SIGTERM or SIGINT stop it."""
    from crm_kpi_worker.sync.scale.control import ControlStore
    from crm_kpi_worker.sync.scale.status import DeploymentStatusApp
    from crm_kpi_worker.sync.status import StatusServer
    from crm_kpi_worker.sync.stops import stop_on_signals

    _logging(bool(ctx.find_root().params.get("debug")))
    files = _tenant_files(configs_dir, config_file)
    deployment = _deployment(store_url, schema_prefix, required=True)
    with ControlStore.open(deployment) as control, stop_on_signals() as stop:
        app = DeploymentStatusApp(deployment, files, control)
        try:
            server = StatusServer(app, host, port).start()  # type: ignore[arg-type]
        except OSError as exc:
            raise Refused(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        log.info(
            "crm-kpi: status page at %s/ (also /healthz, /metrics)",
            server.url,
            extra={"event": "status_page", "url": f"{server.url}/"},
        )
        stop.wait()
        server.stop()


def scale_commands() -> list[click.Command]:
    return [worker_command, scheduler_command, status_page_command, tenants_group]
