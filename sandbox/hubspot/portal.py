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

Rooms: ``catalog.py`` (ids, pipeline, stages), ``formats.py`` (wire formats), ``properties.py``
(definitions, value validation), ``objects.py`` (the column store), ``seeding.py`` (the data
set rendered as objects); this module holds the API's semantics (read, write, archive,
properties, groups, custom object schemas).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.hubspot.catalog import (
    CUSTOM_ID_BASE,
    CUSTOM_ID_STRIDE,
    OWNER_ID_BASE,
    PORTAL_ID,
    USER_ID_BASE,
)
from crm_kpi_worker.sandbox.hubspot.formats import (
    NULL_MS,
    iso_ms,
    stamp,
)
from crm_kpi_worker.sandbox.hubspot.objects import (
    Column,
    IdColumn,
    MsColumn,
    ObjectStore,
    Owner,
    RefColumn,
    column_for,
)
from crm_kpi_worker.sandbox.hubspot.properties import (
    NAME_PATTERN,
    PROPERTY_TYPES,
    GroupDef,
    PropertyDef,
    PropertyValueError,
    parse_value,
)
from crm_kpi_worker.sandbox.hubspot.seeding import seed_portal


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
        self.teams: dict[str, str] = {}
        self.owners: list[Owner] = []
        seed_portal(self)

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
        if not NAME_PATTERN.match(name):
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

    def update_property(self, store: ObjectStore, name: str, body: Any) -> PropertyDef:
        """``PATCH /crm/v3/properties/{objectType}/{propertyName}`` (PropertyUpdate): the
        fields given change. HubSpot's own properties (``readOnlyDefinition``) are refused."""
        with self.lock:
            pdef = self._property(store, name)
            if not isinstance(body, dict):
                raise WriteError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
            _refuse_unknown(body, PROPERTY_PATCH_FIELDS, "PropertyUpdate")
            if pdef.hubspot_defined:
                raise WriteError(
                    400,
                    "VALIDATION_ERROR",
                    f"Property {name} is a HubSpot-defined property: its definition is read-only.",
                    context={"propertyName": [name]},
                )
            group = body.get("groupName")
            if group is not None and group not in store.groups:
                raise WriteError(
                    400,
                    "VALIDATION_ERROR",
                    f"Property group '{group}' does not exist for {store.name}.",
                    context={"groupName": [str(group)]},
                )
            kind = str(body.get("type") or pdef.type)
            field_type = str(body.get("fieldType") or pdef.field_type)
            if kind not in PROPERTY_TYPES or field_type not in PROPERTY_TYPES[kind]:
                raise WriteError(
                    400,
                    "VALIDATION_ERROR",
                    f"fieldType '{field_type}' is not valid for a property of type '{kind}'.",
                )
            if body.get("label") is not None and not str(body["label"]).strip():
                raise WriteError(400, "VALIDATION_ERROR", "A property label cannot be empty.")
            pdef.type, pdef.field_type = kind, field_type
            for key, attribute in PROPERTY_PATCH_ATTRIBUTES.items():
                if body.get(key) is not None:
                    setattr(pdef, attribute, body[key])
            if body.get("options") is not None:
                pdef.options = [dict(o) for o in body["options"] if isinstance(o, dict)]
            pdef.updated_ms = self.now_ms()
            store.version += 1
            return pdef

    def _property(self, store: ObjectStore, name: str) -> PropertyDef:
        pdef = store.properties.get(name)
        if pdef is None:
            raise WriteError(
                404,
                "OBJECT_NOT_FOUND",
                f"Unable to find property {name} for object type {store.type_id}",
                context={"propertyName": [name]},
            )
        return pdef

    def update_group(self, store: ObjectStore, name: str, body: Any) -> GroupDef:
        """``PATCH /crm/v3/properties/{objectType}/groups/{groupName}`` (PropertyGroupUpdate:
        label, displayOrder)."""
        with self.lock:
            group = store.groups.get(name)
            if group is None:
                raise WriteError(
                    404,
                    "OBJECT_NOT_FOUND",
                    f"Unable to find property group {name} for {store.type_id}",
                    context={"groupName": [name]},
                )
            if not isinstance(body, dict):
                raise WriteError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
            _refuse_unknown(body, frozenset({"label", "displayOrder"}), "PropertyGroupUpdate")
            if body.get("label") is not None:
                if not str(body["label"]).strip():
                    raise WriteError(400, "VALIDATION_ERROR", "A group label cannot be empty.")
                group.label = str(body["label"])
            if body.get("displayOrder") is not None:
                group.display_order = int(body["displayOrder"])
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
            if not NAME_PATTERN.match(name):
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
            self.add_standard_columns(store, np.zeros(0, np.int64), np.zeros(0, np.int64), group)
            self.add_property(
                store, "hubspot_owner_id", "Owner", "enumeration", "select",
                self.owner_column(np.zeros(0, dtype=np.int32)), external_options=True,
                validator=self.owner_validator, group=group,
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
            _check_schema_properties(store, body)
            store.schema = {
                "requiredProperties": list(body.get("requiredProperties") or []),
                "searchableProperties": list(body.get("searchableProperties") or []),
                "secondaryDisplayProperties": list(body.get("secondaryDisplayProperties") or []),
                "description": body.get("description"),
                "associatedObjects": list(body.get("associatedObjects") or []),
                "createdAt": now,
                "updatedAt": now,
            }
            key = f"custom:{type_id}"
            self.stores[key] = store
            for alias in (type_id, fqn, f"p_{name}"):
                self._aliases[alias.lower()] = key
            return store

    def update_schema(self, store: ObjectStore, body: Any) -> dict[str, Any]:
        """``PATCH /crm-object-schemas/v3/schemas/{objectType}`` (ObjectTypeDefinitionPatch):
        the fields given change, the others stay; every property named must exist. Answers
        the ObjectTypeDefinition (the schema without its properties and associations)."""
        with self.lock:
            if not isinstance(body, dict):
                raise WriteError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
            _refuse_unknown(body, SCHEMA_PATCH_FIELDS, "ObjectTypeDefinitionPatch")
            labels = body.get("labels")
            if labels is not None and (
                not isinstance(labels, dict)
                or set(labels) - {"singular", "plural"}
                or not all(isinstance(v, str) and v for v in labels.values())
            ):
                raise WriteError(
                    400, "VALIDATION_ERROR", "labels takes non-empty singular and plural texts."
                )
            _check_schema_properties(store, body, patch=True)
            schema = store.schema
            for key in ("requiredProperties", "searchableProperties", "secondaryDisplayProperties"):
                if body.get(key) is not None:
                    schema[key] = list(body[key])
            if body.get("primaryDisplayProperty") is not None:
                store.primary_property = str(body["primaryDisplayProperty"])
            if labels:
                store.singular = labels.get("singular", store.singular)
                store.plural = labels.get("plural", store.plural)
            if body.get("clearDescription"):
                schema["description"] = None
            elif body.get("description") is not None:
                schema["description"] = str(body["description"])
            schema["updatedAt"] = self.now_ms()
            answer = self.schema_json(store)
            for key in ("properties", "associations"):
                answer.pop(key)
            answer["portalId"] = PORTAL_ID
            return answer

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
            "updatedAt": stamp(schema.get("updatedAt", self.setup_ms)),
        }
        if schema.get("description"):
            body["description"] = schema["description"]
        return body

    def custom_stores(self) -> list[ObjectStore]:
        return [s for s in self.stores.values() if s.custom]

    # ---- building blocks (seeding and custom object schemas) ---------------------------

    def register(self, store: ObjectStore, *aliases: str) -> None:
        self.stores[store.name] = store
        for alias in (store.name, store.type_id, *aliases):
            self._aliases[alias.lower()] = store.name

    def add_standard_columns(
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

    def add_property(
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

    def company_count(self) -> int:
        return self.stores["companies"].size

    def owner_column(self, rows: np.ndarray) -> RefColumn:
        return RefColumn(rows.astype(np.int32), OWNER_ID_BASE, lambda: len(self.owners))

    def owner_validator(self, text: str) -> str | None:
        row = RefColumn(np.zeros(0), OWNER_ID_BASE, lambda: len(self.owners)).row_of(text)
        return None if row is not None else f"{text} is not a valid owner id"


#: The fields of the client's ObjectTypeDefinitionPatch, and ``allowsSensitiveProperties`` of
#: HubSpot's OpenAPI spec; anything else is refused as HubSpot refuses unknown JSON fields.
SCHEMA_PATCH_FIELDS = frozenset(
    {
        "secondaryDisplayProperties",
        "requiredProperties",
        "searchableProperties",
        "clearDescription",
        "primaryDisplayProperty",
        "description",
        "restorable",
        "labels",
        "allowsSensitiveProperties",
    }
)
#: The fields of the client's PropertyUpdate.
PROPERTY_PATCH_FIELDS = frozenset(
    {
        "groupName",
        "hidden",
        "options",
        "displayOrder",
        "description",
        "calculationFormula",
        "label",
        "type",
        "fieldType",
        "formField",
    }
)
#: PropertyUpdate fields stored as they come, and the PropertyDef attribute they set.
PROPERTY_PATCH_ATTRIBUTES = {
    "label": "label",
    "description": "description",
    "groupName": "group",
    "hidden": "hidden",
    "displayOrder": "display_order",
    "formField": "form_field",
}


def _refuse_unknown(body: dict[str, Any], known: frozenset[str], model: str) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise WriteError(
            400,
            "VALIDATION_ERROR",
            f'Invalid input JSON: Unrecognized field "{unknown[0]}" (not a field of {model}).',
            context={"field": unknown},
        )


def _check_schema_properties(
    store: ObjectStore, body: dict[str, Any], *, patch: bool = False
) -> None:
    """Every property a schema names (required, searchable, primary and secondary display)
    must be one of the object's properties."""
    for key in ("requiredProperties", "searchableProperties", "secondaryDisplayProperties"):
        names = body.get(key)
        if names is not None and not isinstance(names, list):
            raise WriteError(400, "VALIDATION_ERROR", f"{key} must be a list of property names.")
        unknown = [str(p) for p in names or [] if p not in store.properties]
        if unknown:
            raise WriteError(
                400,
                "VALIDATION_ERROR",
                f"{key} names properties that are not defined: {', '.join(unknown)}",
                context={key: unknown},
            )
    primary = body.get("primaryDisplayProperty") if patch else store.primary_property
    if primary is not None and primary not in store.properties:
        raise WriteError(
            400,
            "VALIDATION_ERROR",
            f"primaryDisplayProperty '{primary}' is not defined.",
            context={"primaryDisplayProperty": [str(primary)]},
        )
