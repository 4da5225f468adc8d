"""``crm-kpi demo``: the whole product on its embedded default, with no CRM account.

It starts a sandbox CRM in-process with the demo scenario (``sandbox/registry.py``: the sandbox
Salesforce by default, the sandbox HubSpot portal with ``--crm hubspot``), points the shipped
demo config (config/demo-<crm>.yaml) at it, runs ``setup`` (creates the scorecard object and
the KPI fields through the CRM's own API) and one sync with a SQLite store in a temporary
folder, and prints the KPIs and what was written into the CRM.

The scenario quarter is the last complete quarter before today (or ``--reference-date``), so
the demo reads the same whenever it runs: that quarter is the "previous quarter" of the run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from crm_kpi_worker.kpis.results import KPI_KEYS
from crm_kpi_worker.sandbox.cli_common import date_option
from crm_kpi_worker.sandbox.registry import sandbox_for, sandboxes

log = logging.getLogger(__name__)


def last_quarter_end(today: dt.date) -> dt.date:
    """The last day of the last calendar quarter that ended before ``today``."""
    first_of_quarter = dt.date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
    return first_of_quarter - dt.timedelta(days=1)


def _instant(_ctx: Any, _param: Any, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO datetime") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone, e.g. {value}+00:00")
    return parsed


def run_demo(
    *,
    crm: str | None = None,
    reference_date: dt.date | None = None,
    as_of: dt.datetime | None = None,
    deals: int | None = None,
    progress: Any = None,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Run the demo on the sandbox of ``crm`` and return its JSON-able result (also used by
    the tests). ``keep``: a folder where the store stays after the demo, beside a config
    (``crm-kpi.yaml``) that reads it, so ``crm-kpi kpis show/explain --config
    <keep>/crm-kpi.yaml`` work afterwards (its CRM address is the placeholder: the sandbox
    is gone)."""
    from crm_kpi_worker.config import path_of
    from crm_kpi_worker.connectors.registry import build_connector
    from crm_kpi_worker.sync.config_loader import load_config
    from crm_kpi_worker.sync.pipeline import RunOptions, run_once
    from crm_kpi_worker.sync.setup import set_up_source
    from crm_kpi_worker.sync.store import Store

    now = dt.datetime.now(dt.UTC)
    reference_date = reference_date or last_quarter_end(now.date())
    as_of = as_of or now
    started = time.perf_counter()
    entry = sandbox_for(crm) if crm else sandboxes()[0]
    crm = entry.crm
    with (
        entry.start(reference_date=reference_date, deals=deals) as sandbox,
        tempfile.TemporaryDirectory(prefix="crm-kpi-demo-") as temporary,
    ):
        workdir = Path(temporary) if keep is None else _kept_folder(keep, crm)
        config = load_config(path_of(f"demo-{crm}.yaml"))
        # The demo config's source, pointed at the running sandbox (its placeholder port 0).
        source = config.sources[0].with_changes(**entry.source_changes(sandbox))
        config = config.replace_source(source).model_copy(
            update={
                "store": config.store.model_copy(
                    update={"url": f"sqlite:///{Path(workdir) / 'demo.sqlite'}"}
                )
            }
        )
        connector = build_connector(source, config.currency)
        set_up = set_up_source(config, source, connector, dry_run=False, say=log.info)
        with Store.open(config.store.resolve_url()) as store:
            result = run_once(config, store, RunOptions(as_of=as_of), progress=progress)
        results = result.results[source.name]
        inputs = result.inputs[source.name]
        users = {u.id: u for u in inputs.rep_users}
        scenario = next(
            p for p in results.periods if p.kind == "quarter" and p.end == reference_date
        )
        current = next(
            (
                p
                for p in results.periods
                if p.kind == "quarter" and p.start <= as_of.date() <= p.end
            ),
            None,
        )
        rows = []
        for row in results.rows:
            user = users.get(row.subject) if row.scope == "rep" else None
            rows.append(
                {
                    "scope": row.scope,
                    "subject": user.name
                    if user
                    else ("Unassigned" if row.scope == "rep" else row.subject),
                    "email": user.email if user else None,
                    "team": user.team if user else (row.subject if row.scope == "team" else None),
                    "period": row.period_key,
                    "period_kind": row.period_kind,
                    "current": row.is_current,
                    "kpis": {key: row.values.get(key) for key in KPI_KEYS},
                    "empty_because": dict(row.empty_reasons),
                }
            )
        written = {
            "objects_created": [o.name for o in set_up.objects_created],
            "fields_created": len(set_up.fields_created),
            "setup_changes": [str(change) for change in set_up.changes],
            "writes": result.report()["sources"][0]["written"],
        }
        return {
            **(
                {"kept": {"folder": str(workdir), "config": str(workdir / KEPT_CONFIG)}}
                if keep
                else {}
            ),
            "crm": crm,
            "sandbox": sandbox.url,
            "reference_date": reference_date.isoformat(),
            "scenario_quarter": scenario.key,
            # The quarter as of the run: its open pipeline and coverage (the scenario
            # quarter is closed: no open pipeline is left in it).
            "current_quarter": current.key if current is not None else None,
            "as_of": as_of.isoformat(),
            "seconds": round(time.perf_counter() - started, 2),
            "kpis": rows,
            "written": written,
            "run": result.report(),
        }


