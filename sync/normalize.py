"""Raw CRM records -> the canonical model, through the source's mapping. Pure functions.

``normalize(context, stream, records)`` turns one page of one stream into canonical records
and :class:`Exclusion` entries; the CRM-specific readers live in each CRM's folder
(``connectors/<crm>/normalize.py``), reached through the CRM registry. Nothing here does I/O
or raises on bad data: every value the CRM sends is checked, and a record that cannot feed a KPI is
reported as an exclusion with a reason code and a human detail, while whatever can be stored
still is.

Decisions, so the rest of the worker can rely on them:

- **Unknown stage**: the deal is stored with ``stage = UNMAPPED_STAGE`` (``"unmapped"``),
  neither won nor closed, and an ``unknown_stage`` exclusion; KPI code treats a stage that is
  not a mapped canonical key as unknown (``stage_known = False``).
- **Stage history**: every history row becomes a :class:`StageChange`, a CRM value the
  mapping does not know as ``UNMAPPED_STAGE`` (so the time spent in it still ends the stage
  before it); consecutive rows of the same canonical stage collapse into the first (Salesforce
  writes a history row for amount and close-date edits too). Unreadable rows are dropped.
- **Money**: ``amount`` stays in the deal's currency; ``arr`` is in the reporting currency:
  the CRM-converted amount (``conversion: crm``), else the CRM's own rates when its corporate
  currency is the reporting one, else the config's static rates; then ``amount_is`` (``mrr``
  x 12, ``tcv`` / contract years from the term field, 12 months when unmapped or empty).
  Values are rounded to cents. No rate: ``unconvertible_currency`` and ``arr`` None.
- **Several reasons** for one record give several exclusions (one per reason).
- **Deleted records** are never counted, so they produce no exclusion: a deleted deal is stored
  with ``is_deleted`` (and listed in ``deleted``); deleted accounts and activities are only
  listed in ``deleted``.
- **Unknown owner** is not an exclusion (such deals are counted under "unassigned" later).
- A record without a usable id, creation or modification instant (required by the model) is
  not stored: ``invalid_value`` naming the field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from crm_kpi_worker.sync.bulk import gc_paused
from crm_kpi_worker.sync.model import (
    Account,
    Activity,
    Deal,
    FieldChange,
    Quota,
    Rep,
    StageChange,
)

if TYPE_CHECKING:
    # Types only. Connectors' normalizers import this module: it names the config's light
    # rooms, never the whole tree (AppConfig checks KPI keys against the engine).
    from crm_kpi_worker.sync.config.money import CurrencySettings
    from crm_kpi_worker.sync.config.source import SourceBase

__all__ = [
    "MISSING_ID",
    "OTHER_ACTIVITY",
    "UNMAPPED_STAGE",
    "CrmMetadata",
    "Exclusion",
    "ExclusionReason",
    "NormalizeContext",
    "Normalized",
    "Problems",
    "RecordType",
    "StageInfo",
    "each_record",
    "normalize",
    "read_page",
]

#: Canonical stage of a deal (or history row) whose CRM stage the mapping does not list.
UNMAPPED_STAGE = "unmapped"
#: Activity kind of an activity that is not of a mapped demo type.
OTHER_ACTIVITY = "other"
#: ``Exclusion.record_id`` of a record that has no usable id.
MISSING_ID = "(no id)"

_CENT = Decimal("0.01")
_TOO_LARGE = Decimal(10) ** 18  # beyond any amount, rate or percentage a CRM holds
_TWELVE = Decimal(12)


class ExclusionReason(StrEnum):
    NO_AMOUNT = "no_amount"
    NO_CLOSE_DATE = "no_close_date"
    UNKNOWN_STAGE = "unknown_stage"
    UNCONVERTIBLE_CURRENCY = "unconvertible_currency"
    INVALID_VALUE = "invalid_value"


class RecordType(StrEnum):
    """``Exclusion.record_type`` values (the store's record kinds)."""

    DEAL = "deal"
    REP = "rep"
    ACCOUNT = "account"
    ACTIVITY = "activity"
    QUOTA = "quota"


@dataclass(frozen=True)
class Exclusion:
    """A record left out of the KPIs it cannot feed, reported in the run report."""

    record_type: str
    record_id: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class StageInfo:
    """The CRM's own description of a stage value (Salesforce OpportunityStage)."""

    name: str
    is_active: bool = True
    is_closed: bool = False
    is_won: bool = False
    default_probability: Decimal | None = None  # a fraction 0..1
    forecast_category: str | None = None  # the CRM's value, mapped like a deal's own
    sort_order: int | None = None


@dataclass(frozen=True)
class CrmMetadata:
    """What the CRM says about stages and currencies (from the stages and currencies streams)."""

    stages: Mapping[str, StageInfo] = field(default_factory=dict)
    #: Units of each currency per 1 unit of ``corporate_currency`` (active currencies).
    rates: Mapping[str, Decimal] = field(default_factory=dict)
    corporate_currency: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (for the store's source metadata); :meth:`from_json` reads it."""
        return {
            "stages": {
                key: {
                    "name": s.name,
                    "is_active": s.is_active,
                    "is_closed": s.is_closed,
                    "is_won": s.is_won,
                    "default_probability": (
                        None if s.default_probability is None else str(s.default_probability)
                    ),
                    "forecast_category": s.forecast_category,
                    "sort_order": s.sort_order,
                }
                for key, s in self.stages.items()
            },
            "rates": {code: str(rate) for code, rate in self.rates.items()},
            "corporate_currency": self.corporate_currency,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CrmMetadata:
        stages = {
            key: StageInfo(
                name=value["name"],
                is_active=value.get("is_active", True),
                is_closed=value.get("is_closed", False),
                is_won=value.get("is_won", False),
                default_probability=(
                    None
                    if value.get("default_probability") is None
                    else Decimal(value["default_probability"])
                ),
                forecast_category=value.get("forecast_category"),
                sort_order=value.get("sort_order"),
            )
            for key, value in (data.get("stages") or {}).items()
        }
        rates = {code: Decimal(rate) for code, rate in (data.get("rates") or {}).items()}
        return cls(stages, rates, data.get("corporate_currency"))


@dataclass(frozen=True)
class NormalizeContext:
    """Everything normalization reads besides the records themselves."""

    source: SourceBase
    currency: CurrencySettings
    #: Team name -> rep emails (the config's teams section).
    teams: Mapping[str, Sequence[str]] = field(default_factory=dict)
    metadata: CrmMetadata = field(default_factory=CrmMetadata)
    #: Length of a CRM quota's period when the CRM does not say (Salesforce's default
    #: forecast period is the quarter).
    quota_period_months: int = 3
    #: A user field holding the rep's start date (the mapping has no key for it yet).
    rep_start_date_field: str | None = None
    #: The fiscal calendar's timezone: a CRM date sent as an instant (HubSpot's closedate at
    #: a time other than midnight UTC) is the calendar date there.
    timezone: str = "UTC"

    @classmethod
    def for_source(
        cls,
        config: Any,
        source_name: str,
        metadata: CrmMetadata | None = None,
        **options: Any,
    ) -> NormalizeContext:
        """The context of ``config``'s (an ``AppConfig``) source named ``source_name``."""
        return cls(
            source=config.source(source_name),
            currency=config.currency,
            teams=config.teams,
            metadata=metadata or CrmMetadata(),
            timezone=config.fiscal.timezone,
            **options,
        )

    def team_of(self, email: str) -> str | None:
        email = email.lower()
        return next(
            (team for team, emails in self.teams.items() if email in {e.lower() for e in emails}),
            None,
        )


@dataclass
class Normalized:
    """The canonical records of one page, shaped like the store's ``StoredPage``."""

    reps: list[Rep] = field(default_factory=list)
    accounts: list[Account] = field(default_factory=list)
    deals: list[Deal] = field(default_factory=list)
    stage_changes: dict[str, list[StageChange]] = field(default_factory=dict)
    field_changes: dict[str, list[FieldChange]] = field(default_factory=dict)
    activities: list[Activity] = field(default_factory=list)
    quotas: list[Quota] = field(default_factory=list)
    deleted: dict[str, list[str]] = field(default_factory=dict)
    exclusions: list[Exclusion] = field(default_factory=list)

    def exclude(self, record_type: str, record_id: str, reason: str, detail: str) -> None:
        # Plain strings (not the enums), as the store and the run report keep them.
        self.exclusions.append(Exclusion(str(record_type), record_id, str(reason), detail))

    def mark_deleted(self, record_type: str, record_id: str) -> None:
        self.deleted.setdefault(str(record_type), []).append(record_id)

    def add_deal(
        self,
        deal: Deal,
        stage_changes: list[StageChange],
        field_changes: list[FieldChange],
        problems: Sequence[tuple[ExclusionReason, str]],
    ) -> None:
        """A deal with its histories. A deleted deal is marked deleted (never counted, so
        nothing to report); a live one is excluded for each of its ``problems``."""
        self.deals.append(deal)
        self.stage_changes[deal.id] = stage_changes
        self.field_changes[deal.id] = field_changes
        if deal.is_deleted:
            self.mark_deleted(RecordType.DEAL, deal.id)
            return
        for reason, detail in problems:
            self.exclude(RecordType.DEAL, deal.id, reason, detail)


class Problems(list[tuple[ExclusionReason, str]]):
    """One record's problems, in the order its values are read (each becomes an exclusion
    of a live record)."""

    def invalid(self, exc: InvalidValue) -> None:
        self.append((ExclusionReason.INVALID_VALUE, str(exc)))

    # The canonical model's rules of a deal, the same for every CRM: each CRM's normalizer
    # reads the value its own way and hands the reading here.

    def stage_known(self, raw_stage: str | None, known: bool) -> None:
        """A deal's stage must be one the mapping lists."""
        if not known:
            self.append(
                (
                    ExclusionReason.UNKNOWN_STAGE,
                    f"stage {raw_stage!r} is not in the mapping's stages"
                    if raw_stage
                    else "the deal has no stage",
                )
            )

    def close_date(self, read: Callable[..., dt.date | None], *args: Any) -> dt.date | None:
        """A deal's close date, ``read(*args)``, which it must have."""
        try:
            close_date = read(*args)
        except InvalidValue as exc:
            self.invalid(exc)
            return None
        if close_date is None:
            self.append((ExclusionReason.NO_CLOSE_DATE, "the deal has no close date"))
        return close_date

    def amount(self, read: Callable[..., Decimal | None], value: Any, field: str) -> Decimal | None:
        """A deal's amount, ``read(value, field)``, which it must have, not negative."""
        try:
            amount = read(value, field)
        except InvalidValue as exc:
            self.invalid(exc)
            return None
        if amount is None:
            self.append((ExclusionReason.NO_AMOUNT, "the deal has no amount"))
        elif amount < 0:
            self.invalid(InvalidValue(field, "a negative amount"))
            return None
        return amount


def normalize(context: NormalizeContext, stream: str, records: Sequence[Any]) -> Normalized:
    """The canonical records and exclusions of one page of ``stream``, by the source's CRM
    (its registry entry's ``normalize``).

    ``stages`` and ``currencies`` pages carry metadata, not records: read them with the CRM's
    ``metadata`` (its registry entry); here they give an empty result.
    """
    from crm_kpi_worker.connectors.registry import plugin_for

    return plugin_for(context.source.crm).normalize(context, stream, records)


# ---------------------------------------------------------------------------------------------
# Record loops shared by the CRM modules.


def each_record(
    records: Sequence[Any],
    record_type: RecordType,
    out: Normalized,
    one: Callable[[dict[str, Any], str], None],
    record_id: Callable[[dict[str, Any]], str],
) -> None:
    """Run ``one(record, id)`` per record (``record_id`` reads the CRM's id, raising
    :class:`InvalidValue`); a bad value becomes an invalid_value exclusion, never an error."""
    for record in records:
        found = MISSING_ID
        try:
            if not isinstance(record, dict):
                raise InvalidValue("record", f"expected an object, got {type(record).__name__}")
            found = record_id(record)
            one(record, found)
        except InvalidValue as exc:
            out.exclude(record_type, found, ExclusionReason.INVALID_VALUE, str(exc))
        except ArithmeticError:
            out.exclude(
                record_type,
                found,
                ExclusionReason.INVALID_VALUE,
                "a number too large or too small to compute with",
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error.get("loc", ())) or "record"
            out.exclude(
                record_type,
                found,
                ExclusionReason.INVALID_VALUE,
                f"{where}: {error.get('msg', 'invalid')}",
            )


def read_page(
    readers: Mapping[str, Callable[[NormalizeContext, Sequence[Any]], Normalized]],
    context: NormalizeContext,
    stream: str,
    records: Sequence[Any],
) -> Normalized:
    """One page of ``stream`` through the CRM module's reader of that stream (the metadata
    streams, ``stages`` and ``currencies``, give nothing here)."""
    reader = readers.get(stream)
    if reader is None:
        if stream in ("stages", "currencies"):
            return Normalized()
        raise ValueError(f"unknown stream {stream!r}")
    if not isinstance(records, Sequence) or isinstance(records, str | bytes):
        return Normalized()
    with gc_paused():
        return reader(context, records)


# ---------------------------------------------------------------------------------------------
# Value readers shared by the CRM modules. They raise InvalidValue, never anything else.


class InvalidValue(ValueError):
    """A value of the wrong type or shape; ``field`` names it for the exclusion."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    raise InvalidValue(name, f"expected text, got {_shown(value)}")


def read_bool(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    raise InvalidValue(name, f"expected true or false, got {_shown(value)}")


def read_decimal(value: Any, name: str) -> Decimal | None:
    """A finite number (JSON number or numeric text), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidValue(name, f"expected a number, got {_shown(value)}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else str(value))
    except (InvalidOperation, ValueError):
        raise InvalidValue(name, f"expected a number, got {_shown(value)}") from None
    if not number.is_finite():
        raise InvalidValue(name, f"expected a finite number, got {_shown(value)}")
    if abs(number) >= _TOO_LARGE:
        raise InvalidValue(name, f"{_shown(value)} is out of range")
    return number


def read_date(value: Any, name: str) -> dt.date | None:
    """A calendar date ``YYYY-MM-DD``, or None."""
    if value is None:
        return None
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidValue(name, f"expected a date YYYY-MM-DD, got {_shown(value)}")


def read_instant(value: Any, name: str) -> dt.datetime | None:
    """A timezone-aware ISO 8601 datetime (UTC), or None."""
    if value is None:
        return None
    if isinstance(value, str) and "T" in value:
        try:
            parsed = dt.datetime.fromisoformat(value)
            if parsed.tzinfo is dt.UTC:  # a zero offset parses to the UTC singleton
                return parsed
            if parsed.tzinfo is not None:
                return parsed.astimezone(dt.UTC)
        except (ValueError, OverflowError):
            pass
    raise InvalidValue(name, f"expected a datetime with its offset, got {_shown(value)}")


def cents(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Conversion:
    """The outcome of converting an amount to the reporting currency."""

    value: Decimal | None
    problem: str | None = None  # why it could not be converted


NOT_QUERIED = object()  # marker: the CRM was not asked to convert this amount


def to_reporting(
    context: NormalizeContext, amount: Decimal, currency: str, crm_converted: Any = NOT_QUERIED
) -> Conversion:
    """``amount`` in ``currency`` -> reporting currency (see the module doc for the order)."""
    reporting = context.currency.reporting
    if context.currency.conversion == "crm":
        if crm_converted is not NOT_QUERIED:
            if crm_converted is None:
                if currency == reporting:
                    return Conversion(cents(amount))
                return Conversion(
                    None, f"the CRM could not convert {currency} to {reporting} (no rate)"
                )
            try:
                converted = read_decimal(crm_converted, "converted amount")
            except InvalidValue as exc:
                return Conversion(None, exc.detail)
            return Conversion(cents(converted)) if converted is not None else Conversion(None)
        if currency == reporting:
            return Conversion(cents(amount))
        rates = context.metadata.rates
        if context.metadata.corporate_currency == reporting and rates.get(currency):
            return Conversion(cents(amount / rates[currency]))
        return Conversion(None, f"no CRM rate converts {currency} to {reporting}")
    if currency == reporting:
        return Conversion(cents(amount))
    rate = context.currency.rates.get(currency)
    if rate is None:
        return Conversion(None, f"currency.rates has no rate for {currency}")
    return Conversion(cents(amount / rate))


def annual(amount: Decimal, amount_is: str, term_months: Decimal | None) -> Decimal:
    """ARR from an amount already in the reporting currency (KPIS.md "Money")."""
    if amount_is == "mrr":
        return cents(amount * _TWELVE)
    if amount_is == "tcv":
        years = (term_months if term_months is not None else _TWELVE) / _TWELVE
        return cents(amount / years)
    return cents(amount)


def deal_arr(
    context: NormalizeContext,
    amount: Decimal,
    currency: str,
    crm_converted: Any,
    amount_is: str,
    term: Decimal | None,
    term_invalid: bool,
    problems: list[tuple[ExclusionReason, str]],
) -> Decimal | None:
    """A deal's ARR: its amount in the reporting currency (:func:`to_reporting`; one that
    cannot be converted is added to ``problems``), annualized (:func:`annual`). None too for
    a TCV amount whose term is invalid."""
    conversion = to_reporting(context, amount, currency, crm_converted)
    if conversion.value is None:
        problems.append(
            (
                ExclusionReason.UNCONVERTIBLE_CURRENCY,
                f"{amount} {currency}: {conversion.problem or 'not convertible'}",
            )
        )
        return None
    if term_invalid and amount_is == "tcv":
        return None
    return annual(conversion.value, amount_is, term)
