"""The sandbox Salesforce's Tooling API, as far as the worker uses it: creating custom
objects and custom fields (``tooling/sobjects/CustomObject`` and ``CustomField``)."""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

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
