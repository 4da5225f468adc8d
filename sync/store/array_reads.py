"""The bulk reads of the KPI frames: live deals and activities of a source as numpy arrays,
chunk by chunk (:mod:`.arrays` parses them), without a Python object per value."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import (
    Integer,
    String,
    Table,
    and_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.engine import Connection

from crm_kpi_worker.sync.bulk import gc_paused
from crm_kpi_worker.sync.store.arrays import NULL as NULL_TEXT
from crm_kpi_worker.sync.store.arrays import (
    RS,
    Coded,
    DealArrays,
    IrregularChunkError,
    activity_arrays,
    activity_arrays_from_rows,
    deal_arrays,
    deal_arrays_from_rows,
)
from crm_kpi_worker.sync.store.database import Database, DriverStatement
from crm_kpi_worker.sync.store.schema import activities, deals

__all__ = ["ArrayReads"]

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


class ArrayReads:
    """Deals and activities as the KPI frames read them: numpy arrays, in chunks."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def iter_deal_arrays(self, source: str, rows: int = 20_000) -> Iterator[DealArrays]:
        """Live deals of the source in chunks of at most ``rows``, as numpy arrays and
        dictionary-encoded texts (:class:`~crm_kpi_worker.sync.store.arrays.DealArrays`): what
        the KPI frames need, without a Python object per value.

        Instants as datetime64[us] UTC, dates as datetime64[D], amounts as the float of their
        exact decimal text; NULL as NaT/NaN/None; in no particular order. SQLite hands each
        chunk over as one text per column (``group_concat`` over a rowid range: one row per
        chunk instead of one per deal); PostgreSQL through a server-side cursor.
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
        with self._db.read() as connection:
            chunks = self._text_chunks(connection, deals, source, ~c.is_deleted, expressions, rows)
            yield from self._parsed(chunks, deal_arrays, deal_arrays_from_rows)

    def iter_activity_arrays(
        self, source: str, kind: str = "demo", rows: int = 50_000
    ) -> Iterator[tuple[Coded, np.ndarray]]:
        """Live activities of one kind of the source, in chunks of at most ``rows``: owner
        ids dictionary-encoded (None = no owner) and start instants as datetime64[us] (UTC)."""
        c = activities.c
        expressions = [
            func.coalesce(c.owner_id, literal(NULL_TEXT, String())),
            self._instant_text(c.start),
        ]
        live = and_(c.kind == kind, ~c.is_deleted)
        with self._db.read() as connection:
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
        url = self._db.engine.url
        if self._db.backend != "sqlite":
            return True
        return url.database not in (None, "", ":memory:") and "memory" not in str(
            url.query.get("mode", "")
        )

    def _instant_text(self, column: Any) -> Any:
        """SQL giving an instant column as the store's SQLite text (fixed-width UTC ISO)."""
        if self._db.backend == "sqlite":
            return column
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')

    def _text(self, expression: Any) -> Any:
        """Numbers as text: SQLite's group_concat does it itself (and decimals are text)."""
        return expression if self._db.backend == "sqlite" else cast(expression, String())

    def _date_text(self, column: Any) -> Any:
        return column if self._db.backend == "sqlite" else func.to_char(column, "YYYY-MM-DD")

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
        if self._db.backend != "sqlite":
            statement = select(*expressions).where(table.c.source == source, where)
            for fetched in self._db.fetch_rows(connection, statement, rows):
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
        aggregate = DriverStatement(
            connection,
            select(func.count(), *(func.group_concat(e, RS) for e in expressions)).where(span),
        )
        plain = DriverStatement(connection, select(*expressions).where(span))
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
