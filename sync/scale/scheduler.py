"""``crm-kpi scheduler``: enqueues each tenant's sources' runs on their config's schedule.

- **One active scheduler**: it holds a PostgreSQL advisory lock of the control schema for as
  long as its session lives; a second scheduler waits as a standby, trying the lock every
  :data:`STANDBY_SECONDS`, and takes over within that when the first one stops or dies.
- **Each due run enqueued once**: a due time is computed from the schedule alone (a cron
  expression's fire times; ``every_minutes`` / ``every_seconds`` on a grid counted from the Unix
  epoch), the same in every scheduler; the run's row (tenant, source, due time) is inserted,
  and the task published, in one transaction, and the row's primary key refuses a second one.
- Like the embedded service, a source runs once as soon as the scheduler first sees it
  (``schedule.run_at_start``); missed due times are coalesced into the latest; a due time that
  comes while the source's previous run is still queued or running is recorded ``skipped``
  (one run per source in flight, as the service's ``max_instances=1``).
- A source whose last run the CRM refused the credentials of is not enqueued before its
  back-off ends (:meth:`ControlStore.refused`, the embedded service's policy): its due times
  meanwhile are held back and coalesced into the first one after the back-off, one log line
  per back-off step.
- A tenant without a ``schedule`` is not scheduled; a tenant whose config is broken is
  reported (once per change of its file) and the others go on.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from functools import partial
from typing import Any

from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.logs import fields
from crm_kpi_worker.sync.scale.control import AuthRefusals, ControlStore, RunKey, leading
from crm_kpi_worker.sync.scale.tenants import TenantFiles
from crm_kpi_worker.sync.stops import StopRequest

__all__ = ["STANDBY_SECONDS", "TICK_SECONDS", "Scheduler", "due_time", "serve_scheduler"]

log = logging.getLogger("crm_kpi_worker.scale")

TICK_SECONDS = 5.0
STANDBY_SECONDS = 5.0
#: How far back the first due time of a cron schedule is looked for: a week and a day (a
#: weekly one included), then, for a sparse one, a year and a month.
CRON_LOOKBACKS = (dt.timedelta(days=8), dt.timedelta(days=400))
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Clock = Callable[[], dt.datetime]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def due_time(config: AppConfig, now: dt.datetime, latest: dt.datetime | None) -> dt.datetime | None:
    """The schedule's latest fire time at or before ``now``, when it is after ``latest`` (the
    last one enqueued; None: none yet), else None."""
    schedule = config.schedule
    if schedule is None:
        return None
    every = schedule.every_seconds or (schedule.every_minutes or 0) * 60
    if every:
        slot = EPOCH + dt.timedelta(
            seconds=math.floor((now - EPOCH).total_seconds() / every) * every
        )
    else:
        slot_or_none = _last_cron_fire(config, now, latest)
        if slot_or_none is None:
            return None
        slot = slot_or_none
    if latest is not None and slot <= latest:
        return None
    return slot


def _last_cron_fire(
    config: AppConfig, now: dt.datetime, latest: dt.datetime | None
) -> dt.datetime | None:
    assert config.schedule is not None
    trigger = config.schedule.trigger(str(config.fiscal.tz))
    if latest is not None:
        return _cron_fire_since(trigger, latest + dt.timedelta(microseconds=1), now)
    for lookback in CRON_LOOKBACKS:
        found = _cron_fire_since(trigger, now - lookback, now)
        if found is not None:
            return found
    return None


def _cron_fire_since(trigger: Any, start: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """The trigger's last fire time in [start, now]."""
    found: dt.datetime | None = None
    previous = None
    while True:
        fire = trigger.get_next_fire_time(previous, start)
        if fire is None or fire > now:
            return None if found is None else found.astimezone(dt.UTC)
        found = previous = fire
        start = fire + dt.timedelta(microseconds=1)


