"""What the Salesforce connector writes: field values (sObject Collections) and target fields.

Values: ``PATCH composite/sobjects`` (update by id) and ``PATCH
composite/sobjects/{Object}/{ExternalIdField}`` (upsert by external id), 200 records a call,
``allOrNone: false``, one :class:`WriteResult` per record in the caller's order. A record
Salesforce refuses is a failed result (the error table's ``skip_record``); a whole call that
fails after the retry policy gave up marks its records failed and the next batch goes on; a
:class:`StopRun` (daily limit) marks this and every later batch failed without sending them,
puts all results on the exception and re-raises it.

Targets: ``missing`` describes each object once per connector instance (one run) and caches
the field names; ``create`` makes custom objects and fields through the Tooling API
(``sobjects/CustomObject``, ``sobjects/CustomField``, FullName + Metadata), only those still
missing, and treats DUPLICATE_DEVELOPER_NAME as "already there", so it is idempotent.
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
    WriteItem,
    WriteResult,
    batch_failed,
    write_in_batches,
)
from crm_kpi_worker.connectors.errors import (
    ConnectorError,
    RequestRejected,
    StopRun,
    classify,
    codes_of,
)
from crm_kpi_worker.connectors.salesforce import soql

__all__ = ["CollectionWriter", "TargetManager", "create_by_tooling", "field_metadata", "json_value"]

log = logging.getLogger(__name__)

Fetch = Callable[[Callable[[], Any]], Any]


def json_value(value: Any, field: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{field}: {value} cannot be written (not a finite number)")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{field}: {value} cannot be written (not a finite number)")
        return float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{field}: a datetime to write must be timezone-aware")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"{field}: cannot write a value of type {type(value).__name__}")


def _record_body(sobject: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"attributes": {"type": sobject}}
    for name, value in fields.items():
        if name.lower() in {"id", "attributes"}:
            raise ValueError(f"field {name!r} cannot be set; records are keyed by the caller")
        body[soql.api_name(name)] = json_value(value, name)
    return body


class CollectionWriter:
    def __init__(self, client: Any, fetch: Fetch, batch_size: int) -> None:
        self.client = client
        self.fetch = fetch
        self.batch_size = batch_size

    def update(self, sobject: str, records: Mapping[str, Mapping[str, Any]]) -> list[WriteResult]:
        sobject = soql.api_name(sobject, "object")
        items = [
            (str(record_id), {**_record_body(sobject, fields), "id": str(record_id)})
            for record_id, fields in records.items()
        ]
        return self._write("composite/sobjects", items, by_id=True)

    def upsert(
        self, sobject: str, external_id: str, records: Mapping[str, Mapping[str, Any]]
    ) -> list[WriteResult]:
        sobject = soql.api_name(sobject, "object")
        external_id = soql.api_name(external_id, "external id field")
        items = []
        for key, fields in records.items():
            if any(name.lower() == external_id.lower() for name in fields):
                raise ValueError(f"{external_id} is the key: give it as the record's key only")
            items.append((str(key), {**_record_body(sobject, fields), external_id: str(key)}))
        return self._write(f"composite/sobjects/{sobject}/{external_id}", items, by_id=False)

    def _write(self, path: str, items: list[WriteItem], *, by_id: bool) -> list[WriteResult]:
        def send(batch: Sequence[WriteItem]) -> list[WriteResult]:
            body = {"allOrNone": False, "records": [record for _, record in batch]}
            try:
                answer = self.fetch(lambda: self.client.restful(path, method="PATCH", json=body))
            except StopRun:
                raise
            except ConnectorError as error:
                return batch_failed(batch, by_id, error)
            return self._results(batch, answer, by_id=by_id)

        return write_in_batches(items, self.batch_size, send, by_id=by_id)

    @staticmethod
    def _results(batch: Sequence[WriteItem], answer: Any, *, by_id: bool) -> list[WriteResult]:
        if not isinstance(answer, list) or len(answer) != len(batch):
            return [
                WriteResult.failed(
                    key,
                    key if by_id else None,
                    "UNEXPECTED_RESPONSE",
                    "Salesforce did not answer one result per record",
                )
                for key, _ in batch
            ]
        out = []
        for (key, _), result in zip(batch, answer, strict=True):
            result = result if isinstance(result, dict) else {}
            record_id = result.get("id") or (key if by_id else None)
            if result.get("success") is True:
                out.append(WriteResult(record_id, key, True, created=bool(result.get("created"))))
                continue
            code, message = codes_of(result.get("errors") or [])
            rule = classify(code=code, message=message, per_record=True)
            log.info("record %s not written (%s): %s %s", key, rule.action, code, message)
            out.append(
                WriteResult.failed(key, record_id, code or "UNKNOWN_ERROR", message or "failed")
            )
        return out


_TOOLING_TYPES = {
    "number": "Number",
    "percent": "Percent",
    "currency": "Currency",
    "date": "Date",
    "datetime": "DateTime",
    "text": "Text",
    "lookup": "Lookup",
}


def field_metadata(target: TargetField) -> dict[str, Any]:
    """The Tooling API Metadata of a custom field."""
    kind = _TOOLING_TYPES[target.type]
    metadata: dict[str, Any] = {"label": target.label, "type": kind}
    if kind in ("Number", "Percent", "Currency"):
        metadata["precision"] = target.precision
        metadata["scale"] = target.scale
    elif kind == "Text":
        metadata["length"] = target.length
    elif kind == "Lookup":
        if not target.reference_to:
            raise ValueError(f"lookup field {target.name} needs reference_to")
        metadata["referenceTo"] = soql.api_name(target.reference_to, "object")
        base = target.name.removesuffix("__c")
        metadata["relationshipName"] = base
        metadata["relationshipLabel"] = target.label
        metadata["deleteConstraint"] = "SetNull"
    if target.help_text:
        metadata["inlineHelpText"] = target.help_text
    if target.external_id:
        metadata["externalId"] = True
    if target.unique:
        metadata["unique"] = True
    return metadata


class TargetManager:
    def __init__(self, client: Any, fetch: Fetch) -> None:
        self.client = client
        self.fetch = fetch
        self._fields: dict[str, set[str] | None] = {}  # object (lower) -> field names (lower)
        self._described: dict[str, list[dict[str, Any]] | None] = {}  # object (lower) -> fields

    def describe(self, sobject: str) -> list[dict[str, Any]] | None:
        """The describe answer's ``fields`` of ``sobject`` (cached); None when the object does
        not exist."""
        key = soql.api_name(sobject, "object").lower()
        if key not in self._described:
            try:
                described = self.fetch(lambda: self.client.restful(f"sobjects/{sobject}/describe"))
            except RequestRejected as error:
                if error.status == 404 or error.code in ("NOT_FOUND", "INVALID_TYPE"):
                    self._described[key] = None
                    return None
                raise
            fields = (described or {}).get("fields") or []
            self._described[key] = [f for f in fields if isinstance(f, dict)]
        return self._described[key]

    def fields_of(self, sobject: str) -> set[str] | None:
        """Field names (lower case) of ``sobject``; None when the object does not exist."""
        key = soql.api_name(sobject, "object").lower()
        if key not in self._fields:
            described = self.describe(sobject)
            self._fields[key] = (
                None if described is None else {str(f.get("name", "")).lower() for f in described}
            )
        return self._fields[key]

    def missing(
        self, objects: Sequence[TargetObject], fields: Sequence[TargetField]
    ) -> tuple[list[TargetObject], list[TargetField]]:
        missing_objects = [o for o in objects if self.fields_of(o.name) is None]
        missing_fields = []
        for target in fields:
            names = self.fields_of(target.object)
            if names is None or soql.api_name(target.name).lower() not in names:
                missing_fields.append(target)
        return missing_objects, missing_fields

    def create(self, objects: Sequence[TargetObject], fields: Sequence[TargetField]) -> None:
        missing_objects, missing_fields = self.missing(objects, fields)
        # The describe answers read before now lack what is created (they type Bulk CSV).
        for sobject in [*(o.name for o in missing_objects), *(f.object for f in missing_fields)]:
            self._described.pop(soql.api_name(sobject, "object").lower(), None)
        for target in missing_objects:
            self._tooling(
                "CustomObject",
                soql.api_name(target.name, "object"),
                {
                    "label": target.label,
                    "pluralLabel": target.plural_label,
                    "nameField": {"type": "Text", "label": target.name_field_label},
                    "deploymentStatus": "Deployed",
                    "sharingModel": "ReadWrite",
                },
            )
            self._fields[target.name.lower()] = {"id", "name", "ownerid"}
        for new_field in missing_fields:
            sobject = soql.api_name(new_field.object, "object")
            full_name = f"{sobject}.{soql.api_name(new_field.name)}"
            self._tooling("CustomField", full_name, field_metadata(new_field))
            known = self._fields.get(new_field.object.lower())
            if known is not None:
                known.add(new_field.name.lower())
            else:
                self._fields.pop(new_field.object.lower(), None)

    def _tooling(self, kind: str, full_name: str, metadata: dict[str, Any]) -> None:
        create_by_tooling(self.client, self.fetch, kind, full_name, metadata)


def create_by_tooling(
    client: Any,
    fetch: Fetch,
    kind: str,
    full_name: str,
    metadata: dict[str, Any],
) -> None:
    """Create a setup record through the Tooling API (``sobjects/<kind>`` with ``FullName`` and
    ``Metadata``); one that already exists is said, not an error."""
    try:
        fetch(
            lambda: client.toolingexecute(
                f"sobjects/{kind}",
                method="POST",
                data={"FullName": full_name, "Metadata": metadata},
            )
        )
    except RequestRejected as error:
        if error.code != "DUPLICATE_DEVELOPER_NAME":
            raise
        log.info("%s %s already exists", kind, full_name)
        return
    log.info("created %s %s", kind, full_name)
