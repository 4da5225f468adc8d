"""One page of a pull as the store takes it (:class:`StoredPage`), and its preparation:
validation and encoding into driver rows, before any database work."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crm_kpi_worker.sync.model import (
    CLOSE_DATE_FIELD,
    Account,
    Activity,
    Deal,
    FieldChange,
    Quota,
    Rep,
    StageChange,
)
from crm_kpi_worker.sync.store.database import DriverValues
from crm_kpi_worker.sync.store.schema import (
    RECORD_TABLES,
    encode_close_date_history,
    encode_field_history,
    encode_json,
    encode_stage_history,
)

__all__ = [
    "ACTIVITY_ROW",
    "DEAL_COLUMNS",
    "DEAL_ROW",
    "RECORD_KINDS",
    "Exclusion",
    "PreparedPage",
    "StoredPage",
]

#: Record kinds of StoredPage.deleted / seen_ids and of Exclusion.record_type.
RECORD_KINDS: tuple[str, ...] = tuple(RECORD_TABLES)

#: The deal's own columns, one value per deal (histories and bookkeeping aside).
DEAL_COLUMNS: tuple[str, ...] = (
    "id",
    "owner_id",
    "account_id",
    "created_at",
    "close_date",
    "stage",
    "is_won",
    "is_closed",
    "amount",
    "currency",
    "arr",
    "deal_type",
    "forecast_category",
    "probability",
    "term_months",
    "last_modified",
)

#: Columns of PreparedPage.deals rows (tuples).
DEAL_ROW: tuple[str, ...] = (
    "source",
    "id",
    "name",
    *DEAL_COLUMNS[1:],
    "stage_history",
    "close_date_history",
    "field_history",
    "is_deleted",
)
#: Columns of PreparedPage.activities rows (tuples).
ACTIVITY_ROW: tuple[str, ...] = ("source", "id", "owner_id", "deal_id", "kind", "start")


@dataclass(frozen=True)
class Exclusion:
    """A record left out at pull time (bad data), with the reason reported in the run."""

    record_type: str  # one of RECORD_KINDS, or "quota"
    record_id: str
    reason: str  # short machine key, e.g. "unknown_stage"
    detail: str = ""


@dataclass
class StoredPage:
    """Everything one page of one stream changes, saved in one transaction with its cursor.

    - ``cursor``: the stream's cursor after this page; None leaves the stored cursor as is.
    - ``reps``/``accounts``/``deals``/``activities``: upserted (a later page wins); an upsert
      also clears a deletion mark (a restored record). ``deals[].source`` must be ``source``.
    - ``stage_changes``/``field_changes``: deal id -> that deal's WHOLE history, replacing
      what was stored (kept oldest first). Deals neither in this page nor stored are ignored.
    - ``deleted``: record kind ("deal", "rep", "account", "activity") -> ids the CRM deleted
      or archived. The rows stay, marked deleted (never read as live; an upsert restores them).
    - ``seen_ids``: record kind -> ids the CRM still has but this page does not carry (e.g. an
      id-only listing during a full pull); only marks them seen for the full-pull sweep.
    - ``quotas``: when not None, replaces ALL quotas of the source (an empty list clears them).
    - ``metadata``: key -> JSON-able value (Decimal, date and datetime round-trip), upserted.
    - ``exclusions``: replace the exclusions of every record this page carries (records,
      histories, deletions, and the excluded records themselves), so a record fixed in the CRM
      loses its exclusion; with ``quotas`` given, all "quota" exclusions are replaced too.
    """

    source: str
    stream: str
    cursor: str | None = None
    reps: Sequence[Rep] = ()
    accounts: Sequence[Account] = ()
    deals: Sequence[Deal] = ()
    stage_changes: Mapping[str, Sequence[StageChange]] = field(default_factory=dict)
    field_changes: Mapping[str, Sequence[FieldChange]] = field(default_factory=dict)
    activities: Sequence[Activity] = ()
    deleted: Mapping[str, Collection[str]] = field(default_factory=dict)
    quotas: Sequence[Quota] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    exclusions: Sequence[Exclusion] = ()
    seen_ids: Mapping[str, Collection[str]] = field(default_factory=dict)
    #: record id -> the digest of its content as pulled (``connectors.base.Page.digests``),
    #: saved with the page: the next pull skips the record while its digest stays the same.
    digests: Mapping[str, str] = field(default_factory=dict)


class PreparedPage:
    """A page checked and turned into rows. Errors here are the caller's bugs (ValueError)."""

    def __init__(self, page: StoredPage, driver: DriverValues) -> None:
        self.page = page
        _check_record_kinds(page)
        stage_texts, close_texts, field_texts = _history_texts(page)
        date = driver.date
        source = page.source
        self.reps = _by_id(
            {
                "source": source,
                "id": rep.id,
                "name": rep.name,
                "email": rep.email,
                "team": rep.team,
                "manager_id": rep.manager_id,
                "is_active": rep.is_active,
                "start_date": date(rep.start_date),
                "is_ae": rep.is_ae,
            }
            for rep in page.reps
        )
        self.accounts = _by_id(
            {
                "source": source,
                "id": account.id,
                "name": account.name,
                "churn_date": date(account.churn_date),
            }
            for account in page.accounts
        )
        # Pops the histories of the deals the page carries...
        self.deals = _deal_rows(page, driver, stage_texts, close_texts, field_texts)
        # ...so these are the histories of deals it does not carry.
        self.detached_histories = {
            "stage_history": stage_texts,
            "close_date_history": close_texts,
            "field_history": field_texts,
        }
        self.activities = _activity_rows(page, driver)
        self.deleted = {kind: sorted(set(ids)) for kind, ids in page.deleted.items() if ids}
        self.seen_ids = {kind: sorted(set(ids)) for kind, ids in page.seen_ids.items() if ids}
        self.quotas = _quota_rows(page)
        self.metadata = {key: encode_json(value) for key, value in page.metadata.items()}
        self.carried, self.exclusions = _exclusion_rows(page)


