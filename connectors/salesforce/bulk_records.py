"""Bulk CSV rows made into the records the REST API answers, and the deals' children joined.

A Bulk query answers CSV: every value is text and an empty value is null. The normalizers read
REST's JSON records, so each column is converted by the type describe gives its field
(``boolean`` -> bool, ``int`` -> int, ``double``/``currency``/``percent`` -> float, the rest
text), and a dotted column (``Account.Churn_Date__c``) becomes a nested record as REST nests
relationship fields (``None`` when every one of its columns is empty, as REST sends ``null``).
A page is converted column by column (one list comprehension per column, then one ``dict`` per
row): a million deals are tens of millions of values.

:class:`ChildSpool` keeps the rows of the deals' history queries (millions at 1M deals) in a
temporary SQLite file, so the deals are joined page by page without holding any whole result in
memory. The rows go in as they arrive (each a JSON array of its fields); before the first join
they are grouped into one row per parent (its rows per relationship, one JSON array each), in
parent order, so a page of deals reads a few thousand neighbouring rows instead of seeking each
history row. The file is deleted when the spool is closed.

Digests. A Bulk record's digest (``connectors.base.Page.digests``: did anything the worker
reads change since the last pull?) is taken over its CSV cells, the worker's own fields and the
modification stamps left out, and its children's rows in a fixed order: the same content gives
the same digest on every Bulk pull, without encoding the converted record again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, NamedTuple

from crm_kpi_worker.connectors.base import text_digest

__all__ = ["ChildRows", "ChildSpool", "Children", "RecordMaker", "child_records", "converter_for"]

Describe = Callable[[str], list[dict[str, Any]] | None]
Convert = Callable[[str], Any]
#: parent id -> relationship -> its rows (see :class:`Children`)
ChildRows = dict[str, dict[str, "Children"]]

_TRUE = {"true": True, "false": False}


def _bool(text: str) -> Any:
    return _TRUE.get(text.lower(), text)


def _int(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return _float(text)


def _float(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text  # left as text: the normalizer reports it as it would any bad value


def _text(text: str) -> Any:
    return text


_BY_TYPE: dict[str, Convert] = {
    "boolean": _bool,
    "int": _int,
    "long": _int,
    "double": _float,
    "currency": _float,
    "percent": _float,
}


def converter_for(field_type: str | None) -> Convert:
    """How a CSV value of a field of describe type ``field_type`` becomes its JSON value."""
    return _BY_TYPE.get(field_type or "", _text)


def _converted(column: Sequence[str], convert: Convert) -> list[Any]:
    """One column's values as JSON values (an empty cell is null)."""
    if convert is _text:
        return [value if value != "" else None for value in column]
    return [convert(value) if value != "" else None for value in column]


#: A record's keys in order: each a column's index, or a nested record's (name, layout).
Layout = list[tuple[str, "int | Layout"]]


