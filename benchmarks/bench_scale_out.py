"""Benchmark: many tenants' runs on Celery workers. Do I/O-bound runs scale with concurrency?

Sandbox CRMs run as processes of their own (loopback only), Salesforce and HubSpot, each
answering every call 150 ms late (the sandbox's ``slow`` fault): a real CRM's latency, so runs
mostly wait on the network. Tenants (one config each, the demo scenario's org: 580 deals,
about 2,500 activities, first runs: a full pull and every KPI field written) are spread over
the sandboxes. For each shape, ``workers`` ``crm-kpi worker`` processes (threads pool) with
``concurrency`` runs each take ``3 x workers x concurrency`` runs (at least 6) from RabbitMQ,
their stores in PostgreSQL (a schema per tenant, emptied before each shape); the time from
enqueueing to the last run finished gives runs per minute and records pulled per second, and
the speed-up over one worker running one run at a time; the CPU seconds per run of the workers
and of the sandboxes (from /proc) give the model's other term.

    python benchmarks/bench_scale_out.py                 # 1, 2, 4 workers x 1, 2, 4, 8
    python benchmarks/bench_scale_out.py --workers 1 4 --concurrency 1 8 --latency 0.15

Needs the PostgreSQL and RabbitMQ of this machine (CRM_KPI_TEST_POSTGRES_URL and
CRM_KPI_TEST_AMQP_URL, as the tests, or their defaults below). A few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from pydantic import SecretStr
from sandbox_process import SandboxProcess, sandbox_process

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sandbox_fleet import set_up, tenant_config

from crm_kpi_worker.sync.scale.control import ControlStore, RunKey
from crm_kpi_worker.sync.scale.stores import Deployment
from crm_kpi_worker.sync.scale.tasks import configure, publish
from crm_kpi_worker.sync.scale.tenants import TenantFiles

CLI = str(Path(sys.executable).parent / "crm-kpi")
PG = os.environ.get("CRM_KPI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("CRM_KPI_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
SANDBOXES = {"salesforce": 3, "hubspot": 3}
#: Runs per run slot (workers x concurrency) of a shape, so its time is a throughput and not
#: the longest run's; and at least this many runs.
RUNS_PER_SLOT = 3
RUNS_MIN = 6
WIDTHS = (7, 6, 5, 6, 9, 10, 8, 13)


@contextlib.contextmanager
def sandboxes(latency: float, work: Path) -> Iterator[list[tuple[str, SandboxProcess]]]:
    """The sandbox processes, set up (the KPI fields created), then slowed down."""
    with contextlib.ExitStack() as stack:
        found = []
        for crm, count in SANDBOXES.items():
            for index in range(count):
                # Many tenants share a sandbox here, where each would have its own portal and
                # its own rate limits: the HubSpot sandboxes enforce none.
                limits = ["--search-per-second", "0", "--burst-per-10s", "0"]
                options = ["--seed", str(50 + index), *(limits if crm == "hubspot" else [])]
                sandbox = stack.enter_context(sandbox_process(crm, *options))
                set_up(tenant_config(crm, sandbox, work / f"setup-{crm}-{index}.yaml"))
                rule = {"kind": "slow", "delay": latency, "times": None}
                requests.post(
                    f"{sandbox.url}/_sandbox/faults", json=rule, verify=sandbox.ca_path, timeout=30
                ).raise_for_status()
                found.append((crm, sandbox))
        yield found


def _tenants(folder: Path, count: int, orgs: list[tuple[str, SandboxProcess]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        crm, sandbox = orgs[index % len(orgs)]
        tenant_config(crm, sandbox, folder / f"t{index:03d}.yaml")


def _empty_stores(deployment: Deployment, names: list[str]) -> None:
    """Every tenant's store as before its first run (its tables emptied)."""
    engine = sa.create_engine(
        deployment.url.get_secret_value().replace(  # type: ignore[union-attr]
            "postgresql://", "postgresql+psycopg://"
        )
    )
    with engine.begin() as connection:
        for name in names:
            schema = deployment.schema(name)
            tables = connection.execute(
                sa.text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = :s"
                    " AND tablename <> 'alembic_version'"
                ),
                {"s": schema},
            ).scalars()
            listed = ", ".join(f'"{schema}"."{table}"' for table in tables)
            connection.execute(sa.text(f"TRUNCATE {listed} CASCADE"))
    engine.dispose()


