"""``crm-kpi sync``, ``crm-kpi kpis show`` and ``crm-kpi setup``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.setup import NO_KPI_FIELDS

log = logging.getLogger("crm_kpi_worker")


def _load(path: Path) -> AppConfig:
    """The config; its errors end the command with exit code 4 (``sync.cli``)."""
    from crm_kpi_worker.sync.config_loader import load_config

    return load_config(path)


def _as_of(_ctx: Any, _param: Any, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or datetime") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(
            f"{value!r} has no time zone: write e.g. {value}+00:00 or {value}Z"
        )
    return parsed


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default="crm-kpi.yaml",
    show_default=True,
    envvar="CRM_KPI_CONFIG",
    help="The YAML config file (or $CRM_KPI_CONFIG).",
)


def _interactive() -> bool:
    """Whether stderr is a terminal a person watches (progress bars rather than log lines)."""
    return sys.stderr.isatty()


def _run_progress(config: AppConfig, *, bars: bool) -> Any:
    """Progress bars on a terminal; else the progress as log lines every few seconds."""
    from crm_kpi_worker.sync.progress import BarProgress, LogProgress

    if bars:
        return BarProgress()
    return LogProgress(config.runtime.progress_seconds)


def set_up_logging(config: AppConfig, *, debug: bool) -> None:
    """The log lines' level and format (``runtime.log_level``, ``runtime.log_format``)."""
    from crm_kpi_worker.sync.logs import configure_logging, log_format

    configure_logging(config.runtime.log_level, log_format(config.runtime.log_format), debug=debug)


def open_store(config: AppConfig, *, read_only: bool = False) -> Any:
    from crm_kpi_worker.sync.store import Store

    return Store.open(config.store.resolve_url(), read_only=read_only)


TABLE_ROWS = 20  # records listed per list in the table; the json and stored report list all


def _more(items: list[Any], run_id: Any, limit: int | None) -> None:
    """The line that says how many records the table left out and where they all are."""
    if limit is not None and len(items) > limit:
        click.echo(
            f"      … and {len(items) - limit:,} more (every id: `crm-kpi runs show {run_id}`)"
        )


def print_report(report: dict[str, Any], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        return
    click.echo(f"run {report['run_id']} as of {report['as_of']}: {report['status']}")
    for source in report["sources"]:
        print_source(source, report["run_id"], limit=TABLE_ROWS)


def print_source(source: Mapping[str, Any], run_id: Any, *, limit: int | None) -> None:
    """One source's part of a run report as table lines: ``sync --once`` lists ``limit``
    records per list, ``crm-kpi runs show`` (``limit`` None) every one."""
    pulled = ", ".join(f"{k} {v:,}" for k, v in (source.get("pulled") or {}).items() if v)
    click.echo(f"  {source.get('source')}: pulled {pulled or 'nothing'}")
    deleted = source.get("deleted") or {}
    if deleted:
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(deleted.items()))
        click.echo(f"    deleted in the CRM: {counts}")
    exclusions = list(source.get("exclusions") or ())
    excluded = source.get("excluded") or {"total": len(exclusions), "by_reason": {}}
    if excluded["total"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(excluded["by_reason"].items()))
        click.echo(f"    excluded: {excluded['total']}" + (f" ({reasons})" if reasons else ""))
        for item in exclusions[:limit]:
            click.echo(f"      {item['type']} {item['id']}: {item['reason']} {item['detail']}")
        _more(exclusions, run_id, limit)
    if source.get("unassigned_deals"):
        click.echo(
            f"    deals of unknown owners, counted as unassigned: {source['unassigned_deals']}"
        )
    if not source.get("planned"):  # one entry per target object, even when nothing changed
        click.echo(f"    {NO_KPI_FIELDS}: nothing written to the CRM")
    for warning in source.get("warnings") or ():
        click.echo(f"    warning: {warning}")
    for planned in source.get("planned") or ():
        click.echo(
            f"    {planned['object']}: {planned['records_to_write']:,} records to write"
            f" ({planned['fields_to_write']:,} fields),"
            f" {planned['unchanged_records']:,} unchanged"
        )
    for written in source.get("written") or ():
        click.echo(
            f"    {written['object']}: wrote {written['records_written']:,} records"
            f" ({written['fields_written']:,} fields, {written['created']:,} created),"
            f" {written['failed']} failed"
        )
        failures = list(written.get("failures") or ())
        for failure in failures[:limit]:
            click.echo(f"      failed {failure['key']}: {failure['code']} {failure['message']}")
        _more(failures, run_id, limit)
    _print_readback(source, run_id, limit)
    seconds = ", ".join(f"{k} {v}s" for k, v in (source.get("seconds") or {}).items())
    click.echo(f"    API calls {source.get('api_calls', 0):,}; {seconds}")


