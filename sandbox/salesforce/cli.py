"""``crm-kpi sandbox salesforce``: serve a sandbox Salesforce org on a loopback port."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from crm_kpi_worker.sandbox.cli_common import common_options, fault_help, serve

__all__ = ["sandbox_salesforce"]

FAULT_ANSWERS = {
    "rate_limit": "429 REQUEST_LIMIT_EXCEEDED with Retry-After",
    "daily_limit": "403 REQUEST_LIMIT_EXCEEDED (TotalRequests Limit exceeded)",
    "server_error": "500 UNKNOWN_EXCEPTION, 502/503 SERVER_UNAVAILABLE",
    "slow": "answers after delay seconds (or when a test releases the rule)",
    "expire_session": "logs every session out: 401 INVALID_SESSION_ID",
    "write_failure": "sObject Collections and Bulk ingest records fail with UNABLE_TO_LOCK_ROW",
    "job_failure": "the Bulk API 2.0 job it creates ends Failed with an errorMessage",
    "slow_job": "the Bulk API 2.0 job it creates stays InProgress for polls status polls",
    "cut_download": "a Bulk API 2.0 result download stops after cut_after bytes",
    "pubsub_unavailable": "a Pub/Sub API call (/eventbus.v1.PubSub/<Method>) fails: UNAVAILABLE",
}


@click.command("salesforce", epilog=fault_help(FAULT_ANSWERS))
@common_options(8443, "Opportunities", "the CA certificate and JWT key")
@click.option(
    "--api-limit",
    default=100_000,
    show_default=True,
    type=click.IntRange(1),
    help="Daily API request limit the org enforces.",
)
@click.option("--username", default="demo@sandbox.local", show_default=True)
@click.option("--password", default="demo", show_default=True)
@click.option("--client-id", default="sandbox", show_default=True)
@click.option("--client-secret", default="sandbox", show_default=True)
@click.option(
    "--refresh-token",
    default=None,
    help="A refresh token the org honours for the integration user (more can be issued with"
    " POST /_sandbox/refresh-tokens).",
)
def sandbox_salesforce(
    host: str,
    port: int,
    seed: int,
    deals: int | None,
    reference_date: dt.date | None,
    workdir: Path | None,
    faults: list[Any],
    verbose: bool,
    api_limit: int,
    username: str,
    password: str,
    client_id: str,
    client_secret: str,
    refresh_token: str | None,
) -> None:
    """Serve a sandbox Salesforce org over HTTPS until interrupted.

    The real simple-salesforce client works against it unchanged: log in with the printed
    credentials through a session that routes login.salesforce.com to this server and trusts
    its CA (the config's login_url and ca_bundle do exactly that).
    """
    from crm_kpi_worker.sandbox.salesforce.server import Credentials, SalesforceSandbox

    serve(
        lambda data: SalesforceSandbox(
            data,
            host=host,
            port=port,
            api_limit=api_limit,
            workdir=workdir,
            credentials=Credentials(
                username, password, client_id, client_secret, refresh_token=refresh_token
            ),
        ),
        seed=seed,
        deals=deals,
        reference_date=reference_date,
        host=host,
        port=port,
        faults=faults,
        verbose=verbose,
    )
