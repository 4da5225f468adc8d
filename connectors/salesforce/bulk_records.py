"""Bulk CSV rows made into the records the REST API answers, and the deals' children joined.

A Bulk query answers CSV: every value is text and an empty value is null. The normalizers read
REST's JSON records, so each column is converted by the type describe gives its field
(``boolean`` -> bool, ``int`` -> int, ``double``/``currency``/``percent`` -> float, the rest
text), and a dotted column (``Account.Churn_Date__c``) becomes a nested record as REST nests
relationship fields (``None`` when every one of its columns is empty, as REST sends ``null``).

:class:`ChildSpool` keeps the rows of the deals' history queries (millions at 1M deals) in a
temporary SQLite file indexed by the deal id, so the deals are joined page by page without
holding any whole result in memory. The file is deleted when the spool is closed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["ChildSpool", "RecordMaker", "converter_for"]

Describe = Callable[[str], list[dict[str, Any]] | None]
Convert = Callable[[str], Any]

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

    def records(self, rows: Iterable[Sequence[str]]) -> list[dict[str, Any]]:
        flat = all(len(path) == 1 for path, _ in self.plan)
        names = [path[0] for path, _ in self.plan]
        converts = [convert for _, convert in self.plan]
        out: list[dict[str, Any]] = []
        append = out.append
        if flat:
            for row in rows:
                append(
                    {
                        name: (convert(value) if value != "" else None)
                        for name, convert, value in zip(names, converts, row, strict=False)
                    }
                )
            return out
        for row in rows:
            record: dict[str, Any] = {}
            for (path, convert), value in zip(self.plan, row, strict=False):
                _put(record, path, convert(value) if value != "" else None)
            append(_nulls_collapsed(record))
        return out


def _put(record: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        record = record.setdefault(part, {})
    record[path[-1]] = value


def _nulls_collapsed(record: dict[str, Any]) -> dict[str, Any]:
    """Nested records whose every value is null become null (REST's ``"Account": null``)."""
    for key, value in record.items():
        if isinstance(value, dict):
            value = _nulls_collapsed(value)
            record[key] = None if all(v is None for v in value.values()) else value
    return record


class ChildSpool:
    """Rows of child relationships, by parent id, in a temporary SQLite file."""

    def __init__(self, directory: str | None = None) -> None:
        handle, self.path = tempfile.mkstemp(
            prefix="crm-kpi-bulk-", suffix=".sqlite", dir=directory
        )
        os.close(handle)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE child (parent TEXT NOT NULL, relationship TEXT NOT NULL,"
            " a TEXT, b TEXT, c TEXT, d TEXT)"
        )
        self._indexed = False
        self._columns: dict[str, tuple[str, ...]] = {}

    def add(self, relationship: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> int:
        """Keep ``rows`` (their first column is the parent id; at most four more)."""
        fields = tuple(header[1:])
        if len(fields) > 4:
            raise ValueError(f"a child row holds at most 4 fields, not {len(fields)}")
        self._columns[relationship] = fields
        pad = (None,) * (4 - len(fields))
        before = self._db.total_changes
        self._db.executemany(
            "INSERT INTO child VALUES (?, ?, ?, ?, ?, ?)",
            ((row[0], relationship, *row[1:], *pad) for row in rows),
        )
        return self._db.total_changes - before

    def children(
        self, parent_ids: Sequence[str], convert: dict[str, list[Convert]]
    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """parent id -> relationship -> its rows as records (``convert``: each relationship's
        column converters)."""
        if not self._indexed:
            self._db.execute("CREATE INDEX child_parent ON child (parent)")
            self._indexed = True
        found: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for start in range(0, len(parent_ids), 900):
            chunk = parent_ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for parent, relationship, *values in self._db.execute(
                f"SELECT parent, relationship, a, b, c, d FROM child WHERE parent IN ({marks})",  # noqa: S608
                chunk,
            ):
                fields = self._columns[relationship]
                converters = convert[relationship]
                row = {
                    name: (conv(value) if value not in (None, "") else None)
                    for name, conv, value in zip(fields, converters, values, strict=False)
                }
                found.setdefault(parent, {}).setdefault(relationship, []).append(row)
        return found

    def close(self) -> None:
        self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> ChildSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
