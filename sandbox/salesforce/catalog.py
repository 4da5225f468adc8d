"""What the sandbox org calls things: its id and admin user, the stages (with their default
probability and forecast category), opportunity types, forecast categories and event types
the data set's neutral codes become.
"""

from __future__ import annotations

from crm_kpi_worker.sandbox.salesforce.ids import case_safe_suffix
from crm_kpi_worker.sandbox.salesforce.store import PicklistValue

ORG_ID15 = "00DSb0000000001"
ORG_ID = ORG_ID15 + case_safe_suffix(ORG_ID15)
ADMIN_USERNAME = "demo@sandbox.local"

SF_STAGES = {
    # neutral key: (StageName, default probability, ForecastCategoryName, closed, won, active)
    "prospecting": ("Prospecting", 10.0, "Pipeline", False, False, True),
    "qualification": ("Qualification", 20.0, "Pipeline", False, False, True),
    "demo": ("Demo", 40.0, "Pipeline", False, False, True),
    "proposal": ("Proposal", 60.0, "Best Case", False, False, True),
    "negotiation": ("Negotiation", 80.0, "Commit", False, False, True),
    "closed_won": ("Closed Won", 100.0, "Closed", True, True, True),
    "closed_lost": ("Closed Lost", 0.0, "Omitted", True, False, True),
    "legacy": ("Legacy Stage", 0.0, "Pipeline", False, False, False),
}
SF_TYPES = {
    "new_business": "New Customer",
    "expansion": "Existing Customer - Upgrade",
    "renewal": "Renewal",
    "other": "Existing Customer - Replacement",
}
EXTRA_TYPES = ("Existing Customer - Downgrade",)
SF_FORECAST_NAMES = {
    "pipeline": "Pipeline",
    "best_case": "Best Case",
    "commit": "Commit",
    "closed": "Closed",
    "omitted": "Omitted",
}
# ForecastCategoryName (label) -> ForecastCategory (API value)
FORECAST_API_VALUES = {
    "Pipeline": "Pipeline",
    "Best Case": "BestCase",
    "Commit": "Forecast",
    "Closed": "Closed",
    "Omitted": "Omitted",
}
EVENT_TYPES = {"demo": "Demo", "call": "Call", "meeting": "Meeting"}
EXTRA_EVENT_TYPES = ("Email", "Other")


def picklist_of(values: list[str]) -> tuple[PicklistValue, ...]:
    return tuple(PicklistValue(v) for v in values)
