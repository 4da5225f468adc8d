"""Salesforce records (as the Salesforce connector pulls them) -> the canonical model.

See :mod:`.normalize` for the rules every CRM follows; this module knows Salesforce's shapes:
Opportunity with its ``OpportunityHistories`` and ``Histories`` child results, User, Account,
the demos object (Event by default), ForecastingQuota with ``Period``, and the
OpportunityStage/CurrencyType metadata. Field names come from the source's mapping and are
looked up case-insensitively (SOQL names are), relationship paths through nested records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from crm_kpi_worker.sync.config import SalesforceMapping, SalesforceSource, StageMap
from crm_kpi_worker.sync.model import (
    CLOSE_DATE_FIELD,
    DEMO_ACTIVITY,
    Account,
    Activity,
    Deal,
    FieldChange,
    ForecastCategory,
    Quota,
    QuotaSource,
    Rep,
    StageChange,
)
from crm_kpi_worker.sync.normalize import (
    MISSING_ID,
    NOT_QUERIED,
    OTHER_ACTIVITY,
    UNMAPPED_STAGE,
    CrmMetadata,
    ExclusionReason,
    InvalidValue,
    NormalizeContext,
    Normalized,
    RecordType,
    StageInfo,
    annual,
    read_bool,
    read_date,
    read_decimal,
    read_instant,
    read_text,
    to_reporting,
)

__all__ = [
    "CONVERTED_AMOUNT",
    "CONVERTED_QUOTA_AMOUNT",
    "normalize_accounts",
    "normalize_activities",
    "normalize_deals",
    "normalize_page",
    "normalize_quotas",
    "normalize_reps",
    "salesforce_metadata",
]

# The connector's aliases for convertCurrency() columns (connectors.salesforce.settings).
CONVERTED_AMOUNT = "ConvertedAmount"
CONVERTED_QUOTA_AMOUNT = "ConvertedQuotaAmount"
STAGE_HISTORY = "OpportunityHistories"
FIELD_HISTORY = "Histories"
OPPORTUNITY_PREFIX = "006"
_PERIOD_MONTHS = {"month": 1, "quarter": 3, "year": 12}
_PERCENT = Decimal(100)
_TWELVE = Decimal(12)


# ---------------------------------------------------------------------------------------------
# Reading records


_MISSING = object()
_PATHS: dict[str, tuple[str, ...]] = {}


def lookup(record: Any, path: str | None) -> Any:
    """The value at ``path`` (``Amount``, ``Account.Churn_Date__c``), case-insensitive; None
    when absent or when a relationship on the way is null."""
    if path is None:
        return None
    parts = _PATHS.get(path)
    if parts is None:
        parts = _PATHS.setdefault(path, tuple(path.split(".")))
    value = record
    for part in parts:
        if not isinstance(value, dict):
            return None
        found = value.get(part, _MISSING)  # the API's own casing: the common case
        if found is _MISSING:
            folded = part.casefold()
            found = next((v for k, v in value.items() if str(k).casefold() == folded), None)
        value = found
    return value


def has_key(record: Any, name: str) -> bool:
    return isinstance(record, dict) and any(str(k).casefold() == name.casefold() for k in record)


def _record_id(record: Any) -> str:
    value = lookup(record, "Id")
    if isinstance(value, str) and value.strip():
        return value
    raise InvalidValue("Id", f"a record needs an id, got {value!r}"[:80])


def _each(
    records: Sequence[Any],
    record_type: RecordType,
    out: Normalized,
    one: Callable[[dict[str, Any], str], None],
) -> None:
    """Run ``one(record, id)`` per record; a bad value becomes an invalid_value exclusion."""
    for record in records:
        record_id = MISSING_ID
        try:
            if not isinstance(record, dict):
                raise InvalidValue("record", f"expected an object, got {type(record).__name__}")
            record_id = _record_id(record)
            one(record, record_id)
        except InvalidValue as exc:
            out.exclude(record_type, record_id, ExclusionReason.INVALID_VALUE, str(exc))
        except ArithmeticError:
            out.exclude(
                record_type,
                record_id,
                ExclusionReason.INVALID_VALUE,
                "a number too large or too small to compute with",
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error.get("loc", ())) or "record"
            out.exclude(
                record_type,
                record_id,
                ExclusionReason.INVALID_VALUE,
                f"{where}: {error.get('msg', 'invalid')}",
            )


# ---------------------------------------------------------------------------------------------
# Metadata


def salesforce_metadata(
    stage_records: Sequence[Any] = (), currency_records: Sequence[Any] = ()
) -> CrmMetadata:
    """CRM metadata from the raw ``stages`` and ``currencies`` pages; bad rows are skipped."""
    stages: dict[str, StageInfo] = {}
    for record in stage_records:
        if not isinstance(record, dict):
            continue
        try:
            names = [read_text(lookup(record, k), k) for k in ("ApiName", "MasterLabel")]
            probability = read_decimal(lookup(record, "DefaultProbability"), "DefaultProbability")
            order = read_decimal(lookup(record, "SortOrder"), "SortOrder")
            info = StageInfo(
                name=next(n for n in names if n) if any(names) else "",
                is_active=read_bool(lookup(record, "IsActive"), "IsActive", True),
                is_closed=read_bool(lookup(record, "IsClosed"), "IsClosed", False),
                is_won=read_bool(lookup(record, "IsWon"), "IsWon", False),
                default_probability=(
                    probability / _PERCENT
                    if probability is not None and 0 <= probability <= _PERCENT
                    else None
                ),
                forecast_category=read_text(
                    lookup(record, "ForecastCategoryName"), "ForecastCategoryName"
                ),
                sort_order=int(order) if order is not None and abs(order) < 10**6 else None,
            )
        except InvalidValue:
            continue
        for name in names:
            if name:
                stages[name] = info
    rates: dict[str, Decimal] = {}
    corporate = None
    for record in currency_records:
        if not isinstance(record, dict):
            continue
        try:
            code = read_text(lookup(record, "IsoCode"), "IsoCode")
            rate = read_decimal(lookup(record, "ConversionRate"), "ConversionRate")
            active = read_bool(lookup(record, "IsActive"), "IsActive", True)
            is_corporate = read_bool(lookup(record, "IsCorporate"), "IsCorporate", False)
        except InvalidValue:
            continue
        if not code:
            continue
        if is_corporate:
            corporate = code
        if active and rate is not None and rate > 0:
            rates[code] = rate
    return CrmMetadata(stages, rates, corporate)


# ---------------------------------------------------------------------------------------------
# Deals


def _stage_of(mapping: SalesforceMapping, value: str | None) -> StageMap | None:
    return mapping.stage_for(value) if value else None


def _currency_of(context: NormalizeContext, record: dict[str, Any]) -> str:
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)
    value = read_text(lookup(record, mapping.currency), str(mapping.currency))
    if value is None:
        # A single-currency org (no currency field): its amounts are in its one currency.
        return context.metadata.corporate_currency or context.currency.reporting
    if len(value) != 3 or not value.isalpha() or not value.isupper():
        raise InvalidValue(str(mapping.currency), f"not a currency code: {value!r}")
    return value


def _probability(
    context: NormalizeContext, record: dict[str, Any], stage: StageMap | None, raw_stage: str | None
) -> Decimal | None:
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)
    if stage is not None and stage.probability is not None:
        return stage.probability
    value = read_decimal(lookup(record, mapping.probability), str(mapping.probability))
    if value is not None:
        if not 0 <= value <= _PERCENT:
            raise InvalidValue(str(mapping.probability), f"{value} is not a percentage 0..100")
        return value / _PERCENT
    info = context.metadata.stages.get(raw_stage or "")
    return info.default_probability if info else None


def _forecast(
    context: NormalizeContext, record: dict[str, Any], stage: StageMap | None, raw_stage: str | None
) -> ForecastCategory:
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)
    categories = mapping.forecast_categories
    own = read_text(lookup(record, mapping.forecast_category), str(mapping.forecast_category))
    if own:
        return categories.map(own)
    if stage is not None and stage.forecast_category is not None:
        return stage.forecast_category
    info = context.metadata.stages.get(raw_stage or "")
    if info is not None and info.forecast_category:
        return categories.map(info.forecast_category)
    return categories.default


def _term(mapping: SalesforceMapping, record: dict[str, Any]) -> Decimal | None:
    if mapping.term_months is None:
        return None
    value = read_decimal(lookup(record, mapping.term_months), mapping.term_months)
    if value is not None and not Decimal(1) <= value <= Decimal(1200):
        raise InvalidValue(mapping.term_months, f"a contract term of {value} months")
    return value


def _child_records(record: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = lookup(record, name)
    if isinstance(value, dict):
        value = value.get("records")
    if not isinstance(value, list):
        return []
    return [row for row in value if isinstance(row, dict)]


def _stage_history(
    mapping: SalesforceMapping, record: dict[str, Any], deal_id: str
) -> list[StageChange]:
    rows: list[tuple[dt.datetime, str]] = []
    if mapping.stage.casefold() == "stagename":
        for row in _child_records(record, STAGE_HISTORY):
            try:
                when = read_instant(lookup(row, "CreatedDate"), "CreatedDate")
                value = read_text(lookup(row, "StageName"), "StageName")
            except InvalidValue:
                continue
            if when is not None and value:
                rows.append((when, value))
    else:
        for row in _child_records(record, FIELD_HISTORY):
            if str(lookup(row, "Field") or "").casefold() != mapping.stage.casefold():
                continue
            try:
                when = read_instant(lookup(row, "CreatedDate"), "CreatedDate")
                value = read_text(lookup(row, "NewValue"), "NewValue")
            except InvalidValue:
                continue
            if when is not None and value:
                rows.append((when, value))
    rows.sort(key=lambda row: row[0])
    changes: list[StageChange] = []
    for when, value in rows:
        stage = _stage_of(mapping, value)
        key = stage.stage if stage is not None else UNMAPPED_STAGE
        if changes and changes[-1].stage == key:
            continue  # an amount or close-date edit, not a stage change
        # Every part is already checked (an id, a mapped key, an aware UTC instant).
        changes.append(StageChange.model_construct(deal_id=deal_id, stage=key, entered_at=when))
    return changes


def _close_date_history(
    mapping: SalesforceMapping, record: dict[str, Any], deal_id: str
) -> list[FieldChange]:
    changes: list[FieldChange] = []
    for row in _child_records(record, FIELD_HISTORY):
        field_name = lookup(row, "Field")
        if field_name is not None and str(field_name).casefold() != mapping.close_date.casefold():
            continue
        try:
            when = read_instant(lookup(row, "CreatedDate"), "CreatedDate")
            old = read_date(lookup(row, "OldValue"), "OldValue")
            new = read_date(lookup(row, "NewValue"), "NewValue")
        except InvalidValue:
            continue
        if when is not None:
            changes.append(
                FieldChange(
                    deal_id=deal_id,
                    field=CLOSE_DATE_FIELD,
                    old_value=old,
                    new_value=new,
                    changed_at=when,
                )
            )
    changes.sort(key=lambda change: change.changed_at)
    return changes


def normalize_deals(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Opportunities -> deals, their stage history and close-date history."""
    out = Normalized()
    source = context.source
    assert isinstance(source, SalesforceSource)
    mapping = source.mapping

    def one(record: dict[str, Any], deal_id: str) -> None:
        problems: list[tuple[ExclusionReason, str]] = []

        def invalid(exc: InvalidValue) -> None:
            problems.append((ExclusionReason.INVALID_VALUE, str(exc)))

        is_deleted = read_bool(lookup(record, mapping.is_deleted), mapping.is_deleted, False)
        created = read_instant(lookup(record, mapping.created_at), mapping.created_at)
        modified = read_instant(lookup(record, mapping.last_modified), mapping.last_modified)
        if created is None:
            raise InvalidValue(mapping.created_at, "missing: the deal cannot be stored")
        if modified is None:
            raise InvalidValue(mapping.last_modified, "missing: the deal cannot be stored")

        raw_stage = None
        try:
            raw_stage = read_text(lookup(record, mapping.stage), mapping.stage)
        except InvalidValue as exc:
            invalid(exc)
        stage = _stage_of(mapping, raw_stage)
        if stage is None:
            problems.append(
                (
                    ExclusionReason.UNKNOWN_STAGE,
                    f"stage {raw_stage!r} is not in the mapping's stages"
                    if raw_stage
                    else "the deal has no stage",
                )
            )

        close_date = None
        try:
            close_date = read_date(lookup(record, mapping.close_date), mapping.close_date)
            if close_date is None:
                problems.append((ExclusionReason.NO_CLOSE_DATE, "the deal has no close date"))
        except InvalidValue as exc:
            invalid(exc)

        amount = None
        try:
            amount = read_decimal(lookup(record, mapping.amount), mapping.amount)
            if amount is None:
                problems.append((ExclusionReason.NO_AMOUNT, "the deal has no amount"))
            elif amount < 0:
                amount = None
                raise InvalidValue(mapping.amount, "a negative amount")
        except InvalidValue as exc:
            invalid(exc)

        currency = context.currency.reporting
        currency_ok = True
        try:
            currency = _currency_of(context, record)
        except InvalidValue as exc:
            invalid(exc)
            currency_ok = False

        term = None
        term_invalid = False
        try:
            term = _term(mapping, record)
        except InvalidValue as exc:
            term_invalid = True
            if mapping.amount_is == "tcv":  # the term only matters to a TCV amount
                invalid(exc)

        arr = None
        if amount is not None and currency_ok:
            converted = (
                lookup(record, CONVERTED_AMOUNT)
                if has_key(record, CONVERTED_AMOUNT)
                else NOT_QUERIED
            )
            conversion = to_reporting(context, amount, currency, converted)
            if conversion.value is None:
                problems.append(
                    (
                        ExclusionReason.UNCONVERTIBLE_CURRENCY,
                        f"{amount} {currency}: {conversion.problem or 'not convertible'}",
                    )
                )
            elif not (term_invalid and mapping.amount_is == "tcv"):
                arr = annual(conversion.value, mapping.amount_is, term)

        probability = None
        try:
            probability = _probability(context, record, stage, raw_stage)
        except InvalidValue as exc:
            invalid(exc)
        forecast = mapping.forecast_categories.default
        try:
            forecast = _forecast(context, record, stage, raw_stage)
        except InvalidValue as exc:
            invalid(exc)
        deal_type_value = None
        try:
            deal_type_value = read_text(lookup(record, mapping.deal_type), str(mapping.deal_type))
        except InvalidValue as exc:
            invalid(exc)
        name = ""
        try:
            name = read_text(lookup(record, mapping.name), mapping.name) or ""
        except InvalidValue as exc:
            invalid(exc)
        owner_id = account_id = None
        try:
            owner_id = read_text(lookup(record, mapping.owner_id), mapping.owner_id) or None
        except InvalidValue as exc:
            invalid(exc)
        try:
            account_id = (
                read_text(lookup(record, mapping.account_id), str(mapping.account_id)) or None
            )
        except InvalidValue as exc:
            invalid(exc)

        deal = Deal(
            id=deal_id,
            source=source.name,
            name=name,
            owner_id=owner_id,
            account_id=account_id,
            created_at=created,
            close_date=close_date,
            stage=stage.stage if stage is not None else UNMAPPED_STAGE,
            is_won=stage.won if stage is not None else False,
            is_closed=stage.closed if stage is not None else False,
            amount=amount,
            currency=currency,
            arr=arr,
            deal_type=mapping.deal_types.map(deal_type_value),
            forecast_category=forecast,
            probability=probability,
            term_months=int(term.to_integral_value()) if term is not None else None,
            is_deleted=is_deleted,
            last_modified=modified,
        )
        out.deals.append(deal)
        out.stage_changes[deal_id] = _stage_history(mapping, record, deal_id)
        out.field_changes[deal_id] = _close_date_history(mapping, record, deal_id)
        if is_deleted:
            out.mark_deleted(RecordType.DEAL, deal_id)
            return  # never counted: nothing to report
        for reason, detail in problems:
            out.exclude(RecordType.DEAL, deal_id, reason, detail)

    _each(records, RecordType.DEAL, out, one)
    return out


