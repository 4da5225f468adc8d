"""The deployment's control schema (``<prefix>control`` in the shared PostgreSQL): what every
worker and scheduler share besides the tenants' own stores.

- ``scheduled_runs``: each due run once (its key: tenant, source, due time), and what became
  of it (:class:`ScheduledRuns`);
- ``org_usage``: each org's API usage, counted across workers (:class:`OrgUsage`, used by
  :mod:`.limits`);
- ``rate_pacing``: the next free call slot of each rate-limited bucket (:meth:`next_slot`);
- ``auth_backoff``: the sources whose logins the CRM refused, how many times in a row and
  when the next attempt may be made (:meth:`refused`, :meth:`backoffs`), the
  :class:`~crm_kpi_worker.sync.backoff.BackoffPolicy` of the embedded service shared by every
  worker and the scheduler;
- the scheduler's leadership: a session advisory lock (:meth:`ControlStore.try_lead`).

Migrations: Alembic scripts of their own (``sync/scale/migrations``), run on open under a
transaction advisory lock, as the tenants' stores do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from crm_kpi_worker.sync.backoff import BackoffPolicy, duration
from crm_kpi_worker.sync.scale.stores import Deployment, sql_name
from crm_kpi_worker.sync.store import StoreError
from crm_kpi_worker.sync.store.engine import connect_engine, driver_reason, redact

__all__ = [
    "DONE_STATES",
    "AuthRefusals",
    "ControlStore",
    "RunKey",
    "worker_name",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x63726D5F63746C  # "crm_ctl"
INSTANT = DateTime(timezone=True)

metadata = MetaData()
scheduled_runs = Table(
    "scheduled_runs",
    metadata,
    Column("tenant", String, primary_key=True),
    Column("source", String, primary_key=True),
    Column("due_at", INSTANT, primary_key=True),
    Column("state", String, nullable=False),
    Column("enqueued_at", INSTANT, nullable=False),
    Column("started_at", INSTANT),
    Column("finished_at", INSTANT),
    Column("worker", String),
    Column("deliveries", Integer, nullable=False),
    Column("slices", Integer, nullable=False),
    Column("status", String),
    Column("run_id", Integer),
    Column("detail", Text),
)
org_usage = Table(
    "org_usage",
    metadata,
    Column("org", String, primary_key=True),
    Column("used", BigInteger),
    Column("daily_limit", BigInteger),
    Column("noted_at", INSTANT),
    Column("calls_since", BigInteger, nullable=False),
)
rate_pacing = Table(
    "rate_pacing",
    metadata,
    Column("bucket", String, primary_key=True),
    Column("next_at", INSTANT, nullable=False),
)
auth_backoff = Table(
    "auth_backoff",
    metadata,
    Column("tenant", String, primary_key=True),
    Column("source", String, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("refused_at", INSTANT, nullable=False),
    Column("not_before", INSTANT, nullable=False),
)

#: States of a scheduled run that no task will work on again.
DONE_STATES = ("finished", "skipped", "dropped")


def worker_name() -> str:
    """``host:pid``: which worker holds a run (the status page, the logs)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RunKey:
    """One due run of one tenant's source: the task's arguments and the row's key."""

    tenant: str
    source: str
    due_at: dt.datetime

    def where(self) -> Any:
        return and_(
            scheduled_runs.c.tenant == self.tenant,
            scheduled_runs.c.source == self.source,
            scheduled_runs.c.due_at == self.due_at,
        )

    def as_task(self) -> dict[str, str]:
        return {"tenant": self.tenant, "source": self.source, "due_at": self.due_at.isoformat()}

    def __str__(self) -> str:
        return f"{self.tenant}/{self.source} due {self.due_at.isoformat()}"


