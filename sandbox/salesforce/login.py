"""The sandbox Salesforce's logins and sessions: SOAP ``login()``, the OAuth token endpoint
(password, client credentials, JWT bearer and refresh token grants), token revocation, the
sessions they issue, the check of a request's session, and the key pair of the JWT bearer flow.

Refresh tokens come from the web server or user-agent flows on Salesforce, which need a
browser; the sandbox issues them instead: one given in its credentials
(``Credentials.refresh_token``, for the integration user) and any number from
``POST /_sandbox/refresh-tokens`` (``{"username": ...}``, the integration user by default).
They live until revoked (``POST /services/oauth2/revoke``), which also ends the sessions they
opened; expiring sessions (``/_sandbox/expire-sessions``, the ``expire_session`` fault)
leaves them valid, as Salesforce's session timeout does.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import jwt
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.salesforce.catalog import ORG_ID
from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.routes import OrgRoutes, SalesforceError

DEFAULT_USERNAME = "demo@sandbox.local"
DEFAULT_PASSWORD = "demo"  # noqa: S105 - the sandbox's documented, public credential
DEFAULT_CLIENT_ID = "sandbox"
DEFAULT_CLIENT_SECRET = "sandbox"  # noqa: S105 - the sandbox's documented, public credential


@dataclass(frozen=True)
class Credentials:
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    #: A refresh token the org honours for the integration user from the start (None: only
    #: the ones issued by ``/_sandbox/refresh-tokens``).
    refresh_token: str | None = None
    #: The connected app's "Require Secret for Refresh Token Flow": off, a refresh token
    #: grant may leave client_secret out (a wrong one is still refused).
    refresh_needs_secret: bool = True

    def __repr__(self) -> str:  # the sandbox's defaults are public; custom ones may not be
        return f"Credentials(username={self.username!r}, client_id={self.client_id!r})"


DEFAULT_CREDENTIALS = Credentials()


@dataclass
class RefreshTokens:
    """The refresh tokens the org honours (token -> user row), and the sessions each opened."""

    users: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, credentials: Credentials, admin_row: int) -> RefreshTokens:
        tokens = cls()
        if credentials.refresh_token:
            tokens.users[credentials.refresh_token] = admin_row
        return tokens

    def issue(self, user_row: int) -> str:
        token = f"5Aep861{secrets.token_urlsafe(64)}"
        with self.lock:
            self.users[token] = user_row
        return token

    def user_of(self, token: str) -> int | None:
        with self.lock:
            return self.users.get(token)

    def opened(self, token: str, session: str) -> None:
        with self.lock:
            self.sessions.setdefault(token, set()).add(session)

    def revoke(self, token: str) -> set[str] | None:
        """Forget ``token``: the sessions it opened (None: not a refresh token)."""
        with self.lock:
            if self.users.pop(token, None) is None:
                return None
            return self.sessions.pop(token, set())


class LoginRoutes(OrgRoutes):
    """Logins (not counted as API calls) and the sessions they open."""

    credentials: Credentials
    jwt_public_key: bytes | None
    refresh_tokens: RefreshTokens
    _sessions: dict[str, int]  # access token -> user row

    def _authenticate(self, request: Request) -> int:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        with self._lock:
            user = self._sessions.get(token) if scheme.lower() in {"bearer", "oauth"} else None
        if user is None:
            raise SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        request.environ["sandbox.token"] = token
        return user

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def new_session(self, user_row: int) -> str:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(48)}"
        with self._lock:
            self._sessions[token] = user_row
        return token

    def login_user(self, username: str | None, password: str | None) -> int | None:
        """The user row a username and password log in as: the integration admin with the
        sandbox's credentials, or any active user by Username with the same password."""
        if password != self.credentials.password or not username:
            return None
        if username == self.credentials.username:
            return self.org.admin_row
        return self.user_by_username(username)

    def user_by_username(self, username: str) -> int | None:
        with self.org.lock:
            users = self.org.tables["user"]
            rows = np.arange(users.size)
            names = users.columns["username"].to_json(rows)
            active = users.columns["isactive"].to_json(rows)
        for row, (name, is_active) in enumerate(zip(names, active, strict=True)):
            if is_active and name and name.casefold() == username.casefold():
                return row
        return None

    def _user_info(self, user_row: int) -> dict[str, str]:
        rows = np.array([user_row])
        users = self.org.tables["user"]
        return {
            name: str(users.columns[name.lower()].to_json(rows)[0])
            for name in ("Username", "Name", "Email", "ProfileId")
        }

    def on_soap_login(self, request: Request, version: str, org: str | None = None) -> Response:
        try:
            root = ElementTree.fromstring(request.get_data())  # noqa: S314 - loopback test server
            values = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
        except ElementTree.ParseError:
            values = {}
        user_row = self.login_user(values.get("username"), values.get("password"))
        if user_row is None:
            return _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        token = self.new_session(user_row)
        user_id = make_id("005", user_row)
        server = f"{self.base_url}/services/Soap/u/{version}/{ORG_ID[:15]}"
        details = self._user_info(user_row)
        user = escape(details["Username"])
        info = {
            "currencySymbol": None,
            "orgAttachmentFileSizeLimit": "5242880",
            "orgDefaultCurrencyIsoCode": None,
            "orgDisallowHtmlAttachments": "false",
            "orgHasPersonAccounts": "false",
            "organizationId": ORG_ID,
            "organizationMultiCurrency": "true",
            "organizationName": "crm-kpi-worker sandbox",
            "profileId": details["ProfileId"],
            "roleId": None,
            "sessionSecondsValid": "7200",
            "userDefaultCurrencyIsoCode": self.org.data.reporting_currency,
            "userEmail": escape(details["Email"]),
            "userFullName": escape(details["Name"]),
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
        grant = request.form.get("grant_type", "")
        check = _GRANTS.get(grant)
        if check is None:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        outcome = check(self, request)
        if isinstance(outcome, Response):
            return outcome
        token = self.new_session(outcome)
        body: dict[str, Any] = {
            "access_token": token,
            "instance_url": self.base_url,
            "id": f"https://login.salesforce.com/id/{ORG_ID}/{make_id('005', outcome)}",
            "token_type": "Bearer",
            "issued_at": str(self.org.now_ms()),
        }
        if grant == "refresh_token":
            # The new access token only: the refresh token stays the one the client holds.
            self.refresh_tokens.opened(request.form["refresh_token"], token)
            body["scope"] = "api refresh_token"
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            body["scope"] = "api"
        else:
            body["signature"] = base64.b64encode(secrets.token_bytes(32)).decode()
        return self._json(body)

    def _password_grant(self, request: Request) -> int | Response:
        form = request.form
        if (
            form.get("client_id") != self.credentials.client_id
            or form.get("client_secret") != self.credentials.client_secret
        ):
            return _oauth_error("invalid_client_id", "client identifier invalid")
        user_row = self.login_user(form.get("username"), form.get("password"))
        if user_row is None:
            return _oauth_error("invalid_grant", "authentication failure")
        return user_row

    def _client_credentials_grant(self, request: Request) -> int | Response:
        form = request.form
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if scheme.lower() != "basic":
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if client_id != self.credentials.client_id or secret != self.credentials.client_secret:
            return _oauth_error("invalid_client", "invalid client credentials")
        return self.org.admin_row

    def _jwt_grant(self, request: Request) -> int | Response:
        problem, user_row = self._check_jwt(request.form.get("assertion", ""))
        if problem is not None:
            return _oauth_error("invalid_grant", problem)
        assert user_row is not None
        return user_row

    def _refresh_token_grant(self, request: Request) -> int | Response:
        """OAuth 2.0 refresh token flow: the connected app's consumer key, its secret (unless
        the app does not require it for this flow) and a refresh token the org honours."""
        form = request.form
        if form.get("client_id") != self.credentials.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        secret = form.get("client_secret")
        if (secret is None and self.credentials.refresh_needs_secret) or (
            secret is not None and secret != self.credentials.client_secret
        ):
            return _oauth_error("invalid_client", "invalid client credentials")
        user_row = self.refresh_tokens.user_of(form.get("refresh_token", ""))
        if user_row is None:
            return _oauth_error("invalid_grant", "expired access/refresh token")
        return user_row

    def issue_refresh_token(self, username: str | None = None) -> str:
        """A refresh token for the integration user or the active user named ``username``
        (ValueError when there is none)."""
        if username is None or username == self.credentials.username:
            return self.refresh_tokens.issue(self.org.admin_row)
        user_row = self.user_by_username(username)
        if user_row is None:
            raise ValueError(f"no active user has the username {username!r}")
        return self.refresh_tokens.issue(user_row)

    def on_oauth_userinfo(self, request: Request, user_row: int) -> Response:
        """``/services/oauth2/userinfo``: who the session's user is (OpenID Connect claims,
        Salesforce's ``user_id`` and ``organization_id`` among them). Counted as an API call
        here (the worker's budget counts it so too: the safe side)."""
        details = self._user_info(user_row)
        user_id = make_id("005", user_row)
        body = {
            "sub": f"https://login.salesforce.com/id/{ORG_ID}/{user_id}",
            "user_id": user_id,
            "organization_id": ORG_ID,
            "preferred_username": details["Username"],
            "name": details["Name"],
            "email": details["Email"],
            "active": True,
            "user_type": "STANDARD",
        }
        return Response(json.dumps(body), status=200, mimetype="application/json")

    def on_oauth_revoke(self, request: Request) -> Response:
        """``/services/oauth2/revoke``: a refresh token (and the sessions it opened) or one
        access token; 400 ``invalid_token`` for anything else."""
        token = request.form.get("token") or request.args.get("token") or ""
        sessions = self.refresh_tokens.revoke(token)
        with self._lock:
            if sessions is None and self._sessions.pop(token, None) is None:
                return _oauth_error("invalid_token", "invalid token")
            for session in sessions or ():
                self._sessions.pop(session, None)
        return Response(status=200)

    def on_admin_refresh_tokens(self, request: Request) -> Response:
        """``POST /_sandbox/refresh-tokens`` ``{"username": ...}`` (optional): a new refresh
        token for that user (the integration user by default)."""
        try:
            body = json.loads(request.get_data(as_text=True) or "{}")
            username = body.get("username") if isinstance(body, dict) else None
            token = self.issue_refresh_token(username)
        except (ValueError, AttributeError) as exc:
            return self._json({"error": str(exc)}, 400)
        return self._json(
            {"refresh_token": token, "username": username or self.credentials.username}, 201
        )

    def _check_jwt(self, assertion: str) -> tuple[str | None, int | None]:
        """(the problem, None) or (None, the user row the assertion's subject names)."""
        if self.jwt_public_key is None:
            return "invalid assertion", None
        try:
            claims = jwt.decode(
                assertion,
                self.jwt_public_key,
                algorithms=["RS256"],
                options={"require": ["exp", "iss", "sub", "aud"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            return "expired authorization code", None
        except jwt.PyJWTError:
            return "invalid assertion", None
        audience = str(claims.get("aud", ""))
        if not (audience.startswith("https://") and audience.endswith(".salesforce.com")):
            return "audience is invalid", None
        if claims.get("iss") != self.credentials.client_id:
            return "invalid client credentials", None
        subject = str(claims.get("sub", ""))
        if subject == self.credentials.username:
            return None, self.org.admin_row
        user_row = self.user_by_username(subject)
        if user_row is None:
            return "user hasn't approved this consumer", None
        return None, user_row

    def on_admin_expire(self, request: Request) -> Response:
        self.expire_sessions()
        return Response(status=204)


_GRANTS: dict[str, Callable[[LoginRoutes, Request], int | Response]] = {
    "password": LoginRoutes._password_grant,
    "client_credentials": LoginRoutes._client_credentials_grant,
    "urn:ietf:params:oauth:grant-type:jwt-bearer": LoginRoutes._jwt_grant,
    "refresh_token": LoginRoutes._refresh_token_grant,
}


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
