"""The HTTP transport every connector's client library runs on.

One ``requests.Session`` per source, carrying one adapter that:

- trusts the system's CAs plus an optional extra CA bundle (a corporate proxy's, or the
  sandbox CRM's throwaway CA) through its own SSL context. ``requests`` lets the
  ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` environment variables override ``session.verify``,
  so a path in ``session.verify`` is not enough; the adapter ignores the per-request bundle
  path and always verifies against its own context;
- puts a timeout on every call that has none (simple-salesforce sets none, and a worker that
  hangs silently for days is the classic failure);
- optionally sends requests for some hosts to another base URL. simple-salesforce logs in at
  ``https://{domain}.salesforce.com`` whatever the instance is; routing that host is how a
  login reaches the sandbox CRM or a login proxy, without patching the library.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

if TYPE_CHECKING:
    # Typed dicts of types-requests' stub only (requests has no such names at run time).
    from requests.adapters import _HostParams, _PoolKwargs

DEFAULT_TIMEOUT_SECONDS = 30.0


def build_ssl_context(ca_bundle: str | Path | None = None) -> ssl.SSLContext:
    """The system's default trust store, plus ``ca_bundle`` (a PEM file) when given."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        path = Path(ca_bundle)
        if not path.is_file():
            raise FileNotFoundError(f"CA bundle {str(path)!r} does not exist or is not a file")
        try:
            context.load_verify_locations(cafile=str(path))
        except ssl.SSLError as exc:
            raise ValueError(
                f"CA bundle {str(path)!r} holds no usable PEM certificate: {exc}"
            ) from None
    return context


class TransportAdapter(HTTPAdapter):
    """TLS trust from one SSL context, a default timeout, and host routing (see module doc)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        routes: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._routes = {host.lower(): base.rstrip("/") for host, base in (routes or {}).items()}
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self._ssl_context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def build_connection_pool_key_attributes(
        self,
        request: requests.PreparedRequest,
        verify: bool | str,
        cert: str | tuple[str, str] | None = None,
    ) -> tuple[_HostParams, _PoolKwargs]:
        # Drop any bundle path (from the environment or session.verify): the context decides.
        return super().build_connection_pool_key_attributes(request, True, cert)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, True, cert)
        # Without these the pool would load requests' default bundle into our context.
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        if self._routes and request.url:
            request.url = self._route(request.url)
        return super().send(request, **kwargs)

    def _route(self, url: str) -> str:
        parts = urlsplit(url)
        base = self._routes.get((parts.hostname or "").lower())
        if base is None:
            return url
        target = urlsplit(base)
        return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, ""))


def build_session(
    *,
    ca_bundle: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    routes: Mapping[str, str] | None = None,
    user_agent: str | None = None,
) -> requests.Session:
    """A session for one CRM source. ``routes`` maps host names to base URLs (see module doc)."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    for host, base in (routes or {}).items():
        if urlsplit(base).scheme != "https":
            raise ValueError(f"route for {host!r} must be an https:// URL, got {base!r}")
    session = requests.Session()
    adapter = TransportAdapter(
        ssl_context=build_ssl_context(ca_bundle), timeout=timeout, routes=routes
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if user_agent:
        session.headers["User-Agent"] = user_agent
    return session