KEPT_CONFIG = "crm-kpi.yaml"
_KEPT_STORE = "demo.sqlite"


def _kept_folder(folder: Path, crm: str) -> Path:
    """``folder`` with a fresh demo store path and a config reading it (``--keep``)."""
    from crm_kpi_worker.config import path_of

    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):  # the previous demo's store: runs start afresh
        (folder / f"{_KEPT_STORE}{suffix}").unlink(missing_ok=True)
    text = path_of(f"demo-{crm}.yaml").read_text(encoding="utf-8")
    shipped = {"salesforce": "crm-kpi-demo.sqlite", "hubspot": "crm-kpi-demo-hubspot.sqlite"}
    text = text.replace(f"url: sqlite:///{shipped[crm]}", f"url: sqlite:///{_KEPT_STORE}")
    (folder / KEPT_CONFIG).write_text(text, encoding="utf-8")
    return folder


@click.command("demo")
@click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--reference-date",
    callback=date_option,
    help="Last day of the scenario quarter (default: the last complete quarter).",
)
@click.option(
    "--crm",
    type=click.Choice([entry.crm for entry in sandboxes()]),
    default=sandboxes()[0].crm,
    show_default=True,
    help="Which sandbox CRM to run the demo on (the same scenario in each).",
)
@click.option("--as-of", callback=_instant, help="Evaluation instant (default: now).")
@click.option(
    "--deals",
    type=click.IntRange(580, 1_000_000),
    default=None,
    help="Opportunities in the sandbox (default: the demo scenario only).",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the store in this folder, with a config reading it, for `kpis show/explain`.",
)
def demo_command(
    output: str,
    reference_date: dt.date | None,
    crm: str,
    as_of: dt.datetime | None,
    deals: int | None,
    keep: Path | None,
) -> None:
    """Run the worker on the sandbox CRM with the demo scenario: setup, one sync, the KPIs."""
    progress = None if output == "json" else (lambda message: click.echo(f"  {message}", err=True))
    if output != "json":
        label = sandbox_for(crm).label
        click.echo(f"Starting the sandbox {label} with the demo scenario...", err=True)
    try:
        demo = run_demo(
            crm=crm,
            reference_date=reference_date,
            as_of=as_of,
            deals=deals,
            progress=progress,
            keep=keep,
        )
    except ValueError as exc:  # a reference date or size the generator refuses
        raise click.UsageError(str(exc)) from None
    if output == "json":
        click.echo(json.dumps(demo, indent=2, ensure_ascii=False, default=str))
        return
    _print_table(demo)


_COLUMNS = (  # (header, KPI key, width, as percent, decimals)
    ("bookings", "bookings_arr", 10, False, 0),
    ("quota", "quota", 10, False, 0),
    ("attain.", "quota_attainment", 9, True, 0),
    ("won", "deals_won", 5, False, 0),
    ("lost", "deals_lost", 5, False, 0),
    ("win", "win_rate", 7, True, 0),
    ("conv.", "conversion_rate", 7, True, 0),
    ("cycle", "sales_cycle_days", 7, False, 1),
    ("demos/wk", "demos_per_week", 9, False, 1),
)

#: The current quarter's table: what is booked so far, what is left, and the pipeline for it.
_PIPELINE_COLUMNS = (
    ("bookings", "bookings_arr", 10, False, 0),
    ("quota", "quota", 10, False, 0),
    ("remaining", "quota_remaining", 11, False, 0),
    ("pipeline", "open_pipeline_arr", 10, False, 0),
    ("weighted", "weighted_pipeline_arr", 10, False, 0),
    ("commit", "forecast_commit_arr", 10, False, 0),
    ("coverage", "pipeline_coverage", 10, "x", 2),
)


