"""``crm-kpi status-page``: every tenant's runs, whichever worker ran them, read from the
shared store (the control schema and each tenant's schema), never from a worker's memory.

- ``/``: the tenants (each source's last run, its status and the worker that ran it, its last
  success, its refused logins and next try while it backs off), the broken tenants, and the
  latest scheduled runs (due time, state, worker, deliveries and slices);
- ``/tenants/<tenant>/``: the tenant's own status page (the service's page: runs, API calls,
  attainment), with its ``runs/<id>.json`` and ``explain.json``;
- ``/metrics``: Prometheus' text format, computed from the store at each scrape:
  ``crm_kpi_scheduled_runs{tenant,source,state,status}``,
  ``crm_kpi_last_success_timestamp_seconds{tenant,source}``, ``crm_kpi_tenants{state}``;
- ``/healthz``: 200 while the control schema answers.

Read-only: only GET and HEAD are answered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sync.scale.control import AuthRefusals, ControlStore
from crm_kpi_worker.sync.scale.stores import Deployment
from crm_kpi_worker.sync.scale.tenants import Tenant, TenantFiles
from crm_kpi_worker.sync.store import Store, StoreError

__all__ = ["DeploymentStatusApp"]

log = logging.getLogger("crm_kpi_worker.status")

SCHEDULED_LISTED = 50


class DeploymentStatusApp:
    """The WSGI application of ``crm-kpi status-page``."""

    def __init__(self, deployment: Deployment, tenants: TenantFiles, control: ControlStore) -> None:
        self.deployment = deployment
        self.tenants = tenants
        self.control = control
        self._templates = Environment(
            loader=PackageLoader("crm_kpi_worker.sync.scale", "templates"),
            autoescape=select_autoescape(["html"]),
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StoreCollector(self))
        self._routes = Map(
            [
                Rule("/", endpoint="index"),
                Rule("/healthz", endpoint="healthz"),
                Rule("/metrics", endpoint="metrics"),
            ],
            strict_slashes=False,
        )

    # ---- the tenants' stores: opened read-only for one request (hundreds of tenants hold
    # no connection between requests), once they exist

    @contextlib.contextmanager
    def store(self, tenant: Tenant) -> Iterator[Store | None]:
        try:
            store = self.deployment.open_store(tenant, read_only=True)
        except StoreError as exc:
            log.debug("tenant %s: no store to read yet: %s", tenant.name, exc)
            yield None
            return
        with store:
            yield store

    def close(self) -> None:
        """Nothing is held between requests (the status server calls this on stop)."""

    # ---- WSGI

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        if request.method not in ("GET", "HEAD"):
            return Response("read-only\n", status=405, headers={"Allow": "GET, HEAD"})(
                environ, start_response
            )
        parts = request.path.split("/", 3)
        if len(parts) >= 3 and parts[1] == "tenants":
            return self._tenant_page(parts[2], environ, start_response)
        try:
            endpoint, _ = self._routes.bind_to_environ(environ).match()
            response = getattr(self, f"_{endpoint}")()
        except HTTPException as exc:
            response = exc.get_response(environ)
        except Exception:
            log.exception("the status page failed on %s", request.path)
            response = Response("internal error (see the log)\n", status=500)
        return response(environ, start_response)

    def _tenant_page(self, name: str, environ: dict[str, Any], start_response: Any) -> Any:
        """The tenant's own status page, mounted at ``/tenants/<name>/``."""
        from crm_kpi_worker.sync.status import RunMetrics, ServiceProbe, StatusApp

        loaded = self.tenants.load(name)
        if not isinstance(loaded, Tenant):
            return NotFound(f"no tenant {name}")(environ, start_response)
        prefix = f"/tenants/{name}"
        rest = environ.get("PATH_INFO", "")[len(prefix) :]
        if not rest:  # relative links need the trailing slash
            return Response(status=308, headers={"Location": f"{prefix}/"})(environ, start_response)
        page = StatusApp(
            loaded.config,
            RunMetrics(),
            ServiceProbe(lambda: True),
            open_store=lambda: self.deployment.open_store(loaded, read_only=True),
        )
        environ = {**environ, "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + prefix}
        environ["PATH_INFO"] = rest
        try:
            return list(page(environ, start_response))  # rendered whole: then closed
        finally:
            page.close()

    # ---- endpoints

    def _healthz(self) -> Response:
        try:
            self.control.counts()
        except Exception as exc:
            body = {"status": "failing", "store": str(exc).splitlines()[0]}
            return _json(body, 503)
        return _json({"status": "ok"})

    def _metrics(self) -> Response:
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)

    def _index(self) -> Response:
        found = self.tenants.scan()
        backoffs = self.control.backoffs()
        tenants = [self._tenant_row(tenant, backoffs) for tenant in found.tenants]
        html = self._templates.get_template("deployment.html").render(
            tenants=tenants,
            broken=[broken.describe() for broken in found.broken],
            scheduled=self.control.scheduled(SCHEDULED_LISTED),
            generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
        return Response(html, mimetype="text/html")

    def _tenant_row(
        self, tenant: Tenant, backoffs: dict[tuple[str, str], AuthRefusals]
    ) -> dict[str, Any]:
        sources = []
        with self.store(tenant) as store:
            opened = store is not None
            for name in tenant.source_names():
                last = store.recent_runs(1, name) if store is not None else []
                success = store.last_success(name) if store is not None else None
                refusals = backoffs.get((tenant.name, name))
                sources.append(
                    {
                        "name": name,
                        "last": last[0] if last else None,
                        "success": success,
                        "backoff": refusals.describe() if refusals else None,
                    }
                )
        schedule = tenant.config.schedule
        return {
            "name": tenant.name,
            "file": str(tenant.file),
            "schedule": schedule.describe(str(tenant.config.fiscal.tz)) if schedule else None,
            "sources": sources,
            "store": opened,
        }


class _StoreCollector:
    """The metrics, read from the store at each scrape."""

    def __init__(self, app: DeploymentStatusApp) -> None:
        self._app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        app = self._app
        runs = GaugeMetricFamily(
            "crm_kpi_scheduled_runs",
            "Scheduled runs by tenant, source, state (enqueued, running, requeued, waiting,"
            " finished, skipped, dropped) and the finished run's status or exit code name.",
            labels=["tenant", "source", "state", "status"],
        )
        for tenant, source, state, status, count in app.control.counts():
            runs.add_metric([tenant, source, state, status or ""], count)
        yield runs
        found = app.tenants.scan()
        tenants = GaugeMetricFamily(
            "crm_kpi_tenants", "Tenants by state (ok, broken config).", labels=["state"]
        )
        tenants.add_metric(["ok"], len(found.tenants))
        tenants.add_metric(["broken"], len(found.broken))
        yield tenants
        success = GaugeMetricFamily(
            "crm_kpi_last_success_timestamp_seconds",
            "When the last successful run of the tenant's source finished (Unix time).",
            labels=["tenant", "source"],
        )
        for each in found.tenants:
            with app.store(each) as store:
                if store is None:
                    continue
                for name in each.source_names():
                    finished = store.last_success(name)
                    if finished is not None:
                        if finished.tzinfo is None:
                            finished = finished.replace(tzinfo=dt.UTC)
                        success.add_metric([each.name, name], finished.timestamp())
        yield success


def _json(body: Any, status: int = 200) -> Response:
    text = json.dumps(body, indent=2, default=str)
    return Response(text + "\n", status=status, mimetype="application/json")
