"""The state store: pulled records and cursors, KPI values, write-back memory, run records.

SQLite by default (one file, WAL), PostgreSQL for workers that share state; both through
SQLAlchemy 2 Core, with the schema kept by Alembic migrations (``sync/migrations``) that
:meth:`Store.open` applies itself, so an upgraded worker keeps its data.

Guarantees:

- :meth:`Store.save_page` writes everything of one page and the stream's new cursor in ONE
  transaction: a page that fails changes nothing, so a crash resumes from the last saved
  cursor without loss or double counting.
- Reads used on a million deals (:meth:`Store.deal_columns`, :meth:`Store.activities`) are one
  ``SELECT`` each, read through the driver's cursor in chunks and returned as columns (lists),
  without pydantic or SQLAlchemy row objects in between. The KPI frames use
  :meth:`Store.iter_deal_arrays` / :meth:`Store.iter_activity_arrays` instead: numpy arrays
  parsed in bulk from one text per column and chunk (:mod:`.store_arrays`).
- The URL's password never reaches a log line, an error message or ``repr``.

Times come from an injectable clock (UTC); money and KPI values stay ``Decimal``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate, islice
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic import SecretStr
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql import Select

from crm_kpi_worker.sync.bulk import gc_paused
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
from crm_kpi_worker.sync.store_arrays import (
    NULL as NULL_TEXT,
)
from crm_kpi_worker.sync.store_arrays import (
    RS,
    Coded,
    DealArrays,
    IrregularChunkError,
    activity_arrays,
    activity_arrays_from_rows,
    deal_arrays,
    deal_arrays_from_rows,
)
from crm_kpi_worker.sync.store_schema import (
    KPI_KEY,
    RECORD_TABLES,
    ExactDecimal,
    UtcDateTime,
    accounts,
    activities,
    deals,
    decode_field_history,
    decode_json,
    decode_scalar,
    decode_stage_history,
    encode_close_date_history,
    encode_field_history,
    encode_json,
    encode_scalar,
    encode_stage_history,
    exclusions,
    forecast_snapshots,
    iso_instant,
    kpi_history,
    kpi_values,
    quotas,
    reps,
    runs,
    source_metadata,
    split_history,
    sync_cursors,
    to_decimal,
    written_values,
)

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "DEAL_COLUMNS",
    "MIGRATIONS_DIR",
    "RECORD_KINDS",
    "Exclusion",
    "KpiRow",
    "Snapshot",
    "Store",
    "StoreError",
    "StoreSchemaTooNewError",
    "StoredPage",
    "alembic_config",
    "migrate",
    "normalise_url",
]

log = logging.getLogger(__name__)

#: Alembic's script folder (env.py, script.py.mako, versions/), shipped as package data.
MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

#: Record kinds of StoredPage.deleted / seen_ids and of Exclusion.record_type.
RECORD_KINDS: tuple[str, ...] = tuple(RECORD_TABLES)

#: Columns of Store.deal_columns, one value per live deal (histories come as extra keys).
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

_WRITE = "crm_kpi_write"  # execution option: SQLite takes the write lock at BEGIN
_FETCH = 50_000  # rows per fetch on bulk reads
_PG_MIGRATION_LOCK = 0x63726D5F6B7069  # pg_advisory_xact_lock key ("crm_kpi")


_HISTORY_COLUMNS = (
    "stage_history_offsets",
    "stage_history_stage",
    "stage_history_entered_at",
    "close_date_history_offsets",
    "close_date_history_old",
    "close_date_history_new",
    "close_date_history_changed_at",
)


class StoreError(Exception):
    """The store cannot be opened or used. Messages never contain the URL's password."""


class StoreSchemaTooNewError(StoreError):
    """The database was migrated by a newer crm-kpi-worker than this one."""


# ---------------------------------------------------------------------------------------------
# Records the store takes and gives beyond the canonical model


@dataclass(frozen=True)
class Exclusion:
    """A record left out at pull time (bad data), with the reason reported in the run."""

    record_type: str  # one of RECORD_KINDS, or "quota"
    record_id: str
    reason: str  # short machine key, e.g. "unknown_stage"
    detail: str = ""


@dataclass(frozen=True)
class KpiRow:
    """One KPI value. ``period_kind``/``period_key`` are '' for KPIs without a period.

    ``value`` None is an empty KPI (nothing to divide by). ints and floats are accepted and
    stored as exact decimals; values read back are ``Decimal``. ``run_id``/``changed_at`` are
    filled on read: the run that set the current value, and when.
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


# ---------------------------------------------------------------------------------------------
# URLs, engines, migrations


def normalise_url(url: str | SecretStr | URL) -> URL:
    """An SQLAlchemy URL for the store: ``postgresql://`` gets the psycopg (v3) driver."""
    if isinstance(url, SecretStr):
        url = url.get_secret_value()
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message repeats the whole string, password included.
        raise StoreError(
            "the store URL is not an SQLAlchemy URL (sqlite:///path/to/file.sqlite or"
            " postgresql://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported store backend {backend!r} in {redact(parsed)}: use sqlite or postgresql"
        )
    return parsed


def redact(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling skips DDL and cannot take the write lock early;
    # the "begin" hook below issues BEGIN itself (SQLAlchemy's documented pysqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",  # readers never block the writer
        "PRAGMA synchronous=NORMAL",  # WAL + NORMAL: consistent after a crash, fsync per checkpoint
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=30000",
    ):
        cursor.execute(pragma).fetchall()
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # Writers take the lock at BEGIN: a deferred transaction upgraded later can fail with
    # SQLITE_BUSY without waiting for busy_timeout.
    immediate = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _postgresql_on_connect(dbapi_connection: Any, _record: Any) -> None:
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.autocommit = autocommit


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    connect_args: dict[str, Any] = {"application_name": "crm-kpi-worker"}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    event.listen(engine, "connect", _postgresql_on_connect)
    return engine


