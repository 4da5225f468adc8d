"""CSV as Bulk API 2.0 writes and reads it.

Query results: a header row of the selected fields (a parent field as a dotted name,
``Owner.Name``), then one row per record with every value double-quoted (``""`` inside) and a
null as an empty, unquoted cell; dates ``2024-03-31``, datetimes ``2024-03-31T17:05:00.000Z``,
booleans ``true``/``false``. :class:`QueryCsv` renders any slice of a query's rows on demand
from the org's column store, a column at a time, so a page of 50,000 rows costs a few numpy
operations per column and no result is ever held whole in memory.

Ingest data: the uploaded CSV, read with the job's column delimiter and line ending
(:func:`read_csv`); the ingest results quote every value as the query results do.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox.salesforce import engine
from crm_kpi_worker.sandbox.salesforce.ids import id_codes
from crm_kpi_worker.sandbox.salesforce.store import (
    Column,
    ReferenceColumn,
    StringColumn,
    Table,
)

__all__ = [
    "COLUMN_DELIMITERS",
    "LINE_ENDINGS",
    "CsvDialect",
    "QueryCsv",
    "quote",
    "read_csv",
]

#: The job properties' values and the characters they stand for.
COLUMN_DELIMITERS = {
    "BACKQUOTE": "`",
    "CARET": "^",
    "COMMA": ",",
    "PIPE": "|",
    "SEMICOLON": ";",
    "TAB": "\t",
}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}

#: Rows rendered at a time when a page is streamed.
RENDER_CHUNK_ROWS = 10_000
#: Rows rendered to measure a result's size (its share of the daily result storage).
SIZE_SAMPLE_ROWS = 1_000

_QUOTE = ord('"')


@dataclass(frozen=True)
class CsvDialect:
    """A job's ``columnDelimiter`` and ``lineEnding``, as characters and bytes."""

    delimiter: str
    line_ending: str

    @classmethod
    def of(cls, column_delimiter: str, line_ending: str) -> CsvDialect:
        return cls(COLUMN_DELIMITERS[column_delimiter], LINE_ENDINGS[line_ending])

    @property
    def delimiter_bytes(self) -> bytes:
        return self.delimiter.encode()

    @property
    def line_ending_bytes(self) -> bytes:
        return self.line_ending.encode()

    def line(self, cells: Sequence[bytes]) -> bytes:
        return self.delimiter_bytes.join(cells) + self.line_ending_bytes


def quote(value: str) -> bytes:
    """One non-null cell: UTF-8, double-quoted, inner quotes doubled."""
    return b'"' + value.encode("utf-8").replace(b'"', b'""') + b'"'


def format_value(value: Any) -> bytes:
    """A JSON value of the REST API as a cell: null empty, booleans ``true``/``false``."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b'"true"' if value else b'"false"'
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int | float):
        return quote(repr(value))
    return quote(json.dumps(value, separators=(",", ":")))


# ---- query results ---------------------------------------------------------------------------


class QueryCsv:
    """The CSV of one query's rows (``result.rows``, fixed when the job completed), rendered
    on demand; values are read when rendered, as a REST query's later pages are."""

    def __init__(
        self,
        result: engine.QueryResult,
        dialect: CsvDialect,
        version: str,
        lock: threading.RLock,
    ) -> None:
        self.result = result
        self.dialect = dialect
        self.version = version  # the API version computed items are rendered for
        self._lock = lock  # the org's: columns grow and change under it

    @property
    def total(self) -> int:
        return len(self.result.rows)

    def header(self) -> bytes:
        names = [".".join([*o.nest, o.key]) for o in self.result.plan.outputs]
        return self.dialect.line([quote(n) for n in names])

    def render(self, start: int, stop: int) -> bytes:
        """The lines of rows ``[start, stop)`` of the result."""
        rows = self.result.rows[start:stop]
        if not len(rows):
            return b""
        plan = self.result.plan
        with self._lock:
            columns = [_cells(output, rows, plan, self.version) for output in plan.outputs]
        delimiter, ending = self.dialect.delimiter_bytes, self.dialect.line_ending_bytes
        return ending.join(map(delimiter.join, zip(*columns, strict=True))) + ending

    def page(self, start: int, stop: int) -> Iterator[bytes]:
        """The header, then rows ``[start, stop)`` a chunk at a time (a streamed body)."""
        yield self.header()
        for chunk in range(start, stop, RENDER_CHUNK_ROWS):
            yield self.render(chunk, min(chunk + RENDER_CHUNK_ROWS, stop))

    def size(self) -> int:
        """The bytes of the whole result (header and rows): exact up to SIZE_SAMPLE_ROWS
        rows, else measured on that many rows spread evenly over the result (rendering a
        million rows only to count them would double the work of serving them)."""
        total = self.total
        if total <= SIZE_SAMPLE_ROWS:
            return len(self.header()) + len(self.render(0, total))
        positions = np.linspace(0, total - 1, SIZE_SAMPLE_ROWS).astype(np.int64)
        sample = engine.QueryResult(self.result.plan, self.result.rows[positions], SIZE_SAMPLE_ROWS)
        measured = len(
            QueryCsv(sample, self.dialect, self.version, self._lock).render(0, SIZE_SAMPLE_ROWS)
        )
        return len(self.header()) + round(measured * total / SIZE_SAMPLE_ROWS)


