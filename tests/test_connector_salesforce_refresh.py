"""Auth method ``refresh_token`` against the sandbox: a sync logs in with it, an expired session
is renewed with it mid-run, and a revoked refresh token is the CRM auth error in one line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import write_demo_config
from test_connector_salesforce import Waits, connect

from crm_kpi_worker.connectors.errors import AuthenticationFailed
from crm_kpi_worker.connectors.salesforce.client import RefreshTokenLogin
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli import main
from crm_kpi_worker.sync.exit_codes import ExitCode

AS_OF = "2026-11-26T12:00:00+00:00"
AUTH = {
    "method": "refresh_token",
    "client_id": "sandbox",
    "client_secret": {"env": "CRM_KPI_SF_CLIENT_SECRET"},
    "refresh_token": {"env": "CRM_KPI_SF_REFRESH_TOKEN"},
}
REFRESH_AUTH_YAML = """    auth:
      method: refresh_token
      client_id: {value: sandbox}
      client_secret: {env: CRM_KPI_SF_CLIENT_SECRET}
      refresh_token: {env: CRM_KPI_SF_REFRESH_TOKEN}
"""


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start(seed=7) as running:
        yield running


def _environ(sandbox: SalesforceSandbox) -> dict[str, str]:
    return {
        "CRM_KPI_SF_CLIENT_SECRET": "sandbox",
        "CRM_KPI_SF_REFRESH_TOKEN": sandbox.app.issue_refresh_token(),
    }


def _revoke(sandbox: SalesforceSandbox, token: str) -> None:
    answer = sandbox.session().post(f"{sandbox.url}/services/oauth2/revoke", data={"token": token})
    assert answer.status_code == 200


def _sync(config: Path, environ: dict[str, str]) -> Any:
    return CliRunner().invoke(
        main, ["sync", "--once", "--as-of", AS_OF, "--config", str(config)], env=environ
    )


def _config_with_refresh_token(sandbox: SalesforceSandbox, folder: Path) -> Path:
    """The demo config, pointed at ``sandbox``, set up by an admin (the demo's password
    login), then logging in with a refresh token as the worker does."""
    path = write_demo_config(sandbox, folder)
    setup = CliRunner().invoke(main, ["setup", "--config", str(path)])
    assert setup.exit_code == 0, setup.output
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("    auth:\n")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("      "))
    path.write_text("".join([*lines[:start], REFRESH_AUTH_YAML, *lines[end:]]), encoding="utf-8")
    return path


def test_a_sync_logs_in_with_a_refresh_token(sandbox: SalesforceSandbox, tmp_path: Path) -> None:
    environ = _environ(sandbox)
    config = _config_with_refresh_token(sandbox, tmp_path)
    logins = sandbox.stats.login_calls
    outcome = _sync(config, environ)
    assert outcome.exit_code == 0, outcome.output
    assert "completed" in outcome.stdout and "Opportunity: wrote 579 records" in outcome.stdout
    assert sandbox.stats.login_calls - logins == 1  # one refresh token grant
    assert environ["CRM_KPI_SF_REFRESH_TOKEN"] not in outcome.output


def test_an_expired_session_mid_run_is_renewed_with_the_refresh_token(
    sandbox: SalesforceSandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    environ = _environ(sandbox)
    # The first queryAll (accounts, then deals) comes after the stages, users and currencies:
    # the session ends mid-run.
    config = _config_with_refresh_token(sandbox, tmp_path)
    logins = sandbox.stats.login_calls
    sandbox.faults.add(FaultRule(kind="expire_session", path="/queryAll", times=1))
    outcome = _sync(config, environ)
    assert outcome.exit_code == 0, outcome.output
    assert "Opportunity: wrote 579 records" in outcome.stdout
    assert sandbox.stats.login_calls - logins == 2  # the first login, then one renewal
    assert "Salesforce session expired: logging in again" in caplog.text
    assert environ["CRM_KPI_SF_REFRESH_TOKEN"] not in caplog.text + outcome.output


def test_a_revoked_refresh_token_stops_the_run_with_one_line(
    sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    environ = _environ(sandbox)
    _revoke(sandbox, environ["CRM_KPI_SF_REFRESH_TOKEN"])
    outcome = _sync(_config_with_refresh_token(sandbox, tmp_path), environ)
    assert outcome.exit_code == ExitCode.CRM_AUTH
    (line,) = [line for line in outcome.output.splitlines() if line.startswith("error:")]
    assert line.startswith("error: the CRM refused the credentials:")
    assert "auth method 'refresh_token' was refused: expired access/refresh token;" in line
    assert "authorize the connected app again" in line and "auth.refresh_token" in line
    assert "Traceback" not in outcome.output
    assert environ["CRM_KPI_SF_REFRESH_TOKEN"] not in outcome.output


def test_a_refresh_token_revoked_mid_run_is_refused_when_the_session_is_renewed(
    sandbox: SalesforceSandbox,
) -> None:
    environ = _environ(sandbox)
    waits = Waits()
    connector = connect(sandbox, waits, environ=environ, auth=AUTH)
    assert len(list(connector.pull("stages", None))) == 1
    # Revoking the refresh token ends the session it opened: the next call needs a new one.
    _revoke(sandbox, environ["CRM_KPI_SF_REFRESH_TOKEN"])
    with pytest.raises(AuthenticationFailed) as refused:
        list(connector.pull("users", None))
    message = str(refused.value)
    # (The source's name is also the sandbox's public client secret, so the scrubber hides it.)
    assert message.startswith("source '")
    assert "': logging in again was refused: expired access/refresh token;" in message
    assert "authorize the connected app again" in message and refused.value.code == "invalid_grant"
    assert "\n" not in message and environ["CRM_KPI_SF_REFRESH_TOKEN"] not in message
    assert waits == [] and sandbox.stats.login_calls == 2  # refused at once, never retried


def test_the_app_secret_can_be_left_out_when_the_app_does_not_require_it() -> None:
    from crm_kpi_worker.sandbox.salesforce.server import Credentials

    credentials = Credentials(refresh_needs_secret=False)
    with SalesforceSandbox.start(seed=7, credentials=credentials) as sandbox:
        token = sandbox.app.issue_refresh_token()
        auth = {k: v for k, v in AUTH.items() if k != "client_secret"}
        connector = connect(sandbox, environ={"CRM_KPI_SF_REFRESH_TOKEN": token}, auth=auth)
        assert len(list(connector.pull("stages", None))) == 1
        login = connector.client._salesforce_login_partial
        assert isinstance(login.func, RefreshTokenLogin)
        assert token not in repr(login) and "RefreshTokenLogin(client_id=" in repr(login)