def alembic_config(url: str | URL | None = None, connection: Connection | None = None) -> Config:
    """An Alembic config for the store's migrations (no alembic.ini needed).

    Give ``connection`` to run inside that connection's transaction, or ``url`` to let
    Alembic connect (e.g. ``alembic.command.history(alembic_config(url))``).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(connection: Connection, revision: str = "head") -> str | None:
    """Upgrade the database of ``connection`` to ``revision``, in its current transaction.

    Refuses a database at a revision this code does not know (written by a newer version).
    Returns the revision reached.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    if connection.dialect.name == "postgresql":
        # Two workers opening a fresh database at once: one migrates, the other waits.
        connection.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
    config = alembic_config(connection=connection)
    script = ScriptDirectory.from_config(config)
    known = {rev.revision for rev in script.walk_revisions()}
    current = MigrationContext.configure(connection).get_current_heads()
    unknown = [rev for rev in current if rev not in known]
    if unknown:
        raise StoreSchemaTooNewError(
            f"the state store is at schema revision {', '.join(unknown)}, which this version of"
            f" crm-kpi-worker does not know (newest known: {script.get_current_head()}); it was"
            " migrated by a newer version: upgrade crm-kpi-worker, or point store.url at"
            " another database"
        )
    if revision == "head" and tuple(current) == tuple(script.get_heads()):
        return current[0]  # up to date: nothing to run (and no Alembic log lines on each open)
    command.upgrade(config, revision)
    reached = MigrationContext.configure(connection).get_current_heads()
    return reached[0] if reached else None


# ---------------------------------------------------------------------------------------------
# Helpers


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _kpi_value(value: Any) -> Decimal | None:
    """One canonical Decimal per number (0.250 and 0.25 are the same value, stored once)."""
    if value is None:
        return None
    number = to_decimal(value).normalize()
    return Decimal(format(number, "f")) if number else Decimal(0)


class _Memo:
    """Converts values with one call per distinct value (amounts and dates repeat a lot in
    a million deals), sharing the results."""

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        self._cache: dict[Any, Any] = {None: None}
        self._convert = convert

    def __call__(self, values: Sequence[Any]) -> Iterable[Any]:
        cache = self._cache
        convert = self._convert
        for value in set(values).difference(cache):
            cache[value] = convert(value)
        return map(cache.__getitem__, values)


def _each(convert: Callable[[Any], Any]) -> Callable[[Sequence[Any]], Iterable[Any]]:
    """``convert`` on every value but None (``map`` in C when the chunk has no None)."""

    def apply(values: Sequence[Any]) -> Iterable[Any]:
        if None in values:
            return [None if value is None else convert(value) for value in values]
        return map(convert, values)

    return apply


def _identity(values: Sequence[Any]) -> Iterable[Any]:
    return values


#: Text columns: one string object per distinct value (owner ids, stages, currencies repeat
#: across a million deals; sys.intern is a C-level lookup, twice as fast as a dict memo).
_shared = _each(sys.intern)


def _date_or_none(text: str) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def _same(value: Any) -> Any:
    return value


class _DriverValues:
    """Python values to what the driver receives, exactly as the column types convert them.

    Bulk writes encode rows once with these and hand them to the driver's ``executemany``:
    SQLAlchemy's per-value bind processing cost more than the database work itself.
    """

    def __init__(self, backend: str) -> None:
        sqlite = backend == "sqlite"
        self.instant: Callable[[dt.datetime], Any] = iso_instant if sqlite else _same
        self.date: Callable[[dt.date | None], Any] = _iso_date if sqlite else _same
        self.decimal: Callable[[Any], Any] = _decimal_text if sqlite else _same


def _iso_date(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def _decimal_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _ids_match(backend: str, column: Any, ids: Sequence[str]) -> Any:
    """``column IN ids`` with one bound parameter whatever the number of ids."""
    if backend == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(String())))
    values = func.json_each(bindparam(None, json.dumps(list(ids)), type_=String())).table_valued(
        "value"
    )
    return column.in_(select(values.c.value))


T = TypeVar("T")
_END = object()