def _print_readback(source: Mapping[str, Any], run_id: Any, limit: int | None) -> None:
    """Drift repaired, records left unnormalized, the budget (see sync/readback.py)."""
    from crm_kpi_worker.sync.run_budget import describe_budget

    unchanged = source.get("unchanged_on_pull") or {}
    if any(unchanged.values()):
        counts = ", ".join(f"{k} {v:,}" for k, v in unchanged.items() if v)
        click.echo(f"    re-read with nothing changed but stamps or KPI fields: {counts}")
    events = source.get("change_events") or {}
    if events:
        read = (
            f"{events['read_by_id']:,} deals they name read by Id"
            if events.get("complete")
            else f"not read completely ({events.get('reason')}): every modified deal read"
        )
        click.echo(f"    change events by others: {events.get('events', 0):,}; {read}")
    if source.get("verified"):
        counts = ", ".join(f"{k} {v:,}" for k, v in source["verified"].items())
        click.echo(f"    verified (read back): {counts}")
    for drift in source.get("drift") or ():
        click.echo(
            f"    drift: {drift['object']}: {drift['records']:,} records held other values"
            f" than the worker wrote; {drift['repaired']:,} repaired"
        )
        keys = list(drift.get("keys") or ())
        for key in keys[:limit]:
            click.echo(f"      {key}")
        _more(keys, run_id, limit)
    for line in describe_budget(source.get("budget") or {}):
        click.echo(f"    {line}")
    if source.get("stopped"):
        click.echo(f"    stopped: {source['stopped']}")