class Scheduler:
    """One tick: every tenant's sources whose schedule has a new due time get a run."""

    def __init__(
        self,
        control: ControlStore,
        tenants: TenantFiles,
        publish: Callable[[RunKey], None],
        *,
        clock: Clock = _now,
    ) -> None:
        self.control = control
        self.tenants = tenants
        self._publish = publish
        self._clock = clock
        self._first_seen: dict[tuple[str, str], dt.datetime] = {}
        self._reported: dict[str, str] = {}  # broken tenant -> the problems last logged
        self._held: dict[tuple[str, str], AuthRefusals] = {}  # the back-off steps logged

    def tick(self) -> list[RunKey]:
        """The runs enqueued by this tick."""
        now = self._clock()
        found = self.tenants.scan()
        self._report(found.broken)
        backoffs = self.control.backoffs()
        self._held = {k: v for k, v in self._held.items() if backoffs.get(k) == v}
        enqueued: list[RunKey] = []
        for tenant in found.tenants:
            if tenant.config.schedule is None:
                continue
            for source in tenant.source_names():
                key = self._due(tenant.name, source, tenant.config, now)
                if key is None or self._backing_off(backoffs.get((tenant.name, source)), now):
                    continue
                skip = None
                if self.control.pending(tenant.name, source):
                    skip = "the source's previous run was not done"
                if self.control.enqueue(key, partial(self._publish, key), skip=skip):
                    if skip is None:
                        enqueued.append(key)
                        log.info("enqueued the run of %s", key, extra={"event": "run_enqueued"})
                    else:
                        log.info("skipped the run of %s: %s", key, skip)
        return enqueued

    def _backing_off(self, refusals: AuthRefusals | None, now: dt.datetime) -> bool:
        """Whether the source's due run is held back (logged once per back-off step)."""
        if refusals is None or not refusals.waiting(now):
            return False
        held = (refusals.tenant, refusals.source)
        if self._held.get(held) != refusals:
            self._held[held] = refusals
            log.warning(
                "not enqueued: %s/%s, %s",
                refusals.tenant,
                refusals.source,
                refusals.describe(),
                extra=fields(
                    "run_backing_off",
                    tenant=refusals.tenant,
                    refused=refusals.failures,
                    not_before=refusals.not_before,
                ),
            )
        return True

    def _due(self, tenant: str, source: str, config: AppConfig, now: dt.datetime) -> RunKey | None:
        assert config.schedule is not None
        latest = self.control.latest_due(tenant, source)
        if latest is None and not config.schedule.run_at_start:
            # The first due time after the scheduler first saw the source.
            latest = self._first_seen.setdefault((tenant, source), now)
        due = due_time(config, now, latest)
        return None if due is None else RunKey(tenant, source, due)

    def _report(self, broken: list[Any]) -> None:
        for tenant in broken:
            line = tenant.describe()
            if self._reported.get(tenant.name) != line:
                log.error("not scheduled: %s", line, extra={"event": "tenant_broken"})
                self._reported[tenant.name] = line
        gone = set(self._reported) - {tenant.name for tenant in broken}
        for name in gone:
            del self._reported[name]


def serve_scheduler(
    control: ControlStore,
    scheduler: Scheduler,
    stop: StopRequest,
    *,
    tick_seconds: float = TICK_SECONDS,
    standby_seconds: float = STANDBY_SECONDS,
) -> None:
    """Lead when no other scheduler does, tick while leading, until ``stop``."""
    leader = None
    try:
        while not stop.is_set():
            if leader is None:
                leader = control.try_lead()
                if leader is None:
                    log.debug("another scheduler is active: standing by")
                    stop.wait(standby_seconds)
                    continue
                log.info(
                    "this scheduler is the active one (%s)",
                    scheduler.tenants.describe(),
                    extra={"event": "scheduler_active"},
                )
            if not leading(leader):
                log.error("the scheduler lost its lock's session: standing by")
                leader.invalidate()
                leader.close()
                leader = None
                continue
            try:
                scheduler.tick()
            except Exception as exc:  # a broker or database hiccup: the next tick tries again
                log.error(
                    "the scheduler's tick failed (the next one tries again): %s",
                    exc,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            stop.wait(tick_seconds)
    finally:
        if leader is not None:  # a dropped session releases the lock
            leader.invalidate()
            leader.close()