def _start_workers(
    count: int, concurrency: int, args: list[str], work: Path
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    started = []
    for index in range(count):
        log = work / f"worker-{count}x{concurrency}-{index}.log"
        with log.open("w") as out:
            process = subprocess.Popen(  # noqa: S603 - the project's own CLI
                [CLI, "worker", *args, "--concurrency", str(concurrency), "--pool", "threads"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append((process, log))
    deadline = time.monotonic() + 300
    for process, log in started:
        while " ready." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(started)
                raise RuntimeError(f"a worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    return started


def _stop(workers: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for process, _ in workers:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process, _ in workers:
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _records(deployment: Deployment, files: TenantFiles, names: list[str]) -> int:
    """Records the runs pulled (from each tenant's run report)."""
    total = 0
    for name in names:
        tenant = files.load(name)
        with deployment.open_store(tenant, read_only=True) as store:  # type: ignore[arg-type]
            for run in store.recent_runs(10):
                for source in (run.get("report") or {}).get("sources", ()):
                    total += sum(source.get("pulled", {}).values())
    return total


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    workers: int,
    concurrency: int,
    deployment: Deployment,
    control: ControlStore,
    files: TenantFiles,
    args: list[str],
    work: Path,
    sandbox_pids: list[int],
) -> dict[str, Any]:
    runs = max(RUNS_MIN, RUNS_PER_SLOT * workers * concurrency)
    names = [f"t{index:03d}" for index in range(runs)]
    _empty_stores(deployment, names)
    started = _start_workers(workers, concurrency, args, work)
    try:
        due = dt.datetime.now(dt.UTC).replace(microsecond=0)
        cpu = [_cpu_seconds(p.pid) for p, _ in started] + [_cpu_seconds(p) for p in sandbox_pids]
        began = time.perf_counter()
        for name in names:
            control.enqueue(
                RunKey(name, "sandbox", due), lambda n=name: publish(RunKey(n, "sandbox", due))
            )
        while True:
            rows = [r for r in control.scheduled(1000) if r["due_at"] == due]
            if len(rows) == runs and all(r["state"] == "finished" for r in rows):
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - began
        worker_cpu = sum(_cpu_seconds(p.pid) for p, _ in started) - sum(cpu[: len(started)])
        sandbox_cpu = sum(_cpu_seconds(p) for p in sandbox_pids) - sum(cpu[len(started) :])
    finally:
        _stop(started)
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        raise RuntimeError(f"runs did not complete: {failed[:3]}")
    records = _records(deployment, files, names)
    return {
        "workers": workers,
        "concurrency": concurrency,
        "runs": runs,
        "seconds": round(seconds, 1),
        "runs_per_minute": round(runs / seconds * 60, 1),
        "records_per_second": round(records / seconds),
        "worker_cpu_per_run": round(worker_cpu / runs, 2),
        "sandbox_cpu_per_run": round(sandbox_cpu / runs, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per CRM call")
    options = parser.parse_args()

    prefix = f"bench_{uuid.uuid4().hex[:6]}_"
    deployment = Deployment(SecretStr(PG), prefix)
    queue = f"crm-kpi-bench-{uuid.uuid4().hex[:6]}"
    most = max(RUNS_MIN, RUNS_PER_SLOT * max(options.workers) * max(options.concurrency))
    results = []
    with tempfile.TemporaryDirectory(prefix="crm-kpi-bench-scale-") as tmp:
        work = Path(tmp)
        folder = work / "tenants"
        with sandboxes(options.latency, work) as orgs, ControlStore.open(deployment) as control:
            _tenants(folder, most, orgs)
            files = TenantFiles(folder)
            for tenant in files.scan().tenants:  # schemas, roles, migrations: once
                deployment.open_store(tenant).close()
            configure(AMQP, queue)
            pids = [sandbox.process.pid for _, sandbox in orgs]
            args = [
                "--configs", str(folder), "--store-url", PG, "--schema-prefix", prefix,
                "--broker", AMQP, "--queue", queue, "--slice-seconds", "600",
            ]  # fmt: skip
            try:
                for workers in options.workers:
                    for concurrency in options.concurrency:
                        result = measure(
                            workers, concurrency, deployment, control, files, args, work, pids
                        )
                        results.append(result)
                        print(json.dumps(result), flush=True)
            finally:
                _drop(deployment, queue)
    base = results[0]["runs_per_minute"]
    print(f"\nlatency {options.latency * 1000:.0f} ms per call; {os.cpu_count()} cores")
    heads = ("workers", "x conc", "runs", "s", "runs/min", "records/s", "speed-up", "CPU s/run")
    print(" ".join(f"{head:>{width}}" for head, width in zip(heads, WIDTHS, strict=True)))
    for r in results:
        print(
            f"{r['workers']:>7} {r['concurrency']:>6} {r['runs']:>5} {r['seconds']:>6}"
            f" {r['runs_per_minute']:>9} {r['records_per_second']:>10}"
            f" {r['runs_per_minute'] / base:>7.1f}x"
            f" {r['worker_cpu_per_run']:>6} + {r['sandbox_cpu_per_run']:<4}"
        )


def _drop(deployment: Deployment, queue: str) -> None:
    """The benchmark's schemas, roles and queue."""
    from kombu import Connection

    with Connection(AMQP) as connection:
        connection.default_channel.queue_delete(queue)
    engine = sa.create_engine(PG.replace("postgresql://", "postgresql+psycopg://"))
    like = deployment.prefix.replace("_", "\\_") + "%"
    with engine.connect() as connection:
        schemas = connection.execute(
            sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": like}
        ).scalars()
        roles = connection.execute(
            sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"), {"p": like}
        ).scalars()
        names = list(schemas), list(roles)
    for schema in names[0]:  # one transaction each: a schema's tables take locks
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    with engine.begin() as connection:
        for role in names[1]:
            connection.execute(sa.text(f'DROP ROLE "{role}"'))
    engine.dispose()


if __name__ == "__main__":
    main()
