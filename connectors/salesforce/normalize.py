"""Salesforce records (as the Salesforce connector pulls them) -> the canonical model.

See :mod:`crm_kpi_worker.sync.normalize` for the rules every CRM follows; this module knows
Salesforce's shapes: Opportunity with its ``OpportunityHistories`` and ``Histories`` child
results, User, Account, the demos object (Event by default), ForecastingQuota with ``Period``,
and the OpportunityStage/CurrencyType metadata. Field names come from the source's mapping and
are looked up case-insensitively (SOQL names are), relationship paths through nested records.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from crm_kpi_worker.connectors.salesforce.config import SalesforceMapping, SalesforceSource
from crm_kpi_worker.connectors.salesforce.settings import (
    CONVERTED_AMOUNT,
    CONVERTED_QUOTA_AMOUNT,
    FIELD_HISTORY,
    STAGE_HISTORY,
)
from crm_kpi_worker.kpis.calendar import add_months
from crm_kpi_worker.sync.config.mapping import StageMap
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
    NOT_QUERIED,
    OTHER_ACTIVITY,
    UNMAPPED_STAGE,
    CrmMetadata,
    ExclusionReason,
    InvalidValue,
    NormalizeContext,
    Normalized,
    Problems,
    RecordType,
    StageInfo,
    deal_arr,
    each_record,
    read_bool,
    read_date,
    read_decimal,
    read_instant,
    read_page,
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


Reader = Callable[[dict[str, Any]], Any]


def field_reader(path: str | None) -> Reader:
    """:func:`lookup` of one path, compiled: a plain field is one ``dict.get`` when the record
    uses the path's own casing (the case-insensitive search only runs when it does not)."""
    if path is None:
        return lambda record: None
    if "." in path:
        return lambda record: lookup(record, path)
    folded = path.casefold()

    def read(record: dict[str, Any]) -> Any:
        found = record.get(path, _MISSING)
        if found is _MISSING:
            return next((v for k, v in record.items() if str(k).casefold() == folded), None)
        return found

    return read


def key_tester(name: str) -> Callable[[dict[str, Any]], bool]:
    """:func:`has_key` of one name, compiled (exact casing first)."""
    folded = name.casefold()

    def test(record: dict[str, Any]) -> bool:
        return name in record or any(str(k).casefold() == folded for k in record)

    return test


_read_id = field_reader("Id")


def _record_id(record: Any) -> str:
    value = _read_id(record)
    if isinstance(value, str) and value.strip():
        return value
    raise InvalidValue("Id", f"a record needs an id, got {value!r}"[:80])


def _plain_id(value: Any) -> bool:
    """Text that every id constraint of the model accepts (1..255 ASCII letters and digits,
    as CRM ids are): such values skip pydantic's validation, which would keep them as is."""
    return type(value) is str and 0 < len(value) <= 255 and value.isascii() and value.isalnum()


def _trusted(model: type[Any]) -> Callable[..., Any]:
    """``model.model_construct`` for already-checked values, without its per-field loop.

    Used only when the model has nothing model_construct would add (aliases, defaults left
    out, extra values, private attributes, post-init); every keyword must be a field, in
    field order. Checked once against model_construct itself; otherwise model_construct.
    """
    names = tuple(model.__pydantic_fields__)
    simple = (
        all(
            f.alias is None and f.validation_alias is None
            for f in model.__pydantic_fields__.values()
        )
        and not model.__pydantic_post_init__
        and not model.__private_attributes__
        and model.model_config.get("extra") != "allow"
        and not model.__pydantic_root_model__
    )
    new: Callable[..., Any] = model.__new__
    setattr_ = object.__setattr__

    def construct(**values: Any) -> Any:
        instance = new(model)
        setattr_(instance, "__dict__", values)
        setattr_(instance, "__pydantic_fields_set__", set(values))
        setattr_(instance, "__pydantic_extra__", None)
        setattr_(instance, "__pydantic_private__", None)
        return instance

    if not simple:
        return model.model_construct
    sample = dict.fromkeys(names, None)
    fast, slow = construct(**sample), model.model_construct(**sample)
    same = (
        fast == slow
        and fast.__dict__ == slow.__dict__
        and list(fast.__dict__) == list(slow.__dict__)
        and fast.model_fields_set == slow.model_fields_set
        and fast.__pydantic_extra__ == slow.__pydantic_extra__
        and fast.__pydantic_private__ == slow.__pydantic_private__
    )
    return construct if same else model.model_construct


_deal = _trusted(Deal)
_stage_change = _trusted(StageChange)
_activity = _trusted(Activity)


def _each(
    records: Sequence[Any],
    record_type: RecordType,
    out: Normalized,
    one: Callable[[dict[str, Any], str], None],
) -> None:
    each_record(records, record_type, out, one, _record_id)


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


