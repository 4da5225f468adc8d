"""The canonical model: the CRM-neutral records every part of the worker shares.

Connectors produce raw CRM records; ``sync`` normalizes them through the YAML mapping into these
types; ``kpis`` computes from them. This module imports nothing else of the project (DESIGN.md's
dependency rule), so ``kpis`` may depend on it.

Conventions:

- Every record is a frozen pydantic model; unknown fields are errors.
- Ids are the CRM's own record ids, as strings. A :class:`Deal` also names the configured
  ``source`` it came from, since two CRMs may reuse an id.
- Instants are timezone-aware ``datetime`` values, normalized to UTC. Naive values are refused:
  a CRM timestamp without its offset is a bug in the caller, not something to guess.
- Calendar dates (close dates, quota periods, start dates) are ``date`` values; they are
  compared in the fiscal timezone of the config.
- Money is ``Decimal``, never ``float``, and never negative. ``Deal.amount`` is in the deal's
  own currency; ``Deal.arr`` and ``Quota.amount`` are in the reporting currency.
- Stage keys are the canonical keys of the config's stage mapping (``closed_won``, ``demo``...).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CLOSE_DATE_FIELD",
    "DEMO_ACTIVITY",
    "Account",
    "Activity",
    "Deal",
    "DealType",
    "FieldChange",
    "ForecastCategory",
    "Quota",
    "QuotaSource",
    "Rep",
    "StageChange",
]

#: ``FieldChange.field`` value for a change of a deal's close date (close-date slips).
CLOSE_DATE_FIELD = "close_date"
#: ``Activity.kind`` value for a demo (counted by ``demos_per_week``).
DEMO_ACTIVITY = "demo"


class DealType(StrEnum):
    """What a deal sells, mapped from the CRM's type field."""

    NEW_BUSINESS = "new_business"
    EXPANSION = "expansion"
    RENEWAL = "renewal"
    OTHER = "other"


class ForecastCategory(StrEnum):
    """Salesforce's forecast categories; HubSpot's map onto the same five."""

    PIPELINE = "pipeline"
    BEST_CASE = "best_case"
    COMMIT = "commit"
    CLOSED = "closed"
    OMITTED = "omitted"


class QuotaSource(StrEnum):
    """Where a quota was read from."""

    CRM = "crm"
    CONFIG = "config"
    CSV = "csv"


def _to_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def _lower_email(value: str) -> str:
    # Mailbox names are case-insensitive in practice and CRMs disagree on case: compare lowered.
    return value.lower()


RecordId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"\S")]
SourceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
StageKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
FieldKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
ActivityKind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Email = Annotated[
    str,
    Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"),
    AfterValidator(_lower_email),
]
Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[Decimal, Field(ge=0, le=1, allow_inf_nan=False)]
Instant = Annotated[AwareDatetime, AfterValidator(_to_utc)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Rep(_Record):
    """A CRM user who may own deals (Salesforce User, HubSpot owner)."""

    id: RecordId
    name: str
    email: Email
    team: str | None = None
    manager_id: RecordId | None = None
    is_active: bool = True
    #: First working day, for ramp (prorated) quotas; ``None`` when unknown.
    start_date: dt.date | None = None
    #: Whether the user is an Account Executive (the people the KPIs are about).
    is_ae: bool = True


class Account(_Record):
    """A customer or prospect company."""

    id: RecordId
    name: str
    #: The day the customer churned (mapped churn-date field); ``None`` if never or unmapped.
    churn_date: dt.date | None = None


class Deal(_Record):
    """An opportunity (Salesforce) or deal (HubSpot), normalized.

    ``is_won``/``is_closed`` come from the config's stage mapping, not from the CRM's flags, so
    one mapping decides everything. ``arr`` is ``None`` when the amount is missing or could not
    be converted to the reporting currency; such a deal is excluded from money KPIs.
    """

    id: RecordId
    #: Name of the configured source (``sources[].name``) the deal was pulled from.
    source: SourceName
    name: str = ""
    #: ``None`` when the CRM record has no owner; counted under "unassigned".
    owner_id: RecordId | None
    account_id: RecordId | None = None
    created_at: Instant
    #: ``None`` when the CRM record has none (bad data: excluded from period KPIs).
    close_date: dt.date | None
    stage: StageKey
    is_won: bool
    is_closed: bool
    #: In ``currency``; ``None`` when the CRM record has none.
    amount: Money | None
    currency: CurrencyCode
    #: Annual recurring revenue in the reporting currency.
    arr: Money | None
    deal_type: DealType = DealType.OTHER
    forecast_category: ForecastCategory = ForecastCategory.PIPELINE
    #: Win probability as a fraction (0.25 = 25%), from the stage mapping or the CRM.
    probability: Fraction | None = None
    term_months: Annotated[int, Field(ge=1, le=1200)] | None = None
    is_deleted: bool = False
    last_modified: Instant

    @model_validator(mode="after")
    def _check_invariants(self) -> Deal:
        if self.is_won and not self.is_closed:
            raise ValueError("a won deal is closed: is_won=True needs is_closed=True")
        if self.amount is None and self.arr is not None:
            raise ValueError("arr is derived from amount: a deal without amount has no arr")
        return self

    @property
    def is_lost(self) -> bool:
        return self.is_closed and not self.is_won

    @property
    def is_open(self) -> bool:
        return not self.is_closed


class StageChange(_Record):
    """A deal entering a stage (stage history). The first entry is usually the creation."""

    deal_id: RecordId
    stage: StageKey
    entered_at: Instant


FieldValue = dt.date | Decimal | str | None


class FieldChange(_Record):
    """One edit of a tracked deal field (field history), e.g. a close date moved.

    ``field`` is the canonical field name (``close_date`` for :data:`CLOSE_DATE_FIELD`).
    Values are ``date`` for date fields, ``Decimal`` for numbers, text otherwise; ``None`` when
    the field was empty.
    """

    deal_id: RecordId
    field: FieldKey
    old_value: FieldValue = None
    new_value: FieldValue = None
    changed_at: Instant

    @property
    def is_slip(self) -> bool:
        """True when a date was moved later (a close-date slip); False otherwise."""
        return (
            isinstance(self.old_value, dt.date)
            and isinstance(self.new_value, dt.date)
            and self.new_value > self.old_value
        )


class Activity(_Record):
    """A calendar activity (demo, call, meeting) owned by a rep."""

    id: RecordId
    owner_id: RecordId | None
    deal_id: RecordId | None = None
    #: Canonical kind; :data:`DEMO_ACTIVITY` for the ones the mapping recognizes as demos.
    kind: ActivityKind
    start: Instant


class Quota(_Record):
    """A rep's quota for one period, in the reporting currency.

    ``period_end`` is INCLUSIVE: the last day of the period (a Q3 quota runs from 07-01 to
    09-30), as Salesforce's ``Period`` records and people write it.
    """

    rep_id: RecordId
    period_start: dt.date
    period_end: dt.date
    amount: Money
    source: QuotaSource

    @model_validator(mode="after")
    def _check_period(self) -> Quota:
        if self.period_end < self.period_start:
            raise ValueError(
                f"period_end ({self.period_end}) is before period_start ({self.period_start});"
                " period_end is the last day of the period (inclusive)"
            )
        return self

    @property
    def days(self) -> int:
        """Number of days the period covers, both ends included."""
        return (self.period_end - self.period_start).days + 1

    def covers(self, day: dt.date) -> bool:
        return self.period_start <= day <= self.period_end
