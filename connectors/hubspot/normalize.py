"""HubSpot records (as the HubSpot connector pulls them) -> the canonical model.

See :mod:`crm_kpi_worker.sync.normalize` for the rules every CRM follows; this module knows
HubSpot's shapes: CRM v3 objects ``{"id", "properties": {name: text or null}, "createdAt",
"updatedAt", "archived", "archivedAt"?, "propertiesWithHistory"?}`` for deals, companies,
meetings and goal targets; owners; and the deal pipelines' stages (flattened by the connector,
one record a stage).

HubSpot specifics:

- Every property value is text (or null; an empty text is taken as null).
- ``closedate`` is a datetime property. The UI stores a picked date at midnight UTC, so an
  instant at midnight UTC is that calendar date; any other instant is converted to the
  fiscal calendar's timezone first.
- Stage history: ``propertiesWithHistory`` of the stage property when the connector read it,
  else the ``hs_v2_date_entered_<stage id>`` properties (the latest entry into each stage,
  which search returns at no extra call): sorted by time, they give the stage sequence, a
  re-entered stage counting at its latest entry.
- Close-date history from ``propertiesWithHistory`` of the close-date property (newest first
  on the wire): each later value is one change. Without it, no change is known (slips 0).
- ``hs_deal_stage_probability`` is a fraction (0.4), not a percentage.
- Owners are the reps: the id is the owner id deals name in ``hubspot_owner_id``; an archived
  owner is an inactive rep; the team is the config's, else the owner's primary team.
- Goal targets are quotas: owner ``hubspot_owner_id``, period from ``hs_start_datetime`` to
  ``hs_end_datetime`` (an exclusive end: midnight UTC of the day after), amount
  ``hs_target_amount`` in the portal's company currency.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from crm_kpi_worker.connectors.hubspot.config import HubSpotMapping, HubSpotSource
from crm_kpi_worker.connectors.hubspot.settings import DATE_ENTERED_PREFIX
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
    read_decimal,
    read_instant,
    read_page,
    read_text,
    to_reporting,
)

__all__ = [
    "DATE_ENTERED_PREFIX",
    "hubspot_metadata",
    "normalize_accounts",
    "normalize_activities",
    "normalize_deals",
    "normalize_page",
    "normalize_quotas",
    "normalize_reps",
    "read_hs_date",
]

GOAL_OWNER = "hubspot_owner_id"
GOAL_AMOUNT = "hs_target_amount"
GOAL_START = "hs_start_datetime"
GOAL_END = "hs_end_datetime"
COMPANY_NAME = "name"
_ONE = Decimal(1)
_MS = dt.timedelta(milliseconds=1)


# ---------------------------------------------------------------------------------------------
# Reading records


def _props(record: dict[str, Any]) -> dict[str, Any]:
    value = record.get("properties")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidValue("properties", f"expected an object, got {type(value).__name__}")
    return value


def _prop(props: dict[str, Any], name: str | None) -> Any:
    """A property's value; HubSpot's empty text means no value."""
    if name is None:
        return None
    value = props.get(name)
    return None if value == "" else value


def _text(props: dict[str, Any], name: str | None) -> str | None:
    return read_text(_prop(props, name), str(name))


def _instant(value: Any, name: str) -> dt.datetime | None:
    """An ISO instant, or epoch milliseconds as text (older HubSpot answers)."""
    if isinstance(value, str) and value.isdigit():
        try:
            return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
        except (OverflowError, ValueError, OSError):
            raise InvalidValue(name, f"{value!r} is not a time") from None
    return read_instant(value, name)


def read_hs_date(value: Any, name: str, timezone: str) -> dt.date | None:
    """A HubSpot date: ``YYYY-MM-DD``, epoch ms, or an instant (see the module doc)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise InvalidValue(name, f"expected a date, got {value!r}") from None
    when = _instant(value, name)
    if when is None:
        return None
    if when.hour == when.minute == when.second == when.microsecond == 0:
        return when.date()  # a date picked in the UI: midnight UTC
    return when.astimezone(ZoneInfo(timezone)).date()