class RecordMaker:
    """Turns the rows of one query's CSV into REST-shaped records (see the module doc)."""

    def __init__(
        self,
        sobject: str,
        header: Sequence[str],
        describe: Describe,
        *,
        types: dict[str, str] | None = None,
    ) -> None:
        self.sobject = sobject
        self.header = list(header)
        self._describe = describe
        #: Column -> describe type, for columns that are no field (aliases).
        self._known = {name.lower(): kind for name, kind in (types or {}).items()}
        self._types: dict[str, dict[str, Any]] = {}
        self.plan = [self._column(name) for name in self.header]
        self._layout = _layout([path for path, _ in self.plan])

    def _fields(self, sobject: str) -> dict[str, Any]:
        key = sobject.lower()
        if key not in self._types:
            described = self._describe(sobject) or []
            self._types[key] = {str(f.get("name", "")).lower(): f for f in described}
        return self._types[key]

    def _column(self, name: str) -> tuple[tuple[str, ...], Convert]:
        path = tuple(name.split("."))
        if name.lower() in self._known:
            return path, converter_for(self._known[name.lower()])
        sobject = self.sobject
        for relationship in path[:-1]:
            target = next(
                (
                    f
                    for f in self._fields(sobject).values()
                    if str(f.get("relationshipName") or "").lower() == relationship.lower()
                ),
                None,
            )
            references = (target or {}).get("referenceTo") or []
            if not references:
                return path, _text
            sobject = str(references[0])
        field = self._fields(sobject).get(path[-1].lower())
        return path, converter_for(field.get("type") if field else None)

    def records(self, rows: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """The rows as records; a row with fewer cells than the header has nulls for the
        missing ones, cells past the header are ignored."""
        if not rows:
            return []
        fitted = _fitted(rows, len(self.header))
        columns = [
            _converted(column, convert)
            for column, (_, convert) in zip(zip(*fitted, strict=True), self.plan, strict=True)
        ]
        names, values = _assembled(self._layout, columns)
        return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]

    def digests(
        self,
        ids: Sequence[str],
        rows: Sequence[Sequence[str]],
        children: ChildRows,
        leave_out: Collection[str],
    ) -> list[tuple[str, str]]:
        """(id, digest) per row: its cells but the ``leave_out`` columns, and its children's
        rows as JSON (sorted: Bulk results come in no fixed order). Cells are joined with
        the unit separator, which no Salesforce value holds (the API's XML forbids it)."""
        skipped = {name.lower() for name in leave_out}
        kept = [i for i, name in enumerate(self.header) if name.lower() not in skipped]
        width = len(self.header)
        none: dict[str, Children] = {}
        found = []
        for record_id, row in zip(ids, rows, strict=True):
            cells = [row[i] for i in kept] if len(row) == width else _cells(row, kept)
            text = "\x1f".join(cells)
            mine = children.get(record_id, none)
            if mine:
                text += "".join(f"\x1d{name}\x1d{mine[name].text}" for name in sorted(mine))
            found.append((record_id, text_digest(text)))
        return found


def _cells(row: Sequence[str], kept: list[int]) -> list[str]:
    return [row[i] if i < len(row) else "" for i in kept]


def _fitted(rows: Sequence[Sequence[str]], width: int) -> Sequence[Sequence[str]]:
    """``rows`` cut or padded (empty cells) to ``width`` cells, where they are not already."""
    if all(length == width for length in set(map(len, rows))):
        return rows
    return [
        row if len(row) == width else [*row[:width], *([""] * (width - len(row)))] for row in rows
    ]


def _layout(paths: Sequence[tuple[str, ...]]) -> Layout:
    """The record's key order as REST gives it: a relationship at its first column."""
    layout: Layout = []
    nested: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    for index, path in enumerate(paths):
        if len(path) == 1:
            layout.append((path[0], index))
            continue
        if path[0] not in nested:
            nested[path[0]] = []
            layout.append((path[0], []))
        nested[path[0]].append((path[1:], index))
    return [
        (name, part if isinstance(part, int) else _nested_layout(nested[name]))
        for name, part in layout
    ]


def _nested_layout(columns: list[tuple[tuple[str, ...], int]]) -> Layout:
    inner = _layout([path for path, _ in columns])
    indexes = [index for _, index in columns]
    return _renumbered(inner, indexes)


def _renumbered(layout: Layout, indexes: list[int]) -> Layout:
    return [
        (name, indexes[part] if isinstance(part, int) else _renumbered(part, indexes))
        for name, part in layout
    ]


