"""The CRM-neutral data set both sandbox CRMs serve.

The generator (``generator.py``: ``demo_scenario.py`` then ``filler.py``) fills it; each
sandbox renders it in its own CRM's shape (Salesforce sObjects, HubSpot objects). Tables are
columnar: one numpy array per column, so a million deals fit in tens of
megabytes and filters run vectorised.

Conventions for every table:
- timestamps are ``int64`` milliseconds since the Unix epoch, UTC;
- dates are ``int32`` days since 1970-01-01; ``NULL_DAY`` means no date;
- amounts are ``float64``; ``nan`` means no amount;
- references to another table are ``int32`` row indexes into it; ``-1`` means none;
- coded values are ``int8`` indexes into the module-level tuples below (or into a list the
  data set carries, for currencies).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

# The calendar's month arithmetic (the first day of the month n months on), re-exported for
# the generator and the date literals, which move day-1 dates by whole months.
from crm_kpi_worker.kpis.calendar import add_months as add_months

NULL_DAY = np.int32(np.iinfo(np.int32).min)
EPOCH = dt.date(1970, 1, 1)

# Neutral stage keys, in funnel order. "legacy" is a stage no mapping knows (bad data).
STAGES: tuple[str, ...] = (
    "prospecting",
    "qualification",
    "demo",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
    "legacy",
)
STAGE_WON = STAGES.index("closed_won")
STAGE_LOST = STAGES.index("closed_lost")
STAGE_LEGACY = STAGES.index("legacy")

DEAL_TYPES: tuple[str, ...] = ("new_business", "expansion", "renewal", "other")
FORECAST_CATEGORIES: tuple[str, ...] = ("pipeline", "best_case", "commit", "closed", "omitted")
ACTIVITY_KINDS: tuple[str, ...] = ("demo", "call", "meeting")
# A user's role: "ae" users are the Account Executives the KPIs are about.
USER_ROLES: tuple[str, ...] = ("ae", "manager", "integration")


def day_to_date(day: int) -> dt.date | None:
    return None if day == NULL_DAY else EPOCH + dt.timedelta(days=int(day))


def date_to_day(value: dt.date) -> int:
    return (value - EPOCH).days


def ms_to_datetime(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.UTC)


def datetime_to_ms(value: dt.datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("naive datetime: give a timezone-aware value")
    return int(value.timestamp() * 1000)


@dataclass
class UserTable:
    """People who own records. Small (tens to a few thousand rows): plain lists are fine."""

    first_name: list[str]
    last_name: list[str]
    email: list[str]
    title: list[str]
    role: np.ndarray  # int8 into USER_ROLES
    team: list[str | None]  # team name for AEs, None otherwise
    manager: np.ndarray  # int32 user index or -1
    is_active: np.ndarray  # bool
    start_day: np.ndarray  # int32 day the user started (ramp quotas)
    created_at: np.ndarray  # int64 ms

    def __len__(self) -> int:
        return len(self.first_name)


@dataclass
class AccountTable:
    name: list[str]
    industry: list[str]
    country: list[str]  # ISO 3166 alpha-2
    churn_day: np.ndarray  # int32 day the customer churned, NULL_DAY if never
    owner: np.ndarray  # int32 user index
    created_at: np.ndarray  # int64 ms
    last_modified: np.ndarray  # int64 ms

    def __len__(self) -> int:
        return len(self.name)


@dataclass
class DealTable:
    """Opportunities / deals. Up to a million rows."""

    owner: np.ndarray  # int32 user index
    account: np.ndarray  # int32 account index
    product: np.ndarray  # int8 index into Dataset.products; name = "<account> - <product>"
    created_at: np.ndarray  # int64 ms
    close_day: np.ndarray  # int32 day, NULL_DAY when missing (bad data)
    stage: np.ndarray  # int8 into STAGES (current stage)
    amount: np.ndarray  # float64 in the deal's currency, nan when missing (bad data)
    currency: np.ndarray  # int8 index into Dataset.currencies
    deal_type: np.ndarray  # int8 into DEAL_TYPES
    forecast_category: np.ndarray  # int8 into FORECAST_CATEGORIES
    probability: np.ndarray  # float64 percent 0..100
    term_months: np.ndarray  # int16 contract term, 12 by default
    is_deleted: np.ndarray  # bool (in the recycle bin / archived)
    deleted_at: np.ndarray  # int64 ms, 0 when not deleted
    last_modified: np.ndarray  # int64 ms, >= created_at and >= every change below

    def __len__(self) -> int:
        return len(self.owner)


@dataclass
class StageChangeTable:
    """One row per stage entry, the first being the creation. Sorted by (deal, changed_at)."""

    deal: np.ndarray  # int32
    stage: np.ndarray  # int8 into STAGES
    changed_at: np.ndarray  # int64 ms
    amount: np.ndarray  # float64, deal amount at that time
    close_day: np.ndarray  # int32, close date at that time
    probability: np.ndarray  # float64
    forecast_category: np.ndarray  # int8

    def __len__(self) -> int:
        return len(self.deal)


@dataclass
class CloseDateChangeTable:
    """Edits of a deal's close date. Sorted by (deal, changed_at)."""

    deal: np.ndarray  # int32
    old_day: np.ndarray  # int32
    new_day: np.ndarray  # int32
    changed_at: np.ndarray  # int64 ms

    def __len__(self) -> int:
        return len(self.deal)


