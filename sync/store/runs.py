"""The runs: when each started and finished, its options, status and report, and the process
(pid, host) and sources of each, so a run left ``running`` by a dead process is recognised."""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from crm_kpi_worker.sync.store.database import Database
from crm_kpi_worker.sync.store.errors import StoreError
from crm_kpi_worker.sync.store.schema import decode_json, encode_json, runs

__all__ = ["RunRecords"]


class RunRecords:
    """One row per run, started and finished by the pipeline."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def start_run(
        self, as_of: dt.datetime, options: Mapping[str, Any], sources: Sequence[str] = ()
    ) -> int:
        with self._db.write() as connection:
            result = connection.execute(
                insert(runs).values(
                    as_of=as_of,
                    started_at=self._db.clock(),
                    status="running",
                    options=encode_json(dict(options)),
                    pid=os.getpid(),
                    host=socket.gethostname(),
                    sources=encode_json(sorted(sources)),
                )
            )
            key = result.inserted_primary_key
            if key is None:
                raise StoreError("the database returned no id for the new run")
            return int(key[0])

    def checkpoint_run(self, run_id: int, report: Mapping[str, Any]) -> None:
        """Keep what a running run has done so far (its report as it stands)."""
        with self._db.write() as connection:
            connection.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == "running")
                .values(report=encode_json(dict(report)))
            )

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

    def interrupt_stale_runs(self, sources: Sequence[str]) -> list[int]:
        """Mark ``interrupted`` every run still ``running`` on one of ``sources``: the caller
        holds their run locks, so no live process is running them. Their report keeps what
        they had done (their last checkpoint) and says who stopped without finishing."""
        mine = set(sources)
        marked = []
        with self._db.write() as connection:
            rows = connection.execute(
                select(runs.c.id, runs.c.pid, runs.c.host, runs.c.sources, runs.c.report).where(
                    runs.c.status == "running"
                )
            ).all()
            for row in rows:
                # Runs of older versions recorded no sources: none of them can be alive.
                theirs = set(decode_json(row.sources)) if row.sources else mine
                if not theirs & mine:
                    continue
                report = decode_json(row.report) if row.report else {"run_id": row.id}
                who = f"pid {row.pid} on host {row.host}" if row.pid else "an older version"
                report["status"] = "interrupted"
                report["interrupted"] = (
                    f"the process ({who}) ended without finishing the run;"
                    " the report holds what it had done"
                )
                connection.execute(
                    update(runs)
                    .where(runs.c.id == row.id, runs.c.status == "running")
                    .values(
                        status="interrupted",
                        report=encode_json(report),
                        finished_at=self._db.clock(),
                    )
                )
                marked.append(int(row.id))
        return marked

    def run(self, run_id: int) -> dict[str, Any] | None:
        """The stored row of a run (status, times, report decoded), or None."""
        with self._db.read() as connection:
            row = connection.execute(select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            return None
        values = dict(row._mapping)
        for name in ("options", "report", "sources"):
            if values[name] is not None:
                values[name] = decode_json(values[name])
        return values

    def runs(self, *, source: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs first (at most ``limit``; of ``source`` only when given), each as
        :meth:`run` returns it."""
        found: list[dict[str, Any]] = []
        last: int | None = None
        while len(found) < limit:
            statement = select(runs.c.id).order_by(runs.c.id.desc()).limit(max(limit, 50))
            if last is not None:
                statement = statement.where(runs.c.id < last)
            with self._db.read() as connection:
                ids: list[int] = list(connection.execute(statement).scalars().all())
            if not ids:
                break
            for run_id in ids:
                run = self.run(run_id)
                if run is not None and (source is None or source in _sources_of(run)):
                    found.append(run)
                    if len(found) == limit:
                        break
            last = ids[-1]
        return found

    @staticmethod
    def require_run(connection: Connection, run_id: int) -> None:
        """Refuse values of a run the store does not have (in the caller's transaction)."""
        if connection.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise StoreError(f"no run {run_id} in the store: start_run() first")


def _sources_of(run: Mapping[str, Any]) -> list[str]:
    """A run's sources (older runs recorded none: read them from the report)."""
    if run.get("sources"):
        return list(run["sources"])
    report = run.get("report") or {}
    return [str(s.get("source")) for s in report.get("sources") or () if isinstance(s, dict)]
