"""The sandbox Salesforce's single-record resources: ``sobjects/{Type}`` (create),
``sobjects/{Type}/{Id}`` (read, update, delete), upsert and read by external id, and the
``updated`` / ``deleted`` replication windows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.salesforce.describe import global_entry
from crm_kpi_worker.sandbox.salesforce.org import RecordError
from crm_kpi_worker.sandbox.salesforce.routes import OrgRoutes, SalesforceError


class RecordRoutes(OrgRoutes):
    """One record at a time, by Id or by external id, and what changed in a window."""

    def on_sobject(self, request: Request, user_row: int, version: str, sobject: str) -> Response:
        table = self._table(sobject, user_row)
        if request.method == "GET":
            return self._json(
                {
                    "objectDescribe": global_entry(table.sobject, f"/services/data/v{version}"),
                    "recentItems": [],
                }
            )
        values = self._body(request)
        if not isinstance(values, dict):
            raise SalesforceError(
                400,
                "JSON_PARSER_ERROR",
                "Cannot deserialize instance of sObject from a non-object value",
            )
        try:
            outcome = self.org.write(table.name, values, user_row=user_row)
        except RecordError as exc:
            raise SalesforceError(400, exc.code, exc.message, exc.fields) from None
        return self._json({"id": outcome.record_id, "success": True, "errors": []}, 201)

    def on_record(
        self, request: Request, user_row: int, version: str, sobject: str, record_id: str
    ) -> Response:
        table = self._table(sobject, user_row)
        with self.org.lock:
            row = self._lookup(table, record_id)
            if request.method == "GET":
                return self._json(
                    self._record(table, row, version, request.args.get("fields"), user_row)
                )
            try:
                if request.method == "DELETE":
                    self.org.delete(table.name, record_id, user_row=user_row)
                    return Response(status=204)
                values = self._body(request)
                if not isinstance(values, dict):
                    raise SalesforceError(
                        400,
                        "JSON_PARSER_ERROR",
                        "Cannot deserialize instance of sObject from a non-object value",
                    )
                self.org.write(table.name, values, user_row=user_row, row=row)
                self.write_log.add(table.name, record_id)
            except RecordError as exc:
                raise SalesforceError(400, exc.code, exc.message, exc.fields) from None
        return Response(status=204)

    def _lookup(self, table: Any, record_id: str) -> int:
        """A record's row, or the 404 Salesforce answers for a missing or deleted one."""
        try:
            return self.org.find_row(table, record_id)
        except RecordError as exc:
            if exc.code == "ENTITY_IS_DELETED":
                raise SalesforceError(404, "ENTITY_IS_DELETED", "entity is deleted") from None
            if exc.code == "MALFORMED_ID":
                raise SalesforceError(
                    404,
                    "NOT_FOUND",
                    f"Provided external ID field does not exist or is not accessible: {record_id}",
                ) from None
            raise SalesforceError(
                404, "NOT_FOUND", "The requested resource does not exist"
            ) from None

    def on_external(
        self,
        request: Request,
        user_row: int,
        version: str,
        sobject: str,
        ext_field: str,
        ext_value: str,
    ) -> Response:
        table = self._table(sobject, user_row)
        with self.org.lock:
            try:
                rows = self.org.find_by_external_id(table, ext_field, ext_value)
            except RecordError as exc:
                raise SalesforceError(404, exc.code, exc.message) from None
            if len(rows) > 1:
                urls = [
                    f"/services/data/v{version}/sobjects/{table.name}/{table.id_of(r)}"
                    for r in rows
                ]
                return self._json(urls, 300)
            if request.method == "GET":
                if not rows:
                    raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
                return self._json(
                    self._record(table, rows[0], version, request.args.get("fields"), user_row)
                )
            values = self._body(request)
            if not isinstance(values, dict):
                raise SalesforceError(
                    400,
                    "JSON_PARSER_ERROR",
                    "Cannot deserialize instance of sObject from a non-object value",
                )
            if any(k.lower() == ext_field.lower() for k in values):
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"The {ext_field} field should not be specified in the sobject data.",
                )
            try:
                if rows:
                    outcome = self.org.write(table.name, values, user_row=user_row, row=rows[0])
                else:
                    outcome = self.org.write(
                        table.name, {**values, ext_field: ext_value}, user_row=user_row
                    )
            except RecordError as exc:
                raise SalesforceError(400, exc.code, exc.message, exc.fields) from None
        result = {
            "id": outcome.record_id,
            "success": True,
            "errors": [],
            "created": outcome.created,
        }
        return self._json(result, 201 if outcome.created else 200)

    def on_updated(self, request: Request, user_row: int, version: str, sobject: str) -> Response:
        return self._changed(request, sobject, deleted=False)

    def on_deleted(self, request: Request, user_row: int, version: str, sobject: str) -> Response:
        return self._changed(request, sobject, deleted=True)

    def _changed(self, request: Request, sobject: str, *, deleted: bool) -> Response:
        table = self._table(sobject)
        try:
            start = _parse_stamp(request.args["start"])
            end = _parse_stamp(request.args["end"])
        except (KeyError, ValueError):
            raise SalesforceError(
                400,
                "MALFORMED_QUERY",
                "start and end must be dateTime values such as 2024-01-01T00:00:00+00:00",
            ) from None
        with self.org.lock:
            rows = np.arange(table.size)
            stamp = table.columns["systemmodstamp"].vector(rows)[0]
            in_window = (stamp >= start) & (stamp <= end)
            is_deleted = (
                table.columns["isdeleted"].vector(rows)[0]
                if table.sobject.has_is_deleted
                else np.zeros(table.size, bool)
            )
            chosen = rows[in_window & (is_deleted if deleted else ~is_deleted)]
            ids = [table.id_of(r) for r in chosen.tolist()]
            stamps = table.columns["systemmodstamp"].to_json(chosen)
        latest = _format_stamp(min(end, self.org.now_ms()))
        if deleted:
            return self._json(
                {
                    "deletedRecords": [
                        {"id": i, "deletedDate": s} for i, s in zip(ids, stamps, strict=True)
                    ],
                    "earliestDateAvailable": _format_stamp(
                        int(self.org.data.users.created_at.min(initial=0))
                    ),
                    "latestDateCovered": latest,
                }
            )
        return self._json({"ids": ids, "latestDateCovered": latest})


def _parse_stamp(text: str) -> int:
    from crm_kpi_worker.sandbox.salesforce.store import parse_datetime

    return int(parse_datetime(text).timestamp() * 1000)


def _format_stamp(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
