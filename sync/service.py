"""The service: ``crm-kpi sync`` without ``--once`` runs on the config's schedule.

- It runs once as soon as it starts (unless ``--no-initial-run`` or ``schedule.run_at_start:
  false``), then on the schedule (APScheduler, one run at a time, late ticks coalesced).
- The start line says the schedule in words and the next run time; each run ends with one line
  saying how it went (completed, completed with failures, interrupted, failed with its exit
  code's name) and when the next one is.
- A run the CRM refuses the credentials of is not retried on every tick (a Salesforce
  integration user would be locked out): the next attempts wait :data:`AUTH_BACKOFF_FIRST`,
  then twice as long each time, at most :data:`AUTH_BACKOFF_CAP`; each step is logged once
  (the policy is :mod:`.backoff`'s, the one the workers of a deployment share).
- SIGTERM/SIGINT stop it: the run in progress finishes its page or batch and records itself
  ``interrupted`` (see :mod:`.stops`), then the service exits 0.
- With ``runtime.http`` set, it serves ``/healthz``, ``/readyz``, ``/metrics`` and a status
  page on that port, in a thread (:mod:`.status`); each run's report feeds the metrics.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from crm_kpi_worker.sync.backoff import AUTH_BACKOFF_CAP, AUTH_BACKOFF_FIRST, AuthBackoff, duration
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.exit_codes import ExitCode, failure
from crm_kpi_worker.sync.logs import fields
from crm_kpi_worker.sync.stops import StopRequest, stop_on_signals

if TYPE_CHECKING:
    from crm_kpi_worker.sync.status import RunMetrics, StatusServer

__all__ = ["AUTH_BACKOFF_CAP", "AUTH_BACKOFF_FIRST", "AuthBackoff", "Service", "serve"]

log = logging.getLogger("crm_kpi_worker.service")


def when(instant: dt.datetime | None, tz: Any) -> str:
    """An instant as the start and end lines print it (the schedule's time zone)."""
    if instant is None:
        return "never (the schedule has no next time)"
    return instant.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


RunOnce = Callable[[StopRequest], Any]  # returns the RunResult


class Service:
    """One scheduled tick: runs unless backing off, and logs how the run went."""

    def __init__(
        self,
        run: RunOnce,
        stop: StopRequest,
        *,
        backoff: AuthBackoff | None = None,
        next_run: Callable[[], dt.datetime | None] = lambda: None,
        tz: Any = dt.UTC,
        metrics: RunMetrics | None = None,
        sources: Sequence[str] = (),
    ) -> None:
        self._run = run
        self.metrics = metrics
        self._sources = tuple(sources)
        self._stop = stop
        self.backoff = backoff or AuthBackoff()
        self._next_run = next_run
        self._tz = tz
        self.idle = threading.Event()  # set while no run is in progress
        self.idle.set()
        self.outcomes: list[str] = []  # status or exit code name of each run, for tests

    def tick(self) -> None:
        if self._stop.is_set():
            return
        if self.backoff.waiting():
            log.debug("tick skipped: backing off after %d refused login(s)", self.backoff.failures)
            return
        self.idle.clear()
        if self.metrics is not None:
            self.metrics.in_progress.set(1)
        try:
            self._tick()
        finally:
            self.idle.set()
            if self.metrics is not None:
                self.metrics.in_progress.set(0)

    def _count_failure(self, exc: Exception, outcome: str) -> None:
        if self.metrics is None:
            return
        from crm_kpi_worker.sync.store import RunInProgress

        if isinstance(exc, RunInProgress):
            self.metrics.lock_wait(exc.source)
        self.metrics.run_failed(self._sources, outcome)

    def _tick(self) -> None:
        try:
            result = self._run(self._stop)
        except Exception as exc:
            found = failure(exc)
            self.outcomes.append(found.code.name.lower())
            self._count_failure(exc, found.code.name.lower())
            if found.code == ExitCode.CRM_AUTH:
                wait = self.backoff.refused()
                log.error(
                    "run failed (%s): %s; refused %d time(s) in a row: no new attempt before"
                    " %s (backing off %s)",
                    found.code.name.lower(),
                    found.line,
                    self.backoff.failures,
                    when(self.backoff.not_before, self._tz),
                    duration(wait),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                    extra=fields(
                        "run_failed", outcome=found.code.name.lower(), refused=self.backoff.failures
                    ),
                )
                return
            log.error(
                "run failed (%s): %s; next run at %s",
                found.code.name.lower(),
                found.line,
                when(self._next_run(), self._tz),
                exc_info=log.isEnabledFor(logging.DEBUG),
                extra=fields("run_failed", outcome=found.code.name.lower()),
            )
            return
        self.backoff.reset()
        self.outcomes.append(result.status)
        if self.metrics is not None:
            self.metrics.run_finished(result.report())
        level = logging.INFO if result.status == "completed" else logging.WARNING
        detail = f" ({result.interrupted})" if result.interrupted else ""
        log.log(
            level,
            "run %s %s%s; next run at %s",
            result.run_id,
            result.status.replace("_", " "),
            detail,
            when(self._next_run(), self._tz),
            extra=fields("run_finished", run_id=result.run_id, **result.counts()),
        )


def _status_server(config: AppConfig, scheduler: Any, service: Service) -> StatusServer | None:
    """The HTTP port of ``runtime.http``, listening (None when not configured)."""
    http = config.runtime.http
    if http is None:
        return None
    from crm_kpi_worker.sync.exit_codes import Refused
    from crm_kpi_worker.sync.status import ServiceProbe, StatusApp, StatusServer

    def scheduler_alive() -> bool:
        thread = getattr(scheduler, "_thread", None)
        return bool(scheduler.running and thread is not None and thread.is_alive())

    probe = ServiceProbe(scheduler_alive, running=lambda: not service.idle.is_set())
    assert service.metrics is not None
    app = StatusApp(config, service.metrics, probe)
    try:
        return StatusServer(app, http.host, http.port).start()
    except OSError as exc:
        raise Refused(f"runtime.http: cannot listen on {http.url}: {exc.strerror or exc}") from exc


def _seed(metrics: RunMetrics, config: AppConfig, open_store: Callable[[], Any]) -> None:
    """The last success times the store already holds (a restarted service)."""
    from crm_kpi_worker.sync.store import StoreError

    try:
        with open_store() as store:
            metrics.seed({s.name: store.last_success(s.name) for s in config.sources})
    except StoreError as exc:  # no store yet: the first run creates it
        log.debug("no last success times to seed the metrics with: %s", exc)


def serve(config: AppConfig, run: RunOnce, *, initial_run: bool) -> int:
    """Run ``run`` on the config's schedule until SIGTERM/SIGINT; the exit code (0)."""
    from apscheduler.schedulers.background import BackgroundScheduler

    assert config.schedule is not None
    tz = config.fiscal.tz
    trigger = config.schedule.trigger(str(tz))
    # APScheduler's own lines ("executed successfully" even for a failed run) are left out:
    # the service says how each run went.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = BackgroundScheduler(timezone=str(tz))
    with stop_on_signals() as stop:
        job_holder: dict[str, Any] = {}

        def next_run() -> dt.datetime | None:
            job = job_holder.get("job")
            return None if job is None else job.next_run_time

        metrics = None
        if config.runtime.http is not None:
            from crm_kpi_worker.sync.status import RunMetrics
            from crm_kpi_worker.sync.store import Store

            metrics = RunMetrics()
            _seed(metrics, config, lambda: Store.open(config.store.resolve_url(), read_only=True))
        sources = [source.name for source in config.sources]
        service = Service(run, stop, next_run=next_run, tz=tz, metrics=metrics, sources=sources)
        now = dt.datetime.now(tz)
        first = now if initial_run else trigger.get_next_fire_time(None, now)
        job_holder["job"] = scheduler.add_job(
            service.tick,
            trigger,
            next_run_time=first,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            id="sync",
        )
        # The port first: a port already taken refuses the start before any run.
        server = _status_server(config, scheduler, service)
        then = trigger.get_next_fire_time(None, now)
        start = "first run now, then at " if initial_run else "first run at "
        log.info(
            "crm-kpi: running %s; %s%s; SIGTERM or Ctrl-C to stop",
            config.schedule.in_words(str(tz)),
            start,
            when(then, tz),
            extra=fields(
                "service_started",
                schedule=config.schedule.in_words(str(tz)),
                first_run=(now if initial_run else then),
                next_run=then,
            ),
        )
        scheduler.start()
        if server is not None:
            log.info(
                "crm-kpi: status page at %s/ (also /healthz, /readyz, /metrics)",
                server.url,
                extra=fields("status_page", url=f"{server.url}/"),
            )
        while not stop.wait(1.0):
            pass
        scheduler.shutdown(wait=False)
        # The run in progress stops at its next page or batch (the watchdog bounds the wait).
        service.idle.wait()
        if server is not None:
            server.stop()
    log.info("crm-kpi: stopped (%s)", stop.reason, extra=fields("service_stopped"))
    return int(ExitCode.OK)
