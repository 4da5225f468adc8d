"""The scheduler of a deployment (sync/scale/scheduler.py): due times from the schedule alone,
each due run enqueued once, one active scheduler of two (real processes, the real broker)."""

from __future__ import annotations

import datetime as dt
import re
import signal
import uuid
from pathlib import Path

import pytest
from test_scale_workers import Process, _broker_args, _delete_queue, _deployment_args, _scheduled
from test_unattended import _wait_until

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sync.config_loader import load_config_text
from crm_kpi_worker.sync.scale.scheduler import due_time
from crm_kpi_worker.sync.scale.stores import Deployment

UTC = dt.UTC


def _config(schedule: str, folder: Path | None = None, name: str = "acme") -> str:
    text = path_of("demo-hubspot.yaml").read_text(encoding="utf-8")
    text = text.replace("store:\n  url: sqlite:///crm-kpi-demo-hubspot.sqlite\n", "")
    text = text.replace("base_url: https://127.0.0.1:0", "base_url: https://127.0.0.1:9")
    text += f"schedule:\n{schedule}"
    if folder is not None:
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return text


def _due(schedule: str, now: dt.datetime, latest: dt.datetime | None) -> dt.datetime | None:
    return due_time(load_config_text(_config(schedule)), now, latest)


def test_interval_due_times_sit_on_a_grid_from_the_epoch() -> None:
    now = dt.datetime(2026, 12, 5, 10, 17, 42, tzinfo=UTC)
    every = "  every_minutes: 15\n"

    assert _due(every, now, None) == dt.datetime(2026, 12, 5, 10, 15, tzinfo=UTC)
    assert _due(every, now, dt.datetime(2026, 12, 5, 10, 15, tzinfo=UTC)) is None
    # Missed times are coalesced into the latest.
    assert _due(every, now, dt.datetime(2026, 12, 5, 9, 0, tzinfo=UTC)) == dt.datetime(
        2026, 12, 5, 10, 15, tzinfo=UTC
    )


def test_cron_due_times_are_its_fire_times_in_its_time_zone() -> None:
    weekdays = "  cron: '0 6 * * 1-5'\n  timezone: Europe/Paris\n"
    saturday = dt.datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    friday_6_paris = dt.datetime(2026, 12, 4, 5, 0, tzinfo=UTC)

    assert _due(weekdays, saturday, None) == friday_6_paris  # the run at start
    assert _due(weekdays, saturday, friday_6_paris) is None
    monday = dt.datetime(2026, 12, 7, 5, 0, 1, tzinfo=UTC)
    assert _due(weekdays, monday, friday_6_paris) == dt.datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    yearly = "  cron: '0 0 1 1 *'\n"  # its last fire time is months back
    assert _due(yearly, saturday, None) == dt.datetime(2025, 12, 31, 23, 0, tzinfo=UTC)


@pytest.mark.slow
def test_two_schedulers_enqueue_each_due_run_once_and_the_standby_takes_over(
    tmp_path: Path, deployment: Deployment, amqp_url: str
) -> None:
    from kombu import Connection

    folder = tmp_path / "tenants"
    folder.mkdir()
    for name in ("acme", "globex"):
        _config("  every_seconds: 1\n", folder, name)
    queue = f"crm-kpi-test-{uuid.uuid4().hex[:8]}"
    args = [*_deployment_args(folder, deployment), *_broker_args(amqp_url, queue)]

    def slots(tenant: str) -> int:
        return sum(1 for row in _scheduled(deployment) if row["tenant"] == tenant)

    schedulers = [
        Process(tmp_path / f"scheduler-{n}.log", "scheduler", *args, "--tick-seconds", "0.2")
        for n in (1, 2)
    ]
    try:
        # No worker: the first due run of each source stays queued, the next ones are skipped.
        _wait_until(lambda: min(slots("acme"), slots("globex")) >= 4, "4 due times each", 120)
        active = [s for s in schedulers if "this scheduler is the active one" in s.output]
        assert len(active) == 1
        standby = next(s for s in schedulers if s is not active[0])
        active[0].kill(signal.SIGKILL)
        active[0].process.wait(timeout=30)
        before = slots("acme")
        _wait_until(lambda: "this scheduler is the active one" in standby.output, "a takeover", 60)
        _wait_until(lambda: slots("acme") >= before + 2, "due times after the takeover", 60)
        for scheduler in schedulers:
            scheduler.stop()
        rows = _scheduled(deployment)
        with Connection(amqp_url) as connection:
            _, messages, _ = connection.default_channel.queue_declare(queue, passive=True)
    finally:
        for scheduler in schedulers:
            scheduler.stop()
        _delete_queue(amqp_url, queue)

    enqueued = [r for r in rows if r["state"] == "enqueued"]
    assert sorted(r["tenant"] for r in enqueued) == ["acme", "globex"]
    assert messages == len(enqueued) == 2  # one message per enqueued run, none twice
    skipped = [r for r in rows if r["state"] == "skipped"]
    assert {r["detail"] for r in skipped} == {"the source's previous run was not done"}
    for tenant in ("acme", "globex"):
        due = sorted(r["due_at"] for r in rows if r["tenant"] == tenant)
        assert len(due) == len(set(due))
        assert all(d.microsecond == 0 for d in due)  # on the one-second grid
    lines = "\n".join(s.output for s in schedulers)
    assert len(re.findall(r"enqueued the run of", lines)) == 2
