"""The run report's ``budget`` entry: the org's daily usage against the worker's share, and
what the run costs (or, with ``--dry-run``, would cost): pull pages, verify pages, write
batches."""

from __future__ import annotations

import math
from typing import Any

from crm_kpi_worker.connectors.budget import CallBudget
from crm_kpi_worker.sync.config import AppConfig

__all__ = ["budget_report", "describe_budget"]

#: Records per verify page: a Salesforce query page, a HubSpot list page.
VERIFY_PAGE = {"hubspot": 100}
DEFAULT_VERIFY_PAGE = 2000


def budget_report(
    budget: CallBudget, report: Any, config: AppConfig, source: Any, *, dry_run: bool = False
) -> dict[str, Any]:
    """What the report says of the budget (``report``: the source's ``SourceReport``)."""
    batch = config.write.batch_size_for(source.type)
    write_batches = {
        planned["object"]: math.ceil(planned["records_to_write"] / batch)
        for planned in report.planned
    }
    page = VERIFY_PAGE.get(source.type, DEFAULT_VERIFY_PAGE)
    verify_pages = {obj: max(1, math.ceil(n / page)) for obj, n in report.verified.items()}
    usage = budget.usage
    out: dict[str, Any] = {
        "share": budget.share,
        "daily_limit": usage.limit if usage else None,
        "org_used": usage.used if usage else None,
        "ceiling": budget.ceiling,
        "left": budget.allowance,
        "calls": {
            "pull_pages": dict(report.pages),
            "verify_pages": verify_pages,
            "write_batches": write_batches,
        },
        "calls_total": sum(report.pages.values())
        + sum(verify_pages.values())
        + sum(write_batches.values()),
        "stopped": report.stopped is not None,
        "dry_run": dry_run,
    }
    return out


def describe_budget(budget: dict[str, Any]) -> list[str]:
    """Lines for people: the calls by kind and the budget they fit in."""
    if not budget:
        return []
    calls = budget["calls"]
    pull = ", ".join(f"{k} {v}" for k, v in calls["pull_pages"].items() if v)
    verify = ", ".join(f"{k} {v}" for k, v in calls["verify_pages"].items())
    writes = ", ".join(f"{k} {v}" for k, v in calls["write_batches"].items() if v)
    verb = "would make" if budget.get("dry_run") else "made"
    lines = [
        f"API calls the run {verb}: about {budget['calls_total']}: pull pages ({pull or 'none'})"
        f"; verify pages ({verify or 'none'}); write batches ({writes or 'none'})"
    ]
    if budget["daily_limit"] is None:
        lines.append("budget: the CRM has not said its daily limit; no share enforced")
    else:
        lines.append(
            f"budget: the org has used {budget['org_used']:,} of {budget['daily_limit']:,}"
            f" daily calls; the worker's share ({budget['share']:g}) allows"
            f" {budget['ceiling']:,}: {budget['left']:,} left"
        )
    if budget["stopped"]:
        lines.append("the run stopped for the budget; the next run resumes where it stopped")
    return lines