class _ReadAhead:
    """The items of an iterator, each next one computed by a worker thread while the caller
    works on the current one (one item ahead; never two calls at once)."""

    def __init__(self, items: Iterator[Any]) -> None:
        self._items = items
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="store-read-ahead")
        self._next: Future[Any] = self._worker.submit(next, items, _END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._next.result()
            if item is _END:
                return
            self._next = self._worker.submit(next, self._items, _END)
            yield item

    def settle(self) -> None:
        """Wait until the worker is idle (its item stays for the next step)."""
        wait([self._next])

    def close(self) -> None:
        self._next.cancel()
        self._worker.shutdown(wait=True)  # the connection outlives any query in flight
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


class _DriverStatement:
    """A statement compiled once for the driver's own cursor: SQL text and its parameters
    (bound values, with some replaced per execution)."""

    def __init__(self, connection: Connection, statement: Select[Any]) -> None:
        compiled = statement.compile(
            dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
        )
        self.sql = str(compiled)
        self._values = dict(compiled.params)
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def params(self, values: Mapping[str, Any] | None = None) -> Any:
        merged = {**self._values, **values} if values else self._values
        if self._order is None:
            return merged
        return tuple(merged[name] for name in self._order)


# ---------------------------------------------------------------------------------------------
# The store


class Store:
    """The worker's state. Open with :meth:`open`; one instance per process is enough (it
    holds a connection pool and may be shared by threads)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{_WRITE: True})
        self._clock = clock or _utcnow
        self.backend: str = engine.dialect.name
        self._insert = sqlite_dialect.insert if self.backend == "sqlite" else pg_dialect.insert
        self._driver = _DriverValues(self.backend)
        self._compiled: dict[Any, tuple[str, tuple[str, ...] | None]] = {}
        self.revision: str | None = None

    # ---- lifecycle

    @classmethod
    def open(
        cls, url: str | SecretStr | URL, *, clock: Callable[[], dt.datetime] | None = None
    ) -> Store:
        """Connect and bring the schema to the newest revision (``alembic upgrade head``)."""
        sa_url = normalise_url(url)
        engine = _create_engine(sa_url)
        store = cls(engine, clock=clock)
        try:
            with store._write() as connection:
                store.revision = migrate(connection)
        except StoreError:
            engine.dispose()
            raise
        except DBAPIError as exc:
            engine.dispose()
            raise StoreError(
                f"cannot open the state store {redact(sa_url)}: {_reason(exc)}"
            ) from exc
        log.info("state store %s at schema revision %s", redact(sa_url), store.revision)
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

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer.begin() as connection:
            yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as connection, connection.begin():
            yield connection

    # ---- pull state

    def cursor(self, source: str, stream: str) -> str | None:
        with self._read() as connection:
            return connection.execute(
                select(sync_cursors.c.cursor).where(
                    sync_cursors.c.source == source, sync_cursors.c.stream == stream
                )
            ).scalar_one_or_none()

    def full_pull_started(self, source: str, stream: str) -> dt.datetime | None:
        """When the unfinished full pull of the stream began (None: none running), so a
        crashed full pull can resume and still sweep at the end."""
        with self._read() as connection:
            return connection.execute(
                select(sync_cursors.c.full_pull_started).where(
                    sync_cursors.c.source == source, sync_cursors.c.stream == stream
                )
            ).scalar_one_or_none()

    def begin_full_pull(self, source: str, stream: str) -> dt.datetime:
        """Mark the start of a full pull: the stream's cursor is cleared (a crash before the
        end resumes the full pull) and the returned instant goes to finish_full_pull."""
        started = self._clock()
        with self._write() as connection:
            statement = self._insert(sync_cursors).values(
                source=source,
                stream=stream,
                cursor=None,
                full_pull_started=started,
                updated_at=started,
            )
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["source", "stream"],
                    set_={
                        "cursor": None,
                        "full_pull_started": started,
                        "updated_at": started,
                    },
                )
            )
        return started

    def finish_full_pull(self, source: str, stream: str, started: dt.datetime) -> int:
        """Remove the source's records written by ``stream`` that no page carried since
        ``started`` (purged in the CRM), with their exclusions; returns how many."""
        removed = 0
        with self._write() as connection:
            for kind, table in RECORD_TABLES.items():
                unseen = and_(
                    table.c.source == source,
                    table.c.stream == stream,
                    table.c.seen_at < started,
                )
                connection.execute(
                    delete(exclusions).where(
                        exclusions.c.source == source,
                        exclusions.c.record_type == kind,
                        exclusions.c.record_id.in_(select(table.c.id).where(unseen)),
                    )
                )
                removed += connection.execute(delete(table).where(unseen)).rowcount
            connection.execute(
                update(sync_cursors)
                .where(
                    sync_cursors.c.source == source,
                    sync_cursors.c.stream == stream,
                    sync_cursors.c.full_pull_started == started,
                )
                .values(full_pull_started=None, updated_at=self._clock())
            )
        log.info("full pull of %s/%s: %d records no longer in the CRM", source, stream, removed)
        return removed

    def save_page(self, page: StoredPage) -> None:
        """Write all of a page and its cursor in one transaction (see :class:`StoredPage`)."""
        # Validate and encode everything before touching the database (no cyclic garbage
        # collection meanwhile: thousands of acyclic rows, freed by reference counting).
        with gc_paused():
            prepared = _PreparedPage(page, self._driver)
            with self._write() as connection:
                self._save_prepared(connection, prepared)

    def _save_prepared(self, connection: Connection, prepared: _PreparedPage) -> None:
        page = prepared.page
        source = page.source
        started = connection.execute(
            select(sync_cursors.c.full_pull_started).where(
                sync_cursors.c.source == source, sync_cursors.c.stream == page.stream
            )
        ).scalar_one_or_none()
        now = self._clock()
        # Rows saved during a full pull are never stamped before its start, even if the
        # clock stepped back.
        seen = max(now, started) if started is not None else now
        bookkeeping = {
            "stream": page.stream,
            "is_deleted": False,
            "seen_at": self._driver.instant(seen),
        }

        self._upsert_records(connection, reps, prepared.reps, bookkeeping)
        self._upsert_records(connection, accounts, prepared.accounts, bookkeeping)
        stamp = (page.stream, self._driver.instant(seen))
        self._upsert_tuples(
            connection,
            deals,
            (*DEAL_ROW, "stream", "seen_at"),
            [(*row, *stamp) for row in prepared.deals],
            updates=_keep_stored_history,
        )
        self._upsert_tuples(
            connection,
            activities,
            (*ACTIVITY_ROW, "stream", "is_deleted", "seen_at"),
            [(*row, page.stream, False, stamp[1]) for row in prepared.activities],
        )
        self._replace_detached_histories(connection, prepared)
        for kind, ids in prepared.deleted.items():
            self._update_ids(connection, kind, source, ids, is_deleted=True, seen_at=seen)
        for kind, ids in prepared.seen_ids.items():
            self._update_ids(connection, kind, source, ids, seen_at=seen)
        if prepared.quotas is not None:
            connection.execute(delete(quotas).where(quotas.c.source == source))
            if prepared.quotas:
                connection.execute(insert(quotas), prepared.quotas)
        if prepared.metadata:
            statement = self._insert(source_metadata)
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["source", "key"],
                    set_={"value": statement.excluded.value, "updated_at": now},
                ),
                [
                    {"source": source, "key": key, "value": value, "updated_at": now}
                    for key, value in prepared.metadata.items()
                ],
            )
        self._replace_exclusions(connection, prepared, now)
        if page.cursor is not None:
            statement = self._insert(sync_cursors).values(
                source=source, stream=page.stream, cursor=page.cursor, updated_at=now
            )
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["source", "stream"],
                    set_={"cursor": page.cursor, "updated_at": now},
                )
            )

    def _upsert_records(
        self,
        connection: Connection,
        table: Table,
        rows: Sequence[dict[str, Any]],
        bookkeeping: Mapping[str, Any],
    ) -> None:
        self._upsert_many(connection, table, [{**bookkeeping, **row} for row in rows])

    def _upsert_many(
        self,
        connection: Connection,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        *,
        updates: Callable[[Any], dict[str, Any]] | None = None,
    ) -> None:
        """Upsert rows of driver values (see _DriverValues), keyed by column name, on the
        table's primary key: every other given column is overwritten (``updates`` may
        override the SET clause). A key given twice keeps its last row.

        The driver's own executemany (psycopg pipelines it) of a statement compiled once:
        SQLAlchemy's per-row parameter processing cost more than the database work. (One
        ``INSERT ... SELECT FROM unnest(arrays)`` per page was measured too: psycopg's array
        dumping made it slower.)
        """
        if not rows:
            return
        columns = tuple(rows[0])
        sql, order = self._upsert_sql(table, columns, updates)
        if order is None:
            connection.exec_driver_sql(sql, list(rows))
        else:
            connection.exec_driver_sql(sql, [tuple(row[name] for name in order) for row in rows])

    def _upsert_tuples(
        self,
        connection: Connection,
        table: Table,
        columns: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
        *,
        updates: Callable[[Table, Any], dict[str, Any]] | None = None,
    ) -> None:
        """:meth:`_upsert_many` of rows given as tuples of driver values in ``columns`` order
        (no dict per row; the hot path of save_page)."""
        if not rows:
            return
        sql, order = self._upsert_sql(
            table, columns, (lambda statement: updates(table, statement)) if updates else None
        )
        if order is None:
            connection.exec_driver_sql(sql, [dict(zip(columns, row, strict=True)) for row in rows])
        elif order == columns:
            connection.exec_driver_sql(sql, rows)
        else:
            pick = itemgetter(*(columns.index(name) for name in order))
            connection.exec_driver_sql(sql, [pick(row) for row in rows])

    def _upsert_sql(
        self,
        table: Table,
        columns: tuple[str, ...],
        updates: Callable[[Any], dict[str, Any]] | None,
    ) -> tuple[str, tuple[str, ...] | None]:
        """The upsert of ``columns`` on the table's primary key, compiled once: SQL text and
        its positional parameter order (None: named parameters)."""
        cache_key = (table.name, columns)
        compiled = self._compiled.get(cache_key)
        if compiled is None:
            keys = [column.name for column in table.primary_key]
            statement = self._insert(table)
            set_ = {name: statement.excluded[name] for name in columns if name not in keys}
            if updates is not None:
                set_.update(updates(statement))
            upsert = statement.on_conflict_do_update(index_elements=keys, set_=set_).compile(
                dialect=self._engine.dialect, column_keys=list(columns)
            )
            order = tuple(upsert.positiontup or ()) if upsert.positional else None
            if set(order or upsert.params) != set(columns):
                raise AssertionError(f"{table.name}: parameters {list(upsert.params)} != {columns}")
            compiled = self._compiled[cache_key] = (str(upsert), order)
        return compiled

    def _replace_detached_histories(self, connection: Connection, prepared: _PreparedPage) -> None:
        """Histories of deals this page does not carry: set on the stored deal rows."""
        for name, values in prepared.detached_histories.items():
            if values:
                connection.execute(
                    update(deals)
                    .where(deals.c.source == bindparam("b_source"), deals.c.id == bindparam("b_id"))
                    .values({name: bindparam("b_value")}),
                    [
                        {"b_source": prepared.page.source, "b_id": deal_id, "b_value": text}
                        for deal_id, text in values.items()
                    ],
                )

    def _update_ids(
        self, connection: Connection, kind: str, source: str, ids: Sequence[str], **values: Any
    ) -> None:
        table = RECORD_TABLES[kind]
        connection.execute(
            update(table)
            .where(table.c.source == source, _ids_match(self.backend, table.c.id, ids))
            .values(**values)
        )

    def _replace_exclusions(
        self, connection: Connection, prepared: _PreparedPage, now: dt.datetime
    ) -> None:
        source = prepared.page.source
        for kind, ids in prepared.carried.items():
            connection.execute(
                delete(exclusions).where(
                    exclusions.c.source == source,
                    exclusions.c.record_type == kind,
                    _ids_match(self.backend, exclusions.c.record_id, ids),
                )
            )
        if prepared.quotas is not None:
            connection.execute(
                delete(exclusions).where(
                    exclusions.c.source == source, exclusions.c.record_type == "quota"
                )
            )
        if prepared.exclusions:
            connection.execute(
                insert(exclusions),
                [{**row, "source": source, "recorded_at": now} for row in prepared.exclusions],
            )

    # ---- reads

    def reps(self, source: str) -> list[Rep]:
        """Live (not deleted) reps of the source, by id."""
        names = [name for name in Rep.model_fields if name in reps.c]
        return self._models(Rep, reps, names, source)

    def accounts(self, source: str) -> list[Account]:
        names = [name for name in Account.model_fields if name in accounts.c]
        return self._models(Account, accounts, names, source)

    def _models(self, model: Any, table: Table, names: list[str], source: str) -> list[Any]:
        statement = (
            select(*(table.c[name] for name in names))
            .where(table.c.source == source, ~table.c.is_deleted)
            .order_by(table.c.id)
        )
        with self._read() as connection:
            rows = connection.execute(statement).all()
        return [model.model_validate(dict(zip(names, row, strict=True))) for row in rows]

    def quotas(self, source: str) -> list[Quota]:
        statement = (
            select(quotas)
            .where(quotas.c.source == source)
            .order_by(quotas.c.rep_id, quotas.c.period_start, quotas.c.period_end)
        )
        with self._read() as connection:
            rows = connection.execute(statement).mappings().all()
        return [
            Quota(
                rep_id=row["rep_id"],
                period_start=row["period_start"],
                period_end=row["period_end"],
                amount=row["amount"],
                source=row["quota_source"],
            )
            for row in rows
        ]

    def deals(
        self, source: str, ids: Collection[str] | None = None, *, include_deleted: bool = False
    ) -> list[Deal]:
        """Deals as canonical records, by id (for look-ups and checks; bulk reads use
        :meth:`deal_columns`)."""
        names = [name for name in Deal.model_fields if name in deals.c]
        statement = select(*(deals.c[name] for name in names)).where(deals.c.source == source)
        if not include_deleted:
            statement = statement.where(~deals.c.is_deleted)
        if ids is not None:
            statement = statement.where(_ids_match(self.backend, deals.c.id, sorted(ids)))
        with self._read() as connection:
            rows = connection.execute(statement.order_by(deals.c.id)).all()
        return [Deal.model_validate(dict(zip(names, row, strict=True))) for row in rows]

    def deal_history(
        self, source: str, deal_id: str
    ) -> tuple[list[StageChange], list[FieldChange]]:
        """One deal's stored stage history and field history (every field), oldest first."""
        statement = select(
            deals.c.stage_history, deals.c.close_date_history, deals.c.field_history
        ).where(deals.c.source == source, deals.c.id == deal_id)
        with self._read() as connection:
            row = connection.execute(statement).one_or_none()
        if row is None:
            return [], []
        return (
            decode_stage_history(deal_id, row.stage_history),
            decode_field_history(deal_id, row.close_date_history, row.field_history),
        )

    def deal_columns(self, source: str) -> dict[str, list[Any]]:
        """Every live (not deleted) deal of the source as columns, in one ``SELECT``.

        Keys of :data:`DEAL_COLUMNS`, each a list with one value per deal (same order in every
        list; no particular deal order): ``created_at``/``last_modified`` aware UTC
        datetimes, ``close_date`` date or None, ``is_won``/``is_closed`` bool,
        ``amount``/``arr``/``probability`` Decimal or None, ``term_months`` int or None,
        ``deal_type``/``forecast_category`` their enum values as str. Repeated text values
        (owner and account ids, stages, currencies...) share one string object.

        Histories, flattened (compressed sparse rows): deal ``i``'s entries are positions
        ``offsets[i]`` to ``offsets[i + 1] - 1``, oldest first.

        - ``stage_history_offsets`` (len deals + 1), ``stage_history_stage`` (stage key),
          ``stage_history_entered_at`` (datetime).
        - ``close_date_history_offsets``, ``close_date_history_old``,
          ``close_date_history_new`` (date or None), ``close_date_history_changed_at``.
        """
        merged: dict[str, list[Any]] = {}
        for chunk in self.iter_deal_columns(source):
            if not merged:
                merged = chunk
                continue
            for key in ("stage_history_offsets", "close_date_history_offsets"):
                base = merged[key][-1]
                merged[key].extend(base + offset for offset in chunk[key][1:])
            for key, values in chunk.items():
                if not key.endswith("_offsets"):
                    merged[key].extend(values)
        if not merged:
            merged = {name: [] for name in (*DEAL_COLUMNS, *_HISTORY_COLUMNS)}
            merged["stage_history_offsets"] = [0]
            merged["close_date_history_offsets"] = [0]
        return merged

    def iter_deal_columns(self, source: str, rows: int = 50_000) -> Iterator[dict[str, list[Any]]]:
        """:meth:`deal_columns` in chunks of about ``rows`` deals, each with the same keys
        (offsets relative to the chunk): a million deals never sit in memory as Python
        objects at once."""
        names = (*DEAL_COLUMNS, "stage_history", "close_date_history")
        statement = select(*(deals.c[name] for name in names)).where(
            deals.c.source == source, ~deals.c.is_deleted
        )
        converters = self._converters(
            {
                "id": "unique",
                "owner_id": "text",
                "account_id": "text",
                "created_at": "instant",
                "close_date": "date",
                "stage": "text",
                "is_won": "bool",
                "is_closed": "bool",
                "amount": "decimal",
                "currency": "text",
                "arr": "decimal",
                "deal_type": "text",
                "forecast_category": "text",
                "probability": "decimal",
                "term_months": "int",
                "last_modified": "instant",
            }
        )
        dates = _Memo(_date_or_none)
        pending: list[Any] = []
        with self._read() as connection:
            for fetched in self._fetch_rows(connection, statement):
                pending.extend(fetched)
                if len(pending) >= rows:
                    yield self._deal_chunk(pending, converters, dates)
                    pending = []
            if pending:
                yield self._deal_chunk(pending, converters, dates)

    def _deal_chunk(
        self,
        rows: list[Any],
        converters: dict[str, Callable[[Sequence[Any]], Iterable[Any]]],
        dates: _Memo,
    ) -> dict[str, list[Any]]:
        instant = dt.datetime.fromisoformat
        with gc_paused():
            chunk = list(zip(*rows, strict=True))  # columns of this chunk
            out: dict[str, list[Any]] = {
                name: list(converters[name](values))
                for name, values in zip(DEAL_COLUMNS, chunk, strict=False)
            }
            counts, parts = split_history(chunk[-2], 2)
            out["stage_history_offsets"] = list(accumulate(counts, initial=0))
            out["stage_history_stage"] = list(map(sys.intern, parts[0::2]))
            out["stage_history_entered_at"] = list(map(instant, parts[1::2]))
            counts, parts = split_history(chunk[-1], 3)
            out["close_date_history_offsets"] = list(accumulate(counts, initial=0))
            out["close_date_history_old"] = list(dates(parts[0::3]))
            out["close_date_history_new"] = list(dates(parts[1::3]))
            out["close_date_history_changed_at"] = list(map(instant, parts[2::3]))
        return out

    def iter_deal_arrays(self, source: str, rows: int = 20_000) -> Iterator[DealArrays]:
        """Live deals of the source in chunks of at most ``rows``, as numpy arrays and
        dictionary-encoded texts (:class:`~crm_kpi_worker.sync.store_arrays.DealArrays`): what
        the KPI frames need, without a Python object per value.

        Same deals and values as :meth:`iter_deal_columns` (instants as datetime64[us] UTC,
        dates as datetime64[D], amounts as the float of their exact decimal text; NULL as
        NaT/NaN/None), in no particular order. SQLite hands each chunk over as one text per
        column (``group_concat`` over a rowid range: one row per chunk instead of one per
        deal); PostgreSQL through a server-side cursor.
        """
        c = deals.c
        expressions = [
            c.id,
            func.coalesce(c.owner_id, literal(NULL_TEXT, String())),
            func.coalesce(c.account_id, literal(NULL_TEXT, String())),
            c.stage,
            c.deal_type,
            c.forecast_category,
            self._instant_text(c.created_at),
            func.coalesce(self._date_text(c.close_date), ""),
            self._text(cast(c.is_won, Integer()) + 2 * cast(c.is_closed, Integer())),
            func.coalesce(self._text(c.arr), "nan"),
            func.coalesce(self._text(c.probability), "nan"),
            func.coalesce(c.stage_history, ""),
            func.coalesce(c.close_date_history, ""),
        ]
        with self._read() as connection:
            chunks = self._text_chunks(connection, deals, source, ~c.is_deleted, expressions, rows)
            yield from self._parsed(chunks, deal_arrays, deal_arrays_from_rows)

    def iter_activity_arrays(
        self, source: str, kind: str = "demo", rows: int = 50_000
    ) -> Iterator[tuple[Coded, np.ndarray]]:
        """:meth:`activities` as arrays, in chunks: owner ids dictionary-encoded (None = no
        owner) and start instants as datetime64[us] (UTC)."""
        c = activities.c
        expressions = [
            func.coalesce(c.owner_id, literal(NULL_TEXT, String())),
            self._instant_text(c.start),
        ]
        live = and_(c.kind == kind, ~c.is_deleted)
        with self._read() as connection:
            chunks = self._text_chunks(connection, activities, source, live, expressions, rows)
            yield from self._parsed(chunks, activity_arrays, activity_arrays_from_rows)

    def _parsed(
        self,
        chunks: Iterator[tuple[int, list[str], Callable[[], Sequence[Sequence[str]]]]],
        parse: Callable[[int, list[str]], T],
        parse_rows: Callable[[Sequence[Sequence[str]]], T],
    ) -> Iterator[T]:
        """Each chunk parsed, while a worker thread already runs the next chunk's query
        (SQLite computes it without the GIL): reading and parsing overlap. The connection
        is used by one thread at a time. (Parsing in the worker too was measured slower:
        the two threads then mostly wait for each other's GIL.)"""
        ahead = _ReadAhead(chunks) if self._can_read_ahead() else None
        try:
            for n, texts, chunk_rows in ahead or chunks:
                with gc_paused():
                    try:
                        parsed = parse(n, texts)
                    except IrregularChunkError:
                        # A value holds a separator: this chunk value by value, once the
                        # connection is free.
                        if ahead is not None:
                            ahead.settle()
                        parsed = parse_rows(chunk_rows())
                yield parsed
        finally:
            if ahead is not None:
                ahead.close()

    def _can_read_ahead(self) -> bool:
        """A second thread may use the connection: not for an in-memory SQLite database
        (its connection belongs to the thread that made it)."""
        url = self._engine.url
        if self.backend != "sqlite":
            return True
        return url.database not in (None, "", ":memory:") and "memory" not in str(
            url.query.get("mode", "")
        )

    def _instant_text(self, column: Any) -> Any:
        """SQL giving an instant column as the store's SQLite text (fixed-width UTC ISO)."""
        if self.backend == "sqlite":
            return column
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')

    def _text(self, expression: Any) -> Any:
        """Numbers as text: SQLite's group_concat does it itself (and decimals are text)."""
        return expression if self.backend == "sqlite" else cast(expression, String())

    def _date_text(self, column: Any) -> Any:
        return column if self.backend == "sqlite" else func.to_char(column, "YYYY-MM-DD")

    def _text_chunks(
        self,
        connection: Connection,
        table: Table,
        source: str,
        where: Any,
        expressions: list[Any],
        rows: int,
    ) -> Iterator[tuple[int, list[str], Callable[[], Sequence[Sequence[str]]]]]:
        """Per chunk of at most ``rows`` rows of the source matching ``where``: its size,
        one RS-joined text per expression, and a function giving the chunk's rows instead
        (for the rare chunk whose texts do not split back)."""
        if self.backend != "sqlite":
            statement = select(*expressions).where(table.c.source == source, where)
            for fetched in self._fetch_rows(connection, statement, rows):
                texts = [RS.join(values) for values in zip(*fetched, strict=True)]
                yield len(fetched), texts, lambda fetched=fetched: fetched  # type: ignore[misc]
            return
        rowid = literal_column(f"{table.name}.rowid", Integer())
        low, high = connection.execute(
            select(func.min(rowid), func.max(rowid)).select_from(table)
        ).one()
        if low is None:
            return
        # "+source": the rowid range must drive the scan, not the (source, id) index (which
        # would walk every row of the source for each chunk).
        unindexed_source = literal_column(f"+{table.name}.source", String()) == source
        span = and_(unindexed_source, where, rowid.between(bindparam("low"), bindparam("high")))
        aggregate = _DriverStatement(
            connection,
            select(func.count(), *(func.group_concat(e, RS) for e in expressions)).where(span),
        )
        plain = _DriverStatement(connection, select(*expressions).where(span))
        driver: Any = connection.connection.driver_connection
        cursor = driver.cursor()
        try:
            for start in range(low, high + 1, rows):
                bounds = {"low": start, "high": start + rows - 1}

                def chunk_rows(bounds: dict[str, int] = bounds) -> Sequence[Sequence[str]]:
                    # Its own cursor: the chunks' one may be closed by then (last chunk).
                    own = driver.cursor()
                    try:
                        return own.execute(plain.sql, plain.params(bounds)).fetchall()
                    finally:
                        own.close()

                n, *texts = cursor.execute(aggregate.sql, aggregate.params(bounds)).fetchone()
                if n:
                    yield n, texts, chunk_rows
        finally:
            cursor.close()

    def activities(self, source: str, kind: str = "demo") -> dict[str, list[Any]]:
        """Live activities of one kind as columns: ``owner_id`` (str or None), ``start``
        (aware UTC datetime)."""
        statement = select(activities.c.owner_id, activities.c.start).where(
            activities.c.source == source, activities.c.kind == kind, ~activities.c.is_deleted
        )
        converters = self._converters({"owner_id": "text", "start": "instant"})
        owner_ids: list[Any] = []
        starts: list[Any] = []
        with self._read() as connection, gc_paused():
            for rows in self._fetch_rows(connection, statement):
                chunk_owners, chunk_starts = zip(*rows, strict=True)
                owner_ids.extend(converters["owner_id"](chunk_owners))
                starts.extend(converters["start"](chunk_starts))
        return {"owner_id": owner_ids, "start": starts}

    def _converters(self, kinds: Mapping[str, str]) -> dict[str, Callable[[Sequence[Any]], Any]]:
        """Per column, what turns the driver's values into the model's types.

        psycopg already returns datetime/date/Decimal/bool; SQLite returns text and 0/1.
        """
        sqlite = self.backend == "sqlite"
        converters: dict[str, Callable[[Sequence[Any]], Any]] = {}
        for name, kind in kinds.items():
            if kind == "text":
                converters[name] = _shared
            elif kind == "unique":  # ids: nothing to share
                converters[name] = _identity
            elif kind == "instant":
                converters[name] = _each(dt.datetime.fromisoformat) if sqlite else _identity
            elif kind == "date":
                converters[name] = _each(dt.date.fromisoformat) if sqlite else _identity
            elif kind == "bool":
                converters[name] = _each(bool) if sqlite else _identity
            elif kind == "decimal":
                converters[name] = _Memo(Decimal) if sqlite else _identity
            else:
                converters[name] = _identity
        return converters

    def _fetch_rows(
        self, connection: Connection, statement: Select[Any], size: int = _FETCH
    ) -> Iterator[list[Any]]:
        """Run ``statement`` on the driver's own cursor and yield chunks of plain row tuples.

        Skips SQLAlchemy's row objects and per-value type processing: the callers convert
        whole columns at once. PostgreSQL reads through a server-side cursor, so memory holds
        one chunk of raw rows at a time.
        """
        compiled = _DriverStatement(connection, statement)
        params = compiled.params()
        driver = connection.connection.driver_connection
        if self.backend == "postgresql":
            cursor = driver.cursor(name=f"crm_kpi_{uuid.uuid4().hex}")  # type: ignore[union-attr]
        else:
            cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.sql, params)
            while rows := cursor.fetchmany(size):
                yield rows
        finally:
            cursor.close()

    def metadata(self, source: str, key: str) -> Any | None:
        with self._read() as connection:
            text = connection.execute(
                select(source_metadata.c.value).where(
                    source_metadata.c.source == source, source_metadata.c.key == key
                )
            ).scalar_one_or_none()
        return None if text is None else decode_json(text)

    def exclusions(self, source: str) -> list[Exclusion]:
        statement = (
            select(
                exclusions.c.record_type,
                exclusions.c.record_id,
                exclusions.c.reason,
                exclusions.c.detail,
            )
            .where(exclusions.c.source == source)
            .order_by(exclusions.c.record_type, exclusions.c.record_id, exclusions.c.reason)
        )
        with self._read() as connection:
            return [
                Exclusion(row.record_type, row.record_id, row.reason, row.detail)
                for row in connection.execute(statement)
            ]

    # ---- KPIs

    def save_kpis(self, run_id: int, rows: Iterable[KpiRow]) -> None:
        """Store the run's KPI values: the latest value per key, plus a history row for every
        key whose value changed (or appeared). Diffed in SQL, so memory stays flat however
        many rows stream in; a key given twice keeps its last value."""
        now = self._clock()
        incoming = _kpi_incoming()
        with self._write() as connection:
            self._require_run(connection, run_id)
            connection.execute(CreateTable(incoming, if_not_exists=True))
            connection.execute(delete(incoming))
            decimal = self._driver.decimal
            for chunk in _chunks(rows, 10_000):
                self._upsert_many(
                    connection,
                    incoming,
                    [
                        {
                            "source": row.source,
                            "scope": row.scope,
                            "subject": row.subject,
                            "period_kind": row.period_kind,
                            "period_key": row.period_key,
                            "kpi": row.kpi,
                            "value": decimal(_kpi_value(row.value)),
                        }
                        for row in chunk
                    ],
                )
            same_key = and_(*(kpi_values.c[name] == incoming.c[name] for name in KPI_KEY))
            changed = (
                select(
                    *(incoming.c[name] for name in KPI_KEY),
                    incoming.c.value,
                    literal(run_id),
                    literal(now, UtcDateTime()),
                )
                .select_from(incoming.outerjoin(kpi_values, same_key))
                .where(
                    or_(
                        kpi_values.c.source.is_(None),
                        kpi_values.c.value.is_distinct_from(incoming.c.value),
                    )
                )
            )
            connection.execute(
                insert(kpi_history).from_select(
                    [*KPI_KEY, "value", "run_id", "recorded_at"], changed
                )
            )
            latest = self._insert(kpi_values).from_select(
                [*KPI_KEY, "value", "run_id", "changed_at"],
                select(
                    *(incoming.c[name] for name in KPI_KEY),
                    incoming.c.value,
                    literal(run_id),
                    literal(now, UtcDateTime()),
                ).where(true()),  # SQLite needs a WHERE to parse INSERT ... SELECT ... ON CONFLICT
            )
            connection.execute(
                latest.on_conflict_do_update(
                    index_elements=list(KPI_KEY),
                    set_={
                        "value": latest.excluded.value,
                        "run_id": latest.excluded.run_id,
                        "changed_at": latest.excluded.changed_at,
                    },
                    where=kpi_values.c.value.is_distinct_from(latest.excluded.value),
                )
            )
            connection.execute(delete(incoming))

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
        with self._read() as connection:
            return [KpiRow(**row) for row in connection.execute(statement).mappings()]

    def kpi_history(
        self, source: str, scope: str, subject: str, kpi: str | None = None
    ) -> list[tuple[KpiRow, dt.datetime]]:
        """Past values of a subject's KPIs by run (oldest first), then KPI name, with when each
        was recorded. ``run_id``/``changed_at`` of each row: the run and time of that value."""
        statement = (
            select(kpi_history)
            .where(
                kpi_history.c.source == source,
                kpi_history.c.scope == scope,
                kpi_history.c.subject == subject,
            )
            .order_by(kpi_history.c.run_id, kpi_history.c.kpi, kpi_history.c.id)
        )
        if kpi is not None:
            statement = statement.where(kpi_history.c.kpi == kpi)
        with self._read() as connection:
            rows = connection.execute(statement).mappings().all()
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
            for row in rows
        ]

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
        with self._read() as connection:
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
        statement = self._insert(forecast_snapshots)
        with self._write() as connection:
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

    # ---- write-back memory

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
            statement = statement.where(_ids_match(self.backend, written_values.c.record_key, keys))
        found: dict[tuple[str, str], Any] = {}
        with self._read() as connection, gc_paused():
            for rows in self._fetch_rows(connection, statement):
                for key, name, kind, text in rows:
                    found[key, name] = decode_scalar(kind, text)
        return found

    def record_written(
        self, source: str, object: str, values: Iterable[tuple[str, str, Any]]
    ) -> None:
        """Remember values the CRM confirmed: (record key, field, value)."""
        now = self._driver.instant(self._clock())
        with self._write() as connection:
            for chunk in _chunks(values, 5_000):
                rows: dict[tuple[str, str], dict[str, Any]] = {}
                for key, name, value in chunk:
                    kind, text = encode_scalar(value)
                    rows[key, name] = {
                        "source": source,
                        "object": object,
                        "record_key": key,
                        "field": name,
                        "value_kind": kind,
                        "value_text": text,
                        "written_at": now,
                    }
                self._upsert_many(connection, written_values, list(rows.values()))

    # ---- runs

    def start_run(self, as_of: dt.datetime, options: Mapping[str, Any]) -> int:
        with self._write() as connection:
            result = connection.execute(
                insert(runs).values(
                    as_of=as_of,
                    started_at=self._clock(),
                    status="running",
                    options=encode_json(dict(options)),
                )
            )
            key = result.inserted_primary_key
            if key is None:
                raise StoreError("the database returned no id for the new run")
            return int(key[0])

    def finish_run(self, run_id: int, status: str, report: Mapping[str, Any]) -> None:
        with self._write() as connection:
            found = connection.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(status=status, report=encode_json(dict(report)), finished_at=self._clock())
            ).rowcount
            if not found:
                raise StoreError(f"no run {run_id} in the store")

    def last_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest runs first: id, as_of, started_at, finished_at, status, options, report."""
        statement = select(runs).order_by(runs.c.id.desc()).limit(limit)
        with self._read() as connection:
            rows = connection.execute(statement).mappings().all()
        return [
            {
                **row,
                "options": decode_json(row["options"]),
                "report": None if row["report"] is None else decode_json(row["report"]),
            }
            for row in rows
        ]

    def _require_run(self, connection: Connection, run_id: int) -> None:
        if connection.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise StoreError(f"no run {run_id} in the store: start_run() first")


# ---------------------------------------------------------------------------------------------
# Page preparation: validation and encoding, before any database work


class _PreparedPage:
    """A page checked and turned into rows. Errors here are the caller's bugs (ValueError)."""

    def __init__(self, page: StoredPage, driver: _DriverValues) -> None:
        self.page = page
        instant, date, decimal = driver.instant, driver.date, driver.decimal
        source = page.source
        for kinds, what in ((page.deleted, "deleted"), (page.seen_ids, "seen_ids")):
            for kind in kinds:
                if kind not in RECORD_TABLES:
                    raise ValueError(
                        f"{what}: unknown record kind {kind!r}; expected one of {RECORD_KINDS}"
                    )
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
        deal_rows: dict[str, tuple[Any, ...]] = {}  # one row per id, the last one winning
        for deal in page.deals:
            if deal.source != source:
                raise ValueError(
                    f"deal {deal.id} is from source {deal.source!r}, page is {source!r}"
                )
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
        self.deals = list(deal_rows.values())
        # Histories of deals the page does not carry (left after the pops above).
        self.detached_histories = {
            "stage_history": stage_texts,
            "close_date_history": close_texts,
            "field_history": field_texts,
        }
        activity_rows: dict[str, tuple[Any, ...]] = {}
        for activity in page.activities:
            activity_rows[activity.id] = (  # in the order of ACTIVITY_ROW
                source,
                activity.id,
                activity.owner_id,
                activity.deal_id,
                activity.kind,
                instant(activity.start),
            )
        self.activities = list(activity_rows.values())
        self.deleted = {kind: sorted(set(ids)) for kind, ids in page.deleted.items() if ids}
        self.seen_ids = {kind: sorted(set(ids)) for kind, ids in page.seen_ids.items() if ids}

        self.quotas: list[dict[str, Any]] | None = None
        if page.quotas is not None:
            self.quotas = []
            seen: set[tuple[str, dt.date, dt.date]] = set()
            for quota in page.quotas:
                key = (quota.rep_id, quota.period_start, quota.period_end)
                if key in seen:
                    raise ValueError(
                        f"two quotas for rep {quota.rep_id} over {quota.period_start}.."
                        f"{quota.period_end}"
                    )
                seen.add(key)
                self.quotas.append(
                    {
                        "source": source,
                        "rep_id": quota.rep_id,
                        "period_start": quota.period_start,
                        "period_end": quota.period_end,
                        "amount": quota.amount,
                        "quota_source": quota.source.value,
                    }
                )
        self.metadata = {key: encode_json(value) for key, value in page.metadata.items()}

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
        self.carried = {kind: sorted(ids) for kind, ids in carried.items() if ids}
        self.exclusions = list(rows.values())