def _record_id(record: Any) -> str:
    value = record.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip():
        return value
    raise InvalidValue("id", f"a record needs an id, got {value!r}"[:80])


def _each(
    records: Sequence[Any],
    record_type: RecordType,
    out: Normalized,
    one: Callable[[dict[str, Any], str], None],
) -> None:
    each_record(records, record_type, out, one, _record_id)


def _history(record: dict[str, Any], name: str) -> list[tuple[dt.datetime, Any]]:
    """(time, value) of a property's history, oldest first; unreadable rows skipped."""
    histories = record.get("propertiesWithHistory")
    rows = histories.get(name) if isinstance(histories, dict) else None
    out: list[tuple[dt.datetime, Any]] = []
    for row in rows if isinstance(rows, list) else ():
        if not isinstance(row, dict):
            continue
        try:
            when = _instant(row.get("timestamp"), "timestamp")
        except InvalidValue:
            continue
        if when is not None:
            out.append((when, row.get("value")))
    out.sort(key=lambda item: item[0])
    return out


def _has_history(record: dict[str, Any], name: str) -> bool:
    histories = record.get("propertiesWithHistory")
    return isinstance(histories, dict) and isinstance(histories.get(name), list)


# ---------------------------------------------------------------------------------------------
# Metadata


def hubspot_metadata(stage_records: Sequence[Any] = ()) -> CrmMetadata:
    """Stage metadata from the connector's flattened pipeline stages (id, label,
    displayOrder, metadata.probability / isClosed). A closed stage at probability 1 is won.
    HubSpot keeps no exchange rates in the CRM API: conversion uses amount_in_home_currency
    or the config's rates."""
    stages: dict[str, StageInfo] = {}
    for record in stage_records:
        if not isinstance(record, dict):
            continue
        stage_id = record.get("id")
        if not isinstance(stage_id, str) or not stage_id:
            continue
        meta = found if isinstance(found := record.get("metadata"), dict) else {}
        try:
            probability = read_decimal(meta.get("probability"), "probability")
        except InvalidValue:
            probability = None
        closed = str(meta.get("isClosed", "false")).lower() == "true"
        order = record.get("displayOrder")
        stages[stage_id] = StageInfo(
            name=stage_id,
            is_active=record.get("archived") is not True,
            is_closed=closed,
            is_won=closed and probability is not None and probability >= _ONE,
            default_probability=(
                probability if probability is not None and 0 <= probability <= _ONE else None
            ),
            sort_order=order if isinstance(order, int) and not isinstance(order, bool) else None,
        )
    return CrmMetadata(stages, {}, None)


# ---------------------------------------------------------------------------------------------
# Deals


def _stage_history(
    mapping: HubSpotMapping, record: dict[str, Any], props: dict[str, Any], deal_id: str
) -> list[StageChange]:
    rows: list[tuple[dt.datetime, str]] = []
    if _has_history(record, mapping.stage):
        rows = [(when, v) for when, v in _history(record, mapping.stage) if isinstance(v, str)]
    else:
        for name, value in props.items():
            if not name.startswith(DATE_ENTERED_PREFIX) or value in (None, ""):
                continue
            try:
                when = _instant(value, name)
            except InvalidValue:
                continue
            if when is not None:
                rows.append((when, name[len(DATE_ENTERED_PREFIX) :]))
        rows.sort(key=lambda row: (row[0], row[1]))
    changes: list[StageChange] = []
    for when, value in rows:
        stage = mapping.stage_for(value) if value else None
        key = stage.stage if stage is not None else UNMAPPED_STAGE
        if changes and changes[-1].stage == key:
            continue
        changes.append(StageChange.model_construct(deal_id=deal_id, stage=key, entered_at=when))
    return changes


def _close_date_history(
    mapping: HubSpotMapping, record: dict[str, Any], deal_id: str, timezone: str
) -> list[FieldChange]:
    changes: list[FieldChange] = []
    previous: dt.date | None = None
    first = True
    for when, value in _history(record, mapping.close_date):
        try:
            day = read_hs_date(value, mapping.close_date, timezone)
        except InvalidValue:
            continue
        if not first and day != previous:
            changes.append(
                FieldChange(
                    deal_id=deal_id,
                    field=CLOSE_DATE_FIELD,
                    old_value=previous,
                    new_value=day,
                    changed_at=when,
                )
            )
        previous, first = day, False
    return changes


