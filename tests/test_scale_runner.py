"""A deployment's run of one source when the PostgreSQL server has no connection slot left: the
task is tried again later, as when the source's run lock is held, never recorded as a failed
run (against the real PostgreSQL of ``CRM_KPI_TEST_POSTGRES_URL`` for the control schema)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sandbox_fleet import fleet

from crm_kpi_worker.sync.scale.control import ControlStore
from crm_kpi_worker.sync.scale.runner import SourceRunner, server_full
from crm_kpi_worker.sync.scale.scheduler import Scheduler
from crm_kpi_worker.sync.scale.stores import Deployment
from crm_kpi_worker.sync.scale.tenants import TenantFiles
from crm_kpi_worker.sync.store import StoreError

T0 = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)


class _ServerError(Exception):
    """What the driver raises, with PostgreSQL's SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _wrapped(message: str, sqlstate: str | None) -> Exception:
    """The driver's error as the store raises it: an SQLAlchemy error, then the store's."""
    driver = _ServerError(message, sqlstate)
    try:
        try:
            raise sa.exc.OperationalError("connect", {}, driver)
        except sa.exc.OperationalError as alchemy:
            raise StoreError(f"the state store failed: {message}") from alchemy
    except StoreError as store:
        return store


def test_a_full_server_is_told_apart_from_other_store_errors() -> None:
    assert server_full(_wrapped("FATAL: sorry, too many clients already", "53300"))
    # The server's text alone (a connection refused before any SQLSTATE is known).
    assert server_full(_wrapped("FATAL:  sorry, too many clients already", None))
    assert server_full(_wrapped("FATAL: remaining connection slots are reserved", "53300"))
    assert server_full(_wrapped("FATAL: password authentication failed", "28P01")) is None
    assert server_full(ValueError("too many rows")) is None


@pytest.fixture
def control(deployment: Deployment) -> Iterator[ControlStore]:
    with ControlStore.open(deployment) as store:
        yield store


class _FullServer(SourceRunner):
    """A runner whose tenant stores cannot connect: the server has no slot left."""

    def store(self, tenant: Any) -> Any:
        raise _wrapped("connection failed: FATAL:  sorry, too many clients already", "53300")


def test_a_run_the_server_has_no_connection_for_is_tried_again(
    tmp_path: Path, deployment: Deployment, control: ControlStore
) -> None:
    folder = tmp_path / "tenants"
    with fleet(folder, 1, extra="schedule:\n  every_minutes: 1\n"):
        files = TenantFiles(folder)
        (key,) = Scheduler(control, files, lambda _key: None, clock=lambda: T0).tick()
        runner = _FullServer(deployment, files, control, clock=lambda: T0)
        outcome = runner.run(key)
        assert outcome.action == "retry"
        assert "no connection left" in outcome.detail
        assert _row(control, key) == ("waiting", None)
        # Once the server has room, the same task runs.
        assert SourceRunner(deployment, files, control, clock=lambda: T0).run(key).action == "done"
        assert _row(control, key) == ("finished", "completed")
        # Its retries used up, a delivery is dropped (the next scheduled run covers it), still
        # not recorded as a failed run.
        (later,) = Scheduler(control, files, lambda _key: None, clock=lambda: T0 + MIN).tick()
        assert runner.run(later, lock_retries_left=0).action == "drop"
        assert _row(control, later) == ("dropped", None)


def _row(control: ControlStore, key: Any) -> tuple[str, str | None]:
    (row,) = [
        r
        for r in control.scheduled()
        if (r["tenant"], r["source"], r["due_at"]) == (key.tenant, key.source, key.due_at)
    ]
    return row["state"], row["status"]
