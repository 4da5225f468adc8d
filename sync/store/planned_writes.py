"""The records each run planned to write, with their values, and what became of each.

The writer diffs and writes a million records in chunks (``pipeline.WRITE_CHUNK``); each chunk
of one object is kept as one row of ``run_records``: zlib-compressed JSON holding the chunk's
field names once and, per record, its key, its outcome (written, failed with the CRM's code
and message, or planned only: a dry run, or a run stopped before the batch was sent) and its
changed fields' values. Reading a run back decompresses one chunk at a time, so memory does not
grow with the run.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select

from crm_kpi_worker.sync.store.database import Database
from crm_kpi_worker.sync.store.schema import run_records

__all__ = ["OUTCOMES", "PlannedRecord", "PlannedWrites"]

#: What became of a planned record.
OUTCOMES = ("written", "failed", "planned")
_CODES = {"written": "w", "failed": "f", "planned": "p"}
_NAMES = {code: name for name, code in _CODES.items()}


@dataclass(frozen=True)
class PlannedRecord:
    """One record a run planned to write: its changed fields' values and its outcome."""

    object: str
    key: str  # record id (update) or external id value (upsert)
    outcome: str  # one of OUTCOMES
    values: dict[str, Any] = field(default_factory=dict)
    code: str | None = None  # the CRM's error code, for a failed record
    message: str | None = None  # the CRM's reason, for a failed record
    source: str = ""


def encode_chunk(records: Sequence[PlannedRecord]) -> bytes:
    """One chunk as stored: field names once, then per record its key, outcome and values."""
    names: dict[str, int] = {}
    rows: list[list[Any]] = []
    for record in records:
        values: list[Any] = []
        for name, value in record.values.items():
            values += [names.setdefault(name, len(names)), value]
        row: list[Any] = [record.key, _CODES[record.outcome], values]
        if record.outcome == "failed":
            row += [record.code, record.message]
        rows.append(row)
    text = json.dumps({"fields": list(names), "records": rows}, separators=(",", ":"))
    return zlib.compress(text.encode("utf-8"), 6)


def decode_chunk(body: bytes, source: str, object: str) -> Iterator[PlannedRecord]:
    chunk = json.loads(zlib.decompress(body))
    names = chunk["fields"]
    for row in chunk["records"]:
        key, code, flat = row[0], row[1], row[2]
        values = {names[flat[i]]: flat[i + 1] for i in range(0, len(flat), 2)}
        code_text, message = (row[3], row[4]) if len(row) > 3 else (None, None)
        yield PlannedRecord(object, key, _NAMES[code], values, code_text, message, source)


class PlannedWrites:
    """``run_records``: per run, source, object and chunk, the planned records."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def save_planned(
        self, run_id: int, source: str, object: str, seq: int, records: Sequence[PlannedRecord]
    ) -> None:
        if not records:
            return
        with self._db.write() as connection:
            connection.execute(
                insert(run_records).values(
                    run_id=run_id,
                    source=source,
                    object=object,
                    seq=seq,
                    records=len(records),
                    body=encode_chunk(records),
                )
            )

    def planned(
        self, run_id: int, source: str | None = None, object: str | None = None
    ) -> Iterator[PlannedRecord]:
        """The run's planned records in the order they were planned (source, object, chunk)."""
        statement = select(run_records.c.seq, run_records.c.source, run_records.c.object).where(
            run_records.c.run_id == run_id
        )
        if source is not None:
            statement = statement.where(run_records.c.source == source)
        if object is not None:
            statement = statement.where(run_records.c.object == object)
        with self._db.read() as connection:
            chunks = connection.execute(
                statement.order_by(run_records.c.source, run_records.c.object, run_records.c.seq)
            ).all()
        for seq, chunk_source, chunk_object in chunks:  # one chunk in memory at a time
            chunk_source, chunk_object = str(chunk_source), str(chunk_object)
            with self._db.read() as connection:
                body: bytes = connection.execute(
                    select(run_records.c.body).where(
                        run_records.c.run_id == run_id,
                        run_records.c.source == chunk_source,
                        run_records.c.object == chunk_object,
                        run_records.c.seq == seq,
                    )
                ).scalar_one()
            yield from decode_chunk(bytes(body), chunk_source, chunk_object)

    def planned_size(self, run_id: int) -> tuple[int, int]:
        """(records, stored bytes) of a run's planned records."""
        from sqlalchemy import func

        with self._db.read() as connection:
            row = connection.execute(
                select(
                    func.coalesce(func.sum(run_records.c.records), 0),
                    func.coalesce(func.sum(func.length(run_records.c.body)), 0),
                ).where(run_records.c.run_id == run_id)
            ).one()
        return int(row[0]), int(row[1])

    def forget_planned(self, keep_runs: int) -> int:
        """Drop the planned records of all runs but the newest ``keep_runs`` that have some;
        the number of chunks dropped."""
        with self._db.write() as connection:
            kept: list[int] = list(
                connection.execute(
                    select(run_records.c.run_id)
                    .distinct()
                    .order_by(run_records.c.run_id.desc())
                    .limit(keep_runs)
                )
                .scalars()
                .all()
            )
            if len(kept) < keep_runs:
                return 0
            result = connection.execute(delete(run_records).where(run_records.c.run_id < min(kept)))
            return int(result.rowcount or 0)