def _probability(
    context: NormalizeContext, props: dict[str, Any], stage: StageMap | None, raw: str | None
) -> Decimal | None:
    mapping = context.source.mapping
    assert isinstance(mapping, HubSpotMapping)
    if stage is not None and stage.probability is not None:
        return stage.probability
    value = read_decimal(_prop(props, mapping.probability), str(mapping.probability))
    if value is not None:
        if not 0 <= value <= _ONE:
            raise InvalidValue(str(mapping.probability), f"{value} is not a fraction 0..1")
        return value
    info = context.metadata.stages.get(raw or "")
    return info.default_probability if info else None


class _Problems(Problems):
    """One deal's problems, and a reader of text properties that notes them."""

    def text(self, props: dict[str, Any], name: str | None) -> str | None:
        """The property's text; None, with the problem noted, when it is not text."""
        try:
            return _text(props, name)
        except InvalidValue as exc:
            self.invalid(exc)
            return None


def _deal_stamps(
    mapping: HubSpotMapping, record: dict[str, Any], props: dict[str, Any]
) -> tuple[dt.datetime, dt.datetime]:
    """Creation and modification instants (the properties, else the object's own); a deal
    without them cannot be stored."""
    created = _instant(_prop(props, mapping.created_at), mapping.created_at)
    if created is None:
        created = _instant(record.get("createdAt"), "createdAt")
    modified = _instant(_prop(props, mapping.last_modified), mapping.last_modified)
    if modified is None:
        modified = _instant(record.get("updatedAt"), "updatedAt")
    if created is None:
        raise InvalidValue(mapping.created_at, "missing: the deal cannot be stored")
    if modified is None:
        raise InvalidValue(mapping.last_modified, "missing: the deal cannot be stored")
    return created, modified


def _deal_stage(
    mapping: HubSpotMapping, props: dict[str, Any], problems: _Problems
) -> tuple[str | None, StageMap | None]:
    raw_stage = problems.text(props, mapping.stage)
    stage = mapping.stage_for(raw_stage) if raw_stage else None
    problems.stage_known(raw_stage, stage is not None)
    return raw_stage, stage


def _deal_close_date(
    mapping: HubSpotMapping, props: dict[str, Any], timezone: str, problems: _Problems
) -> dt.date | None:
    close_date = _prop(props, mapping.close_date)
    return problems.close_date(read_hs_date, close_date, mapping.close_date, timezone)


def _deal_amount(
    mapping: HubSpotMapping, props: dict[str, Any], problems: _Problems
) -> Decimal | None:
    return problems.amount(read_decimal, _prop(props, mapping.amount), mapping.amount)


def _deal_currency(
    context: NormalizeContext, props: dict[str, Any], problems: _Problems
) -> str | None:
    """The deal's currency code (the reporting currency when unmapped or empty); None when
    the deal's code is invalid."""
    mapping = context.source.mapping
    assert isinstance(mapping, HubSpotMapping)
    try:
        code = _text(props, mapping.currency)
        if code is not None and (len(code) != 3 or not code.isalpha() or not code.isupper()):
            raise InvalidValue(str(mapping.currency), f"not a currency code: {code!r}")
    except InvalidValue as exc:
        problems.invalid(exc)
        return None
    return code if code is not None else context.currency.reporting


def _deal_term(
    mapping: HubSpotMapping, props: dict[str, Any], problems: _Problems
) -> tuple[Decimal | None, bool]:
    """The contract term in months, and whether the CRM's value is invalid (a problem only
    when the amount is a TCV)."""
    if mapping.term_months is None:
        return None, False
    try:
        term = read_decimal(_prop(props, mapping.term_months), mapping.term_months)
        if term is not None and not Decimal(1) <= term <= Decimal(1200):
            raise InvalidValue(mapping.term_months, f"a contract term of {term} months")
    except InvalidValue as exc:
        if mapping.amount_is == "tcv":
            problems.invalid(exc)
        return None, True
    return term, False


