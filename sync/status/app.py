"""The service's HTTP endpoints, a small WSGI application (werkzeug):

- ``/healthz``: 200 while the process and its scheduler are alive, else 503;
- ``/readyz``: 200 when the store answers and each source's last successful run finished
  within twice the schedule's interval, else 503 saying which check failed;
- ``/metrics``: Prometheus' text format (:mod:`.metrics`);
- ``/``: the read-only status page (:mod:`.page`, rendered by Jinja2), ``?period=2026-Q3``
  picks the quarter charted;
- ``/runs/<id>.json``: a run's stored report;
- ``/explain.json?rep=R&period=P&kpi=K[&source=S]``: one stored KPI value of a rep explained
  (:func:`crm_kpi_worker.sync.explain.explain_kpi`, what ``crm-kpi kpis explain`` prints): the
  status page links each rep's bar to it.

Only GET (and HEAD) is answered: nothing here changes anything. The store is opened read-only,
on the first request that needs it (the service's first run may still be creating it).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.status.metrics import CONTENT_TYPE_LATEST, RunMetrics
from crm_kpi_worker.sync.status.page import build_status
from crm_kpi_worker.sync.store import Store, StoreError

__all__ = ["ServiceProbe", "StatusApp", "schedule_interval"]

log = logging.getLogger("crm_kpi_worker.status")

#: How far ahead :func:`schedule_interval` looks for the longest gap between two runs.
LOOKAHEAD = dt.timedelta(days=8)
LOOKAHEAD_TIMES = 64


@dataclass
class ServiceProbe:
    """What the service says of itself: whether its scheduler is alive, and whether a run is
    in progress."""

    scheduler_alive: Callable[[], bool]
    running: Callable[[], bool] = lambda: False


def schedule_interval(config: AppConfig, now: dt.datetime | None = None) -> dt.timedelta | None:
    """The schedule's interval: ``every_minutes``, or for a cron expression the longest gap
    between two of its next times (8 days ahead at most: a weekday schedule's weekend gap
    counts); None without a schedule."""
    schedule = config.schedule
    if schedule is None:
        return None
    if schedule.every_minutes is not None:
        return dt.timedelta(minutes=schedule.every_minutes)
    trigger = schedule.trigger(str(config.fiscal.tz))
    now = now or dt.datetime.now(dt.UTC)
    times: list[dt.datetime] = []
    previous = None
    while len(times) < LOOKAHEAD_TIMES:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None or (times and fire - times[0] > LOOKAHEAD):
            break
        times.append(fire)
        previous, now = fire, fire + dt.timedelta(seconds=1)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    return max(gaps, default=None)


def _json(body: Any, status: int = 200) -> Response:
    text = json.dumps(body, indent=2, ensure_ascii=False, default=str)
    return Response(text + "\n", status=status, mimetype="application/json")


class StatusApp:
    """The WSGI application. ``metrics`` are the service's; ``probe`` tells its liveness."""

    def __init__(
        self,
        config: AppConfig,
        metrics: RunMetrics,
        probe: ServiceProbe,
        *,
        open_store: Callable[[], Store] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.probe = probe
        self._open_store = open_store or (
            lambda: Store.open(config.store.resolve_url(), read_only=True)
        )
        self._store: Store | None = None
        self._store_guard = threading.Lock()
        self._clock = clock
        self.interval = schedule_interval(config)
        self._templates = Environment(
            loader=PackageLoader("crm_kpi_worker.sync.status", "templates"),
            autoescape=select_autoescape(["html"]),
        )
        self._routes = Map(
            [
                Rule("/", endpoint="page"),
                Rule("/healthz", endpoint="healthz"),
                Rule("/readyz", endpoint="readyz"),
                Rule("/metrics", endpoint="metrics"),
                Rule("/runs/<int:run_id>.json", endpoint="run"),
                Rule("/explain.json", endpoint="explain"),
            ],
            strict_slashes=False,
        )

    # ---- WSGI

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except HTTPException as exc:
            response = exc.get_response(environ)
        except Exception:
            log.exception("the status server failed on %s", request.path)
            response = _json({"error": "internal error (see the service's log)"}, 500)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        adapter = self._routes.bind_to_environ(request.environ)
        endpoint, arguments = adapter.match(method=request.method)
        if request.method not in ("GET", "HEAD"):
            return Response("read-only\n", status=405, headers={"Allow": "GET, HEAD"})
        handler: Callable[..., Response] = getattr(self, f"_{endpoint}")
        return handler(request, **arguments)

    # ---- the store, opened once it exists

    def store(self) -> Store:
        with self._store_guard:
            if self._store is None:
                self._store = self._open_store()
            return self._store

    def close(self) -> None:
        with self._store_guard:
            if self._store is not None:
                self._store.close()
                self._store = None

    # ---- endpoints

    def _healthz(self, _request: Request) -> Response:
        alive = self.probe.scheduler_alive()
        body = {
            "status": "ok" if alive else "failing",
            "scheduler": "running" if alive else "stopped",
            "run_in_progress": self.probe.running(),
        }
        return _json(body, 200 if alive else 503)

    def _readyz(self, _request: Request) -> Response:
        checks: dict[str, Any] = {}
        try:
            store = self.store()
            store.ping()
        except StoreError as exc:
            checks["store"] = f"failing: {exc}"
            return _json({"status": "not ready", "checks": checks}, 503)
        checks["store"] = "ok"
        ready = True
        now = self._clock()
        for source in self.config.sources:
            finished = store.last_success(source.name)
            checks[f"source {source.name}"], fresh = self._freshness(finished, now)
            ready = ready and fresh
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if self.interval is not None:
            body["allowed_age_seconds"] = (2 * self.interval).total_seconds()
        return _json(body, 200 if ready else 503)

    def _freshness(self, finished: dt.datetime | None, now: dt.datetime) -> tuple[str, bool]:
        if finished is None:
            return "failing: no successful run yet", False
        if finished.tzinfo is None:
            finished = finished.replace(tzinfo=dt.UTC)
        age = now - finished
        seconds = round(age.total_seconds())
        text = f"last successful run finished {finished.isoformat()} ({seconds} s ago)"
        if self.interval is not None and age > 2 * self.interval:
            return f"failing: {text}, over twice the schedule's interval", False
        return f"ok: {text}", True

    def _metrics(self, _request: Request) -> Response:
        return Response(self.metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    def _page(self, request: Request) -> Response:
        try:
            store = self.store()
        except StoreError as exc:
            return Response(f"the state store cannot be read yet: {exc}\n", status=503)
        page = build_status(self.config, store, period=request.args.get("period"))
        html = self._templates.get_template("status.html").render(page=page, t=page.texts)
        return Response(html, mimetype="text/html")

    def _run(self, _request: Request, run_id: int) -> Response:
        run = self.store().run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id} in the store")
        mine = {source.name for source in self.config.sources}
        if run.get("sources") and not mine & set(run["sources"]):
            raise NotFound(f"run {run_id} is not a run of this config's sources")
        return _json(run)

    def _explain(self, request: Request) -> Response:
        from crm_kpi_worker.sync.explain import ExplainError, explain_kpi

        asked = {name: request.args.get(name) for name in ("rep", "period", "kpi")}
        missing = [name for name, value in asked.items() if not value]
        if missing:
            return _json({"error": f"missing query parameter(s): {', '.join(missing)}"}, 400)
        try:
            body = explain_kpi(
                self.config,
                self.store(),
                rep=str(asked["rep"]),
                period=str(asked["period"]),
                kpi=str(asked["kpi"]),
                source=request.args.get("source"),
            )
        except ExplainError as exc:
            return _json({"error": str(exc)}, 404)
        return _json(body)
