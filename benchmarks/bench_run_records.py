"""Benchmark: what keeping every planned record of a run costs (``run_records``).

A full sync of the sandbox Salesforce with N opportunities (default 50,000) writes every
scorecard and opportunity; the run keeps each planned record with its values and outcome
(zlib-compressed JSON, one row per chunk of 10,000). It prints, for that first run and for a
dry run after it (nothing left to write):

- the planned records, the bytes stored for them, bytes per record, and per million deals;
- the size of the run's JSON report (``runs.report``: counts, exclusions, failures);
- the time to encode and store them during the run, and to read them all back
  (``crm-kpi runs show --format json`` does the same).

    python benchmarks/bench_run_records.py                  # 50,000 opportunities
    python benchmarks/bench_run_records.py --deals 200000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from bench_full_sync import AS_OF, config_for
from sandbox_process import sandbox_process
from sqlalchemy import select

from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.sync.pipeline import RunOptions, run_once
from crm_kpi_worker.sync.setup import set_up_source
from crm_kpi_worker.sync.store import Store
from crm_kpi_worker.sync.store import planned_writes as planned_module
from crm_kpi_worker.sync.store.schema import run_records


def run(deals: int) -> list[dict[str, Any]]:
    timings = {"encode_store": 0.0}
    save = planned_module.PlannedWrites.save_planned

    def timed_save(self: Any, *args: Any) -> None:
        started = time.perf_counter()
        save(self, *args)
        timings["encode_store"] += time.perf_counter() - started

    planned_module.PlannedWrites.save_planned = timed_save  # type: ignore[method-assign]
    out = []
    with tempfile.TemporaryDirectory(prefix="crm-kpi-bench-") as folder:
        work = Path(folder)
        options = ("--deals", str(deals), "--workdir", str(work), "--api-limit", "10000000")
        with sandbox_process("salesforce", *options) as sandbox:
            config = config_for(sandbox.url, sandbox.ca_path, work / "store.sqlite")
            source = config.sources[0]
            set_up_source(
                config,
                source,
                build_connector(source, config.currency),
                dry_run=False,
                say=lambda _line: None,
            )
            for label, dry_run in (("first run (writes everything)", False), ("dry run", True)):
                timings["encode_store"] = 0.0
                with Store.open(config.store.resolve_url()) as store:
                    started = time.perf_counter()
                    result = run_once(config, store, RunOptions(as_of=AS_OF, dry_run=dry_run))
                    wall = time.perf_counter() - started
                    records, stored = store.planned_size(result.run_id)
                    started = time.perf_counter()
                    read_back = sum(1 for _ in store.planned(result.run_id))
                    read_seconds = time.perf_counter() - started
                    report_bytes = len(json.dumps(store.run(result.run_id)["report"]).encode())
                    with store._engine.connect() as connection:
                        bodies = connection.execute(
                            select(run_records.c.body).where(run_records.c.run_id == result.run_id)
                        ).scalars()
                        raw = sum(len(zlib.decompress(body)) for body in bodies)
                out.append(
                    {
                        "label": label,
                        "wall": wall,
                        "records": records,
                        "read_back": read_back,
                        "stored": stored,
                        "raw": raw,
                        "report_bytes": report_bytes,
                        "encode_store": timings["encode_store"],
                        "read_seconds": read_seconds,
                    }
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=50_000)
    args = parser.parse_args()
    for r in run(args.deals):
        per = r["stored"] / r["records"] if r["records"] else 0
        print(f"{args.deals:,} opportunities, {r['label']}: run {r['wall']:.1f} s")
        print(
            f"  planned records kept   {r['records']:>10,}  ({r['stored'] / 1e6:.2f} MB stored,"
            f" {per:.1f} bytes/record, i.e. {per:.1f} MB per million records;"
            f" {r['raw'] / 1e6:.2f} MB of JSON before compression)"
        )
        print(f"  run report (JSON)      {r['report_bytes'] / 1e3:>10,.1f} kB")
        print(
            f"  encode+store / read    {r['encode_store']:>10.2f} s / {r['read_seconds']:.2f} s"
            f" ({r['read_back']:,} records read back)"
        )


if __name__ == "__main__":
    main()
