"""Change events as the Pub/Sub API sends them: an Avro schema per entity in Salesforce's shape
and the binary (schemaless) encoding of an event against it.

The schema is a record named ``<Entity>ChangeEvent`` in namespace ``com.sforce.eventbus``; its
first field is the ``ChangeEventHeader`` record, then one field per record field, each a union
``["null", type]`` defaulting to null (booleans, numbers and text as themselves; dates and
datetimes as epoch milliseconds, ``long``). Every field is in every event: the ones an event
does not carry are null (Pub/Sub API's rule; the Streaming API leaves them out instead).

``changedFields``, ``nulledFields`` and ``diffFields`` travel as bitmaps (Pub/Sub API, "Event
Deserialization Considerations"): the first string is ``0x`` and the hexadecimal number whose
bit *i* is set when the schema's top-level field at position *i* is in the list. (Fields
nested in a compound field get more strings, ``<parent position>-0x<bits>``; the sandbox's
change events have no compound fields, so it never sends them.)

A schema's id is a fingerprint of its JSON text, so an entity whose fields change (a custom
field added) gets a new id, and events already delivered keep decoding with the old one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import fastavro

from crm_kpi_worker.sandbox.salesforce.change_events import ChangeEvent, event_fields
from crm_kpi_worker.sandbox.salesforce.store import FieldDef, Table

__all__ = ["EventSchema", "bitmap_of", "names_in_bitmap", "schema_for"]

NAMESPACE = "com.sforce.eventbus"
CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
    "SNAPSHOT",
)
_STRING_ARRAY = {"type": "array", "items": "string"}
HEADER_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "ChangeEventHeader",
    "namespace": NAMESPACE,
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": _STRING_ARRAY},
        {
            "name": "changeType",
            "type": {
                "type": "enum",
                "name": "ChangeType",
                "namespace": NAMESPACE,
                "symbols": list(CHANGE_TYPES),
            },
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": _STRING_ARRAY},
        {"name": "diffFields", "type": _STRING_ARRAY},
        {"name": "changedFields", "type": _STRING_ARRAY},
    ],
}
_AVRO_TYPES = {
    "boolean": "boolean",
    "double": "double",
    "currency": "double",
    "percent": "double",
    "int": "int",
    "date": "long",
    "datetime": "long",
}


def _avro_type(definition: FieldDef) -> str:
    return _AVRO_TYPES.get(definition.type, "string")


@dataclass(frozen=True)
class EventSchema:
    """One entity's change-event schema: its JSON, id, field order and parsed form."""

    entity: str
    schema_json: str
    schema_id: str
    field_names: tuple[str, ...]  # top-level, ChangeEventHeader first
    parsed: Any

    def encode(self, event: ChangeEvent) -> bytes:
        """The event's Avro binary encoding (no container header, as Pub/Sub sends it)."""
        header = dict(event.header)
        for name in ("changedFields", "nulledFields", "diffFields"):
            header[name] = bitmap_of(header[name], self.field_names)
        record = {name: event.values.get(name) for name in self.field_names[1:]}
        record["ChangeEventHeader"] = header
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self.parsed, record)
        return out.getvalue()


def schema_for(table: Table) -> EventSchema:
    """The change-event schema of ``table``'s entity as its fields are now."""
    fields = event_fields(table)
    schema = {
        "type": "record",
        "name": f"{table.name.removesuffix('__c')}{'__' if table.sobject.custom else ''}"
        "ChangeEvent",
        "namespace": NAMESPACE,
        "fields": [
            {"name": "ChangeEventHeader", "type": HEADER_SCHEMA},
            *({"name": d.name, "type": ["null", _avro_type(d)], "default": None} for d in fields),
        ],
    }
    text = json.dumps(schema, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).digest()[:16]
    schema_id = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return EventSchema(
        table.name,
        text,
        schema_id,
        ("ChangeEventHeader", *(d.name for d in fields)),
        fastavro.parse_schema(json.loads(text)),
    )


def bitmap_of(names: list[str], field_names: tuple[str, ...]) -> list[str]:
    """Field names as the Pub/Sub API's bitmap strings (an empty list stays empty)."""
    if not names:
        return []
    positions = {name.lower(): i for i, name in enumerate(field_names)}
    bits = 0
    for name in names:
        bits |= 1 << positions[name.lower()]
    digits = format(bits, "X")
    return ["0x" + digits.rjust(len(digits) + len(digits) % 2, "0")]


def names_in_bitmap(bitmap: list[str], field_names: tuple[str, ...]) -> list[str]:
    """The field names of a top-level bitmap (what a subscriber decodes; tests)."""
    if not bitmap:
        return []
    bits = int(bitmap[0], 16)
    return [name for i, name in enumerate(field_names) if bits >> i & 1]
