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

Deliberate simplifications: no associations API (records answer ``associations=`` for the
links the data set has), no pipeline/property/schema updates or deletions, no merges; a
``write_failure`` fault fails records of batch writes only (HTTP 207 with per-record errors).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.dataset import Dataset
from crm_kpi_worker.sandbox.faults import FaultPlan
from crm_kpi_worker.sandbox.hubspot import search as search_engine
from crm_kpi_worker.sandbox.hubspot.catalog import HS_STAGES, PIPELINE_ID, PIPELINE_LABEL, PORTAL_ID
from crm_kpi_worker.sandbox.hubspot.formats import stamp
from crm_kpi_worker.sandbox.hubspot.objects import ObjectStore
from crm_kpi_worker.sandbox.hubspot.portal import HubSpotPortal, WriteError
from crm_kpi_worker.sandbox.serving import AdminRoutes, LoopbackServer
from crm_kpi_worker.sandbox.serving import Stats as ServedStats

log = logging.getLogger(__name__)
logging.getLogger("werkzeug").setLevel(logging.WARNING)

DEFAULT_TOKEN = "pat-sandbox-demo"  # noqa: S105 - the sandbox's documented, public credential
DEFAULT_CLIENT_ID = "sandbox-client-id"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"  # noqa: S105 - public sandbox credential
DEFAULT_REFRESH_TOKEN = "sandbox-refresh-token"  # noqa: S105 - public sandbox credential
ACCESS_TOKEN_SECONDS = 1800
MAX_URL_BYTES = 8192
MAX_BATCH = 100
MAX_BATCH_WITH_HISTORY = 50
MAX_PAGE = 100
MAX_PAGE_WITH_HISTORY = 50
MAX_OWNER_PAGE = 500
HISTORY_CAP_MESSAGE = (
    "The maximum number of inputs supported in a batch request for property histories is 50"
)
JSON_TYPE = "application/json;charset=utf-8"


class OAuthCredentials(NamedTuple):
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    refresh_token: str = DEFAULT_REFRESH_TOKEN


DEFAULT_OAUTH = OAuthCredentials()


@dataclass(frozen=True)
class RateLimits:
    """The portal's API limits (None: unlimited). ``monotonic`` times the rolling windows
    (tests pass a fake one instead of sleeping)."""

    search_per_second: float | None = 5
    burst_per_10s: int | None = 190
    daily: int | None = 1_000_000
    monotonic: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)


@dataclass
class Stats(ServedStats):
    search_calls: int = 0
    oauth_calls: int = 0
    rate_limited: int = 0


