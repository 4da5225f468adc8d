"""Tables, column types and value codecs of the state store (SQLAlchemy Core).

The tables here describe the schema at the newest migration (``sync/migrations/versions``);
``tests/test_store.py`` checks that the migrations build exactly these tables. Migrations never
import this module: each revision spells out its own DDL, so old revisions stay fixed while
this module moves on.

Storage conventions, the same on SQLite and PostgreSQL:

- Instants are timezone-aware UTC. PostgreSQL: ``timestamptz``. SQLite: fixed-width ISO text
  (``2024-01-02T03:04:05.000000+00:00``), which sorts and compares like the instants.
- Money and KPI values are exact: PostgreSQL ``numeric``; SQLite text holding ``str(Decimal)``
  (SQLite's own numbers are binary floats).
- Dates are dates (``date`` on PostgreSQL; ``YYYY-MM-DD`` text on SQLite).
- A deal's stage history and close-date history live on the deal row as compact text (one
  column each, see :func:`encode_stage_history`): one row per deal keeps ``save_page`` to one
  upsert per deal and lets the compact copy of the KPI frames (``frame_*`` tables) be built
  from it without a join (benchmarks/bench_store.py measured this against a child table).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from crm_kpi_worker.sync.model import FieldChange, StageChange

__all__ = [
    "KPI_KEY",
    "RECORD_TABLES",
    "ExactDecimal",
    "UtcDateTime",
    "accounts",
    "activities",
    "deals",
    "decode_json",
    "decode_scalar",
    "encode_close_date_history",
    "encode_field_history",
    "encode_json",
    "encode_scalar",
    "encode_stage_history",
    "exclusions",
    "forecast_snapshots",
    "frame_accounts",
    "frame_activities",
    "frame_deals",
    "frame_rebuilds",
    "frame_texts",
    "iso_instant",
    "kpi_history",
    "kpi_values",
    "metadata",
    "quotas",
    "reps",
    "run_locks",
    "run_records",
    "runs",
    "source_metadata",
    "split_history",
    "sync_cursors",
    "to_decimal",
    "written_values",
]


# ---------------------------------------------------------------------------------------------
# Column types


def iso_instant(value: dt.datetime) -> str:
    """Fixed-width ISO text of an aware instant, in UTC (sorts like the instants)."""
    zone = value.tzinfo
    if zone is dt.UTC:  # already UTC (what the normalizers give): the same text, formatted
        return _ISO_UTC % _ISO_PARTS(value)  # directly (isoformat costs half as much again)
    if zone is None:
        raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware instants only")
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


_ISO_UTC = "%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00"
_ISO_PARTS = attrgetter("year", "month", "day", "hour", "minute", "second", "microsecond")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """An aware instant, read back in UTC; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return iso_instant(value)
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps aware instants only")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return dt.datetime.fromisoformat(value)
        return value.astimezone(dt.UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal stored exactly: ``numeric`` on PostgreSQL, text on SQLite.

    Floats and ints are accepted and stored through their shortest text (``0.1`` stays 0.1).
    """

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = to_decimal(value)
        return str(number) if dialect.name == "sqlite" else number

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return number


# ---------------------------------------------------------------------------------------------
# Tables (newest revision)

metadata = MetaData()


def _key(name: str) -> Column[str]:
    return Column(name, String(), primary_key=True)


def _record_columns() -> list[Column[Any]]:
    """Bookkeeping columns of every pulled record table."""
    return [
        # The stream that last wrote the row: finish_full_pull sweeps per source and stream.
        Column("stream", String(), nullable=False),
        Column("is_deleted", Boolean(), nullable=False),
        # When a page last carried the record (written, deleted or listed in seen_ids).
        Column("seen_at", UtcDateTime(), nullable=False),
    ]


sync_cursors = Table(
    "sync_cursors",
    metadata,
    _key("source"),
    _key("stream"),
    Column("cursor", Text()),
    Column("full_pull_started", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
)

reps = Table(
    "reps",
    metadata,
    _key("source"),
    _key("id"),
    Column("name", Text(), nullable=False),
    Column("email", String(), nullable=False),
    Column("team", Text()),
    Column("manager_id", String()),
    Column("is_active", Boolean(), nullable=False),
    Column("start_date", Date()),
    Column("is_ae", Boolean(), nullable=False),
    *_record_columns(),
)

accounts = Table(
    "accounts",
    metadata,
    _key("source"),
    _key("id"),
    Column("name", Text(), nullable=False),
    Column("churn_date", Date()),
    *_record_columns(),
)

deals = Table(
    "deals",
    metadata,
    _key("source"),
    _key("id"),
    Column("name", Text(), nullable=False),
    Column("owner_id", String()),
    Column("account_id", String()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("close_date", Date()),
    Column("stage", String(), nullable=False),
    Column("is_won", Boolean(), nullable=False),
    Column("is_closed", Boolean(), nullable=False),
    Column("amount", ExactDecimal()),
    Column("currency", String(), nullable=False),
    Column("arr", ExactDecimal()),
    Column("deal_type", String(), nullable=False),
    Column("forecast_category", String(), nullable=False),
    Column("probability", ExactDecimal()),
    Column("term_months", Integer()),
    Column("last_modified", UtcDateTime(), nullable=False),
    # NULL: never given; '' : given and empty. Formats: encode_stage_history & co.
    Column("stage_history", Text()),
    Column("close_date_history", Text()),
    Column("field_history", Text()),
    *_record_columns(),
)

activities = Table(
    "activities",
    metadata,
    _key("source"),
    _key("id"),
    Column("owner_id", String()),
    Column("deal_id", String()),
    Column("kind", String(), nullable=False),
    Column("start", UtcDateTime(), nullable=False),
    *_record_columns(),
)

quotas = Table(
    "quotas",
    metadata,
    _key("source"),
    _key("rep_id"),
    Column("period_start", Date(), primary_key=True),
    Column("period_end", Date(), primary_key=True),
    Column("amount", ExactDecimal(), nullable=False),
    Column("quota_source", String(), nullable=False),
)

source_metadata = Table(
    "source_metadata",
    metadata,
    _key("source"),
    _key("key"),
    Column("value", Text(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

exclusions = Table(
    "exclusions",
    metadata,
    _key("source"),
    _key("record_type"),
    _key("record_id"),
    _key("reason"),
    Column("detail", Text(), nullable=False),
    Column("recorded_at", UtcDateTime(), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("as_of", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("status", String(), nullable=False),
    Column("options", Text(), nullable=False),
    Column("report", Text()),
    # The process that ran it and its sources (JSON list): a run left "running" by a dead
    # process is recognised by them and marked "interrupted".
    Column("pid", Integer()),
    Column("host", String()),
    Column("sources", Text()),
)

#: The records each run planned to write and what became of each (written, failed with the
#: CRM's reason, or only planned), per source and object, in chunks of the writer's: ``body``
#: is zlib-compressed JSON (see ``run_records``), a few bytes per record.
run_records = Table(
    "run_records",
    metadata,
    Column("run_id", Integer(), ForeignKey("runs.id"), primary_key=True),
    Column("source", String(), primary_key=True),
    Column("object", String(), primary_key=True),
    Column("seq", Integer(), primary_key=True),
    Column("records", Integer(), nullable=False),
    Column("body", LargeBinary(), nullable=False),
)

#: Who holds the run lock of each source (SQLite: the lease itself; PostgreSQL: who holds
#: the advisory lock). See ``locks``.
run_locks = Table(
    "run_locks",
    metadata,
    Column("source", String(), primary_key=True),
    Column("token", String(), nullable=False),
    Column("pid", Integer(), nullable=False),
    Column("host", String(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

#: The key of a KPI value (kpi_values' primary key).
KPI_KEY = ("source", "scope", "subject", "period_kind", "period_key", "kpi")

kpi_values = Table(
    "kpi_values",
    metadata,
    *(_key(name) for name in KPI_KEY),
    Column("value", ExactDecimal()),
    # The run that set this value (values unchanged by later runs keep their run).
    Column("run_id", Integer(), ForeignKey("runs.id"), nullable=False),
    Column("changed_at", UtcDateTime(), nullable=False),
)

kpi_history = Table(
    "kpi_history",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    *(Column(name, String(), nullable=False) for name in KPI_KEY),
    Column("value", ExactDecimal()),
    Column("run_id", Integer(), ForeignKey("runs.id"), nullable=False),
    Column("recorded_at", UtcDateTime(), nullable=False),
    Index("ix_kpi_history_subject", "source", "scope", "subject", "kpi"),
)

forecast_snapshots = Table(
    "forecast_snapshots",
    metadata,
    _key("source"),
    _key("subject"),
    _key("period_key"),
    Column("commit_value", ExactDecimal(), nullable=False),
    Column("taken_on", Date(), nullable=False),
)

written_values = Table(
    "written_values",
    metadata,
    _key("source"),
    _key("object"),
    _key("record_key"),
    _key("field"),
    Column("value_kind", String(), nullable=False),
    Column("value_text", Text()),
    Column("written_at", UtcDateTime(), nullable=False),
)

#: Per record of a stream the worker writes to, the digest of its content as last pulled
#: (stamps and the worker's own fields left out): an unchanged digest skips normalization.
pulled_digests = Table(
    "pulled_digests",
    metadata,
    _key("source"),
    _key("stream"),
    _key("record_id"),
    Column("digest", String(), nullable=False),
)

# ---- The KPI frames' compact copy (see ``frame_copy``): what the frames read of each live
# deal and activity, as fixed-width binary (``frame_codec``), texts as numbers per family.

#: Per source and family (``owner``, ``account``, ``stage``, ``deal_type``,
#: ``forecast_category``): the number standing for each text in the compact rows.
frame_texts = Table(
    "frame_texts",
    metadata,
    _key("source"),
    _key("family"),
    Column("code", Integer(), primary_key=True, autoincrement=False),
    Column("text", String(), nullable=False),
    Index("ux_frame_texts_text", "source", "family", "text", unique=True),
)

#: One row per live deal (``frame_codec.DEAL_HEAD`` and its histories). SQLite keeps it in
#: id order (no rowid): the frames read it in ranges of ids, and need not sort it.
frame_deals = Table(
    "frame_deals",
    metadata,
    _key("source"),
    _key("id"),
    Column("row", LargeBinary(), nullable=False),
    sqlite_with_rowid=False,
)

#: The churn date (a day number, as ``frame_codec``'s) of every live account that has one,
#: by the account's number (family ``account``): the frames' Accounts frame, without a join.
frame_accounts = Table(
    "frame_accounts",
    metadata,
    _key("source"),
    Column("code", Integer(), primary_key=True, autoincrement=False),
    Column("churn_date", Integer(), nullable=False),
    sqlite_with_rowid=False,
)

#: One row per live activity (``frame_codec.ACTIVITY_ROW``).
frame_activities = Table(
    "frame_activities",
    metadata,
    _key("source"),
    _key("id"),
    Column("kind", String(), nullable=False),
    Column("row", LargeBinary(), nullable=False),
    sqlite_with_rowid=False,
)

#: Sources whose compact copy must be built again from their pulled rows (a migration that
#: adds or changes it lists them); the store does it when it opens, before anything reads it.
frame_rebuilds = Table("frame_rebuilds", metadata, _key("source"))

#: Pulled record tables by record kind: the kinds of StoredPage.deleted/seen_ids and of
#: Exclusion.record_type.
RECORD_TABLES: dict[str, Table] = {
    "rep": reps,
    "account": accounts,
    "deal": deals,
    "activity": activities,
}


# ---------------------------------------------------------------------------------------------
# History codecs. Tab-separated text: stages are [a-z0-9_] keys, dates and instants are ISO
# text, so no field ever holds a tab. Reading a million deals splits one joined string instead
# of parsing a million JSON documents (the JSON version measured 3x slower).

SEP = "\t"


def encode_stage_history(deal_id: str, changes: Iterable[StageChange]) -> str:
    """``stage\\tentered_at\\tstage\\tentered_at...``, oldest first."""
    ordered = sorted(changes, key=_ENTERED_AT)
    parts = []
    for change in ordered:
        if change.deal_id != deal_id:
            raise ValueError(f"stage change of deal {change.deal_id!r} given for deal {deal_id!r}")
        parts.append(change.stage)
        parts.append(iso_instant(change.entered_at))
    return SEP.join(parts)


_ENTERED_AT = attrgetter("entered_at")


def encode_close_date_history(deal_id: str, changes: Sequence[FieldChange]) -> str:
    """``old\tnew\tchanged_at...`` for close-date changes, oldest first ('' for no date)."""
    parts = []
    for change in sorted(changes, key=_CHANGED_AT) if len(changes) > 1 else changes:
        if change.deal_id != deal_id:
            raise ValueError(f"field change of deal {change.deal_id!r} given for deal {deal_id!r}")
        parts.append(_date_text(deal_id, change.old_value))
        parts.append(_date_text(deal_id, change.new_value))
        parts.append(iso_instant(change.changed_at))
    return SEP.join(parts)


_CHANGED_AT = attrgetter("changed_at")


def _date_text(deal_id: str, value: Any) -> str:
    if value is None:
        return ""
    if type(value) is dt.date or (
        isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    ):
        return value.isoformat()
    raise ValueError(
        f"close_date change of deal {deal_id} holds {value!r}; expected a date or None"
    )


def encode_field_history(deal_id: str, changes: Sequence[FieldChange]) -> str:
    """Changes of fields other than the close date, as typed JSON (rare; never on hot paths)."""
    rows = []
    for change in sorted(changes, key=lambda change: change.changed_at):
        if change.deal_id != deal_id:
            raise ValueError(f"field change of deal {change.deal_id!r} given for deal {deal_id!r}")
        rows.append([change.field, change.old_value, change.new_value, change.changed_at])
    return encode_json(rows)


def split_history(texts: Sequence[str | None], width: int) -> tuple[list[int], list[str]]:
    """Entry counts per deal and the flat list of fields of every entry, in deal order.

    ``width`` is the number of fields per entry (2 for stages, 3 for close dates).
    """
    counts = [(text.count(SEP) + 1) // width if text else 0 for text in texts]
    present = [text for text in texts if text]
    return counts, (SEP.join(present).split(SEP) if present else [])


# ---------------------------------------------------------------------------------------------
# Typed JSON: metadata blobs, run options/reports, other field history. Decimal, date and
# datetime survive a round trip as themselves.

_TAGS = ("$decimal", "$date", "$datetime")


def _encode_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"$datetime": iso_instant(value)}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able: {value!r:.80}")


def _decode_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((tag, text),) = obj.items()
        if tag == "$decimal":
            return Decimal(text)
        if tag == "$datetime":
            return dt.datetime.fromisoformat(text)
        if tag == "$date":
            return dt.date.fromisoformat(text)
    return obj


def encode_json(value: Any) -> str:
    return json.dumps(value, default=_encode_default, separators=(",", ":"), allow_nan=False)


def decode_json(text: str) -> Any:
    return json.loads(text, object_hook=_decode_hook)


# ---------------------------------------------------------------------------------------------
# Scalar codec of written values: (kind, text), cheap to read back in bulk.


def encode_scalar(value: Any) -> tuple[str, str | None]:
    if value is None:
        return "null", None
    if isinstance(value, bool):
        return "bool", "1" if value else "0"
    if isinstance(value, int):
        return "int", str(value)
    if isinstance(value, Decimal):
        return "decimal", str(value)
    if isinstance(value, float):
        return "float", repr(value)
    if isinstance(value, str):
        return "str", value
    if isinstance(value, dt.datetime):
        return "datetime", iso_instant(value)
    if isinstance(value, dt.date):
        return "date", value.isoformat()
    return "json", encode_json(value)


_SCALAR_DECODERS: dict[str, Any] = {
    "null": lambda text: None,
    "bool": lambda text: text == "1",
    "int": int,
    "decimal": Decimal,
    "float": float,
    "str": str,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "json": decode_json,
}


def decode_scalar(kind: str, text: str | None) -> Any:
    return _SCALAR_DECODERS[kind](text)
