"""The sandbox Salesforce's sObject Collections (``composite/sobjects``): create, update,
upsert and delete up to 200 records a call, record by record or all-or-none (an all-or-none
batch with a failure takes its writes back), and retrieve by ids. Each record is written by
``record_writes.RecordWriter``, as Bulk API 2.0 ingest jobs write theirs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.salesforce.org import RecordError
from crm_kpi_worker.sandbox.salesforce.record_writes import RecordWriter, pop_record_id
from crm_kpi_worker.sandbox.salesforce.routes import OrgRoutes, SalesforceError
from crm_kpi_worker.sandbox.salesforce.store import FieldValueError

MAX_COLLECTION_RECORDS = 200


class CollectionRoutes(OrgRoutes):
    """Many records a call, each with its own result."""

    def on_collections(self, request: Request, user_row: int, version: str) -> Response:
        if request.method == "DELETE":
            ids = [i for i in request.args.get("ids", "").split(",") if i]
            all_or_none = request.args.get("allOrNone", "false").lower() == "true"
            if not ids or len(ids) > MAX_COLLECTION_RECORDS:
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"ids: between 1 and {MAX_COLLECTION_RECORDS} ids are required",
                )
            results = []
            writer = self._writer(request, user_row)
            for record_id in ids:
                table = next(
                    (t for t in self.org.tables.values() if t.sobject.key_prefix == record_id[:3]),
                    None,
                )
                try:
                    if table is None:
                        raise RecordError("MALFORMED_ID", f"invalid record id: {record_id}", ["Id"])
                    writer.delete(table.name, record_id)
                    results.append({"id": record_id, "success": True, "errors": []})
                except RecordError as exc:
                    results.append({"id": record_id, "success": False, "errors": [exc.as_result()]})
            del all_or_none
            return self._json(results)
        body = self._collection_body(request)
        creating = request.method == "POST"
        return self._json(
            self._write_collection(
                request, body, user_row, creating=creating, ext_field=None, sobject=None
            )
        )

    def on_collections_typed(
        self, request: Request, user_row: int, version: str, sobject: str
    ) -> Response:
        """``composite/sobjects/{Type}``: retrieve (GET, or POST with ids), and the forms with
        the type in the URL that Salesforce's Postman collection uses for update and delete."""
        if request.method == "PATCH":
            body = self._collection_body(request)
            return self._json(
                self._write_collection(
                    request, body, user_row, creating=False, ext_field=None, sobject=sobject
                )
            )
        if request.method == "DELETE":
            self._table(sobject, user_row)
            return self.on_collections(request, user_row, version)
        table = self._table(sobject, user_row)
        if request.method == "POST":
            body = self._body(request) or {}
            ids, fields = body.get("ids", []), ",".join(body.get("fields", []))
        else:
            ids = [i for i in request.args.get("ids", "").split(",") if i]
            fields = request.args.get("fields", "")
        if not fields:
            raise SalesforceError(400, "MALFORMED_QUERY", "The 'fields' parameter is required")
        out: list[Any] = []
        with self.org.lock:
            for record_id in ids:
                try:
                    out.append(
                        self._record(
                            table, self.org.find_row(table, record_id), version, fields, user_row
                        )
                    )
                except RecordError:
                    out.append(None)
        return self._json(out)

    def on_collections_upsert(
        self, request: Request, user_row: int, version: str, sobject: str, ext_field: str
    ) -> Response:
        body = self._collection_body(request)
        return self._json(
            self._write_collection(
                request, body, user_row, creating=True, ext_field=ext_field, sobject=sobject
            )
        )

    def _collection_body(self, request: Request) -> dict[str, Any]:
        body = self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SalesforceError(
                400,
                "JSON_PARSER_ERROR",
                "The request body must be an object with a 'records' array",
            )
        records = body["records"]
        if not records:
            raise SalesforceError(400, "INVALID_FIELD", "No records to process")
        if len(records) > MAX_COLLECTION_RECORDS:
            raise SalesforceError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS}"
                " records into this call",
            )
        for record in records:
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("attributes"), dict)
                or not record["attributes"].get("type")
            ):
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    "Each record needs an 'attributes' object with its sObject 'type'",
                )
        return body

    def _write_collection(
        self,
        request: Request,
        body: dict[str, Any],
        user_row: int,
        *,
        creating: bool,
        ext_field: str | None,
        sobject: str | None,
    ) -> list[dict[str, Any]]:
        all_or_none = bool(body.get("allOrNone", False))
        records: list[dict[str, Any]] = body["records"]
        results: list[dict[str, Any] | None] = [None] * len(records)
        writer = self._writer(request, user_row)
        with self.org.lock:
            undo: list[Callable[[], None]] = []
            failed = False
            for position, record in enumerate(records):
                sobject_name = record["attributes"]["type"]
                if sobject is not None and sobject_name.lower() != sobject.lower():
                    results[position] = _failure(
                        RecordError(
                            "INVALID_FIELD",
                            f"Record type {sobject_name} does not match the URL's {sobject}",
                        )
                    )
                    failed = True
                    continue
                values = {k: v for k, v in record.items() if k != "attributes"}
                record_id = pop_record_id(values)
                try:
                    outcome = writer.save(
                        sobject_name,
                        values,
                        record_id,
                        creating=creating,
                        ext_field=ext_field,
                        before_write=lambda t, r, v: undo.append(self._undo_for(t, r, v)),
                    )
                    result: dict[str, Any] = {
                        "id": outcome.record_id,
                        "success": True,
                        "errors": [],
                    }
                    if ext_field is not None:
                        result["created"] = outcome.created
                    results[position] = result
                except RecordError as exc:
                    results[position] = _failure(exc, record_id)
                    failed = True
            if all_or_none and failed:
                for action in reversed(undo):
                    action()
                self.org.change_events.discard_transaction()  # nothing was committed
                rolled_back = {
                    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "message": "Record rolled back because not all records were valid and"
                    " the request was using AllOrNone header",
                    "fields": [],
                }
                results = [
                    r
                    if r is not None and not r["success"]
                    else {
                        "success": False,
                        "errors": [rolled_back],
                        **({"id": r["id"]} if r and not creating else {}),
                    }
                    for r in results
                ]
        return [r for r in results if r is not None]

    def _writer(self, request: Request, user_row: int) -> RecordWriter:
        """Writes for this request's user; fault rules match this request."""
        return RecordWriter(
            self.org, self.faults, self.write_log, user_row, request.method, request.path
        )

    def _undo_for(self, table: Any, row: int | None, values: dict[str, Any]) -> Callable[[], None]:
        """How to take back one write of an allOrNone batch (history rows included)."""
        sizes = {name: t.size for name, t in self.org.tables.items()}
        if row is None:

            def undo_insert() -> None:
                for name, size in sizes.items():
                    self.org.tables[name].size = size

            return undo_insert
        rows = np.array([row])
        saved = {
            name: column.to_json(rows)[0]
            for name, column in table.columns.items()
            if column.writable
        }
        raw = {name: getattr(column, "data", None) for name, column in table.columns.items()}
        stamps = {
            name: (raw[name][row] if raw[name] is not None else None)
            for name in ("systemmodstamp", "lastmodifieddate", "lastmodifiedbyid")
        }

        def undo_update() -> None:
            for name, size in sizes.items():
                self.org.tables[name].size = size
            for name, value in saved.items():
                # A value read back from the same column always fits it again.
                with contextlib.suppress(FieldValueError):
                    table.columns[name].set(row, value)
            for name, value in stamps.items():
                column = table.columns.get(name)
                if value is not None and column is not None:
                    column.data[row] = value  # type: ignore[attr-defined]

        return undo_update


def _failure(exc: RecordError, record_id: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"success": False, "errors": [exc.as_result()]}
    if record_id:
        result = {"id": record_id, **result}
    return result