def _deal_forecast(
    mapping: HubSpotMapping, props: dict[str, Any], stage: StageMap | None, problems: _Problems
) -> ForecastCategory:
    """The deal's own category, else its stage's, else the mapping's default."""
    try:
        own = _text(props, mapping.forecast_category)
    except InvalidValue as exc:
        problems.invalid(exc)
        return mapping.forecast_categories.default
    if own:
        return mapping.forecast_categories.map(own)
    if stage is not None and stage.forecast_category is not None:
        return stage.forecast_category
    return mapping.forecast_categories.default


def _one_deal(
    context: NormalizeContext, record: dict[str, Any], deal_id: str, out: Normalized
) -> None:
    """One deal, read in named steps; each step notes its own problems."""
    source = context.source
    assert isinstance(source, HubSpotSource)
    mapping = source.mapping
    problems = _Problems()
    props = _props(record)
    created, modified = _deal_stamps(mapping, record, props)
    raw_stage, stage = _deal_stage(mapping, props, problems)
    close_date = _deal_close_date(mapping, props, context.timezone, problems)
    amount = _deal_amount(mapping, props, problems)
    code = _deal_currency(context, props, problems)
    term, term_invalid = _deal_term(mapping, props, problems)
    arr = None
    if amount is not None and code is not None:
        home = mapping.amount_in_home_currency
        converted = (
            _prop(props, home)
            if context.currency.conversion == "crm" and home is not None and home in props
            else NOT_QUERIED
        )
        arr = deal_arr(
            context, amount, code, converted, mapping.amount_is, term, term_invalid, problems
        )
    probability = None
    try:
        probability = _probability(context, props, stage, raw_stage)
    except InvalidValue as exc:
        problems.invalid(exc)
    forecast = _deal_forecast(mapping, props, stage, problems)
    deal_type = mapping.deal_types.map(problems.text(props, mapping.deal_type))
    name = problems.text(props, mapping.name)
    owner_id = problems.text(props, mapping.owner_id)
    account_id = problems.text(props, mapping.company_id)
    deal = Deal(
        id=deal_id,
        source=source.name,
        name=name or "",
        owner_id=owner_id or None,
        account_id=account_id or None,
        created_at=created,
        close_date=close_date,
        stage=stage.stage if stage is not None else UNMAPPED_STAGE,
        is_won=stage.won if stage is not None else False,
        is_closed=stage.closed if stage is not None else False,
        amount=amount,
        currency=code if code is not None else context.currency.reporting,
        arr=arr,
        deal_type=deal_type,
        forecast_category=forecast,
        probability=probability,
        term_months=int(term.to_integral_value()) if term is not None else None,
        is_deleted=record.get("archived") is True,
        last_modified=modified,
    )
    out.add_deal(
        deal,
        _stage_history(mapping, record, props, deal_id),
        _close_date_history(mapping, record, deal_id, context.timezone),
        problems,
    )


