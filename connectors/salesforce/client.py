"""The Salesforce client: simple-salesforce on the project's transport, logged in per config.

- The ``requests`` session comes from :func:`connectors.http.build_session` (CA bundle,
  timeout on every call, and, when ``login_url`` is set, routes sending
  ``login``/``test``/``<domain>.salesforce.com`` to it), with :class:`RetryingAdapter` around
  its transport: the one retry policy, and the API call count (logins excluded).
- The auth methods of the config map onto simple-salesforce's own login flows; the refresh
  token flow, which the library lacks, is its token login with a ``refresh_token`` grant,
  given to the client as its way of logging in, so an expired session is renewed by the
  library's own path like the others. Secrets are resolved only here, handed to the library,
  and registered so no error shows them.
- :class:`SalesforceClient` adds three things to ``simple_salesforce.Salesforce``: the
  ``Sforce-Query-Options: batchSize`` header on every call (kept across re-logins), an
  instance pinned by the config's ``instance_url``, and exactly one retry after a re-login
  (the library's own loop would log in up to three times for one call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests
from simple_salesforce import Salesforce
from simple_salesforce.login import token_login

from crm_kpi_worker.connectors.errors import register_secret
from crm_kpi_worker.connectors.failures import ErrorWording
from crm_kpi_worker.connectors.http import build_session
from crm_kpi_worker.connectors.retry import RetryingAdapter, RetryPolicy
from crm_kpi_worker.connectors.salesforce.config import (
    SalesforceClientCredentials,
    SalesforceJwt,
    SalesforceOAuthPassword,
    SalesforcePassword,
    SalesforceRefreshToken,
    SalesforceSession,
    SalesforceSource,
)
from crm_kpi_worker.connectors.salesforce.settings import ERROR_RULES

__all__ = ["LOGIN_PATHS", "SalesforceClient", "is_login", "open_client", "username_of"]

log = logging.getLogger(__name__)

USER_AGENT = "crm-kpi-worker (simple-salesforce)"
#: Paths of the login endpoints (SOAP login, OAuth token): not API calls.
LOGIN_PATHS = ("/services/Soap/u/", "/services/oauth2/token")


def is_login(request: requests.PreparedRequest) -> bool:
    path = urlsplit(request.url or "").path
    return any(path.startswith(prefix) for prefix in LOGIN_PATHS)


#: A login flow: (session id, instance host[:port]) of a new session.
Login = Callable[[], tuple[str, str]]


class SalesforceClient(Salesforce):
    """``simple_salesforce.Salesforce`` with the additions listed in the module doc."""

    def __init__(
        self,
        *,
        page_size: int,
        pinned_instance: str | None,
        login: Login | None = None,
        **kwargs: Any,
    ) -> None:
        """``login``: a flow the library does not have, (session id, instance) on each call;
        it logs in now and renews an expired session."""
        # Set before the library's __init__, which logs in and builds headers.
        self._page_size = page_size
        self._pinned_instance = pinned_instance
        if login is not None:
            session_id, instance = login()
            kwargs.update(session_id=session_id, instance=instance)
        super().__init__(**kwargs)
        if login is not None:
            # The library's renewal calls it (it holds its own flows as partials).
            self._salesforce_login_partial = partial(login)
        if pinned_instance:
            self._use_instance(pinned_instance)
        self._generate_headers()  # __init__ sets headers without calling it
        register_secret(self.session_id)

    @property
    def can_log_in(self) -> bool:
        """False for an existing session id: nobody can renew it for us."""
        return self._salesforce_login_partial is not None

    def _generate_headers(self) -> None:
        super()._generate_headers()
        self.headers["Sforce-Query-Options"] = f"batchSize={self._page_size}"

    @property
    def mdapi(self) -> Any:
        """The library's Metadata API client (zeep), sending its calls through this client's
        ``requests`` session: the same CA trust, timeout, retry policy and call count. (zeep
        would otherwise open a session of its own.)"""
        if self._mdapi is None:
            from zeep.transports import Transport

            api = super().mdapi
            agent = self.session.headers.get("User-Agent")
            api._client.transport = Transport(session=self.session)
            if agent is not None:  # zeep's Transport writes its own into the session
                self.session.headers["User-Agent"] = agent
        return self._mdapi

    def _refresh_session(self) -> None:
        # The library's __init__ logs in through this method too: only a second login is a
        # renewal worth a line.
        if self.__dict__.get("session_id"):  # (the library answers any other name)
            log.info("Salesforce session expired: logging in again")
        super()._refresh_session()
        self._mdapi = None  # its SOAP header holds the old session id
        register_secret(self.session_id)
        if self._pinned_instance:
            self._use_instance(self._pinned_instance)

    def _use_instance(self, netloc: str) -> None:
        self.sf_instance = netloc
        version = self.sf_version
        self.base_url = f"https://{netloc}/services/data/v{version}/"
        self.apex_url = f"https://{netloc}/services/apexrest/"
        self.bulk_url = f"https://{netloc}/services/async/{version}/"
        self.bulk2_url = f"https://{netloc}/services/data/v{version}/jobs/"
        self.metadata_url = f"https://{netloc}/services/Soap/m/{version}/"
        self.tooling_url = f"{self.base_url}tooling/"
        self.oauth2_url = f"https://{netloc}/services/oauth2/"

    def _call_salesforce(  # type: ignore[override]
        self, method: str, url: str, name: str = "", retries: int = 0, **kwargs: Any
    ) -> requests.Response:
        if not retries:
            return super()._call_salesforce(method, url, name, **kwargs)
        # This is the retry after a re-login: a second INVALID_SESSION_ID is final (the
        # library would otherwise log in again, up to three times).
        login, self._salesforce_login_partial = self._salesforce_login_partial, None
        try:
            return super()._call_salesforce(method, url, name, retries=retries, **kwargs)
        finally:
            self._salesforce_login_partial = login


def username_of(source: SalesforceSource, environ: Mapping[str, str] | None = None) -> str | None:
    """The integration user's username, for the auth methods that name one."""
    auth = source.auth
    if isinstance(auth, SalesforcePassword | SalesforceOAuthPassword | SalesforceJwt):
        return auth.username.resolve(environ).get_secret_value()
    return None


