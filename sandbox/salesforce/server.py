"""The sandbox Salesforce: a loopback HTTPS server speaking the REST and login wire formats that
simple-salesforce uses (see ../shared/reference/salesforce/WIRE-SHAPES.md in the project docs).

Run it standalone (``crm-kpi sandbox salesforce``) or in-process::

    with SalesforceSandbox.start(deals=10_000) as sandbox:
        sf = sandbox.client()              # a logged-in simple_salesforce.Salesforce
        sf.query_all("SELECT Id FROM Opportunity")

Logins reach it through a ``requests`` session whose transport adapter sends
``https://{login,test,<domain>}.salesforce.com`` to the sandbox and trusts its throwaway CA.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import jwt
import numpy as np
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.connectors.http import build_session
from crm_kpi_worker.sandbox.dataset import Dataset
from crm_kpi_worker.sandbox.faults import FaultPlan
from crm_kpi_worker.sandbox.salesforce import engine
from crm_kpi_worker.sandbox.salesforce.catalog import ORG_ID
from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.org import RecordError, SandboxOrg
from crm_kpi_worker.sandbox.salesforce.soql import SoqlError
from crm_kpi_worker.sandbox.salesforce.store import FieldValueError
from crm_kpi_worker.sandbox.serving import AdminRoutes, LoopbackServer
from crm_kpi_worker.sandbox.serving import Stats as ServedStats

log = logging.getLogger(__name__)
# Werkzeug logs every request at INFO; the CLI turns that on with --verbose.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

DEFAULT_USERNAME = "demo@sandbox.local"
DEFAULT_PASSWORD = "demo"  # noqa: S105 - the sandbox's documented, public credential
DEFAULT_CLIENT_ID = "sandbox"
DEFAULT_CLIENT_SECRET = "sandbox"  # noqa: S105 - the sandbox's documented, public credential
DEFAULT_API_LIMIT = 100_000
DEFAULT_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
MAX_COLLECTION_RECORDS = 200
CURSOR_IDLE_SECONDS = 15 * 60
MAX_CURSORS_PER_SESSION = 10
SUPPORTED_VERSIONS = tuple(f"{v}.0" for v in range(31, 63))
LOGIN_HOSTS = ("login", "test")


@dataclass(frozen=True)
class Credentials:
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET

    def __repr__(self) -> str:  # the sandbox's defaults are public; custom ones may not be
        return f"Credentials(username={self.username!r}, client_id={self.client_id!r})"


@dataclass
class Cursor:
    result: engine.QueryResult
    token: str
    batch_size: int
    used_at: float


@dataclass
class Stats(ServedStats):
    login_calls: int = 0


class SalesforceError(Exception):
    """An error answer: the JSON array body Salesforce sends, with its HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.body: list[dict[str, Any]] = [{"message": message, "errorCode": code}]
        if fields:
            self.body[0]["fields"] = fields


