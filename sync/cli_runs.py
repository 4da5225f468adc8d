"""``crm-kpi runs list`` and ``crm-kpi runs show``: the runs the store remembers, whole.

``runs show`` prints a run's stored report and every record it planned to write: every
excluded record with its id and reason, every planned record with its fields and values and
what became of it (written, failed with the CRM's reason, or planned only), the failures, the
drift repaired when the report has it, the API calls. ``sync --once --output FILE`` writes the
same planned records to a file (:func:`write_planned`).

Both commands only read: the store is opened read-only (as ``kpis show`` does).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import click

from crm_kpi_worker.sync.cli_sync import _load, config_option, open_store, print_source

__all__ = ["planned_format", "runs_group", "write_planned"]

CSV_COLUMNS = ("section", "source", "object", "id", "outcome", "field", "value", "reason", "detail")
RECORD_COLUMNS = ("source", "object", "id", "outcome", "field", "value", "code", "message")


def _read_store(config_path: Path) -> Any:
    from crm_kpi_worker.sync.store import StoreMissing

    config = _load(config_path)
    try:
        return open_store(config, read_only=True)
    except StoreMissing as exc:
        raise click.ClickException(
            f"no runs yet: run `crm-kpi sync --once` first ({exc})"
        ) from None


@click.group("runs")
def runs_group() -> None:
    """The runs the store remembers: what each pulled, excluded, planned and wrote."""


# ---- runs list ------------------------------------------------------------------------------


def _totals(run: Mapping[str, Any]) -> dict[str, Any]:
    """One row of ``runs list``: a run's totals over its sources."""
    report = run.get("report") or {}
    sources = [s for s in report.get("sources") or () if isinstance(s, dict)]
    names = [s.get("source", "") for s in sources] or list(run["sources"] or ())
    planned = [p for s in sources for p in s.get("planned") or ()]
    written = [w for s in sources for w in s.get("written") or ()]
    started, finished = run.get("started_at"), run.get("finished_at")
    seconds = (finished - started).total_seconds() if started and finished else None
    options = run.get("options") or {}
    return {
        "run_id": run["id"],
        "status": run["status"],
        "started_at": started.isoformat(timespec="seconds") if started else None,
        "seconds": round(seconds, 1) if seconds is not None else None,
        "as_of": run["as_of"].isoformat(timespec="seconds"),
        "dry_run": bool(options.get("dry_run")),
        "sources": ", ".join(names),
        "pulled": sum(sum((s.get("pulled") or {}).values()) for s in sources),
        "excluded": sum((s.get("excluded") or {}).get("total", 0) for s in sources),
        "to_write": sum(p.get("records_to_write", 0) for p in planned),
        "written": sum(w.get("records_written", 0) for w in written),
        "failed": sum(s.get("failed", 0) for s in sources),
        "api_calls": sum(s.get("api_calls", 0) for s in sources),
    }


@runs_group.command("list")
@config_option
@click.option("--source", help="Only the runs of this source (its name in the config).")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Newest first."
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
def runs_list(config_path: Path, source: str | None, limit: int, output: str) -> None:
    """The newest runs: status, duration, records pulled, excluded, written, failed, calls."""
    with _read_store(config_path) as store:
        rows = [_totals(run) for run in store.recent_runs(limit, source)]
    if not rows:
        which = f" of source {source}" if source else ""
        raise click.ClickException(f"no runs{which} in the store yet")
    if output == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if output == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return
    click.echo(
        f"{'run':>6}  {'status':<24} {'started (UTC)':<19} {'secs':>7}  {'pulled':>9}"
        f" {'excl.':>6} {'to write':>9} {'written':>9} {'failed':>7} {'calls':>7}  sources"
    )
    for row in rows:
        status = row["status"] + (" (dry run)" if row["dry_run"] else "")
        started = (row["started_at"] or "-")[:19]
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f}"
        click.echo(
            f"{row['run_id']:>6}  {status:<24} {started:<19} {seconds:>7}  {row['pulled']:>9,}"
            f" {row['excluded']:>6,} {row['to_write']:>9,} {row['written']:>9,}"
            f" {row['failed']:>7,} {row['api_calls']:>7,}  {row['sources']}"
        )


# ---- runs show ------------------------------------------------------------------------------


@runs_group.command("show")
@click.argument("run_id", type=int)
@config_option
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
def runs_show(run_id: int, config_path: Path, output: str) -> None:
    """The whole report of one run, and every record it planned to write."""
    with _read_store(config_path) as store:
        run = store.run(run_id)
        if run is None:
            latest = store.recent_runs(1)
            hint = f"; the latest is run {latest[0]['id']}" if latest else "; the store has none"
            raise click.ClickException(f"no run {run_id} in the store{hint}")
        records = store.planned(run_id)
        out = sys.stdout
        if output == "json":
            _show_json(run, records, out)
        elif output == "csv":
            _show_csv(run, records, out)
        else:
            _show_table(run, records)


