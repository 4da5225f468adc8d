"""``crm-kpi demo``: the product on its embedded default, with no CRM account needed.

It starts the sandbox Salesforce in-process with the demo scenario, logs in with the real
simple-salesforce client through the product's own transport (TLS trust of the sandbox CA,
login routed to the sandbox), and reads the org the way the connector does: paged SOQL.
The sync pipeline (KPIs and write-back) plugs in here once it exists.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from typing import Any

import click


@click.command("demo")
@click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--deals",
    type=click.IntRange(1, 1_000_000),
    default=None,
    help="Opportunities in the sandbox (default: the demo scenario only).",
)
def demo_command(output: str, deals: int | None) -> None:
    """Start the sandbox CRM with the demo scenario and read it with the real client."""
    from simple_salesforce import Salesforce

    from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

    started = time.perf_counter()
    with SalesforceSandbox.start(deals=deals) as sandbox:
        sf = Salesforce(
            username=sandbox.credentials.username,
            password=sandbox.credentials.password,
            security_token="",
            session=sandbox.session(),
        )
        users = {
            u["Id"]: u
            for u in sf.query_all_iter("SELECT Id, Name, Email, Department, IsActive FROM User")
        }
        per_owner: dict[str, Counter[str]] = defaultdict(Counter)
        amounts: dict[str, float] = defaultdict(float)
        pulled = 0
        for deal in sf.query_all_iter(
            "SELECT Id, OwnerId, StageName, IsClosed, IsWon, CloseDate, convertCurrency(Amount) "
            "FROM Opportunity"
        ):
            pulled += 1
            state = "won" if deal["IsWon"] else "lost" if deal["IsClosed"] else "open"
            per_owner[deal["OwnerId"]][state] += 1
            if deal["IsWon"] and deal["Amount"] is not None:
                amounts[deal["OwnerId"]] += deal["Amount"]
        quotas: Counter[str] = Counter(
            q["QuotaOwnerId"]
            for q in sf.query_all_iter("SELECT QuotaOwnerId FROM ForecastingQuota")
        )
        rows: list[dict[str, Any]] = []
        for owner, counts in sorted(per_owner.items(), key=lambda item: users[item[0]]["Name"]):
            user = users[owner]
            rows.append(
                {
                    "rep": user["Name"],
                    "team": user["Department"],
                    "open": counts["open"],
                    "won": counts["won"],
                    "lost": counts["lost"],
                    "won_amount_eur": round(amounts[owner], 2),
                    "quota_periods": quotas.get(owner, 0),
                }
            )
        report = {
            "sandbox": sandbox.url,
            "opportunities_read": pulled,
            "users_read": len(users),
            "api_calls": sandbox.stats.api_calls,
            "seconds": round(time.perf_counter() - started, 2),
            "owners": rows,
        }
    if output == "json":
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    click.echo(
        f"Sandbox Salesforce at {report['sandbox']} (demo scenario), read with simple-salesforce:"
    )
    click.echo(
        f"  {pulled} opportunities, {len(users)} users in {report['api_calls']} API calls,"
        f" {report['seconds']} s"
    )
    header = (
        f"  {'owner':<22}{'team':<13}{'open':>6}{'won':>6}{'lost':>6}{'won (EUR)':>14}{'quotas':>8}"
    )
    click.echo(header)
    for row in rows:
        click.echo(
            f"  {row['rep']:<22}{row['team'] or '-':<13}"
            f"{row['open']:>6}{row['won']:>6}{row['lost']:>6}"
            f"{row['won_amount_eur']:>14,.0f}{row['quota_periods']:>8}"
        )
    click.echo("  (all-time counts; per-period KPIs and write-back come with the sync pipeline)")
