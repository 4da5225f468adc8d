"""The HubSpot client: hubspot-api-client's ``hubspot.Client``, authenticated per config.

- ``Client.create(access_token=..., host=base_url, ssl_ca_cert=ca_bundle)``: the host and the
  CA bundle reach every generated API's ``Configuration`` (the sandbox, a TLS proxy).
- ``private_app``: the app's access token, as is. ``oauth``: the access token given, else one
  obtained with the refresh token (``POST /oauth/v1/token``, through the client's own
  ``oauth.tokens_api``); on a 401 the transport asks :meth:`HubSpotApis.renew` for a fresh one,
  once, when a refresh token is configured.
- Each generated API object owns an HTTP connection pool, so the connector builds each one
  once (:class:`HubSpotApis`) instead of through ``client.crm...`` on every call, which would
  open a new TLS connection per request.
- Secrets are resolved here only and registered, so no error or log line shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import urllib3

from crm_kpi_worker.connectors.errors import AuthenticationFailed, error_details, register_secret
from crm_kpi_worker.connectors.hubspot.config import HubSpotOAuth, HubSpotPrivateApp, HubSpotSource

__all__ = ["HubSpotApis"]

log = logging.getLogger(__name__)


class HubSpotApis:
    """The generated API objects the connector uses, built once, sharing one token."""

    def __init__(self, source: HubSpotSource, environ: Mapping[str, str] | None = None) -> None:
        import hubspot

        self.source = source
        auth = source.auth
        self._refresh: dict[str, str] | None = None
        token: str | None = None
        if isinstance(auth, HubSpotPrivateApp):
            token = auth.token.resolve(environ).get_secret_value()
        elif isinstance(auth, HubSpotOAuth):
            if auth.access_token is not None:
                token = auth.access_token.resolve(environ).get_secret_value()
            if auth.refresh_token is not None:
                assert auth.client_id is not None and auth.client_secret is not None
                self._refresh = {
                    "client_id": auth.client_id.resolve(environ).get_secret_value(),
                    "client_secret": auth.client_secret.resolve(environ).get_secret_value(),
                    "refresh_token": auth.refresh_token.resolve(environ).get_secret_value(),
                }
                register_secret(self._refresh["client_secret"])
                register_secret(self._refresh["refresh_token"])
        # No retry inside urllib3: the transport's policy is the one retry (and counts calls).
        options: dict[str, Any] = {
            "host": source.base_url,
            "retry": urllib3.Retry(total=0, redirect=0, raise_on_status=False),
        }
        if source.ca_bundle is not None:
            options["ssl_ca_cert"] = str(source.ca_bundle)
        self.client = hubspot.Client.create(access_token=token or "", **options)
        self.timeout = source.timeout_seconds
        if token is None:
            self.renew()
        else:
            register_secret(token)
        crm = self.client.crm
        self.objects_search = crm.objects.search_api
        self.objects_basic = crm.objects.basic_api
        self.objects_batch = crm.objects.batch_api
        self.owners = crm.owners.owners_api
        self.pipelines = crm.pipelines.pipelines_api
        self.properties = crm.properties.core_api
        self.properties_batch = crm.properties.batch_api
        self.property_groups = crm.properties.groups_api
        self.schemas = crm.schemas.core_api
        self._apis = (
            self.objects_search,
            self.objects_basic,
            self.objects_batch,
            self.owners,
            self.pipelines,
            self.properties,
            self.properties_batch,
            self.property_groups,
            self.schemas,
        )

    @property
    def can_renew(self) -> bool:
        return self._refresh is not None

    def renew(self) -> bool:
        """Get a fresh OAuth access token with the refresh token; False when none is set."""
        if self._refresh is None:
            return False
        try:
            answer = self.client.oauth.tokens_api.create(
                grant_type="refresh_token", _request_timeout=self.timeout, **self._refresh
            )
        except Exception as exc:
            if not hasattr(exc, "status"):
                raise
            code, message = error_details(getattr(exc, "body", None))
            raise AuthenticationFailed(
                f"source '{self.source.name}': HubSpot refused to refresh the OAuth access"
                f" token: {message or code or exc.status}; check client_id, client_secret and"
                " refresh_token",
                status=getattr(exc, "status", None),
                code=code,
            ) from None
        token = getattr(answer, "access_token", None)
        if not token:
            raise AuthenticationFailed(
                f"source '{self.source.name}': HubSpot's token answer holds no access token"
            )
        register_secret(token)
        log.info("source %s: obtained a fresh OAuth access token", self.source.name)
        self.client.access_token = token
        for api in getattr(self, "_apis", ()):
            api.api_client.configuration.access_token = token
        return True