class _DealFields:
    """The mapping's opportunity fields as compiled readers (one set per page)."""

    def __init__(self, mapping: SalesforceMapping) -> None:
        self.is_deleted = field_reader(mapping.is_deleted)
        self.created_at = field_reader(mapping.created_at)
        self.last_modified = field_reader(mapping.last_modified)
        self.stage = field_reader(mapping.stage)
        self.close_date = field_reader(mapping.close_date)
        self.amount = field_reader(mapping.amount)
        self.currency = field_reader(mapping.currency)
        self.term_months = field_reader(mapping.term_months)
        self.probability = field_reader(mapping.probability)
        self.forecast_category = field_reader(mapping.forecast_category)
        self.deal_type = field_reader(mapping.deal_type)
        self.name = field_reader(mapping.name)
        self.owner_id = field_reader(mapping.owner_id)
        self.account_id = field_reader(mapping.account_id)
        self.converted = field_reader(CONVERTED_AMOUNT)
        self.has_converted = key_tester(CONVERTED_AMOUNT)
        self.stage_history = field_reader(STAGE_HISTORY)
        self.field_history = field_reader(FIELD_HISTORY)
        self.created_date = field_reader("CreatedDate")
        self.stage_name = field_reader("StageName")
        self.field = field_reader("Field")
        self.old_value = field_reader("OldValue")
        self.new_value = field_reader("NewValue")


def _currency_of(context: NormalizeContext, record: dict[str, Any], fields: _DealFields) -> str:
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)
    value = read_text(fields.currency(record), str(mapping.currency))
    if value is None:
        # A single-currency org (no currency field): its amounts are in its one currency.
        return context.metadata.corporate_currency or context.currency.reporting
    if len(value) != 3 or not value.isalpha() or not value.isupper():
        raise InvalidValue(str(mapping.currency), f"not a currency code: {value!r}")
    return value


def _probability(
    context: NormalizeContext,
    record: dict[str, Any],
    stage: StageMap | None,
    raw_stage: str | None,
    fields: _DealFields,
) -> Decimal | None:
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)
    if stage is not None and stage.probability is not None:
        return stage.probability
    value = read_decimal(fields.probability(record), str(mapping.probability))
    if value is not None:
        if not 0 <= value <= _PERCENT:
            raise InvalidValue(str(mapping.probability), f"{value} is not a percentage 0..100")
        return value / _PERCENT
    info = context.metadata.stages.get(raw_stage or "")
    return info.default_probability if info else None


def _forecast(
    context: NormalizeContext,
    record: dict[str, Any],
    stage: StageMap | None,
    raw_stage: str | None,
    fields: _DealFields,
) -> ForecastCategory:
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)
    categories = mapping.forecast_categories
    own = read_text(fields.forecast_category(record), str(mapping.forecast_category))
    if own:
        return categories.map(own)
    if stage is not None and stage.forecast_category is not None:
        return stage.forecast_category
    info = context.metadata.stages.get(raw_stage or "")
    if info is not None and info.forecast_category:
        return categories.map(info.forecast_category)
    return categories.default


def _term(
    mapping: SalesforceMapping, record: dict[str, Any], fields: _DealFields
) -> Decimal | None:
    if mapping.term_months is None:
        return None
    value = read_decimal(fields.term_months(record), mapping.term_months)
    if value is not None and not Decimal(1) <= value <= Decimal(1200):
        raise InvalidValue(mapping.term_months, f"a contract term of {value} months")
    return value


def _child_records(record: dict[str, Any], read: Reader) -> list[dict[str, Any]]:
    value = read(record)
    if isinstance(value, dict):
        value = value.get("records")
    if not isinstance(value, list):
        return []
    return [row for row in value if isinstance(row, dict)]


def _stage_history(
    mapping: SalesforceMapping, record: dict[str, Any], deal_id: str, fields: _DealFields
) -> list[StageChange]:
    rows: list[tuple[dt.datetime, str]] = []
    created_date = fields.created_date
    if mapping.stage.casefold() == "stagename":
        stage_name = fields.stage_name
        for row in _child_records(record, fields.stage_history):
            # The API's own casing first (field_reader's fast path, inlined: the hot loop).
            when = row.get("CreatedDate", _MISSING)
            value = row.get("StageName", _MISSING)
            try:
                when = read_instant(created_date(row) if when is _MISSING else when, "CreatedDate")
                value = read_text(stage_name(row) if value is _MISSING else value, "StageName")
            except InvalidValue:
                continue
            if when is not None and value:
                rows.append((when, value))
    else:
        for row in _child_records(record, fields.field_history):
            if str(fields.field(row) or "").casefold() != mapping.stage.casefold():
                continue
            try:
                when = read_instant(created_date(row), "CreatedDate")
                value = read_text(fields.new_value(row), "NewValue")
            except InvalidValue:
                continue
            if when is not None and value:
                rows.append((when, value))
    rows.sort(key=lambda row: row[0])
    changes: list[StageChange] = []
    last = None
    for when, value in rows:
        stage = _stage_of(mapping, value)
        key = stage.stage if stage is not None else UNMAPPED_STAGE
        if key == last:
            continue  # an amount or close-date edit, not a stage change
        last = key
        # Every part is already checked (an id, a mapped key, an aware UTC instant).
        changes.append(_stage_change(deal_id=deal_id, stage=key, entered_at=when))
    return changes


