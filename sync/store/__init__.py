"""The state store: pulled records and cursors, KPI values, write-back memory, run records.

SQLite by default (one file, WAL), PostgreSQL for workers that share state; both through
SQLAlchemy 2 Core, with the schema kept by Alembic migrations (``sync/migrations``) that
:meth:`Store.open` applies itself, so an upgraded worker keeps its data.

Guarantees:

- :meth:`Store.save_page` writes everything of one page and the stream's new cursor in ONE
  transaction: a page that fails changes nothing, so a crash resumes from the last saved
  cursor without loss or double counting.
- The KPI frames read a million deals through :meth:`Store.iter_deal_arrays` /
  :meth:`Store.iter_activity_arrays`, from a compact copy of exactly what they need
  (``frame_*`` tables: fixed-width binary rows, texts as numbers), kept up by ``save_page``
  in the page's transaction (:mod:`.frame_copy`): numpy reads each chunk of rows in place
  (:mod:`.frame_codec`), without pydantic or SQLAlchemy row objects in between.
- The URL's password never reaches a log line, an error message or ``repr``.

Times come from an injectable clock (UTC); money and KPI values stay ``Decimal``.

The rooms: ``facade`` (:class:`Store`), ``engine`` (URLs, connection settings),
``migrations``, ``database`` (transactions and bulk statements the parts share), ``schema``
(tables and codecs), ``page`` and ``pulled`` (the pull's records), ``array_reads`` and
``arrays`` (the frames' bulk reads), ``kpi_values``, ``write_memory``, ``runs``,
``planned_writes`` (every record each run planned to write, and what became of it), ``locks``
(one run per source at a time), ``frame_copy`` and ``frame_codec`` (the frames' compact copy).
"""

from crm_kpi_worker.sync.store.engine import normalise_url
from crm_kpi_worker.sync.store.errors import (
    RunInProgress,
    StoreError,
    StoreMissing,
    StoreSchemaTooNewError,
)
from crm_kpi_worker.sync.store.facade import Store
from crm_kpi_worker.sync.store.kpi_values import KpiRow, Snapshot
from crm_kpi_worker.sync.store.locks import HeldLocks
from crm_kpi_worker.sync.store.migrations import MIGRATIONS_DIR, alembic_config, migrate
from crm_kpi_worker.sync.store.page import DEAL_COLUMNS, RECORD_KINDS, Exclusion, StoredPage
from crm_kpi_worker.sync.store.planned_writes import PlannedRecord

__all__ = [
    "DEAL_COLUMNS",
    "MIGRATIONS_DIR",
    "RECORD_KINDS",
    "Exclusion",
    "HeldLocks",
    "KpiRow",
    "PlannedRecord",
    "RunInProgress",
    "Snapshot",
    "Store",
    "StoreError",
    "StoreMissing",
    "StoreSchemaTooNewError",
    "StoredPage",
    "alembic_config",
    "migrate",
    "normalise_url",
]
