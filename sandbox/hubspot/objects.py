"""The portal's column store: one column per property of an object type (numpy arrays, built
from the data set's columns without a Python loop per record), and the object store holding an
object type's columns, definitions, archive stamps, written history and associations.

A column answers what search and rendering need: ``render(rows)`` (wire text), ``keys()``
(float64 comparable values, nan = none) for numeric properties, ``text_mask(predicate)`` for
the others, and ``set(rows, value)`` for writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox.columns import days_to_iso
from crm_kpi_worker.sandbox.hubspot.formats import (
    DAY_MS,
    NULL_DAY,
    NULL_MS,
    format_number,
    iso_ms,
    iso_seconds,
    parse_datetime_ms,
    stamp,
)
from crm_kpi_worker.sandbox.hubspot.properties import GroupDef, PropertyDef


class Column:
    """One property's values for every row of an object type."""

    numeric = True  # search compares keys() (float64, nan = no value); else text_mask()
    writable = True

    def render(self, rows: np.ndarray) -> list[str | None]:
        raise NotImplementedError

    def keys(self) -> np.ndarray:
        raise NotImplementedError

    def parse_filter(self, text: str) -> float:
        return float(text)

    def text_mask(self, predicate: Callable[[str | None], bool]) -> np.ndarray:
        raise NotImplementedError

    def set(self, rows: np.ndarray, value: Any) -> None:
        raise NotImplementedError

    def grow(self, n: int) -> None:
        """Room for ``n`` new rows (no value)."""


class ArrayColumn(Column):
    null: Any = None
    dtype: Any = object

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def grow(self, n: int) -> None:
        self.values = np.concatenate([self.values, np.full(n, self.null, dtype=self.dtype)])

    def set(self, rows: np.ndarray, value: Any) -> None:
        self.values[rows] = self.null if value is None else value


class MsColumn(ArrayColumn):
    null = NULL_MS
    dtype = np.int64

    def __init__(self, values: np.ndarray, *, seconds: bool = False) -> None:
        super().__init__(np.asarray(values, dtype=np.int64))
        self.seconds = seconds

    def render(self, rows: np.ndarray) -> list[str | None]:
        values = self.values[rows]
        return iso_seconds(values) if self.seconds else iso_ms(values)

    def keys(self) -> np.ndarray:
        values = self.values
        return np.where(values == NULL_MS, np.nan, values.astype(np.float64))

    def parse_filter(self, text: str) -> float:
        return float(parse_datetime_ms(text))


class DayColumn(ArrayColumn):
    null = NULL_DAY
    dtype = np.int32

    def render(self, rows: np.ndarray) -> list[str | None]:
        return days_to_iso(self.values[rows], NULL_DAY)

    def keys(self) -> np.ndarray:
        values = self.values
        return np.where(values == NULL_DAY, np.nan, values.astype(np.float64) * DAY_MS)

    def parse_filter(self, text: str) -> float:
        return float(parse_datetime_ms(text))


class NumberColumn(ArrayColumn):
    null = np.nan
    dtype = np.float64

    def render(self, rows: np.ndarray) -> list[str | None]:
        return [format_number(v) for v in self.values[rows].tolist()]

    def keys(self) -> np.ndarray:
        return self.values


class RefColumn(ArrayColumn):
    """Row indexes into another id space (owners, companies), rendered as their ids."""

    null = -1
    dtype = np.int32

    def __init__(self, rows: np.ndarray, id_base: int, size: Callable[[], int]) -> None:
        super().__init__(np.asarray(rows, dtype=np.int32))
        self.id_base = id_base
        self.size = size

    def render(self, rows: np.ndarray) -> list[str | None]:
        return [None if r < 0 else str(self.id_base + r + 1) for r in self.values[rows].tolist()]

    def keys(self) -> np.ndarray:
        values = self.values
        return np.where(values < 0, np.nan, values.astype(np.float64) + self.id_base + 1)

    def row_of(self, text: str) -> int | None:
        if not re.fullmatch(r"\d+", text.strip()):
            return None
        row = int(text) - self.id_base - 1
        return row if 0 <= row < self.size() else None

    def set(self, rows: np.ndarray, value: Any) -> None:
        self.values[rows] = -1 if value is None else self.row_of(str(value))


