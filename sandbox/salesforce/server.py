"""The sandbox Salesforce: a loopback HTTPS server speaking the REST and login wire formats that
simple-salesforce uses (see ../shared/reference/salesforce/WIRE-SHAPES.md in the project docs).

Run it standalone (``crm-kpi sandbox salesforce``) or in-process::

    with SalesforceSandbox.start(deals=10_000) as sandbox:
        sf = sandbox.client()              # a logged-in simple_salesforce.Salesforce
        sf.query_all("SELECT Id FROM Opportunity")

The app (:class:`SalesforceSandboxApp`) routes each request to a handler of one of its route
groups: ``login.py``, ``queries.py``, ``records.py``, ``sobject_collections.py``,
``tooling.py``, ``metadata_api.py`` and Bulk API 2.0's ``bulk_query.py`` and
``bulk_ingest.py`` (their shared plumbing in ``routes.py`` and ``bulk_jobs.py``).

Logins reach it through a ``requests`` session whose transport adapter sends
``https://{login,test,<domain>}.salesforce.com`` to the sandbox and trusts its throwaway CA.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.connectors.http import build_session
from crm_kpi_worker.sandbox.dataset import Dataset
from crm_kpi_worker.sandbox.faults import FaultPlan
from crm_kpi_worker.sandbox.salesforce import describe, engine
from crm_kpi_worker.sandbox.salesforce.bulk_ingest import BulkIngestRoutes, ingest_rules
from crm_kpi_worker.sandbox.salesforce.bulk_jobs import BulkJobStore, BulkLimits
from crm_kpi_worker.sandbox.salesforce.bulk_query import BulkQueryRoutes, query_rules
from crm_kpi_worker.sandbox.salesforce.login import (
    DEFAULT_CREDENTIALS,
    Credentials,
    LoginRoutes,
    RefreshTokens,
    _make_jwt_key,
)
from crm_kpi_worker.sandbox.salesforce.metadata_api import (
    MetadataRoutes,
    MetadataStore,
    seed_layouts,
)
from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg
from crm_kpi_worker.sandbox.salesforce.pubsub_server import DEFAULT_KEEPALIVE_SECONDS, PubSubServer
from crm_kpi_worker.sandbox.salesforce.queries import Cursor, QueryRoutes
from crm_kpi_worker.sandbox.salesforce.records import RecordRoutes
from crm_kpi_worker.sandbox.salesforce.routes import SalesforceError
from crm_kpi_worker.sandbox.salesforce.sobject_collections import (
    MAX_COLLECTION_RECORDS,
    CollectionRoutes,
)
from crm_kpi_worker.sandbox.salesforce.soql import SoqlError
from crm_kpi_worker.sandbox.salesforce.tooling import ToolingRoutes
from crm_kpi_worker.sandbox.serving import AdminRoutes, LoopbackServer, WriteLog
from crm_kpi_worker.sandbox.serving import Stats as ServedStats

log = logging.getLogger(__name__)
# Werkzeug logs every request at INFO; the CLI turns that on with --verbose.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

DEFAULT_API_LIMIT = 100_000
SUPPORTED_VERSIONS = tuple(f"{v}.0" for v in range(31, 63))
LOGIN_HOSTS = ("login", "test")


@dataclass
class Stats(ServedStats):
    login_calls: int = 0
    # The Pub/Sub API (gRPC): its calls do not count against the REST API's daily limit.
    pubsub_calls: int = 0
    pubsub_by_rpc: dict[str, int] = field(default_factory=dict)
    pubsub_events_delivered: int = 0


class SalesforceSandboxApp(
    LoginRoutes,
    QueryRoutes,
    RecordRoutes,
    CollectionRoutes,
    ToolingRoutes,
    MetadataRoutes,
    BulkQueryRoutes,
    BulkIngestRoutes,
    AdminRoutes,
):
    """The WSGI application: routing, API accounting, faults, and the small REST resources
    (versions, limits, describes). Logins and sessions, queries, single records, collections,
    the Tooling API, the Metadata API and Bulk API 2.0 are its route groups, one module each."""

    def __init__(
        self,
        org: SandboxOrg,
        *,
        credentials: Credentials = DEFAULT_CREDENTIALS,
        api_limit: int = DEFAULT_API_LIMIT,
        jwt_public_key: bytes | None = None,
        faults: FaultPlan | None = None,
        bulk_limits: BulkLimits | None = None,
    ) -> None:
        self.org = org
        self.credentials = credentials
        self.api_limit = api_limit
        self.jwt_public_key = jwt_public_key
        self.faults = faults or FaultPlan()
        self.base_url = "https://127.0.0.1"  # set by the server once the port is known
        self.stats = Stats()
        self.write_log = WriteLog()  # every record written, and by whom (tests)
        self._sessions: dict[str, int] = {}  # access token -> user row
        self.refresh_tokens = RefreshTokens.of(credentials, org.admin_row)
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._cursor_seq = 0
        self._lock = threading.Lock()
        self.metadata = MetadataStore()
        seed_layouts(org, self.metadata)
        self.bulk = BulkJobStore(org, bulk_limits or BulkLimits())
        self.url_map = Map(
            [
                Rule(
                    "/services/Soap/m/<version>/",
                    endpoint="metadata",
                    methods=["POST"],
                    strict_slashes=False,
                ),
                Rule("/services/Soap/m/<version>/<org>", endpoint="metadata", methods=["POST"]),
                Rule("/services/Soap/u/<version>", endpoint="soap_login", methods=["POST"]),
                Rule("/services/Soap/u/<version>/<org>", endpoint="soap_login", methods=["POST"]),
                Rule("/services/oauth2/token", endpoint="oauth_token", methods=["POST"]),
                Rule("/services/oauth2/revoke", endpoint="oauth_revoke", methods=["GET", "POST"]),
                Rule("/services/oauth2/userinfo", endpoint="oauth_userinfo", methods=["GET"]),
                Rule("/services/data", endpoint="versions", methods=["GET"], strict_slashes=False),
                Rule(
                    "/services/data/v<version>",
                    endpoint="resources",
                    methods=["GET"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/query",
                    endpoint="query",
                    methods=["GET"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/query/<locator>",
                    endpoint="query_more",
                    methods=["GET"],
                ),
                Rule(
                    "/services/data/v<version>/queryAll",
                    endpoint="query_all",
                    methods=["GET"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/queryAll/<locator>",
                    endpoint="query_more",
                    methods=["GET"],
                ),
                Rule(
                    "/services/data/v<version>/limits",
                    endpoint="limits",
                    methods=["GET"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/sobjects",
                    endpoint="global_describe",
                    methods=["GET"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/sobjects/<sobject>",
                    endpoint="sobject",
                    methods=["GET", "POST"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/sobjects/<sobject>/describe",
                    endpoint="describe",
                    methods=["GET"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/sobjects/<sobject>/updated",
                    endpoint="updated",
                    methods=["GET"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/sobjects/<sobject>/deleted",
                    endpoint="deleted",
                    methods=["GET"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/sobjects/<sobject>/<record_id>",
                    endpoint="record",
                    methods=["GET", "PATCH", "DELETE"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/sobjects/<sobject>/<ext_field>/<path:ext_value>",
                    endpoint="external",
                    methods=["GET", "PATCH"],
                ),
                Rule(
                    "/services/data/v<version>/composite/sobjects",
                    endpoint="collections",
                    methods=["POST", "PATCH", "DELETE"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/composite/sobjects/<sobject>",
                    endpoint="collections_typed",
                    methods=["GET", "POST", "PATCH", "DELETE"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/composite/sobjects/<sobject>/<ext_field>",
                    endpoint="collections_upsert",
                    methods=["PATCH"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/tooling/sobjects/<sobject>",
                    endpoint="tooling_create",
                    methods=["POST"],
                    strict_slashes=False,
                ),
                Rule(
                    "/services/data/v<version>/tooling/sobjects/<sobject>/<record_id>",
                    endpoint="tooling_record",
                    methods=["GET", "DELETE"],
                ),
                Rule(
                    "/services/data/v<version>/tooling/query",
                    endpoint="tooling_query",
                    methods=["GET"],
                    strict_slashes=False,
                ),
                Rule(
                    "/_sandbox/faults", endpoint="admin_faults", methods=["GET", "POST", "DELETE"]
                ),
                Rule("/_sandbox/stats", endpoint="admin_stats", methods=["GET"]),
                Rule("/_sandbox/expire-sessions", endpoint="admin_expire", methods=["POST"]),
                *query_rules(),
                *ingest_rules(),
                Rule("/_sandbox/refresh-tokens", endpoint="admin_refresh_tokens", methods=["POST"]),
            ]
        )

    # ---- WSGI -------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        # The request's record changes are one transaction of change events (CDC).
        with (
            self.write_log.serving(environ),
            self.org.change_events.transaction(_change_origin(request)),
        ):
            response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except HTTPException as exc:
            if exc.code == 405:
                return self._json(
                    [
                        {
                            "errorCode": "METHOD_NOT_ALLOWED",
                            "message": f"HTTP Method '{request.method}' not allowed."
                            f" Allowed are {', '.join(sorted(exc.valid_methods or []))}",  # type: ignore[attr-defined]
                        }
                    ],
                    405,
                )
            return self._json(
                [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}],
                404,
            )
        handler = getattr(self, f"on_{endpoint}")
        if endpoint in {"soap_login", "oauth_token"}:
            self.stats.login_calls += 1
            return handler(request, **args)
        if endpoint == "metadata":  # SOAP: its own session header, faults and accounting
            return handler(request, **args)
        if endpoint.startswith("admin_") or endpoint in {"versions", "oauth_revoke"}:
            return handler(request, **args)  # no session needed, not counted (as Salesforce)
        try:
            self._check_version(args.get("version"))
            user_row = self._authenticate(request)
            self._inject_faults(request)
            self._count_call(endpoint)
            response = handler(request, user_row=user_row, **args)
        except SalesforceError as exc:
            response = self._json(exc.body, exc.status, exc.headers)
        except (engine.QueryError, SoqlError) as exc:
            response = self._json([{"message": exc.message, "errorCode": exc.code}], 400)
        except json.JSONDecodeError as exc:
            response = self._json(
                [
                    {
                        "message": f"Unexpected character: {exc.msg}"
                        f" at [line:{exc.lineno}, column:{exc.colno}]",
                        "errorCode": "JSON_PARSER_ERROR",
                    }
                ],
                400,
            )
        response.headers["Sforce-Limit-Info"] = f"api-usage={self.stats.api_calls}/{self.api_limit}"
        return response

    # ---- checks on every API call --------------------------------------------------------------

    def _check_version(self, version: str | None) -> None:
        if version is not None and version not in SUPPORTED_VERSIONS:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")

    def _count_call(self, endpoint: str) -> None:
        with self._lock:
            if self.stats.api_calls >= self.api_limit:
                raise SalesforceError(
                    403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."
                )
            self.stats.api_calls += 1
            self.stats.count(endpoint)

    def _inject_faults(self, request: Request) -> None:
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
            self.expire_sessions()
            raise SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        elif rule.kind == "rate_limit":
            raise SalesforceError(
                429,
                "REQUEST_LIMIT_EXCEEDED",
                f"Too many requests: retry after {rule.retry_after} seconds.",
                headers={"Retry-After": str(rule.retry_after)},
            )
        elif rule.kind == "daily_limit":
            raise SalesforceError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        else:
            code = {
                500: "UNKNOWN_EXCEPTION",
                502: "SERVER_UNAVAILABLE",
                503: "SERVER_UNAVAILABLE",
            }.get(rule.status, "UNKNOWN_EXCEPTION")
            raise SalesforceError(
                rule.status, code, "The server is temporarily unable to service your request."
            )

    # ---- REST resources ---------------------------------------------------------------------

    def on_versions(self, request: Request) -> Response:
        return self._json(
            [
                {"label": f"v{v}", "url": f"/services/data/v{v}", "version": v}
                for v in SUPPORTED_VERSIONS
            ]
        )

    def on_resources(self, request: Request, user_row: int, version: str) -> Response:
        base = f"/services/data/v{version}"
        names = ["sobjects", "query", "queryAll", "limits", "composite", "tooling", "jobs"]
        return self._json({name: f"{base}/{name}" for name in names})

    def on_limits(self, request: Request, user_row: int, version: str) -> Response:
        remaining = max(self.api_limit - self.stats.api_calls, 0)
        return self._json(
            {
                "DailyApiRequests": {"Max": self.api_limit, "Remaining": remaining},
                **self.bulk.limits_json(),
                "DataStorageMB": {"Max": 1024, "Remaining": 1024},
                "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
            }
        )

    def on_global_describe(self, request: Request, user_row: int, version: str) -> Response:
        base = f"/services/data/v{version}"
        access = self.org.access_for(user_row)
        return self._json(
            {
                "encoding": "UTF-8",
                "maxBatchSize": MAX_COLLECTION_RECORDS,
                "sobjects": [
                    describe.global_entry(t.sobject, base)
                    for t in self.org.tables.values()
                    if access is None or access.can_read_object(t)
                ],
            }
        )

    def on_describe(self, request: Request, user_row: int, version: str, sobject: str) -> Response:
        table = self._table(sobject, user_row)
        access = self.org.access_for(user_row)
        with self.org.lock:
            # The fields the user cannot read do not exist for them.
            fields = [
                d
                for d in table.sobject.fields.values()
                if access is None or access.can_read_field(table, d)
            ]
            sobjects = {name: t.sobject for name, t in self.org.tables.items()}
            body = describe.describe_sobject(
                table.sobject, f"/services/data/v{version}", self.base_url, sobjects, fields
            )
        return self._json(body)


def _change_origin(request: Request) -> str:
    """A change event's changeOrigin for a request: the API and its version, and the client
    named in the ``Sforce-Call-Options`` header (``client=...``), as Salesforce fills it."""
    parts = request.path.strip("/").split("/")
    api = ""
    if len(parts) > 2 and parts[:2] == ["services", "data"] and parts[2].startswith("v"):
        api = f"com/salesforce/api/rest/{parts[2][1:]}"
    elif len(parts) > 3 and parts[:2] == ["services", "Soap"]:
        api = f"com/salesforce/api/soap/{parts[3]}"
    if not api:
        return ""
    options = dict(
        item.strip().partition("=")[::2]
        for item in request.headers.get("Sforce-Call-Options", "").split(",")
        if "=" in item
    )
    return f"{api};client={options['client']}" if options.get("client") else api


# ---- the server -----------------------------------------------------------------------------


class SalesforceSandbox(LoopbackServer):
    """A running sandbox: HTTPS on a loopback port, in a background thread."""

    thread_name = "salesforce-sandbox"

    def __init__(
        self,
        dataset: Dataset,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: Credentials = DEFAULT_CREDENTIALS,
        api_limit: int = DEFAULT_API_LIMIT,
        workdir: Path | None = None,
        fault_seed: int = 0,
        clock: Callable[[], float] = time.time,
        enforce_field_security: bool = True,
        bulk_limits: BulkLimits | None = None,
        pubsub_keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> None:
        """``pubsub_keepalive_seconds``: how long a Pub/Sub subscription waits without events
        before an empty FetchResponse (Salesforce: 270; tests shorten it).
        ``enforce_field_security``: each session sees and writes only what its user's
        profile and permission sets grant (object and field-level security), as on Salesforce;
        on by default (off only for tests of something else on fields nobody granted).
        ``bulk_limits``: the Bulk API allocations (Salesforce's by default)."""
        tls = self._prepare(host, workdir, "crm-kpi-sandbox-")
        self.jwt_key_path, public_key = _make_jwt_key(self.workdir)
        self.org = SandboxOrg(dataset, clock=clock, enforce_field_security=enforce_field_security)
        self.app = SalesforceSandboxApp(
            self.org,
            credentials=credentials,
            api_limit=api_limit,
            jwt_public_key=public_key,
            faults=FaultPlan(fault_seed),
            bulk_limits=bulk_limits,
        )
        self.credentials = credentials
        org = self.org
        self._bind(self.app, tls, host, port, lambda: org.now_ms() / 1000)
        self.app.base_url = self.url
        # The Pub/Sub API: gRPC on its own loopback port, the same certificate and CA.
        self.pubsub = PubSubServer(
            self.app,
            host=host,
            key_pem=tls.server_key_pem,
            chain_pem=tls.server_chain_pem,
            keepalive_seconds=pubsub_keepalive_seconds,
        )
        self.pubsub.start()

    @property
    def pubsub_endpoint(self) -> str:
        """The Pub/Sub API's ``host:port`` (gRPC over TLS; trust :attr:`ca_path`)."""
        return self.pubsub.endpoint

    @property
    def integration_user_id(self) -> str:
        """The Id of the user the sandbox's credentials log in as (the worker's user)."""
        return self.org.user_id(self.org.admin_row)

    def stop(self) -> None:
        self.pubsub.stop()
        super().stop()

    @property
    def stats(self) -> Stats:
        return self.app.stats  # type: ignore[no-any-return]

    def routes(self, domain: str = "login") -> dict[str, str]:
        """Hosts simple-salesforce logs in at, mapped to this sandbox."""
        return {f"{d}.salesforce.com": self.url for d in {*LOGIN_HOSTS, domain}}

    def session(self, domain: str = "login") -> requests.Session:
        """A requests session that reaches the sandbox for logins and trusts its CA."""
        return build_session(ca_bundle=self.ca_path, routes=self.routes(domain))

    def client(self, **kwargs: Any) -> Any:
        """A logged-in ``simple_salesforce.Salesforce`` (SOAP login with the sandbox's user)."""
        from simple_salesforce import Salesforce

        options: dict[str, Any] = {
            "username": self.credentials.username,
            "password": self.credentials.password,
            "security_token": "",
        }
        options.update(kwargs)
        options.setdefault("session", self.session(options.get("domain") or "login"))
        return Salesforce(**options)

    def client_as(self, username: str, **kwargs: Any) -> Any:
        """A ``simple_salesforce.Salesforce`` logged in as one of the org's active users (by
        Username, e.g. ``alice.martin@sandbox.local``), with the sandbox's password."""
        return self.client(username=username, **kwargs)

    @staticmethod
    def metadata_api(sf: Any) -> Any:
        """``sf.mdapi`` reaching this sandbox: simple-salesforce's Metadata API client (zeep)
        posts through a requests session of its own, not the client's, so it is given the
        client's session (which trusts the sandbox's CA)."""
        mdapi = sf.mdapi
        mdapi._client.transport.session = sf.session
        return mdapi

    def describe(self) -> Iterator[str]:
        """The lines the CLI prints when the sandbox starts."""
        yield f"Sandbox Salesforce listening on {self.url}"
        yield f"  CA certificate (trust it as ca_bundle): {self.ca_path}"
        creds = self.credentials
        yield f"  username {creds.username} / password {creds.password} (no security token)"
        yield f"  every active user logs in with their Username and password {creds.password}"
        yield f"  OAuth client id / secret: {creds.client_id} / {creds.client_secret}"
        yield f"  JWT bearer: consumer key {creds.client_id}, private key {self.jwt_key_path}"
        yield (
            f"  refresh tokens: {creds.refresh_token or 'none yet'}; more from POST"
            f" {self.url}/_sandbox/refresh-tokens, revoked at /services/oauth2/revoke"
        )
        yield f"  login_url for a config: {self.url}"
        yield f"  Pub/Sub API (gRPC, TLS, same CA): {self.pubsub_endpoint}"
        data = self.org.data
        yield (
            f"  data: seed {data.seed}, reference date {data.reference_date}, "
            f"{len(data.deals)} opportunities, {len(data.users)} users,"
            f" API limit {self.app.api_limit}/day"
        )


__all__ = [
    "BulkLimits",
    "Credentials",
    "SalesforceError",
    "SalesforceSandbox",
    "SalesforceSandboxApp",
    "Stats",
]
