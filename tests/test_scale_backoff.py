"""Refused logins in a deployment (sync/scale): the embedded service's back-off, shared by every
worker and the scheduler through the control schema (``auth_backoff``), against the real
PostgreSQL of ``CRM_KPI_TEST_POSTGRES_URL``. Time is an injected clock: no test sleeps."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sandbox_fleet import fleet

from crm_kpi_worker.sync.backoff import BackoffPolicy
from crm_kpi_worker.sync.scale.control import MIGRATIONS, ControlStore, RunKey
from crm_kpi_worker.sync.scale.runner import SourceRunner
from crm_kpi_worker.sync.scale.scheduler import Scheduler
from crm_kpi_worker.sync.scale.stores import Deployment
from crm_kpi_worker.sync.scale.tenants import TenantFiles

MIN = dt.timedelta(minutes=1)
T0 = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)
POLICY = BackoffPolicy()


@pytest.fixture
def control(deployment: Deployment) -> Iterator[ControlStore]:
    with ControlStore.open(deployment) as store:
        yield store


def test_refusals_are_counted_per_source_with_the_policy_and_a_login_ends_them(
    control: ControlStore,
) -> None:
    first = control.refused("acme", "sandbox", POLICY, T0)
    second = control.refused("acme", "sandbox", POLICY, T0 + 5 * MIN)
    other = control.refused("globex", "sandbox", POLICY, T0)

    assert (first.failures, first.not_before) == (1, T0 + 5 * MIN)
    assert (second.failures, second.not_before) == (2, T0 + 15 * MIN)
    assert (other.failures, other.not_before) == (1, T0 + 5 * MIN)
    assert control.backoffs() == {("acme", "sandbox"): second, ("globex", "sandbox"): other}
    assert second.waiting(T0 + 14 * MIN) and not second.waiting(T0 + 15 * MIN)
    assert second.describe() == (
        "login refused 2 time(s) in a row; next try at 2026-12-05 08:15:00 UTC (backing off 10 min)"
    )

    control.login_accepted("acme", "sandbox")
    control.login_accepted("initech", "sandbox")  # none: nothing to end

    assert control.backoffs() == {("globex", "sandbox"): other}
    again = control.refused("acme", "sandbox", POLICY, T0 + 60 * MIN)
    assert (again.failures, again.not_before) == (1, T0 + 65 * MIN)  # from the start


def test_a_control_schema_of_the_first_revision_is_migrated_with_its_runs_kept(
    deployment: Deployment,
) -> None:
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(deployment.control_url())
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{deployment.control_schema}"'))
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "c0001")
            connection.execute(
                sa.text(
                    "INSERT INTO scheduled_runs (tenant, source, due_at, state, enqueued_at)"
                    " VALUES ('acme', 'sandbox', :due, 'finished', :due)"
                ),
                {"due": T0},
            )
    finally:
        engine.dispose()

    with ControlStore.open(deployment) as control:
        assert [r["tenant"] for r in control.scheduled()] == ["acme"]
        assert control.backoffs() == {}
        control.refused("acme", "sandbox", POLICY, T0)
        assert control.backoffs()[("acme", "sandbox")].failures == 1


@pytest.mark.slow  # a sandbox org and six runs: about 5 s
def test_a_refused_source_is_enqueued_again_only_after_its_back_off_and_a_success_resets_it(
    tmp_path: Path, deployment: Deployment, control: ControlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A real Salesforce sandbox refuses the tenant's wrong password (its secret, from the
    tenant's environment); the scheduler ticks every minute of an every-minute schedule and
    each enqueued run is run at once, as a worker would."""
    folder = tmp_path / "tenants"
    password = "CRM_KPI_ORG_00__CRM_KPI_SF_PASSWORD"
    environ = {password: "not-the-password-42"}
    now = [T0]
    enqueued: list[RunKey] = []
    with fleet(folder, 1, extra="schedule:\n  every_minutes: 1\n"):
        files = TenantFiles(folder, environ=environ)
        scheduler = Scheduler(control, files, enqueued.append, clock=lambda: now[0])
        runner = SourceRunner(deployment, files, control, clock=lambda: now[0])

        def minutes(first: int, last: int) -> list[int]:
            """Tick each minute of [first, last], running what is enqueued: the minutes a
            run was enqueued at."""
            at = []
            for minute in range(first, last + 1):
                now[0] = T0 + minute * MIN
                for key in scheduler.tick():
                    assert key.due_at == now[0]  # held-back due times coalesced into this one
                    at.append(minute)
                    assert runner.run(key).action == "done"
            return at

        with caplog.at_level(logging.INFO, logger="crm_kpi_worker"):
            # Refused at 0, 5 and 15: waits of 5, then 10, then 20 minutes.
            assert minutes(0, 20) == [0, 5, 15]
            refusals = control.backoffs()[("org-00", "sandbox")]
            assert (refusals.failures, refusals.not_before) == (3, T0 + 35 * MIN)
            del environ[password]  # the credentials fixed: the demo password again
            assert minutes(21, 34) == []
            assert minutes(35, 37) == [35, 36, 37]  # the next try works: every minute again
        assert control.backoffs() == {}

    runs = sorted(
        (r for r in control.scheduled() if r["tenant"] == "org-00"), key=lambda r: r["due_at"]
    )
    assert [r["status"] for r in runs] == ["crm_auth"] * 3 + ["completed"] * 3
    assert [(r["due_at"] - T0) / MIN for r in runs] == [0, 5, 15, 35, 36, 37]
    held = [r.getMessage() for r in caplog.records if "not enqueued" in r.getMessage()]
    assert held == [  # one line per back-off step, with when the next try is
        "not enqueued: org-00/sandbox, login refused 1 time(s) in a row; next try at"
        " 2026-12-05 08:05:00 UTC (backing off 5 min)",
        "not enqueued: org-00/sandbox, login refused 2 time(s) in a row; next try at"
        " 2026-12-05 08:15:00 UTC (backing off 10 min)",
        "not enqueued: org-00/sandbox, login refused 3 time(s) in a row; next try at"
        " 2026-12-05 08:35:00 UTC (backing off 20 min)",
    ]
    failed = [r.getMessage() for r in caplog.records if "failed (crm_auth)" in r.getMessage()]
    assert len(failed) == 3 and "login refused 3 time(s) in a row" in failed[2]
    assert "not-the-password-42" not in caplog.text
