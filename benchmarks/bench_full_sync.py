"""Benchmark: a full sync of the sandbox Salesforce with N opportunities (default 1,000,000).

The sandbox runs as its own process (``crm-kpi sandbox salesforce``); the worker runs here.
In the same run it measures:

- a bare ``query_all_iter`` loop over the connector's own deals query (same SOQL, same
  session, records only counted), the yardstick for the pull;
- one full ``sync``: pull (every stream, normalized and stored in SQLite), KPIs, write-back;
- the KPI computation again on the stored data: building the engine's frames from the store,
  then the engine alone.

It prints wall times, deals/s, API calls against the documented minimum, the worker's peak
memory, and the ratio of the pull phase to the bare loop. Loopback only.

The documented minimum: child records of a subquery count toward a query's batch size (Query
Options header), so a stream needs ceil((records + their child records) / 2,000) pages (the
deals carry their stage and close-date histories); plus the connection's calls not reused as a
page (the integration user's currency); plus ceil(changed / 200) per written object.

    python benchmarks/bench_full_sync.py                 # 1,000,000 opportunities
    python benchmarks/bench_full_sync.py --deals 20000   # a quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from sandbox_process import sandbox_process

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.base import STREAMS
from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.kpis.engine import compute
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.frames import build_input
from crm_kpi_worker.sync.pipeline import RunOptions, run_once
from crm_kpi_worker.sync.setup import set_up_source
from crm_kpi_worker.sync.store import Store

PAGE = 2000
WRITE_BATCH = 200
AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def config_for(url: str, ca: str, store: Path) -> AppConfig:
    config = load_config(path_of("demo-salesforce.yaml"))
    source = config.sources[0].with_changes(login_url=url, instance_url=url, ca_bundle=ca)
    store_settings = config.store.model_copy(update={"url": f"sqlite:///{store}"})
    return config.replace_source(source).model_copy(update={"store": store_settings})


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(deals: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="crm-kpi-bench-") as folder:
        work = Path(folder)
        options = ("--deals", str(deals), "--workdir", str(work), "--api-limit", "10000000")
        with sandbox_process("salesforce", *options) as sandbox:
            url, ca = sandbox.url, sandbox.ca_path
            config = config_for(url, ca, work / "store.sqlite")
            source = config.sources[0]
            connector = build_connector(source, config.currency)
            # Connecting reads CurrencyType (reused as the currencies page) and the user's
            # currency: the calls of a run that are no stream's page.
            fixed_calls = connector.api_calls - 1
            # crm-kpi setup: the fields, the permission sets, the layout section.
            set_up_source(config, source, connector, dry_run=False, say=lambda line: None)

            # The yardstick: the connector's own query of every stream, records only counted.
            calls = connector.api_calls
            started = time.perf_counter()
            bare_rows = 0
            #: stream -> its records plus their child records (what counts toward a batch).
            batch_rows: dict[str, int] = {}
            for stream in STREAMS:
                query = connector.queries.build(stream, None)
                if query is not None:
                    rows = connector.client.query_all_iter(
                        query.soql, include_deleted=query.include_deleted
                    )
                    counted = [record_rows(record) for record in rows]
                    bare_rows += len(counted)
                    batch_rows[stream] = sum(counted)
            bare_seconds = time.perf_counter() - started
            bare_calls = connector.api_calls - calls
            memory_before_sync = peak_mb()

            stats_before = sandbox.stats()
            started = time.perf_counter()
            with Store.open(config.store.resolve_url()) as store:
                result = run_once(config, store, RunOptions(as_of=AS_OF))
                wall = time.perf_counter() - started
                stats_after = sandbox.stats()
                report = result.report()["sources"][0]
                # The engine alone, on what the sync stored.
                started, cpu = time.perf_counter(), time.process_time()
                inputs = build_input(store, config, source, AS_OF.date())
                frames_seconds = time.perf_counter() - started
                frames_cpu = time.process_time() - cpu
                started = time.perf_counter()
                compute(
                    inputs.deals,
                    inputs.reps,
                    inputs.quotas,
                    inputs.activities,
                    inputs.accounts,
                    inputs.snapshots,
                    inputs.settings,
                    AS_OF.date(),
                )
                engine_seconds = time.perf_counter() - started
    # Calls as the sandbox counted them, by route, during the sync.
    served = {
        route: stats_after["by_route"].get(route, 0) - stats_before["by_route"].get(route, 0)
        for route in stats_after["by_route"]
    }
    pull_calls = sum(served.get(r, 0) for r in ("query", "query_all", "query_more"))
    write_calls = sum(served.get(r, 0) for r in WRITE_ROUTES)
    pull_minimum = fixed_calls + sum(
        max(1, math.ceil(batch_rows.get(stream, n) / PAGE))
        for stream, n in report["pulled"].items()
    )
    written = {w["object"]: w for w in report["written"]}
    write_minimum = sum(math.ceil(w["records_written"] / WRITE_BATCH) for w in written.values())
    return {
        "deals": deals,
        "bare": (bare_rows, bare_seconds, bare_calls),
        "report": report,
        "wall": wall,
        "pull_calls": pull_calls,
        "pull_minimum": pull_minimum,
        "fixed_calls": fixed_calls,
        "batch_rows": batch_rows,
        "write_calls": write_calls,
        "write_minimum": write_minimum,
        "served": served,
        "frames_seconds": frames_seconds,
        "frames_cpu": frames_cpu,
        "engine_seconds": engine_seconds,
        "peak_mb": peak_mb(),
        "peak_mb_before_sync": memory_before_sync,
    }


WRITE_ROUTES = ("collections", "collections_typed", "collections_upsert", "record", "external")


def record_rows(record: dict[str, Any]) -> int:
    """What a record counts toward a query batch: itself and its child records (all of them,
    by each child result's totalSize)."""
    children = (v for v in record.values() if isinstance(v, dict) and "totalSize" in v)
    return 1 + sum(int(child["totalSize"]) for child in children)


def print_result(r: dict[str, Any]) -> None:
    report = r["report"]
    seconds = report["seconds"]
    bare_rows, bare_seconds, bare_calls = r["bare"]
    deals = r["deals"]
    phases = ", ".join(f"{name} {seconds[name]:.1f}" for name in ("pull", "compute", "write"))
    pulled = ", ".join(f"{k} {v:,}" for k, v in report["pulled"].items())
    total = r["pull_calls"] + r["write_calls"]
    minimum = r["pull_minimum"] + r["write_minimum"]
    deal_rows = r["batch_rows"].get("deals", deals)
    lines = [
        f"full sync of {deals:,} opportunities (sandbox in its own process, SQLite store)",
        f"  wall time                 {r['wall']:9.1f} s  ({phases})",
        f"  deals/s (whole sync)      {deals / r['wall']:9,.0f}",
        f"  bare query_all_iter loop  {bare_seconds:9.1f} s  ({bare_rows:,} records, every"
        f" stream's query, {bare_calls} calls)",
        f"  pull phase / bare loop    {seconds['pull'] / bare_seconds:9.2f} x  (target <= 2)",
        f"  pulled                    {pulled}",
        f"  pull API calls            {r['pull_calls']:9,}  (minimum {r['pull_minimum']:,} ="
        f" {r['fixed_calls']} connection call(s) + sum over streams of ceil((records + child"
        f" records) / {PAGE:,}); deals {report['pages']['deals']:,} pages for"
        f" {deal_rows:,} rows: ceil = {math.ceil(deal_rows / PAGE):,},"
        f" ceil(N/{PAGE}) would be {math.ceil(deals / PAGE):,})",
        f"  write API calls           {r['write_calls']:9,}  (minimum {r['write_minimum']:,}:"
        f" ceil(changed/{WRITE_BATCH}) per object)",
        f"  API calls vs minimum      {total / minimum:9.3f} x  ({total:,} vs {minimum:,};"
        " target within 2%)",
        f"  KPI computation           {seconds['compute']:9.2f} s  (the run's compute phase, target"
        f" < 5 s; again alone: frames from the store {r['frames_seconds']:.2f} s"
        f" ({r['frames_cpu']:.2f} s of CPU on all threads), engine"
        f" {r['engine_seconds']:.2f} s)",
        f"  worker peak memory        {r['peak_mb']:9.0f} MB (target < 1024;"
        f" {r['peak_mb_before_sync']:.0f} MB before the sync)",
        f"  excluded                  {report['excluded']['total']:,}"
        f" ({report['excluded']['by_reason']})",
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print_result(run(args.deals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
