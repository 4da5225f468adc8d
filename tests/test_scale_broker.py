"""The broker's transport options (sync/scale/tasks.py): on Redis, the visibility timeout
after which a dead worker's task is delivered again comes from the time slice or
``--redelivery-seconds``; on RabbitMQ, publisher confirms, and the option is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from crm_kpi_worker.sync.cli import main
from crm_kpi_worker.sync.scale import tasks
from crm_kpi_worker.sync.scale.runner import SourceRunner

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/15"


@pytest.fixture(autouse=True)
def _restore_app() -> Iterator[None]:
    """configure() sets the process's Celery application: put it back after each test."""
    conf = tasks.app.conf
    saved = (conf.broker_url, conf.task_default_queue, conf.broker_transport_options)
    runner = tasks._runner
    yield
    conf.broker_url, conf.task_default_queue, conf.broker_transport_options = saved
    tasks._runner = runner


def _transport_options() -> dict[str, object]:
    """What kombu's connection (and so its channel) gets: no connection is opened."""
    with tasks.app.connection_for_write() as connection:
        return dict(connection.transport_options)


def _runner(slice_seconds: float) -> SourceRunner:
    return SourceRunner(None, None, None, slice_seconds=slice_seconds)  # type: ignore[arg-type]


def test_redis_delivers_a_dead_workers_task_again_after_twice_the_slice_plus_5_minutes() -> None:
    tasks.configure(REDIS, "runs")  # the scheduler's call: the default slice (300 s)
    assert _transport_options() == {
        "visibility_timeout": 900,
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    }

    tasks.configure(REDIS, "runs", _runner(60))  # a worker's: its slice
    assert _transport_options()["visibility_timeout"] == 420

    tasks.configure(REDIS, "runs", _runner(60), redelivery=45)
    assert _transport_options()["visibility_timeout"] == 45
    assert tasks.app.conf.broker_url == REDIS
    assert tasks.app.conf.task_default_queue == "runs"


@pytest.mark.parametrize(
    "url",
    [
        "rediss://127.0.0.1:6380/0",
        "redis+socket:///run/redis.sock",
        "sentinel://h1:26379;sentinel://h2:26379",
    ],
)
def test_every_redis_transport_gets_the_visibility_timeout(url: str) -> None:
    assert tasks.is_redis(url)
    assert tasks.broker_transport_options(url)["visibility_timeout"] == 900


def test_rabbitmq_keeps_publisher_confirms_and_no_visibility_timeout() -> None:
    tasks.configure(AMQP, "runs", _runner(60))
    assert _transport_options() == {"confirm_publish": True}
    assert not tasks.is_redis("pyamqp://127.0.0.1//")
    with pytest.raises(ValueError, match="Redis broker"):
        tasks.configure(AMQP, "runs", redelivery=60)


def test_the_worker_refuses_redelivery_seconds_on_rabbitmq(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(
        main,
        [
            "worker",
            "--configs", str(tmp_path),
            "--store-url", "postgresql://nobody@127.0.0.1:9/none",
            "--broker", AMQP,
            "--redelivery-seconds", "60",
        ],
    )  # fmt: skip

    assert outcome.exit_code == 2, outcome.output
    assert "--redelivery-seconds is for a Redis broker (redis://...)" in outcome.output
    assert "RabbitMQ delivers a dead worker's task again as soon as its connection drops" in (
        outcome.output
    )
    assert "guest:guest" not in outcome.output


def test_kombus_redis_channel_reads_them(redis_url: str) -> None:
    tasks.configure(redis_url, "runs", _runner(60), redelivery=45)
    with tasks.app.connection_for_write() as connection:
        channel = connection.default_channel
        assert channel.qos.visibility_timeout == 45  # what its sweep (restore_visible) reads
        assert channel.unacked_restore_throttle == 1
