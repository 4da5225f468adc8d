"""Benchmark: a first full sync of the sandbox Salesforce with N opportunities, by one road.

``--road bulk`` (the default, the product's road at this size: ``bulk: {pull_above: 10000,
write_above: 2000}``) or ``--road rest`` (``bulk: null`` for both: query pages and sObject
Collections). The sandbox runs as its own process (``crm-kpi sandbox salesforce``); the worker
runs here. In the same run, against the same sandbox process, it measures:

- the bare pull loop of the road (``bare_loops.py``), before the sync: REST, simple-salesforce's
  ``query_all_iter`` over the connector's own query of every stream, records counted; Bulk,
  the connector's own Bulk queries (deals, their stage history and field history, the demo
  events) as query jobs with plain ``requests``, the CSV read as rows and counted, not made
  into records; the
  streams the connector reads by REST (the small ones) by ``query_all_iter``;
- one full ``sync``: pull (every stream, normalized and stored in SQLite), compute, write-back;
  each phase's wall time, CPU time of this process (``time.process_time``: the sandbox is
  another process), API calls as the sandbox counted them, and peak resident memory (the
  kernel's high-water mark, reset at the start of each phase);
- the bare write loop of the road, after the sync, sending the values the worker wrote (read
  back from the run's planned records, in the same chunks) to the same fields: REST, ``PATCH
  composite/sobjects``, 200 records a call; Bulk, one ingest job per chunk above
  ``write_above`` (create, upload, close, poll, three result sets), Collections below. The
  sandbox writes a record whatever its old values, so the re-sent values cost it what the
  worker's write cost; the worker's write came first and wrote everything (its store was
  empty);
- the compute phase again alone: the engine's frames from the store, then the engine.

The documented minimum of API calls, per road (printed with its formula):

- REST pull: the connection's calls not reused as a page, plus per stream
  ceil((records + their child records) / 2,000) pages (child records of a subquery count
  toward a query's batch size: Query Options header), at least one;
- Bulk pull: per query job, create + one status poll + ceil(rows / maxRecords) result pages
  (at least one); streams the connector reads by REST as above;
- Collections write: ceil(records / 200) per chunk and object;
- Bulk ingest: per job create + upload + close + one poll + three result sets (7 calls), one
  job per chunk of the run (10,000 records) above ``write_above``.

    python benchmarks/bench_full_sync.py                             # 1,000,000, Bulk
    python benchmarks/bench_full_sync.py --deals 200000 --road rest  # 200k by REST
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bare_loops
from sandbox_process import SandboxProcess, sandbox_process

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.base import STREAMS
from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.connectors.salesforce.resources import BULK_STREAMS
from crm_kpi_worker.kpis.engine import compute
from crm_kpi_worker.sync import pipeline
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.frames import build_input
from crm_kpi_worker.sync.pipeline import WRITE_CHUNK, RunOptions, run_once
from crm_kpi_worker.sync.setup import set_up_source
from crm_kpi_worker.sync.store import Store

PAGE = 2000
WRITE_BATCH = 200
INGEST_CALLS = 7  # create, upload, close, one poll, three result sets
AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
PULL_ROUTES = ("query", "query_all", "query_more")
WRITE_ROUTES = ("collections", "collections_typed", "collections_upsert", "record", "external")
TARGETS = {
    "calls": 1.05,
    "bulk_pull_calls": 300,
    "wall": 1.3,
    "pull_cpu": 2.0,
    "compute": 2.0,
    "memory": 1023.9,
}


def config_for(url: str, ca: str, store: Path, road: str) -> AppConfig:
    config = load_config(path_of("demo-salesforce.yaml"))
    source = config.sources[0].with_changes(login_url=url, instance_url=url, ca_bundle=ca)
    if road == "rest":
        source = source.with_changes(bulk={"pull_above": None, "write_above": None})
    store_settings = config.store.model_copy(update={"url": f"sqlite:///{store}"})
    return config.replace_source(source).model_copy(update={"store": store_settings})


# ---- measuring ------------------------------------------------------------------------------


#: The highest of every high-water mark read (resetting the kernel's resets ru_maxrss too).
_HIGHEST = [0.0]


def peak_mb() -> float:
    """This process's resident high-water mark since the last :func:`reset_peak`."""
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    found = int(match.group(1)) / 1024 if match else float("nan")
    _HIGHEST[0] = max(_HIGHEST[0], found)
    return found


def reset_peak() -> None:
    """Start a new high-water mark (Linux: ``5`` to ``clear_refs``)."""
    peak_mb()
    Path("/proc/self/clear_refs").write_text("5")


