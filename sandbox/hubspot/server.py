"""The sandbox HubSpot: a loopback HTTPS server speaking the CRM v3 wire format that the real,
unmodified ``hubspot.Client`` (hubspot-api-client 12) uses (see
../shared/reference/hubspot/WIRE-NOTES.md in the project docs).

Run it standalone (``crm-kpi sandbox hubspot``) or in-process::

    with HubSpotSandbox.start(deals=10_000) as sandbox:
        client = sandbox.client()          # hubspot.Client with the private-app token
        client.crm.deals.search_api.do_search({"limit": 200})

What it enforces, as HubSpot does: Bearer authentication (the private-app token, or OAuth access
tokens from ``POST /oauth/v1/token``, 30 minutes), rate limits (search: ``search_per_second``
per rolling second; every other call: ``burst_per_10s`` per rolling 10 s; a daily budget),
exact status codes (the client picks its response model by status), HubSpot's error envelope,
414 for a GET URL longer than 8,192 bytes, batch limits (100 inputs; 50 with property history)
and the search rules of ``search.py`` (10,000-result cap, filter limits).

The app (:class:`HubSpotSandboxApp`) routes each request to a handler of one of its route
groups: ``auth.py``, ``metadata.py``, ``records.py`` and ``batches.py``, with the rate limits in
``rate_limits.py`` and their shared plumbing in ``routes.py``.

Deliberate simplifications: no associations API (records answer ``associations=`` for the
links the data set has), no pipeline updates, no property/group/schema deletions (their
updates are served: ``PATCH`` of a property's label and description, of a group's label, of a
schema's display properties and labels), no merges; a
``write_failure`` fault fails records of batch writes only (HTTP 207 with per-record errors).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.dataset import Dataset
from crm_kpi_worker.sandbox.faults import FaultPlan
from crm_kpi_worker.sandbox.hubspot.auth import (
    DEFAULT_OAUTH,
    DEFAULT_TOKEN,
    AuthRoutes,
    OAuthCredentials,
    _Auth,
    _expired,
)
from crm_kpi_worker.sandbox.hubspot.batches import BatchRoutes
from crm_kpi_worker.sandbox.hubspot.catalog import PORTAL_ID
from crm_kpi_worker.sandbox.hubspot.metadata import MetadataRoutes
from crm_kpi_worker.sandbox.hubspot.portal import HubSpotPortal, WriteError
from crm_kpi_worker.sandbox.hubspot.rate_limits import (
    DEFAULT_LIMITS,
    RateLimitChecks,
    RateLimits,
    _rate_limited,
    _Window,
)
from crm_kpi_worker.sandbox.hubspot.routes import HubSpotError, not_found
from crm_kpi_worker.sandbox.serving import AdminRoutes, LoopbackServer, WriteLog
from crm_kpi_worker.sandbox.serving import Stats as ServedStats

log = logging.getLogger(__name__)
logging.getLogger("werkzeug").setLevel(logging.WARNING)

MAX_URL_BYTES = 8192


@dataclass
class Stats(ServedStats):
    search_calls: int = 0
    oauth_calls: int = 0
    rate_limited: int = 0


class HubSpotSandboxApp(AuthRoutes, RateLimitChecks, MetadataRoutes, BatchRoutes, AdminRoutes):
    """The WSGI application: routing, API accounting, faults. Authentication, rate limits,
    owners/pipelines/properties/schemas, records and search, and batches are its route groups,
    one module each."""

    def __init__(
        self,
        portal: HubSpotPortal,
        *,
        token: str = DEFAULT_TOKEN,
        oauth: OAuthCredentials = DEFAULT_OAUTH,
        limits: RateLimits = DEFAULT_LIMITS,
        faults: FaultPlan | None = None,
    ) -> None:
        self.portal = portal
        self.token = token
        self.oauth = oauth
        self.limits = limits
        self.faults = faults or FaultPlan()
        self.stats = Stats()
        self.write_log = WriteLog()  # every record written, and by whom (tests)
        self.base_url = "https://127.0.0.1"
        self._lock = threading.Lock()
        self._access_tokens: dict[str, int] = {}  # OAuth access token -> expiry (portal ms)
        self._private_expired = False  # the private-app token answers one 401 when set
        self._search_window: _Window | None = None
        if limits.search_per_second is not None:
            rate = float(limits.search_per_second)
            self._search_window = (
                _Window(1.0, int(rate)) if rate >= 1 else _Window(1.0 / max(rate, 1e-9), 1)
            )
        self._burst_window = (
            _Window(10.0, int(limits.burst_per_10s)) if limits.burst_per_10s is not None else None
        )
        self._second_window = _Window(1.0, 1)
        self._daily_used = 0
        self._daily_day: int | None = None
        objects = "/crm/v3/objects/<object_type>"
        properties = "/crm/v3/properties/<object_type>"
        schemas = "/crm-object-schemas/v3/schemas"
        pipelines = "/crm/v3/pipelines/<object_type>"
        self.url_map = Map(
            [
                Rule("/oauth/v1/token", endpoint="oauth_token", methods=["POST"]),
                Rule("/crm/v3/owners/", endpoint="owners", methods=["GET"]),
                Rule("/crm/v3/owners", endpoint="owners", methods=["GET"], strict_slashes=False),
                Rule("/crm/v3/owners/<owner_id>", endpoint="owner", methods=["GET"]),
                Rule(pipelines, endpoint="pipelines", methods=["GET"]),
                Rule(f"{pipelines}/<pipeline_id>", endpoint="pipeline", methods=["GET"]),
                Rule(f"{pipelines}/<pipeline_id>/stages", endpoint="stages", methods=["GET"]),
                Rule(
                    f"{pipelines}/<pipeline_id>/stages/<stage_id>",
                    endpoint="stage",
                    methods=["GET"],
                ),
                Rule(properties, endpoint="properties", methods=["GET", "POST"]),
                Rule(f"{properties}/batch/create", endpoint="properties_create", methods=["POST"]),
                Rule(f"{properties}/batch/read", endpoint="properties_read", methods=["POST"]),
                Rule(f"{properties}/groups", endpoint="groups", methods=["GET", "POST"]),
                Rule(
                    f"{properties}/groups/<group_name>", endpoint="group", methods=["GET", "PATCH"]
                ),
                Rule(
                    f"{properties}/<property_name>", endpoint="property", methods=["GET", "PATCH"]
                ),
                Rule(schemas, endpoint="schemas", methods=["GET", "POST"]),
                Rule(f"{schemas}/<object_type>", endpoint="schema", methods=["GET", "PATCH"]),
                Rule(objects, endpoint="objects", methods=["GET", "POST"]),
                Rule(f"{objects}/search", endpoint="search", methods=["POST"]),
                Rule(f"{objects}/batch/<action>", endpoint="batch", methods=["POST"]),
                Rule(
                    f"{objects}/<object_id>", endpoint="object", methods=["GET", "PATCH", "DELETE"]
                ),
                Rule(
                    "/_sandbox/faults", endpoint="admin_faults", methods=["GET", "POST", "DELETE"]
                ),
                Rule("/_sandbox/stats", endpoint="admin_stats", methods=["GET"]),
                Rule("/_sandbox/expire-tokens", endpoint="admin_expire", methods=["POST"]),
            ]
        )

    # ---- WSGI -------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        with self.write_log.serving(environ):
            response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        correlation_id = str(uuid.uuid4())
        headers: dict[str, str] = {}
        try:
            response = self._dispatch(request, headers)
        except HubSpotError as exc:
            response = self._json(exc.envelope(correlation_id), exc.status, exc.headers)
        except json.JSONDecodeError as exc:
            response = self._json(
                HubSpotError(
                    400, "VALIDATION_ERROR", f"Invalid input JSON on line {exc.lineno}: {exc.msg}"
                ).envelope(correlation_id),
                400,
            )
        for key, value in headers.items():
            response.headers.setdefault(key, value)
        response.headers["X-HubSpot-Correlation-Id"] = correlation_id
        return response

    def _dispatch(self, request: Request, headers: dict[str, str]) -> Response:
        raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
        uri_bytes = len(raw_uri) or len(request.full_path.encode())
        if request.method == "GET" and uri_bytes > MAX_URL_BYTES:
            return Response(
                "<html>\r\n<head><title>414 Request-URI Too Large</title></head>\r\n<body>\r\n"
                "<center><h1>414 Request-URI Too Large</h1></center>\r\n</body>\r\n</html>\r\n",
                status=414,
                content_type="text/html",
            )
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            rule, args = adapter.match(return_rule=True)
        except HTTPException as exc:
            if exc.code == 405:
                raise HubSpotError(
                    405, "VALIDATION_ERROR", f"HTTP method {request.method} is not supported here"
                ) from None
            raise not_found(f"No route for {request.method} {request.path}") from None
        endpoint = str(rule.endpoint)
        handler = getattr(self, f"on_{endpoint}")
        if endpoint.startswith("admin_"):
            return handler(request, **args)
        if endpoint == "oauth_token":
            with self._lock:
                self.stats.oauth_calls += 1
            return handler(request)
        auth = self._authenticate(request)
        is_search = endpoint == "search"
        self._inject_faults(request, auth)
        self._rate_limit(is_search, auth, headers)
        route = f"{request.method} {self._route_key(rule.rule, args)}"
        with self._lock:
            self.stats.api_calls += 1
            self.stats.search_calls += is_search
            self.stats.count(route)
        try:
            with self.portal.lock:
                return handler(request, **args)
        except WriteError as exc:
            raise HubSpotError.of(exc) from None

    def _route_key(self, template: str, args: dict[str, Any]) -> str:
        key = template
        for name, value in args.items():
            if name == "object_type":
                try:
                    store = self.portal.store(value)
                    value = store.name if not store.custom else value
                except KeyError:
                    pass
                key = key.replace("<object_type>", str(value))
            elif name == "action":
                key = key.replace("<action>", str(value))
            else:
                camel = "".join(p if i == 0 else p.title() for i, p in enumerate(name.split("_")))
                key = key.replace(f"<{name}>", "{" + camel + "}")
        return key

    # ---- checks on every API call --------------------------------------------------------------

    def _inject_faults(self, request: Request, auth: _Auth) -> None:
        rule = self.faults.draw(
            request.method,
            request.path,
            ("slow", "expire_session", "rate_limit", "daily_limit", "server_error"),
        )
        if rule is None:
            return
        if rule.kind == "slow":
            rule.hold()
        elif rule.kind == "expire_session":
            now = self.portal.now_ms()
            if auth.oauth:  # a revoked access token stays dead: the client must refresh
                with self._lock:
                    self._access_tokens[auth.token] = now
            raise _expired(now, now)
        elif rule.kind == "rate_limit":
            raise _rate_limited("TEN_SECONDLY_ROLLING", rule.retry_after)
        elif rule.kind == "daily_limit":
            raise _rate_limited("DAILY", self._seconds_to_midnight())
        else:
            raise HubSpotError(
                rule.status,
                "INTERNAL_ERROR" if rule.status < 502 else "SERVICE_UNAVAILABLE",
                "The server encountered an unexpected error. Try again later.",
            )


# ---- the server -----------------------------------------------------------------------------


class HubSpotSandbox(LoopbackServer):
    """A running sandbox portal: HTTPS on a loopback port, in a background thread."""

    thread_name = "hubspot-sandbox"

    def __init__(
        self,
        dataset: Dataset,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        limits: RateLimits = DEFAULT_LIMITS,
        token: str = DEFAULT_TOKEN,
        oauth: OAuthCredentials = DEFAULT_OAUTH,
        fault_seed: int = 0,
        workdir: Path | str | None = None,
    ) -> None:
        tls = self._prepare(host, workdir, "crm-kpi-hubspot-")
        self.portal = HubSpotPortal(dataset, clock=clock or time.time)
        self.app = HubSpotSandboxApp(
            self.portal, token=token, oauth=oauth, limits=limits, faults=FaultPlan(fault_seed)
        )
        self.token = token
        self.oauth = oauth
        self.limits = limits
        portal = self.portal
        self._bind(self.app, tls, host, port, lambda: portal.now_ms() / 1000)
        self.app.base_url = self.url

    @property
    def stats(self) -> Stats:
        return self.app.stats  # type: ignore[no-any-return]

    def client(self, **kwargs: Any) -> Any:
        """A ``hubspot.Client`` with the private-app token, trusting the sandbox's CA."""
        import hubspot

        options: dict[str, Any] = {
            "access_token": self.token,
            "host": self.url,
            "ssl_ca_cert": str(self.ca_path),
        }
        options.update(kwargs)
        return hubspot.Client.create(**options)

    def describe(self) -> Iterator[str]:
        """The lines the CLI prints when the sandbox starts."""
        yield f"Sandbox HubSpot portal {PORTAL_ID} listening on {self.url}"
        yield f"  CA certificate (trust it as ca_bundle): {self.ca_path}"
        yield f"  private-app token (Bearer): {self.token}"
        o = self.oauth
        yield (
            f"  OAuth: client id {o.client_id} / secret {o.client_secret} /"
            f" refresh token {o.refresh_token} (POST /oauth/v1/token)"
        )
        lim = self.limits
        yield (
            f"  limits: search {lim.search_per_second or 'unlimited'}/s, "
            f"{lim.burst_per_10s or 'unlimited'} per 10 s, {lim.daily or 'unlimited'}/day"
        )
        data = self.portal.data
        yield (
            f"  data: seed {data.seed}, reference date {data.reference_date}, "
            f"{len(data.deals)} deals, {len(data.users)} owners, currency "
            f"{data.reporting_currency}"
        )


__all__ = [
    "HubSpotError",
    "HubSpotSandbox",
    "HubSpotSandboxApp",
    "OAuthCredentials",
    "RateLimits",
    "Stats",
]