def _close_date_history(
    mapping: SalesforceMapping, record: dict[str, Any], deal_id: str, fields: _DealFields
) -> list[FieldChange]:
    changes: list[FieldChange] = []
    for row in _child_records(record, fields.field_history):
        field_name = fields.field(row)
        if field_name is not None and str(field_name).casefold() != mapping.close_date.casefold():
            continue
        try:
            when = read_instant(fields.created_date(row), "CreatedDate")
            old = read_date(fields.old_value(row), "OldValue")
            new = read_date(fields.new_value(row), "NewValue")
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


_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ONE = Decimal(1)


def _deal_stage(
    mapping: SalesforceMapping, record: dict[str, Any], fields: _DealFields, problems: Problems
) -> tuple[str | None, StageMap | None]:
    raw_stage = None
    try:
        raw_stage = read_text(fields.stage(record), mapping.stage)
    except InvalidValue as exc:
        problems.invalid(exc)
    stage = _stage_of(mapping, raw_stage)
    problems.stage_known(raw_stage, stage is not None)
    return raw_stage, stage


def _deal_close_date(
    mapping: SalesforceMapping, record: dict[str, Any], fields: _DealFields, problems: Problems
) -> dt.date | None:
    return problems.close_date(read_date, fields.close_date(record), mapping.close_date)


def _deal_amount(
    mapping: SalesforceMapping, record: dict[str, Any], fields: _DealFields, problems: Problems
) -> Decimal | None:
    return problems.amount(read_decimal, fields.amount(record), mapping.amount)


def _deal_term(
    mapping: SalesforceMapping, record: dict[str, Any], fields: _DealFields, problems: Problems
) -> tuple[Decimal | None, bool]:
    """The contract term in months, and whether the org's value is invalid."""
    try:
        return _term(mapping, record, fields), False
    except InvalidValue as exc:
        if mapping.amount_is == "tcv":  # the term only matters to a TCV amount
            problems.invalid(exc)
        return None, True


def _deal_texts(
    mapping: SalesforceMapping, record: dict[str, Any], fields: _DealFields, problems: Problems
) -> tuple[str | None, str, str | None, str | None]:
    """(deal type value, name, owner id, account id), in the order problems are noted."""
    deal_type = owner_id = account_id = None
    name = ""
    try:
        deal_type = read_text(fields.deal_type(record), str(mapping.deal_type))
    except InvalidValue as exc:
        problems.invalid(exc)
    try:
        name = read_text(fields.name(record), mapping.name) or ""
    except InvalidValue as exc:
        problems.invalid(exc)
    try:
        owner_id = read_text(fields.owner_id(record), mapping.owner_id) or None
    except InvalidValue as exc:
        problems.invalid(exc)
    try:
        account_id = read_text(fields.account_id(record), str(mapping.account_id)) or None
    except InvalidValue as exc:
        problems.invalid(exc)
    return deal_type, name, owner_id, account_id


def _plain_currency(code: str) -> bool:
    return len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()


def _known_valid(values: dict[str, Any]) -> bool:
    """Whether a deal's values pass every rule of ``Deal`` (the ids, the currency, the money,
    the probability, the term, won => closed, UTC instants): then it is built without
    pydantic's checks. ``tests/test_normalize.py`` pins the model's rules this covers (the
    source name and stage keys come from the validated config)."""
    term, arr, probability = values["term_months"], values["arr"], values["probability"]
    owner_id, account_id = values["owner_id"], values["account_id"]
    return (
        _plain_id(values["id"])
        and (owner_id is None or _plain_id(owner_id))
        and (account_id is None or _plain_id(account_id))
        and type(values["name"]) is str
        and _plain_currency(values["currency"])
        and (arr is None or (values["amount"] is not None and arr >= 0))
        and (probability is None or 0 <= probability <= _ONE)
        and (term is None or 1 <= term <= 1200)
        and (values["is_closed"] or not values["is_won"])
        and values["created_at"].tzinfo is dt.UTC
        and values["last_modified"].tzinfo is dt.UTC
    )