def _cell(value: float | None, width: int, percent: bool | str, decimals: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if percent == "x":  # a multiple (coverage)
        return f"{value:>{width - 1}.{decimals}f}x"
    if percent:
        return f"{value * 100:>{width - 1}.0f}%"
    return f"{value:>{width},.{decimals}f}"


def _kpi_rows(demo: dict[str, Any], quarter: str, columns: tuple[Any, ...]) -> None:
    click.echo("  " + " " * 18 + "".join(f"{h:>{w}}" for h, _, w, _, _ in columns))
    for row in demo["kpis"]:
        if row["period"] != quarter:
            continue
        label = {"org": "Org", "team": f"[{row['subject']}]"}.get(row["scope"], row["subject"])
        cells = "".join(
            _cell(row["kpis"].get(key), width, percent, decimals)
            for _, key, width, percent, decimals in columns
        )
        click.echo(f"  {label[:18]:<18}{cells}")


def _print_table(demo: dict[str, Any]) -> None:
    quarter = demo["scenario_quarter"]
    click.echo(f"\nKPIs for the scenario quarter {quarter} (as of {demo['as_of'][:10]}):\n")
    _kpi_rows(demo, quarter, _COLUMNS)
    current = demo.get("current_quarter")
    if current and current != quarter:
        click.echo(
            f"\nThe current quarter {current} so far: bookings, what is left of the quota,"
            " and the open pipeline closing in it\n(coverage = pipeline / remaining quota):\n"
        )
        _kpi_rows(demo, current, _PIPELINE_COLUMNS)
    click.echo(
        "\n  '-' is an empty KPI; `crm-kpi demo --format json` gives every KPI"
        " and why a value is empty."
    )
    source = demo["run"]["sources"][0]
    excluded = source["excluded"]
    click.echo(
        f"\nRun: pulled {sum(source['pulled'].values()):,} records"
        f" in {source['api_calls']} API calls;"
    )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(excluded["by_reason"].items()))
    click.echo(f"  excluded {excluded['total']} deals with bad data: {reasons or 'none'}")
    click.echo(f"  {source['unassigned_deals']} deals of unknown owners counted as 'Unassigned'")
    written = demo["written"]
    where = sandbox_for(demo["crm"]).instance
    click.echo(f"\nWritten into the sandbox {where} ({demo['sandbox']}):")
    click.echo(
        f"  setup created {', '.join(written['objects_created']) or 'no object'}"
        f" and {written['fields_created']} fields"
    )
    for change in written["setup_changes"]:
        click.echo(f"  setup: {change}")
    for write in written["writes"]:
        click.echo(
            f"  {write['object']}: {write['records_written']:,} records"
            f" ({write['fields_written']:,} fields), {write['created']:,} created,"
            f" {write['failed']} failed"
        )
    click.echo(f"\nDone in {demo['seconds']} s.")
    _print_next_steps(demo)


def _print_next_steps(demo: dict[str, Any]) -> None:
    """Where to look next: the numbers explained, every run's report, the status page (with
    ``--keep``, on the kept store and its config)."""
    quarter = demo["scenario_quarter"]
    reps = [
        row
        for row in demo["kpis"]
        if row["scope"] == "rep" and row["period"] == quarter and row["email"]
    ]
    top = max(reps, key=lambda row: row["kpis"].get("quota_attainment") or 0, default=None)
    kept = demo.get("kept")
    config = f" --config {kept['config']}" if kept else ""
    if kept:
        click.echo(f"\nThe store stays in {kept['folder']}. Where to look next:")
    else:
        click.echo(
            "\nWhere to look next (on your own config and store, or keep the demo's with"
            " --keep DIR; without it the demo's sandbox and store are gone when it ends):"
        )
    if top is not None:
        attainment = top["kpis"].get("quota_attainment")
        at = f" at {attainment * 100:.0f}%" if attainment is not None else ""
        click.echo(f"  Which deals put {top['subject']}{at}, and why each counts or not:")
        click.echo(
            f"    crm-kpi kpis explain{config} --rep {top['email']} --period {quarter}"
            " --kpi quota_attainment"
        )
    click.echo("  Every run: what it pulled, excluded, and each record it wrote with its values:")
    click.echo(f"    crm-kpi runs list{config}, then crm-kpi runs show{config} RUN_ID")
    click.echo("  The status page (last runs, attainment per rep and team, pipeline coverage):")
    click.echo(
        "    set runtime.http (e.g. {port: 8080}), run the service (crm-kpi sync),"
        " open http://127.0.0.1:8080/"
    )
