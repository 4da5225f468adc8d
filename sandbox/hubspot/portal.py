"""The sandbox HubSpot portal: the shared data set rendered as HubSpot CRM objects, and writes.

Objects (ids are numeric strings, deterministic: a per-type base plus the row number + 1):

- ``deals`` (0-3): one per Dataset deal; deleted Dataset deals are *archived* deals
  (``archivedAt`` = the deletion time; archiving never changes ``hs_lastmodifieddate``).
- ``companies`` (0-2): one per Dataset account. ``churn_date`` is a custom *date* property,
  rendered ``YYYY-MM-DD`` as HubSpot's v3 API renders date properties.
- ``meetings`` (0-47): one per Dataset activity.
- ``goal_targets`` (0-68): one per Dataset quota row. ``hs_goal_name``, ``hs_target_amount``,
  ``hs_start_datetime`` and ``hs_end_datetime`` follow HubSpot's goals guide; the other goal
  property names (``hs_assignee_user_id``, ``hs_goal_target_group_id``,
  ``hs_group_correlation_uuid``, ``hs_kpi_display_unit``) were **not verified against a live
  portal**. ``hs_end_datetime`` is the *exclusive* end: midnight UTC of the day after the
  period's last day.
- custom objects created through the schemas API (``2-<n>``, ``p2468013_<name>``, ``p_<name>``).
  The portal starts without any (the worker's setup creates its KPI object and properties).

Formats: datetimes are ISO with milliseconds and ``Z`` (``2026-07-01T09:30:00.123Z``) except
``closedate``, rendered ``YYYY-MM-DDT00:00:00Z`` (midnight UTC of the close day, no fraction);
numbers are plain decimal text (``15000``, ``15000.5``); booleans ``true``/``false``.

Storage is columnar (numpy arrays per property, built from the Dataset's columns without a
Python loop per record), so 200,000 deals start in well under a second and a page renders only
its own rows. ``clock`` (epoch seconds) stamps every write; like the sandbox Salesforce org, the
portal's clock is moved forward once, at start, if it runs behind the data set.

Written values are validated by property type like HubSpot does (number, date ``YYYY-MM-DD`` or
midnight epoch ms, datetime ISO or epoch ms, enumeration option, bool). The error codes
(``PROPERTY_DOESNT_EXIST``, ``INVALID_FLOAT``, ``INVALID_DATE``, ``INVALID_DATETIME``,
``INVALID_OPTION``, ``INVALID_BOOLEAN``, ``READ_ONLY_VALUE``) and the message
``Property values were not valid: [...]`` are modelled on HubSpot's answers as seen in
third-party reports, not checked against a live portal.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox import dataset as ds

PORTAL_ID = 2468013
NULL_MS = np.int64(np.iinfo(np.int64).min)
NULL_DAY = ds.NULL_DAY
DAY_MS = 86_400_000

OWNER_ID_BASE = 70_000_000
USER_ID_BASE = 9_000_000
TEAM_ID_BASE = 4_100_000
GOAL_GROUP_ID_BASE = 8_800_000
ID_BASES = {
    "companies": 10_000_000_000,
    "deals": 20_000_000_000,
    "meetings": 30_000_000_000,
    "goal_targets": 40_000_000_000,
}
CUSTOM_ID_BASE = 50_000_000_000
CUSTOM_ID_STRIDE = 1_000_000_000

PIPELINE_ID = "default"
PIPELINE_LABEL = "Sales Pipeline"
# Dataset.STAGES order -> (stage id, label, probability, closed). The ids of the first seven
# are HubSpot's default pipeline ids; "legacy" has a numeric id as custom stages do.
HS_STAGES: dict[str, tuple[str, str, str, bool]] = {
    "prospecting": ("appointmentscheduled", "Prospecting", "0.1", False),
    "qualification": ("qualifiedtobuy", "Qualification", "0.2", False),
    "demo": ("presentationscheduled", "Demo", "0.4", False),
    "proposal": ("decisionmakerboughtin", "Proposal", "0.6", False),
    "negotiation": ("contractsent", "Negotiation", "0.8", False),
    "closed_won": ("closedwon", "Closed won", "1.0", True),
    "closed_lost": ("closedlost", "Closed lost", "0.0", True),
    "legacy": ("108765432", "Legacy stage", "0.1", False),
}
assert tuple(HS_STAGES) == ds.STAGES
STAGE_IDS: tuple[str, ...] = tuple(v[0] for v in HS_STAGES.values())
DEAL_TYPES = {"new_business": "newbusiness", "expansion": "existingbusiness", "renewal": "renewal"}
DEAL_TYPE_LABELS = {
    "newbusiness": "New Business",
    "existingbusiness": "Existing Business",
    "renewal": "Renewal",
}
FORECAST_CATEGORIES = {
    "pipeline": "PIPELINE",
    "best_case": "BEST_CASE",
    "commit": "COMMIT",
    "closed": "CLOSED",
    "omitted": "OMIT",
}
ACTIVITY_TYPES = {"demo": "Demo", "call": "Discovery call", "meeting": "Signature meeting"}
GOAL_NAME = "Revenue quota"

PROPERTY_TYPES: dict[str, frozenset[str]] = {
    "string": frozenset({"text", "textarea", "html", "phonenumber", "file"}),
    "number": frozenset({"number", "calculation_equation"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"date"}),
    "enumeration": frozenset({"select", "radio", "checkbox", "booleancheckbox"}),
    "bool": frozenset({"booleancheckbox"}),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


# ---- formatting -----------------------------------------------------------------------------


def iso_ms(values: np.ndarray) -> list[str | None]:
    """Epoch-ms int64 values as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (NULL_MS: None)."""
    values = np.asarray(values, dtype=np.int64)
    null = values == NULL_MS
    text = np.datetime_as_string(np.where(null, 0, values).astype("datetime64[ms]"), unit="ms")
    return [None if n else t + "Z" for n, t in zip(null.tolist(), text.tolist(), strict=True)]


def iso_seconds(values: np.ndarray) -> list[str | None]:
    """Epoch-ms values as ``YYYY-MM-DDTHH:MM:SSZ`` (closedate's format)."""
    values = np.asarray(values, dtype=np.int64)
    null = values == NULL_MS
    seconds = np.where(null, 0, values) // 1000
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    return [None if n else t + "Z" for n, t in zip(null.tolist(), text.tolist(), strict=True)]


def stamp(ms: int) -> str:
    """One epoch-ms value in the portal's datetime format."""
    return iso_ms(np.array([ms], dtype=np.int64))[0] or ""


def format_number(value: float) -> str | None:
    if value is None or math.isnan(value):
        return None
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def parse_datetime_ms(text: str) -> int:
    """Epoch ms from an epoch-ms string or an ISO date/datetime (naive = UTC)."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return round(parsed.timestamp() * 1000)


def _slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


# ---- property definitions ---------------------------------------------------------------------


@dataclass
class PropertyDef:
    name: str
    label: str
    type: str
    field_type: str
    group: str
    description: str = ""
    options: list[dict[str, Any]] = field(default_factory=list)
    read_only: bool = False
    calculated: bool = False
    external_options: bool = False
    unique: bool = False
    hidden: bool = False
    hubspot_defined: bool = True
    display_order: int = -1
    form_field: bool = False
    created_ms: int = 0
    updated_ms: int = 0
    validator: Callable[[str], str | None] | None = None  # extra check: message or None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group,
            "description": self.description,
            "options": self.options,
            "displayOrder": self.display_order,
            "calculated": self.calculated,
            "externalOptions": self.external_options,
            "hasUniqueValue": self.unique,
            "hidden": self.hidden,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
            },
            "formField": self.form_field,
            "createdAt": stamp(self.created_ms),
            "updatedAt": stamp(self.updated_ms),
            "archived": False,
        }
        if self.hubspot_defined:
            body["hubspotDefined"] = True
        return body


@dataclass
class GroupDef:
    name: str
    label: str
    display_order: int = -1

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "displayOrder": self.display_order,
            "archived": False,
        }


def options_of(values: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"label": label, "value": value, "displayOrder": i, "hidden": False}
        for i, (value, label) in enumerate(values)
    ]


class PropertyValueError(Exception):
    """One property value a write cannot take: HubSpot's per-property error detail."""

    def __init__(self, name: str, code: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.code = code
        self.message = message

    def detail(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "code": self.code,
            "context": {"propertyName": [self.name]},
        }


def parse_value(pdef: PropertyDef, raw: Any) -> Any:
    """A written value in the column's storage form; raises PropertyValueError."""
    name = pdef.name
    if raw is None:
        return None
    text = raw if isinstance(raw, str) else json.dumps(raw) if isinstance(raw, bool) else str(raw)
    if text == "":
        return None
    kind = pdef.type
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise PropertyValueError(name, "INVALID_FLOAT", f'"{text}" was not a valid number.')
        return number
    if kind == "date":
        try:
            if re.fullmatch(r"-?\d+", text):
                ms = int(text)
                if ms % DAY_MS:
                    raise ValueError("not midnight")
                return ms // DAY_MS
            return (dt.date.fromisoformat(text) - ds.EPOCH).days
        except ValueError:
            raise PropertyValueError(
                name,
                "INVALID_DATE",
                f'"{text}" is not a valid date: use YYYY-MM-DD or midnight UTC in epoch ms.',
            ) from None
    if kind == "datetime":
        try:
            return parse_datetime_ms(text)
        except (ValueError, OverflowError):
            raise PropertyValueError(
                name, "INVALID_DATETIME", f'"{text}" is not a valid datetime.'
            ) from None
    if kind == "bool":
        if text.lower() not in {"true", "false"}:
            raise PropertyValueError(
                name, "INVALID_BOOLEAN", f'"{text}" was not a valid boolean (true or false).'
            )
        return text.lower()
    if kind == "enumeration" and pdef.options and not pdef.external_options:
        allowed = [o["value"] for o in pdef.options]
        chosen = text.split(";") if pdef.field_type == "checkbox" else [text]
        bad = [v for v in chosen if v not in allowed]
        if bad:
            raise PropertyValueError(
                name,
                "INVALID_OPTION",
                f"{bad[0]} was not one of the allowed options: [{', '.join(allowed)}]",
            )
    if pdef.validator is not None:
        problem = pdef.validator(text)
        if problem:
            raise PropertyValueError(name, "INVALID_OPTION", problem)
    return text


# ---- columns ----------------------------------------------------------------------------------


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
        values = self.values[rows]
        null = values == NULL_DAY
        text = np.datetime_as_string(np.where(null, 0, values).astype("datetime64[D]"), unit="D")
        return [None if n else t for n, t in zip(null.tolist(), text.tolist(), strict=True)]

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


# ---- object stores ----------------------------------------------------------------------------

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


class WriteError(Exception):
    """A whole request refused (HTTP 4xx with HubSpot's error envelope)."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        context: dict[str, list[str]] | None = None,
        sub_category: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.errors = errors or []
        self.context = context
        self.sub_category = sub_category


def invalid_values(problems: list[PropertyValueError]) -> WriteError:
    detail = [
        {
            "isValid": False,
            "message": p.message,
            "error": p.code,
            "name": p.name,
            "localizedErrorMessage": p.message,
            "portalId": PORTAL_ID,
        }
        for p in problems
    ]
    return WriteError(
        400,
        "VALIDATION_ERROR",
        "Property values were not valid: " + json.dumps(detail, separators=(",", ":")),
        errors=[p.detail() for p in problems],
    )


class HubSpotPortal:
    """All objects of one sandbox portal and the operations the API performs on them."""

    def __init__(self, data: ds.Dataset, clock: Callable[[], float] = time.time) -> None:
        self.data = data
        self.lock = threading.RLock()
        latest = int(
            max(
                data.deals.last_modified.max(initial=0),
                data.deals.deleted_at.max(initial=0),
                data.users.created_at.max(initial=0),
            )
        )
        offset = max(0.0, (latest + 1000) / 1000 - clock())
        self._clock = clock
        self._offset = offset
        self.stores: dict[str, ObjectStore] = {}
        self._aliases: dict[str, str] = {}
        self._custom_count = 0
        self.setup_ms = int(data.users.created_at.min()) if len(data.users) else 0
        self._build_owners()
        self._build_companies()
        self._build_deals()
        self._build_meetings()
        self._build_goal_targets()

    # ---- public helpers -------------------------------------------------------------------

    def now_ms(self) -> int:
        return int((self._clock() + self._offset) * 1000)

    def deal_id(self, row: int) -> str:
        return self.stores["deals"].record_id(row)

    def company_id(self, row: int) -> str:
        return self.stores["companies"].record_id(row)

    def owner_id(self, user_row: int) -> str:
        return str(OWNER_ID_BASE + int(user_row) + 1)

    def user_id(self, user_row: int) -> int:
        return USER_ID_BASE + int(user_row) + 1

    def store(self, object_type: str) -> ObjectStore:
        """The store for a path's objectType (name, objectTypeId, fully qualified name)."""
        key = self._aliases.get(object_type.lower())
        if key is None:
            raise KeyError(object_type)
        return self.stores[key]

    def touch_deals(self, rows: Any, at_ms: int | None = None, **values: Any) -> None:
        """Set properties on many deals at once and stamp them all ``at_ms`` (default: now)."""
        store = self.stores["deals"]
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        with self.lock:
            parsed = self._validate(store, values)
            self._apply(store, rows, parsed, self.now_ms() if at_ms is None else int(at_ms))

    def archive_deal(self, row_or_id: int | str) -> None:
        store = self.stores["deals"]
        row = store.row_of(row_or_id) if isinstance(row_or_id, str) else int(row_or_id)
        if row is None or not 0 <= row < store.size:
            raise KeyError(row_or_id)
        self.archive(store, [row])

    def deal_properties(self, deal_id: str) -> dict[str, str | None]:
        store = self.stores["deals"]
        row = store.row_of(deal_id)
        if row is None:
            raise KeyError(deal_id)
        return self.properties_of(store, row, list(store.properties))

    def object_records(self, object_type: str) -> list[dict[str, Any]]:
        store = self.store(object_type)
        with self.lock:
            return [
                self.render(store, np.array([row]), list(store.properties))[0]
                for row in range(store.size)
            ]

    # ---- reading ----------------------------------------------------------------------------

    def properties_of(self, store: ObjectStore, row: int, names: list[str]) -> dict[str, Any]:
        rows = np.array([row])
        return {n: store.columns[n].render(rows)[0] for n in names if n in store.columns}

    def render(
        self,
        store: ObjectStore,
        rows: np.ndarray,
        names: list[str] | None,
        *,
        with_history: list[str] | None = None,
        associations: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """SimplePublicObject dicts for ``rows`` (None names: the type's defaults)."""
        rows = np.asarray(rows, dtype=np.int64)
        wanted = [n for n in (names or store.default_properties) if n in store.columns]
        wanted = list(dict.fromkeys(wanted))
        columns = {n: store.columns[n].render(rows) for n in wanted}
        ids = store.ids[rows].tolist()
        created = iso_ms(store.created[rows])
        updated = iso_ms(store.modified[rows])
        archived_at = store.archived_at[rows]
        archived_text = iso_ms(archived_at)
        out = []
        for i, row in enumerate(rows.tolist()):
            record: dict[str, Any] = {
                "id": str(ids[i]),
                "properties": {n: columns[n][i] for n in wanted},
                "createdAt": created[i],
                "updatedAt": updated[i],
                "archived": bool(archived_at[i] != NULL_MS),
            }
            if archived_at[i] != NULL_MS:
                record["archivedAt"] = archived_text[i]
            if with_history:
                record["propertiesWithHistory"] = {
                    n: store.history(n, row)
                    for n in dict.fromkeys(with_history)
                    if n in store.columns
                }
            if associations:
                found = {}
                for target in associations:
                    link = store.associations.get(target.lower())
                    if link is None:
                        continue
                    pairs = link(row)
                    if pairs:
                        found[target] = {"results": [{"id": i, "type": t} for i, t in pairs]}
                if found:
                    record["associations"] = found
            out.append(record)
        return out

    # ---- writing ----------------------------------------------------------------------------

    def _validate(self, store: ObjectStore, values: dict[str, Any]) -> dict[str, Any]:
        problems: list[PropertyValueError] = []
        parsed: dict[str, Any] = {}
        for name, raw in values.items():
            pdef = store.properties.get(name)
            if pdef is None:
                problems.append(
                    PropertyValueError(
                        name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
                    )
                )
                continue
            if pdef.read_only or not store.columns[name].writable:
                problems.append(
                    PropertyValueError(
                        name,
                        "READ_ONLY_VALUE",
                        f'"{name}" is a read only property; its value cannot be set.',
                    )
                )
                continue
            try:
                parsed[name] = parse_value(pdef, raw)
            except PropertyValueError as exc:
                problems.append(exc)
        if problems:
            raise invalid_values(problems)
        return parsed

    def validate(self, store: ObjectStore, values: dict[str, Any]) -> dict[str, Any]:
        """Parsed values of one input, or WriteError(400 VALIDATION_ERROR)."""
        if not isinstance(values, dict):
            raise WriteError(400, "VALIDATION_ERROR", "properties must be an object")
        return self._validate(store, values)

    def _apply(
        self,
        store: ObjectStore,
        rows: np.ndarray,
        parsed: dict[str, Any],
        at_ms: int,
        source: tuple[str, str | None, int | None] = ("INTEGRATION", "sandbox-private-app", None),
    ) -> None:
        if store.on_write is not None:
            store.on_write(rows, parsed, at_ms)
        for name, value in parsed.items():
            store.columns[name].set(rows, value)
        store.modified[rows] = at_ms
        store.version += 1
        if parsed:
            row_list = rows.tolist()
            for name in parsed:
                rendered = store.columns[name].render(rows)
                per_row = store.written.setdefault(name, {})
                for row, text in zip(row_list, rendered, strict=True):
                    per_row.setdefault(row, []).append((text or "", at_ms, *source))

    def update(self, store: ObjectStore, row: int, parsed: dict[str, Any]) -> None:
        with self.lock:
            self._apply(store, np.array([row]), parsed, self.now_ms())

    def create(self, store: ObjectStore, parsed: dict[str, Any]) -> int:
        with self.lock:
            now = self.now_ms()
            rows = store.grow(1)
            store.created[rows] = now
            if "createdate" in store.columns and store.columns["createdate"].writable:
                store.columns["createdate"].set(rows, now)
            self._apply(store, rows, parsed, now)
            return int(rows[0])

    def archive(self, store: ObjectStore, rows: Iterable[int]) -> None:
        with self.lock:
            rows = np.asarray(list(rows), dtype=np.int64)
            live = rows[store.archived_at[rows] == NULL_MS]
            store.archived_at[live] = self.now_ms()
            store.version += 1

    def find_unique(self, store: ObjectStore, name: str, value: str) -> int | None:
        """The live row whose ``name`` (a unique-value property, or hs_object_id) is ``value``."""
        if name == "hs_object_id":
            row = store.row_of(value)
            return row if row is not None and store.archived_at[row] == NULL_MS else None
        column = store.columns[name]
        if column.numeric:
            try:
                key = column.parse_filter(value)
            except ValueError:
                return None
            hits = np.flatnonzero((column.keys() == key) & ~store.archived)
        else:
            hits = np.flatnonzero(column.text_mask(lambda v: v == value) & ~store.archived)
        return int(hits[0]) if len(hits) else None

    # ---- properties and groups ---------------------------------------------------------------

    def create_property(self, store: ObjectStore, body: Any) -> PropertyDef:
        with self.lock:
            pdef = self.property_from_json(store, body)
            if pdef.name in store.properties:
                raise WriteError(
                    409,
                    "OBJECT_ALREADY_EXISTS",
                    f"A property named '{pdef.name}' already exists.",
                    context={"name": [pdef.name]},
                )
            if pdef.group not in store.groups:
                raise WriteError(
                    400,
                    "VALIDATION_ERROR",
                    f"Property group '{pdef.group}' does not exist for {store.name}.",
                    context={"groupName": [pdef.group]},
                )
            store.add(pdef, column_for(pdef, store.size))
            store.version += 1
            return pdef

    def property_from_json(self, store: ObjectStore, body: Any) -> PropertyDef:
        if not isinstance(body, dict):
            raise WriteError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        missing = [k for k in ("name", "label", "type", "fieldType") if not body.get(k)]
        if missing:
            raise WriteError(
                400,
                "VALIDATION_ERROR",
                f"Missing required fields: {', '.join(missing)}",
                errors=[
                    {"message": f"{k} is required", "code": "REQUIRED_FIELD", "in": k}
                    for k in missing
                ],
            )
        name, kind, field_type = str(body["name"]), str(body["type"]), str(body["fieldType"])
        if not _NAME.match(name):
            raise WriteError(
                400,
                "VALIDATION_ERROR",
                f"Property name '{name}' is invalid: use lowercase letters, digits and _,"
                " starting with a letter.",
            )
        if kind not in PROPERTY_TYPES:
            raise WriteError(
                400,
                "VALIDATION_ERROR",
                f"Invalid property type '{kind}': use one of {', '.join(PROPERTY_TYPES)}.",
            )
        if field_type not in PROPERTY_TYPES[kind]:
            raise WriteError(
                400,
                "VALIDATION_ERROR",
                f"fieldType '{field_type}' is not valid for a property of type '{kind}'"
                f" (use {', '.join(sorted(PROPERTY_TYPES[kind]))}).",
            )
        options = body.get("options") or []
        if kind == "enumeration" and not options and field_type != "booleancheckbox":
            raise WriteError(400, "VALIDATION_ERROR", "An enumeration property needs options.")
        if kind == "bool" and not options:
            options = [
                {"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
                {"label": "No", "value": "false", "displayOrder": 1, "hidden": False},
            ]
        rendered_options = [
            {
                "label": str(o.get("label", o.get("value"))),
                "value": str(o.get("value")),
                "displayOrder": int(
                    o.get("displayOrder", i) if o.get("displayOrder") is not None else i
                ),
                "hidden": bool(o.get("hidden", False)),
                **({"description": str(o["description"])} if o.get("description") else {}),
            }
            for i, o in enumerate(options)
        ]
        now = self.now_ms()
        return PropertyDef(
            name=name,
            label=str(body["label"]),
            type=kind,
            field_type=field_type,
            group=str(body.get("groupName") or f"{store.name}information"),
            description=str(body.get("description") or ""),
            options=rendered_options,
            unique=bool(body.get("hasUniqueValue", False)),
            hidden=bool(body.get("hidden", False)),
            hubspot_defined=False,
            display_order=int(
                body.get("displayOrder", -1) if body.get("displayOrder") is not None else -1
            ),
            form_field=bool(body.get("formField", False)),
            created_ms=now,
            updated_ms=now,
        )

    def create_group(self, store: ObjectStore, body: Any) -> GroupDef:
        with self.lock:
            if not isinstance(body, dict) or not body.get("name") or not body.get("label"):
                raise WriteError(400, "VALIDATION_ERROR", "A property group needs name and label.")
            name = str(body["name"])
            if name in store.groups:
                raise WriteError(
                    409,
                    "OBJECT_ALREADY_EXISTS",
                    f"A property group named '{name}' already exists.",
                    context={"name": [name]},
                )
            order = body.get("displayOrder")
            group = GroupDef(name, str(body["label"]), -1 if order is None else int(order))
            store.groups[name] = group
            return group

    # ---- custom object schemas -----------------------------------------------------------------

    def create_schema(self, body: Any) -> ObjectStore:
        with self.lock:
            if not isinstance(body, dict):
                raise WriteError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
            missing = [k for k in ("name", "labels", "properties") if not body.get(k)]
            if "requiredProperties" not in body:
                missing.append("requiredProperties")
            if missing:
                raise WriteError(
                    400,
                    "VALIDATION_ERROR",
                    f"Missing required fields: {', '.join(missing)}",
                    errors=[
                        {"message": f"{k} is required", "code": "REQUIRED_FIELD", "in": k}
                        for k in missing
                    ],
                )
            name = str(body["name"]).lower()
            if not _NAME.match(name):
                raise WriteError(400, "VALIDATION_ERROR", f"Object name '{name}' is invalid.")
            fqn = f"p{PORTAL_ID}_{name}"
            if fqn in self._aliases:
                raise WriteError(
                    409,
                    "OBJECT_ALREADY_EXISTS",
                    f"An object type named '{name}' already exists.",
                    context={"name": [name]},
                )
            self._custom_count += 1
            type_id = f"2-{self._custom_count}"
            labels = body["labels"] if isinstance(body["labels"], dict) else {}
            now = self.now_ms()
            store = ObjectStore(
                name=name,
                type_id=type_id,
                id_base=CUSTOM_ID_BASE + self._custom_count * CUSTOM_ID_STRIDE,
                size=0,
                primary_property=str(body.get("primaryDisplayProperty") or "hs_object_id"),
                default_properties=("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
                singular=str(labels.get("singular") or name),
                plural=str(labels.get("plural") or name),
                fully_qualified_name=fqn,
                custom=True,
                archived_at=np.zeros(0, dtype=np.int64),
            )
            group = f"{name}_information"
            store.groups[group] = GroupDef(group, f"{store.singular} information", 0)
            self._standard_columns(store, np.zeros(0, np.int64), np.zeros(0, np.int64), group)
            self._prop(
                store, "hubspot_owner_id", "Owner", "enumeration", "select",
                self._owner_ref(np.zeros(0, dtype=np.int32)), external_options=True,
                validator=self._owner_validator, group=group,
            )  # fmt: skip
            for prop in body["properties"]:
                if isinstance(prop, dict):
                    prop = {"groupName": group, **prop}
                pdef = self.property_from_json(store, prop)
                if pdef.name in store.properties:
                    raise WriteError(
                        400, "VALIDATION_ERROR", f"Property '{pdef.name}' is defined twice."
                    )
                if pdef.group not in store.groups:
                    pdef.group = group
                store.add(pdef, column_for(pdef, 0))
            for key in ("requiredProperties", "searchableProperties"):
                unknown = [p for p in body.get(key) or [] if p not in store.properties]
                if unknown:
                    raise WriteError(
                        400,
                        "VALIDATION_ERROR",
                        f"{key} names properties that are not defined: {', '.join(unknown)}",
                    )
            if store.primary_property not in store.properties:
                raise WriteError(
                    400,
                    "VALIDATION_ERROR",
                    f"primaryDisplayProperty '{store.primary_property}' is not defined.",
                )
            store.schema = {
                "requiredProperties": list(body.get("requiredProperties") or []),
                "searchableProperties": list(body.get("searchableProperties") or []),
                "secondaryDisplayProperties": list(body.get("secondaryDisplayProperties") or []),
                "description": body.get("description"),
                "associatedObjects": list(body.get("associatedObjects") or []),
                "createdAt": now,
            }
            key = f"custom:{type_id}"
            self.stores[key] = store
            for alias in (type_id, fqn, f"p_{name}"):
                self._aliases[alias.lower()] = key
            return store

    def schema_json(self, store: ObjectStore) -> dict[str, Any]:
        schema = store.schema
        body: dict[str, Any] = {
            "id": store.type_id.split("-")[1],
            "objectTypeId": store.type_id,
            "fullyQualifiedName": store.fully_qualified_name,
            "name": store.name,
            "labels": {"singular": store.singular, "plural": store.plural},
            "properties": [p.to_json() for p in store.properties.values()],
            "associations": [
                {
                    "id": str(100 + i),
                    "fromObjectTypeId": store.type_id,
                    "toObjectTypeId": self.store(target).type_id,
                    "name": f"{store.name}_to_{self.store(target).name}",
                }
                for i, target in enumerate(schema.get("associatedObjects", []))
                if target.lower() in self._aliases
            ],
            "requiredProperties": schema.get("requiredProperties", []),
            "searchableProperties": schema.get("searchableProperties", []),
            "secondaryDisplayProperties": schema.get("secondaryDisplayProperties", []),
            "primaryDisplayProperty": store.primary_property,
            "archived": False,
            "createdAt": stamp(schema.get("createdAt", self.setup_ms)),
            "updatedAt": stamp(schema.get("createdAt", self.setup_ms)),
        }
        if schema.get("description"):
            body["description"] = schema["description"]
        return body

    def custom_stores(self) -> list[ObjectStore]:
        return [s for s in self.stores.values() if s.custom]

    # ---- building ---------------------------------------------------------------------------

    def _register(self, store: ObjectStore, *aliases: str) -> None:
        self.stores[store.name] = store
        for alias in (store.name, store.type_id, *aliases):
            self._aliases[alias.lower()] = store.name

    def _standard_columns(
        self, store: ObjectStore, created: np.ndarray, modified: np.ndarray, group: str
    ) -> None:
        ro = dict(read_only=True, hubspot_defined=True, created_ms=self.setup_ms)
        ro["updated_ms"] = self.setup_ms
        store.add(
            PropertyDef("hs_object_id", "Record ID", "number", "number", group, **ro),  # type: ignore[arg-type]
            IdColumn(store),
        )
        store.add(
            PropertyDef("hs_createdate", "Create date", "datetime", "date", group, **ro),  # type: ignore[arg-type]
            MsColumn(np.array(created, dtype=np.int64)),
        )
        store.add(
            PropertyDef(
                "hs_lastmodifieddate",
                "Last modified date",
                "datetime",
                "date",
                group,
                **ro,  # type: ignore[arg-type]
            ),
            MsColumn(np.array(modified, dtype=np.int64)),
        )

    def _prop(
        self,
        store: ObjectStore,
        name: str,
        label: str,
        kind: str,
        field_type: str,
        column: Column,
        **extra: Any,
    ) -> None:
        group = extra.pop("group", next(iter(store.groups)))
        store.add(
            PropertyDef(
                name,
                label,
                kind,
                field_type,
                group,
                created_ms=self.setup_ms,
                updated_ms=self.setup_ms,
                **extra,
            ),
            column,
        )

    def _company_count(self) -> int:
        return self.stores["companies"].size

    def _owner_ref(self, rows: np.ndarray) -> RefColumn:
        return RefColumn(rows.astype(np.int32), OWNER_ID_BASE, lambda: len(self.owners))

    def _owner_validator(self, text: str) -> str | None:
        row = RefColumn(np.zeros(0), OWNER_ID_BASE, lambda: len(self.owners)).row_of(text)
        return None if row is not None else f"{text} is not a valid owner id"

    def _build_owners(self) -> None:
        users = self.data.users
        teams = list(dict.fromkeys(t for t in users.team if t is not None))
        self.teams = {name: str(TEAM_ID_BASE + i + 1) for i, name in enumerate(teams)}
        self.owners = [
            Owner(
                row=i,
                id=self.owner_id(i),
                email=users.email[i],
                first_name=users.first_name[i],
                last_name=users.last_name[i],
                user_id=self.user_id(i),
                team=(self.teams[users.team[i]], users.team[i]) if users.team[i] else None,  # type: ignore[index]
                created_ms=int(users.created_at[i]),
                archived=not bool(users.is_active[i]),
            )
            for i in range(len(users))
        ]

    def _build_companies(self) -> None:
        acc = self.data.accounts
        store = ObjectStore(
            "companies",
            "0-2",
            ID_BASES["companies"],
            len(acc),
            "name",
            ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
            singular="Company",
            plural="Companies",
            archived_at=np.full(len(acc), NULL_MS),
        )
        store.groups["companyinformation"] = GroupDef(
            "companyinformation", "Company information", 0
        )
        self._standard_columns(store, acc.created_at, acc.last_modified, "companyinformation")
        self._prop(
            store, "createdate", "Create Date", "datetime", "date",
            AliasColumn(store.columns["hs_createdate"]), read_only=True,
        )  # fmt: skip
        self._prop(
            store,
            "name",
            "Company name",
            "string",
            "text",
            TextColumn(factory=lambda: list(acc.name)),
        )
        self._prop(
            store, "domain", "Company domain name", "string", "text",
            TextColumn(factory=lambda: [f"{_slug(n)}.example" for n in acc.name]),
        )  # fmt: skip
        self._prop(
            store,
            "industry",
            "Industry",
            "string",
            "text",
            TextColumn(factory=lambda: list(acc.industry)),
        )
        self._prop(
            store,
            "country",
            "Country/Region",
            "string",
            "text",
            TextColumn(factory=lambda: list(acc.country)),
        )
        self._prop(
            store, "hubspot_owner_id", "Company owner", "enumeration", "select",
            self._owner_ref(acc.owner), external_options=True, validator=self._owner_validator,
        )  # fmt: skip
        self._prop(
            store, "churn_date", "Churn date", "date", "date",
            DayColumn(acc.churn_day.astype(np.int32)), hubspot_defined=False,
        )  # fmt: skip
        self._register(store, "company")

    def _build_deals(self) -> None:
        data = self.data
        deals = data.deals
        n = len(deals)
        store = ObjectStore(
            "deals",
            "0-3",
            ID_BASES["deals"],
            n,
            "dealname",
            (
                "amount", "closedate", "createdate", "dealname", "dealstage",
                "hs_lastmodifieddate", "hs_object_id", "pipeline",
            ),
            singular="Deal",
            plural="Deals",
            archived_at=np.where(deals.is_deleted, deals.deleted_at, NULL_MS).astype(np.int64),
        )  # fmt: skip
        group = "dealinformation"
        store.groups[group] = GroupDef(group, "Deal information", 0)
        self._standard_columns(store, deals.created_at, deals.last_modified, group)
        acc_names, products = data.accounts.name, data.products

        def names() -> list[str]:
            return [
                f"{acc_names[a]} - {products[p]}"
                for a, p in zip(deals.account.tolist(), deals.product.tolist(), strict=True)
            ]

        amount = NumberColumn(deals.amount.astype(np.float64, copy=True))
        currency = CodeColumn(deals.currency, list(data.currencies))

        def home_values() -> np.ndarray:
            # Per currency code (writes may add codes): units per 1 EUR; nan = no known rate.
            rates = np.array([data.fx_rates.get(c, np.nan) for c in currency.labels] + [np.nan])
            return np.round(amount.values / rates[currency.values], 2)

        def home_render(rows: np.ndarray) -> list[str | None]:
            return [format_number(v) for v in home_values()[rows].tolist()]

        stage = CodeColumn(deals.stage, list(STAGE_IDS))
        # The stage's default probability; a write may set another (a new stage resets it).
        prob_by_code = np.array([*(_stage_probability()), np.nan])
        probability = NumberColumn(deals.probability / 100)
        closed_codes = [i for i, v in enumerate(HS_STAGES.values()) if v[3]]
        won_code = ds.STAGE_WON

        def stage_codes() -> np.ndarray:
            codes = stage.values.astype(np.int64)
            return np.where((codes >= 0) & (codes < len(STAGE_IDS)), codes, len(STAGE_IDS))

        def flag(test: Callable[[np.ndarray], np.ndarray]) -> DerivedColumn:
            def render(rows: np.ndarray) -> list[str | None]:
                return ["true" if f else "false" for f in test(stage_codes()[rows]).tolist()]

            def mask(predicate: Callable[[str | None], bool]) -> np.ndarray:
                hit = test(stage_codes())
                return np.where(hit, predicate("true"), predicate("false"))

            return DerivedColumn(render, text_mask=mask)

        self._prop(store, "dealname", "Deal Name", "string", "text", TextColumn(factory=names))
        self._prop(store, "amount", "Amount", "number", "number", amount)
        self._prop(
            store, "deal_currency_code", "Currency", "enumeration", "select", currency,
            options=options_of((c, c) for c in data.currencies),
        )  # fmt: skip
        self._prop(
            store, "amount_in_home_currency", "Amount in company currency", "number", "number",
            DerivedColumn(home_render, keys=home_values), read_only=True, calculated=True,
        )  # fmt: skip
        close_ms = np.where(
            deals.close_day == NULL_DAY, NULL_MS, deals.close_day.astype(np.int64) * DAY_MS
        )
        self._prop(
            store, "closedate", "Close Date", "datetime", "date", MsColumn(close_ms, seconds=True)
        )
        self._prop(
            store, "createdate", "Create Date", "datetime", "date",
            AliasColumn(store.columns["hs_createdate"]), read_only=True,
        )  # fmt: skip
        self._prop(
            store, "dealstage", "Deal Stage", "enumeration", "radio", stage,
            options=options_of((v[0], v[1]) for v in HS_STAGES.values()),
        )  # fmt: skip
        self._prop(
            store, "pipeline", "Pipeline", "enumeration", "select",
            CodeColumn(np.zeros(n, dtype=np.int16), [PIPELINE_ID]),
            options=options_of([(PIPELINE_ID, PIPELINE_LABEL)]),
        )  # fmt: skip
        type_codes = np.array(
            [list(DEAL_TYPES).index(t) if t in DEAL_TYPES else -1 for t in ds.DEAL_TYPES],
            dtype=np.int16,
        )
        self._prop(
            store, "dealtype", "Deal Type", "enumeration", "radio",
            CodeColumn(type_codes[deals.deal_type], list(DEAL_TYPES.values())),
            options=options_of(DEAL_TYPE_LABELS.items()),
        )  # fmt: skip
        fc = list(FORECAST_CATEGORIES.values())
        self._prop(
            store, "hs_forecast_category", "Forecast category", "enumeration", "select",
            CodeColumn(deals.forecast_category, fc),
            options=options_of((v, v.replace("_", " ").title()) for v in fc),
        )  # fmt: skip
        self._prop(
            store, "hs_deal_stage_probability", "Deal probability", "number", "number",
            probability,
        )  # fmt: skip
        self._prop(
            store, "hubspot_owner_id", "Deal owner", "enumeration", "select",
            self._owner_ref(deals.owner), external_options=True, validator=self._owner_validator,
        )  # fmt: skip
        self._prop(
            store, "hs_primary_associated_company", "Primary associated company", "number",
            "number", RefColumn(deals.account, ID_BASES["companies"], self._company_count),
            read_only=True,
        )  # fmt: skip
        self._prop(
            store, "hs_is_closed", "Is deal closed?", "bool", "booleancheckbox",
            flag(lambda codes: np.isin(codes, closed_codes)), read_only=True, calculated=True,
        )  # fmt: skip
        self._prop(
            store, "hs_is_closed_won", "Is closed won", "bool", "booleancheckbox",
            flag(lambda codes: codes == won_code), read_only=True, calculated=True,
        )  # fmt: skip
        entered, exited = _stage_times(data)
        for code, (stage_id, label, _, _) in enumerate(HS_STAGES.values()):
            self._prop(
                store, f"hs_v2_date_entered_{stage_id}", f"Date entered \"{label}\"", "datetime",
                "date", MsColumn(entered[code]), read_only=True, calculated=True,
            )  # fmt: skip
            self._prop(
                store, f"hs_v2_date_exited_{stage_id}", f"Date exited \"{label}\"", "datetime",
                "date", MsColumn(exited[code]), read_only=True, calculated=True,
            )  # fmt: skip

        def on_write(rows: np.ndarray, parsed: dict[str, Any], at_ms: int) -> None:
            if "dealstage" not in parsed or parsed["dealstage"] is None:
                return
            new = stage.code(parsed["dealstage"])
            old = stage.values[rows]
            moving = rows[old != new]
            for old_code in np.unique(stage.values[moving]).tolist():
                if 0 <= old_code < len(STAGE_IDS):
                    hit = moving[stage.values[moving] == old_code]
                    store.columns[f"hs_v2_date_exited_{STAGE_IDS[old_code]}"].set(hit, at_ms)
            if 0 <= new < len(STAGE_IDS) and len(moving):
                store.columns[f"hs_v2_date_entered_{STAGE_IDS[new]}"].set(moving, at_ms)
                if "hs_deal_stage_probability" not in parsed:
                    probability.set(moving, float(prob_by_code[new]))

        store.on_write = on_write
        self._deal_histories(store)
        store.associations["companies"] = lambda row: (
            [(self.company_id(int(deals.account[row])), "deal_to_company")]
            if row < n and deals.account[row] >= 0
            else []
        )
        self._register(store, "deal")

    def _deal_histories(self, store: ObjectStore) -> None:
        data = self.data
        deals, sc, cd = data.deals, data.stage_changes, data.close_date_changes
        n = len(deals)
        owner = deals.owner

        def source(row: int) -> tuple[str, str | None, int | None]:
            if row >= n:
                return ("CRM_UI", None, None)
            user = self.user_id(int(owner[row]))
            return ("CRM_UI", f"userId:{user}", user)

        def stage_history(row: int) -> list[History]:
            if row >= n:
                return []
            lo, hi = np.searchsorted(sc.deal, [row, row + 1])
            src = source(row)
            return [
                (STAGE_IDS[s], t, *src)
                for s, t in zip(
                    sc.stage[lo:hi].tolist(), sc.changed_at[lo:hi].tolist(), strict=True
                )
            ]

        def close_history(row: int) -> list[History]:
            if row >= n:
                return []
            lo, hi = np.searchsorted(cd.deal, [row, row + 1])
            initial = int(cd.old_day[lo]) if hi > lo else int(deals.close_day[row])
            days = [(initial, int(deals.created_at[row]))]
            days += list(
                zip(cd.new_day[lo:hi].tolist(), cd.changed_at[lo:hi].tolist(), strict=True)
            )
            src = source(row)
            return [
                (f"{ds.day_to_date(d).isoformat()}T00:00:00Z", t, *src)  # type: ignore[union-attr]
                for d, t in days
                if d != NULL_DAY
            ]

        def amount_history(row: int) -> list[History]:
            if row >= n:
                return []
            lo, hi = np.searchsorted(sc.deal, [row, row + 1])
            out: list[History] = []
            last: float | None = None
            src = source(row)
            for value, t in zip(
                sc.amount[lo:hi].tolist(), sc.changed_at[lo:hi].tolist(), strict=True
            ):
                if math.isnan(value) or value == last:
                    continue
                out.append((format_number(value) or "", t, *src))
                last = value
            return out

        store.base_history.update(
            {"dealstage": stage_history, "closedate": close_history, "amount": amount_history}
        )

    def _build_meetings(self) -> None:
        data = self.data
        act = data.activities
        store = ObjectStore(
            "meetings",
            "0-47",
            ID_BASES["meetings"],
            len(act),
            "hs_meeting_title",
            ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
            singular="Meeting",
            plural="Meetings",
            archived_at=np.full(len(act), NULL_MS),
        )
        group = "meetinginformation"
        store.groups[group] = GroupDef(group, "Meeting information", 0)
        self._standard_columns(store, act.created_at, act.last_modified, group)
        kinds = [ACTIVITY_TYPES[k] for k in ds.ACTIVITY_KINDS]
        acc_names = data.accounts.name

        def titles() -> list[str]:
            return [
                f"{kinds[k]} - {acc_names[a]}" if a >= 0 else kinds[k]
                for k, a in zip(act.kind.tolist(), act.account.tolist(), strict=True)
            ]

        end = act.start + act.duration_minutes.astype(np.int64) * 60_000
        self._prop(
            store, "hs_meeting_title", "Meeting name", "string", "text", TextColumn(factory=titles)
        )
        self._prop(
            store, "hs_timestamp", "Activity date", "datetime", "date", MsColumn(act.start.copy())
        )
        self._prop(
            store, "hs_meeting_start_time", "Start Time", "datetime", "date",
            MsColumn(act.start.copy()),
        )  # fmt: skip
        self._prop(store, "hs_meeting_end_time", "End Time", "datetime", "date", MsColumn(end))
        self._prop(
            store, "hs_activity_type", "Call and meeting type", "enumeration", "select",
            CodeColumn(act.kind, kinds), options=options_of((k, k) for k in kinds),
        )  # fmt: skip
        self._prop(
            store, "hubspot_owner_id", "Activity assigned to", "enumeration", "select",
            self._owner_ref(act.owner), external_options=True, validator=self._owner_validator,
        )  # fmt: skip
        size = len(act)
        store.associations["deals"] = lambda row: (
            [(self.deal_id(int(act.deal[row])), "meeting_event_to_deal")]
            if row < size and act.deal[row] >= 0
            else []
        )
        store.associations["companies"] = lambda row: (
            [(self.company_id(int(act.account[row])), "meeting_event_to_company")]
            if row < size and act.account[row] >= 0
            else []
        )
        self._register(store, "meeting")

    def _build_goal_targets(self) -> None:
        data = self.data
        qt = data.quotas
        store = ObjectStore(
            "goal_targets",
            "0-68",
            ID_BASES["goal_targets"],
            len(qt),
            "hs_goal_name",
            ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
            singular="Goal",
            plural="Goals",
            archived_at=np.full(len(qt), NULL_MS),
        )
        group = "goal_target_information"
        store.groups[group] = GroupDef(group, "Goal information", 0)
        self._standard_columns(store, qt.created_at, qt.last_modified, group)
        start_day = qt.period_start.astype(np.int64)
        months = start_day.astype("datetime64[D]").astype("datetime64[M]")
        end_day = (
            (months + qt.period_months.astype(np.int64)).astype("datetime64[D]").astype(np.int64)
        )
        keys = list(zip(start_day.tolist(), qt.period_months.tolist(), strict=True))
        groups = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        group_ids = [str(GOAL_GROUP_ID_BASE + groups[k] + 1) for k in keys]
        uuids = [
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"crm-kpi-sandbox/goal-group/{g}"))
            for g in group_ids
        ]
        users = qt.user.astype(np.int64)
        self._prop(
            store, "hs_goal_name", "Goal name", "string", "text",
            TextColumn(np.full(len(qt), GOAL_NAME, dtype=object)),
        )  # fmt: skip
        self._prop(
            store,
            "hs_target_amount",
            "Target amount",
            "number",
            "number",
            NumberColumn(qt.amount.astype(np.float64)),
        )
        self._prop(
            store,
            "hs_start_datetime",
            "Start date",
            "datetime",
            "date",
            MsColumn(start_day * DAY_MS),
        )
        self._prop(
            store, "hs_end_datetime", "End date", "datetime", "date", MsColumn(end_day * DAY_MS)
        )
        self._prop(
            store, "hubspot_owner_id", "Assignee", "enumeration", "select",
            self._owner_ref(qt.user), external_options=True, validator=self._owner_validator,
        )  # fmt: skip
        self._prop(
            store, "hs_assignee_user_id", "Assignee user id", "number", "number",
            NumberColumn((users + USER_ID_BASE + 1).astype(np.float64)),
        )  # fmt: skip
        self._prop(
            store, "hs_goal_target_group_id", "Goal group id", "number", "number",
            NumberColumn(np.array(group_ids, dtype=np.float64)), read_only=True,
        )  # fmt: skip
        self._prop(
            store, "hs_group_correlation_uuid", "Goal group uuid", "string", "text",
            TextColumn(np.array([*uuids, None], dtype=object)[:-1]), read_only=True,
        )  # fmt: skip
        self._prop(
            store, "hs_kpi_display_unit", "KPI display unit", "enumeration", "select",
            CodeColumn(np.zeros(len(qt), dtype=np.int16), ["currency"]),
            options=options_of(
                [("currency", "Currency"), ("number", "Number"), ("percent", "Percent")]
            ),
        )  # fmt: skip
        self._register(store, "goal_target", "goals")


def _stage_probability() -> list[float]:
    from crm_kpi_worker.sandbox.generator import STAGE_PROBABILITY

    return (STAGE_PROBABILITY / 100).tolist()


def _stage_times(data: ds.Dataset) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per stage code: each deal's last entry into / exit from it (epoch ms, NULL_MS: never)."""
    sc = data.stage_changes
    n = len(data.deals)
    same_deal_next = np.append(sc.deal[1:] == sc.deal[:-1], False)
    next_time = np.append(sc.changed_at[1:], NULL_MS)
    entered, exited = [], []
    for code in range(len(ds.STAGES)):
        rows = np.flatnonzero(sc.stage == code)
        enter = np.full(n, NULL_MS, dtype=np.int64)
        # Rows are sorted by (deal, time): the last row per deal wins.
        last = _last_of_each(sc.deal[rows])
        enter[sc.deal[rows][last]] = sc.changed_at[rows][last]
        entered.append(enter)
        left = rows[same_deal_next[rows]]
        leave = np.full(n, NULL_MS, dtype=np.int64)
        last = _last_of_each(sc.deal[left])
        leave[sc.deal[left][last]] = next_time[left][last]
        exited.append(leave)
    return entered, exited


def _last_of_each(keys: np.ndarray) -> np.ndarray:
    """Mask of the last row of each run of equal keys (keys sorted)."""
    if not len(keys):
        return np.zeros(0, dtype=bool)
    return np.append(keys[1:] != keys[:-1], True)