def _head(run: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run["id"],
        "status": run["status"],
        "as_of": run["as_of"],
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "options": run["options"],
        "pid": run.get("pid"),
        "host": run.get("host"),
        "report": run.get("report") or {},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def _record_json(record: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "source": record.source,
        "object": record.object,
        "id": record.key,
        "outcome": record.outcome,
        "values": record.values,
    }
    if record.outcome == "failed":
        item["code"], item["message"] = record.code, record.message
    return item


def _show_json(run: Mapping[str, Any], records: Iterable[Any], out: IO[str]) -> None:
    """The run as one JSON document; its records streamed one per line (a million fit)."""
    head = json.dumps(_head(run), indent=2, ensure_ascii=False, default=_plain)
    out.write(head[: -len("\n}")] + ',\n  "records": [')
    first = True
    for record in records:
        out.write(("\n    " if first else ",\n    ") + json.dumps(_record_json(record)))
        first = False
    out.write("\n  ]\n}\n" if not first else "]\n}\n")


def _csv_rows(run: Mapping[str, Any], records: Iterable[Any]) -> Iterator[dict[str, Any]]:
    report = run.get("report") or {}
    for source in report.get("sources") or ():
        name = source.get("source")
        for stream, count in (source.get("pulled") or {}).items():
            yield {"section": "pulled", "source": name, "object": stream, "value": count}
        for item in source.get("exclusions") or ():
            yield {
                "section": "exclusion",
                "source": name,
                "object": item.get("type"),
                "id": item.get("id"),
                "reason": item.get("reason"),
                "detail": item.get("detail"),
            }
        for written in source.get("written") or ():
            for failure in written.get("failures") or ():
                yield {
                    "section": "failure",
                    "source": name,
                    "object": written.get("object"),
                    "id": failure.get("key"),
                    "outcome": "failed",
                    "reason": failure.get("code"),
                    "detail": failure.get("message"),
                }
        for drift in source.get("drift") or ():
            for key in drift.get("keys") or ():
                yield {"section": "drift", "source": name, "object": drift.get("object"), "id": key}
        yield {"section": "api_calls", "source": name, "value": source.get("api_calls")}
    for record in records:
        base = {
            "section": "record",
            "source": record.source,
            "object": record.object,
            "id": record.key,
            "outcome": record.outcome,
            "reason": record.code,
            "detail": record.message,
        }
        for field_name, value in record.values.items():
            yield {**base, "field": field_name, "value": value}


def _show_csv(run: Mapping[str, Any], records: Iterable[Any], out: IO[str]) -> None:
    """One row per item: what was pulled, each exclusion, failure, drifted record, the API
    calls, and each field of each planned record."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(_csv_rows(run, records))


def _value(value: Any) -> str:
    return "null" if value is None else str(value)


def _show_table(run: Mapping[str, Any], records: Iterable[Any]) -> None:
    report = run.get("report") or {}
    options = run.get("options") or {}
    flags = [name.replace("_", " ") for name, on in options.items() if on]
    started, finished = run["started_at"], run["finished_at"]
    took = f" ({(finished - started).total_seconds():.1f} s)" if started and finished else ""
    click.echo(f"run {run['id']}{' (' + ', '.join(flags) + ')' if flags else ''}: {run['status']}")
    if report.get("interrupted"):
        click.echo(f"  interrupted: {report['interrupted']}")
    click.echo(f"  as of {run['as_of'].isoformat()}; started {started.isoformat()}{took}")
    if run.get("host"):
        click.echo(f"  ran as pid {run['pid']} on host {run['host']}")
    for source in report.get("sources") or ():
        print_source(source, run["id"], limit=None)
    current = None
    count = 0
    for record in records:
        where = (record.source, record.object)
        if where != current:
            current = where
            click.echo(f"  {record.source}: {record.object} records planned:")
        values = ", ".join(f"{k}={_value(v)}" for k, v in record.values.items())
        why = f" ({record.code}: {record.message})" if record.outcome == "failed" else ""
        click.echo(f"    {record.key} {record.outcome}{why}: {values}")
        count += 1
    if count == 0:
        click.echo("  no planned records stored for this run")


# ---- sync --once --output FILE --------------------------------------------------------------


def planned_format(path: Path, given: str | None) -> str:
    """The --output file's format: as given, else by its extension (``.json``), else CSV."""
    if given:
        return given
    return "json" if path.suffix.lower() in (".json", ".jsonl") else "csv"


def write_planned(store: Any, run_id: int, path: Path, file_format: str) -> int:
    """Every record run ``run_id`` planned to write, to ``path``; how many records."""
    count = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        if file_format == "json":
            out.write("[")
            for record in store.planned(run_id):
                out.write(("\n  " if count == 0 else ",\n  ") + json.dumps(_record_json(record)))
                count += 1
            out.write("\n]\n" if count else "]\n")
            return count
        writer = csv.DictWriter(out, fieldnames=RECORD_COLUMNS)
        writer.writeheader()
        for record in store.planned(run_id):
            count += 1
            base = {
                "source": record.source,
                "object": record.object,
                "id": record.key,
                "outcome": record.outcome,
                "code": record.code,
                "message": record.message,
            }
            for field_name, value in record.values.items():
                writer.writerow({**base, "field": field_name, "value": value})
    return count
