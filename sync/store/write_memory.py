"""The write-back memory: the value last written to each CRM record's field and confirmed,
so the next run writes only what changed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select

from crm_kpi_worker.sync.bulk import gc_paused
from crm_kpi_worker.sync.store.database import Database, chunks
from crm_kpi_worker.sync.store.schema import decode_scalar, encode_scalar, written_values

__all__ = ["WriteMemory"]

_WRITTEN_COLUMNS = (
    "source",
    "object",
    "record_key",
    "field",
    "value_kind",
    "value_text",
    "written_at",
)


class WriteMemory:
    """What was written last, per source, CRM object, record key and field."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def written(
        self, source: str, object: str, keys: Sequence[str] | None = None
    ) -> dict[tuple[str, str], Any]:
        """(record key, field) -> the value last written to ``object`` and confirmed by the
        CRM (same type as written: Decimal, int, float, str, date, datetime, bool, None).

        ``keys``: only these records (the writer diffs a million records chunk by chunk)."""
        statement = select(
            written_values.c.record_key,
            written_values.c.field,
            written_values.c.value_kind,
            written_values.c.value_text,
        ).where(written_values.c.source == source, written_values.c.object == object)
        if keys is not None:
            statement = statement.where(self._db.ids_match(written_values.c.record_key, keys))
        found: dict[tuple[str, str], Any] = {}
        with self._db.read() as connection, gc_paused():
            for rows in self._db.fetch_rows(connection, statement):
                for key, name, kind, text in rows:
                    found[key, name] = decode_scalar(kind, text)
        return found

    def written_fields(self, source: str, object: str) -> list[str]:
        """The fields the worker has written on ``object`` (what a verify pass reads back)."""
        statement = (
            select(written_values.c.field)
            .where(written_values.c.source == source, written_values.c.object == object)
            .distinct()
            .order_by(written_values.c.field)
        )
        with self._db.read() as connection:
            return [str(name) for (name,) in connection.execute(statement)]

    def has_written(self, source: str, object: str, field: str) -> bool:
        """Whether the worker has written ``field`` on some record of ``object``."""
        statement = (
            select(written_values.c.record_key)
            .where(
                written_values.c.source == source,
                written_values.c.object == object,
                written_values.c.field == field,
            )
            .limit(1)
        )
        with self._db.read() as connection:
            return connection.execute(statement).first() is not None

    def record_written(
        self, source: str, object: str, values: Iterable[tuple[str, str, Any]]
    ) -> None:
        """Remember values the CRM confirmed: (record key, field, value)."""
        now = self._db.driver.instant(self._db.clock())
        with self._db.write() as connection, gc_paused():
            for chunk in chunks(values, 5_000):
                rows: dict[tuple[str, str], tuple[Any, ...]] = {}  # the last value of a field wins
                for key, name, value in chunk:
                    kind, text = encode_scalar(value)
                    rows[key, name] = (source, object, key, name, kind, text, now)
                self._db.upsert_tuples(
                    connection, written_values, _WRITTEN_COLUMNS, list(rows.values())
                )
