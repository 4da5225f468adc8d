"""What the HubSpot connector writes: property values (batch update / upsert) and targets.

Values: ``POST /crm/v3/objects/{type}/batch/update`` (by record id) and ``.../batch/upsert``
(by a unique-value property, ``idProperty``), 100 records a call (HubSpot's batch limit), one
:class:`WriteResult` per record. HubSpot answers 207 with per-record errors for records it
could not write and the rest in ``results``; each error names its records in its context
(``errors[].context.ids``: the ids as the inputs gave them, so an upsert's are its
``idProperty`` values) and its category and message are reported for those records, updates
and upserts alike (:func:`_batch_errors`). A value HubSpot refuses
(a bad number, an unknown option) fails the WHOLE batch with 400; the writer then splits the
batch in halves and tries again, down to the record at fault, so one bad record costs a few
calls, not the batch (a property that does not exist fails every record at once: no split).
Values are sent as text; None clears a property (HubSpot's empty text).

The scorecard custom object's display name: the pipeline gives each scorecard a ``Name``
(Salesforce's name field); on HubSpot it goes to the object's ``kpi_name`` property, which
``setup`` creates as the object's primary display property.

Targets: properties are listed once per object type per run (``GET /crm/v3/properties/{type}``;
a custom object's come with its schema, ``GET /crm-object-schemas/v3/schemas``, at no extra
call) and created in batches (``.../batch/create``), in the ``kpi_worker`` property group, which
is created first when missing; the scorecard object is created through the schemas API with its
properties, ``kpi_name`` as its primary display property and its headline KPIs as secondary
display properties. Everything that exists already is left alone: ``create`` is idempotent
(``setup``'s plan, :mod:`.setup`, brings labels and display properties up to date).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from crm_kpi_worker.connectors.base import (
    TargetField,
    TargetObject,
    WriteResult,
    batch_failed,
    write_in_batches,
)
from crm_kpi_worker.connectors.errors import ConnectorError, RequestRejected, StopRun
from crm_kpi_worker.connectors.hubspot.settings import BATCH_LIMIT

__all__ = [
    "BATCH_SIZE",
    "BUILT_IN",
    "NAME_PROPERTY",
    "PROPERTY_GROUP",
    "PROPERTY_GROUP_LABEL",
    "BatchWriter",
    "TargetManager",
]

log = logging.getLogger(__name__)

BATCH_SIZE = BATCH_LIMIT
PROPERTY_GROUP = "kpi_worker"
PROPERTY_GROUP_LABEL = "KPI worker"
NAME_PROPERTY = "kpi_name"
#: Properties every HubSpot object has: never created.
BUILT_IN = frozenset({"hubspot_owner_id", "hs_object_id", "hs_createdate", "hs_lastmodifieddate"})

Call = Callable[..., Any]


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, float | Decimal):
        if not math.isfinite(value):
            raise ValueError(f"{name}: {value} cannot be written (not a finite number)")
        return format(value, "f") if isinstance(value, Decimal) else repr(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}: a datetime to write must be timezone-aware")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"{name}: cannot write a value of type {type(value).__name__}")


def _properties(fields: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in fields.items():
        out[NAME_PROPERTY if name == "Name" else name] = _text(value, name)
    return out


def _whole_batch_problem(error: ConnectorError) -> bool:
    """A 400 that no record of the batch can pass (a property that does not exist)."""
    text = f"{error.code or ''} {error.detail} {error.body or ''}".upper()
    return "PROPERTY_DOESNT_EXIST" in text or "DOES NOT EXIST" in text


class BatchWriter:
    def __init__(self, apis: Any, call: Call) -> None:
        self.apis = apis
        self.call = call

    def update(
        self, object_type: str, records: Mapping[str, Mapping[str, Any]]
    ) -> list[WriteResult]:
        items = [
            (str(record_id), {"id": str(record_id), "properties": _properties(fields)})
            for record_id, fields in records.items()
        ]
        return self._write(object_type, "update", items, by_id=True)

    def upsert(
        self,
        object_type: str,
        external_id: str,
        records: Mapping[str, Mapping[str, Any]],
        *,
        name_required: bool = False,
    ) -> list[WriteResult]:
        """``name_required``: the object requires ``kpi_name`` (setup's scorecard object);
        a record given without a name is named by its key."""
        items = []
        for key, fields in records.items():
            if external_id in fields:
                raise ValueError(f"{external_id} is the key: give it as the record's key only")
            properties = _properties(fields)
            if name_required:
                properties.setdefault(NAME_PROPERTY, str(key))
            items.append(
                (
                    str(key),
                    {"id": str(key), "idProperty": external_id, "properties": properties},
                )
            )
        return self._write(object_type, "upsert", items, by_id=False, external_id=external_id)

    def _write(
        self,
        object_type: str,
        verb: str,
        items: list[tuple[str, dict[str, Any]]],
        *,
        by_id: bool,
        external_id: str | None = None,
    ) -> list[WriteResult]:
        return write_in_batches(
            items,
            BATCH_SIZE,
            lambda batch: self._batch(object_type, verb, batch, by_id, external_id),
            by_id=by_id,
        )

    def _batch(
        self,
        object_type: str,
        verb: str,
        batch: Sequence[tuple[str, dict[str, Any]]],
        by_id: bool,
        external_id: str | None,
    ) -> list[WriteResult]:
        method = getattr(self.apis.objects_batch, verb)
        what = f"POST /crm/v3/objects/{object_type}/batch/{verb}"
        try:
            answer = self.call(
                "api",
                what,
                method,
                object_type,
                {"inputs": [body for _, body in batch]},
                statuses=(200, 207),
            )
        except StopRun:
            raise
        except RequestRejected as error:
            if error.status == 400 and len(batch) > 1 and not _whole_batch_problem(error):
                middle = len(batch) // 2
                return self._batch(object_type, verb, batch[:middle], by_id, external_id) + (
                    self._batch(object_type, verb, batch[middle:], by_id, external_id)
                )
            return batch_failed(batch, by_id, error)
        except ConnectorError as error:
            return batch_failed(batch, by_id, error)
        return self._results(batch, answer.body, by_id, external_id)

    @staticmethod
    def _results(
        batch: Sequence[tuple[str, dict[str, Any]]],
        body: Any,
        by_id: bool,
        external_id: str | None,
    ) -> list[WriteResult]:
        body = body if isinstance(body, dict) else {}
        done: dict[str, WriteResult] = {}
        results = [r for r in body.get("results") or () if isinstance(r, dict)]
        keys = [k for k, _ in batch]
        for position, result in enumerate(results):
            record_id = str(result.get("id")) if result.get("id") is not None else None
            props = found if isinstance(found := result.get("properties"), dict) else {}
            if by_id:
                key = record_id
            else:
                key = props.get(external_id) if external_id else None
                if key is None and len(results) == len(batch):
                    key = keys[position]  # HubSpot answered without the key: batch order
            if key is None:
                continue
            done[str(key)] = WriteResult(
                record_id, str(key), True, created=result.get("new") is True
            )
        unnamed: list[str] = []  # errors that name no record of this batch
        for code, message, named in _batch_errors(body, external_id):
            mine = [key for key in named if key in keys]
            if not mine:
                unnamed.append(f"{code} {message}")
            for key in mine:
                if key not in done:
                    log.info("record %s not written: %s %s", key, code, message)
                    done[key] = WriteResult.failed(key, key if by_id else None, code, message)
        message = "HubSpot's answer neither wrote nor refused this record"
        if unnamed:  # whatever HubSpot did say, rather than nothing
            message = (
                "HubSpot's answer neither wrote nor named this record; it refused"
                f" {len(unnamed)} record(s) without naming them: {'; '.join(unnamed[:3])}"
            )
        return [
            done.get(key)
            or WriteResult.failed(key, key if by_id else None, "UNEXPECTED_RESPONSE", message)
            for key in keys
        ]


def _batch_errors(
    body: dict[str, Any], external_id: str | None
) -> list[tuple[str, str, list[str]]]:
    """(category, message, the keys it names) of each error of a 207 batch answer, for
    updates and upserts alike. A ``StandardError`` names its records in ``context``, a map of
    lists: ``ids`` (the ids as the inputs gave them: record ids, or idProperty values for an
    upsert), ``id``, or the idProperty's own name."""
    out = []
    for error in body.get("errors") or ():
        if not isinstance(error, dict):
            continue
        context = found if isinstance(found := error.get("context"), dict) else {}
        named: list[str] = []
        for name in ("ids", "id", external_id):
            values = context.get(name) if name else None
            if values is not None:
                named.extend(str(v) for v in (values if isinstance(values, list) else [values]))
        code = str(error.get("category") or error.get("subCategory") or "ERROR")
        message = str(error.get("message") or "refused")
        out.append((code, message, named))
    return out


_TYPES: dict[str, tuple[str, str]] = {
    "number": ("number", "number"),
    "percent": ("number", "number"),
    "currency": ("number", "number"),
    "date": ("date", "date"),
    "datetime": ("datetime", "date"),
    "text": ("string", "text"),
    "lookup": ("string", "text"),
}


def property_definition(target: TargetField) -> dict[str, Any]:
    """The PropertyCreate body of a target field."""
    kind, field_type = _TYPES[target.type]
    body: dict[str, Any] = {
        "name": target.name,
        "label": target.label,
        "type": kind,
        "fieldType": field_type,
        "groupName": PROPERTY_GROUP,
    }
    if target.help_text:
        body["description"] = target.help_text
    if target.unique or target.external_id:
        body["hasUniqueValue"] = True
    if target.type == "currency":
        body["showCurrencySymbol"] = True
    return body


class TargetManager:
    def __init__(self, apis: Any, call: Call) -> None:
        self.apis = apis
        self.call = call
        self._schemas: list[dict[str, Any]] | None = None
        self._properties: dict[str, list[dict[str, Any]]] = {}
        #: The worker's property group per object type (None: known to be missing).
        self._groups: dict[str, dict[str, Any] | None] = {}
        #: Object types whose schema's property list is out of date: read their properties.
        self._stale: set[str] = set()

    # ---- object types ----------------------------------------------------------------------

    def schemas(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        if self._schemas is None or refresh:
            answer = self.call(
                "api", "GET /crm-object-schemas/v3/schemas", self.apis.schemas.get_all
            )
            body = answer.body if isinstance(answer.body, dict) else {}
            self._schemas = [s for s in body.get("results") or () if isinstance(s, dict)]
        return self._schemas

    def schema_of(self, name: str) -> dict[str, Any] | None:
        """The schema of a custom object by any of its names; None for standard objects and
        custom objects that do not exist (yet)."""
        return self._schema_of(name)

    def _schema_of(self, name: str) -> dict[str, Any] | None:
        if name in {"deals", "companies", "contacts", "meetings"} or name.startswith("0-"):
            return None
        short = name[2:] if name.startswith("p_") else name
        for schema in self.schemas():
            if name in (schema.get("objectTypeId"), schema.get("fullyQualifiedName")):
                return schema
            if short == schema.get("name"):
                return schema
        return None

    def object_type(self, name: str) -> str:
        """The id HubSpot's API takes for a configured object name (``p_kpi_scorecard``,
        ``kpi_scorecard``, ``p123_kpi_scorecard`` or ``2-123``): its objectTypeId."""
        schema = self._schema_of(name)
        if schema is not None and schema.get("objectTypeId"):
            return str(schema["objectTypeId"])
        return name

    def requires_name(self, name: str) -> bool:
        schema = self._schema_of(name)
        return schema is not None and NAME_PROPERTY in (schema.get("requiredProperties") or ())

    def is_custom(self, name: str) -> bool:
        """Whether ``name`` names a custom object (existing or not), not a standard one."""
        return self._is_custom(name)

    def _is_custom(self, name: str) -> bool:
        return name not in {"deals", "companies", "contacts", "meetings"} and not name.startswith(
            "0-"
        )

    # ---- properties ------------------------------------------------------------------------

    def properties_of(self, object_type: str) -> list[dict[str, Any]]:
        """The property definitions of ``object_type`` (cached for the connector's life; a
        custom object's are its schema's, read with every schema)."""
        schema = self._schema_of(object_type) if self._is_custom(object_type) else None
        fresh = object_type not in self._stale
        if object_type not in self._properties and fresh and isinstance(schema, dict):
            listed = schema.get("properties")
            if isinstance(listed, list):
                self._properties[object_type] = [p for p in listed if isinstance(p, dict)]
        if object_type not in self._properties:
            answer = self.call(
                "api",
                f"GET /crm/v3/properties/{object_type}",
                self.apis.properties.get_all,
                object_type,
            )
            body = answer.body if isinstance(answer.body, dict) else {}
            self._properties[object_type] = [
                p for p in body.get("results") or () if isinstance(p, dict)
            ]
        return self._properties[object_type]

    def _forget(self, object_type: str) -> None:
        """Read ``object_type``'s properties again when next needed (not from its schema)."""
        self._properties.pop(object_type, None)
        self._stale.add(object_type)

    def _existing(self, object_type: str) -> set[str]:
        return {str(p.get("name")) for p in self.properties_of(object_type)}

    def missing(
        self, objects: Sequence[TargetObject], fields: Sequence[TargetField]
    ) -> tuple[list[TargetObject], list[TargetField]]:
        missing_objects = [o for o in objects if self._schema_of(o.name) is None]
        absent = {o.name for o in missing_objects}
        missing_fields: list[TargetField] = []
        for target in fields:
            if target.name in BUILT_IN:
                continue
            if target.object in absent:
                missing_fields.append(target)
                continue
            if self._is_custom(target.object) and self._schema_of(target.object) is None:
                missing_fields.append(target)
                continue
            if target.name not in self._existing(self.object_type(target.object)):
                missing_fields.append(target)
        return missing_objects, missing_fields

    def create(self, objects: Sequence[TargetObject], fields: Sequence[TargetField]) -> None:
        missing_objects, missing_fields = self.missing(objects, fields)
        for target_object in missing_objects:
            own = [f for f in missing_fields if f.object == target_object.name]
            self._create_object(target_object, own)
        created = {o.name for o in missing_objects}
        rest = [f for f in missing_fields if f.object not in created]
        by_object: dict[str, list[TargetField]] = {}
        for target in rest:
            by_object.setdefault(self.object_type(target.object), []).append(target)
        for object_type, targets in by_object.items():
            self._ensure_group(object_type)
            for start in range(0, len(targets), BATCH_SIZE):
                chunk = targets[start : start + BATCH_SIZE]
                answer = self.call(
                    "api",
                    f"POST /crm/v3/properties/{object_type}/batch/create",
                    self.apis.properties_batch.create,
                    object_type,
                    {"inputs": [property_definition(t) for t in chunk]},
                    statuses=(201, 207),
                )
                self._check_created(answer.body, object_type)
                self._note_created(object_type, answer.body)

    def _note_created(self, object_type: str, body: Any) -> None:
        """Add the properties a batch create answered to the cache (no re-read); any error
        (already existing ones) drops the cache, to be read again when needed."""
        body = body if isinstance(body, dict) else {}
        cached = self._properties.get(object_type)
        results = [p for p in body.get("results") or () if isinstance(p, dict)]
        if cached is None or body.get("errors") or not results:
            self._forget(object_type)
        else:
            cached.extend(results)

    @staticmethod
    def _check_created(body: Any, object_type: str) -> None:
        body = body if isinstance(body, dict) else {}
        problems = [
            e
            for e in body.get("errors") or ()
            if isinstance(e, dict)
            and "ALREADY_EXISTS" not in str(e.get("category", "")).upper()
            and "already exists" not in str(e.get("message", "")).lower()
        ]
        if problems:
            messages = "; ".join(str(e.get("message")) for e in problems)
            raise RequestRejected(
                f"HubSpot refused to create properties on {object_type}: {messages}",
                status=207,
                code=str(problems[0].get("category") or "ERROR"),
            )

    def _ensure_group(self, object_type: str) -> None:
        try:
            answer = self.call(
                "api",
                f"POST /crm/v3/properties/{object_type}/groups",
                self.apis.property_groups.create,
                object_type,
                {"name": PROPERTY_GROUP, "label": PROPERTY_GROUP_LABEL, "displayOrder": -1},
                statuses=(201,),
            )
        except RequestRejected as error:
            if error.status != 409:
                raise
            self._groups.pop(object_type, None)  # it exists: read it when needed
        else:
            body = answer.body if isinstance(answer.body, dict) else None
            self._groups[object_type] = body

    def group(self, object_type: str) -> dict[str, Any] | None:
        """The worker's property group on ``object_type`` (``GET .../groups/kpi_worker``, once),
        None when it does not exist."""
        if object_type not in self._groups:
            try:
                answer = self.call(
                    "api",
                    f"GET /crm/v3/properties/{object_type}/groups/{PROPERTY_GROUP}",
                    self.apis.property_groups.get_by_name,
                    object_type,
                    PROPERTY_GROUP,
                )
            except RequestRejected as error:
                if error.status != 404:
                    raise
                self._groups[object_type] = None
            else:
                body = answer.body if isinstance(answer.body, dict) else None
                self._groups[object_type] = body
        return self._groups[object_type]

    # ---- updates (setup's plan) --------------------------------------------------------------

    def update_property(self, object_type: str, name: str, changes: dict[str, Any]) -> None:
        """``PATCH /crm/v3/properties/{objectType}/{propertyName}`` (a PropertyUpdate)."""
        answer = self.call(
            "api",
            f"PATCH /crm/v3/properties/{object_type}/{name}",
            self.apis.properties.update,
            object_type,
            name,
            changes,
        )
        self._replace_cached(object_type, name, answer.body)

    def _replace_cached(self, object_type: str, name: str, body: Any) -> None:
        cached = self._properties.get(object_type)
        if cached is None or not isinstance(body, dict):
            self._forget(object_type)
            return
        self._properties[object_type] = [body if p.get("name") == name else p for p in cached]

    def update_group(self, object_type: str, changes: dict[str, Any]) -> None:
        """``PATCH /crm/v3/properties/{objectType}/groups/kpi_worker`` (PropertyGroupUpdate)."""
        answer = self.call(
            "api",
            f"PATCH /crm/v3/properties/{object_type}/groups/{PROPERTY_GROUP}",
            self.apis.property_groups.update,
            object_type,
            PROPERTY_GROUP,
            changes,
        )
        self._groups[object_type] = answer.body if isinstance(answer.body, dict) else None

    def update_schema(self, object_type: str, changes: dict[str, Any]) -> None:
        """``PATCH /crm-object-schemas/v3/schemas/{objectType}`` (ObjectTypeDefinitionPatch);
        the answer (an ObjectTypeDefinition, without properties) updates the cached schema."""
        answer = self.call(
            "api",
            f"PATCH /crm-object-schemas/v3/schemas/{object_type}",
            self.apis.schemas.update,
            object_type,
            changes,
        )
        schema = self._schema_of(object_type)
        if schema is not None and isinstance(answer.body, dict):
            schema.update({k: v for k, v in answer.body.items() if k != "properties"})

    def _create_object(self, target: TargetObject, fields: Sequence[TargetField]) -> None:
        name = target.name[2:] if target.name.startswith("p_") else target.name
        properties = [
            {
                "name": NAME_PROPERTY,
                "label": target.name_field_label,
                "type": "string",
                "fieldType": "text",
            }
        ]
        unique = []
        for field in fields:
            if field.name in BUILT_IN or field.name == NAME_PROPERTY:
                continue
            definition = property_definition(field)
            definition.pop("groupName", None)
            properties.append(definition)
            if definition.get("hasUniqueValue"):
                unique.append(field.name)
        defined = {str(p["name"]) for p in properties}
        body = {
            "name": name,
            "labels": {"singular": target.label, "plural": target.plural_label},
            "primaryDisplayProperty": NAME_PROPERTY,
            "secondaryDisplayProperties": [n for n in target.headline_fields if n in defined],
            "requiredProperties": [NAME_PROPERTY],
            "searchableProperties": [NAME_PROPERTY, *unique],
            "properties": properties,
            "associatedObjects": [],
        }
        self.call(
            "api",
            "POST /crm-object-schemas/v3/schemas",
            self.apis.schemas.create,
            body,
            statuses=(201,),
        )
        self.schemas(refresh=True)
