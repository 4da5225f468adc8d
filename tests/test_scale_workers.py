"""Issue 14's acceptance: many tenants on Celery workers (real processes) sharing the real
PostgreSQL and RabbitMQ of this machine (``CRM_KPI_TEST_POSTGRES_URL``,
``CRM_KPI_TEST_AMQP_URL``), and Redis as the broker too (``CRM_KPI_TEST_REDIS_URL``).

- 20 sandbox orgs (Salesforce and HubSpot in turn) synced by 2 worker processes (one run at a
  time on the first, two on the second), their runs
  enqueued by 2 schedulers, end with the same store and CRM state as 20 sequential runs
  (``crm-kpi sync --once --configs``), each record written to the CRM as many times;
- one worker is SIGKILLed while it is parked mid-run (a slow fault holds its request): its
  task is delivered again to the other worker, which resumes and finishes the run (on Redis
  after ``--redelivery-seconds``, the transport's visibility timeout);
- each run is enqueued once (one scheduled row each, one delivery each but the killed one's);
- a worker stopped by SIGTERM hands its runs over at their next page (both brokers).

The tests wait on conditions (a fault that fired, the control schema's rows), never on time.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sandbox_fleet import Org, fleet
from stored_rows import stored_deals
from test_unattended import CLI, _wait_until

from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sync.scale.stores import Deployment
from crm_kpi_worker.sync.scale.tasks import is_redis
from crm_kpi_worker.sync.scale.tenants import load_tenants

pytestmark = pytest.mark.slow

ORGS = 20
PARKED = 1  # org-01, a HubSpot portal: its run is parked on its meetings search
MEETINGS_SEARCH = "/crm/v3/objects/meetings/search"
SCHEDULE = "schedule:\n  every_minutes: 60\n"


class Process:
    """A ``crm-kpi`` process in a session of its own (SIGKILL reaches all of it), its output
    in a file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(  # noqa: S603 - the project's own CLI
                [CLI, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    def stop(self) -> int:
        self.kill(signal.SIGTERM)
        try:
            return self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait(timeout=30)


@contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()


def _deployment_args(folder: Path, deployment: Deployment) -> list[str]:
    assert deployment.url is not None
    return [
        "--configs", str(folder),
        "--store-url", deployment.url.get_secret_value(),
        "--schema-prefix", deployment.prefix,
    ]  # fmt: skip


def _broker_args(broker_url: str, queue: str) -> list[str]:
    return ["--broker", broker_url, "--queue", queue]


def _delete_queue(broker_url: str, queue: str) -> None:
    """Delete the test's queue and its exchange (Celery's: both named after the queue).

    kombu's Redis transport deletes only the queues its connection knows (it keeps their
    bindings in memory), hence the declaration first. On Redis, a message of the queue left
    unacknowledged (a test that failed mid-run) is taken out of kombu's unacked set too, so
    no later worker on the database puts it back."""
    from kombu import Connection, Exchange, Queue

    with Connection(broker_url) as connection:
        channel = connection.default_channel
        bound = Queue(queue, Exchange(queue), routing_key=queue)(channel)
        bound.declare()
        bound.delete()
        bound.exchange.delete()
        if is_redis(broker_url):
            client = channel.client
            for tag, raw in client.hgetall(channel.unacked_key).items():
                if json.loads(raw)[2] == queue:  # [message, exchange, routing key]
                    client.zrem(channel.unacked_index_key, tag)
                    client.hdel(channel.unacked_key, tag)


def _forget_killed_worker(redis_url: str, process: Process) -> None:
    """A SIGKILLed worker never unbinds its remote-control queue from Celery's pidbox exchange
    (kombu drops the table an hour after its last refresh): take it out now."""
    import redis

    table, deadlines = "_kombu.binding.celery.pidbox", "_kombu.binding_deadlines"
    with redis.Redis.from_url(redis_url) as client:
        for member in client.smembers(table):
            if f"crm-kpi-{process.process.pid}@".encode() in member:
                client.srem(table, member)
        if not client.exists(table):
            client.zrem(deadlines, "celery.pidbox")


def _scheduled(deployment: Deployment) -> list[dict[str, Any]]:
    engine = sa.create_engine(deployment.control_url())
    try:
        with engine.connect() as connection:
            exists = connection.execute(
                sa.text("SELECT to_regclass('scheduled_runs') IS NOT NULL")
            ).scalar_one()
            if not exists:
                return []
            rows = connection.execute(sa.text("SELECT * FROM scheduled_runs")).mappings()
            return [dict(row) for row in rows]
    finally:
        engine.dispose()


# ---- the state compared: the tenant's store, and the CRM's fields the worker writes


def _targets(config: Any) -> dict[str, str | None]:
    source = config.sources[0]
    fields = config.kpi_fields_for(source)
    assert fields.scorecard is not None
    deal_object = "Opportunity" if source.type == "salesforce" else "deals"
    return {fields.scorecard.object: fields.scorecard.external_id, deal_object: None}


def _state(org: Org, deployment: Deployment) -> dict[str, Any]:
    tenant = load_tenants(org.config.parent).get(org.tenant)
    assert tenant is not None
    config, source = tenant.config, tenant.config.sources[0]
    targets = _targets(config)
    with deployment.open_store(tenant, read_only=True) as store:
        written = {obj: store.written(source.name, obj) for obj in targets}
        stored = {
            "kpis": sorted(
                (r.scope, r.subject, r.period_kind, r.period_key, r.key, str(r.value))
                for r in store.kpis(source.name)
            ),
            "deals": [deal.model_dump() for deal in stored_deals(store, source.name)],
            "exclusions": sorted(
                (e.record_type, e.record_id, e.reason) for e in store.exclusions(source.name)
            ),
            "written": written,
            "statuses": [r["status"] for r in store.recent_runs(50, source.name)],
        }
    connector = build_connector(source, config.currency)
    crm: dict[str, dict[str, Any]] = {}
    for obj, key_field in targets.items():
        names = sorted({name for _key, name in written[obj]})
        crm[obj] = {}
        for page in connector.read_back(obj, names, key_field):
            crm[obj].update(page)
    writes = collections.Counter((w.object, w.record_id) for w in org.sandbox.app.write_log.entries)
    return {"store": stored, "crm": crm, "writes": writes}


def _sequential(
    folder: Path, deployment: Deployment, count: int = ORGS
) -> dict[str, dict[str, Any]]:
    """``count`` sequential runs, ``crm-kpi sync --once`` over the folder: each org's final
    state."""
    with fleet(folder, count) as orgs:
        ran = subprocess.run(  # noqa: S603 - the project's own CLI
            [CLI, "sync", "--once", *_deployment_args(folder, deployment)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-4000:]
        return {org.tenant: _state(org, deployment) for org in orgs}


def _same_as_sequential(got: dict[str, Any], expected: dict[str, Any], tenant: str) -> None:
    assert got["store"]["kpis"] == expected["store"]["kpis"], tenant
    assert got["store"]["deals"] == expected["store"]["deals"], tenant
    assert got["store"]["exclusions"] == expected["store"]["exclusions"], tenant
    assert got["store"]["written"] == expected["store"]["written"], tenant
    assert got["crm"] == expected["crm"], tenant
    # Every record written as many times (once) as by the sequential run: none twice.
    assert got["writes"] == expected["writes"], tenant
    assert set(expected["writes"].values()) == {1}, tenant


def test_twenty_orgs_on_two_workers_end_as_twenty_sequential_runs_despite_a_sigkill(
    tmp_path: Path, deployment: Deployment, amqp_url: str
) -> None:
    from crm_kpi_worker.sync.scale.stores import Deployment as Deploy

    baseline = Deploy(deployment.url, deployment.prefix + "seq_")
    expected = _sequential(tmp_path / "sequential", baseline)

    queue = f"crm-kpi-test-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "tenants"
    args = _deployment_args(folder, deployment)
    broker = _broker_args(amqp_url, queue)
    worker = [*args, *broker, "--slice-seconds", "600"]
    try:
        with fleet(folder, ORGS, extra=SCHEDULE) as orgs:
            parked = orgs[PARKED]
            assert parked.crm == "hubspot"
            hold = parked.sandbox.faults.add(
                FaultRule("slow", path=MEETINGS_SEARCH, times=None, delay=300)
            )
            # One run at a time on the first worker: only the parked run dies with it.
            first = Process(tmp_path / "worker-1.log", "worker", *worker, "--concurrency", "1")
            schedulers = [
                Process(tmp_path / f"scheduler-{n}.log", "scheduler", *args, *broker,
                        "--tick-seconds", "0.5")
                for n in (1, 2)
            ]  # fmt: skip
            with running(first, *schedulers):
                # The first worker alone takes the runs; the parked org's stops mid-pull.
                _wait_until(lambda: hold.fired >= 1, "the parked org's run is held", 300)
                second = Process(tmp_path / "worker-2.log", "worker", *worker, "--concurrency", "2")
                with running(second):
                    first.kill()  # SIGKILL, the whole process
                    first.process.wait(timeout=30)
                    hold.release()
                    parked.sandbox.faults.clear()

                    def all_done() -> bool:
                        rows = _scheduled(deployment)
                        return len(rows) == ORGS and all(r["state"] == "finished" for r in rows)

                    _wait_until(all_done, "every run is finished", 600)
                # (Read before they stop: the standby takes over when the active one stops.)
                scheduler_logs = [s.output for s in schedulers]
            rows = {row["tenant"]: row for row in _scheduled(deployment)}
            got = {org.tenant: _state(org, deployment) for org in orgs}
    finally:
        _delete_queue(amqp_url, queue)

    # Each due run enqueued once, by one of the two schedulers (the other stood by).
    assert sorted(rows) == [org.tenant for org in orgs]
    assert sum("this scheduler is the active one" in log for log in scheduler_logs) == 1
    assert sum(log.count("enqueued the run of") for log in scheduler_logs) == ORGS
    for tenant, row in rows.items():
        assert row["status"] == "completed", (tenant, row)
        if tenant != parked.tenant:
            assert row["deliveries"] == 1, (tenant, row)
    # The killed worker's task was delivered again and finished on the other worker.
    killed = rows[parked.tenant]
    assert killed["deliveries"] == 2, killed
    assert killed["worker"].endswith(f":{second.process.pid}"), killed
    assert got[parked.tenant]["store"]["statuses"] == ["completed", "interrupted"]
    for org in orgs:
        if org.tenant != parked.tenant:
            assert got[org.tenant]["store"]["statuses"] == ["completed"], org.tenant
        _same_as_sequential(got[org.tenant], expected[org.tenant], org.tenant)


@pytest.mark.parametrize("broker", ["amqp", "redis"])
def test_a_stopped_worker_hands_its_runs_over_at_their_next_page(
    tmp_path: Path, deployment: Deployment, broker: str, request: pytest.FixtureRequest
) -> None:
    """SIGTERM: the worker's runs stop at their next page, record themselves interrupted and
    go back to the queue; the worker exits at once; another worker finishes them."""
    broker_url = request.getfixturevalue(f"{broker}_url")  # skips without that broker
    queue = f"crm-kpi-test-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "tenants"
    args = [*_deployment_args(folder, deployment), *_broker_args(broker_url, queue)]
    try:
        with fleet(folder, 2, extra=SCHEDULE) as orgs:
            hold = orgs[1].sandbox.faults.add(
                FaultRule("slow", path=MEETINGS_SEARCH, times=None, delay=300)
            )
            first = Process(tmp_path / "worker-1.log", "worker", *args, "--concurrency", "2")
            scheduler = Process(
                tmp_path / "scheduler.log", "scheduler", *args, "--tick-seconds", "0.5"
            )
            with running(scheduler):
                _wait_until(lambda: hold.fired >= 1, "a run is held", 300)
                first.kill(signal.SIGTERM)
                hold.release()  # the held page comes back: the run stops after it
                parked = orgs[1].sandbox.faults
                parked.clear()
                assert first.process.wait(timeout=60) == 0
                rows = {r["tenant"]: r for r in _scheduled(deployment)}
                second = Process(tmp_path / "worker-2.log", "worker", *args)
                with running(second):
                    _wait_until(
                        lambda: all(r["state"] == "finished" for r in _scheduled(deployment)),
                        "every run is finished",
                        300,
                    )
            done = {r["tenant"]: r for r in _scheduled(deployment)}
    finally:
        _delete_queue(broker_url, queue)

    held = rows[orgs[1].tenant]
    assert (held["state"], held["status"], held["slices"]) == ("requeued", "interrupted", 1)
    assert held["detail"] == "the worker is shutting down; the run goes on in a new task"
    for row in done.values():
        assert (row["state"], row["status"]) == ("finished", "completed")
    finished = done[orgs[1].tenant]
    assert finished["worker"].endswith(f":{second.process.pid}")
    assert finished["deliveries"] == 2


def test_on_redis_a_killed_workers_task_comes_back_after_the_redelivery_time(
    tmp_path: Path, deployment: Deployment, redis_url: str
) -> None:
    """Redis sees no worker die: kombu puts a message back on its queue once it has been
    unacknowledged for the visibility timeout, here ``--redelivery-seconds 15`` (an hour by
    kombu's default; each task ends well inside it with a 10 s slice). A worker SIGKILLed
    while its run is parked mid-pull: the task goes to a second worker, which resumes and
    finishes the run, with the same final state as sequential runs."""
    expected = _sequential(
        tmp_path / "sequential", Deployment(deployment.url, deployment.prefix + "seq_"), 2
    )

    queue = f"crm-kpi-test-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "tenants"
    args = [*_deployment_args(folder, deployment), *_broker_args(redis_url, queue)]
    worker = [*args, "--slice-seconds", "10", "--redelivery-seconds", "15"]
    first: Process | None = None
    try:
        with fleet(folder, 2, extra=SCHEDULE) as orgs:
            parked = orgs[PARKED]
            hold = parked.sandbox.faults.add(
                FaultRule("slow", path=MEETINGS_SEARCH, times=None, delay=300)
            )
            first = Process(tmp_path / "worker-1.log", "worker", *worker, "--concurrency", "1")
            scheduler = Process(
                tmp_path / "scheduler.log", "scheduler", *args, "--tick-seconds", "0.5"
            )
            with running(first, scheduler):
                _wait_until(lambda: hold.fired >= 1, "the parked org's run is held", 300)
                first.kill()  # SIGKILL, the whole process: its message stays unacknowledged
                first.process.wait(timeout=30)
                hold.release()
                parked.sandbox.faults.clear()
                second = Process(tmp_path / "worker-2.log", "worker", *worker, "--concurrency", "2")
                with running(second):

                    def all_done() -> bool:
                        rows = _scheduled(deployment)
                        return len(rows) == 2 and all(r["state"] == "finished" for r in rows)

                    # 15 s, the next sweep (10 s) and the resumed run; an hour without the option.
                    _wait_until(all_done, "the killed worker's run is finished elsewhere", 300)
            rows = {row["tenant"]: row for row in _scheduled(deployment)}
            got = {org.tenant: _state(org, deployment) for org in orgs}
    finally:
        _delete_queue(redis_url, queue)
        if first is not None:
            _forget_killed_worker(redis_url, first)

    for tenant, row in rows.items():
        assert (row["state"], row["status"]) == ("finished", "completed"), (tenant, row)
    killed = rows[parked.tenant]
    assert killed["deliveries"] == 2, killed
    assert killed["worker"].endswith(f":{second.process.pid}"), killed
    assert got[parked.tenant]["store"]["statuses"] == ["completed", "interrupted"]
    for org in orgs:
        _same_as_sequential(got[org.tenant], expected[org.tenant], org.tenant)