def normalize_deals(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Opportunities -> deals, their stage history and close-date history."""
    out = Normalized()
    source = context.source
    assert isinstance(source, SalesforceSource)
    mapping = source.mapping
    fields = _DealFields(mapping)
    # Deals whose every value is already known valid are built without pydantic's checks
    # (the same object it would build); any other goes through Deal(...) as always.
    source_ok = _SOURCE_NAME.fullmatch(source.name) is not None

    def one(record: dict[str, Any], deal_id: str) -> None:
        problems = Problems()
        is_deleted = read_bool(fields.is_deleted(record), mapping.is_deleted, False)
        created = read_instant(fields.created_at(record), mapping.created_at)
        modified = read_instant(fields.last_modified(record), mapping.last_modified)
        if created is None:
            raise InvalidValue(mapping.created_at, "missing: the deal cannot be stored")
        if modified is None:
            raise InvalidValue(mapping.last_modified, "missing: the deal cannot be stored")
        raw_stage, stage = _deal_stage(mapping, record, fields, problems)
        close_date = _deal_close_date(mapping, record, fields, problems)
        amount = _deal_amount(mapping, record, fields, problems)
        currency: str | None = None
        try:
            currency = _currency_of(context, record, fields)
        except InvalidValue as exc:
            problems.invalid(exc)
        term, term_invalid = _deal_term(mapping, record, fields, problems)
        arr = None
        if amount is not None and currency is not None:
            converted = fields.converted(record) if fields.has_converted(record) else NOT_QUERIED
            arr = deal_arr(
                context,
                amount,
                currency,
                converted,
                mapping.amount_is,
                term,
                term_invalid,
                problems,
            )
        probability = None
        try:
            probability = _probability(context, record, stage, raw_stage, fields)
        except InvalidValue as exc:
            problems.invalid(exc)
        forecast = mapping.forecast_categories.default
        try:
            forecast = _forecast(context, record, stage, raw_stage, fields)
        except InvalidValue as exc:
            problems.invalid(exc)
        deal_type_value, name, owner_id, account_id = _deal_texts(mapping, record, fields, problems)
        values: dict[str, Any] = {
            "id": deal_id,
            "source": source.name,
            "name": name,
            "owner_id": owner_id,
            "account_id": account_id,
            "created_at": created,
            "close_date": close_date,
            "stage": stage.stage if stage is not None else UNMAPPED_STAGE,
            "is_won": stage.won if stage is not None else False,
            "is_closed": stage.closed if stage is not None else False,
            "amount": amount,
            "currency": currency if currency is not None else context.currency.reporting,
            "arr": arr,
            "deal_type": mapping.deal_types.map(deal_type_value),
            "forecast_category": forecast,
            "probability": probability,
            "term_months": int(term.to_integral_value()) if term is not None else None,
            "is_deleted": is_deleted,
            "last_modified": modified,
        }
        deal = _deal(**values) if source_ok and _known_valid(values) else Deal(**values)
        out.add_deal(
            deal,
            _stage_history(mapping, record, deal_id, fields),
            _close_date_history(mapping, record, deal_id, fields),
            problems,
        )

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


def normalize_accounts(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Accounts -> accounts with their churn date; deleted ones only listed as deleted."""
    out = Normalized()
    mapping = context.source.mapping
    assert isinstance(mapping, SalesforceMapping)
    churn_field = mapping.account_churn_field()

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

    read_deleted = field_reader("IsDeleted")
    read_start = field_reader(demos.start_field)
    read_type = field_reader(demos.type_field)
    read_deal = field_reader(demos.deal_field)
    read_owner = field_reader(demos.owner_field)

    def one(record: dict[str, Any], activity_id: str) -> None:
        if read_bool(read_deleted(record), "IsDeleted", False):
            out.mark_deleted(RecordType.ACTIVITY, activity_id)
            return
        start = read_instant(read_start(record), demos.start_field)
        if start is None:
            raise InvalidValue(demos.start_field, "an activity needs its start")
        kind_value = read_text(read_type(record), demos.type_field)
        related = read_deal(record)
        deal_id = (
            related if isinstance(related, str) and related.startswith(OPPORTUNITY_PREFIX) else None
        )
        owner_id = read_text(read_owner(record), demos.owner_field) or None
        values: dict[str, Any] = {
            "id": activity_id,
            "owner_id": owner_id,
            "deal_id": deal_id,
            "kind": DEMO_ACTIVITY if kind_value in demos.values else OTHER_ACTIVITY,
            "start": start,
        }
        known_valid = (
            _plain_id(activity_id)
            and (owner_id is None or _plain_id(owner_id))
            and (deal_id is None or _plain_id(deal_id))
            and start.tzinfo is dt.UTC
        )
        out.activities.append(_activity(**values) if known_valid else Activity(**values))

    _each(records, RecordType.ACTIVITY, out, one)
    return out


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
                end = add_months(start, months) - dt.timedelta(days=1)
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
    return read_page(_BY_STREAM, context, stream, records)
