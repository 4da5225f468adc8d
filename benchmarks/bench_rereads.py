"""Benchmark: what the runs after a write-back cost, and what a rerun after a kill re-sends.

The sandbox Salesforce runs as its own process with N opportunities (default 50,000); the
worker runs here with a SQLite store, as of one fixed instant (so the KPIs do not move between
runs and every write of run 2 and 3 would be a re-write).

1. a first run (full pull, KPIs, write-back of every scorecard and opportunity);
2. the run after it: the pull re-reads the records the worker wrote (their stamps moved);
   how many of them are normalized again and re-written;
3. a quiet run: nothing changed anywhere;
4. a kill during the write phase: a first run on a second, empty store (so it writes every
   record again) in a child process, killed with SIGKILL once N write calls were served; then
   a rerun, counting the records it sends again.

Run 3 comes at once, within the pull's 5-minute lookback, as on a 1-minute schedule; run 4
is as if it came 5 minutes later (the stored cursors are moved on by 5 minutes): the bare loop,
the least a run can cost. Ratios are printed against it.

    python benchmarks/bench_rereads.py                 # 50,000 opportunities
    python benchmarks/bench_rereads.py --deals 5000    # a quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sandbox_process import SandboxProcess, sandbox_process

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.connectors.salesforce.config import SalesforceChangeEvents
from crm_kpi_worker.connectors.salesforce.deals_feed import ReplayCursor
from crm_kpi_worker.connectors.salesforce.resources import format_stamp, parse_stamp
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.pipeline import RunOptions, run_once
from crm_kpi_worker.sync.setup import set_up_source
from crm_kpi_worker.sync.store import Store

AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
WRITE_ROUTES = ("collections", "collections_typed", "collections_upsert", "record", "external")


def config_for(url: str, ca: str, store: Path, pubsub: str | None = None) -> AppConfig:
    """The demo config against the sandbox; with ``pubsub`` (its Pub/Sub endpoint), change
    events on."""
    config = load_config(path_of("demo-salesforce.yaml"))
    source = config.sources[0].with_changes(login_url=url, instance_url=url, ca_bundle=ca)
    if pubsub is not None:
        source = source.with_changes(change_events=SalesforceChangeEvents(endpoint=pubsub))
    store_settings = config.store.model_copy(update={"url": f"sqlite:///{store}"})
    return config.replace_source(source).model_copy(update={"store": store_settings})


def write_calls(sandbox: SandboxProcess) -> int:
    by_route = sandbox.stats()["by_route"]
    return sum(by_route.get(route, 0) for route in WRITE_ROUTES)


def one_run(config: AppConfig, store_path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with Store.open(f"sqlite:///{store_path}") as store:
        result = run_once(config, store, RunOptions(as_of=AS_OF))
    report = result.report()["sources"][0]
    written = sum(w["records_written"] for w in report["written"])
    pulled_deals = report["pulled"].get("deals", 0)
    # Newer reports count the records whose content had not changed (not normalized again).
    unchanged = report.get("unchanged_on_pull", {}).get("deals", 0)
    return {
        "wall": time.perf_counter() - started,
        "calls": report["api_calls"],
        "deals_read": pulled_deals,
        "deals_normalized": pulled_deals - unchanged,
        "written": written,
        "seconds": report["seconds"],
    }


LOOKBACK = dt.timedelta(minutes=5, seconds=1)


def move_cursors(store_path: Path, by: dt.timedelta) -> None:
    """As if the next run came ``by`` later with nothing changed meanwhile: every stored
    cursor moves on, so the lookback no longer reaches the worker's own writes."""
    with sqlite3.connect(store_path) as db:
        for source, stream, cursor in db.execute("SELECT source, stream, cursor FROM sync_cursors"):
            if cursor:
                stored = ReplayCursor.decode(cursor)  # with change events: a replay beside
                assert stored.inner is not None
                inner = format_stamp(parse_stamp(stored.inner) + by)
                moved = inner if stored.inner == cursor else replace(stored, inner=inner).encode()
                db.execute(
                    "UPDATE sync_cursors SET cursor = ? WHERE source = ? AND stream = ?",
                    (moved, source, stream),
                )


def child(url: str, ca: str, store: str) -> None:
    """The run that gets killed (in its own process)."""
    one_run(config_for(url, ca, Path(store)), Path(store))


