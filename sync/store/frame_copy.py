"""The KPI frames' compact copy: its upkeep, in the transactions that change the pulled rows.

``frame_deals`` and ``frame_activities`` hold, per live deal and activity, exactly what the
KPI frames read, as fixed-width binary (:mod:`.frame_codec`), texts as numbers per family
(``frame_texts``), and ``frame_accounts`` the churn dates of the live accounts: the frames
read a million deals in a few aggregate queries and no text parsing (:mod:`.array_reads`).

The copy is always *derived from the stored rows*: after a page has changed deals, activities
or accounts, :meth:`FrameCopy.refresh` reads those rows back (parsed as :mod:`.arrays` parses
the pulled rows' text) and writes their copy, in the same transaction, so the copy can never
disagree with them. A migration that adds or changes the copy lists the stored sources in
``frame_rebuilds``; :meth:`FrameCopy.rebuild_pending` builds theirs when the store opens, in
the migration's transaction. The statements run per page are compiled once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import (
    Integer,
    String,
    Table,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.engine import Connection

from crm_kpi_worker.sync.store.arrays import (
    NULL,
    RS,
    Coded,
    IrregularChunkError,
    StoredActivities,
    StoredDeals,
    parse_activities,
    parse_activity_rows,
    parse_deal_rows,
    parse_deals,
)
from crm_kpi_worker.sync.store.database import Database, chunks
from crm_kpi_worker.sync.store.errors import StoreError
from crm_kpi_worker.sync.store.frame_codec import (
    ACTIVITY_ROW,
    CLOSE_ENTRY,
    DEAL_HEAD,
    STAGE_ENTRY,
    day_numbers,
    encode_activities,
    encode_deals,
)
from crm_kpi_worker.sync.store.schema import (
    accounts,
    activities,
    deals,
    frame_accounts,
    frame_activities,
    frame_deals,
    frame_rebuilds,
    frame_texts,
)

__all__ = ["FrameCopy"]

log = logging.getLogger(__name__)

_REFRESH_IDS = 5_000  # ids read back per query when refreshing
_REBUILD_ROWS = 50_000  # rows per chunk when rebuilding a source
_SOURCE = bindparam("source", type_=String())

#: Per chunk: its size, one RS-joined text per column, and a function giving its rows.
_TextChunk = tuple[int, list[str], Callable[[], Sequence[Sequence[str]]]]


class FrameCopy:
    """Writes the compact copy (see the module's docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def refresh(
        self,
        connection: Connection,
        source: str,
        deal_ids: Collection[str] = (),
        activity_ids: Collection[str] = (),
        account_ids: Collection[str] = (),
    ) -> None:
        """The copy of these deals, activities and accounts made equal to their stored rows:
        written for the live ones, removed for the others (deleted, or not stored)."""
        for kind, ids in (("deal", deal_ids), ("activity", activity_ids)):
            table = _COPIES[kind]
            for some in chunks(set(ids), _REFRESH_IDS):
                live: set[str] = set()
                for parsed in self._stored(connection, kind, source, some):
                    self._write(connection, source, parsed)
                    live.update(parsed.id)
                gone = [record_id for record_id in some if record_id not in live]
                if gone:
                    statement = self._db.statement(
                        ("frame_copy.delete", kind),
                        lambda table=table: delete(table).where(  # type: ignore[misc]
                            table.c.source == _SOURCE, self._db.ids_in(table.c.id, "ids")
                        ),
                    )
                    self._db.run(
                        connection, statement, {"source": source, "ids": self._db.ids_value(gone)}
                    )
        for some in chunks(set(account_ids), _REFRESH_IDS):
            numbers = _TextNumbers(self._db, connection, source)
            self._forget_churn(connection, source, numbers.existing("account", some).values())
            self._write_churn(connection, source, self._churned(connection, source, some))

    def forget(self, connection: Connection, kind: str, source: str, ids: Any) -> None:
        """Remove the copy of the deals (``kind`` "deal"), activities ("activity") or
        accounts ("account") whose ids the select ``ids`` gives (rows about to be deleted)."""
        table = _COPIES.get(kind)
        if table is not None:
            connection.execute(delete(table).where(table.c.source == source, table.c.id.in_(ids)))
        elif kind == "account":
            numbers = select(frame_texts.c.code).where(
                frame_texts.c.source == source,
                frame_texts.c.family == "account",
                frame_texts.c.text.in_(ids),
            )
            connection.execute(
                delete(frame_accounts).where(
                    frame_accounts.c.source == source, frame_accounts.c.code.in_(numbers)
                )
            )

    def rebuild_pending(self, connection: Connection) -> None:
        """Build the copy of every source listed in ``frame_rebuilds`` from its stored rows."""
        pending: list[str] = list(connection.execute(select(frame_rebuilds.c.source)).scalars())
        for source in pending:
            log.info(
                "building the KPI frames' copy of source %s from its stored rows",
                source,
                extra={"event": "frame_copy_rebuild", "source": source},
            )
            for table in (frame_deals, frame_activities, frame_accounts):
                connection.execute(delete(table).where(table.c.source == source))
            for kind in ("deal", "activity"):
                for parsed in self._stored(connection, kind, source):
                    self._write(connection, source, parsed)
            self._write_churn(connection, source, self._churned(connection, source))
            connection.execute(delete(frame_rebuilds).where(frame_rebuilds.c.source == source))

    @staticmethod
    def require_built(connection: Connection) -> None:
        """Refuse a store whose copy was not built yet (opened read-only after a migration
        that did not run through Store.open)."""
        if connection.execute(select(frame_rebuilds.c.source).limit(1)).first() is not None:
            raise StoreError(
                "the state store's KPI frames copy has not been built since it was migrated,"
                " and the store is opened read-only: run `crm-kpi sync --once` (which builds it)"
                " with write access first"
            )

    # ---- writing

    def _write(
        self, connection: Connection, source: str, parsed: StoredDeals | StoredActivities
    ) -> None:
        if isinstance(parsed, StoredDeals):
            self._write_deals(connection, source, parsed)
        else:
            self._write_activities(connection, source, parsed)

    def _write_deals(self, connection: Connection, source: str, parsed: StoredDeals) -> None:
        number = _TextNumbers(self._db, connection, source)
        head = np.zeros(len(parsed), dtype=DEAL_HEAD)
        head["created_at"] = parsed.created_at.astype("datetime64[us]").view(np.int64)
        head["arr"] = parsed.arr
        head["probability"] = parsed.probability
        head["close_date"] = day_numbers(parsed.close_date)
        head["owner"] = number("owner", parsed.owner_id)
        head["account"] = number("account", parsed.account_id)
        head["stage"] = number("stage", parsed.stage)
        head["deal_type"] = number("deal_type", parsed.deal_type)
        head["forecast_category"] = number("forecast_category", parsed.forecast_category)
        head["flags"] = parsed.is_won.astype(np.int32) + 2 * parsed.is_closed.astype(np.int32)
        head["stages"] = np.diff(parsed.stage_history_offsets)
        head["close_dates"] = np.diff(parsed.close_date_history_offsets)
        stages = np.zeros(len(parsed.stage_history_entered_at), dtype=STAGE_ENTRY)
        entered = parsed.stage_history_entered_at.astype("datetime64[us]")
        stages["entered_at"] = entered.view(np.int64)
        stages["stage"] = number("stage", parsed.stage_history_stage)
        close_dates = np.zeros(len(parsed.close_date_history_old), dtype=CLOSE_ENTRY)
        close_dates["old"] = day_numbers(parsed.close_date_history_old)
        close_dates["new"] = day_numbers(parsed.close_date_history_new)
        rows = encode_deals(head, stages, close_dates)
        self._db.upsert_tuples(
            connection,
            frame_deals,
            ("source", "id", "row"),
            [(source, deal_id, row) for deal_id, row in zip(parsed.id, rows, strict=True)],
        )

    def _write_activities(
        self, connection: Connection, source: str, parsed: StoredActivities
    ) -> None:
        number = _TextNumbers(self._db, connection, source)
        rows = np.zeros(len(parsed), dtype=ACTIVITY_ROW)
        rows["start"] = parsed.start.astype("datetime64[us]").view(np.int64)
        rows["owner"] = number("owner", parsed.owner_id)
        kinds = parsed.kind.decode()
        self._db.upsert_tuples(
            connection,
            frame_activities,
            ("source", "id", "kind", "row"),
            [
                (source, activity_id, kind, row)
                for activity_id, kind, row in zip(
                    parsed.id, kinds, encode_activities(rows), strict=True
                )
            ],
        )

    def _forget_churn(self, connection: Connection, source: str, numbers: Collection[int]) -> None:
        """Remove the churn dates of these account numbers."""
        if not numbers:
            return
        statement = self._db.statement(
            "frame_copy.forget_churn",
            lambda: delete(frame_accounts).where(
                frame_accounts.c.source == _SOURCE,
                self._db.ids_in(frame_accounts.c.code, "codes", Integer()),
            ),
        )
        self._db.run(
            connection, statement, {"source": source, "codes": self._db.ids_value(numbers)}
        )

    def _write_churn(
        self, connection: Connection, source: str, churned: list[tuple[str, Any]]
    ) -> None:
        """Store the churn dates of these (account id, churn date) pairs."""
        if not churned:
            return
        numbers = _TextNumbers(self._db, connection, source)
        codes = numbers.numbers("account", [account for account, _ in churned])
        dates = np.array([day for _, day in churned], dtype="datetime64[D]").reshape(-1)
        self._db.upsert_tuples(
            connection,
            frame_accounts,
            ("source", "code", "churn_date"),
            list(zip([source] * len(codes), codes, day_numbers(dates).tolist(), strict=True)),
        )

    # ---- reading the stored rows back

    def _churned(
        self, connection: Connection, source: str, ids: Sequence[str] | None = None
    ) -> list[tuple[str, Any]]:
        """(id, churn date) of the live accounts of the source (``ids`` only) that have one;
        dates as the driver gives them (ISO text on SQLite)."""
        statement = self._db.statement(
            ("frame_copy.churned", ids is None),
            lambda: select(accounts.c.id, accounts.c.churn_date).where(
                accounts.c.source == _SOURCE,
                accounts.c.churn_date.is_not(None),
                ~accounts.c.is_deleted,
                *([] if ids is None else [self._db.ids_in(accounts.c.id, "ids")]),
            ),
        )
        values = {"source": source}
        if ids is not None:
            values["ids"] = self._db.ids_value(ids)
        rows: Sequence[Any] = self._db.run(connection, statement, values).all()
        return [(row[0], row[1]) for row in rows]

    def _stored(
        self, connection: Connection, kind: str, source: str, ids: Sequence[str] | None = None
    ) -> Iterator[StoredDeals | StoredActivities]:
        """The live deals or activities (``kind``) of the source, ``ids`` only when given,
        parsed in chunks."""
        parse: Callable[..., Any] = parse_deals if kind == "deal" else parse_activities
        parse_rows: Callable[..., Any] = parse_deal_rows if kind == "deal" else parse_activity_rows
        for n, texts, rows in self._text_chunks(connection, kind, source, ids):
            try:
                yield parse(n, texts)
            except IrregularChunkError:  # a value holds a separator: value by value
                yield parse_rows(rows())

    def _text_chunks(
        self, connection: Connection, kind: str, source: str, ids: Sequence[str] | None
    ) -> Iterator[_TextChunk]:
        """Per chunk of the source's live rows (``ids`` only, when given): its size, one
        RS-joined text per column, and a function giving the chunk's rows instead (for the
        rare chunk whose texts do not split back). SQLite joins them itself
        (``group_concat``): over the ``ids`` given in one go, else over rowid ranges.
        PostgreSQL's rows are joined here."""
        table, expressions = (
            (deals, self._deal_texts()) if kind == "deal" else (activities, self._activity_texts())
        )
        live = and_(table.c.source == _SOURCE, ~table.c.is_deleted)
        values: dict[str, Any] = {"source": source}
        if ids is not None:
            live = and_(live, self._db.ids_in(table.c.id, "ids"))
            values["ids"] = self._db.ids_value(ids)
        if self._db.backend != "sqlite":
            fetched_chunks: Iterator[Sequence[Any]]
            if ids is None:  # a whole source: a server-side cursor, chunk by chunk
                whole = select(*expressions).where(live).params(source=source)
                fetched_chunks = self._db.fetch_rows(connection, whole, _REBUILD_ROWS)
            else:
                plain = self._db.statement(
                    ("frame_copy.rows", kind), lambda: select(*expressions).where(live)
                )
                fetched_chunks = iter([self._db.run(connection, plain, values).all()])
            for fetched in fetched_chunks:
                if fetched:
                    texts = [RS.join(column) for column in zip(*fetched, strict=True)]
                    yield len(fetched), texts, lambda fetched=fetched: fetched  # type: ignore[misc]
            return
        if ids is None:
            # Rowid ranges ("+source": the range must drive the scan, not the source's index).
            rowid = literal_column(f"{table.name}.rowid", Integer())
            live = and_(
                literal_column(f"+{table.name}.source", String()) == _SOURCE,
                ~table.c.is_deleted,
                rowid.between(bindparam("low"), bindparam("high")),
            )
        shape = ("frame_copy.texts", kind, ids is None)
        aggregate = self._db.statement(
            (*shape, "aggregate"),
            lambda: select(func.count(), *(func.group_concat(e, RS) for e in expressions)).where(
                live
            ),
        )
        plain = self._db.statement((*shape, "rows"), lambda: select(*expressions).where(live))

        def chunk(values: dict[str, Any]) -> Iterator[_TextChunk]:
            row = self._db.run(connection, aggregate, values).one()
            n: int = row[0]
            texts: list[str] = list(row[1:])
            if n:
                yield n, texts, lambda: self._db.run(connection, plain, values).all()

        if ids is not None:
            yield from chunk(values)
            return
        low: int | None
        high: int | None
        low, high = connection.execute(
            select(
                func.min(literal_column("rowid")), func.max(literal_column("rowid"))
            ).select_from(table)
        ).one()
        if low is None:
            return
        for start in range(low, high + 1, _REBUILD_ROWS):
            yield from chunk({**values, "low": start, "high": start + _REBUILD_ROWS - 1})

    def _deal_texts(self) -> list[Any]:
        c = deals.c
        return [
            c.id,
            func.coalesce(c.owner_id, literal(NULL, String())),
            func.coalesce(c.account_id, literal(NULL, String())),
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

    def _activity_texts(self) -> list[Any]:
        c = activities.c
        return [
            c.id,
            func.coalesce(c.owner_id, literal(NULL, String())),
            c.kind,
            self._instant_text(c.start),
        ]

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


_COPIES: dict[str, Table] = {"deal": frame_deals, "activity": frame_activities}


class _TextNumbers:
    """The numbers of texts per family (``frame_texts``), new texts numbered on the way;
    remembered for one write (in its transaction)."""

    def __init__(self, db: Database, connection: Connection, source: str) -> None:
        self._db = db
        self._connection = connection
        self._source = source
        self._known: dict[str, dict[str, int]] = {}  # family -> text -> number

    def __call__(self, family: str, column: Coded) -> np.ndarray:
        """Per row of ``column``, its text's number (-1 for None)."""
        table = np.array(self.numbers(family, column.values), dtype=np.int32)
        return table[column.codes] if len(table) else np.zeros(len(column.codes), np.int32)

    def numbers(self, family: str, texts: Sequence[str | None]) -> list[int]:
        """Each text's number (-1 for None)."""
        known = self._known.setdefault(family, {})
        missing = [text for text in texts if text is not None and text not in known]
        if missing:
            known.update(self.existing(family, missing))
            self._add(family, [text for text in dict.fromkeys(missing) if text not in known])
        return [-1 if text is None else known[text] for text in texts]

    def existing(self, family: str, texts: Collection[str]) -> dict[str, int]:
        """The numbers these texts already have (those that have one)."""
        if not texts:
            return {}
        statement = self._db.statement(
            "frame_copy.numbers",
            lambda: select(frame_texts.c.text, frame_texts.c.code).where(
                frame_texts.c.source == _SOURCE,
                frame_texts.c.family == bindparam("family", type_=String()),
                self._db.ids_in(frame_texts.c.text, "texts"),
            ),
        )
        values = {"source": self._source, "family": family, "texts": self._db.ids_value(texts)}
        return dict(self._db.run(self._connection, statement, values).all())  # type: ignore[arg-type]

    def _add(self, family: str, texts: list[str]) -> None:
        """Number new texts after the family's last number."""
        if not texts:
            return
        statement = self._db.statement(
            "frame_copy.last_number",
            lambda: select(func.max(frame_texts.c.code)).where(
                frame_texts.c.source == _SOURCE,
                frame_texts.c.family == bindparam("family", type_=String()),
            ),
        )
        top = self._db.run(
            self._connection, statement, {"source": self._source, "family": family}
        ).scalar()
        first = 0 if top is None else top + 1
        rows = [(self._source, family, first + i, text) for i, text in enumerate(texts)]
        self._db.insert_tuples(
            self._connection, frame_texts, ("source", "family", "code", "text"), rows
        )
        self._known[family].update((text, code) for _, _, code, text in rows)