@dataclass(frozen=True)
class AuthRefusals:
    """A source whose logins the CRM refused ``failures`` times in a row, the last one at
    ``refused_at``: no run of it is enqueued before ``not_before``."""

    tenant: str
    source: str
    failures: int
    refused_at: dt.datetime
    not_before: dt.datetime

    def waiting(self, now: dt.datetime) -> bool:
        return now < self.not_before

    def describe(self) -> str:
        """``login refused 2 time(s) in a row; next try at 2026-12-05 08:15:00 UTC (backing
        off 10 min)``: no secret (the CRM's answer is the scheduled run's detail)."""
        wait = duration(self.not_before - self.refused_at)
        return (
            f"login refused {self.failures} time(s) in a row; next try at"
            f" {self.not_before.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC (backing off {wait})"
        )


class ControlStore:
    """The control schema of a deployment. Open with :meth:`open`; thread-safe."""

    def __init__(self, engine: Engine, deployment: Deployment) -> None:
        self.engine = engine
        self.deployment = deployment

    @classmethod
    def open(cls, deployment: Deployment) -> ControlStore:
        """Connect, create the control schema when missing, and migrate it."""
        if deployment.url is None:
            raise StoreError("the workers and the scheduler need --store-url (PostgreSQL)")
        url = deployment.control_url()
        engine = connect_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                schema = sql_name(deployment.control_schema)
                connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
                _migrate(connection)
        except DBAPIError as exc:
            engine.dispose()
            raise StoreError(
                f"cannot open the control schema of {redact(url)}: {driver_reason(exc)}"
            ) from exc
        return cls(engine, deployment)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ControlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    # ---- scheduled runs

    def latest_due(self, tenant: str, source: str) -> dt.datetime | None:
        with self.engine.connect() as connection:
            found: dt.datetime | None = connection.execute(
                select(func.max(scheduled_runs.c.due_at)).where(
                    scheduled_runs.c.tenant == tenant, scheduled_runs.c.source == source
                )
            ).scalar_one()
        return _utc(found)

    def pending(self, tenant: str, source: str) -> bool:
        """Whether a run of the source is enqueued or running (not done)."""
        with self.engine.connect() as connection:
            found = connection.execute(
                select(scheduled_runs.c.due_at)
                .where(
                    scheduled_runs.c.tenant == tenant,
                    scheduled_runs.c.source == source,
                    scheduled_runs.c.state.not_in(DONE_STATES),
                )
                .limit(1)
            ).first()
        return found is not None

    def enqueue(self, key: RunKey, publish: Callable[[], None], *, skip: str | None = None) -> bool:
        """Record the due run and publish its task, once: False when a row for the key is
        there already (another scheduler, or an earlier tick, did it). ``skip``: record it
        ``skipped`` with that reason, publishing nothing. The row is committed only once the
        broker confirmed the message (a failed publish leaves no row: the next tick tries
        again)."""
        with self._write() as connection:
            inserted = connection.execute(
                insert(scheduled_runs)
                .values(
                    tenant=key.tenant,
                    source=key.source,
                    due_at=key.due_at,
                    state="skipped" if skip else "enqueued",
                    enqueued_at=func.now(),
                    deliveries=0,
                    slices=0,
                    detail=skip,
                    finished_at=func.now() if skip else None,
                )
                .on_conflict_do_nothing()
                .returning(scheduled_runs.c.due_at)
            ).first()
            if inserted is not None and skip is None:
                publish()
        return inserted is not None

    def claim(self, key: RunKey, worker: str) -> str:
        """A task's delivery takes its run: ``"go"``, or ``"done"`` when the run is done
        already (a duplicate delivery). An upsert: a delivery that arrives before the
        scheduler's transaction has committed the row waits for it (the primary key's
        conflict), and a run enqueued by hand (no scheduler) gets its row here."""
        runs = scheduled_runs.c
        stmt = insert(scheduled_runs).values(
            tenant=key.tenant,
            source=key.source,
            due_at=key.due_at,
            state="running",
            enqueued_at=func.now(),
            started_at=func.now(),
            worker=worker,
            deliveries=1,
            slices=0,
        )
        taken = stmt.on_conflict_do_update(
            index_elements=["tenant", "source", "due_at"],
            set_={
                "state": "running",
                "worker": worker,
                "started_at": func.coalesce(runs.started_at, func.now()),
                "deliveries": runs.deliveries + 1,
            },
            where=runs.state.not_in(DONE_STATES),
        ).returning(runs.state)
        with self._write() as connection:
            row = connection.execute(taken).first()
        return "go" if row is not None else "done"

    def mark(self, key: RunKey, state: str, *, next_slice: bool = False, **values: Any) -> None:
        """Set the run's state (and ``status``, ``run_id``, ``detail``); ``next_slice``: the
        run goes on in a new task (its slices are counted)."""
        if state in DONE_STATES:
            values["finished_at"] = func.now()
        if next_slice:
            values["slices"] = scheduled_runs.c.slices + 1
        with self._write() as connection:
            connection.execute(
                update(scheduled_runs).where(key.where()).values(state=state, **values)
            )

    def scheduled(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest scheduled runs, newest first (the status page)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(scheduled_runs)
                .order_by(scheduled_runs.c.enqueued_at.desc(), scheduled_runs.c.due_at.desc())
                .limit(limit)
            ).mappings()
            return [dict(row) for row in rows]

    def counts(self) -> list[tuple[str, str, str, str | None, int]]:
        """(tenant, source, state, status, runs) over every scheduled run (the metrics)."""
        runs = scheduled_runs.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(runs.tenant, runs.source, runs.state, runs.status, func.count())
                .group_by(runs.tenant, runs.source, runs.state, runs.status)
                .order_by(runs.tenant, runs.source, runs.state)
            ).all()
        return [(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    # ---- org usage (the shared API budget)

    def usage(self, org: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(org_usage).where(org_usage.c.org == org)).first()
        return None if row is None else dict(row._mapping)

    def note_usage(self, org: str, used: int, limit: int, *, at: dt.datetime | None = None) -> None:
        """The CRM said the org's usage: the calls counted since that it already includes are
        taken off (``at``: a remembered usage, applied only over an older one)."""
        stmt = insert(org_usage).values(
            org=org, used=used, daily_limit=limit, noted_at=at or func.now(), calls_since=0
        )
        excluded = stmt.excluded
        counted = org_usage.c.calls_since - func.greatest(0, excluded.used - org_usage.c.used)
        stmt = stmt.on_conflict_do_update(
            index_elements=["org"],
            set_={
                "used": excluded.used,
                "daily_limit": excluded.daily_limit,
                "noted_at": excluded.noted_at,
                "calls_since": func.greatest(0, func.coalesce(counted, 0)),
            },
            where=(org_usage.c.noted_at.is_(None) | (org_usage.c.noted_at < excluded.noted_at))
            if at is not None
            else None,
        )
        with self._write() as connection:
            connection.execute(stmt)

    def take_call(self, org: str, share: float, trusted_for: dt.timedelta) -> tuple[bool, Any]:
        """Count one call of the org unless it would pass ``share`` of its daily limit (as
        noted less than ``trusted_for`` ago); (allowed, the row as it stands)."""
        fresh = org_usage.c.noted_at > func.now() - trusted_for
        ceiling = func.floor(share * org_usage.c.daily_limit)
        room = org_usage.c.used + org_usage.c.calls_since + 1 <= ceiling
        counted = (
            insert(org_usage)
            .values(org=org, calls_since=1)
            .on_conflict_do_update(
                index_elements=["org"],
                set_={"calls_since": org_usage.c.calls_since + 1},
                where=(org_usage.c.daily_limit.is_(None) | ~fresh | room),
            )
            .returning(org_usage)
        )
        with self._write() as connection:
            row = connection.execute(counted).first()
            if row is not None:
                return True, row
            return False, connection.execute(
                select(org_usage).where(org_usage.c.org == org)
            ).first()

    # ---- rate pacing

    def next_slot(self, bucket: str, interval: float) -> tuple[dt.datetime, float]:
        """Take the bucket's next call slot, ``interval`` seconds after the one before (the
        database's clock, shared by every worker): its instant, and the seconds to wait for
        it."""
        gap = dt.timedelta(seconds=interval)
        now = func.clock_timestamp()
        taken = (
            insert(rate_pacing)
            .values(bucket=bucket, next_at=now + gap)
            .on_conflict_do_update(
                index_elements=["bucket"],
                set_={"next_at": func.greatest(rate_pacing.c.next_at, now) + gap},
            )
            .returning(
                rate_pacing.c.next_at - gap,
                func.extract("epoch", rate_pacing.c.next_at - gap - now),
            )
        )
        with self._write() as connection:
            row = connection.execute(taken).one()
        slot: dt.datetime = row[0]
        wait = float(row[1])
        return slot, max(0.0, wait)

    # ---- refused logins (the back-off shared by every worker and the scheduler)

    def refused(
        self, tenant: str, source: str, policy: BackoffPolicy, at: dt.datetime
    ) -> AuthRefusals:
        """Count one more refused login of the source, at ``at``: the back-off it is now in.
        One transaction; the upsert's row lock orders two refusals recorded at once."""
        backoff = auth_backoff.c
        counted = (
            insert(auth_backoff)
            .values(tenant=tenant, source=source, failures=1, refused_at=at, not_before=at)
            .on_conflict_do_update(
                index_elements=["tenant", "source"],
                set_={"failures": backoff.failures + 1, "refused_at": at},
            )
            .returning(backoff.failures)
        )
        with self._write() as connection:
            failures = int(connection.execute(counted).scalar_one())
            not_before = policy.not_before(failures, at)
            connection.execute(
                update(auth_backoff)
                .where(backoff.tenant == tenant, backoff.source == source)
                .values(not_before=not_before)
            )
        return AuthRefusals(tenant, source, failures, at, not_before)

    def login_accepted(self, tenant: str, source: str) -> None:
        """A run of the source got past its login: its back-off, if any, is over."""
        backoff = auth_backoff.c
        with self._write() as connection:
            connection.execute(
                auth_backoff.delete().where(backoff.tenant == tenant, backoff.source == source)
            )

    def backoffs(self) -> dict[tuple[str, str], AuthRefusals]:
        """Every source backing off (or that was, until its next run gets past its login),
        by (tenant, source)."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(auth_backoff)).all()
        found = {}
        for row in rows:
            refused_at, not_before = _utc(row.refused_at), _utc(row.not_before)
            assert refused_at is not None and not_before is not None
            found[(row.tenant, row.source)] = AuthRefusals(
                row.tenant, row.source, int(row.failures), refused_at, not_before
            )
        return found

    # ---- the scheduler's leadership

    def try_lead(self) -> Connection | None:
        """The scheduler's lock, held by the returned connection while it stays open (None:
        another scheduler is active)."""
        key = _lock_key(f"{self.deployment.control_schema}:scheduler")
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            held: bool = connection.execute(select(func.pg_try_advisory_lock(key))).scalar_one()
        except SQLAlchemyError:
            connection.invalidate()
            connection.close()
            raise
        if not held:
            connection.close()
            return None
        return connection


def leading(connection: Connection) -> bool:
    """Whether the leader's session is still alive (it holds the lock while it is)."""
    try:
        connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(f"crm-kpi:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _migrate(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    script = ScriptDirectory.from_config(config)
    context = MigrationContext.configure(
        connection, opts={"version_table": "crm_kpi_control_version"}
    )
    current = context.get_current_heads()
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = [rev for rev in current if rev not in known]
    if unknown:
        raise StoreError(
            f"the control schema is at revision {', '.join(unknown)}, which this version of"
            " crm-kpi-worker does not know: upgrade every worker and scheduler"
        )
    if tuple(current) != tuple(script.get_heads()):
        command.upgrade(config, "head")