def kill_during_writes(sandbox: SandboxProcess, work: Path, after_calls: int) -> dict[str, Any]:
    store_path = work / "killed.sqlite"
    config = config_for(sandbox.url, sandbox.ca_path, store_path)
    before = write_calls(sandbox)
    process = subprocess.Popen(  # noqa: S603 - this script
        [sys.executable, __file__, "--child", sandbox.url, sandbox.ca_path, str(store_path)],
        env=os.environ,
    )
    try:
        while process.poll() is None and write_calls(sandbox) - before < after_calls:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    sent_before_kill = write_calls(sandbox) - before
    with Store.open(f"sqlite:///{store_path}") as store:
        remembered = {
            obj: len({key for key, _ in store.written(config.sources[0].name, obj)})
            for obj in ("KPI_Scorecard__c", "Opportunity")
        }
    calls = write_calls(sandbox)
    rerun = one_run(config, store_path)
    return {
        "write_calls_before_kill": sent_before_kill,
        "records_remembered_at_kill": sum(remembered.values()),
        "rerun_write_calls": write_calls(sandbox) - calls,
        "rerun_records_written": rerun["written"],
        "rerun": rerun,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=50_000)
    parser.add_argument("--kill-after-write-calls", type=int, default=60)
    parser.add_argument(
        "--change-events",
        action="store_true",
        help="read others' changes from Change Data Capture (the sandbox's Pub/Sub API)",
    )
    parser.add_argument("--child", nargs=3, metavar=("URL", "CA", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="crm-kpi-bench-") as folder:
        work = Path(folder)
        options = ("--deals", str(args.deals), "--workdir", str(work), "--api-limit", "10000000")
        with sandbox_process("salesforce", *options) as sandbox:
            store_path = work / "store.sqlite"
            pubsub = sandbox.pubsub_endpoint if args.change_events else None
            config = config_for(sandbox.url, sandbox.ca_path, store_path, pubsub)
            source = config.sources[0]
            set_up_source(
                config,
                source,
                build_connector(source, config.currency),
                dry_run=False,
                say=lambda line: None,
            )
            runs = [one_run(config, store_path) for _ in range(3)]
            move_cursors(store_path, LOOKBACK)
            runs.append(one_run(config, store_path))
            kill = kill_during_writes(sandbox, work, args.kill_after_write_calls)
    print_result(args.deals, runs, kill, args.change_events)


def print_result(
    deals: int, runs: list[dict[str, Any]], kill: dict[str, Any], change_events: bool
) -> None:
    first, after, quiet, later = runs
    events = "with change events" if change_events else "without change events"
    print(f"re-reads and re-sends at {deals:,} opportunities, {events} (sandbox process)")
    header = f"{'wall s':>8}{'calls':>7}{'deals read':>12}{'normalized':>12}{'written':>9}"
    print(f"  {'run':<22}{header}")
    named = (
        ("1 first write-back", first),
        ("2 after it", after),
        ("3 quiet, in lookback", quiet),
        ("4 quiet, 5 min later", later),
    )
    for name, r in named:
        print(
            f"  {name:<22}{r['wall']:8.1f}{r['calls']:7d}{r['deals_read']:12,d}"
            f"{r['deals_normalized']:12,d}{r['written']:9,d}"
        )
    print(
        f"  run 2 vs run 4 (the bare loop): wall {after['wall'] / later['wall']:.2f}x,"
        f" calls {after['calls'] / max(1, later['calls']):.2f}x;"
        f" re-read {after['deals_read'] / max(1, first['written']):.2f} and normalized again"
        f" {after['deals_normalized'] / max(1, first['written']):.3f} per record written by run 1,"
        f" re-written {after['written']}"
    )
    total = first["written"]
    resent = kill["records_remembered_at_kill"] + kill["rerun_records_written"] - total
    print(
        f"  kill after {kill['write_calls_before_kill']} write calls:"
        f" {kill['records_remembered_at_kill']:,} records remembered as written;"
        f" the rerun made {kill['rerun_write_calls']} write calls for"
        f" {kill['rerun_records_written']:,} records; re-sent {resent:,} of {total:,}"
        f" ({resent / max(1, total):.4f}); rerun wall {kill['rerun']['wall']:.1f} s,"
        f" {kill['rerun']['calls']} calls"
    )


if __name__ == "__main__":
    main()