@click.command("sync")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="crm-kpi.yaml",
    show_default=True,
    envvar="CRM_KPI_CONFIG",
    help="The YAML config file (or $CRM_KPI_CONFIG).",
)
@click.option(
    "--configs",
    "configs_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="With --once: a folder of configs, one tenant per file, run one after the other"
    " (see crm-kpi worker for many tenants at once).",
)
@click.option("--tenant", help="With --configs: only this tenant.")
@click.option(
    "--store-url",
    envvar="CRM_KPI_STORE_URL",
    help="With --configs: a PostgreSQL store shared by the tenants, one schema each (default:"
    " each tenant's own SQLite file).",
)
@click.option(
    "--schema-prefix", default="crm_kpi_", show_default=True, envvar="CRM_KPI_SCHEMA_PREFIX"
)
@click.option(
    "--once", is_flag=True, help="Run one sync and exit (default: run on the config's schedule)."
)
@click.option(
    "--dry-run", is_flag=True, help="Compute and print what would be written; write nothing."
)
@click.option(
    "--full", is_flag=True, help="Pull everything again instead of what changed since the last run."
)
@click.option(
    "--verify",
    is_flag=True,
    help="Read back every record the worker wrote and repair what differs (drift).",
)
@click.option(
    "--as-of",
    callback=_as_of,
    help="Evaluation instant (ISO, with a time zone), e.g. 2026-09-30T23:59:59+02:00.",
)
@click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--no-initial-run",
    is_flag=True,
    help="The service waits for the schedule's first time instead of running at start.",
)
@click.option(
    "--output",
    "output_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="With --once: write every planned record (with its values and what became of it)"
    " to this file, as CSV or JSON (by its extension, or --output-format).",
)
@click.option(
    "--output-format",
    type=click.Choice(["csv", "json"]),
    help="The --output file's format (default: from its extension, else csv).",
)
@click.pass_context
def sync_command(
    ctx: click.Context,
    config_path: Path,
    configs_dir: Path | None,
    tenant: str | None,
    store_url: str | None,
    schema_prefix: str,
    once: bool,
    dry_run: bool,
    full: bool,
    verify: bool,
    as_of: dt.datetime | None,
    output: str,
    no_initial_run: bool,
    output_file: Path | None,
    output_format: str | None,
) -> None:
    """Pull, compute the KPIs and write what changed back into the CRM.

    SIGTERM or SIGINT stop a run cleanly: it finishes the page or batch in hand, records
    itself interrupted and exits 0 (within 30 s; a second signal stops at once).

    An interactive --once run shows a progress bar per stream and written object; otherwise
    (the service, no terminal) the progress goes to the log every runtime.progress_seconds."""
    from crm_kpi_worker.sync.cli_runs import planned_format, write_planned
    from crm_kpi_worker.sync.exit_codes import Refused, run_exit_code
    from crm_kpi_worker.sync.pipeline import RunOptions, RunResult, run_once
    from crm_kpi_worker.sync.stops import StopRequest, stop_on_signals

    if output_file is not None and not once:
        raise click.UsageError("--output needs --once (the service writes no file)")
    file_format = planned_format(output_file, output_format) if output_file else None
    if configs_dir is not None:
        from crm_kpi_worker.sync.scale.cli import sync_tenants_once

        if not once or output_file is not None:
            raise click.UsageError(
                "--configs runs once (--once), without --output; to run many tenants on their"
                " schedules, use crm-kpi worker and crm-kpi scheduler"
            )
        options = RunOptions(full=full, dry_run=dry_run, verify=verify, as_of=as_of)
        ctx.exit(
            sync_tenants_once(
                configs_dir,
                None,
                store_url,
                schema_prefix,
                tenant=tenant,
                options=options,
                output=output,
            )
        )
    if tenant is not None:
        raise click.UsageError("--tenant picks a tenant of --configs DIR")
    if not config_path.is_file():
        raise click.BadParameter(f"File '{config_path}' does not exist.", param_hint="'--config'")
    config = _load(config_path)
    debug = ctx.find_root().params.get("debug", False)
    set_up_logging(config, debug=debug)
    options = RunOptions(
        full=full, dry_run=dry_run, verify=verify, as_of=as_of or config.runtime.as_of
    )
    bars = once and _interactive()

    def one_run(stop: StopRequest) -> RunResult:
        progress = _run_progress(config, bars=bars)
        with open_store(config) as store:
            try:
                result = run_once(config, store, options, progress=progress, stop=stop)
            finally:
                progress.close()
            if output_file is not None and file_format is not None:
                count = write_planned(store, result.run_id, output_file, file_format)
                click.echo(f"{count:,} planned records written to {output_file}", err=True)
        print_report(result.report(), output)
        return result

    if once:
        with stop_on_signals() as stop:
            result = one_run(stop)
        log.log(
            logging.INFO if result.status == "completed" else logging.WARNING,
            "run %s %s%s",
            result.run_id,
            result.status.replace("_", " "),
            f" ({result.interrupted})" if result.interrupted else "",
            extra={"event": "run_finished", "run_id": result.run_id, **result.counts()},
        )
        ctx.exit(int(run_exit_code(result.status, lock_lost=result.lock_lost)))
    if config.schedule is None:
        raise Refused("the config has no schedule: add one, or run with --once")
    from crm_kpi_worker.sync.service import serve

    initial = config.schedule.run_at_start and not no_initial_run
    ctx.exit(serve(config, one_run, initial_run=initial))


@click.group("kpis")
def kpis_group() -> None:
    """Read the KPIs the last runs computed (from the store)."""