class HubSpotError(Exception):
    """An error answer: HubSpot's error envelope with its HTTP status."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        context: dict[str, list[str]] | None = None,
        sub_category: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.errors = errors
        self.context = context
        self.sub_category = sub_category
        self.headers = headers or {}
        self.body = body  # a body of another shape (429s, OAuth errors)

    @classmethod
    def of(cls, exc: WriteError) -> HubSpotError:
        return cls(
            exc.status,
            exc.category,
            exc.message,
            errors=exc.errors or None,
            context=exc.context,
            sub_category=exc.sub_category,
        )

    def envelope(self, correlation_id: str) -> dict[str, Any]:
        if self.body is not None:
            return {**self.body, "correlationId": correlation_id}
        body: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id,
            "category": self.category,
        }
        if self.sub_category:
            body["subCategory"] = self.sub_category
        if self.errors:
            body["errors"] = self.errors
        if self.context:
            body["context"] = self.context
        return body


def not_found(message: str = "resource not found") -> HubSpotError:
    return HubSpotError(404, "OBJECT_NOT_FOUND", message)


def bad_request(message: str, **context: list[str]) -> HubSpotError:
    return HubSpotError(400, "VALIDATION_ERROR", message, context=context or None)


class _Window:
    """Requests in a rolling window (thread-safe under the app's lock)."""

    def __init__(self, seconds: float, allowed: int) -> None:
        self.seconds = seconds
        self.allowed = allowed
        self.times: deque[float] = deque()

    def used(self, now: float) -> int:
        while self.times and self.times[0] <= now - self.seconds:
            self.times.popleft()
        return len(self.times)

    def retry_after(self, now: float) -> int:
        # HubSpot does not guarantee Retry-After on a 429; the sandbox always sends one.
        wait = self.times[0] + self.seconds - now if self.times else 1.0
        return max(1, math.ceil(wait))


@dataclass
class _Auth:
    token: str
    oauth: bool


class HubSpotSandboxApp(AdminRoutes):
    """The WSGI application: routing, authentication, rate limits, faults."""

    def __init__(
        self,
        portal: HubSpotPortal,
        *,
        token: str = DEFAULT_TOKEN,
        oauth: OAuthCredentials = DEFAULT_OAUTH,
        limits: RateLimits = RateLimits(),
        faults: FaultPlan | None = None,
    ) -> None:
        self.portal = portal
        self.token = token
        self.oauth = oauth
        self.limits = limits
        self.faults = faults or FaultPlan()
        self.stats = Stats()
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
                Rule(f"{properties}/groups/<group_name>", endpoint="group", methods=["GET"]),
                Rule(f"{properties}/<property_name>", endpoint="property", methods=["GET"]),
                Rule(schemas, endpoint="schemas", methods=["GET", "POST"]),
                Rule(f"{schemas}/<object_type>", endpoint="schema", methods=["GET"]),
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

    # ---- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(
            json.dumps(body, separators=(",", ":")),
            status=status,
            headers=headers,
            content_type=JSON_TYPE,
        )

    @staticmethod
    def _body(request: Request) -> Any:
        return json.loads(request.get_data(as_text=True) or "null")

    def _authenticate(self, request: Request) -> _Auth:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _invalid_authentication()
        with self._lock:
            if secrets.compare_digest(token, self.token):
                if self._private_expired:
                    self._private_expired = False
                    raise _expired(self.portal.now_ms())
                return _Auth(token, oauth=False)
            expiry = self._access_tokens.get(token)
        if expiry is None:
            raise _invalid_authentication()
        if self.portal.now_ms() >= expiry:
            raise _expired(expiry, self.portal.now_ms())
        return _Auth(token, oauth=True)

    def _inject_faults(self, request: Request, auth: _Auth) -> None:
        rule = self.faults.draw(
            request.method,
            request.path,
            ("slow", "expire_session", "rate_limit", "daily_limit", "server_error"),
        )
        if rule is None:
            return
        if rule.kind == "slow":
            time.sleep(rule.delay)
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

    def _seconds_to_midnight(self) -> int:
        now = self.portal.now_ms()
        return max(1, math.ceil(((now // 86_400_000 + 1) * 86_400_000 - now) / 1000))

    def _rate_limit(self, is_search: bool, auth: _Auth, headers: dict[str, str]) -> None:
        limits = self.limits
        now = limits.monotonic()
        day = self.portal.now_ms() // 86_400_000
        with self._lock:
            if self._daily_day != day:
                self._daily_day, self._daily_used = day, 0
            if limits.daily is not None and self._daily_used >= limits.daily:
                self.stats.rate_limited += 1
                raise _rate_limited("DAILY", self._seconds_to_midnight())
            window = self._search_window if is_search else self._burst_window
            if window is not None and window.used(now) >= window.allowed:
                self.stats.rate_limited += 1
                policy = "SECONDLY" if is_search else "TEN_SECONDLY_ROLLING"
                raise _rate_limited(policy, window.retry_after(now))
            if window is not None:
                window.times.append(now)
            self._daily_used += 1
            if is_search or (self._burst_window is None and limits.daily is None):
                return  # search answers carry no rate headers (community report)
            if not auth.oauth and limits.daily is not None:
                headers["X-HubSpot-RateLimit-Daily"] = str(limits.daily)
                headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                    max(0, limits.daily - self._daily_used)
                )
            burst = self._burst_window
            if burst is not None:
                secondly = math.ceil(burst.allowed / 10)
                self._second_window.times.append(now)
                used_second = self._second_window.used(now)
                headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = "10000"
                headers["X-HubSpot-RateLimit-Max"] = str(burst.allowed)
                headers["X-HubSpot-RateLimit-Remaining"] = str(
                    max(0, burst.allowed - burst.used(now))
                )
                headers["X-HubSpot-RateLimit-Secondly"] = str(secondly)
                headers["X-HubSpot-RateLimit-Secondly-Remaining"] = str(
                    max(0, secondly - used_second)
                )

    def expire_tokens(self) -> None:
        """Every OAuth access token expires now; the private-app token answers one 401."""
        now = self.portal.now_ms()
        with self._lock:
            for token in self._access_tokens:
                self._access_tokens[token] = min(self._access_tokens[token], now)
            self._private_expired = True

    def issue_access_token(self) -> str:
        token = f"sandbox-oauth-{secrets.token_urlsafe(32)}"
        with self._lock:
            self._access_tokens[token] = self.portal.now_ms() + ACCESS_TOKEN_SECONDS * 1000
        return token

    def _store(self, object_type: str) -> ObjectStore:
        try:
            return self.portal.store(object_type)
        except KeyError:
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                f"Unable to infer object type from: {object_type}",
                context={"objectType": [object_type]},
            ) from None

    # ---- OAuth ------------------------------------------------------------------------------

    def on_oauth_token(self, request: Request) -> Response:
        form = request.form
        grant = form.get("grant_type", "")
        if grant != "refresh_token":
            return _oauth_error(
                "BAD_GRANT_TYPE",
                "grant_type must be refresh_token (the sandbox has no authorization-code flow)",
            )
        if (
            form.get("client_id") != self.oauth.client_id
            or form.get("client_secret") != self.oauth.client_secret
        ):
            # Modelled on HubSpot's documented status; the message is not verified.
            return _oauth_error("BAD_CLIENT_ID", "missing or unknown client id or secret")
        if form.get("refresh_token") != self.oauth.refresh_token:
            # As recorded by nango.dev ("HubSpot OAuth BAD_REFRESH_TOKEN").
            return _oauth_error("BAD_REFRESH_TOKEN", "missing or invalid refresh token")
        return self._json(
            {
                "token_type": "bearer",
                "refresh_token": self.oauth.refresh_token,
                "access_token": self.issue_access_token(),
                "expires_in": ACCESS_TOKEN_SECONDS,
            }
        )

    # ---- owners -----------------------------------------------------------------------------

    def on_owners(self, request: Request) -> Response:
        args = request.args
        limit = _int_arg(args.get("limit"), 100, "limit")
        if not 1 <= limit <= MAX_OWNER_PAGE:
            raise bad_request(f"limit must be between 1 and {MAX_OWNER_PAGE}", limit=[str(limit)])
        archived = _bool_arg(args.get("archived"))
        email = args.get("email")
        owners = [
            o
            for o in self.portal.owners
            if o.archived == archived and (email is None or o.email.lower() == email.lower())
        ]
        after = args.get("after")
        start = 0
        if after:
            after_id = _int_arg(after, 0, "after")
            start = next((i for i, o in enumerate(owners) if int(o.id) >= after_id), len(owners))
        page = owners[start : start + limit]
        body: dict[str, Any] = {"results": [o.to_json() for o in page]}
        if start + limit < len(owners):
            nxt = owners[start + limit].id
            body["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
        return self._json(body)

    def on_owner(self, request: Request, owner_id: str) -> Response:
        id_property = request.args.get("idProperty", "id")
        archived = _bool_arg(request.args.get("archived"))
        for owner in self.portal.owners:
            key = str(owner.user_id) if id_property == "userId" else owner.id
            if key == owner_id and owner.archived == archived:
                return self._json(owner.to_json())
        raise not_found(f"Owner {owner_id} not found")

    # ---- pipelines --------------------------------------------------------------------------

    def _pipeline_store(self, object_type: str) -> None:
        if self._store(object_type).name != "deals":
            raise not_found(f"No pipelines for object type {object_type}")

    def _stages(self) -> list[dict[str, Any]]:
        created = stamp(self.portal.setup_ms)
        return [
            {
                "id": stage_id,
                "label": label,
                "displayOrder": i,
                "metadata": {"probability": probability, "isClosed": "true" if closed else "false"},
                "createdAt": created,
                "updatedAt": created,
                "archived": False,
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            }
            for i, (stage_id, label, probability, closed) in enumerate(HS_STAGES.values())
        ]

    def _pipeline(self) -> dict[str, Any]:
        created = stamp(self.portal.setup_ms)
        return {
            "id": PIPELINE_ID,
            "label": PIPELINE_LABEL,
            "displayOrder": 0,
            "stages": self._stages(),
            "createdAt": created,
            "updatedAt": created,
            "archived": False,
        }

    def on_pipelines(self, request: Request, object_type: str) -> Response:
        self._pipeline_store(object_type)
        return self._json({"results": [self._pipeline()]})

    def on_pipeline(self, request: Request, object_type: str, pipeline_id: str) -> Response:
        self._pipeline_store(object_type)
        if pipeline_id != PIPELINE_ID:
            raise not_found(f"Pipeline {pipeline_id} not found")
        return self._json(self._pipeline())

    def on_stages(self, request: Request, object_type: str, pipeline_id: str) -> Response:
        self._pipeline_store(object_type)
        if pipeline_id != PIPELINE_ID:
            raise not_found(f"Pipeline {pipeline_id} not found")
        return self._json({"results": self._stages()})

    def on_stage(
        self, request: Request, object_type: str, pipeline_id: str, stage_id: str
    ) -> Response:
        self._pipeline_store(object_type)
        for stage in self._stages():
            if pipeline_id == PIPELINE_ID and stage["id"] == stage_id:
                return self._json(stage)
        raise not_found(f"Stage {stage_id} not found in pipeline {pipeline_id}")

    # ---- properties -------------------------------------------------------------------------

    def on_properties(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        if request.method == "POST":
            pdef = self.portal.create_property(store, self._body(request))
            return self._json(pdef.to_json(), 201)
        if _bool_arg(request.args.get("archived")):
            return self._json({"results": []})
        return self._json({"results": [p.to_json() for p in store.properties.values()]})

    def on_property(self, request: Request, object_type: str, property_name: str) -> Response:
        store = self._store(object_type)
        pdef = store.properties.get(property_name)
        if pdef is None or _bool_arg(request.args.get("archived")):
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                f"Unable to find property {property_name} for object type {store.type_id}",
                context={"propertyName": [property_name]},
            )
        return self._json(pdef.to_json())

    def on_properties_create(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        inputs = _inputs(self._body(request))
        results, errors = [], []
        for item in inputs:
            try:
                results.append(self.portal.create_property(store, item).to_json())
            except WriteError as exc:
                if exc.status != 409:
                    raise
                errors.append(_standard_error(exc.category, exc.message, exc.context or {}))
        return self._batch(results, errors, ok=201)

    def on_properties_read(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        body = self._body(request)
        inputs = _inputs(body)
        results, missing = [], []
        for item in inputs:
            name = str(item.get("name")) if isinstance(item, dict) else str(item)
            pdef = store.properties.get(name)
            if pdef is None or body.get("archived"):
                missing.append(name)
            else:
                results.append(pdef.to_json())
        errors = (
            [
                _standard_error(
                    "OBJECT_NOT_FOUND",
                    f"Unable to find properties {', '.join(missing)} for {store.type_id}",
                    {"names": missing},
                )
            ]
            if missing
            else []
        )
        return self._batch(results, errors)

    def on_groups(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        if request.method == "POST":
            return self._json(self.portal.create_group(store, self._body(request)).to_json(), 201)
        return self._json({"results": [g.to_json() for g in store.groups.values()]})

    def on_group(self, request: Request, object_type: str, group_name: str) -> Response:
        store = self._store(object_type)
        group = store.groups.get(group_name)
        if group is None:
            raise not_found(f"Unable to find property group {group_name} for {store.type_id}")
        return self._json(group.to_json())

    # ---- schemas ----------------------------------------------------------------------------

    def on_schemas(self, request: Request) -> Response:
        if request.method == "POST":
            store = self.portal.create_schema(self._body(request))
            return self._json(self.portal.schema_json(store), 201)
        if _bool_arg(request.args.get("archived")):
            return self._json({"results": []})
        return self._json(
            {"results": [self.portal.schema_json(s) for s in self.portal.custom_stores()]}
        )

    def on_schema(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        if not store.custom:
            raise not_found(f"No custom object schema {object_type}")
        return self._json(self.portal.schema_json(store))

    # ---- records ----------------------------------------------------------------------------

    def _render(
        self,
        store: ObjectStore,
        rows: Any,
        names: list[str] | None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        rows = np.asarray(rows, dtype=np.int64)
        self.stats.rows_served += len(rows)
        return self.portal.render(store, rows, names, **kwargs)

    def on_objects(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        if request.method == "POST":
            body = self._body(request)
            if not isinstance(body, dict):
                raise bad_request("Invalid input JSON: expected an object")
            values = body.get("properties") or {}
            row = self._create(store, values)
            return self._json(self._written(store, [row], [values])[0], 201)
        args = request.args
        history = _list_arg(args, "propertiesWithHistory")
        cap = MAX_PAGE_WITH_HISTORY if history else MAX_PAGE
        limit = min(_int_arg(args.get("limit"), 10, "limit"), cap)
        if limit < 1:
            raise bad_request("limit must be at least 1", limit=[str(limit)])
        archived = _bool_arg(args.get("archived"))
        rows = np.flatnonzero(store.archived if archived else ~store.archived)
        after = args.get("after")
        start = 0
        if after:
            after_id = _int_arg(after, 0, "after")
            start = int(np.searchsorted(store.ids[rows], after_id))
        page = rows[start : start + limit]
        body: dict[str, Any] = {
            "results": self._render(
                store,
                page,
                _list_arg(args, "properties") or None,
                with_history=history or None,
                associations=_list_arg(args, "associations") or None,
            )
        }
        if start + limit < len(rows):
            nxt = store.record_id(int(rows[start + limit]))
            body["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
        return self._json(body)

    def _lookup(self, store: ObjectStore, object_id: str, id_property: str | None) -> int | None:
        if id_property and id_property != "hs_object_id":
            pdef = store.properties.get(id_property)
            if pdef is None or not pdef.unique:
                raise bad_request(
                    f"{id_property} is not a unique identifier property of {store.name}",
                    idProperty=[id_property],
                )
            return self.portal.find_unique(store, id_property, object_id)
        return store.row_of(object_id)

    def on_object(self, request: Request, object_type: str, object_id: str) -> Response:
        store = self._store(object_type)
        args = request.args
        row = self._lookup(store, object_id, args.get("idProperty"))
        if row is None:
            raise not_found()
        if request.method == "GET":
            if bool(store.archived[row]) != _bool_arg(args.get("archived")):
                raise not_found()
            return self._json(
                self._render(
                    store,
                    [row],
                    _list_arg(args, "properties") or None,
                    with_history=_list_arg(args, "propertiesWithHistory") or None,
                    associations=_list_arg(args, "associations") or None,
                )[0]
            )
        if store.archived[row]:
            raise not_found()
        if request.method == "DELETE":
            self.portal.archive(store, [row])
            return Response(status=204)
        body = self._body(request)
        values = (body or {}).get("properties") if isinstance(body, dict) else None
        parsed = self.portal.validate(store, values or {})
        self.portal.update(store, row, parsed)
        return self._json(self._written(store, [row], [values or {}])[0])

    def _written(
        self, store: ObjectStore, rows: list[int], values: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Written records as HubSpot echoes them: defaults plus the properties set."""
        out = []
        for row, props in zip(rows, values, strict=True):
            names = [*store.default_properties, *props]
            out.extend(self._render(store, [row], names))
        return out

    def _create(self, store: ObjectStore, values: Any) -> int:
        parsed = self.portal.validate(store, values)
        required = store.schema.get("requiredProperties", []) if store.custom else []
        missing = [p for p in required if parsed.get(p) is None]
        if missing:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Missing required properties: {', '.join(missing)}",
                errors=[
                    {
                        "message": f"{p} is required",
                        "code": "REQUIRED_PROPERTY",
                        "context": {"propertyName": [p]},
                    }
                    for p in missing
                ],
            )
        self._check_unique(store, parsed, None)
        return self.portal.create(store, parsed)

    def _check_unique(self, store: ObjectStore, parsed: dict[str, Any], row: int | None) -> None:
        for name, value in parsed.items():
            pdef = store.properties[name]
            if not pdef.unique or value is None:
                continue
            text = value if isinstance(value, str) else str(value)
            other = self.portal.find_unique(store, name, text)
            if other is not None and other != row:
                raise HubSpotError(
                    409,
                    "CONFLICT",
                    f"A {store.name} record with {name}={text} already exists"
                    f" (id {store.record_id(other)}).",
                    context={"id": [store.record_id(other)]},
                )

    # ---- batch ------------------------------------------------------------------------------

    def _batch(
        self, results: list[dict[str, Any]], errors: list[dict[str, Any]], ok: int = 200
    ) -> Response:
        now = stamp(self.portal.now_ms())
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
            return self._json(body, 207)
        return self._json(body, ok)

    def on_batch(self, request: Request, object_type: str, action: str) -> Response:
        store = self._store(object_type)
        body = self._body(request)
        inputs = _inputs(body)
        history = body.get("propertiesWithHistory") if action == "read" else None
        if history and len(inputs) > MAX_BATCH_WITH_HISTORY:
            raise bad_request(HISTORY_CAP_MESSAGE, inputs=[str(len(inputs))])
        if len(inputs) > MAX_BATCH:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Batch input size {len(inputs)} exceeds the limit of {MAX_BATCH} inputs",
                errors=[
                    {
                        "message": f"size must be between 1 and {MAX_BATCH}",
                        "code": "TOO_MANY_INPUTS",
                        "in": "inputs",
                    }
                ],
            )
        if action == "read":
            return self._batch_read(request, store, body, inputs)
        if action == "archive":
            rows = [store.row_of(_id_of(item)) for item in inputs]
            self.portal.archive(store, [r for r in rows if r is not None])
            return Response(status=204)
        if action == "create":
            return self._batch_create(request, store, inputs)
        if action == "update":
            return self._batch_update(request, store, inputs)
        if action == "upsert":
            return self._batch_upsert(request, store, inputs)
        raise not_found(f"No route for POST {request.path}")

    def _batch_read(
        self, request: Request, store: ObjectStore, body: dict[str, Any], inputs: list[Any]
    ) -> Response:
        id_property = body.get("idProperty")
        archived = _bool_arg(request.args.get("archived"))
        rows, missing = [], []
        for item in inputs:
            key = _id_of(item)
            row = self._lookup(store, key, id_property)
            if row is None or bool(store.archived[row]) != archived:
                missing.append(key)
            elif row not in rows:
                rows.append(row)
        results = self._render(
            store,
            rows,
            body.get("properties") or None,
            with_history=body.get("propertiesWithHistory") or None,
        )
        errors = []
        if missing:
            errors.append(
                _standard_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {store.singular.upper() or store.name} objects, they may"
                    " be deleted or not exist. Check that ids are valid.",
                    {"ids": missing},
                )
            )
        return self._batch(results, errors)

    def _failing(
        self, request: Request, record_id: str | None, named: str | None = None
    ) -> dict[str, Any] | None:
        """An injected per-record failure. A rule's ``record_ids`` match the record's HubSpot
        id or the id the input gave (``named``: an idProperty value for upserts), and the
        error names the record as the input did, in ``context.ids``, as HubSpot's batch
        errors do; a created record has nothing to be named by."""
        named = named or record_id
        rule = self.faults.failing_record(record_id, request.method, request.path, key=named)
        if rule is None:
            return None
        return _standard_error(
            "VALIDATION_ERROR",
            f"Record {named or '(new)'} could not be written (injected write failure).",
            {"ids": [named]} if named else {},
        )

    def _batch_create(self, request: Request, store: ObjectStore, inputs: list[Any]) -> Response:
        for item in inputs:  # a bad value refuses the whole batch, as HubSpot does
            self.portal.validate(store, (item or {}).get("properties") or {})
        rows, written, errors = [], [], []
        for item in inputs:
            values = (item or {}).get("properties") or {}
            failure = self._failing(request, None)
            if failure is not None:
                errors.append(failure)
                continue
            rows.append(self._create(store, values))
            written.append(values)
        return self._batch(self._written(store, rows, written), errors, ok=201)

    def _batch_update(self, request: Request, store: ObjectStore, inputs: list[Any]) -> Response:
        parsed_inputs = []
        seen: set[str] = set()
        for item in inputs:
            if not isinstance(item, dict) or "id" not in item:
                raise bad_request("Each input needs an id and properties")
            key = str(item["id"])
            if key in seen:
                raise bad_request(f"Duplicate IDs found in batch input: [{key}]", ids=[key])
            seen.add(key)
            parsed_inputs.append((item, self.portal.validate(store, item.get("properties") or {})))
        rows, written, errors, missing = [], [], [], []
        for item, parsed in parsed_inputs:
            key = str(item["id"])
            row = self._lookup(store, key, item.get("idProperty"))
            if row is None or store.archived[row]:
                missing.append(key)
                continue
            failure = self._failing(request, store.record_id(row), key)
            if failure is not None:
                errors.append(failure)
                continue
            self.portal.update(store, row, parsed)
            rows.append(row)
            written.append(item.get("properties") or {})
        if missing:
            errors.append(
                _standard_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {store.singular.upper() or store.name} objects, they may"
                    " be deleted or not exist. Check that ids are valid.",
                    {"ids": missing},
                )
            )
        return self._batch(self._written(store, rows, written), errors)

    def _batch_upsert(self, request: Request, store: ObjectStore, inputs: list[Any]) -> Response:
        prepared = []
        for item in inputs:
            if not isinstance(item, dict) or "id" not in item:
                raise bad_request("Each input needs an id, an idProperty and properties")
            id_property = item.get("idProperty")
            pdef = store.properties.get(str(id_property)) if id_property else None
            if pdef is None or not pdef.unique:
                raise bad_request(
                    f"idProperty {id_property!r} is not a unique identifier property of"
                    f" {store.name}",
                    idProperty=[str(id_property)],
                )
            values = dict(item.get("properties") or {})
            values[pdef.name] = str(item["id"])
            prepared.append((item, pdef.name, values, self.portal.validate(store, values)))
        results, errors = [], []
        for item, id_property, values, parsed in prepared:
            row = self.portal.find_unique(store, id_property, str(item["id"]))
            failure = self._failing(
                request, store.record_id(row) if row is not None else None, str(item["id"])
            )
            if failure is not None:
                errors.append(failure)
                continue
            created = row is None
            if created:
                row = self._create(store, values)
            else:
                self.portal.update(store, row, parsed)
            record = self._written(store, [row], [values])[0]  # type: ignore[list-item]
            results.append({**record, "new": created})
        return self._batch(results, errors)

    # ---- search -----------------------------------------------------------------------------

    def on_search(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        page = search_engine.search(store, self._body(request))
        body: dict[str, Any] = {
            "total": page.total,
            "results": self._render(store, page.rows, page.properties),
        }
        if page.next_after is not None:
            after = str(page.next_after)
            body["paging"] = {"next": {"after": after, "link": f"?after={after}"}}
        return self._json(body)

    # ---- admin (not part of HubSpot's API) ----------------------------------------------------

    def on_admin_expire(self, request: Request) -> Response:
        self.expire_tokens()
        return Response(status=204)


def _invalid_authentication() -> HubSpotError:
    # Wording as recorded in HubSpot/hubspot-api-nodejs#432 (private-app era).
    return HubSpotError(
        401,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and"
        " you can find more details at https://developers.hubspot.com/docs/methods/auth/"
        "oauth-overview",
    )


def _expired(expired_ms: int, now_ms: int | None = None) -> HubSpotError:
    # Wording and context as recorded in airbytehq/airbyte#74726.
    ago = max(0, ((now_ms if now_ms is not None else expired_ms) - expired_ms) // 1000)
    return HubSpotError(
        401,
        "EXPIRED_AUTHENTICATION",
        f"The OAuth token used to make this call expired {ago} second(s) ago.",
        context={"expire time": [stamp(expired_ms)]},
    )


def _rate_limited(policy: str, retry_after: int) -> HubSpotError:
    # Body as recorded in HubSpot/hubspot-api-python#117; SECONDLY in HGData/mk-node-hubspot#89.
    names = {
        "SECONDLY": ("secondly", f"publicapi:search-api-calls-secondly:{PORTAL_ID}"),
        "TEN_SECONDLY_ROLLING": (
            "ten_secondly_rolling",
            f"publicapi:private-app-api-calls-ten-secondly:{PORTAL_ID}",
        ),
        "DAILY": ("daily", f"publicapi:private-app-api-calls-daily:{PORTAL_ID}"),
    }
    word, group = names[policy]
    return HubSpotError(
        429,
        "RATE_LIMITS",
        f"You have reached your {word} limit.",
        headers={"Retry-After": str(max(1, int(retry_after)))},
        body={
            "status": "error",
            "message": f"You have reached your {word} limit.",
            "errorType": "RATE_LIMIT",
            "policyName": policy,
            "groupName": group,
        },
    )


def _oauth_error(status: str, message: str) -> Response:
    return Response(
        json.dumps(
            {"status": status, "message": message, "correlationId": str(uuid.uuid4())},
            separators=(",", ":"),
        ),
        status=400,
        content_type=JSON_TYPE,
    )


def _standard_error(category: str, message: str, context: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "errors": [],
        "links": {},
    }


def _inputs(body: Any) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise bad_request("Invalid input JSON: the body needs a list of inputs")
    return body["inputs"]


def _id_of(item: Any) -> str:
    return str(item.get("id")) if isinstance(item, dict) else str(item)


def _int_arg(value: str | None, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {value!r}", **{name: [value]}) from None


def _bool_arg(value: str | None) -> bool:
    return str(value).lower() == "true"


def _list_arg(args: Any, name: str) -> list[str]:
    """A repeated query parameter, also accepting comma-separated values."""
    out: list[str] = []
    for value in args.getlist(name):
        out.extend(v for v in value.split(",") if v)
    return out


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
        limits: RateLimits = RateLimits(),
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
