"""The API budget: the share of the CRM's daily API limit the worker may reach.

The CRM tells its daily usage on its answers (Salesforce: ``Sforce-Limit-Info:
api-usage=18/5000`` on every REST answer; HubSpot: ``X-HubSpot-RateLimit-Daily`` and
``-Daily-Remaining`` on private-app calls other than search). The transports note it here and
ask :meth:`CallBudget.before_call` before every API call; once the org's calls of the day,
whoever made them, would pass ``share x limit``, the call is not made and
:class:`~crm_kpi_worker.connectors.errors.BudgetExhausted` stops the run cleanly (pages and
write batches are saved one by one, so the next run resumes where this one stopped). Calls made
since the last answer that carried the usage (HubSpot searches carry none) are counted on top.
Until the CRM has said its limit (OAuth on HubSpot never does), nothing is refused.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from dataclasses import dataclass

from crm_kpi_worker.connectors.errors import BudgetExhausted

__all__ = ["ApiUsage", "CallBudget", "parse_limit_info"]


@dataclass(frozen=True)
class ApiUsage:
    """The org's API calls of the day and its daily limit, as the CRM last said."""

    used: int
    limit: int


def parse_limit_info(header: str | None) -> ApiUsage | None:
    """Salesforce's ``Sforce-Limit-Info`` (``api-usage=25/5000; per-app-api-usage=...``)."""
    if not header:
        return None
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() != "api-usage":
            continue
        used, _, limit = value.partition("/")
        try:
            return ApiUsage(int(used), int(limit))
        except ValueError:
            return None
    return None


class CallBudget:
    """The calls one run may still make under ``share`` of the daily limit (thread-safe: the
    pull's pages are fetched in a worker thread)."""

    def __init__(self, share: float, source: str = "") -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.source = source
        self.usage: ApiUsage | None = None
        self._since_noted = 0  # calls made since the CRM last said its usage
        self._lock = threading.Lock()

    def note(self, usage: ApiUsage | None) -> None:
        """The usage an answer carried (it counts the call that answered)."""
        if usage is None or usage.limit <= 0:
            return
        with self._lock:
            self.usage = usage
            self._since_noted = 0

    @property
    def calls_since_noted(self) -> int:
        """Calls made since the CRM last said its usage (counted on top of it)."""
        with self._lock:
            return self._since_noted

    @property
    def ceiling(self) -> int | None:
        """The org's calls of the day the worker never passes (None: limit unknown yet)."""
        usage = self.usage
        return None if usage is None else math.floor(self.share * usage.limit)

    @property
    def allowance(self) -> int | None:
        """Calls this run may still make (None: no limit known)."""
        with self._lock:
            ceiling = self.ceiling
            if ceiling is None or self.usage is None:
                return None
            return max(0, ceiling - self.usage.used - self._since_noted)

    def remembered(self, usage: ApiUsage, at: dt.datetime) -> None:
        """The usage a previous run saw at ``at`` (the caller checked it is recent)."""
        self.note(usage)

    def before_call(self) -> None:
        """Refuse the call that would pass the share (raise :class:`BudgetExhausted`)."""
        with self._lock:
            usage, ceiling = self.usage, self.ceiling
            if (
                usage is not None
                and ceiling is not None
                and usage.used + self._since_noted + 1 > ceiling
            ):
                raise self.exhausted(usage, self._since_noted, ceiling)
            self._since_noted += 1

    def exhausted(self, usage: ApiUsage, since_noted: int, ceiling: int) -> BudgetExhausted:
        """The stop of a run whose next call would pass the share."""
        return BudgetExhausted(
            f"source '{self.source}': the run stops before its next API call: the"
            f" org has used {usage.used + since_noted:,} of its"
            f" {usage.limit:,} daily calls, and budget.max_share_of_daily_limit"
            f" ({self.share:g}) allows {ceiling:,}; what was pulled and written is"
            " kept and the next run resumes from there",
            code="BUDGET_EXHAUSTED",
        )
