"""One task's work: one run of one tenant's source, through the pipeline, in its tenant's store.

- The delivery first claims its scheduled run (:meth:`ControlStore.claim`): a run already
  done (a duplicate delivery) is dropped.
- The run holds the store's run lock of the source, as every run does: one run per source
  across all workers. A task that finds it held is not an error: it is retried later
  (:data:`LOCK_RETRY_SECONDS`, at most :data:`LOCK_RETRIES` times, then dropped: the next
  scheduled run covers it). That happens when a ``sync --once`` by hand runs the source, or
  when PostgreSQL has not yet ended the session of a worker that died (a minute at most).
- **Time slices**: a run that is still going after ``slice_seconds`` stops at its next page or
  write batch (its pages and confirmed writes are saved as it goes), records itself
  ``interrupted`` and its task is put back at the end of the queue: the next slice resumes
  from the stored cursors. One huge org thus never holds a worker for long while the others
  wait, and no task outlives the broker's delivery timeout. A worker shutting down stops its
  runs the same way.
- A worker killed mid-run never acknowledged its message (``acks_late``): the broker delivers
  it again, the next run marks the dead one ``interrupted`` and resumes where it stopped.
- A run the CRM refuses the credentials of puts its source in a back-off shared by every
  worker (the embedded service's policy, :mod:`crm_kpi_worker.sync.backoff`, kept in the
  control schema): the scheduler enqueues no run of it before the back-off's end; a run that
  gets past its login ends it.
- Secrets are the tenant's (its :class:`~.tenants.TenantEnviron`); the API budget and HubSpot's
  rate limits are shared by every worker (:mod:`.limits`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from crm_kpi_worker.sync.backoff import BackoffPolicy
from crm_kpi_worker.sync.scale.control import ControlStore, RunKey, worker_name
from crm_kpi_worker.sync.scale.stores import Deployment
from crm_kpi_worker.sync.scale.tenants import Tenant, TenantFiles
from crm_kpi_worker.sync.stops import StopRequest
from crm_kpi_worker.sync.store import Store

__all__ = ["DEFAULT_SLICE_SECONDS", "LOCK_RETRIES", "LOCK_RETRY_SECONDS", "Outcome", "SourceRunner"]

log = logging.getLogger("crm_kpi_worker.scale")

#: How long one task runs before its run yields to the others (continued in a new task).
DEFAULT_SLICE_SECONDS = 300.0
LOCK_RETRY_SECONDS = 15.0
LOCK_RETRIES = 40  # 10 minutes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: PostgreSQL's SQLSTATE for "too many connections" (``max_connections`` reached, or only
#: the superuser's reserved slots left).
TOO_MANY_CONNECTIONS = "53300"


def server_full(exc: BaseException) -> str | None:
    """Why the run could not start or go on, when it is because the PostgreSQL server had no
    connection slot left (a deployment busier than ``max_connections`` allows): a reason to
    try again later like a held run lock, not a failed run. None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(
            getattr(current, "orig", None), "sqlstate", None
        )
        text = str(current)
        if state == TOO_MANY_CONNECTIONS or "too many clients" in text:
            return "the PostgreSQL server has no connection left (max_connections reached)"
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True)
class Outcome:
    """What the task does next: ``done``; ``continue`` (enqueue the next slice); ``retry``
    (the lock was held, or the PostgreSQL server had no connection left: try again later);
    ``drop`` (nothing to run)."""

    action: Literal["done", "continue", "retry", "drop"]
    detail: str = ""