class SalesforceSandboxApp(AdminRoutes):
    """The WSGI application: routing, authentication, API accounting, faults."""

    def __init__(
        self,
        org: SandboxOrg,
        *,
        credentials: Credentials = Credentials(),
        api_limit: int = DEFAULT_API_LIMIT,
        jwt_public_key: bytes | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        self.org = org
        self.credentials = credentials
        self.api_limit = api_limit
        self.jwt_public_key = jwt_public_key
        self.faults = faults or FaultPlan()
        self.base_url = "https://127.0.0.1"  # set by the server once the port is known
        self.stats = Stats()
        self._sessions: dict[str, int] = {}  # access token -> user row
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._cursor_seq = 0
        self._lock = threading.Lock()
        self.url_map = Map(
            [
                Rule("/services/Soap/u/<version>", endpoint="soap_login", methods=["POST"]),
                Rule("/services/Soap/u/<version>/<org>", endpoint="soap_login", methods=["POST"]),
                Rule("/services/oauth2/token", endpoint="oauth_token", methods=["POST"]),
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
                    "/_sandbox/faults", endpoint="admin_faults", methods=["GET", "POST", "DELETE"]
                ),
                Rule("/_sandbox/stats", endpoint="admin_stats", methods=["GET"]),
                Rule("/_sandbox/expire-sessions", endpoint="admin_expire", methods=["POST"]),
            ]
        )

    # ---- WSGI -------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
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
        if endpoint.startswith("admin_") or endpoint == "versions":
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

    # ---- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(
            json.dumps(body, separators=(",", ":")),
            status=status,
            headers=headers,
            content_type="application/json;charset=UTF-8",
        )

    def _check_version(self, version: str | None) -> None:
        if version is not None and version not in SUPPORTED_VERSIONS:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")

    def _authenticate(self, request: Request) -> int:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        with self._lock:
            user = self._sessions.get(token) if scheme.lower() in {"bearer", "oauth"} else None
        if user is None:
            raise SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        request.environ["sandbox.token"] = token
        return user

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
            time.sleep(rule.delay)
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

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def new_session(self, user_row: int) -> str:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(48)}"
        with self._lock:
            self._sessions[token] = user_row
        return token

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.org.now_ms() / 1000, tz=dt.UTC).date()

    def _body(self, request: Request) -> Any:
        return json.loads(request.get_data(as_text=True) or "null")

    # ---- login ------------------------------------------------------------------------------

    def on_soap_login(self, request: Request, version: str, org: str | None = None) -> Response:
        try:
            root = ElementTree.fromstring(request.get_data())  # noqa: S314 - loopback test server
            values = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
        except ElementTree.ParseError:
            values = {}
        username, password = values.get("username"), values.get("password")
        if username != self.credentials.username or password != self.credentials.password:
            return _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        token = self.new_session(self.org.admin_row)
        user_id = make_id("005", self.org.admin_row)
        server = f"{self.base_url}/services/Soap/u/{version}/{ORG_ID[:15]}"
        user = escape(self.credentials.username)
        info = {
            "currencySymbol": None,
            "orgAttachmentFileSizeLimit": "5242880",
            "orgDefaultCurrencyIsoCode": None,
            "orgDisallowHtmlAttachments": "false",
            "orgHasPersonAccounts": "false",
            "organizationId": ORG_ID,
            "organizationMultiCurrency": "true",
            "organizationName": "crm-kpi-worker sandbox",
            "profileId": "00eSb0000000001AAA",
            "roleId": None,
            "sessionSecondsValid": "7200",
            "userDefaultCurrencyIsoCode": self.org.data.reporting_currency,
            "userEmail": user,
            "userFullName": "Sandbox Admin",
            "userId": user_id,
            "userLanguage": "en_US",
            "userLocale": "fr_FR",
            "userName": user,
            "userTimeZone": "Europe/Paris",
            "userType": "Standard",
            "userUiSkin": "Theme3",
        }
        user_info = "".join(
            f'<{key} xsi:nil="true"/>' if value is None else f"<{key}>{value}</{key}>"
            for key, value in info.items()
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
            ' xmlns="urn:partner.soap.sforce.com"'
            ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            "<soapenv:Body><loginResponse><result>"
            f"<metadataServerUrl>{self.base_url}/services/Soap/m/{version}/{ORG_ID[:15]}"
            "</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
            f"<serverUrl>{server}</serverUrl><sessionId>{escape(token)}</sessionId>"
            f"<userId>{user_id}</userId><userInfo>{user_info}</userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response(body, status=200, content_type="text/xml;charset=UTF-8")

    def on_oauth_token(self, request: Request) -> Response:
        form = request.form
        grant = form.get("grant_type", "")
        if grant == "password":
            if (
                form.get("client_id") != self.credentials.client_id
                or form.get("client_secret") != self.credentials.client_secret
            ):
                return _oauth_error("invalid_client_id", "client identifier invalid")
            if (
                form.get("username") != self.credentials.username
                or form.get("password") != self.credentials.password
            ):
                return _oauth_error("invalid_grant", "authentication failure")
        elif grant == "client_credentials":
            scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
            try:
                client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            if scheme.lower() != "basic":
                client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            if client_id != self.credentials.client_id or secret != self.credentials.client_secret:
                return _oauth_error("invalid_client", "invalid client credentials")
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            problem = self._check_jwt(form.get("assertion", ""))
            if problem is not None:
                return _oauth_error("invalid_grant", problem)
        else:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        token = self.new_session(self.org.admin_row)
        issued = str(self.org.now_ms())
        body: dict[str, Any] = {
            "access_token": token,
            "instance_url": self.base_url,
            "id": f"https://login.salesforce.com/id/{ORG_ID}/{make_id('005', self.org.admin_row)}",
            "token_type": "Bearer",
            "issued_at": issued,
        }
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            body["scope"] = "api"
        else:
            body["signature"] = base64.b64encode(secrets.token_bytes(32)).decode()
        return self._json(body)

    def _check_jwt(self, assertion: str) -> str | None:
        if self.jwt_public_key is None:
            return "invalid assertion"
        try:
            claims = jwt.decode(
                assertion,
                self.jwt_public_key,
                algorithms=["RS256"],
                options={"require": ["exp", "iss", "sub", "aud"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            return "expired authorization code"
        except jwt.PyJWTError:
            return "invalid assertion"
        audience = str(claims.get("aud", ""))
        if not (audience.startswith("https://") and audience.endswith(".salesforce.com")):
            return "audience is invalid"
        if claims.get("iss") != self.credentials.client_id:
            return "invalid client credentials"
        if claims.get("sub") != self.credentials.username:
            return "user hasn't approved this consumer"
        return None

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
        names = ["sobjects", "query", "queryAll", "limits", "composite", "tooling"]
        return self._json({name: f"{base}/{name}" for name in names})

    def on_limits(self, request: Request, user_row: int, version: str) -> Response:
        remaining = max(self.api_limit - self.stats.api_calls, 0)
        return self._json(
            {
                "DailyApiRequests": {"Max": self.api_limit, "Remaining": remaining},
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
                "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
                "DataStorageMB": {"Max": 1024, "Remaining": 1024},
                "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
            }
        )

    def on_query(self, request: Request, user_row: int, version: str) -> Response:
        return self._run_query(request, version, include_deleted=False, endpoint="query")

    def on_query_all(self, request: Request, user_row: int, version: str) -> Response:
        return self._run_query(request, version, include_deleted=True, endpoint="queryAll")

    def _run_query(
        self, request: Request, version: str, *, include_deleted: bool, endpoint: str
    ) -> Response:
        text = request.args.get("q")
        if not text:
            raise SalesforceError(400, "MALFORMED_QUERY", "A query string has to be specified")
        batch_size = _batch_size(request.headers.get("Sforce-Query-Options", ""))
        result = engine.execute(
            self.org, text, include_deleted=include_deleted, today=self._today()
        )
        return self._page(
            result, 0, batch_size, version, endpoint, request.environ["sandbox.token"], None
        )

    def on_query_more(
        self, request: Request, user_row: int, version: str, locator: str
    ) -> Response:
        cursor_id, _, start_text = locator.rpartition("-")
        with self._lock:
            self._expire_cursors()
            cursor = self._cursors.get(cursor_id)
        if (
            cursor is None
            or not start_text.isdigit()
            or cursor.token != request.environ["sandbox.token"]
        ):
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        endpoint = "queryAll" if "/queryAll/" in request.path else "query"
        return self._page(
            cursor.result,
            int(start_text),
            cursor.batch_size,
            version,
            endpoint,
            cursor.token,
            cursor_id,
        )

    def _page(
        self,
        result: engine.QueryResult,
        start: int,
        batch_size: int,
        version: str,
        endpoint: str,
        token: str,
        cursor_id: str | None,
    ) -> Response:
        with self.org.lock:
            records = result.page(start, batch_size, version)
        end = start + batch_size
        done = result.plan.aggregates != [] or end >= len(result.rows)
        body: dict[str, Any] = {"totalSize": result.total, "done": done}
        if not done:
            with self._lock:
                if cursor_id is None:
                    self._cursor_seq += 1
                    cursor_id = f"01gSb{self._cursor_seq:010d}"
                    self._cursors[cursor_id] = Cursor(result, token, batch_size, time.monotonic())
                    self._limit_cursors(token)
                else:
                    self._cursors[cursor_id].used_at = time.monotonic()
                    self._cursors.move_to_end(cursor_id)
            body["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{cursor_id}-{end}"
        elif cursor_id is not None:
            with self._lock:
                self._cursors.pop(cursor_id, None)
        body["records"] = records
        self.stats.rows_served += len(records)
        return self._json(body)

    def _expire_cursors(self) -> None:
        now = time.monotonic()
        for key in [k for k, c in self._cursors.items() if now - c.used_at > CURSOR_IDLE_SECONDS]:
            del self._cursors[key]

    def _limit_cursors(self, token: str) -> None:
        mine = [k for k, c in self._cursors.items() if c.token == token]
        for key in mine[: max(0, len(mine) - MAX_CURSORS_PER_SESSION)]:
            del self._cursors[key]

    def on_global_describe(self, request: Request, user_row: int, version: str) -> Response:
        base = f"/services/data/v{version}"
        return self._json(
            {
                "encoding": "UTF-8",
                "maxBatchSize": MAX_COLLECTION_RECORDS,
                "sobjects": [t.sobject.summary(base) for t in self.org.tables.values()],
            }
        )

    def _table(self, name: str) -> Any:
        table = self.org.table(name)
        if table is None:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        return table

    def on_describe(self, request: Request, user_row: int, version: str, sobject: str) -> Response:
        table = self._table(sobject)
        with self.org.lock:
            body = table.sobject.describe(f"/services/data/v{version}", {})
        return self._json(body)

    def on_sobject(self, request: Request, user_row: int, version: str, sobject: str) -> Response:
        table = self._table(sobject)
        if request.method == "GET":
            return self._json(
                {
                    "objectDescribe": table.sobject.summary(f"/services/data/v{version}"),
                    "recentItems": [],
                }
            )
        values = self._body(request)
        if not isinstance(values, dict):
            raise SalesforceError(
                400,
                "JSON_PARSER_ERROR",
                "Cannot deserialize instance of sObject from a non-object value",
            )
        try:
            outcome = self.org.write(table.name, values, user_row=user_row)
        except RecordError as exc:
            raise SalesforceError(400, exc.code, exc.message, exc.fields) from None
        return self._json({"id": outcome.record_id, "success": True, "errors": []}, 201)

    def on_record(
        self, request: Request, user_row: int, version: str, sobject: str, record_id: str
    ) -> Response:
        table = self._table(sobject)
        with self.org.lock:
            row = self._lookup(table, record_id)
            if request.method == "GET":
                return self._json(self._record(table, row, version, request.args.get("fields")))
            try:
                if request.method == "DELETE":
                    self.org.delete(table.name, record_id, user_row=user_row)
                    return Response(status=204)
                values = self._body(request)
                if not isinstance(values, dict):
                    raise SalesforceError(
                        400,
                        "JSON_PARSER_ERROR",
                        "Cannot deserialize instance of sObject from a non-object value",
                    )
                self.org.write(table.name, values, user_row=user_row, row=row)
            except RecordError as exc:
                raise SalesforceError(400, exc.code, exc.message, exc.fields) from None
        return Response(status=204)

    def _lookup(self, table: Any, record_id: str) -> int:
        """A record's row, or the 404 Salesforce answers for a missing or deleted one."""
        try:
            return self.org.find_row(table, record_id)
        except RecordError as exc:
            if exc.code == "ENTITY_IS_DELETED":
                raise SalesforceError(404, "ENTITY_IS_DELETED", "entity is deleted") from None
            if exc.code == "MALFORMED_ID":
                raise SalesforceError(
                    404,
                    "NOT_FOUND",
                    f"Provided external ID field does not exist or is not accessible: {record_id}",
                ) from None
            raise SalesforceError(
                404, "NOT_FOUND", "The requested resource does not exist"
            ) from None

    def _record(self, table: Any, row: int, version: str, fields: str | None) -> dict[str, Any]:
        rows = np.array([row])
        names = (
            [n.strip() for n in fields.split(",")]
            if fields
            else [d.name for d in table.sobject.fields.values()]
        )
        record: dict[str, Any] = {
            "attributes": {
                "type": table.name,
                "url": f"/services/data/v{version}/sobjects/{table.name}/{table.id_of(row)}",
            }
        }
        for name in names:
            column = table.column(name)
            if column is None:
                raise SalesforceError(
                    400, "INVALID_FIELD", f"No such column '{name}' on entity '{table.name}'."
                )
            record[column.definition.name] = column.to_json(rows)[0]
        return record

    def on_external(
        self,
        request: Request,
        user_row: int,
        version: str,
        sobject: str,
        ext_field: str,
        ext_value: str,
    ) -> Response:
        table = self._table(sobject)
        with self.org.lock:
            try:
                rows = self.org.find_by_external_id(table, ext_field, ext_value)
            except RecordError as exc:
                raise SalesforceError(404, exc.code, exc.message) from None
            if len(rows) > 1:
                urls = [
                    f"/services/data/v{version}/sobjects/{table.name}/{table.id_of(r)}"
                    for r in rows
                ]
                return self._json(urls, 300)
            if request.method == "GET":
                if not rows:
                    raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
                return self._json(self._record(table, rows[0], version, request.args.get("fields")))
            values = self._body(request)
            if not isinstance(values, dict):
                raise SalesforceError(
                    400,
                    "JSON_PARSER_ERROR",
                    "Cannot deserialize instance of sObject from a non-object value",
                )
            if any(k.lower() == ext_field.lower() for k in values):
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"The {ext_field} field should not be specified in the sobject data.",
                )
            try:
                if rows:
                    outcome = self.org.write(table.name, values, user_row=user_row, row=rows[0])
                else:
                    outcome = self.org.write(
                        table.name, {**values, ext_field: ext_value}, user_row=user_row
                    )
            except RecordError as exc:
                raise SalesforceError(400, exc.code, exc.message, exc.fields) from None
        result = {
            "id": outcome.record_id,
            "success": True,
            "errors": [],
            "created": outcome.created,
        }
        return self._json(result, 201 if outcome.created else 200)

    def on_updated(self, request: Request, user_row: int, version: str, sobject: str) -> Response:
        return self._changed(request, sobject, deleted=False)

    def on_deleted(self, request: Request, user_row: int, version: str, sobject: str) -> Response:
        return self._changed(request, sobject, deleted=True)

    def _changed(self, request: Request, sobject: str, *, deleted: bool) -> Response:
        table = self._table(sobject)
        try:
            start = _parse_stamp(request.args["start"])
            end = _parse_stamp(request.args["end"])
        except (KeyError, ValueError):
            raise SalesforceError(
                400,
                "MALFORMED_QUERY",
                "start and end must be dateTime values such as 2024-01-01T00:00:00+00:00",
            ) from None
        with self.org.lock:
            rows = np.arange(table.size)
            stamp = table.columns["systemmodstamp"].vector(rows)[0]
            in_window = (stamp >= start) & (stamp <= end)
            is_deleted = (
                table.columns["isdeleted"].vector(rows)[0]
                if table.sobject.has_is_deleted
                else np.zeros(table.size, bool)
            )
            chosen = rows[in_window & (is_deleted if deleted else ~is_deleted)]
            ids = [table.id_of(r) for r in chosen.tolist()]
            stamps = table.columns["systemmodstamp"].to_json(chosen)
        latest = _format_stamp(min(end, self.org.now_ms()))
        if deleted:
            return self._json(
                {
                    "deletedRecords": [
                        {"id": i, "deletedDate": s} for i, s in zip(ids, stamps, strict=True)
                    ],
                    "earliestDateAvailable": _format_stamp(
                        int(self.org.data.users.created_at.min(initial=0))
                    ),
                    "latestDateCovered": latest,
                }
            )
        return self._json({"ids": ids, "latestDateCovered": latest})

    # ---- sObject Collections ----------------------------------------------------------------

    def on_collections(self, request: Request, user_row: int, version: str) -> Response:
        if request.method == "DELETE":
            ids = [i for i in request.args.get("ids", "").split(",") if i]
            all_or_none = request.args.get("allOrNone", "false").lower() == "true"
            if not ids or len(ids) > MAX_COLLECTION_RECORDS:
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"ids: between 1 and {MAX_COLLECTION_RECORDS} ids are required",
                )
            results = []
            for record_id in ids:
                table = next(
                    (t for t in self.org.tables.values() if t.sobject.key_prefix == record_id[:3]),
                    None,
                )
                try:
                    if table is None:
                        raise RecordError("MALFORMED_ID", f"invalid record id: {record_id}", ["Id"])
                    self.org.delete(table.name, record_id, user_row=user_row)
                    results.append({"id": record_id, "success": True, "errors": []})
                except RecordError as exc:
                    results.append({"id": record_id, "success": False, "errors": [exc.as_result()]})
            del all_or_none
            return self._json(results)
        body = self._collection_body(request)
        creating = request.method == "POST"
        return self._json(
            self._write_collection(
                request, body, user_row, creating=creating, ext_field=None, sobject=None
            )
        )

    def on_collections_typed(
        self, request: Request, user_row: int, version: str, sobject: str
    ) -> Response:
        """``composite/sobjects/{Type}``: retrieve (GET, or POST with ids), and the forms with
        the type in the URL that Salesforce's Postman collection uses for update and delete."""
        if request.method == "PATCH":
            body = self._collection_body(request)
            return self._json(
                self._write_collection(
                    request, body, user_row, creating=False, ext_field=None, sobject=sobject
                )
            )
        if request.method == "DELETE":
            self._table(sobject)
            return self.on_collections(request, user_row, version)
        table = self._table(sobject)
        if request.method == "POST":
            body = self._body(request) or {}
            ids, fields = body.get("ids", []), ",".join(body.get("fields", []))
        else:
            ids = [i for i in request.args.get("ids", "").split(",") if i]
            fields = request.args.get("fields", "")
        if not fields:
            raise SalesforceError(400, "MALFORMED_QUERY", "The 'fields' parameter is required")
        out: list[Any] = []
        with self.org.lock:
            for record_id in ids:
                try:
                    out.append(
                        self._record(table, self.org.find_row(table, record_id), version, fields)
                    )
                except RecordError:
                    out.append(None)
        return self._json(out)

    def on_collections_upsert(
        self, request: Request, user_row: int, version: str, sobject: str, ext_field: str
    ) -> Response:
        body = self._collection_body(request)
        return self._json(
            self._write_collection(
                request, body, user_row, creating=True, ext_field=ext_field, sobject=sobject
            )
        )

    def _collection_body(self, request: Request) -> dict[str, Any]:
        body = self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SalesforceError(
                400,
                "JSON_PARSER_ERROR",
                "The request body must be an object with a 'records' array",
            )
        records = body["records"]
        if not records:
            raise SalesforceError(400, "INVALID_FIELD", "No records to process")
        if len(records) > MAX_COLLECTION_RECORDS:
            raise SalesforceError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS}"
                " records into this call",
            )
        for record in records:
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("attributes"), dict)
                or not record["attributes"].get("type")
            ):
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    "Each record needs an 'attributes' object with its sObject 'type'",
                )
        return body

    def _write_collection(
        self,
        request: Request,
        body: dict[str, Any],
        user_row: int,
        *,
        creating: bool,
        ext_field: str | None,
        sobject: str | None,
    ) -> list[dict[str, Any]]:
        all_or_none = bool(body.get("allOrNone", False))
        records: list[dict[str, Any]] = body["records"]
        results: list[dict[str, Any] | None] = [None] * len(records)
        with self.org.lock:
            undo: list[Callable[[], None]] = []
            failed = False
            for position, record in enumerate(records):
                sobject_name = record["attributes"]["type"]
                if sobject is not None and sobject_name.lower() != sobject.lower():
                    results[position] = _failure(
                        RecordError(
                            "INVALID_FIELD",
                            f"Record type {sobject_name} does not match the URL's {sobject}",
                        )
                    )
                    failed = True
                    continue
                values = {k: v for k, v in record.items() if k != "attributes"}
                record_id = values.pop("id", None) or values.pop("Id", None)
                try:
                    table = self.org.table(sobject_name)
                    if table is None:
                        raise RecordError(
                            "INVALID_TYPE", f"sObject type '{sobject_name}' is not supported."
                        )
                    fault = self.faults.failing_record(record_id, request.method, request.path)
                    if fault is not None:
                        raise RecordError(
                            "UNABLE_TO_LOCK_ROW",
                            "unable to obtain exclusive access to this record or 1 records",
                        )
                    row, values = self._target_row(
                        table, values, record_id, creating=creating, ext_field=ext_field
                    )
                    undo.append(self._undo_for(table, row, values))
                    outcome = self.org.write(table.name, values, user_row=user_row, row=row)
                    result: dict[str, Any] = {
                        "id": outcome.record_id,
                        "success": True,
                        "errors": [],
                    }
                    if ext_field is not None:
                        result["created"] = outcome.created
                    results[position] = result
                except RecordError as exc:
                    results[position] = _failure(exc, record_id)
                    failed = True
            if all_or_none and failed:
                for action in reversed(undo):
                    action()
                rolled_back = {
                    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "message": "Record rolled back because not all records were valid and"
                    " the request was using AllOrNone header",
                    "fields": [],
                }
                results = [
                    r
                    if r is not None and not r["success"]
                    else {
                        "success": False,
                        "errors": [rolled_back],
                        **({"id": r["id"]} if r and not creating else {}),
                    }
                    for r in results
                ]
        return [r for r in results if r is not None]

    def _target_row(
        self,
        table: Any,
        values: dict[str, Any],
        record_id: str | None,
        *,
        creating: bool,
        ext_field: str | None,
    ) -> tuple[int | None, dict[str, Any]]:
        """The row one record of a collection writes (None: a new one), and its values (an
        upsert's key field is not written again)."""
        if ext_field is not None:
            key = next((v for k, v in values.items() if k.lower() == ext_field.lower()), None)
            if key is None:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{ext_field}]",
                    [ext_field],
                )
            rows = self.org.find_by_external_id(table, ext_field, str(key))
            if len(rows) > 1:
                raise RecordError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"{ext_field}: more than one record found for external id"
                    f" field: {[table.id_of(r) for r in rows]}",
                    [ext_field],
                )
            row = rows[0] if rows else None
            if row is not None:
                values = {k: v for k, v in values.items() if k.lower() != ext_field.lower()}
        elif creating:
            if record_id:
                raise RecordError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
            row = None
        else:
            if not record_id:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
            row = self.org.find_row(table, record_id)
        return row, values

    def _undo_for(self, table: Any, row: int | None, values: dict[str, Any]) -> Callable[[], None]:
        """How to take back one write of an allOrNone batch (history rows included)."""
        sizes = {name: t.size for name, t in self.org.tables.items()}
        if row is None:

            def undo_insert() -> None:
                for name, size in sizes.items():
                    self.org.tables[name].size = size

            return undo_insert
        rows = np.array([row])
        saved = {
            name: column.to_json(rows)[0]
            for name, column in table.columns.items()
            if column.writable
        }
        raw = {name: getattr(column, "data", None) for name, column in table.columns.items()}
        stamps = {
            name: (raw[name][row] if raw[name] is not None else None)
            for name in ("systemmodstamp", "lastmodifieddate", "lastmodifiedbyid")
        }

        def undo_update() -> None:
            for name, size in sizes.items():
                self.org.tables[name].size = size
            for name, value in saved.items():
                # A value read back from the same column always fits it again.
                with contextlib.suppress(FieldValueError):
                    table.columns[name].set(row, value)
            for name, value in stamps.items():
                column = table.columns.get(name)
                if value is not None and column is not None:
                    column.data[row] = value  # type: ignore[attr-defined]

        return undo_update

    # ---- Tooling API: custom fields and objects ---------------------------------------------

    def on_tooling_create(
        self, request: Request, user_row: int, version: str, sobject: str
    ) -> Response:
        body = self._body(request)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("Metadata"), dict)
            or not isinstance(body.get("FullName"), str)
        ):
            raise SalesforceError(
                400, "JSON_PARSER_ERROR", "The body must hold FullName and Metadata"
            )
        metadata = body["Metadata"]
        try:
            if sobject.lower() == "customobject":
                name_field = metadata.get("nameField") or {}
                table = self.org.create_custom_object(
                    body["FullName"],
                    str(metadata.get("label", body["FullName"])),
                    str(metadata.get("pluralLabel", metadata.get("label", body["FullName"]))),
                    str(name_field.get("label", "Name")),
                )
                return self._json(
                    {
                        "id": make_id("01I", len(self.org.tables)),
                        "success": True,
                        "errors": [],
                        "warnings": [],
                        "infos": [],
                        "keyPrefix": table.sobject.key_prefix,
                    },
                    201,
                )
            if sobject.lower() == "customfield":
                object_name, _, field_name = body["FullName"].partition(".")
                field_type = _TOOLING_TYPES.get(str(metadata.get("type", "")).lower())
                if field_type is None:
                    raise RecordError(
                        "FIELD_INTEGRITY_EXCEPTION",
                        f"Unsupported field type: {metadata.get('type')}",
                    )
                self.org.create_custom_field(
                    object_name,
                    field_name,
                    field_type,
                    str(metadata.get("label", field_name)),
                    length=int(metadata.get("length") or 0),
                    precision=int(metadata.get("precision") or 0),
                    scale=int(metadata.get("scale") or 0),
                    help_text=metadata.get("inlineHelpText"),
                    external_id=bool(metadata.get("externalId", False)),
                    unique=bool(metadata.get("unique", False)),
                    reference_to=metadata.get("referenceTo"),
                )
                return self._json(
                    {
                        "id": make_id("00N", sum(len(t.columns) for t in self.org.tables.values())),
                        "success": True,
                        "errors": [],
                        "warnings": [],
                        "infos": [],
                    },
                    201,
                )
        except RecordError as exc:
            raise SalesforceError(400, exc.code, exc.message, exc.fields) from None
        raise SalesforceError(
            404, "NOT_FOUND", f"The Tooling API sObject {sobject} is not supported by the sandbox"
        )

    # ---- admin (not part of Salesforce's API) -----------------------------------------------

    def on_admin_expire(self, request: Request) -> Response:
        self.expire_sessions()
        return Response(status=204)


