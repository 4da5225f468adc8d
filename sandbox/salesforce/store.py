"""The sandbox org's storage: sObject definitions and columnar tables.

Every column is a numpy array (or is computed from other columns), so a million opportunities
take tens of megabytes and a SOQL filter is a handful of vectorised operations. A column gives
the engine three views of the rows it is asked for:

- ``vector(rows)``: comparable values plus a null mask (strings as category codes);
- ``sort_keys(rows)``: numbers that order the rows the way SOQL's ORDER BY does;
- ``to_json(rows)``: the values as the REST API serialises them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox.columns import days_to_iso, grown, ms_to_iso
from crm_kpi_worker.sandbox.salesforce.ids import make_id, parse_id

NULL_DAY = np.iinfo(np.int32).min
NULL_MS = np.iinfo(np.int64).min
EPOCH_DAY = dt.date(1970, 1, 1)

# Salesforce field types, grouped by how the sandbox stores them.
STRING_TYPES = {"string", "picklist", "textarea", "email", "phone", "url", "combobox"}
NUMBER_TYPES = {"double", "currency", "percent", "int"}


class FieldValueError(ValueError):
    """A value that does not fit a field; ``code`` is Salesforce's statusCode for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---- definitions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PicklistValue:
    value: str
    label: str | None = None
    default: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "active": True,
            "defaultValue": self.default,
            "label": self.label or self.value,
            "validFor": None,
            "value": self.value,
        }


@dataclass
class FieldDef:
    name: str
    type: str
    label: str
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    custom: bool = False
    calculated: bool = False
    external_id: bool = False
    unique: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    picklist: tuple[PicklistValue, ...] = ()
    length: int = 0
    precision: int = 0
    scale: int = 0
    help_text: str | None = None
    name_field: bool = False
    default_on_create: Any = None  # value a create gets when it does not set the field
    #: The compound field this one is a component of (BillingCountry: BillingAddress).
    compound_field_name: str | None = None
    #: Salesforce's extra type information (a person's name: ``personname``).
    extra_type_info: str | None = None

    def __post_init__(self) -> None:
        # Salesforce's sizes for a field of the type when its definition gives none.
        if not self.length:
            self.length = _DEFAULT_LENGTHS.get(self.type, 0)
        if not self.precision and self.type in _DEFAULT_PRECISIONS:
            self.precision, self.scale = _DEFAULT_PRECISIONS[self.type]


_DEFAULT_LENGTHS = {
    "string": 255,
    "picklist": 255,
    "combobox": 255,
    "textarea": 255,
    "url": 255,
    "email": 80,
    "phone": 40,
    "anyType": 255,
    "id": 18,
    "reference": 18,
}
_DEFAULT_PRECISIONS = {"currency": (18, 2), "double": (18, 0), "percent": (3, 0)}


@dataclass(frozen=True)
class ChildRelationship:
    name: str  # e.g. OpportunityHistories
    child: str  # child sObject, e.g. OpportunityHistory
    field: str  # the child's reference field, e.g. OpportunityId


@dataclass
class SObjectDef:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    custom: bool = False
    fields: dict[str, FieldDef] = field(default_factory=dict)  # by lower-cased name
    children: dict[str, ChildRelationship] = field(default_factory=dict)  # by lower-cased name
    createable: bool = True
    updateable: bool = True
    hard_delete: bool = False  # deleted for good, no recycle bin (setup objects)
    layoutable: bool | None = None  # see is_layoutable (None: custom objects are)
    mergeable: bool = False  # records can be merged (accounts)
    #: (entity type, parent object) of an object that belongs to another, e.g. a field
    #: history: ("History", "Opportunity").
    associate: tuple[str, str] | None = None

    def add_field(self, definition: FieldDef) -> FieldDef:
        self.fields[definition.name.lower()] = definition
        return definition

    def field(self, name: str) -> FieldDef | None:
        return self.fields.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        lowered = name.lower()
        for definition in self.fields.values():
            if definition.relationship_name and definition.relationship_name.lower() == lowered:
                return definition
        return None

    @property
    def has_is_deleted(self) -> bool:
        return "isdeleted" in self.fields

    @property
    def is_layoutable(self) -> bool:
        """An object users work with in the app (page layouts, search, recent items,
        triggers): the standard ones marked so, and every custom object."""
        return self.custom if self.layoutable is None else self.layoutable