class CodeColumn(ArrayColumn):
    """Small-integer codes into a list of values (stage ids, currencies, types); -1: none."""

    numeric = False
    null = -1
    dtype = np.int16

    def __init__(self, codes: np.ndarray, labels: list[str]) -> None:
        super().__init__(np.asarray(codes, dtype=np.int16))
        self.labels = list(labels)

    def render(self, rows: np.ndarray) -> list[str | None]:
        labels = self.labels
        return [None if c < 0 else labels[c] for c in self.values[rows].tolist()]

    def text_mask(self, predicate: Callable[[str | None], bool]) -> np.ndarray:
        hits = [i for i, label in enumerate(self.labels) if predicate(label)]
        mask = np.isin(self.values, np.array(hits, dtype=np.int16))
        if predicate(None):
            mask |= self.values < 0
        return mask

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        if value not in self.labels:
            self.labels.append(value)
        return self.labels.index(value)

    def set(self, rows: np.ndarray, value: Any) -> None:
        self.values[rows] = self.code(value)

    def rank_keys(self) -> np.ndarray:
        order = sorted(range(len(self.labels)), key=lambda i: self.labels[i].lower())
        rank = np.empty(len(self.labels) + 1, dtype=np.float64)
        rank[np.array(order, dtype=np.int64)] = np.arange(len(order), dtype=np.float64)
        rank[-1] = np.nan  # code -1
        return rank[self.values]


class TextColumn(ArrayColumn):
    numeric = False

    def __init__(self, values: np.ndarray | None = None, factory: Callable[[], list] | None = None):
        self._values = values
        self._factory = factory

    @property
    def values(self) -> np.ndarray:  # type: ignore[override]
        if self._values is None:
            assert self._factory is not None
            self._values = np.array([*self._factory(), None], dtype=object)[:-1]
        return self._values

    @values.setter
    def values(self, new: np.ndarray) -> None:
        self._values = new

    def render(self, rows: np.ndarray) -> list[str | None]:
        return self.values[rows].tolist()

    def text_mask(self, predicate: Callable[[str | None], bool]) -> np.ndarray:
        return np.fromiter((predicate(v) for v in self.values), dtype=bool, count=len(self.values))

    def rank_keys(self) -> np.ndarray:
        values = self.values
        present = np.array([v is not None for v in values], dtype=bool)
        keys = np.full(len(values), np.nan)
        if present.any():
            lowered = np.array([v.lower() for v in values[present]], dtype=object)
            _, inverse = np.unique(lowered.astype(str), return_inverse=True)
            keys[present] = inverse
        return keys


class IdColumn(Column):
    writable = False

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def render(self, rows: np.ndarray) -> list[str | None]:
        return [str(i) for i in self.store.ids[rows].tolist()]

    def keys(self) -> np.ndarray:
        return self.store.ids.astype(np.float64)


class DerivedColumn(Column):
    """A read-only value computed from other columns (calculated properties)."""

    writable = False

    def __init__(
        self,
        render: Callable[[np.ndarray], list[str | None]],
        keys: Callable[[], np.ndarray] | None = None,
        text_mask: Callable[[Callable[[str | None], bool]], np.ndarray] | None = None,
    ) -> None:
        self._render, self._keys, self._text_mask = render, keys, text_mask
        self.numeric = keys is not None

    def render(self, rows: np.ndarray) -> list[str | None]:
        return self._render(rows)

    def keys(self) -> np.ndarray:
        assert self._keys is not None
        return self._keys()

    def text_mask(self, predicate: Callable[[str | None], bool]) -> np.ndarray:
        assert self._text_mask is not None
        return self._text_mask(predicate)


class AliasColumn(Column):
    """Another name for a column (createdate = hs_createdate); read-only here."""

    writable = False

    def __init__(self, target: Column) -> None:
        self.target = target
        self.numeric = target.numeric

    def render(self, rows: np.ndarray) -> list[str | None]:
        return self.target.render(rows)

    def keys(self) -> np.ndarray:
        return self.target.keys()

    def parse_filter(self, text: str) -> float:
        return self.target.parse_filter(text)

    def text_mask(self, predicate: Callable[[str | None], bool]) -> np.ndarray:
        return self.target.text_mask(predicate)


