"""Property definitions and groups, and the validation of written values by property type
(number, date, datetime, enumeration option, bool) with HubSpot's per-property error codes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.hubspot.formats import DAY_MS, parse_datetime_ms, stamp

PROPERTY_TYPES: dict[str, frozenset[str]] = {
    "string": frozenset({"text", "textarea", "html", "phonenumber", "file"}),
    "number": frozenset({"number", "calculation_equation"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"date"}),
    "enumeration": frozenset({"select", "radio", "checkbox", "booleancheckbox"}),
    "bool": frozenset({"booleancheckbox"}),
}
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


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
    if raw is None:
        return None
    text = raw if isinstance(raw, str) else json.dumps(raw) if isinstance(raw, bool) else str(raw)
    if text == "":
        return None
    parse = _PARSERS.get(pdef.type)
    if parse is not None:
        return parse(pdef.name, text)
    if pdef.type == "enumeration" and pdef.options and not pdef.external_options:
        _check_options(pdef, text)
    if pdef.validator is not None:
        problem = pdef.validator(text)
        if problem:
            raise PropertyValueError(pdef.name, "INVALID_OPTION", problem)
    return text


def _parse_number(name: str, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise PropertyValueError(name, "INVALID_FLOAT", f'"{text}" was not a valid number.')
    return number


def _parse_date(name: str, text: str) -> int:
    """Days since the epoch, from ``YYYY-MM-DD`` or midnight UTC in epoch ms."""
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


def _parse_datetime(name: str, text: str) -> int:
    try:
        return parse_datetime_ms(text)
    except (ValueError, OverflowError):
        raise PropertyValueError(
            name, "INVALID_DATETIME", f'"{text}" is not a valid datetime.'
        ) from None


def _parse_bool(name: str, text: str) -> str:
    if text.lower() not in {"true", "false"}:
        raise PropertyValueError(
            name, "INVALID_BOOLEAN", f'"{text}" was not a valid boolean (true or false).'
        )
    return text.lower()


# Property types whose values are parsed whatever the property (no options, no validator).
_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "number": _parse_number,
    "date": _parse_date,
    "datetime": _parse_datetime,
    "bool": _parse_bool,
}


def _check_options(pdef: PropertyDef, text: str) -> None:
    allowed = [o["value"] for o in pdef.options]
    chosen = text.split(";") if pdef.field_type == "checkbox" else [text]
    bad = [v for v in chosen if v not in allowed]
    if bad:
        raise PropertyValueError(
            pdef.name,
            "INVALID_OPTION",
            f"{bad[0]} was not one of the allowed options: [{', '.join(allowed)}]",
        )