def _check_record_kinds(page: StoredPage) -> None:
    for kinds, what in ((page.deleted, "deleted"), (page.seen_ids, "seen_ids")):
        for kind in kinds:
            if kind not in RECORD_TABLES:
                raise ValueError(
                    f"{what}: unknown record kind {kind!r}; expected one of {RECORD_KINDS}"
                )


def _history_texts(page: StoredPage) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Deal id -> encoded stage history, close-date history and other field history."""
    stage_texts = {
        deal_id: encode_stage_history(deal_id, changes)
        for deal_id, changes in page.stage_changes.items()
    }
    close_texts: dict[str, str] = {}
    field_texts: dict[str, str] = {}
    for deal_id, changes in page.field_changes.items():
        close = [change for change in changes if change.field == CLOSE_DATE_FIELD]
        other = [change for change in changes if change.field != CLOSE_DATE_FIELD]
        close_texts[deal_id] = encode_close_date_history(deal_id, close)
        field_texts[deal_id] = encode_field_history(deal_id, other) if other else ""
    return stage_texts, close_texts, field_texts


def _deal_rows(
    page: StoredPage,
    driver: DriverValues,
    stage_texts: dict[str, str],
    close_texts: dict[str, str],
    field_texts: dict[str, str],
) -> list[tuple[Any, ...]]:
    """Rows in DEAL_ROW order, one per id (the last one winning). Pops each carried deal's
    histories from the three dicts."""
    instant, date, decimal = driver.instant, driver.date, driver.decimal
    source = page.source
    deal_rows: dict[str, tuple[Any, ...]] = {}
    for deal in page.deals:
        if deal.source != source:
            raise ValueError(f"deal {deal.id} is from source {deal.source!r}, page is {source!r}")
        deal_rows[deal.id] = (  # in the order of DEAL_ROW
            source,
            deal.id,
            deal.name,
            deal.owner_id,
            deal.account_id,
            instant(deal.created_at),
            date(deal.close_date),
            deal.stage,
            deal.is_won,
            deal.is_closed,
            decimal(deal.amount),
            deal.currency,
            decimal(deal.arr),
            _enum_value(deal.deal_type),
            _enum_value(deal.forecast_category),
            decimal(deal.probability),
            deal.term_months,
            instant(deal.last_modified),
            stage_texts.pop(deal.id, None),
            close_texts.pop(deal.id, None),
            field_texts.pop(deal.id, None),
            # A deal pulled as deleted stays deleted (pages mark the others live).
            deal.is_deleted,
        )
    return list(deal_rows.values())


def _activity_rows(page: StoredPage, driver: DriverValues) -> list[tuple[Any, ...]]:
    """Rows in ACTIVITY_ROW order, one per id (the last one winning)."""
    instant = driver.instant
    activity_rows: dict[str, tuple[Any, ...]] = {}
    for activity in page.activities:
        activity_rows[activity.id] = (  # in the order of ACTIVITY_ROW
            page.source,
            activity.id,
            activity.owner_id,
            activity.deal_id,
            activity.kind,
            instant(activity.start),
        )
    return list(activity_rows.values())


def _quota_rows(page: StoredPage) -> list[dict[str, Any]] | None:
    """The quotas replacing the source's, or None (the page gives none: keep them)."""
    if page.quotas is None:
        return None
    rows = []
    seen: set[tuple[str, dt.date, dt.date]] = set()
    for quota in page.quotas:
        key = (quota.rep_id, quota.period_start, quota.period_end)
        if key in seen:
            raise ValueError(
                f"two quotas for rep {quota.rep_id} over {quota.period_start}..{quota.period_end}"
            )
        seen.add(key)
        rows.append(
            {
                "source": page.source,
                "rep_id": quota.rep_id,
                "period_start": quota.period_start,
                "period_end": quota.period_end,
                "amount": quota.amount,
                "quota_source": quota.source.value,
            }
        )
    return rows


def _exclusion_rows(
    page: StoredPage,
) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Record kind -> ids whose exclusions the page replaces, and the new exclusion rows."""
    carried: dict[str, set[str]] = {kind: set() for kind in RECORD_TABLES}
    carried["rep"].update(rep.id for rep in page.reps)
    carried["account"].update(account.id for account in page.accounts)
    carried["deal"].update(deal.id for deal in page.deals)
    carried["deal"].update(page.stage_changes)
    carried["deal"].update(page.field_changes)
    carried["activity"].update(activity.id for activity in page.activities)
    for kind, ids in page.deleted.items():
        carried[kind].update(ids)
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for exclusion in page.exclusions:
        carried.setdefault(exclusion.record_type, set()).add(exclusion.record_id)
        rows[exclusion.record_type, exclusion.record_id, exclusion.reason] = {
            "record_type": exclusion.record_type,
            "record_id": exclusion.record_id,
            "reason": exclusion.reason,
            "detail": exclusion.detail,
        }
    return {kind: sorted(ids) for kind, ids in carried.items() if ids}, list(rows.values())


_ENUM_VALUES: dict[Any, str] = {}


def _enum_value(member: Any) -> str:
    """``member.value``, remembered (Enum's value property costs a Python call each time)."""
    try:
        return _ENUM_VALUES[member]
    except KeyError:
        value = _ENUM_VALUES[member] = member.value
        return value


def _by_id(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per id, the last one given winning (a page may repeat a record)."""
    return list({row["id"]: row for row in rows}.values())
