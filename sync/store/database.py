"""What every part of the store shares: one engine, its transactions, the clock, and the
bulk statements (upserts and reads on the driver's own cursor) the parts are built on."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import String, Table, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.sql.compiler import SQLCompiler

from crm_kpi_worker.sync.store.engine import WRITE_OPTION
from crm_kpi_worker.sync.store.schema import iso_instant

__all__ = ["FETCH_ROWS", "Database", "DriverStatement", "DriverValues", "chunks"]

FETCH_ROWS = 50_000  # rows per fetch on bulk reads


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _same(value: Any) -> Any:
    return value


def _iso_date(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def _decimal_text(value: Any) -> str | None:
    return None if value is None else str(value)


class DriverValues:
    """Python values to what the driver receives, exactly as the column types convert them.

    Bulk writes encode rows once with these and hand them to the driver's ``executemany``:
    SQLAlchemy's per-value bind processing cost more than the database work itself.
    """

    def __init__(self, backend: str) -> None:
        sqlite = backend == "sqlite"
        self.instant: Callable[[dt.datetime], Any] = iso_instant if sqlite else _same
        self.date: Callable[[dt.date | None], Any] = _iso_date if sqlite else _same
        self.decimal: Callable[[Any], Any] = _decimal_text if sqlite else _same


class DriverStatement:
    """A statement compiled once for the driver's own cursor: SQL text and its parameters
    (bound values, with some replaced per execution)."""

    def __init__(self, connection: Connection | Dialect, statement: ClauseElement) -> None:
        dialect = connection.dialect if isinstance(connection, Connection) else connection
        compiled = cast(
            SQLCompiler,
            statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}),
        )
        self.sql = str(compiled)
        self._values = dict(compiled.params)
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def params(self, values: Mapping[str, Any] | None = None) -> Any:
        merged = {**self._values, **values} if values else self._values
        if self._order is None:
            return merged
        return tuple(merged[name] for name in self._order)


class Database:
    """The store's engine with its transactions and bulk statements. One per Store, shared by
    its parts (and by threads: the engine holds a connection pool)."""

    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self.clock: Callable[[], dt.datetime] = clock or _utcnow
        self.backend: str = engine.dialect.name
        self.insert = sqlite_dialect.insert if self.backend == "sqlite" else pg_dialect.insert
        self.driver = DriverValues(self.backend)
        self._compiled: dict[Any, tuple[str, tuple[str, ...] | None]] = {}  # by table, columns
        self._statements: dict[Hashable, DriverStatement] = {}

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._writer.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection, connection.begin():
            yield connection

    def statement(self, key: Hashable, build: Callable[[], ClauseElement]) -> DriverStatement:
        """``build()`` compiled once per ``key`` for the driver (run it with :meth:`run`):
        statements run per page skip SQLAlchemy's compilation."""
        found = self._statements.get(key)
        if found is None:
            found = self._statements[key] = DriverStatement(self.engine.dialect, build())
        return found

    @staticmethod
    def run(
        connection: Connection, statement: DriverStatement, values: Mapping[str, Any] | None = None
    ) -> CursorResult[Any]:
        return connection.exec_driver_sql(statement.sql, statement.params(values))

    def ids_in(self, column: Any, name: str, type_: Any = None) -> Any:
        """``column IN`` the values bound to ``name`` as one parameter (:meth:`ids_value`),
        for statements compiled once."""
        if self.backend == "postgresql":
            return column == any_(bindparam(name, type_=ARRAY(type_ or String())))
        values = func.json_each(bindparam(name, type_=String())).table_valued("value")
        return column.in_(select(values.c.value))

    def ids_value(self, ids: Iterable[Any]) -> Any:
        """The parameter of :meth:`ids_in` for these values."""
        return list(ids) if self.backend == "postgresql" else json.dumps(list(ids))

    def ids_match(self, column: Any, ids: Sequence[str]) -> Any:
        """``column IN ids`` with one bound parameter whatever the number of ids."""
        if self.backend == "postgresql":
            return column == any_(bindparam(None, list(ids), type_=ARRAY(String())))
        values = func.json_each(
            bindparam(None, json.dumps(list(ids)), type_=String())
        ).table_valued("value")
        return column.in_(select(values.c.value))

    def upsert_many(
        self,
        connection: Connection,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        *,
        updates: Callable[[Any], dict[str, Any]] | None = None,
    ) -> None:
        """Upsert rows of driver values (see DriverValues), keyed by column name, on the
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

    def upsert_tuples(
        self,
        connection: Connection,
        table: Table,
        columns: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
        *,
        updates: Callable[[Table, Any], dict[str, Any]] | None = None,
        changed: str | None = None,
    ) -> None:
        """:meth:`upsert_many` of rows given as tuples of driver values in ``columns`` order
        (no dict per row; the hot path of save_page). ``changed``: a column; a stored row is
        updated only where it differs (``IS DISTINCT FROM``) from the given value."""
        if not rows:
            return
        sql, order = self._upsert_sql(
            table,
            columns,
            (lambda statement: updates(table, statement)) if updates else None,
            changed,
        )
        _execute_tuples(connection, sql, order, columns, rows)

    def insert_tuples(
        self,
        connection: Connection,
        table: Table,
        columns: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
    ) -> None:
        """Insert rows of driver values given as tuples in ``columns`` order, through the
        driver's own executemany (see :meth:`upsert_many`)."""
        if not rows:
            return
        cache_key = (table.name, columns, "insert")
        compiled = self._compiled.get(cache_key)
        if compiled is None:
            statement = table.insert().compile(
                dialect=self.engine.dialect, column_keys=list(columns)
            )
            order = tuple(statement.positiontup or ()) if statement.positional else None
            compiled = self._compiled[cache_key] = (str(statement), order)
        sql, order = compiled
        _execute_tuples(connection, sql, order, columns, rows)

    def _upsert_sql(
        self,
        table: Table,
        columns: tuple[str, ...],
        updates: Callable[[Any], dict[str, Any]] | None,
        changed: str | None = None,
    ) -> tuple[str, tuple[str, ...] | None]:
        """The upsert of ``columns`` on the table's primary key, compiled once: SQL text and
        its positional parameter order (None: named parameters)."""
        cache_key = (table.name, columns, changed)
        compiled = self._compiled.get(cache_key)
        if compiled is None:
            keys = [column.name for column in table.primary_key]
            statement = self.insert(table)
            set_ = {name: statement.excluded[name] for name in columns if name not in keys}
            if updates is not None:
                set_.update(updates(statement))
            where = (
                None
                if changed is None
                else table.c[changed].is_distinct_from(statement.excluded[changed])
            )
            upsert = statement.on_conflict_do_update(
                index_elements=keys, set_=set_, where=where
            ).compile(dialect=self.engine.dialect, column_keys=list(columns))
            order = tuple(upsert.positiontup or ()) if upsert.positional else None
            if set(order or upsert.params) != set(columns):
                raise AssertionError(f"{table.name}: parameters {list(upsert.params)} != {columns}")
            compiled = self._compiled[cache_key] = (str(upsert), order)
        return compiled

    def fetch_rows(
        self, connection: Connection, statement: Select[Any], size: int = FETCH_ROWS
    ) -> Iterator[list[Any]]:
        """Run ``statement`` on the driver's own cursor and yield chunks of plain row tuples.

        Skips SQLAlchemy's row objects and per-value type processing: the callers convert
        whole columns at once. PostgreSQL reads through a server-side cursor, so memory holds
        one chunk of raw rows at a time.
        """
        compiled = DriverStatement(connection, statement)
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


def _execute_tuples(
    connection: Connection,
    sql: str,
    order: tuple[str, ...] | None,
    columns: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """The driver's executemany of ``rows`` (tuples in ``columns`` order) for a statement
    compiled with its parameters in ``order`` (None: named parameters)."""
    if order is None:
        connection.exec_driver_sql(sql, [dict(zip(columns, row, strict=True)) for row in rows])
    elif order == columns:
        connection.exec_driver_sql(sql, rows)
    else:
        pick = itemgetter(*(columns.index(name) for name in order))
        connection.exec_driver_sql(sql, [pick(row) for row in rows])