_TOOLING_TYPES = {
    "number": "double",
    "currency": "currency",
    "percent": "percent",
    "checkbox": "boolean",
    "date": "date",
    "datetime": "datetime",
    "text": "string",
    "textarea": "textarea",
    "longtextarea": "textarea",
    "picklist": "picklist",
    "email": "email",
    "url": "url",
    "lookup": "reference",
}


def _failure(exc: RecordError, record_id: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"success": False, "errors": [exc.as_result()]}
    if record_id:
        result = {"id": record_id, **result}
    return result


def _batch_size(header: str) -> int:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "batchsize" and value.strip().isdigit():
            return min(max(int(value), MIN_BATCH_SIZE), DEFAULT_BATCH_SIZE)
    return DEFAULT_BATCH_SIZE


def _parse_stamp(text: str) -> int:
    from crm_kpi_worker.sandbox.salesforce.store import parse_datetime

    return int(parse_datetime(text).timestamp() * 1000)


def _format_stamp(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _soap_fault(code: str, message: str) -> Response:
    text = escape(message)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:sf="urn:fault.partner.soap.sforce.com"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {text}</faultstring>"
        '<detail><sf:LoginFault xsi:type="sf:LoginFault">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{text}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(body, status=500, content_type="text/xml;charset=UTF-8")


def _oauth_error(code: str, description: str) -> Response:
    return Response(
        json.dumps({"error": code, "error_description": description}),
        status=400,
        content_type="application/json;charset=UTF-8",
    )


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
        credentials: Credentials = Credentials(),
        api_limit: int = DEFAULT_API_LIMIT,
        workdir: Path | None = None,
        fault_seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        tls = self._prepare(host, workdir, "crm-kpi-sandbox-")
        self.jwt_key_path, public_key = _make_jwt_key(self.workdir)
        self.org = SandboxOrg(dataset, clock=clock)
        self.app = SalesforceSandboxApp(
            self.org,
            credentials=credentials,
            api_limit=api_limit,
            jwt_public_key=public_key,
            faults=FaultPlan(fault_seed),
        )
        self.credentials = credentials
        org = self.org
        self._bind(self.app, tls, host, port, lambda: org.now_ms() / 1000)
        self.app.base_url = self.url

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

    def describe(self) -> Iterator[str]:
        """The lines the CLI prints when the sandbox starts."""
        yield f"Sandbox Salesforce listening on {self.url}"
        yield f"  CA certificate (trust it as ca_bundle): {self.ca_path}"
        creds = self.credentials
        yield f"  username {creds.username} / password {creds.password} (no security token)"
        yield f"  OAuth client id / secret: {creds.client_id} / {creds.client_secret}"
        yield f"  JWT bearer: consumer key {creds.client_id}, private key {self.jwt_key_path}"
        yield f"  login_url for a config: {self.url}"
        data = self.org.data
        yield (
            f"  data: seed {data.seed}, reference date {data.reference_date}, "
            f"{len(data.deals)} opportunities, {len(data.users)} users,"
            f" API limit {self.app.api_limit}/day"
        )


def _make_jwt_key(directory: Path) -> tuple[Path, bytes]:
    """The connected app's key pair for the JWT bearer flow: private half on disk for clients."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "sandbox-jwt-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public