# ---------------------------------------------------------------------------------------------
# Reps, accounts, activities, quotas


def normalize_reps(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Users -> reps: email lower-cased, team from the config's teams or the team field."""
    out = Normalized()
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)

    def one(record: dict[str, Any], user_id: str) -> None:
        email = read_text(lookup(record, "Email"), "Email")
        if not email:
            raise InvalidValue("Email", "a rep needs an email address")
        email = email.strip().lower()
        team = context.team_of(email)
        if team is None and mapping.team_field is not None:
            team = read_text(lookup(record, mapping.team_field), mapping.team_field) or None
        if mapping.ae_filter is not None:
            value = lookup(record, mapping.ae_filter.field)
            is_ae = isinstance(value, str) and value in mapping.ae_filter.values
        elif context.teams:
            is_ae = context.team_of(email) is not None
        else:
            is_ae = True
        start = None
        if context.rep_start_date_field:
            start = read_date(
                lookup(record, context.rep_start_date_field), context.rep_start_date_field
            )
        out.reps.append(
            Rep(
                id=user_id,
                name=read_text(lookup(record, "Name"), "Name") or "",
                email=email,
                team=team,
                manager_id=read_text(lookup(record, "ManagerId"), "ManagerId") or None,
                is_active=read_bool(lookup(record, "IsActive"), "IsActive", True),
                start_date=start,
                is_ae=is_ae,
            )
        )

    _each(records, RecordType.REP, out, one)
    return out


