"""The sandbox Salesforce's OAuth 2.0 refresh token flow and token revocation, as Salesforce's
docs describe them: a new access token and no new refresh token, ``invalid_grant`` "expired
access/refresh token" for a token the org does not honour, the client secret required unless
the connected app says otherwise, and revocation ending the sessions a refresh token opened."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.server import Credentials, SalesforceSandbox

STANDING_TOKEN = "5Aep861-standing-sandbox-refresh-token"


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start(
        seed=7, credentials=Credentials(refresh_token=STANDING_TOKEN)
    ) as s:
        yield s


def _refresh(sandbox: SalesforceSandbox, token: str, **changes: Any) -> requests.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": "sandbox",
        "client_secret": "sandbox",
        "refresh_token": token,
        **changes,
    }
    form = {k: v for k, v in form.items() if v is not None}
    return sandbox.session().post(f"{sandbox.url}/services/oauth2/token", data=form)


def _limits(sandbox: SalesforceSandbox, access_token: str) -> int:
    session = sandbox.session()
    answer = session.get(
        f"{sandbox.url}/services/data/v59.0/limits",
        headers={"Authorization": f"Bearer {access_token}"},
    )
    return answer.status_code


def _revoke(sandbox: SalesforceSandbox, token: str) -> requests.Response:
    return sandbox.session().post(f"{sandbox.url}/services/oauth2/revoke", data={"token": token})


def test_a_refresh_token_gets_a_new_access_token_and_no_new_refresh_token(
    sandbox: SalesforceSandbox,
) -> None:
    answer = _refresh(sandbox, STANDING_TOKEN)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {
        "access_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert body["instance_url"] == sandbox.url and body["token_type"] == "Bearer"
    assert body["id"].endswith("/" + make_id("005", sandbox.org.admin_row))
    assert _limits(sandbox, body["access_token"]) == 200
    again = _refresh(sandbox, STANDING_TOKEN).json()  # the same refresh token, used again
    assert again["access_token"] != body["access_token"]
    assert sandbox.stats.login_calls == 2 and sandbox.stats.api_calls == 1


def test_a_token_the_org_does_not_honour_is_an_invalid_grant(sandbox: SalesforceSandbox) -> None:
    answer = _refresh(sandbox, "5Aep861-never-issued")
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_grant",
        "error_description": "expired access/refresh token",
    }


def test_the_connected_app_is_checked(sandbox: SalesforceSandbox) -> None:
    assert _refresh(sandbox, STANDING_TOKEN, client_id="other").json()["error"] == (
        "invalid_client_id"
    )
    wrong = _refresh(sandbox, STANDING_TOKEN, client_secret="not-the-secret").json()
    assert wrong == {"error": "invalid_client", "error_description": "invalid client credentials"}
    # "Require Secret for Refresh Token Flow" is on by default: no secret, no token.
    assert _refresh(sandbox, STANDING_TOKEN, client_secret=None).json()["error"] == (
        "invalid_client"
    )


def test_an_app_that_does_not_require_the_secret_takes_none() -> None:
    credentials = Credentials(refresh_token=STANDING_TOKEN, refresh_needs_secret=False)
    with SalesforceSandbox.start(seed=7, credentials=credentials) as sandbox:
        assert _refresh(sandbox, STANDING_TOKEN, client_secret=None).status_code == 200
        assert _refresh(sandbox, STANDING_TOKEN, client_secret="wrong").status_code == 400


def test_revoking_a_refresh_token_ends_its_sessions(sandbox: SalesforceSandbox) -> None:
    other = sandbox.app.issue_refresh_token()
    mine = _refresh(sandbox, STANDING_TOKEN).json()["access_token"]
    theirs = _refresh(sandbox, other).json()["access_token"]
    assert _revoke(sandbox, STANDING_TOKEN).status_code == 200
    assert _limits(sandbox, mine) == 401  # the session it opened ended with it
    assert _limits(sandbox, theirs) == 200  # another token's session goes on
    assert _refresh(sandbox, STANDING_TOKEN).json()["error_description"] == (
        "expired access/refresh token"
    )
    again = _revoke(sandbox, STANDING_TOKEN)
    assert again.status_code == 400 and again.json()["error"] == "invalid_token"
    assert _revoke(sandbox, theirs).status_code == 200  # an access token alone
    assert _limits(sandbox, theirs) == 401
    assert _refresh(sandbox, other).status_code == 200  # its refresh token stays good


def test_expired_sessions_leave_refresh_tokens_valid(sandbox: SalesforceSandbox) -> None:
    access = _refresh(sandbox, STANDING_TOKEN).json()["access_token"]
    response = sandbox.session().post(f"{sandbox.url}/_sandbox/expire-sessions")
    assert response.status_code == 204
    assert _limits(sandbox, access) == 401
    assert _limits(sandbox, _refresh(sandbox, STANDING_TOKEN).json()["access_token"]) == 200


def test_refresh_tokens_are_issued_for_any_active_user(sandbox: SalesforceSandbox) -> None:
    session = sandbox.session()
    url = f"{sandbox.url}/_sandbox/refresh-tokens"
    username = "alice.martin@sandbox.local"
    issued = session.post(url, json={"username": username})
    assert issued.status_code == 201 and issued.json()["username"] == username
    body = _refresh(sandbox, issued.json()["refresh_token"]).json()
    user = sandbox.app.user_by_username(username)
    assert user is not None and body["id"].endswith("/" + make_id("005", user))
    default = session.post(url)
    assert default.status_code == 201 and default.json()["username"] == "demo@sandbox.local"
    unknown = session.post(url, json={"username": "nobody@sandbox.local"})
    assert unknown.status_code == 400 and "nobody@sandbox.local" in unknown.json()["error"]
