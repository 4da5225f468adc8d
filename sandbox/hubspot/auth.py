"""The sandbox HubSpot's authentication: the private-app token, OAuth access tokens from
``POST /oauth/v1/token`` (refresh-token grant, 30 minutes), the check of a request's Bearer
token and the expiry of tokens (``/_sandbox/expire-tokens``)."""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from typing import NamedTuple

from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.hubspot.formats import stamp
from crm_kpi_worker.sandbox.hubspot.routes import JSON_TYPE, HubSpotError, PortalRoutes

DEFAULT_TOKEN = "pat-sandbox-demo"  # noqa: S105 - the sandbox's documented, public credential
DEFAULT_CLIENT_ID = "sandbox-client-id"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"  # noqa: S105 - public sandbox credential
DEFAULT_REFRESH_TOKEN = "sandbox-refresh-token"  # noqa: S105 - public sandbox credential
ACCESS_TOKEN_SECONDS = 1800


class OAuthCredentials(NamedTuple):
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    refresh_token: str = DEFAULT_REFRESH_TOKEN


DEFAULT_OAUTH = OAuthCredentials()


@dataclass
class _Auth:
    token: str
    oauth: bool


class AuthRoutes(PortalRoutes):
    """Who may call: tokens issued, checked and expired."""

    token: str
    oauth: OAuthCredentials
    _access_tokens: dict[str, int]  # OAuth access token -> expiry (portal ms)
    _private_expired: bool  # the private-app token answers one 401 when set

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


def _oauth_error(status: str, message: str) -> Response:
    return Response(
        json.dumps(
            {"status": status, "message": message, "correlationId": str(uuid.uuid4())},
            separators=(",", ":"),
        ),
        status=400,
        content_type=JSON_TYPE,
    )