def _secret(ref: Any, environ: Mapping[str, str] | None) -> str:
    value: str = ref.resolve(environ).get_secret_value()
    register_secret(value)
    return value


def _login_arguments(
    source: SalesforceSource, environ: Mapping[str, str] | None, session: requests.Session
) -> dict[str, Any]:
    """simple-salesforce keyword arguments selecting the login flow of ``source.auth`` (or
    :class:`SalesforceClient`'s ``login`` for a flow the library does not have)."""
    auth = source.auth
    if isinstance(auth, SalesforceRefreshToken):
        return {"login": RefreshTokenLogin(source, auth, environ, session)}
    if isinstance(auth, SalesforcePassword):
        arguments: dict[str, Any] = {
            "username": auth.username.resolve(environ).get_secret_value(),
            "password": _secret(auth.password, environ),
            # An empty token selects the SOAP login too (trusted IP ranges need none).
            "security_token": (
                _secret(auth.security_token, environ) if auth.security_token else ""
            ),
        }
        if auth.client_id is not None:
            arguments["client_id"] = auth.client_id.resolve(environ).get_secret_value()
        return arguments
    if isinstance(auth, SalesforceOAuthPassword):
        # The OAuth password flow takes the security token appended to the password.
        token = _secret(auth.security_token, environ) if auth.security_token else ""
        password = _secret(auth.password, environ) + token
        register_secret(password)
        return {
            "username": auth.username.resolve(environ).get_secret_value(),
            "password": password,
            "consumer_key": auth.client_id.resolve(environ).get_secret_value(),
            "consumer_secret": _secret(auth.client_secret, environ),
        }
    if isinstance(auth, SalesforceJwt):
        return {
            "username": auth.username.resolve(environ).get_secret_value(),
            "consumer_key": auth.client_id.resolve(environ).get_secret_value(),
            "privatekey": _secret(auth.private_key, environ),
        }
    if isinstance(auth, SalesforceClientCredentials):
        return {
            "consumer_key": auth.client_id.resolve(environ).get_secret_value(),
            "consumer_secret": _secret(auth.client_secret, environ),
        }
    if isinstance(auth, SalesforceSession):
        return {
            "session_id": _secret(auth.session_id, environ),
            "instance_url": auth.instance_url,
        }
    raise TypeError(f"unsupported Salesforce auth method {type(auth).__name__}")


class RefreshTokenLogin:
    """The OAuth 2.0 refresh token flow (``grant_type=refresh_token``) through the library's
    token login, so its answers and errors (``SalesforceAuthenticationFailed``) are those of
    the library's own OAuth flows. Salesforce answers a new access token each time and keeps
    the refresh token; its repr shows no secret."""

    def __init__(
        self,
        source: SalesforceSource,
        auth: SalesforceRefreshToken,
        environ: Mapping[str, str] | None,
        session: requests.Session,
    ) -> None:
        self.client_id = auth.client_id.resolve(environ).get_secret_value()
        self.domain = source.domain
        self.token_url = f"https://{source.domain}.salesforce.com/services/oauth2/token"
        self.session = session
        self._form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "refresh_token": _secret(auth.refresh_token, environ),
        }
        if auth.client_secret is not None:
            self._form["client_secret"] = _secret(auth.client_secret, environ)

    def __call__(self) -> tuple[str, str]:
        session_id, instance = token_login(
            self.token_url,
            self._form,
            self.domain,
            self.client_id,
            None,
            self.session.proxies,
            session=self.session,
        )
        return str(session_id), str(instance)

    def __repr__(self) -> str:
        return f"RefreshTokenLogin(client_id={self.client_id!r}, token_url={self.token_url!r})"


def login_routes(source: SalesforceSource) -> dict[str, str]:
    """Login hosts sent to ``login_url`` (none when it is not set)."""
    if source.login_url is None:
        return {}
    hosts = {"login.salesforce.com", "test.salesforce.com", f"{source.domain}.salesforce.com"}
    return dict.fromkeys(sorted(hosts), source.login_url)


def open_client(
    source: SalesforceSource,
    policy: RetryPolicy,
    environ: Mapping[str, str] | None = None,
) -> tuple[SalesforceClient, RetryingAdapter]:
    """Log in to ``source`` and return the client and its counting, retrying transport."""
    session = build_session(
        ca_bundle=source.ca_bundle,
        timeout=source.timeout_seconds,
        routes=login_routes(source),
        user_agent=USER_AGENT,
    )
    transport = RetryingAdapter(
        session.get_adapter("https://"),
        policy,
        is_login=is_login,
        wording=ErrorWording(rules=ERROR_RULES),
    )
    session.mount("https://", transport)
    session.mount("http://", transport)
    arguments = _login_arguments(source, environ, session)
    pinned = None
    if source.instance_url is not None and not isinstance(source.auth, SalesforceSession):
        pinned = urlsplit(source.instance_url).netloc
    client = SalesforceClient(
        page_size=source.page_size,
        pinned_instance=pinned,
        session=session,
        version=source.api_version,
        domain=source.domain,
        **arguments,
    )
    log.info(
        "source %s: connected to %s (auth %s, API v%s)",
        source.name,
        client.sf_instance,
        source.auth.method,
        source.api_version,
    )
    return client, transport
