"""The run report's ``budget`` entry: the org's daily usage against the worker's share, and
what the run costs (or, with ``--dry-run``, would cost): the calls of connecting, of each
pulled stream, of the verify pass and of each written object; and the usage remembered from one
run to the next.

A run's :class:`CallBudget` learns the org's usage from the CRM's answers, so without a memory
each run's first call would go out unchecked: a service ticking after the share is reached
would pass it by one call a run. The usage the CRM last said is kept in the store
(:func:`remember_usage`) and a run starts from it (:func:`prime_budget`) while it is fresher
than :data:`USAGE_TRUSTED_FOR`; older, the run's first call asks the CRM again (the daily
count may have fallen back: Salesforce's window is a rolling 24 hours, HubSpot's resets at
midnight).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from crm_kpi_worker.connectors.budget import ApiUsage, CallBudget
from crm_kpi_worker.connectors.errors import BudgetExhausted
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.store import Store, StoredPage

__all__ = [
    "USAGE_TRUSTED_FOR",
    "budget_report",
    "check_room_to_connect",
    "describe_budget",
    "prime_budget",
    "remember_usage",
]

#: How long the usage the CRM last said stands for the org's usage at the start of a run.
USAGE_TRUSTED_FOR = dt.timedelta(hours=1)
API_USAGE = "api_usage"
#: The most calls connecting makes before the run's budget is attached (Salesforce checks the
#: org's currencies and the integration user's currency).
CONNECT_CALLS = 2


def check_room_to_connect(budget: CallBudget) -> None:
    """Refuse to connect when the remembered usage leaves fewer calls than connecting makes."""
    left = budget.allowance
    if left is None or left >= CONNECT_CALLS:
        return
    usage = budget.usage
    assert usage is not None
    raise BudgetExhausted(
        f"source '{budget.source}': the run makes no call: the org had used {usage.used:,}"
        f" of its {usage.limit:,} daily calls when last seen, and"
        f" budget.max_share_of_daily_limit ({budget.share:g}) allows {budget.ceiling:,};"
        " the next run resumes from there",
        code="BUDGET_EXHAUSTED",
    )


def prime_budget(store: Store, source: str, budget: CallBudget, now: dt.datetime) -> None:
    """Start ``budget`` from the usage a run saw last, when it is recent enough."""
    saved = store.metadata(source, API_USAGE)
    if not isinstance(saved, dict):
        return
    try:
        at = dt.datetime.fromisoformat(str(saved["at"]))
        usage = ApiUsage(int(saved["used"]), int(saved["limit"]))
    except (KeyError, TypeError, ValueError):
        return
    if dt.timedelta(0) <= now - at < USAGE_TRUSTED_FOR:
        budget.remembered(usage, at)


def remember_usage(store: Store, source: str, budget: CallBudget, now: dt.datetime) -> None:
    """Save the org's usage as the run last knew it (its own calls since included)."""
    usage = budget.usage
    if usage is None:
        return
    used = usage.used + budget.calls_since_noted
    saved = {"used": used, "limit": usage.limit, "at": now.isoformat()}
    store.save_page(StoredPage(source=source, stream="metadata", metadata={API_USAGE: saved}))


def budget_report(
    budget: CallBudget, report: Any, config: AppConfig, source: Any, *, dry_run: bool = False
) -> dict[str, Any]:
    """What the report says of the budget (``report``: the source's ``SourceReport``).

    ``calls``: the calls of each part of the run as the connector counted them (connecting,
    per pulled stream, the verify pass, per written object); a dry run's writes are what
    sending them would cost, by the road each chunk would take (a Bulk ingest job or
    Collections batches)."""
    usage = budget.usage
    calls = {
        "connect": report.connect_calls,
        "pull": {stream: n for stream, n in report.pull_calls.items() if n},
        "verify": report.verify_calls,
        "write": dict(report.write_calls),
    }
    total = (
        report.connect_calls
        + sum(report.pull_calls.values())
        + report.verify_calls
        + sum(report.write_calls.values())
    )
    return {
        "share": budget.share,
        "daily_limit": usage.limit if usage else None,
        "org_used": usage.used if usage else None,
        "ceiling": budget.ceiling,
        "left": budget.allowance,
        "calls": calls,
        "calls_total": total,
        "stopped": report.stopped is not None,
        "dry_run": dry_run,
    }


def describe_budget(budget: dict[str, Any]) -> list[str]:
    """Lines for people: the calls by kind and the budget they fit in."""
    if not budget:
        return []
    calls = budget["calls"]
    pull = ", ".join(f"{k} {v}" for k, v in calls["pull"].items())
    writes = ", ".join(f"{k} {v}" for k, v in calls["write"].items() if v)
    verb = "would make" if budget.get("dry_run") else "made"
    lines = [
        f"API calls the run {verb}: {budget['calls_total']}: connecting {calls['connect']};"
        f" pull {sum(calls['pull'].values())} ({pull or 'none'}); verify {calls['verify']};"
        f" writes {sum(calls['write'].values())} ({writes or 'none'})"
        + (" (the writes estimated: a dry run sends none)" if budget.get("dry_run") else "")
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