@dataclass
class ActivityTable:
    """Calendar activities (demos, calls, meetings). Sorted by start."""

    owner: np.ndarray  # int32 user index
    deal: np.ndarray  # int32 deal index or -1
    account: np.ndarray  # int32 account index or -1
    kind: np.ndarray  # int8 into ACTIVITY_KINDS
    start: np.ndarray  # int64 ms
    duration_minutes: np.ndarray  # int16
    created_at: np.ndarray  # int64 ms
    last_modified: np.ndarray  # int64 ms

    def __len__(self) -> int:
        return len(self.owner)


@dataclass
class QuotaTable:
    """Quotas per user and period, in the data set's reporting currency."""

    user: np.ndarray  # int32
    period_start: np.ndarray  # int32 day (first day of the period)
    period_months: np.ndarray  # int8 length of the period in months (3 = quarter)
    amount: np.ndarray  # float64
    created_at: np.ndarray  # int64 ms
    last_modified: np.ndarray  # int64 ms

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class Dataset:
    seed: int
    reference_date: dt.date  # last day of the demo quarter
    reporting_currency: str  # e.g. "EUR"
    currencies: list[str]  # codes; Dataset.currencies[0] == reporting_currency
    # Units of currency per 1 unit of reporting currency. A code in `currencies` but not here
    # has no known rate: deals in it cannot be converted (bad data).
    fx_rates: dict[str, float]
    products: list[str]
    users: UserTable
    accounts: AccountTable
    deals: DealTable
    stage_changes: StageChangeTable
    close_date_changes: CloseDateChangeTable
    activities: ActivityTable
    quotas: QuotaTable
    # Free-form facts about the scenario (e.g. {"alice": 0}) for tests and docs.
    notes: dict[str, object] = field(default_factory=dict)


# ---- whole-table operations (the generator's assembly) ----------------------------------

_T = TypeVar("_T")


def concat_tables(first: _T, second: _T) -> _T:
    """Concatenate two tables column by column, emptying both as it goes (bounded memory)."""
    values: dict[str, Any] = {}
    for f in fields(first):  # type: ignore[arg-type]
        a, b = getattr(first, f.name), getattr(second, f.name)
        setattr(first, f.name, None)
        setattr(second, f.name, None)
        values[f.name] = a + b if isinstance(a, list) else np.concatenate([a, b])
        del a, b
    return type(first)(**values)


def take_rows(table: _T, order: np.ndarray) -> _T:
    """Reorder a table's rows, emptying it column by column as it goes."""
    values: dict[str, Any] = {}
    for f in fields(table):  # type: ignore[arg-type]
        column = getattr(table, f.name)
        setattr(table, f.name, None)
        values[f.name] = [column[i] for i in order] if isinstance(column, list) else column[order]
        del column
    return type(table)(**values)
