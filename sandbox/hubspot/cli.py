"""``crm-kpi sandbox hubspot``: serve a sandbox HubSpot portal on a loopback port."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from crm_kpi_worker.sandbox.cli_common import common_options, fault_help, serve

__all__ = ["sandbox_hubspot"]


FAULT_ANSWERS = {
    "rate_limit": "429 TEN_SECONDLY_ROLLING with Retry-After",
    "daily_limit": "429 DAILY, Retry-After until the portal's midnight",
    "server_error": "500 INTERNAL_ERROR, 502/503 SERVICE_UNAVAILABLE",
    "slow": "answers after delay seconds (or when a test releases the rule)",
    "expire_session": "401 expired token (an OAuth access token stays revoked: refresh it)",
    "write_failure": "batch write records fail in a 207 answer (record_ids: ids or unique values)",
    "job_failure": "nothing (the portal has no asynchronous jobs)",
    "slow_job": "nothing (the portal has no asynchronous jobs)",
    "cut_download": "nothing (the portal has no asynchronous jobs)",
    "pubsub_unavailable": "nothing (the portal has no Pub/Sub API)",
}


@click.command("hubspot", epilog=fault_help(FAULT_ANSWERS))
@common_options(8444, "Deals", "the CA certificate")
@click.option("--token", default="pat-sandbox-demo", show_default=True, help="Private-app token.")
@click.option(
    "--search-per-second",
    type=click.FloatRange(min=0),
    default=5,
    show_default=True,
    help="Search requests per rolling second (0: unlimited).",
)
@click.option(
    "--burst-per-10s",
    type=click.IntRange(0),
    default=190,
    show_default=True,
    help="Other requests per rolling 10 seconds (0: unlimited).",
)
@click.option(
    "--daily-limit",
    type=click.IntRange(0),
    default=1_000_000,
    show_default=True,
    help="Requests per day (0: unlimited).",
)
def sandbox_hubspot(
    host: str,
    port: int,
    seed: int,
    deals: int | None,
    reference_date: dt.date | None,
    workdir: Path | None,
    faults: list[Any],
    verbose: bool,
    token: str,
    search_per_second: float,
    burst_per_10s: int,
    daily_limit: int,
) -> None:
    """Serve a sandbox HubSpot portal over HTTPS until interrupted.

    The real hubspot-api-client works against it unchanged: give it the printed URL as host,
    the private-app token (or the OAuth refresh credentials) and trust the printed CA.
    """
    from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits

    serve(
        lambda data: HubSpotSandbox(
            data,
            host=host,
            port=port,
            token=token,
            workdir=workdir,
            limits=RateLimits(
                search_per_second or None, burst_per_10s or None, daily_limit or None
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
