"""The bulk reads of the KPI frames: a source's live deals and activities as numpy arrays,
chunk by chunk, from the store's compact copy (:mod:`.frame_copy`, :mod:`.frame_codec`).

Each chunk is one aggregate query: the chunk's ids joined in one text, and its binary rows
joined in one bytes value (with their lengths), which numpy reads in place. Texts come back
dictionary-encoded by the numbers the copy stores; an account comes as its number and its
churn date.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import (
    LargeBinary,
    String,
    Table,
    and_,
    bindparam,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.engine import Connection

from crm_kpi_worker.sync.bulk import gc_paused
from crm_kpi_worker.sync.store.arrays import (
    RS,
    Coded,
    DealArrays,
    IrregularChunkError,
    offsets_of,
)
from crm_kpi_worker.sync.store.database import Database, DriverStatement
from crm_kpi_worker.sync.store.frame_codec import (
    ACTIVITY_ROW,
    CorruptRowError,
    days,
    decode_activities,
    decode_deals,
)
from crm_kpi_worker.sync.store.schema import (
    frame_accounts,
    frame_activities,
    frame_deals,
    frame_texts,
)

__all__ = ["ArrayReads"]

_END = object()
_NAT = np.datetime64("NaT", "D")
_FAMILIES = ("owner", "stage", "deal_type", "forecast_category")

#: Per chunk: the aggregated values, and a function giving the chunk's rows instead.
_Chunk = tuple[list[Any], Callable[[], Sequence[Sequence[Any]]]]


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
        the KPI frames need, without a Python object per value (but the ids).

        Instants as datetime64[us] UTC, dates as datetime64[D], amounts as the float of their
        exact decimal text; NULL as NaT/NaN/None. Chunks follow the ids in the database's
        order of text (SQLite's is the bytes' order; the frames check it).
        """
        with self._snapshot() as connection:
            texts = _Texts.read(connection, source)
            churn = self._account_churn(connection, source)
            t = frame_deals.c
            chunks = self._chunks(
                connection,
                frame_deals,
                source,
                None,
                [
                    self._agg_text(t.id, RS),
                    self._agg_text(self._length(t.row), ","),
                    self._agg_bytes(t.row),
                ],
                [t.id, t.row],
                rows,
            )

            def parse(values: list[Any]) -> DealArrays:
                ids_text, lengths_text, blob = values
                lengths = np.fromstring(lengths_text, dtype=np.int64, sep=",")
                n = len(lengths)
                if len(blob or b"") != int(lengths.sum()):
                    raise IrregularChunkError("rows: the joined bytes are not the rows' bytes")
                ids = ids_text.split(RS)
                if len(ids) != n:
                    raise IrregularChunkError(f"id: {len(ids)} values for {n} rows")
                return _deal_arrays(ids, blob, lengths, texts, churn)

            def parse_rows(fetched: Sequence[Sequence[Any]]) -> DealArrays:
                ids = [row[0] for row in fetched]
                blobs = [bytes(row[1]) for row in fetched]
                lengths = np.array([len(blob) for blob in blobs], dtype=np.int64)
                return _deal_arrays(ids, b"".join(blobs), lengths, texts, churn)

            yield from self._parsed(chunks, parse, parse_rows)

    def iter_activity_arrays(
        self, source: str, kind: str = "demo", rows: int = 50_000
    ) -> Iterator[tuple[Coded, np.ndarray]]:
        """Live activities of one kind of the source, in chunks of at most ``rows``: owner
        ids dictionary-encoded (None = no owner) and start instants as datetime64[us] (UTC)."""
        with self._snapshot() as connection:
            texts = _Texts.read(connection, source)
            t = frame_activities.c

            def arrays(blob: bytes | None) -> tuple[Coded, np.ndarray]:
                decoded = decode_activities(blob or b"")
                owners = texts.coded("owner", decoded["owner"], nullable=True)
                return owners, decoded["start"].astype(np.int64).view("datetime64[us]")

            chunks = self._chunks(
                connection,
                frame_activities,
                source,
                t.kind == kind,
                [self._agg_bytes(t.row)],
                [t.row],
                rows,
            )

            def parse(values: list[Any]) -> tuple[Coded, np.ndarray]:
                if len(values[0]) % ACTIVITY_ROW.itemsize:
                    raise IrregularChunkError("rows: the joined bytes are not the rows' bytes")
                return arrays(values[0])

            yield from self._parsed(
                chunks, parse, lambda fetched: arrays(b"".join(bytes(row[0]) for row in fetched))
            )

    # ---- reading

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction seeing one state of the store across its queries (SQLite's
        read transactions do; PostgreSQL's need REPEATABLE READ)."""
        with self._db.engine.connect() as connection:
            if self._db.backend == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection

    def _account_churn(self, connection: Connection, source: str) -> _Churn:
        """Churn dates of the source's live accounts, by their number in the copy."""
        statement = select(frame_accounts.c.code, frame_accounts.c.churn_date).where(
            frame_accounts.c.source == source
        )
        found = [row for rows in self._db.fetch_rows(connection, statement) for row in rows]
        numbers = np.array([code for code, _ in found], dtype=np.int64)
        return _Churn(numbers, days(np.array([day for _, day in found], dtype=np.int32)))

    def _parsed(
        self,
        chunks: Iterator[_Chunk],
        parse: Callable[[list[Any]], Any],
        parse_rows: Callable[[Sequence[Sequence[Any]]], Any],
    ) -> Iterator[Any]:
        """Each chunk parsed, while a worker thread already runs the next chunk's query
        (the database computes it without the GIL): reading and parsing overlap. The
        connection is used by one thread at a time."""
        ahead = _ReadAhead(chunks) if self._can_read_ahead() else None
        try:
            for values, chunk_rows in ahead or chunks:
                with gc_paused():
                    try:
                        parsed = parse(values)
                    except IrregularChunkError:
                        # An id holds a separator: this chunk row by row, once the
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

    def _agg_text(self, expression: Any, separator: str) -> Any:
        if self._db.backend == "sqlite":
            return func.group_concat(expression, separator)
        return func.string_agg(cast(expression, String()), separator)

    def _agg_bytes(self, column: Any) -> Any:
        """The column's bytes values joined in one bytes value."""
        if self._db.backend == "sqlite":
            # group_concat hands a blob's bytes over as they are; CAST gives them back as bytes.
            return cast(func.group_concat(column, ""), LargeBinary())
        return func.string_agg(column, literal(b"", LargeBinary()))

    def _length(self, column: Any) -> Any:
        return func.length(column) if self._db.backend == "sqlite" else func.octet_length(column)

    def _chunks(
        self,
        connection: Connection,
        table: Table,
        source: str,
        where: Any,
        aggregates: list[Any],
        plain: list[Any],
        rows: int,
    ) -> Iterator[_Chunk]:
        """Per chunk of at most ``rows`` consecutive ids of the source's rows (those matching
        ``where`` among them): ``aggregates``' values over it (chunks without rows are left
        out), and a function giving its rows of ``plain`` columns instead. Chunks are ranges
        of the (source, id) key, each found by stepping ``rows`` ids along it: the aggregate
        then reads one range of the table (SQLite keeps these tables in key order)."""
        c = table.c
        after, upto = bindparam("after", type_=String()), bindparam("upto", type_=String())
        step = (
            select(c.id)
            .where(c.source == source, c.id > after)
            .order_by(c.id)
            .offset(rows - 1)
            .limit(1)
        )
        rest = and_(c.source == source, c.id > after, *([where] if where is not None else []))
        statements = {
            bounded: (
                DriverStatement(connection, select(*aggregates).where(span)),
                DriverStatement(connection, select(*plain).where(span)),
            )
            for bounded, span in ((True, and_(rest, c.id <= upto)), (False, rest))
        }
        boundary = DriverStatement(connection, step)
        driver: Any = connection.connection.driver_connection
        cursor = driver.cursor()
        try:
            last = ""  # ids are never empty
            while True:
                found = cursor.execute(boundary.sql, boundary.params({"after": last})).fetchone()
                bounds = {"after": last, "upto": found[0] if found else ""}
                aggregate, rows_of = statements[found is not None]

                def chunk_rows(
                    rows_of: DriverStatement = rows_of, bounds: dict[str, str] = bounds
                ) -> Sequence[Sequence[Any]]:
                    own = driver.cursor()  # the chunks' cursor may be closed by then
                    try:
                        return own.execute(rows_of.sql, rows_of.params(bounds)).fetchall()
                    finally:
                        own.close()

                values = list(cursor.execute(aggregate.sql, aggregate.params(bounds)).fetchone())
                if values[0] is not None:  # aggregates of no rows are NULL
                    yield values, chunk_rows
                if found is None:
                    return
                last = found[0]
        finally:
            cursor.close()


class _Texts:
    """The texts of a source's owners, stages, deal types and forecast categories, by their
    number in the copy."""

    def __init__(self, values: dict[str, list[str | None]]) -> None:
        self._values = values

    @classmethod
    def read(cls, connection: Connection, source: str) -> _Texts:
        statement = select(frame_texts.c.family, frame_texts.c.code, frame_texts.c.text).where(
            frame_texts.c.source == source, frame_texts.c.family.in_(_FAMILIES)
        )
        values: dict[str, list[str | None]] = {family: [] for family in _FAMILIES}
        for row in connection.execute(statement):
            family, code, text = str(row[0]), int(row[1]), str(row[2])
            numbered = values[family]
            numbered.extend([None] * (code + 1 - len(numbered)))
            numbered[code] = text
        return cls(values)

    def coded(self, family: str, numbers: np.ndarray, *, nullable: bool = False) -> Coded:
        values = self._values[family]
        numbers = numbers.astype(np.int32)
        if len(numbers) and (numbers.max() >= len(values) or numbers.min() < -int(nullable)):
            raise CorruptRowError(f"frame rows: a {family} number without a text")
        if not nullable:
            return Coded(numbers, list(values))
        none = np.int32(len(values))
        return Coded(np.where(numbers < 0, none, numbers), [*values, None])


class _Churn:
    """Per account number, the account's churn date (NaT: none, or not churned)."""

    def __init__(self, numbers: np.ndarray, dates: np.ndarray) -> None:
        size = int(numbers.max()) + 2 if len(numbers) else 1
        self._dates = np.full(size, _NAT)
        self._dates[numbers] = dates

    def __call__(self, account: np.ndarray) -> np.ndarray:
        last = len(self._dates) - 1  # always NaT
        return self._dates[np.where((account >= 0) & (account < last), account, last)]


def _deal_arrays(
    ids: list[str],
    blob: bytes | None,
    lengths: np.ndarray,
    texts: _Texts,
    churn: _Churn,
) -> DealArrays:
    head, stages, close_dates = decode_deals(blob or b"", lengths)
    flags = head["flags"]
    account = head["account"].astype(np.int32)
    return DealArrays(
        id=ids,
        owner_id=texts.coded("owner", head["owner"], nullable=True),
        stage=texts.coded("stage", head["stage"]),
        deal_type=texts.coded("deal_type", head["deal_type"]),
        forecast_category=texts.coded("forecast_category", head["forecast_category"]),
        created_at=head["created_at"].astype(np.int64).view("datetime64[us]"),
        close_date=days(head["close_date"]),
        is_won=(flags & 1).astype(bool),
        is_closed=(flags & 2).astype(bool),
        arr=head["arr"].astype(np.float64),
        probability=head["probability"].astype(np.float64),
        stage_history_offsets=offsets_of(head["stages"]),
        stage_history_stage=texts.coded("stage", stages["stage"]),
        stage_history_entered_at=stages["entered_at"].astype(np.int64).view("datetime64[us]"),
        close_date_history_offsets=offsets_of(head["close_dates"]),
        close_date_history_old=days(close_dates["old"]),
        close_date_history_new=days(close_dates["new"]),
        account=account,
        account_churn=churn(account),
    )