# ---- columns --------------------------------------------------------------------------------


class Column:
    """Base class; ``kind`` tells the engine how to compare and order values."""

    kind = "abstract"
    writable = True

    def __init__(self, definition: FieldDef) -> None:
        self.definition = definition

    def vector(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def sort_keys(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, null = self.vector(rows)
        return values, null

    def to_json(self, rows: np.ndarray) -> list[Any]:
        raise NotImplementedError

    def set(self, row: int, value: Any) -> None:
        raise FieldValueError(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to create/update fields: {self.definition.name}. Please check the security"
            " settings of this field and verify that it is read/write for your profile or"
            " permission set.",
        )

    def ensure(self, size: int) -> None:
        """Make room for ``size`` rows (new rows are null)."""


class ArrayColumn(Column):
    """A stored numpy column; subclasses fix the dtype, the null value and conversions."""

    dtype: Any = np.float64
    null_value: Any = np.nan

    def __init__(self, definition: FieldDef, values: np.ndarray | None = None) -> None:
        super().__init__(definition)
        # No copy: the org owns the data set it renders (a million rows are not duplicated).
        self.data = (
            np.asarray(values, dtype=self.dtype)
            if values is not None
            else np.zeros(0, dtype=self.dtype)
        )

    def ensure(self, size: int) -> None:
        self.data = grown(self.data, size, self.null_value)

    def null_of(self, values: np.ndarray) -> np.ndarray:
        return values == self.null_value

    def vector(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = self.data[rows]
        return values, self.null_of(values)

    def set(self, row: int, value: Any) -> None:
        if not self.writable:
            super().set(row, value)
        self.data[row] = self.null_value if value is None else self.coerce(value)

    def coerce(self, value: Any) -> Any:
        raise NotImplementedError

    def _type_error(self, value: Any) -> FieldValueError:
        expected = self.definition.type
        return FieldValueError(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            f"{self.definition.label}: value not of required type: {value}"
            if not isinstance(value, dict | list)
            else f"{self.definition.label}: value not of required type {expected}",
        )


class NumberColumn(ArrayColumn):
    kind = "number"
    dtype = np.float64
    null_value = np.nan

    def null_of(self, values: np.ndarray) -> np.ndarray:
        return np.isnan(values)

    def coerce(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self._type_error(value)
        try:
            number = float(value)
        except ValueError:
            raise self._type_error(value) from None
        if not math.isfinite(number):
            raise self._type_error(value)
        if self.definition.type == "int" and number != int(number):
            raise self._type_error(value)
        return number

    def to_json(self, rows: np.ndarray) -> list[Any]:
        values = self.data[rows]
        if self.definition.type == "int":
            return [None if math.isnan(v) else int(v) for v in values.tolist()]
        return [None if math.isnan(v) else v for v in values.tolist()]


class BoolColumn(ArrayColumn):
    kind = "bool"
    dtype = np.bool_
    null_value = False

    def null_of(self, values: np.ndarray) -> np.ndarray:
        return np.zeros(len(values), dtype=bool)

    def coerce(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        raise self._type_error(value)

    def to_json(self, rows: np.ndarray) -> list[Any]:
        return self.data[rows].tolist()


class DateColumn(ArrayColumn):
    kind = "date"
    dtype = np.int32
    null_value = NULL_DAY

    def coerce(self, value: Any) -> int:
        if not isinstance(value, str):
            raise self._type_error(value)
        try:
            return (dt.date.fromisoformat(value[:10]) - EPOCH_DAY).days
        except ValueError:
            raise self._type_error(value) from None

    def to_json(self, rows: np.ndarray) -> list[Any]:
        return days_to_json(self.data[rows])


class DateTimeColumn(ArrayColumn):
    kind = "datetime"
    dtype = np.int64
    null_value = NULL_MS

    def coerce(self, value: Any) -> int:
        if not isinstance(value, str):
            raise self._type_error(value)
        try:
            parsed = parse_datetime(value)
        except ValueError:
            raise self._type_error(value) from None
        return int(parsed.timestamp() * 1000)

    def to_json(self, rows: np.ndarray) -> list[Any]:
        return ms_to_json(self.data[rows])


class ReferenceColumn(ArrayColumn):
    """A lookup to one other table, stored as that table's row index (-1 = null)."""

    kind = "reference"
    dtype = np.int32
    null_value = -1

    def __init__(
        self, definition: FieldDef, target_prefix: str, values: np.ndarray | None = None
    ) -> None:
        super().__init__(definition, values)
        self.target_prefix = target_prefix
        self.target_size: Callable[[], int] = lambda: 2**31 - 1

    def coerce(self, value: Any) -> int:
        if not isinstance(value, str):
            raise self._type_error(value)
        try:
            row = parse_id(value, self.target_prefix)
        except ValueError:
            row = None
        if row is None or row >= self.target_size():
            raise FieldValueError(
                "INVALID_CROSS_REFERENCE_KEY",
                f"invalid cross reference id: {value}",
            )
        return row

    def to_json(self, rows: np.ndarray) -> list[Any]:
        prefix = self.target_prefix
        return [None if r < 0 else make_id(prefix, r) for r in self.data[rows].tolist()]


class PolymorphicReferenceColumn(Column):
    """A lookup to one of several tables (Event.WhatId): a table code plus a row index."""

    kind = "polyref"

    def __init__(
        self,
        definition: FieldDef,
        prefixes: Sequence[str],
        codes: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        super().__init__(definition)
        self.prefixes = list(prefixes)
        self.codes = np.asarray(codes if codes is not None else [], dtype=np.int8)
        self.rows = np.asarray(rows if rows is not None else [], dtype=np.int32)

    def ensure(self, size: int) -> None:
        self.codes = grown(self.codes, size, -1)
        self.rows = grown(self.rows, size, -1)

    def vector(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # One comparable integer per value: code * 2**32 + row.
        codes = self.codes[rows].astype(np.int64)
        values = codes * (1 << 32) + self.rows[rows].astype(np.int64)
        return values, codes < 0

    def encode(self, value: str) -> int | None:
        for code, prefix in enumerate(self.prefixes):
            row = parse_id(value, prefix)
            if row is not None:
                return code * (1 << 32) + row
        return None

    def set(self, row: int, value: Any) -> None:
        if value is None:
            self.codes[row], self.rows[row] = -1, -1
            return
        encoded = self.encode(value) if isinstance(value, str) else None
        if encoded is None:
            raise FieldValueError(
                "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}"
            )
        self.codes[row], self.rows[row] = divmod(encoded, 1 << 32)

    def to_json(self, rows: np.ndarray) -> list[Any]:
        return [
            None if code < 0 else make_id(self.prefixes[code], row)
            for code, row in zip(self.codes[rows].tolist(), self.rows[rows].tolist(), strict=True)
        ]


class StringColumn(Column):
    """Strings stored as codes into a category list: picklists, names, emails, free text.

    Comparisons in SOQL are case-insensitive, so the engine compares on categories'
    case-folded forms; order uses the rank of the case-folded category.
    """

    kind = "string"

    def __init__(
        self,
        definition: FieldDef,
        categories: Sequence[str] = (),
        codes: np.ndarray | None = None,
    ) -> None:
        super().__init__(definition)
        self.categories: list[str] = list(categories)
        self.index: dict[str, int] = {value: code for code, value in enumerate(self.categories)}
        self.codes = np.asarray(codes if codes is not None else [], dtype=np.int32)
        self._rank: np.ndarray | None = None

    @classmethod
    def from_values(cls, definition: FieldDef, values: Iterable[str | None]) -> StringColumn:
        column = cls(definition)
        column.codes = np.asarray([column.code_of(v) for v in values], dtype=np.int32)
        return column

    def code_of(self, value: str | None) -> int:
        if value is None:
            return -1
        code = self.index.get(value)
        if code is None:
            code = len(self.categories)
            self.categories.append(value)
            self.index[value] = code
            self._rank = None
        return code

    def ensure(self, size: int) -> None:
        self.codes = grown(self.codes, size, -1)

    def vector(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = self.codes[rows]
        return codes, codes < 0

    def rank(self) -> np.ndarray:
        if self._rank is None or len(self._rank) != len(self.categories):
            order = sorted(range(len(self.categories)), key=lambda c: self.categories[c].casefold())
            rank = np.empty(len(self.categories), dtype=np.int64)
            rank[order] = np.arange(len(order))
            self._rank = rank
        return self._rank

    def sort_keys(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = self.codes[rows]
        null = codes < 0
        keys = np.where(null, 0, self.rank()[np.where(null, 0, codes)] if self.categories else 0)
        return np.asarray(keys, dtype=np.int64), null

    def set(self, row: int, value: Any) -> None:
        if value is not None and not isinstance(value, str):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FieldValueError(
                    "INVALID_TYPE_ON_FIELD_IN_RECORD",
                    f"{self.definition.label}: value not of required type: {value}",
                )
            value = str(value)
        if value is not None and self.definition.length and len(value) > self.definition.length:
            raise FieldValueError(
                "STRING_TOO_LONG",
                f"{self.definition.label}: data value too large: {value[:40]} (max length="
                f"{self.definition.length})",
            )
        self.codes[row] = self.code_of(value if value != "" else None)

    def to_json(self, rows: np.ndarray) -> list[Any]:
        categories = self.categories
        return [None if c < 0 else categories[c] for c in self.codes[rows].tolist()]


class ComputedColumn(Column):
    """A read-only value derived from other columns (IsWon, Name of a User, Id...).

    ``compute(rows)`` returns (values, null) like ``vector``; ``json(rows)`` the REST values.
    """

    writable = False

    def __init__(
        self,
        definition: FieldDef,
        kind: str,
        compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        json: Callable[[np.ndarray], list[Any]],
    ) -> None:
        super().__init__(definition)
        self.kind = kind
        self._compute = compute
        self._json = json

    def vector(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._compute(rows)

    def to_json(self, rows: np.ndarray) -> list[Any]:
        return self._json(rows)


# ---- conversions ----------------------------------------------------------------------------


def parse_datetime(value: str) -> dt.datetime:
    """Salesforce datetimes: ``2024-03-31T17:05:00.000+0000``, ``...Z``, ``...+01:00``."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) >= 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"datetime without a time zone: {value}")
    return parsed


def days_to_json(days: np.ndarray) -> list[str | None]:
    return days_to_iso(days, NULL_DAY)


def ms_to_json(ms: np.ndarray) -> list[str | None]:
    return ms_to_iso(ms, NULL_MS, suffix="+0000")


# ---- tables ---------------------------------------------------------------------------------


class Table:
    """The rows of one sObject: a size and one column per field (by lower-cased name)."""

    def __init__(self, sobject: SObjectDef, size: int) -> None:
        self.sobject = sobject
        self.size = size
        self.columns: dict[str, Column] = {}
        self.version = 0  # bumped on every insert, for caches of child indexes
        # Rows deleted for good (setup objects such as FieldPermissions have no recycle bin).
        self.removed: set[int] = set()

    @property
    def name(self) -> str:
        return self.sobject.name

    def add(self, column: Column) -> Column:
        self.sobject.add_field(column.definition)
        self.columns[column.definition.name.lower()] = column
        column.ensure(self.size)
        return column

    def column(self, name: str) -> Column | None:
        return self.columns.get(name.lower())

    def id_of(self, row: int) -> str:
        return make_id(self.sobject.key_prefix, row)

    def row_of(self, record_id: str) -> int | None:
        """Row of an id of this table; None when it is not one (ValueError when malformed)."""
        row = parse_id(record_id, self.sobject.key_prefix)
        return row if row is not None and row < self.size and row not in self.removed else None

    def append_rows(self, count: int) -> range:
        start = self.size
        self.size += count
        for column in self.columns.values():
            column.ensure(self.size)
        self.removed.difference_update(range(start, self.size))  # rows taken back, then reused
        self.version += 1
        return range(start, self.size)

    def live_rows(self, include_deleted: bool) -> np.ndarray:
        rows = np.arange(self.size, dtype=np.int64)
        if self.removed:
            rows = np.setdiff1d(rows, np.fromiter(self.removed, dtype=np.int64, count=-1))
        if include_deleted or not self.sobject.has_is_deleted:
            return rows
        deleted = self.columns["isdeleted"]
        assert isinstance(deleted, BoolColumn)
        return rows[~deleted.data[rows]] if self.removed else rows[~deleted.data[: self.size]]


def id_column(table: Table) -> ComputedColumn:
    prefix = table.sobject.key_prefix
    definition = FieldDef(
        "Id",
        "id",
        f"{table.sobject.label} ID",
        nillable=False,
        createable=False,
        updateable=False,
        length=18,
    )

    def compute(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows.astype(np.int64), np.zeros(len(rows), dtype=bool)

    return ComputedColumn(
        definition, "id", compute, lambda rows: [make_id(prefix, r) for r in rows.tolist()]
    )