def normalize_deals(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Deals -> deals, their stage history and close-date history."""
    out = Normalized()
    _each(
        records,
        RecordType.DEAL,
        out,
        lambda record, deal_id: _one_deal(context, record, deal_id, out),
    )
    return out


# ---------------------------------------------------------------------------------------------
# Owners, companies, meetings, goal targets


def normalize_reps(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Owners -> reps (see the module doc)."""
    out = Normalized()
    mapping = context.source.mapping
    assert isinstance(mapping, HubSpotMapping)

    def one(record: dict[str, Any], owner_id: str) -> None:
        email = read_text(record.get("email"), "email")
        if not email:
            raise InvalidValue("email", "a rep needs an email address")
        email = email.strip().lower()
        team = context.team_of(email)
        if team is None:
            teams = record.get("teams")
            if isinstance(teams, list):
                named = [t for t in teams if isinstance(t, dict) and isinstance(t.get("name"), str)]
                primary = next((t for t in named if t.get("primary") is True), None)
                chosen = primary or (named[0] if named else None)
                team = chosen["name"] if chosen else None
        if mapping.ae_filter is not None:
            value = record.get(mapping.ae_filter.field)
            is_ae = isinstance(value, str) and value in mapping.ae_filter.values
        elif context.teams:
            is_ae = context.team_of(email) is not None
        else:
            is_ae = True
        first = read_text(record.get("firstName"), "firstName") or ""
        last = read_text(record.get("lastName"), "lastName") or ""
        out.reps.append(
            Rep(
                id=owner_id,
                name=f"{first} {last}".strip() or email,
                email=email,
                team=team,
                manager_id=None,
                is_active=record.get("archived") is not True,
                start_date=None,
                is_ae=is_ae,
            )
        )

    _each(records, RecordType.REP, out, one)
    return out


def normalize_accounts(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Companies -> accounts with their churn date; archived ones only listed as deleted."""
    out = Normalized()
    mapping = context.source.mapping
    assert isinstance(mapping, HubSpotMapping)

    def one(record: dict[str, Any], company_id: str) -> None:
        if record.get("archived") is True:
            out.mark_deleted(RecordType.ACCOUNT, company_id)
            return
        props = _props(record)
        churn = None
        if mapping.churn_date is not None:
            try:
                churn = read_hs_date(
                    _prop(props, mapping.churn_date), mapping.churn_date, context.timezone
                )
            except InvalidValue as exc:
                out.exclude(RecordType.ACCOUNT, company_id, ExclusionReason.INVALID_VALUE, str(exc))
        name = _text(props, COMPANY_NAME) or ""
        out.accounts.append(Account(id=company_id, name=name, churn_date=churn))

    _each(records, RecordType.ACCOUNT, out, one)
    return out


def normalize_activities(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Meetings (or calls, tasks) -> activities: ``demo`` for the mapped types."""
    out = Normalized()
    mapping = context.source.mapping
    assert isinstance(mapping, HubSpotMapping)
    demos = mapping.demos
    if demos is None:
        return out

    def one(record: dict[str, Any], activity_id: str) -> None:
        if record.get("archived") is True:
            out.mark_deleted(RecordType.ACTIVITY, activity_id)
            return
        props = _props(record)
        start = _instant(_prop(props, demos.start_field), demos.start_field)
        if start is None:
            raise InvalidValue(demos.start_field, "an activity needs its start")
        kind = _text(props, demos.type_field)
        out.activities.append(
            Activity(
                id=activity_id,
                owner_id=_text(props, demos.owner_field) or None,
                deal_id=None,
                kind=DEMO_ACTIVITY if kind in demos.values else OTHER_ACTIVITY,
                start=start,
            )
        )

    _each(records, RecordType.ACTIVITY, out, one)
    return out


def normalize_quotas(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    """Goal targets -> quotas in the reporting currency (see the module doc)."""
    out = Normalized()

    def one(record: dict[str, Any], goal_id: str) -> None:
        props = _props(record)
        owner = _text(props, GOAL_OWNER)
        if not owner:
            raise InvalidValue(GOAL_OWNER, "a goal target needs the owner it is assigned to")
        start_at = _instant(_prop(props, GOAL_START), GOAL_START)
        end_at = _instant(_prop(props, GOAL_END), GOAL_END)
        if start_at is None or end_at is None:
            raise InvalidValue(GOAL_START, "a goal target needs its period start and end")
        start = start_at.date()
        end = (end_at - _MS).date()
        if end < start:
            raise InvalidValue(GOAL_END, f"the period ends ({end_at:%Y-%m-%d}) before it starts")
        amount = read_decimal(_prop(props, GOAL_AMOUNT), GOAL_AMOUNT)
        if amount is None:
            out.exclude(RecordType.QUOTA, goal_id, ExclusionReason.NO_AMOUNT, f"no {GOAL_AMOUNT}")
            return
        if amount < 0:
            raise InvalidValue(GOAL_AMOUNT, "a negative quota")
        # Goal amounts are in the portal's company currency, taken to be the reporting one.
        conversion = to_reporting(context, amount, context.currency.reporting)
        assert conversion.value is not None
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
    """One page of ``stream`` (``stages`` feeds :func:`hubspot_metadata`)."""
    return read_page(_BY_STREAM, context, stream, records)
