"""The :class:`Store` the rest of the worker uses: one object over the store's parts.

Each part keeps the tables of one job: :class:`~.pulled.PulledRecords` (cursors, full-pull
sweeps, the pulled records), :class:`~.array_reads.ArrayReads` (the KPI frames' bulk reads),
:class:`~.kpi_values.KpiValues` (KPI values and snapshots), :class:`~.write_memory.WriteMemory`
(what was written last) and :class:`~.runs.RunRecords`. They share one
:class:`~.database.Database` (engine, transactions, clock).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import SecretStr
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

from crm_kpi_worker.sync.model import Account, Quota, Rep
from crm_kpi_worker.sync.store.array_reads import ArrayReads
from crm_kpi_worker.sync.store.arrays import Coded, DealArrays
from crm_kpi_worker.sync.store.database import Database
from crm_kpi_worker.sync.store.engine import connect_engine, driver_reason, normalise_url, redact
from crm_kpi_worker.sync.store.errors import StoreError
from crm_kpi_worker.sync.store.frame_copy import FrameCopy
from crm_kpi_worker.sync.store.kpi_values import KpiRow, KpiValues, Snapshot
from crm_kpi_worker.sync.store.locks import HeldLocks, RunLocks
from crm_kpi_worker.sync.store.migrations import check_revision, migrate
from crm_kpi_worker.sync.store.page import Exclusion, StoredPage
from crm_kpi_worker.sync.store.planned_writes import PlannedRecord, PlannedWrites
from crm_kpi_worker.sync.store.pulled import PulledRecords
from crm_kpi_worker.sync.store.runs import RunRecords
from crm_kpi_worker.sync.store.write_memory import WriteMemory

__all__ = ["Store"]

log = logging.getLogger(__name__)


class Store:
    """The worker's state. Open with :meth:`open`; one instance per process is enough (it
    holds a connection pool and may be shared by threads).

    Each method hands over to the part that owns its tables (documented there)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._engine = engine
        db = Database(engine, clock)
        self.backend: str = db.backend
        self.revision: str | None = None
        self._db = db
        self._pulled = PulledRecords(db)
        self._arrays = ArrayReads(db)
        self._kpis = KpiValues(db)
        self._written = WriteMemory(db)
        self._runs = RunRecords(db)
        self._planned = PlannedWrites(db)
        self._locks = RunLocks(db)

    # ---- lifecycle

    @classmethod
    def open(
        cls,
        url: str | SecretStr | URL,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        read_only: bool = False,
    ) -> Store:
        """Connect and bring the schema to the newest revision (``alembic upgrade head``).

        ``read_only`` (``kpis show``): never write, not even to migrate; the store must
        exist and be at this version's revision (a SQLite file may lack write permission)."""
        sa_url = normalise_url(url)
        engine = connect_engine(sa_url, read_only=read_only)
        store = cls(engine, clock=clock)
        try:
            if read_only:
                with store._db.read() as connection:
                    store.revision = check_revision(connection)
                    FrameCopy.require_built(connection)
            else:
                with store._db.write() as connection:
                    store.revision = migrate(connection)
                    FrameCopy(store._db).rebuild_pending(connection)
        except StoreError:
            engine.dispose()
            raise
        except DBAPIError as exc:
            engine.dispose()
            raise StoreError(
                f"cannot open the state store {redact(sa_url)}: {driver_reason(exc)}"
            ) from exc
        log.info(
            "state store %s at schema revision %s",
            redact(sa_url),
            store.revision,
            extra={"event": "store_opened", "store": redact(sa_url), "revision": store.revision},
        )
        return store

    @property
    def url(self) -> str:
        """The URL with its password hidden."""
        return redact(self._engine.url)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ---- pulled records (PulledRecords)

    def cursor(self, source: str, stream: str) -> str | None:
        return self._pulled.cursor(source, stream)

    def full_pull_started(self, source: str, stream: str) -> dt.datetime | None:
        return self._pulled.full_pull_started(source, stream)

    def begin_full_pull(self, source: str, stream: str) -> dt.datetime:
        return self._pulled.begin_full_pull(source, stream)

    def finish_full_pull(self, source: str, stream: str, started: dt.datetime) -> int:
        return self._pulled.finish_full_pull(source, stream, started)

    def save_page(self, page: StoredPage) -> None:
        self._pulled.save_page(page)

    def metadata(self, source: str, key: str) -> Any:
        return self._pulled.metadata(source, key)

    def digests(self, source: str, stream: str, ids: Sequence[str]) -> dict[str, str]:
        return self._pulled.digests(source, stream, ids)

    def reps(self, source: str) -> list[Rep]:
        return self._pulled.reps(source)

    def accounts(self, source: str) -> list[Account]:
        return self._pulled.accounts(source)

    def quotas(self, source: str) -> list[Quota]:
        return self._pulled.quotas(source)

    def exclusions(self, source: str) -> list[Exclusion]:
        return self._pulled.exclusions(source)

    def deal_details(self, source: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._pulled.deal_details(source, ids)

    # ---- the KPI frames' bulk reads (ArrayReads)

    def iter_deal_arrays(self, source: str, rows: int = 20_000) -> Iterator[DealArrays]:
        return self._arrays.iter_deal_arrays(source, rows)

    def iter_activity_arrays(
        self, source: str, kind: str = "demo", rows: int = 50_000
    ) -> Iterator[tuple[Coded, np.ndarray]]:
        return self._arrays.iter_activity_arrays(source, kind, rows)

    # ---- KPI values and snapshots (KpiValues)

    def save_kpis(self, run_id: int, rows: Iterable[KpiRow]) -> None:
        self._kpis.save_kpis(run_id, rows)

    def kpis(
        self, source: str | None = None, *, rep: str | None = None, period: str | None = None
    ) -> list[KpiRow]:
        return self._kpis.kpis(source, rep=rep, period=period)

    def snapshots(self, source: str) -> list[Snapshot]:
        return self._kpis.snapshots(source)

    def save_snapshots(self, source: str, snapshots: Iterable[Snapshot]) -> None:
        self._kpis.save_snapshots(source, snapshots)

    # ---- write-back memory (WriteMemory)

    def written(
        self, source: str, object: str, keys: Sequence[str] | None = None
    ) -> dict[tuple[str, str], Any]:
        return self._written.written(source, object, keys)

    def record_written(
        self, source: str, object: str, values: Iterable[tuple[str, str, Any]]
    ) -> None:
        self._written.record_written(source, object, values)

    def has_written(self, source: str, object: str, field: str) -> bool:
        return self._written.has_written(source, object, field)

    def written_fields(self, source: str, object: str) -> list[str]:
        return self._written.written_fields(source, object)

    # ---- runs (RunRecords)

    def start_run(
        self, as_of: dt.datetime, options: Mapping[str, Any], sources: Sequence[str] = ()
    ) -> int:
        return self._runs.start_run(as_of, options, sources)

    def checkpoint_run(self, run_id: int, report: Mapping[str, Any]) -> None:
        self._runs.checkpoint_run(run_id, report)

    def finish_run(self, run_id: int, status: str, report: Mapping[str, Any]) -> None:
        self._runs.finish_run(run_id, status, report)

    def interrupt_stale_runs(self, sources: Sequence[str]) -> list[int]:
        return self._runs.interrupt_stale_runs(sources)

    def run(self, run_id: int) -> dict[str, Any] | None:
        return self._runs.run(run_id)

    def last_computed_run(self, source: str) -> dict[str, Any] | None:
        return self._runs.last_computed(source)

    def recent_runs(self, limit: int = 20, source: str | None = None) -> list[dict[str, Any]]:
        return self._runs.recent_runs(limit, source)

    def last_success(self, source: str) -> dt.datetime | None:
        return self._runs.last_success(source)

    def ping(self) -> None:
        """Raise unless the database answers (the status server's readiness check)."""
        try:
            self._runs.ping()
        except DBAPIError as exc:
            reason = driver_reason(exc)
            raise StoreError(f"the state store {self.url} does not answer: {reason}") from exc

    # ---- the records each run planned to write (PlannedWrites)

    def save_planned(
        self, run_id: int, source: str, object: str, seq: int, records: Sequence[PlannedRecord]
    ) -> None:
        self._planned.save_planned(run_id, source, object, seq, records)

    def planned(
        self, run_id: int, source: str | None = None, object: str | None = None
    ) -> Iterator[PlannedRecord]:
        return self._planned.planned(run_id, source, object)

    def planned_size(self, run_id: int) -> tuple[int, int]:
        return self._planned.planned_size(run_id)

    def forget_planned(self, keep_runs: int) -> int:
        return self._planned.forget_planned(keep_runs)

    # ---- one run per source at a time (RunLocks)

    def lock_sources(self, sources: Sequence[str]) -> HeldLocks:
        """The run locks of ``sources`` (release them, or use as a context manager); raises
        :class:`~.errors.RunInProgress` when another run holds one."""
        return self._locks.acquire(sources)