_ENUM_VALUES: dict[Any, str] = {}


def _enum_value(member: Any) -> str:
    """``member.value``, remembered (Enum's value property costs a Python call each time)."""
    try:
        return _ENUM_VALUES[member]
    except KeyError:
        value = _ENUM_VALUES[member] = member.value
        return value


#: Columns of _PreparedPage.deals rows (tuples).
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
#: Columns of _PreparedPage.activities rows (tuples).
ACTIVITY_ROW: tuple[str, ...] = ("source", "id", "owner_id", "deal_id", "kind", "start")


def _by_id(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per id, the last one given winning (a page may repeat a record)."""
    return list({row["id"]: row for row in rows}.values())


def _keep_stored_history(table: Table, statement: Any) -> dict[str, Any]:
    """The deals upsert's SET for histories: NULL = "this page carries no history for the
    deal", so the stored one stays."""
    return {
        name: func.coalesce(statement.excluded[name], table.c[name])
        for name in ("stage_history", "close_date_history", "field_history")
    }


def _kpi_incoming() -> Table:
    """The per-connection temporary table save_kpis diffs through."""
    return Table(
        "kpi_incoming",
        MetaData(),
        *(Column(name, String(), primary_key=True) for name in KPI_KEY),
        Column("value", ExactDecimal()),
        prefixes=["TEMPORARY"],
    )


def _reason(exc: DBAPIError) -> str:
    """The driver's own message, first line (it names host and port, never a password)."""
    text = str(exc.orig).strip() if exc.orig is not None else type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