def lifetime_peak_mb() -> float:
    """The process's peak over its whole life (bare loops included)."""
    peak_mb()
    return max(_HIGHEST[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


@dataclass
class Measure:
    """Wall and CPU seconds, calls by route, and peak memory of a stretch of work."""

    wall: float = 0.0
    cpu: float = 0.0
    routes: Counter[str] = field(default_factory=Counter)
    peak_mb: float = 0.0

    def calls(self, routes: tuple[str, ...] | None = None) -> int:
        return sum(n for r, n in self.routes.items() if routes is None or r in routes)


def served(sandbox: SandboxProcess) -> Counter[str]:
    """The sandbox's calls so far by route, its own admin routes left out."""
    return Counter(
        {r: n for r, n in sandbox.stats()["by_route"].items() if not r.startswith("admin")}
    )


@contextmanager
def measured(measure: Measure, sandbox: SandboxProcess | None = None) -> Iterator[None]:
    """Adds the block's wall and CPU time (and the sandbox's calls) to ``measure``."""
    before = served(sandbox) if sandbox is not None else None
    started, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        measure.wall += time.perf_counter() - started
        measure.cpu += time.process_time() - cpu
        if before is not None and sandbox is not None:
            measure.routes.update(served(sandbox) - before)


@contextmanager
def phases_measured(sandbox: SandboxProcess) -> Iterator[dict[str, Measure]]:
    """Each pipeline phase (pull, compute, write) measured as the sync runs it."""
    found: dict[str, Measure] = {}
    originals = {name: getattr(pipeline, f"_{name}") for name in ("pull", "compute", "write")}

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def phase(*args: Any, **kwargs: Any) -> Any:
            measure = found.setdefault(name, Measure())
            reset_peak()
            try:
                with measured(measure, sandbox):
                    return function(*args, **kwargs)
            finally:
                measure.peak_mb = max(measure.peak_mb, peak_mb())

        return phase

    for name, function in originals.items():
        setattr(pipeline, f"_{name}", wrap(name, function))
    try:
        yield found
    finally:
        for name, function in originals.items():
            setattr(pipeline, f"_{name}", function)


# ---- the run --------------------------------------------------------------------------------


@dataclass
class BarePull:
    measure: Measure = field(default_factory=Measure)
    #: stream -> records, and records plus child records (REST streams)
    rest: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: stream -> its jobs' rows (Bulk streams)
    jobs: dict[str, list[bare_loops.JobRows]] = field(default_factory=dict)
    calls: int = 0


def bulk_streams(connector: Any) -> set[str]:
    """The streams the connector takes by Bulk on a first pull: incremental, and more records
    than ``pull_above`` with more than one REST page (asked as the connector asks: one page)."""
    limit = connector.settings.bulk_pull_above
    found = set()
    for stream in BULK_STREAMS:
        query = connector.queries.build(stream, None)
        if limit is None or query is None or not query.incremental:
            continue
        first = connector.client.query(query.soql, include_deleted=query.include_deleted)
        if first["totalSize"] > limit and not first["done"]:
            found.add(stream)
    return found


def bare_pull(connector: Any, wire: bare_loops.Wire, bulk: set[str]) -> BarePull:
    found = BarePull()
    max_records = connector.bulk.max_records
    calls_before = wire.calls
    with measured(found.measure):
        for stream in STREAMS:
            query = connector.queries.build(stream, None)
            if query is None:
                continue
            if stream in bulk:
                queries = connector.queries.bulk(stream, None)
                soqls = [child.soql for child in queries.children] + [queries.main]
                found.jobs[stream] = bare_loops.bulk_pull(
                    wire, soqls, include_deleted=query.include_deleted, max_records=max_records
                )
            else:
                calls = connector.api_calls
                found.rest[stream] = bare_loops.rest_pull(
                    connector.client, query.soql, include_deleted=query.include_deleted
                )
                wire.calls += connector.api_calls - calls
    found.calls = wire.calls - calls_before
    return found


@dataclass
class BareWrite:
    measure: Measure = field(default_factory=Measure)
    written: int = 0
    calls: int = 0
    #: the documented minimum of the chunks as the road writes them
    minimum: int = 0
    jobs: int = 0


def bare_write(
    config: AppConfig, store: Store, run_id: int, wire: bare_loops.Wire, objects: list[str]
) -> BareWrite:
    """The run's planned records sent again, chunk by chunk as the run sent them; only the
    sending is timed (reading them from the store is not)."""
    source = config.sources[0]
    card = config.kpi_fields_for(source).scorecard
    write_above = source.bulk.write_above
    found = BareWrite()
    for object_name in objects:
        external_id = card.external_id if card is not None and object_name == card.object else None
        planned = ((p.key, p.values) for p in store.planned(run_id, source.name, object_name))
        for chunk in bare_loops.chunked(planned, WRITE_CHUNK):
            by_ingest = write_above is not None and len(chunk) > write_above
            with measured(found.measure):
                if by_ingest:
                    written, calls = bare_loops.ingest_write(wire, object_name, external_id, chunk)
                    found.jobs += 1
                else:
                    written, calls = bare_loops.collections_write(
                        wire, object_name, external_id, chunk
                    )
            found.written += written
            found.calls += calls
            found.minimum += INGEST_CALLS if by_ingest else math.ceil(len(chunk) / WRITE_BATCH)
    return found


def run(deals: int, road: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="crm-kpi-bench-") as folder:
        work = Path(folder)
        options = ("--deals", str(deals), "--workdir", str(work), "--api-limit", "100000000")
        with sandbox_process("salesforce", *options) as sandbox:
            url, ca = sandbox.url, sandbox.ca_path
            config = config_for(url, ca, work / "store.sqlite", road)
            source = config.sources[0]
            connector = build_connector(source, config.currency)
            # Connecting reads CurrencyType (reused as the currencies page) and the user's
            # currency: the calls of a run that are no stream's page.
            fixed_calls = connector.api_calls - 1
            # crm-kpi setup: the fields, the permission sets, the layout section.
            set_up_source(config, source, connector, dry_run=False, say=lambda line: None)
            wire = bare_loops.Wire(connector.client.base_url, connector.client.session_id, ca)
            bulk = bulk_streams(connector)

            reset_peak()
            bare = bare_pull(connector, wire, bulk)
            bare.measure.peak_mb = peak_mb()
            memory_before_sync = lifetime_peak_mb()

            sync = Measure()
            with Store.open(config.store.resolve_url()) as store:
                with phases_measured(sandbox) as phases:
                    reset_peak()
                    with measured(sync, sandbox):
                        result = run_once(config, store, RunOptions(as_of=AS_OF))
                    sync.peak_mb = max([peak_mb(), *(p.peak_mb for p in phases.values())])
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
                del inputs
                written_objects = [w["object"] for w in report["written"]]
                bare_writes = bare_write(config, store, result.run_id, wire, written_objects)
    return {
        "deals": deals,
        "road": road,
        "bulk_streams": sorted(bulk),
        "fixed_calls": fixed_calls,
        "bare_pull": bare,
        "bare_write": bare_writes,
        "sync": sync,
        "phases": phases,
        "report": report,
        "frames_seconds": frames_seconds,
        "frames_cpu": frames_cpu,
        "engine_seconds": engine_seconds,
        "peak_mb_before_sync": memory_before_sync,
        "lifetime_peak_mb": lifetime_peak_mb(),
        "max_records": connector.bulk.max_records,
    }


# ---- the minimums ---------------------------------------------------------------------------


def pull_minimum(r: dict[str, Any]) -> tuple[int, str]:
    """The documented minimum of the pull's calls on the road taken, and its formula."""
    bare: BarePull = r["bare_pull"]
    pulled = r["report"]["pulled"]
    rest_pages = sum(
        max(1, math.ceil(bare.rest.get(stream, (0, n))[1] / PAGE))
        for stream, n in pulled.items()
        if stream not in bare.jobs
    )
    jobs = [job for stream_jobs in bare.jobs.values() for job in stream_jobs]
    job_calls = sum(2 + max(1, math.ceil(job.rows / r["max_records"])) for job in jobs)
    formula = (
        f"{r['fixed_calls']} connection call(s) + {rest_pages} REST pages (per stream"
        f" ceil((records + child records) / {PAGE:,}), at least 1)"
    )
    if jobs:
        sets = " + ".join(f"ceil({job.rows:,}/{r['max_records']:,})" for job in jobs)
        formula += (
            f" + {job_calls} for {len(jobs)} Bulk query jobs ({len(jobs)} x (create + 1 poll)"
            f" + {sets})"
        )
    return r["fixed_calls"] + rest_pages + job_calls, formula


def write_minimum(r: dict[str, Any]) -> tuple[int, str]:
    bare: BareWrite = r["bare_write"]
    if bare.jobs:
        return bare.minimum, (
            f"{bare.jobs} ingest jobs x {INGEST_CALLS} (create, upload, close, 1 poll, 3 result"
            f" sets) + ceil(records/{WRITE_BATCH}) per chunk written by Collections"
        )
    return bare.minimum, f"ceil(records/{WRITE_BATCH}) per chunk of {WRITE_CHUNK:,} and object"


# ---- printing -------------------------------------------------------------------------------


def print_result(r: dict[str, Any]) -> None:
    report, deals, road = r["report"], r["deals"], r["road"]
    phases: dict[str, Measure] = r["phases"]
    sync: Measure = r["sync"]
    bare_pull_: BarePull = r["bare_pull"]
    bare_write_: BareWrite = r["bare_write"]
    pull, write, comp = phases["pull"], phases["write"], phases["compute"]
    pull_calls = sum(n for route, n in sync.routes.items() if is_pull_route(route))
    write_calls = sum(n for route, n in sync.routes.items() if is_write_route(route))
    pull_min, pull_formula = pull_minimum(r)
    write_min, write_formula = write_minimum(r)
    calls_ratio = (pull_calls + write_calls) / (pull_min + write_min)
    probes = len(r["bulk_streams"])
    pulled = ", ".join(f"{k} {v:,}" for k, v in report["pulled"].items())
    bulk_cap = TARGETS["bulk_pull_calls"]
    lines = [
        f"full sync of {deals:,} opportunities, road {road} (sandbox in its own process,"
        f" SQLite store); Bulk streams: {', '.join(r['bulk_streams']) or 'none'}",
        f"  wall time                 {sync.wall:9.1f} s  (pull {pull.wall:.1f}, compute"
        f" {comp.wall:.2f}, write {write.wall:.1f}); {deals / sync.wall:,.0f} deals/s",
        f"  pulled                    {pulled}",
        "  phase      wall s    CPU s   calls | bare wall   CPU s   calls | wall x  CPU x",
        phase_line("pull", pull, pull_calls, bare_pull_.measure, bare_pull_.calls),
        phase_line("write", write, write_calls, bare_write_.measure, bare_write_.calls),
        f"  compute  {comp.wall:8.2f} {comp.cpu:8.2f}  (frames from the store + engine + KPI"
        f" rows saved; {target('compute', comp.wall, '< 2 s')}; again alone: frames"
        f" {r['frames_seconds']:.2f} s ({r['frames_cpu']:.2f} s CPU), engine"
        f" {r['engine_seconds']:.2f} s)",
        ratio_line("pull wall / bare", pull.wall / bare_pull_.measure.wall, "wall"),
        ratio_line("pull CPU / bare", pull.cpu / bare_pull_.measure.cpu, "pull_cpu"),
        ratio_line("write wall / bare", write.wall / bare_write_.measure.wall, "wall")
        + f"; the bare loop wrote {bare_write_.written:,} records",
        f"  pull API calls            {pull_calls:9,}  vs minimum {pull_min:,}"
        f" ({pull_calls / pull_min:.3f}x): {pull_formula}"
        + (
            f"; the pull's calls include {probes} REST first page(s) that chose Bulk"
            if probes
            else ""
        ),
        f"  write API calls           {write_calls:9,}  vs minimum {write_min:,}"
        f" ({write_calls / write_min:.3f}x): {write_formula}",
        ratio_line("API calls vs minimum", calls_ratio, "calls")
        + f" ({pull_calls + write_calls:,} vs {pull_min + write_min:,})"
        + (
            f"; pull under {bulk_cap}: {verdict(pull_calls, bulk_cap - 1)}"
            if road == "bulk"
            else ""
        ),
        "  calls by route (sync)     "
        + ", ".join(f"{k} {v}" for k, v in sorted(sync.routes.items())),
        f"  worker peak memory        {sync.peak_mb:9.0f} MB during the sync"
        f" ({target('memory', sync.peak_mb, '< 1024 MB')}); pull {pull.peak_mb:.0f} MB, compute"
        f" {comp.peak_mb:.0f} MB, write {write.peak_mb:.0f} MB; bare pull loop"
        f" {bare_pull_.measure.peak_mb:.0f} MB; {r['peak_mb_before_sync']:.0f} MB before the"
        f" sync, {r['lifetime_peak_mb']:.0f} MB over the whole process",
        f"  excluded                  {report['excluded']['total']:,}"
        f" ({report['excluded']['by_reason']})",
    ]
    print("\n".join(lines))


def is_pull_route(route: str) -> bool:
    return route in PULL_ROUTES or route.startswith("bulk_query")


def is_write_route(route: str) -> bool:
    return route in WRITE_ROUTES or route.startswith("bulk_ingest")


def verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else "MISSED"


def target(name: str, value: float, said: str) -> str:
    return f"target {said}: {verdict(value, TARGETS[name])}"


def ratio_line(name: str, value: float, target_name: str) -> str:
    limit = TARGETS[target_name]
    return f"  {name:<25} {value:9.2f} x  (target <= {limit}: {verdict(value, limit)})"


def phase_line(name: str, phase: Measure, calls: int, bare: Measure, bare_calls: int) -> str:
    wall, cpu = phase.wall / bare.wall, phase.cpu / bare.cpu
    return (
        f"  {name:<7} {phase.wall:8.1f} {phase.cpu:8.1f} {calls:7,} | {bare.wall:9.1f}"
        f" {bare.cpu:7.1f} {bare_calls:7,} | {wall:6.2f} {cpu:6.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--road", choices=("bulk", "rest"), default="bulk")
    args = parser.parse_args(argv)
    print_result(run(args.deals, args.road))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