def _assembled(layout: Layout, columns: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """The keys of a layout and their values column by column (a nested record's column holds
    dicts, or None where every one of its values is null: REST's ``"Account": null``)."""
    names: list[str] = []
    values: list[list[Any]] = []
    for name, part in layout:
        names.append(name)
        if isinstance(part, int):
            values.append(columns[part])
            continue
        inner_names, inner = _assembled(part, columns)
        values.append(
            [
                dict(zip(inner_names, row, strict=True))
                if any(v is not None for v in row)
                else None
                for row in zip(*inner, strict=True)
            ]
        )
    return names, values


def child_records(
    rows: list[list[str]], names: Sequence[str], converts: Sequence[Convert]
) -> dict[str, Any] | None:
    """A relationship's rows (``names``: their fields) as REST answers a subquery:
    ``{"totalSize", "done", "records"}``; None without rows (REST's answer then)."""
    if not rows:
        return None
    if all(convert is _text for convert in converts):
        records = [
            dict(zip(names, row if "" not in row else _nulled(row), strict=False)) for row in rows
        ]
    else:
        records = [
            {
                name: (convert(value) if value != "" else None)
                for name, convert, value in zip(names, converts, row, strict=False)
            }
            for row in rows
        ]
    return {"totalSize": len(records), "done": True, "records": records}


def _nulled(row: list[str]) -> list[str | None]:
    return [value if value != "" else None for value in row]


class Children(NamedTuple):
    """One parent's rows of one relationship: each a list of its cells in the spool's field
    order (:meth:`ChildSpool.fields`), sorted; and the same rows as JSON (its digest's part)."""

    rows: list[list[str]]
    text: str


class ChildSpool:
    """Rows of child relationships, by parent id, in a temporary SQLite file (module doc).

    A relationship's rows are kept with CreatedDate first (when the child has it), so sorting
    them whole sorts them by date, then by every other cell: one fixed order."""

    def __init__(self, directory: str | None = None) -> None:
        handle, self.path = tempfile.mkstemp(
            prefix="crm-kpi-bulk-", suffix=".sqlite", dir=directory
        )
        os.close(handle)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE child (parent TEXT NOT NULL, relationship INT, row TEXT)")
        self._relationships: list[str] = []
        #: relationship -> its header's positions (1-based, the parent's is 1) in kept order
        self._positions: dict[str, list[int]] = {}
        self._fields: dict[str, list[str]] = {}
        self._grouped = False

    def fields(self, relationship: str) -> list[str]:
        """The relationship's field names in the order its rows are kept and joined."""
        return self._fields[relationship]

    def add(self, relationship: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> int:
        """Keep ``rows`` (their first column is the parent id)."""
        if self._grouped:
            raise RuntimeError("rows cannot be added to a spool already joined from")
        if relationship not in self._relationships:
            self._relationships.append(relationship)
            names = [name.lower() for name in header]
            positions = list(range(2, len(header) + 1))
            if "createddate" in names[1:]:
                created = names.index("createddate", 1) + 1
                positions.remove(created)
                positions.insert(0, created)
            self._positions[relationship] = positions
            self._fields[relationship] = [header[p - 1] for p in positions]
        number = self._relationships.index(relationship)
        # SQLite makes each row's JSON array: no Python work per row.
        cells = ", ".join(f"?{p}" for p in self._positions[relationship])
        insert = f"INSERT INTO child VALUES (?1, {number}, json_array({cells}))"  # noqa: S608
        fitted = _fitted(rows if isinstance(rows, list) else list(rows), len(header))
        before = self._db.total_changes
        self._db.executemany(insert, fitted)
        return self._db.total_changes - before

    def _group(self) -> None:
        """One row per parent, in parent order (see the module doc); its rows sorted (the
        sort in Python is then one pass)."""
        count = len(self._relationships)
        columns = ", ".join(f"r{n} TEXT" for n in range(count))
        arrays = ", ".join(
            f"'[' || group_concat(CASE relationship WHEN {n} THEN row END, ',') || ']'"
            for n in range(count)
        )
        self._db.execute(f"CREATE TABLE grouped (parent TEXT PRIMARY KEY, {columns}) WITHOUT ROWID")
        self._db.execute(
            f"INSERT INTO grouped SELECT parent, {arrays} FROM"  # noqa: S608
            " (SELECT * FROM child ORDER BY parent, relationship, row) GROUP BY parent"
        )
        self._db.execute("DROP TABLE child")
        self._grouped = True

    def children(self, parent_ids: Sequence[str]) -> ChildRows:
        """parent id -> relationship -> its rows, sorted (by CreatedDate, then whole)."""
        if not self._relationships:
            return {}
        if not self._grouped:
            self._group()
        relationships = self._relationships
        columns = ", ".join(f"r{n}" for n in range(len(relationships)))
        loads, dumps = json.loads, json.dumps
        found: ChildRows = {}
        for start in range(0, len(parent_ids), 900):
            chunk = parent_ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT parent, {columns} FROM grouped WHERE parent IN ({marks})"  # noqa: S608
            for parent, *arrays in self._db.execute(query, chunk):
                mine: dict[str, Children] = {}
                for name, text in zip(relationships, arrays, strict=True):
                    if text is None:
                        continue
                    rows: list[list[str]] = loads(text)
                    ordered = sorted(rows)
                    if ordered != rows:  # SQLite's order is not guaranteed: this one is
                        rows, text = ordered, dumps(ordered, separators=(",", ":"))
                    mine[name] = Children(rows, text)
                found[parent] = mine
        return found

    def close(self) -> None:
        self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> ChildSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
