"""What the sandbox Salesforce's route groups share: the error answer (Salesforce's JSON array
with its HTTP status), JSON in and out, and finding an sObject's table and rendering a record.

The app (``server.py``) routes and authenticates; the route groups (``login.py``,
``queries.py``, ``records.py``, ``sobject_collections.py``, ``tooling.py``) are mixins of it on
top of :class:`OrgRoutes`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.faults import FaultPlan
from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg
from crm_kpi_worker.sandbox.serving import Stats as ServedStats
from crm_kpi_worker.sandbox.serving import WriteLog


class SalesforceError(Exception):
    """An error answer: the JSON array body Salesforce sends, with its HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.body: list[dict[str, Any]] = [{"message": message, "errorCode": code}]
        if fields:
            self.body[0]["fields"] = fields


class OrgRoutes:
    """The state and plumbing every route group of the app uses (the app sets the state)."""

    org: SandboxOrg
    faults: FaultPlan
    stats: ServedStats
    write_log: WriteLog
    base_url: str
    _lock: threading.Lock

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(
            json.dumps(body, separators=(",", ":")),
            status=status,
            headers=headers,
            content_type="application/json;charset=UTF-8",
        )

    def _body(self, request: Request) -> Any:
        return json.loads(request.get_data(as_text=True) or "null")

    def _table(self, name: str, user_row: int | None = None) -> Any:
        """An sObject's table; 404 when it does not exist or the user cannot read it."""
        table = self.org.table(name)
        access = self.org.access_for(user_row) if user_row is not None else None
        if table is None or (access is not None and not access.can_read_object(table)):
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        return table

    def _record(
        self, table: Any, row: int, version: str, fields: str | None, user_row: int | None = None
    ) -> dict[str, Any]:
        """One record as the REST API renders it: ``fields`` (all the user reads by default)."""
        rows = np.array([row])
        access = self.org.access_for(user_row) if user_row is not None else None
        names = (
            [n.strip() for n in fields.split(",")]
            if fields
            else [
                d.name
                for d in table.sobject.fields.values()
                if access is None or access.can_read_field(table, d)
            ]
        )
        record: dict[str, Any] = {
            "attributes": {
                "type": table.name,
                "url": f"/services/data/v{version}/sobjects/{table.name}/{table.id_of(row)}",
            }
        }
        for name in names:
            column = table.column(name)
            if column is None or (
                access is not None and not access.can_read_field(table, column.definition)
            ):
                raise SalesforceError(
                    400, "INVALID_FIELD", f"No such column '{name}' on entity '{table.name}'."
                )
            record[column.definition.name] = column.to_json(rows)[0]
        return record
