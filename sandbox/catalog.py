"""The generator's vocabulary: the codes, units and value pools both halves of it draw from.

The demo scenario (``demo_scenario.py``) and the bulk filler (``filler.py``) write the same
data set (``dataset.py``); what they must agree on lives here: the reference date and size
limits, the currencies and their rates, the products, the stage/type/kind/role codes with each
stage's default probability and forecast category, the industries, and the calendar and e-mail
helpers.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

import numpy as np

from crm_kpi_worker.sandbox.dataset import (
    ACTIVITY_KINDS,
    DEAL_TYPES,
    FORECAST_CATEGORIES,
    STAGE_LEGACY,
    STAGE_LOST,
    STAGE_WON,
    STAGES,
    USER_ROLES,
)

DEFAULT_REFERENCE_DATE = dt.date(2026, 9, 30)
MAX_DEALS = 1_000_000
REPORTING_CURRENCY = "EUR"
CURRENCIES = ("EUR", "USD", "GBP", "CHF")
# Units of currency per 1 EUR. CHF deliberately has no rate: its deals cannot be converted.
FX_RATES = {"EUR": 1.0, "USD": 1.08, "GBP": 0.85}
PRODUCTS = (
    "Platform licence",
    "Analytics add-on",
    "Premium support",
    "Onboarding services",
    "API access",
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
KEY_SHIFT = np.int64(1) << np.int64(42)  # > any ms timestamp before 2109: (deal, time) keys

PROSPECTING = STAGES.index("prospecting")
QUALIFICATION = STAGES.index("qualification")
DEMO = STAGES.index("demo")
PROPOSAL = STAGES.index("proposal")
NEGOTIATION = STAGES.index("negotiation")
WON, LOST, LEGACY = STAGE_WON, STAGE_LOST, STAGE_LEGACY
FUNNEL = [PROSPECTING, QUALIFICATION, DEMO, PROPOSAL, NEGOTIATION]

NEW_BUSINESS = DEAL_TYPES.index("new_business")
EXPANSION = DEAL_TYPES.index("expansion")
RENEWAL = DEAL_TYPES.index("renewal")
OTHER = DEAL_TYPES.index("other")

KIND_DEMO = ACTIVITY_KINDS.index("demo")
KIND_CALL = ACTIVITY_KINDS.index("call")
KIND_MEETING = ACTIVITY_KINDS.index("meeting")

ROLE_AE = USER_ROLES.index("ae")
ROLE_MANAGER = USER_ROLES.index("manager")
ROLE_INTEGRATION = USER_ROLES.index("integration")


def _fc(name: str) -> int:
    return FORECAST_CATEGORIES.index(name)


# Per stage (STAGES order): probability in percent and forecast category. "legacy" is a stage
# no mapping knows: the CRM still has to hold something, we give it probability 0 / omitted.
STAGE_PROBABILITY = np.array([10, 20, 40, 60, 80, 100, 0, 0], dtype=np.float64)
STAGE_FORECAST = np.array(
    [_fc(n) for n in ("pipeline",) * 3 + ("best_case", "commit", "closed", "omitted", "omitted")],
    dtype=np.int8,
)
assert len(STAGE_PROBABILITY) == len(STAGE_FORECAST) == len(STAGES)

INDUSTRIES = (
    "Software",
    "Manufacturing",
    "Retail",
    "Financial services",
    "Healthcare",
    "Logistics",
    "Energy",
    "Media",
    "Education",
    "Public sector",
)
EMAIL_DOMAIN = "sandbox.local"


def quarter_start(day: dt.date) -> dt.date:
    return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def is_quarter_end(day: dt.date) -> bool:
    return day.month % 3 == 0 and (day + dt.timedelta(days=1)).day == 1


def weekday(day: int) -> int:
    """0 = Monday for an epoch day (1970-01-01 was a Thursday)."""
    return (day + 3) % 7


def ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def email_address(first: str, last: str) -> str:
    return f"{ascii_slug(first)}.{ascii_slug(last)}@{EMAIL_DOMAIN}"