def account_churn_field(mapping: SalesforceMapping) -> str | None:
    churn = mapping.churn_date
    if churn is None or not churn.startswith("Account."):
        return None
    return churn.removeprefix("Account.")


def normalize_accounts(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Accounts -> accounts with their churn date; deleted ones only listed as deleted."""
    out = Normalized()
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)
    churn_field = account_churn_field(mapping)

    def one(record: dict[str, Any], account_id: str) -> None:
        if read_bool(lookup(record, "IsDeleted"), "IsDeleted", False):
            out.mark_deleted(RecordType.ACCOUNT, account_id)
            return
        name = read_text(lookup(record, "Name"), "Name") or ""
        churn = None
        if churn_field is not None:
            try:
                churn = read_date(lookup(record, churn_field), churn_field)
            except InvalidValue as exc:
                out.exclude(RecordType.ACCOUNT, account_id, ExclusionReason.INVALID_VALUE, str(exc))
        out.accounts.append(Account(id=account_id, name=name, churn_date=churn))

    _each(records, RecordType.ACCOUNT, out, one)
    return out


def normalize_activities(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Demo-object records -> activities: kind ``demo`` for the mapped types, ``other`` else."""
    out = Normalized()
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)
    demos = mapping.demos
    if demos is None:
        return out

    def one(record: dict[str, Any], activity_id: str) -> None:
        if read_bool(lookup(record, "IsDeleted"), "IsDeleted", False):
            out.mark_deleted(RecordType.ACTIVITY, activity_id)
            return
        start = read_instant(lookup(record, demos.start_field), demos.start_field)
        if start is None:
            raise InvalidValue(demos.start_field, "an activity needs its start")
        kind_value = read_text(lookup(record, demos.type_field), demos.type_field)
        related = lookup(record, demos.deal_field)
        deal_id = (
            related if isinstance(related, str) and related.startswith(OPPORTUNITY_PREFIX) else None
        )
        out.activities.append(
            Activity(
                id=activity_id,
                owner_id=read_text(lookup(record, demos.owner_field), demos.owner_field) or None,
                deal_id=deal_id,
                kind=DEMO_ACTIVITY if kind_value in demos.values else OTHER_ACTIVITY,
                start=start,
            )
        )

    _each(records, RecordType.ACTIVITY, out, one)
    return out


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def normalize_quotas(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """ForecastingQuota -> quotas in the reporting currency; the period end from
    ``Period.EndDate``, else ``StartDate`` + the period's length (``Period.Type``, else
    ``quota_period_months``)."""
    out = Normalized()

    def one(record: dict[str, Any], quota_id: str) -> None:
        owner = read_text(lookup(record, "QuotaOwnerId"), "QuotaOwnerId")
        if not owner:
            raise InvalidValue("QuotaOwnerId", "a quota needs its owner")
        start = read_date(lookup(record, "StartDate"), "StartDate")
        if start is None:
            raise InvalidValue("StartDate", "a quota needs its period start")
        end = read_date(lookup(record, "Period.EndDate"), "Period.EndDate")
        if end is None:
            period_type = read_text(lookup(record, "Period.Type"), "Period.Type")
            months = _PERIOD_MONTHS.get((period_type or "").lower(), context.quota_period_months)
            try:
                end = _add_months(start.replace(day=1), months) - dt.timedelta(days=1)
            except (ValueError, OverflowError):
                raise InvalidValue("StartDate", f"no period end after {start}") from None
        amount = read_decimal(lookup(record, "QuotaAmount"), "QuotaAmount")
        if amount is None:
            out.exclude(RecordType.QUOTA, quota_id, ExclusionReason.NO_AMOUNT, "no QuotaAmount")
            return
        if amount < 0:
            raise InvalidValue("QuotaAmount", "a negative quota")
        currency = (
            read_text(lookup(record, "CurrencyIsoCode"), "CurrencyIsoCode")
            or context.metadata.corporate_currency
            or context.currency.reporting
        )
        converted = (
            lookup(record, CONVERTED_QUOTA_AMOUNT)
            if has_key(record, CONVERTED_QUOTA_AMOUNT)
            else NOT_QUERIED
        )
        conversion = to_reporting(context, amount, currency, converted)
        if conversion.value is None:
            out.exclude(
                RecordType.QUOTA,
                quota_id,
                ExclusionReason.UNCONVERTIBLE_CURRENCY,
                f"{amount} {currency}: {conversion.problem or 'not convertible'}",
            )
            return
        out.quotas.append(
            Quota(
                rep_id=owner,
                period_start=start,
                period_end=end,
                amount=conversion.value,
                source=QuotaSource.CRM,
            )
        )

    _each(records, RecordType.QUOTA, out, one)
    return out


_BY_STREAM: dict[str, Callable[[NormalizeContext, Sequence[Any]], Normalized]] = {
    "deals": normalize_deals,
    "users": normalize_reps,
    "accounts": normalize_accounts,
    "activities": normalize_activities,
    "quotas": normalize_quotas,
}


def normalize_page(context: NormalizeContext, stream: str, records: Sequence[Any]) -> Normalized:
    """One page of ``stream`` (``stages``/``currencies`` feed :func:`salesforce_metadata`)."""
    reader = _BY_STREAM.get(stream)
    if reader is None:
        if stream in ("stages", "currencies"):
            return Normalized()
        raise ValueError(f"unknown stream {stream!r}")
    if not isinstance(records, Sequence) or isinstance(records, str | bytes):
        return Normalized()
    return reader(context, records)
