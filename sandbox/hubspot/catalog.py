"""What the sandbox portal calls things: its id, each object type's id space, the pipeline and
its stages, and the HubSpot values of the data set's deal types, forecast categories and
activity kinds.

Record ids are deterministic: an object type's base plus the row number + 1.
"""

from __future__ import annotations

from crm_kpi_worker.sandbox import dataset as ds

PORTAL_ID = 2468013

OWNER_ID_BASE = 70_000_000
USER_ID_BASE = 9_000_000
TEAM_ID_BASE = 4_100_000
GOAL_GROUP_ID_BASE = 8_800_000
ID_BASES = {
    "companies": 10_000_000_000,
    "deals": 20_000_000_000,
    "meetings": 30_000_000_000,
    "goal_targets": 40_000_000_000,
}
CUSTOM_ID_BASE = 50_000_000_000
CUSTOM_ID_STRIDE = 1_000_000_000

PIPELINE_ID = "default"
PIPELINE_LABEL = "Sales Pipeline"
# Dataset.STAGES order -> (stage id, label, probability, closed). The ids of the first seven
# are HubSpot's default pipeline ids; "legacy" has a numeric id as custom stages do.
HS_STAGES: dict[str, tuple[str, str, str, bool]] = {
    "prospecting": ("appointmentscheduled", "Prospecting", "0.1", False),
    "qualification": ("qualifiedtobuy", "Qualification", "0.2", False),
    "demo": ("presentationscheduled", "Demo", "0.4", False),
    "proposal": ("decisionmakerboughtin", "Proposal", "0.6", False),
    "negotiation": ("contractsent", "Negotiation", "0.8", False),
    "closed_won": ("closedwon", "Closed won", "1.0", True),
    "closed_lost": ("closedlost", "Closed lost", "0.0", True),
    "legacy": ("108765432", "Legacy stage", "0.1", False),
}
assert tuple(HS_STAGES) == ds.STAGES
STAGE_IDS: tuple[str, ...] = tuple(v[0] for v in HS_STAGES.values())
DEAL_TYPES = {"new_business": "newbusiness", "expansion": "existingbusiness", "renewal": "renewal"}
DEAL_TYPE_LABELS = {
    "newbusiness": "New Business",
    "existingbusiness": "Existing Business",
    "renewal": "Renewal",
}
FORECAST_CATEGORIES = {
    "pipeline": "PIPELINE",
    "best_case": "BEST_CASE",
    "commit": "COMMIT",
    "closed": "CLOSED",
    "omitted": "OMIT",
}
ACTIVITY_TYPES = {"demo": "Demo", "call": "Discovery call", "meeting": "Signature meeting"}
GOAL_NAME = "Revenue quota"
