"""``crm-kpi sandbox ...``: run a sandbox CRM on a loopback port."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


@click.group("sandbox")
def sandbox_group() -> None:
    """Run a sandbox CRM (loopback only) for demos, tests and benchmarks."""


def _reference_date(_ctx: Any, _param: Any, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-09-30") from None


def _faults(_ctx: Any, _param: Any, values: tuple[str, ...]) -> list[Any]:
    from crm_kpi_worker.sandbox.faults import FaultRule

    rules = []
    for value in values:
        try:
            rules.append(FaultRule.from_json(json.loads(value)))
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from None
    return rules


def _common_options(port: int, records: str, workdir_holds: str) -> Callable[[Any], Any]:
    """The options both sandboxes take (listening, generated data, work folder, faults)."""
    options = [
        click.option(
            "--host", default="127.0.0.1", show_default=True, help="Loopback address to bind."
        ),
        click.option(
            "--port",
            default=port,
            show_default=True,
            type=click.IntRange(0, 65535),
            help="0 picks a free port.",
        ),
        click.option(
            "--seed", default=42, show_default=True, type=int, help="Seed of the generated data."
        ),
        click.option(
            "--deals",
            type=click.IntRange(1, 1_000_000),
            default=None,
            help=f"{records} to generate (default: the demo scenario only).",
        ),
        click.option(
            "--reference-date",
            callback=_reference_date,
            help="Last day of the demo quarter (a quarter end). Default 2026-09-30.",
        ),
        click.option(
            "--workdir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help=f"Where to write {workdir_holds} (default: a temporary folder).",
        ),
        click.option(
            "--fault",
            "faults",
            multiple=True,
            callback=_faults,
            help="A fault rule as JSON, e.g. "
            '\'{"kind": "rate_limit", "probability": 0.05, "times": null}\'. '
            "Repeatable; more at runtime via POST /_sandbox/faults.",
        ),
        click.option("--verbose", is_flag=True, help="Log every request."),
    ]

    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _serve(
    build: Callable[[Any], Any],
    *,
    seed: int,
    deals: int | None,
    reference_date: dt.date | None,
    host: str,
    port: int,
    faults: list[Any],
    verbose: bool,
) -> None:
    """Generate the data, ``build`` the sandbox over it, serve until interrupted."""
    from crm_kpi_worker.sandbox.generator import generate

    if verbose:
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("werkzeug").setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        sandbox = build(generate(seed=seed, deals=deals, reference_date=reference_date))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    for rule in faults:
        sandbox.faults.add(rule)
    for line in sandbox.describe():
        click.echo(line)
    click.echo(f"  ready in {time.perf_counter() - started:.1f} s; Ctrl-C to stop")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sandbox.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        sandbox.stop()
        click.echo("sandbox stopped")


@sandbox_group.command("salesforce")
@_common_options(8443, "Opportunities", "the CA certificate and JWT key")
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
) -> None:
    """Serve a sandbox Salesforce org over HTTPS until interrupted.

    The real simple-salesforce client works against it unchanged: log in with the printed
    credentials through a session that routes login.salesforce.com to this server and trusts
    its CA (the config's login_url and ca_bundle do exactly that).
    """
    from crm_kpi_worker.sandbox.salesforce.server import Credentials, SalesforceSandbox

    _serve(
        lambda data: SalesforceSandbox(
            data,
            host=host,
            port=port,
            api_limit=api_limit,
            workdir=workdir,
            credentials=Credentials(username, password, client_id, client_secret),
        ),
        seed=seed,
        deals=deals,
        reference_date=reference_date,
        host=host,
        port=port,
        faults=faults,
        verbose=verbose,
    )


@sandbox_group.command("hubspot")
@_common_options(8444, "Deals", "the CA certificate")
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

    _serve(
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
