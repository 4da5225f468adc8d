"""The sandbox Salesforce's Tooling API, as far as the worker uses it: creating custom
objects and custom fields (``tooling/sobjects/CustomObject`` and ``CustomField``), and the
Change Data Capture selection: ``PlatformEventChannel`` (a custom channel) and
``PlatformEventChannelMember`` (an entity on a channel, with a filter), created, read, queried
(``tooling/query``: ``SELECT fields FROM type [WHERE field = 'value' [AND ...]]``) and deleted.
"""

from __future__ import annotations

import re
from typing import Any

from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.salesforce.cdc_channels import Channel, ChannelError, Member
from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.org import RecordError
from crm_kpi_worker.sandbox.salesforce.routes import OrgRoutes, SalesforceError


class ToolingRoutes(OrgRoutes):
    """Custom objects and fields, created through the Tooling API."""

    def on_tooling_create(
        self, request: Request, user_row: int, version: str, sobject: str
    ) -> Response:
        body = self._body(request)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("Metadata"), dict)
            or not isinstance(body.get("FullName"), str)
        ):
            raise SalesforceError(
                400, "JSON_PARSER_ERROR", "The body must hold FullName and Metadata"
            )
        metadata = body["Metadata"]
        try:
            if sobject.lower() in _CDC_TYPES:
                return self._create_cdc_record(sobject.lower(), body["FullName"], metadata)
            if sobject.lower() == "customobject":
                name_field = metadata.get("nameField") or {}
                table = self.org.create_custom_object(
                    body["FullName"],
                    str(metadata.get("label", body["FullName"])),
                    str(metadata.get("pluralLabel", metadata.get("label", body["FullName"]))),
                    str(name_field.get("label", "Name")),
                )
                return self._json(
                    {
                        "id": make_id("01I", len(self.org.tables)),
                        "success": True,
                        "errors": [],
                        "warnings": [],
                        "infos": [],
                        "keyPrefix": table.sobject.key_prefix,
                    },
                    201,
                )
            if sobject.lower() == "customfield":
                object_name, _, field_name = body["FullName"].partition(".")
                field_type = _TOOLING_TYPES.get(str(metadata.get("type", "")).lower())
                if field_type is None:
                    raise RecordError(
                        "FIELD_INTEGRITY_EXCEPTION",
                        f"Unsupported field type: {metadata.get('type')}",
                    )
                self.org.create_custom_field(
                    object_name,
                    field_name,
                    field_type,
                    str(metadata.get("label", field_name)),
                    length=int(metadata.get("length") or 0),
                    precision=int(metadata.get("precision") or 0),
                    scale=int(metadata.get("scale") or 0),
                    help_text=metadata.get("inlineHelpText"),
                    external_id=bool(metadata.get("externalId", False)),
                    unique=bool(metadata.get("unique", False)),
                    reference_to=metadata.get("referenceTo"),
                )
                return self._json(
                    {
                        "id": make_id("00N", sum(len(t.columns) for t in self.org.tables.values())),
                        "success": True,
                        "errors": [],
                        "warnings": [],
                        "infos": [],
                    },
                    201,
                )
        except RecordError as exc:
            raise SalesforceError(400, exc.code, exc.message, exc.fields) from None
        raise SalesforceError(
            404, "NOT_FOUND", f"The Tooling API sObject {sobject} is not supported by the sandbox"
        )

    # ---- Change Data Capture: channels and members ---------------------------------------------

    def _create_cdc_record(self, kind: str, full_name: str, metadata: dict[str, Any]) -> Response:
        channels = self.org.cdc_channels
        try:
            with self.org.lock:
                record: Channel | Member = (
                    channels.add_channel(full_name, metadata)
                    if kind == "platformeventchannel"
                    else channels.add_member(full_name, metadata)
                )
        except ChannelError as exc:
            raise SalesforceError(400, exc.code, exc.message) from None
        body = {"id": record.id, "success": True, "errors": [], "warnings": [], "infos": []}
        return self._json(body, 201)

    def _cdc_records(self, kind: str, version: str) -> list[dict[str, Any]]:
        channels = self.org.cdc_channels
        base = f"/services/data/v{version}/tooling/sobjects"
        if kind == "platformeventchannel":
            return [
                {
                    "attributes": {
                        "type": "PlatformEventChannel",
                        "url": f"{base}/PlatformEventChannel/{c.id}",
                    },
                    "Id": c.id,
                    "DeveloperName": c.full_name.removesuffix("__chn"),
                    "FullName": c.full_name,
                    "MasterLabel": c.label,
                    "ChannelType": c.channel_type,
                }
                for c in list(channels.channels.values())
            ]
        return [
            {
                "attributes": {
                    "type": "PlatformEventChannelMember",
                    "url": f"{base}/PlatformEventChannelMember/{m.id}",
                },
                "Id": m.id,
                "DeveloperName": m.full_name,
                "FullName": m.full_name,
                "EventChannel": m.channel,
                "SelectedEntity": m.selected_entity,
                "FilterExpression": m.filter.text if m.filter else None,
            }
            for m in list(channels.members.values())
        ]

    def on_tooling_record(
        self, request: Request, user_row: int, version: str, sobject: str, record_id: str
    ) -> Response:
        kind = sobject.lower()
        if kind not in _CDC_TYPES:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        if request.method == "DELETE":
            try:
                with self.org.lock:
                    deleted = self.org.cdc_channels.delete(record_id)
            except ChannelError as exc:
                raise SalesforceError(400, exc.code, exc.message) from None
            if not deleted:
                raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
            return Response(status=204)
        for record in self._cdc_records(kind, version):
            if record["Id"] == record_id:
                return self._json(record)
        raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")

    def on_tooling_query(self, request: Request, user_row: int, version: str) -> Response:
        query = request.args.get("q", "")
        match = _TOOLING_QUERY.fullmatch(query.strip())
        if match is None or match["type"].lower() not in _CDC_TYPES:
            raise SalesforceError(
                400,
                "MALFORMED_QUERY",
                "The sandbox's Tooling API queries PlatformEventChannel and"
                " PlatformEventChannelMember: SELECT fields FROM type [WHERE f = 'v' AND ...]",
            )
        names = [n.strip() for n in match["fields"].split(",")]
        conditions = [
            (c["field"].lower(), c["value"])
            for c in _TOOLING_CONDITION.finditer(match["where"] or "")
        ]
        records = []
        for record in self._cdc_records(match["type"].lower(), version):
            lowered = {k.lower(): v for k, v in record.items()}
            if any(str(lowered.get(f)) != v for f, v in conditions):
                continue
            unknown = [n for n in names if n.lower() not in lowered]
            if unknown:
                raise SalesforceError(
                    400, "INVALID_FIELD", f"No such column '{unknown[0]}' on {match['type']}"
                )
            records.append(
                {"attributes": record["attributes"], **{n: lowered[n.lower()] for n in names}}
            )
        return self._json(
            {
                "size": len(records),
                "totalSize": len(records),
                "done": True,
                "queryLocator": None,
                "entityTypeName": match["type"],
                "records": records,
            }
        )


_CDC_TYPES = frozenset({"platformeventchannel", "platformeventchannelmember"})
_TOOLING_QUERY = re.compile(
    r"SELECT\s+(?P<fields>[\w\s,]+?)\s+FROM\s+(?P<type>\w+)(?:\s+WHERE\s+(?P<where>.+))?",
    re.IGNORECASE,
)
_TOOLING_CONDITION = re.compile(r"(?P<field>\w+)\s*=\s*'(?P<value>[^']*)'")

_TOOLING_TYPES = {
    "number": "double",
    "currency": "currency",
    "percent": "percent",
    "checkbox": "boolean",
    "date": "date",
    "datetime": "datetime",
    "text": "string",
    "textarea": "textarea",
    "longtextarea": "textarea",
    "picklist": "picklist",
    "email": "email",
    "url": "url",
    "lookup": "reference",
}
