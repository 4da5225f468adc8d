"""What the store holds, for tests to look at.

The product reads deals and activities only through the KPI frames' bulk reads
(``Store.iter_deal_arrays`` / ``iter_activity_arrays``): ``live_deal_ids`` and
``live_activities`` gather those. Tests that must see whole stored rows (a deal's name,
amount, currency, its other field history; KPI history; run reports; source metadata) read
them here with plain SQL on the store's own engine, decoding the stored text formats
themselves (an independent check of the store's encoders).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from crm_kpi_worker.sync.model import CLOSE_DATE_FIELD, Deal, FieldChange, StageChange
from crm_kpi_worker.sync.store import KpiRow, Store
from crm_kpi_worker.sync.store.schema import (
    KPI_KEY,
    activities,
    deals,
    decode_json,
    kpi_history,
    runs,
    source_metadata,
)

SEP = "\t"  # between the fields of the stored history texts


def _rows(store: Store, statement: Any) -> list[sa.RowMapping]:
    with store._engine.connect() as connection:
        return list(connection.execute(statement).mappings())


# ---- through the product's bulk reads


def live_deal_ids(store: Store, source: str) -> list[str]:
    """The ids of the live deals of the source, sorted, as the KPI frames read them."""
    return sorted(deal_id for chunk in store.iter_deal_arrays(source) for deal_id in chunk.id)


def live_activities(
    store: Store, source: str, kind: str = "demo"
) -> list[tuple[str | None, dt.datetime]]:
    """(owner id, start as an aware UTC datetime) of the live activities, as the frames read
    them, sorted."""
    found: list[tuple[str | None, dt.datetime]] = []
    for owners, starts in store.iter_activity_arrays(source, kind):
        found += zip(owners.decode(), starts.tolist(), strict=True)
    return sorted(
        ((owner, start.replace(tzinfo=dt.UTC)) for owner, start in found), key=lambda r: str(r)
    )


# ---- plain SQL


def stored_deals(
    store: Store, source: str, ids: Collection[str] | None = None, *, include_deleted: bool = False
) -> list[Deal]:
    """Deals as canonical records, by id (whole rows: every column the store keeps)."""
    names = [name for name in Deal.model_fields if name in deals.c]
    statement = select_where_source(deals, names, source).order_by(deals.c.id)
    if not include_deleted:
        statement = statement.where(~deals.c.is_deleted)
    if ids is not None:
        statement = statement.where(deals.c.id.in_(sorted(ids)))
    return [Deal.model_validate(dict(row)) for row in _rows(store, statement)]


def select_where_source(table: sa.Table, names: list[str], source: str) -> sa.Select[Any]:
    return sa.select(*(table.c[name] for name in names)).where(table.c.source == source)


def stored_history(
    store: Store, source: str, deal_id: str
) -> tuple[list[StageChange], list[FieldChange]]:
    """One deal's stored stage history and field history (every field), oldest first."""
    statement = select_where_source(
        deals, ["stage_history", "close_date_history", "field_history"], source
    ).where(deals.c.id == deal_id)
    found = _rows(store, statement)
    if not found:
        return [], []
    (row,) = found
    stages = _fields(row["stage_history"], 2)
    changes = [
        StageChange(deal_id=deal_id, stage=stage, entered_at=dt.datetime.fromisoformat(at))
        for stage, at in stages
    ]
    fields = [
        FieldChange(
            deal_id=deal_id,
            field=CLOSE_DATE_FIELD,
            old_value=_date(old),
            new_value=_date(new),
            changed_at=dt.datetime.fromisoformat(at),
        )
        for old, new, at in _fields(row["close_date_history"], 3)
    ]
    for field, old, new, at in decode_json(row["field_history"]) if row["field_history"] else []:
        fields.append(
            FieldChange(deal_id=deal_id, field=field, old_value=old, new_value=new, changed_at=at)
        )
    fields.sort(key=lambda change: change.changed_at)
    return changes, fields


def _fields(text: str | None, width: int) -> list[tuple[str, ...]]:
    parts = text.split(SEP) if text else []
    assert len(parts) % width == 0, text
    return [tuple(parts[i : i + width]) for i in range(0, len(parts), width)]


def _date(text: str) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def stored_activities(
    store: Store, source: str, kind: str = "demo"
) -> list[tuple[str | None, dt.datetime]]:
    """(owner id, start) of the live activities of one kind, sorted."""
    statement = select_where_source(activities, ["owner_id", "start"], source).where(
        activities.c.kind == kind, ~activities.c.is_deleted
    )
    return sorted(((row["owner_id"], row["start"]) for row in _rows(store, statement)), key=str)


def stored_table(
    store: Store, table: sa.Table, source: str, *, leave_out: Collection[str] = ("seen_at",)
) -> list[dict[str, Any]]:
    """Every row ``table`` holds for ``source``, in key order, without the columns
    ``leave_out`` (by default the bookkeeping instant that differs between equal pulls)."""
    names = [column.name for column in table.c if column.name not in leave_out]
    statement = select_where_source(table, names, source).order_by(*table.primary_key.columns)
    return [dict(row) for row in _rows(store, statement)]


def stored_metadata(store: Store, source: str, key: str) -> Any | None:
    statement = select_where_source(source_metadata, ["value"], source).where(
        source_metadata.c.key == key
    )
    found = _rows(store, statement)
    return decode_json(found[0]["value"]) if found else None


def stored_kpi_history(
    store: Store, source: str, scope: str, subject: str, kpi: str | None = None
) -> list[tuple[KpiRow, dt.datetime]]:
    """Past values of a subject's KPIs by run (oldest first), then KPI name, with when each
    was recorded. ``run_id``/``changed_at`` of each row: the run and time of that value."""
    statement = (
        sa.select(kpi_history)
        .where(
            kpi_history.c.source == source,
            kpi_history.c.scope == scope,
            kpi_history.c.subject == subject,
        )
        .order_by(kpi_history.c.run_id, kpi_history.c.kpi, kpi_history.c.id)
    )
    if kpi is not None:
        statement = statement.where(kpi_history.c.kpi == kpi)
    return [
        (
            KpiRow(
                **{name: row[name] for name in KPI_KEY},
                value=row["value"],
                run_id=row["run_id"],
                changed_at=row["recorded_at"],
            ),
            row["recorded_at"],
        )
        for row in _rows(store, statement)
    ]


def stored_runs(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    """The newest runs first: id, as_of, started_at, finished_at, status, options, report."""
    statement = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
    return [
        {
            **row,
            "options": decode_json(row["options"]),
            "report": None if row["report"] is None else decode_json(row["report"]),
        }
        for row in _rows(store, statement)
    ]