@kpis_group.command("show")
@config_option
@click.option("--rep", help="A rep's CRM user id or email.")
@click.option(
    "--period", help="A period key (2026-Q3, 2026-07, FY2026) or kind (month, quarter, year)."
)
@click.option(
    "--scope", type=click.Choice(["rep", "team", "org", "all"]), default="all", show_default=True
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
def kpis_show(
    config_path: Path, rep: str | None, period: str | None, scope: str, output: str
) -> None:
    """Print the latest KPI values, one row per subject and period.

    Exits 1 when nothing matches, saying which filter matched nothing and what the store
    holds (or, when it holds no value at all, to run a sync first)."""
    from crm_kpi_worker.sync.store import StoreMissing

    config = _load(config_path)
    period_filter = _period_filter(config, period)
    try:
        store = open_store(config, read_only=True)  # never writes: a read-only store will do
    except StoreMissing as exc:
        raise click.ClickException(
            f"no KPI values yet: run `crm-kpi sync --once` first ({exc})"
        ) from None
    with store:
        rows, reason = _kpi_table(store, config, rep, period_filter, scope)
    if not rows:
        raise click.ClickException(reason)
    emit_rows(rows, output)


#: At most this many reps or periods are listed in a "nothing matches" message.
LISTED = 10


def _period_filter(config: AppConfig, period: str | None) -> str | None:
    """``period`` as stored: a kind (``quarter``) or a key in the calendar's own spelling
    (``2026-q3`` -> ``2026-Q3``, ``2026`` -> ``FY2026``); a click error when it is neither."""
    from crm_kpi_worker.kpis.calendar import PERIOD_KINDS, FiscalCalendar

    if period is None:
        return None
    if period.strip().lower() in PERIOD_KINDS:
        return period.strip().lower()
    calendar = FiscalCalendar(config.fiscal.year_start_month, config.fiscal.year_named_by)
    try:
        return calendar.period(period).key
    except ValueError:
        raise click.ClickException(
            f"{period!r} is not a period key; expected e.g. 2026-Q3, 2026-07, FY2026,"
            f" or a kind: {', '.join(PERIOD_KINDS)}"
        ) from None


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return f"{shown} and {len(items) - LISTED} more" if len(items) > LISTED else shown


def _period_order(key: str) -> tuple[int, str]:
    # Months (2026-07), then quarters (2026-Q3), then years (FY2026), each in key order.
    return (2 if key.startswith("FY") else 1 if "-Q" in key else 0, key)


def _kpi_table(
    store: Any, config: AppConfig, rep: str | None, period: str | None, scope: str
) -> tuple[list[dict[str, Any]], str]:
    """The rows to print, and when there is none, why (which filter matched nothing)."""
    names: dict[str, str] = {}
    emails: dict[str, str] = {}
    email_of: dict[str, str] = {}
    for source in config.sources:
        for user in store.reps(source.name):
            names[user.id] = user.name
            emails[user.email.lower()] = user.id
            email_of[user.id] = user.email
    rep_id = emails.get(rep.strip().lower(), rep.strip()) if rep else None
    grouped: dict[tuple[str, ...], dict[str, Any]] = defaultdict(dict)
    for row in store.kpis(rep=rep_id, period=period):
        if scope != "all" and row.scope != scope:
            continue
        key = (row.source, row.scope, row.subject, row.period_kind, row.period_key)
        grouped[key][row.kpi] = None if row.value is None else float(row.value)
    out = []
    for (source_name, row_scope, subject, kind, period_key), values in sorted(grouped.items()):
        out.append(
            {
                "source": source_name,
                "scope": row_scope,
                "subject": subject,
                "name": names.get(subject, "Unassigned" if subject == "unassigned" else subject),
                "period_kind": kind,
                "period": period_key,
                **values,
            }
        )
    if out:
        return out, ""
    return out, _why_nothing(store.kpis(), rep, rep_id, period, scope, email_of)


def _why_nothing(
    stored: list[Any],
    rep: str | None,
    rep_id: str | None,
    period: str | None,
    scope: str,
    email_of: dict[str, str],
) -> str:
    """Which filter matched nothing, and what the store holds instead."""
    if not stored:
        return "no KPI values yet: run `crm-kpi sync --once` first"
    if rep is not None and scope not in ("all", "rep"):
        return f"--rep selects rep rows; --scope {scope} excludes them"
    rep_rows = [row for row in stored if row.scope == "rep"]
    if rep is not None and not any(row.subject == rep_id for row in rep_rows):
        reps = sorted({email_of.get(row.subject, row.subject) for row in rep_rows})
        return f"no rep matches {rep!r}; reps with values: {_listed(reps) or 'none'}"
    candidates = [row for row in (rep_rows if rep is not None else stored) if row.period_key]
    if rep is not None:
        candidates = [row for row in candidates if row.subject == rep_id]
    if period is not None:
        whose = f" for rep {rep!r}" if rep is not None else ""
        if period in ("month", "quarter", "year"):
            kinds = sorted({row.period_kind for row in candidates})
            return (
                f"no values stored{whose} for period kind {period};"
                f" stored kinds: {_listed(kinds) or 'none'}"
            )
        keys = sorted({row.period_key for row in candidates}, key=_period_order)
        if rep is not None:
            return (
                f"no values stored for rep {rep!r} in period {period};"
                f" the rep's stored periods: {_listed(keys) or 'none'}"
            )
        return f"no values stored for period {period}; stored periods: {_listed(keys) or 'none'}"
    scopes = sorted({row.scope for row in stored})
    return f"no values stored for scope {scope}; stored scopes: {', '.join(scopes)}"


def emit_rows(rows: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    columns = list(rows[0])
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
        return
    keys = [
        "name",
        "period",
        "bookings_arr",
        "quota",
        "quota_attainment",
        "deals_won",
        "deals_lost",
        "win_rate",
        "conversion_rate",
        "sales_cycle_days",
        "open_pipeline_arr",
        "demos_per_week",
    ]
    headers = [
        "subject",
        "period",
        "bookings",
        "quota",
        "attain.",
        "won",
        "lost",
        "win rate",
        "conv.",
        "cycle d",
        "pipeline",
        "demos/wk",
    ]
    click.echo(
        "  ".join(
            f"{h:>11}" if i > 1 else f"{h:<22}" if i == 0 else f"{h:<9}"
            for i, h in enumerate(headers)
        )
    )
    for row in rows:
        cells = []
        for i, key in enumerate(keys):
            value = row.get(key)
            if i == 0:
                cells.append(f"{str(value)[:22]:<22}")
            elif i == 1:
                cells.append(f"{value:<9}")
            elif value is None:
                cells.append(f"{'-':>11}")
            elif key in {"quota_attainment", "win_rate", "conversion_rate"}:
                cells.append(f"{value * 100:>10.1f}%")
            elif key in {"deals_won", "deals_lost"}:
                cells.append(f"{int(value):>11}")
            else:
                cells.append(
                    f"{value:>11,.1f}"
                    if key in {"sales_cycle_days", "demos_per_week"}
                    else f"{value:>11,.0f}"
                )
        click.echo("  ".join(cells))


@click.command("setup")
@config_option
@click.option("--dry-run", is_flag=True, help="List what would be created; create nothing.")
def setup_command(config_path: Path, dry_run: bool) -> None:
    """Create the custom object and fields the config writes to (idempotent)."""
    config = _load(config_path)
    debug = bool(click.get_current_context().find_root().params.get("debug"))
    set_up_logging(config, debug=debug)
    set_up_config(config, dry_run=dry_run)


def set_up_config(config: AppConfig, *, dry_run: bool, environ: Any = None) -> None:
    """What ``setup`` does for every source of ``config`` (``environ``: where its secrets are
    read, default the process's environment)."""
    from crm_kpi_worker.connectors.registry import build_connector
    from crm_kpi_worker.sync.crm_check import CrmCheckFailed, field_problems
    from crm_kpi_worker.sync.setup import set_up_source

    connectors = {
        s.name: build_connector(s, config.currency, environ=environ) for s in config.sources
    }
    # Every source's mapping is checked against its CRM before anything is created.
    problems = [
        problem
        for index, source in enumerate(config.sources)
        for problem in field_problems(config, index, connectors[source.name].describe_fields)
    ]
    if problems:
        raise CrmCheckFailed(problems)
    for source in config.sources:
        set_up_source(config, source, connectors[source.name], dry_run=dry_run, say=click.echo)
