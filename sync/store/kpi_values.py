"""The KPI values: the latest value of every KPI key, a history row per change, and the
commit-forecast snapshots. Values stay exact ``Decimal``."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import (
    insert,
    or_,
    select,
)

from crm_kpi_worker.sync.store.database import Database
from crm_kpi_worker.sync.store.runs import RunRecords
from crm_kpi_worker.sync.store.schema import (
    KPI_KEY,
    forecast_snapshots,
    kpi_history,
    kpi_values,
    to_decimal,
)

__all__ = ["KpiRow", "KpiValues", "Snapshot"]


class KpiRow(NamedTuple):
    """One KPI value. ``period_kind``/``period_key`` are '' for KPIs without a period.

    ``value`` None is an empty KPI (nothing to divide by). ints and floats are accepted and
    stored as exact decimals; values read back are ``Decimal``. ``run_id``/``changed_at`` are
    filled on read: the run that set the current value, and when. (A named tuple: a run
    makes one per KPI value of every rep, team and period, ~100,000 at a million deals.)
    """

    source: str
    scope: str  # "rep", "team", "org" or "deal"
    subject: str  # rep id, team name, "org" or deal id
    period_kind: str  # "month", "quarter", "year", or ""
    period_key: str  # e.g. "2024-Q3", or ""
    kpi: str
    value: Decimal | float | None
    run_id: int | None = None
    changed_at: dt.datetime | None = None

    @property
    def key(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.source,
            self.scope,
            self.subject,
            self.period_kind,
            self.period_key,
            self.kpi,
        )


@dataclass(frozen=True)
class Snapshot:
    """The commit forecast of a subject for a period, taken on its snapshot day."""

    subject: str
    period_key: str
    commit: Decimal | float  # stored exactly (ExactDecimal); a Decimal when read back
    taken_on: dt.date


class KpiValues:
    """The KPI values of each run, and the forecast snapshots."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def save_kpis(self, run_id: int, rows: Iterable[KpiRow]) -> None:
        """Store the run's KPI values: the latest value per key, plus a history row for every
        key whose value changed (or appeared); a key given twice keeps its last value.

        One upsert of the run's values (a few per rep, team and period, not per deal) that
        changes only the values that differ, stamping them with the run and this instant;
        the history rows are then those stamps, copied in SQL."""
        now = self._db.clock()
        stamp = self._db.driver.instant(now)
        stored_form = kpi_text if self._db.backend == "sqlite" else _kpi_value
        values = {row.key: stored_form(row.value) for row in rows}
        with self._db.write() as connection:
            RunRecords.require_run(connection, run_id)
            if not values:
                return
            self._db.upsert_tuples(
                connection,
                kpi_values,
                (*KPI_KEY, "value", "run_id", "changed_at"),
                [(*key, value, run_id, stamp) for key, value in values.items()],
                changed="value",
            )
            sources = sorted({key[0] for key in values})
            columns = [*KPI_KEY, "value", "run_id"]
            stamped = select(
                *(kpi_values.c[name] for name in columns), kpi_values.c.changed_at
            ).where(
                kpi_values.c.source.in_(sources),
                kpi_values.c.run_id == run_id,
                kpi_values.c.changed_at == now,
            )
            connection.execute(insert(kpi_history).from_select([*columns, "recorded_at"], stamped))

    def kpis(
        self, source: str | None = None, *, rep: str | None = None, period: str | None = None
    ) -> list[KpiRow]:
        """Latest KPI values, sorted by key. ``rep``: that rep's rows (scope "rep", subject
        the rep id); ``period``: a period key ("2024-Q3") or kind ("quarter")."""
        statement = select(kpi_values).order_by(*(kpi_values.c[name] for name in KPI_KEY))
        if source is not None:
            statement = statement.where(kpi_values.c.source == source)
        if rep is not None:
            statement = statement.where(kpi_values.c.scope == "rep", kpi_values.c.subject == rep)
        if period is not None:
            statement = statement.where(
                or_(kpi_values.c.period_key == period, kpi_values.c.period_kind == period)
            )
        with self._db.read() as connection:
            return [KpiRow(**row) for row in connection.execute(statement).mappings()]

    def snapshots(self, source: str) -> list[Snapshot]:
        statement = (
            select(
                forecast_snapshots.c.subject,
                forecast_snapshots.c.period_key,
                forecast_snapshots.c.commit_value,
                forecast_snapshots.c.taken_on,
            )
            .where(forecast_snapshots.c.source == source)
            .order_by(forecast_snapshots.c.subject, forecast_snapshots.c.period_key)
        )
        with self._db.read() as connection:
            return [
                Snapshot(row.subject, row.period_key, row.commit_value, row.taken_on)
                for row in connection.execute(statement)
            ]

    def save_snapshots(self, source: str, snapshots: Iterable[Snapshot]) -> None:
        """Store snapshots; one per (subject, period key): saving it again replaces it."""
        rows = {
            (snapshot.subject, snapshot.period_key): {
                "source": source,
                "subject": snapshot.subject,
                "period_key": snapshot.period_key,
                "commit_value": snapshot.commit,
                "taken_on": snapshot.taken_on,
            }
            for snapshot in snapshots
        }
        if not rows:
            return
        statement = self._db.insert(forecast_snapshots)
        with self._db.write() as connection:
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["source", "subject", "period_key"],
                    set_={
                        "commit_value": statement.excluded.commit_value,
                        "taken_on": statement.excluded.taken_on,
                    },
                ),
                list(rows.values()),
            )


def _kpi_value(value: Any) -> Decimal | None:
    """One canonical Decimal per number (0.250 and 0.25 are the same value, stored once)."""
    if value is None:
        return None
    number = to_decimal(value).normalize()
    return Decimal(format(number, "f")) if number else Decimal(0)


def kpi_text(value: Any) -> str | None:
    """``str(_kpi_value(value))``, the form SQLite stores, made directly from the text of the
    floats and ints the engine gives (a float's shortest repr, without trailing zeros, is
    its canonical decimal); anything else through :func:`_kpi_value`."""
    kind = type(value)
    if kind is float and value and math.isfinite(value):
        text = repr(value)
        if "e" not in text:
            whole, _, fraction = text.partition(".")
            fraction = fraction.rstrip("0")
            return f"{whole}.{fraction}" if fraction else whole
    elif kind is int and -(2**53) < value < 2**53:  # larger ones go through a float there
        return str(value)
    elif value is None:
        return None
    canonical = _kpi_value(value)
    return None if canonical is None else str(canonical)
