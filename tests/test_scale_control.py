"""The control schema's scheduled runs (sync/scale/control.py): a due run is recorded once,
and a delivery claims its run even when it arrives before the scheduler's row is committed."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest

from crm_kpi_worker.sync.scale.control import ControlStore, RunKey
from crm_kpi_worker.sync.scale.stores import Deployment

KEY = RunKey("acme", "sandbox", dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC))


@pytest.fixture
def control(deployment: Deployment) -> Iterator[ControlStore]:
    with ControlStore.open(deployment) as store:
        yield store


def _row(control: ControlStore) -> dict[str, object]:
    (row,) = [r for r in control.scheduled() if r["tenant"] == KEY.tenant]
    return row


def test_a_due_run_is_recorded_and_published_once(control: ControlStore) -> None:
    published: list[RunKey] = []

    assert control.enqueue(KEY, lambda: published.append(KEY)) is True
    assert control.enqueue(KEY, lambda: published.append(KEY)) is False  # another scheduler

    assert published == [KEY]
    assert _row(control)["state"] == "enqueued"


def test_a_failed_publish_records_nothing(control: ControlStore) -> None:
    def broker_down() -> None:
        raise ConnectionError("the broker is down")

    with pytest.raises(ConnectionError):
        control.enqueue(KEY, broker_down)

    assert control.scheduled() == []  # the next tick tries again
    assert control.enqueue(KEY, lambda: None) is True


def test_a_delivery_before_the_schedulers_commit_waits_for_its_row(
    control: ControlStore,
) -> None:
    claimed: list[str] = []
    claimer = threading.Thread(target=lambda: claimed.append(control.claim(KEY, "w:1")))

    def publish() -> None:  # the task is delivered at once, the row not yet committed
        claimer.start()
        claimer.join(timeout=0.5)
        assert claimer.is_alive()  # waiting on the scheduler's row

    control.enqueue(KEY, publish)
    claimer.join(timeout=30)

    assert claimed == ["go"]
    row = _row(control)
    assert (row["state"], row["deliveries"], row["worker"]) == ("running", 1, "w:1")


def test_a_delivery_of_a_done_run_is_dropped_and_a_run_enqueued_by_hand_is_recorded(
    control: ControlStore,
) -> None:
    assert control.claim(KEY, "w:1") == "go"  # no scheduler: its row is made here
    control.mark(KEY, "finished", status="completed", run_id=3)

    assert control.claim(KEY, "w:2") == "done"
    row = _row(control)
    assert (row["state"], row["status"], row["deliveries"], row["worker"]) == (
        "finished",
        "completed",
        1,
        "w:1",
    )