def column_for(pdef: PropertyDef, size: int) -> Column:
    """An empty column for a property created through the API."""
    if pdef.type == "number":
        return NumberColumn(np.full(size, np.nan))
    if pdef.type == "date":
        return DayColumn(np.full(size, NULL_DAY, dtype=np.int32))
    if pdef.type == "datetime":
        return MsColumn(np.full(size, NULL_MS, dtype=np.int64))
    return TextColumn(np.full(size, None, dtype=object))


History = tuple[str, int, str, str | None, int | None]  # value, ms, sourceType, sourceId, user


@dataclass
class ObjectStore:
    """Every record of one object type, column by column."""

    name: str  # "deals", or a custom object's name
    type_id: str  # "0-3", "2-1"
    id_base: int
    size: int
    primary_property: str
    default_properties: tuple[str, ...]
    singular: str = ""
    plural: str = ""
    fully_qualified_name: str = ""
    custom: bool = False
    columns: dict[str, Column] = field(default_factory=dict)
    properties: dict[str, PropertyDef] = field(default_factory=dict)
    groups: dict[str, GroupDef] = field(default_factory=dict)
    archived_at: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    written: dict[str, dict[int, list[History]]] = field(default_factory=dict)
    base_history: dict[str, Callable[[int], list[History]]] = field(default_factory=dict)
    associations: dict[str, Callable[[int], list[tuple[str, str]]]] = field(default_factory=dict)
    on_write: Callable[[np.ndarray, dict[str, Any], int], None] | None = None
    version: int = 0
    cache: dict[Any, Any] = field(default_factory=dict)
    schema: dict[str, Any] = field(default_factory=dict)  # custom objects: the ObjectSchema bits

    @property
    def ids(self) -> np.ndarray:
        return self.id_base + 1 + np.arange(self.size, dtype=np.int64)

    @property
    def modified(self) -> np.ndarray:
        return self.columns["hs_lastmodifieddate"].values  # type: ignore[attr-defined]

    @property
    def created(self) -> np.ndarray:
        return self.columns["hs_createdate"].values  # type: ignore[attr-defined]

    @property
    def archived(self) -> np.ndarray:
        return self.archived_at != NULL_MS

    def row_of(self, record_id: Any) -> int | None:
        text = str(record_id).strip()
        if not re.fullmatch(r"\d{1,19}", text):
            return None
        row = int(text) - self.id_base - 1
        return row if 0 <= row < self.size else None

    def record_id(self, row: int) -> str:
        return str(self.id_base + 1 + int(row))

    def add(self, pdef: PropertyDef, column: Column) -> None:
        self.properties[pdef.name] = pdef
        self.columns[pdef.name] = column
        if pdef.display_order < 0:
            pdef.display_order = len(self.properties) - 1

    def grow(self, n: int) -> np.ndarray:
        rows = np.arange(self.size, self.size + n)
        for column in self.columns.values():
            column.grow(n)
        self.archived_at = np.concatenate([self.archived_at, np.full(n, NULL_MS)])
        self.size += n
        self.version += 1
        return rows

    def history(self, name: str, row: int) -> list[dict[str, Any]]:
        entries: list[History] = []
        base = self.base_history.get(name)
        if base is not None:
            entries.extend(base(row))
        written = self.written.get(name, {}).get(row, [])
        if base is None and not written:
            value = self.columns[name].render(np.array([row]))[0]
            if value is not None:
                entries.append((value, int(self.created[row]), "CRM_UI", None, None))
        entries.extend(written)
        ordered = sorted(enumerate(entries), key=lambda e: (e[1][1], e[0]), reverse=True)
        out = []
        for _, (value, ms, source, source_id, user) in ordered:
            item: dict[str, Any] = {"value": value, "timestamp": stamp(ms), "sourceType": source}
            if source_id is not None:
                item["sourceId"] = source_id
            if user is not None:
                item["updatedByUserId"] = user
            out.append(item)
        return out


@dataclass
class Owner:
    row: int
    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int
    team: tuple[str, str] | None
    created_ms: int
    archived: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": self.user_id,
            "userIdIncludingInactive": self.user_id,
            "type": "PERSON",
            "teams": (
                [{"id": self.team[0], "name": self.team[1], "primary": True}] if self.team else []
            ),
            "createdAt": stamp(self.created_ms),
            "updatedAt": stamp(self.created_ms),
            "archived": self.archived,
        }