class SourceRunner:
    """Runs tasks for one worker process (shared by its threads)."""

    def __init__(
        self,
        deployment: Deployment,
        tenants: TenantFiles,
        control: ControlStore,
        *,
        slice_seconds: float = DEFAULT_SLICE_SECONDS,
        connect: Callable[..., Any] | None = None,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.deployment = deployment
        self.tenants = tenants
        self.control = control
        self.slice_seconds = slice_seconds
        self.backoff = backoff or BackoffPolicy()
        self._clock = clock
        self._connect = connect  # tests: a connector factory in place of the registry's
        self._running: set[StopRequest] = set()
        self._running_guard = threading.Lock()

    # ---- the tenant's store and the run's parts

    def store(self, tenant: Tenant) -> Store:
        """The tenant's store, for one task (closed after it: a worker serving hundreds of
        tenants holds connections only for the runs in progress)."""
        return self.deployment.open_store(tenant)

    def stop_all(self, reason: str) -> None:
        """Ask every run of this process to stop at its next page or batch (shutdown)."""
        with self._running_guard:
            for stop in self._running:
                stop.request(reason)

    def _connector_factory(self, tenant: Tenant) -> Callable[..., Any]:
        from crm_kpi_worker.connectors.registry import build_connector
        from crm_kpi_worker.sync.scale.limits import org_key, share_hubspot_pacing

        build = self._connect or build_connector

        def connect(source: Any, currency: Any, **options: Any) -> Any:
            connector = build(source, currency, environ=tenant.environ, **options)
            share_hubspot_pacing(connector, org_key(source, tenant.environ), self.control)
            return connector

        return connect

    def _budget_factory(self, tenant: Tenant) -> Callable[[Any, Any], Any]:
        from crm_kpi_worker.sync.scale.limits import SharedCallBudget, org_key

        def budget(config: Any, source: Any) -> SharedCallBudget:
            share = config.budget.max_share_of_daily_limit
            return SharedCallBudget(
                share, source.name, org_key(source, tenant.environ), self.control
            )

        return budget

    # ---- one task

    def run(self, key: RunKey, *, lock_retries_left: int = LOCK_RETRIES) -> Outcome:
        claimed = self.control.claim(key, worker_name())
        if claimed == "done":
            log.info("run %s: already done, this delivery is dropped", key)
            return Outcome("drop", "already done")
        loaded = self.tenants.load(key.tenant)
        if not isinstance(loaded, Tenant) or key.source not in loaded.source_names():
            why = (
                "no such tenant in " + self.tenants.describe()
                if loaded is None
                else loaded.describe()
                if not isinstance(loaded, Tenant)
                else f"tenant {key.tenant} has no source {key.source}"
            )
            log.error("run %s dropped: %s", key, why)
            self.control.mark(key, "dropped", detail=why)
            return Outcome("drop", why)
        return self._run(loaded, key, lock_retries_left)

    def _failed(self, key: RunKey, exc: Exception) -> Outcome:
        from crm_kpi_worker.sync.exit_codes import ExitCode, failure

        found = failure(exc)
        outcome = found.code.name.lower()
        backing_off = ""
        if found.code == ExitCode.CRM_AUTH:
            # Before the run is marked done: the scheduler never sees it done and not
            # backing off.
            refusals = self.control.refused(key.tenant, key.source, self.backoff, self._clock())
            backing_off = f"; {refusals.describe()}"
        log.error("run %s failed (%s): %s%s", key, outcome, found.line, backing_off)
        self.control.mark(key, "finished", status=outcome, detail=found.line)
        return Outcome("done", found.line)

    def _run(self, tenant: Tenant, key: RunKey, lock_retries_left: int) -> Outcome:
        from crm_kpi_worker.sync.pipeline import RunOptions, run_once
        from crm_kpi_worker.sync.store import RunInProgress

        config = tenant.for_source(key.source)
        stop = StopRequest()
        timer = threading.Timer(
            self.slice_seconds,
            stop.request,
            args=(f"its time slice ({self.slice_seconds:g} s) was used; it goes on in a new task",),
        )
        timer.daemon = True
        with self._running_guard:
            self._running.add(stop)
        timer.start()
        try:
            with self.store(tenant) as store:
                result = run_once(
                    config,
                    store,
                    RunOptions(as_of=config.runtime.as_of),
                    connector_factory=self._connector_factory(tenant),
                    budget_factory=self._budget_factory(tenant),
                    stop=stop,
                )
        except Exception as exc:
            busy = exc if isinstance(exc, RunInProgress) else server_full(exc)
            if busy is None:
                return self._failed(key, exc)
            if lock_retries_left <= 0:
                self.control.mark(key, "dropped", detail=str(busy))
                return Outcome("drop", str(busy))
            self.control.mark(key, "waiting", detail=str(busy))
            log.info("run %s: %s; tried again in %g s", key, busy, LOCK_RETRY_SECONDS)
            return Outcome("retry", str(busy))
        finally:
            timer.cancel()
            with self._running_guard:
                self._running.discard(stop)
        self.control.login_accepted(key.tenant, key.source)
        if result.status == "interrupted" and not result.lock_lost:
            self.control.mark(
                key,
                "requeued",
                status=result.status,
                run_id=result.run_id,
                detail=result.interrupted,
                next_slice=True,
            )
            log.info("run %s (run %s) continues in a new task: %s", key, result.run_id, stop.reason)
            return Outcome("continue", result.interrupted or "")
        self.control.mark(
            key, "finished", status=result.status, run_id=result.run_id, detail=result.interrupted
        )
        log.info("run %s (run %s) %s", key, result.run_id, result.status.replace("_", " "))
        return Outcome("done", result.status)
