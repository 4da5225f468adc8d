"""``/metrics``: the service's runs in Prometheus' text format, through prometheus-client.

Every metric is named ``crm_kpi_*``, with a unit suffix where there is one (``_seconds``) and
``_total`` on counters, as Prometheus' naming conventions ask. Counters count what this process
saw since it started (Prometheus' ``rate()`` and ``increase()`` handle restarts); gauges say the
state as of the last run, and the last success times are read from the store at start, so a
restarted service does not forget them.

The run report is read as stored: keys a run of another version does not write (drift
repaired, the CRM's daily limit and the budget share) are simply not exported.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "PHASE_BUCKETS", "RunMetrics"]

#: Phase durations from a quiet org's sub-second pull to an hour-long first sync of 1M deals.
PHASE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class RunMetrics:
    """The service's metrics, in a registry of their own (never the process-wide default, so
    tests and several services in one process do not collide)."""

    def __init__(self) -> None:
        # No ``*_created`` series beside each counter: the service's own process is the one
        # user of prometheus-client, and those series only double the output.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "crm_kpi_runs",
            "Runs by source and outcome: the run's status (completed, completed_with_failures,"
            " interrupted, ...) or, for a run that failed, its exit code's name (crm_auth,"
            " crm_unavailable, store, ...).",
            ["source", "outcome"],
            registry=r,
        )
        self.phase_seconds = Histogram(
            "crm_kpi_phase_duration_seconds",
            "Duration of each phase of a run (pull, compute, write).",
            ["source", "phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.pulled = Counter(
            "crm_kpi_records_pulled",
            "Records pulled from the CRM, by stream.",
            ["source", "stream"],
            registry=r,
        )
        self.excluded = Gauge(
            "crm_kpi_records_excluded",
            "Records excluded from the KPIs after the last run (in force in the store), by reason.",
            ["source", "reason"],
            registry=r,
        )
        self.written = Counter(
            "crm_kpi_records_written",
            "Records written back to the CRM, by object.",
            ["source", "object"],
            registry=r,
        )
        self.failed = Counter(
            "crm_kpi_records_failed",
            "Records the CRM refused to write (retried by the next run), by object.",
            ["source", "object"],
            registry=r,
        )
        self.drift_repaired = Counter(
            "crm_kpi_drift_repaired",
            "Records whose KPI fields had been changed in the CRM and were written back.",
            ["source", "object"],
            registry=r,
        )
        self.api_calls = Counter(
            "crm_kpi_api_calls", "API calls the runs made to the CRM.", ["source"], registry=r
        )
        self.change_events = Counter(
            "crm_kpi_change_events",
            "Others' change events the pulls read (Salesforce change_events).",
            ["source"],
            registry=r,
        )
        self.change_events_incomplete = Counter(
            "crm_kpi_change_events_incomplete",
            "Runs whose change events could not be read completely, so they read every"
            " modified record (the run report's change_events says why).",
            ["source"],
            registry=r,
        )
        self.daily_remaining = Gauge(
            "crm_kpi_crm_daily_calls_remaining",
            "The CRM's remaining daily API calls for the whole org or portal, as last seen.",
            ["source"],
            registry=r,
        )
        self.budget_share = Gauge(
            "crm_kpi_budget_share_ratio",
            "The share of the CRM's daily limit the worker allows itself (0..1).",
            ["source"],
            registry=r,
        )
        self.last_success = Gauge(
            "crm_kpi_last_success_timestamp_seconds",
            "When the last successful run of the source finished (Unix time).",
            ["source"],
            registry=r,
        )
        self.lock_waits = Counter(
            "crm_kpi_lock_waits",
            "Runs that found another run holding a source's lock and left it to the next tick.",
            ["source"],
            registry=r,
        )
        self._reasons: dict[str, set[str]] = {}  # exclusion reasons exported, per source
        self.in_progress = Gauge(
            "crm_kpi_run_in_progress", "1 while a run is in progress.", registry=r
        )

    # ---- what the service tells

    def seed(self, last_success: Mapping[str, dt.datetime | None]) -> None:
        """The last success times the store holds (a restarted service)."""
        for source, finished in last_success.items():
            if finished is not None:
                self.last_success.labels(source).set(finished.timestamp())

    def run_finished(self, report: Mapping[str, Any], finished: dt.datetime | None = None) -> None:
        """Count a run that ended with a report (whatever its status)."""
        status = str(report.get("status", "unknown"))
        at = (finished or dt.datetime.now(dt.UTC)).timestamp()
        for source in report.get("sources", ()):
            name = str(source.get("source", ""))
            self.runs.labels(name, status).inc()
            if status in ("completed", "completed_with_failures"):
                self.last_success.labels(name).set(at)
            self._source(name, source)

    def run_failed(self, sources: Iterable[str], outcome: str) -> None:
        """Count a run that raised (no report): ``outcome`` is its exit code's name."""
        for source in sources:
            self.runs.labels(source, outcome).inc()

    def lock_wait(self, source: str) -> None:
        self.lock_waits.labels(source).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # ---- one source of a report

    def _source(self, name: str, source: Mapping[str, Any]) -> None:
        for phase, seconds in (source.get("seconds") or {}).items():
            value = _number(seconds)
            if value is not None:
                self.phase_seconds.labels(name, phase).observe(value)
        for stream, count in (source.get("pulled") or {}).items():
            if _number(count):
                self.pulled.labels(name, stream).inc(count)
        excluded = (source.get("excluded") or {}).get("by_reason") or {}
        shown = self._reasons.setdefault(name, set())
        for gone in shown - set(excluded):  # no longer in force: its series goes
            self.excluded.remove(name, gone)
        shown.intersection_update(excluded)
        for reason, count in excluded.items():
            self.excluded.labels(name, reason).set(count)
            shown.add(reason)
        for written in source.get("written") or ():
            object_name = str(written.get("object", ""))
            if _number(written.get("records_written")):
                self.written.labels(name, object_name).inc(written["records_written"])
            if _number(written.get("failed")):
                self.failed.labels(name, object_name).inc(written["failed"])
        for drift in source.get("drift") or ():
            if _number(drift.get("repaired")):
                self.drift_repaired.labels(name, str(drift.get("object", ""))).inc(
                    drift["repaired"]
                )
        if _number(source.get("api_calls")):
            self.api_calls.labels(name).inc(source["api_calls"])
        events = source.get("change_events") or {}
        if events:
            self.change_events.labels(name).inc(_number(events.get("events")) or 0)
            if events.get("complete") is False:
                self.change_events_incomplete.labels(name).inc()
        self._budget(name, source.get("budget") or {})

    def _budget(self, name: str, budget: Mapping[str, Any]) -> None:
        share = _number(budget.get("share"))
        if share is not None:
            self.budget_share.labels(name).set(share)
        limit, used = _number(budget.get("daily_limit")), _number(budget.get("org_used"))
        if limit is not None and used is not None:
            self.daily_remaining.labels(name).set(max(limit - used, 0))