def _cells(output: engine.Output, rows: np.ndarray, plan: engine.Plan, version: str) -> list[bytes]:
    """One selected item's cells for ``rows``: read from its column a vector at a time when
    it is a stored field, else formatted from the REST values (convertCurrency...)."""
    accessor = output.accessor
    if accessor is None:
        return [format_value(v) for v in output.render(rows, version)]
    target, missing = accessor.target_rows(rows)
    owner = accessor.hops[-1][1] if accessor.hops else plan.table
    cells = _column_cells(accessor.column, target, owner)
    cells[missing] = b""
    return list(cells.tolist())


def _column_cells(column: Column, rows: np.ndarray, owner: Table) -> np.ndarray:
    """Cells (an object array of bytes) of ``column`` at ``rows`` of ``owner``."""
    kind = column.kind
    if kind == "string" and isinstance(column, StringColumn):
        return _string_cells(column, rows)
    if kind in {"id", "reference", "bool", "date", "datetime"}:
        values, null = column.vector(rows)
        values = np.where(null, 0, values)
        if kind == "bool":
            return _with_nulls(np.where(values, b'"true"', b'"false"').astype(object), null)
        if kind == "date":
            text = np.datetime_as_string(values.astype("datetime64[D]"), unit="D")
            return _quoted(text.astype("S10"), null)
        if kind == "datetime":
            text = np.datetime_as_string(values.astype("datetime64[ms]"), unit="ms")
            return _quoted(text.astype("S23"), null, suffix=b"Z")
        prefix = (
            column.target_prefix
            if isinstance(column, ReferenceColumn)
            else owner.sobject.key_prefix
        )
        return _quoted(id_codes(prefix, values).view("S18").ravel(), null)
    return np.array([format_value(v) for v in column.to_json(rows)], dtype=object)


def _string_cells(column: StringColumn, rows: np.ndarray) -> np.ndarray:
    """Quote each distinct value of the page once: picklists have a handful, names one each."""
    codes = column.codes[rows]
    distinct, position = np.unique(codes, return_inverse=True)
    categories = column.categories
    quoted = [b"" if code < 0 else quote(categories[code]) for code in distinct.tolist()]
    return np.array(quoted, dtype=object)[position]


def _quoted(text: np.ndarray, null: np.ndarray, suffix: bytes = b"") -> np.ndarray:
    """Cells from fixed-width ASCII values (an ``S<width>`` array), each followed by
    ``suffix`` and double-quoted; null rows empty."""
    width = text.dtype.itemsize
    framed = np.full((len(text), width + len(suffix) + 2), _QUOTE, dtype=np.uint8)
    framed[:, 1 : width + 1] = text.view(np.uint8).reshape(len(text), width)
    if suffix:
        framed[:, width + 1 : -1] = np.frombuffer(suffix, dtype=np.uint8)
    return _with_nulls(framed.view(f"S{framed.shape[1]}").ravel().astype(object), null)


def _with_nulls(cells: np.ndarray, null: np.ndarray) -> np.ndarray:
    cells[null] = b""
    return cells


# ---- ingest data -----------------------------------------------------------------------------


def read_csv(text: str, dialect: CsvDialect) -> Iterator[list[str]]:
    """The rows of uploaded CSV (header first), read as Salesforce reads them: the job's
    delimiter, double quotes around values that hold it, a quote or a line break."""
    return csv.reader(io.StringIO(text, newline=""), delimiter=dialect.delimiter)
