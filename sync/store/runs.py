"""The runs: when each started and finished, its options, status and report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from crm_kpi_worker.sync.store.database import Database
from crm_kpi_worker.sync.store.errors import StoreError
from crm_kpi_worker.sync.store.schema import encode_json, runs

__all__ = ["RunRecords"]


class RunRecords:
    """One row per run, started and finished by the pipeline."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def start_run(self, as_of: dt.datetime, options: Mapping[str, Any]) -> int:
        with self._db.write() as connection:
            result = connection.execute(
                insert(runs).values(
                    as_of=as_of,
                    started_at=self._db.clock(),
                    status="running",
                    options=encode_json(dict(options)),
                )
            )
            key = result.inserted_primary_key
            if key is None:
                raise StoreError("the database returned no id for the new run")
            return int(key[0])

    def finish_run(self, run_id: int, status: str, report: Mapping[str, Any]) -> None:
        with self._db.write() as connection:
            found = connection.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status=status, report=encode_json(dict(report)), finished_at=self._db.clock()
                )
            ).rowcount
            if not found:
                raise StoreError(f"no run {run_id} in the store")

    @staticmethod
    def require_run(connection: Connection, run_id: int) -> None:
        """Refuse values of a run the store does not have (in the caller's transaction)."""
        if connection.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise StoreError(f"no run {run_id} in the store: start_run() first")
