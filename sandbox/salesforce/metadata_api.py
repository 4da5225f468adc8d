"""The sandbox Salesforce's Metadata API (SOAP), as far as the worker's setup uses it:
``readMetadata``, ``createMetadata``, ``updateMetadata``, ``upsertMetadata`` and
``deleteMetadata`` of page layouts (``Layout``), custom object tabs (``CustomTab``) and list
views (``ListView``), in the shapes of the WSDL simple-salesforce bundles (``sf.mdapi``).

Components are kept as the element trees the client sends (:data:`Node`) and answered back in
the same shape. What Salesforce checks and the sandbox checks too: a layout's or list view's
object exists and the fields it names exist on it; a tab's custom object exists and the tab
has a motif; names are valid; create refuses a taken name, update a missing one. Reading a
missing component answers an empty record (no fullName), as Salesforce does. Layouts never
grant access: field-level security is the permission sets' alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.salesforce.permissions import is_valid_developer_name
from crm_kpi_worker.sandbox.salesforce.routes import OrgRoutes, SalesforceError

if TYPE_CHECKING:
    from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg
    from crm_kpi_worker.sandbox.salesforce.store import Table

MD_NS = "http://soap.sforce.com/2006/04/metadata"
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
SUPPORTED_TYPES = ("Layout", "CustomTab", "ListView")
MAX_COMPONENTS = 10
_SECTION_STYLES = {"TwoColumnsTopToBottom", "TwoColumnsLeftToRight", "OneColumn", "CustomLinks"}
_BEHAVIORS = {"Edit", "Required", "Readonly"}
_FILTER_SCOPES = {
    "Everything",
    "Mine",
    "Queue",
    "Delegated",
    "MyTerritory",
    "MyTeamTerritory",
    "Team",
    "SalesTeam",
    "AssignedToMe",
    "MineAndMyGroups",
    "ScopingRule",
}

# An element's content: its text, or its children in order as (tag, content) pairs.
Node = str | list[tuple[str, "Node"]]


class ComponentError(Exception):
    """One component refused, as an Error of its SaveResult."""

    def __init__(self, code: str, message: str, fields: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = list(fields)


class MetadataFault(Exception):
    """A whole call refused: a SOAP fault."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---- element trees --------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def to_node(element: ElementTree.Element) -> Node:
    children = [c for c in element if c.get(f"{_XSI}nil") != "true"]
    if not children:
        return element.text or ""
    return [(_local(child.tag), to_node(child)) for child in children]


def values(node: Node, tag: str) -> list[Node]:
    """Every child ``tag`` of a node."""
    return [value for name, value in node if name == tag] if isinstance(node, list) else []


def text(node: Node, tag: str) -> str | None:
    found = values(node, tag)
    return found[0] if found and isinstance(found[0], str) else None


def render(tag: str, node: Node, attributes: str = "") -> str:
    if isinstance(node, str):
        return f"<{tag}{attributes}>{escape(node)}</{tag}>"
    inner = "".join(render(name, child) for name, child in node)
    return f"<{tag}{attributes}>{inner}</{tag}>"


def _bool(value: bool) -> str:
    return "true" if value else "false"


# ---- the components -------------------------------------------------------------------------


class MetadataStore:
    """The org's components by type and full name (case-insensitive, as Salesforce matches)."""

    def __init__(self) -> None:
        self._components: dict[tuple[str, str], tuple[str, Node]] = {}

    def get(self, kind: str, full_name: str) -> Node | None:
        found = self._components.get((kind, full_name.casefold()))
        return found[1] if found else None

    def put(self, kind: str, full_name: str, node: Node) -> None:
        self._components[(kind, full_name.casefold())] = (full_name, node)

    def delete(self, kind: str, full_name: str) -> bool:
        return self._components.pop((kind, full_name.casefold()), None) is not None


def check_component(org: SandboxOrg, kind: str, node: Node) -> str:
    """The component's full name; ComponentError when Salesforce would refuse it."""
    full_name = text(node, "fullName")
    if not full_name:
        raise ComponentError("REQUIRED_FIELD_MISSING", "Required field is missing: fullName")
    if kind == "Layout":
        _check_layout(org, full_name, node)
    elif kind == "CustomTab":
        _check_tab(org, full_name, node)
    else:
        _check_list_view(org, full_name, node)
    return full_name


def _object(org: SandboxOrg, name: str) -> Table:
    table = org.table(name)
    if table is None:
        raise ComponentError(
            "INVALID_CROSS_REFERENCE_KEY",
            f"In field: fullName - no CustomObject named {name} found",
            ["fullName"],
        )
    return table


def _check_field(table: Table, field: str, where: str) -> None:
    if table.column(field) is None:
        raise ComponentError(
            "INVALID_CROSS_REFERENCE_KEY",
            f"In field: {where} - no CustomField named {table.name}.{field} found",
            [where],
        )


def _check_layout(org: SandboxOrg, full_name: str, node: Node) -> None:
    object_name, dash, layout_name = full_name.partition("-")
    if not dash or not layout_name.strip():
        raise ComponentError(
            "INVALID_NAME",
            f"The layout name {full_name} must be ObjectName-Layout Name",
            ["fullName"],
        )
    table = _object(org, object_name)
    for section in values(node, "layoutSections"):
        style = text(section, "style")
        if style not in _SECTION_STYLES:
            raise ComponentError(
                "FIELD_INTEGRITY_EXCEPTION",
                f"In field: style - bad value for a layout section: {style}",
                ["style"],
            )
        for column in values(section, "layoutColumns"):
            for item in values(column, "layoutItems"):
                field = text(item, "field")
                behavior = text(item, "behavior")
                if behavior is not None and behavior not in _BEHAVIORS:
                    raise ComponentError(
                        "FIELD_INTEGRITY_EXCEPTION",
                        f"In field: behavior - bad value for a layout item: {behavior}",
                        ["behavior"],
                    )
                if field is not None:
                    _check_field(table, field, "field")


def _check_tab(org: SandboxOrg, full_name: str, node: Node) -> None:
    if text(node, "customObject") != "true":
        raise ComponentError(
            "FIELD_INTEGRITY_EXCEPTION",
            "The sandbox serves custom object tabs only: set customObject to true",
            ["customObject"],
        )
    table = org.table(full_name)
    if table is None or not table.sobject.custom:
        raise ComponentError(
            "INVALID_CROSS_REFERENCE_KEY",
            f"In field: fullName - no CustomObject named {full_name} found",
            ["fullName"],
        )
    if not text(node, "motif"):
        raise ComponentError(
            "REQUIRED_FIELD_MISSING",
            "Required field is missing: motif (a custom object tab needs a tab style)",
            ["motif"],
        )


def _check_list_view(org: SandboxOrg, full_name: str, node: Node) -> None:
    object_name, dot, view_name = full_name.partition(".")
    if not dot or not is_valid_developer_name(view_name):
        raise ComponentError(
            "INVALID_NAME",
            f"The list view name {full_name} must be Object.DeveloperName, the developer name"
            " made of letters, digits and single underscores, starting with a letter",
            ["fullName"],
        )
    table = _object(org, object_name)
    if not text(node, "label"):
        raise ComponentError("REQUIRED_FIELD_MISSING", "Required field is missing: label")
    scope = text(node, "filterScope")
    if scope not in _FILTER_SCOPES:
        raise ComponentError(
            "FIELD_INTEGRITY_EXCEPTION",
            f"In field: filterScope - bad value for a list view: {scope}",
            ["filterScope"],
        )
    for column in values(node, "columns"):
        # Standard columns have their own upper-case names (NAME, OPPORTUNITY.AMOUNT...);
        # fields are named by their API names.
        if isinstance(column, str) and not column.isupper():
            _check_field(table, column, "columns")
    for condition in values(node, "filters"):
        field = text(condition, "field")
        if field is not None and not field.isupper():
            _check_field(table, field, "filters")


# ---- seeded layouts -------------------------------------------------------------------------


def seed_layouts(org: SandboxOrg, store: MetadataStore) -> None:
    """The page layouts of the org's standard objects, with the fields it was seeded with."""
    layouts = {
        "Opportunity": [
            (
                "Opportunity Information",
                [
                    ["OwnerId", "Name", "AccountId", "Type", "LeadSource"],
                    ["CloseDate", "StageName", "Probability", "Amount", "ForecastCategoryName"],
                ],
            ),
            ("Additional Information", [_custom_fields(org, "Opportunity"), []]),
            ("System Information", [["CreatedById"], ["LastModifiedById"]]),
        ],
        "Account": [
            (
                "Account Information",
                [["OwnerId", "Name", "Type"], ["Industry", "BillingCountry"]],
            ),
            ("Additional Information", [_custom_fields(org, "Account"), []]),
            ("System Information", [["CreatedById"], ["LastModifiedById"]]),
        ],
        "User": [
            (
                "User Information",
                [
                    ["FirstName", "LastName", "Email", "Username"],
                    ["Title", "Department", "ManagerId", "IsActive", "ProfileId"],
                ],
            ),
            ("Additional Information", [_custom_fields(org, "User"), []]),
            ("System Information", [["CreatedById"], ["LastModifiedById"]]),
        ],
    }
    for object_name, sections in layouts.items():
        table = org.tables[object_name.lower()]
        node: list[tuple[str, Node]] = [("fullName", f"{object_name}-{object_name} Layout")]
        for label, columns in sections:
            section: list[tuple[str, Node]] = [
                ("customLabel", "false"),
                ("detailHeading", "true"),
                ("editHeading", "true"),
                ("label", label),
            ]
            for fields in columns:
                items: list[tuple[str, Node]] = [
                    ("layoutItems", [("behavior", _behavior(table, f)), ("field", f)])
                    for f in fields
                    if table.column(f) is not None
                ]
                section.append(("layoutColumns", items))
            section.append(("style", "TwoColumnsTopToBottom"))
            node.append(("layoutSections", section))
        node.append(("showEmailCheckbox", "false"))
        node.append(("showHighlightsPanel", "false"))
        node.append(("showInteractionLogPanel", "false"))
        store.put("Layout", f"{object_name}-{object_name} Layout", node)


def _custom_fields(org: SandboxOrg, object_name: str) -> list[str]:
    table = org.tables[object_name.lower()]
    return [d.name for d in table.sobject.fields.values() if d.custom]


def _behavior(table: Table, field: str) -> str:
    definition = table.sobject.field(field)
    assert definition is not None
    if definition.calculated or not (definition.updateable or definition.createable):
        return "Readonly"
    if not definition.nillable and definition.type != "boolean":
        return "Required"
    return "Edit"


# ---- the SOAP endpoint ----------------------------------------------------------------------


class MetadataRoutes(OrgRoutes):
    """``/services/Soap/m/{version}[/{org}]``: one SOAP call per request."""

    metadata: MetadataStore
    _sessions: dict[str, int]
    _count_call: Callable[[str], None]  # the app's API accounting
    _check_version: Callable[[str | None], None]

    def on_metadata(self, request: Request, version: str, org: str | None = None) -> Response:
        try:
            operation, arguments = self._metadata_call(request, version)
            body = getattr(self, f"_md_{operation}")(arguments)
        except MetadataFault as fault:
            return _fault(fault.code, fault.message)
        except SalesforceError as exc:  # the API limit, a bad version
            return _fault(str(exc.body[0]["errorCode"]), str(exc.body[0]["message"]))
        return _envelope(f"<{operation}Response>{body}</{operation}Response>")

    def _metadata_call(self, request: Request, version: str) -> tuple[str, Node]:
        try:
            root = ElementTree.fromstring(request.get_data())  # noqa: S314 - loopback test server
        except ElementTree.ParseError:
            raise MetadataFault("INVALID_XML", "The request is not well-formed XML") from None
        header = next((e for e in root.iter() if _local(e.tag) == "sessionId"), None)
        token = (header.text or "") if header is not None else ""
        with self._lock:
            known = token in self._sessions
        if not known:
            raise MetadataFault(
                "INVALID_SESSION_ID", "Invalid Session ID found in SessionHeader: Illegal Session"
            )
        self._check_version(version)
        body = next((e for e in root if _local(e.tag) == "Body"), None)
        call = body[0] if body is not None and len(body) else None
        operation = _local(call.tag) if call is not None else ""
        if call is None or operation not in _OPERATIONS:
            raise MetadataFault(
                "UNKNOWN_EXCEPTION", f"The sandbox does not serve the Metadata call {operation}"
            )
        self._count_call(f"metadata_{operation}")
        arguments: list[tuple[str, Node]] = []
        for child in call:
            kind = child.get(f"{_XSI}type")
            node = to_node(child)
            if kind is not None and isinstance(node, list):
                node = [("__type__", kind.rsplit(":", 1)[-1]), *node]
            arguments.append((_local(child.tag), node))
        return operation, arguments

    def _md_readMetadata(self, arguments: Node) -> str:
        kind = _supported(text(arguments, "type"))
        names = [n for n in values(arguments, "fullNames") if isinstance(n, str)]
        _check_count(names)
        records = []
        with self.org.lock:
            for name in names:
                node = self.metadata.get(kind, name)
                records.append(render("records", node or [], f" xsi:type={quoteattr(kind)}"))
        return f"<result>{''.join(records)}</result>"

    def _components(self, arguments: Node) -> tuple[str, list[Node]]:
        components = values(arguments, "metadata")
        _check_count(components)
        kinds = {text(c, "__type__") for c in components}
        if len(kinds) != 1:
            raise MetadataFault(
                "INVALID_TYPE", "Every component of one call must be of the same type"
            )
        kind = _supported(kinds.pop())
        stripped: list[Node] = [
            [(t, v) for t, v in c if t != "__type__"] for c in components if isinstance(c, list)
        ]
        return kind, stripped

    def _save(self, arguments: Node, mode: str) -> str:
        kind, components = self._components(arguments)
        results = []
        with self.org.lock:
            for node in components:
                name = text(node, "fullName") or ""
                created = False
                try:
                    name = check_component(self.org, kind, node)
                    exists = self.metadata.get(kind, name) is not None
                    if mode == "create" and exists:
                        raise ComponentError(
                            "DUPLICATE_DEVELOPER_NAME",
                            f"There is already a {kind} named {name}",
                            ["fullName"],
                        )
                    if mode == "update" and not exists:
                        raise ComponentError(
                            "INVALID_CROSS_REFERENCE_KEY",
                            f"In field: fullName - no {kind} named {name} found",
                            ["fullName"],
                        )
                    created = not exists
                    self.metadata.put(kind, name, node)
                    results.append(_result(name, None, created if mode == "upsert" else None))
                except ComponentError as exc:
                    results.append(_result(name, exc, False if mode == "upsert" else None))
        return "".join(results)

    def _md_createMetadata(self, arguments: Node) -> str:
        return self._save(arguments, "create")

    def _md_updateMetadata(self, arguments: Node) -> str:
        return self._save(arguments, "update")

    def _md_upsertMetadata(self, arguments: Node) -> str:
        return self._save(arguments, "upsert")

    def _md_deleteMetadata(self, arguments: Node) -> str:
        kind = _supported(text(arguments, "type"))
        names = [n for n in values(arguments, "fullNames") if isinstance(n, str)]
        _check_count(names)
        results = []
        with self.org.lock:
            for name in names:
                if self.metadata.delete(kind, name):
                    results.append(_result(name, None, None))
                else:
                    results.append(
                        _result(
                            name,
                            ComponentError(
                                "INVALID_CROSS_REFERENCE_KEY",
                                f"In field: fullName - no {kind} named {name} found",
                                ["fullName"],
                            ),
                            None,
                        )
                    )
        return "".join(results)


_OPERATIONS = {
    "readMetadata",
    "createMetadata",
    "updateMetadata",
    "upsertMetadata",
    "deleteMetadata",
}


def _supported(kind: str | None) -> str:
    if kind not in SUPPORTED_TYPES:
        raise MetadataFault(
            "INVALID_TYPE",
            f"This type of metadata is not available for this organization: {kind}"
            f" (the sandbox serves {', '.join(SUPPORTED_TYPES)})",
        )
    return kind


def _check_count(items: list[Any]) -> None:
    if len(items) > MAX_COMPONENTS:
        raise MetadataFault(
            "EXCEEDED_ID_LIMIT", f"Cannot process more than {MAX_COMPONENTS} components a call"
        )


def _result(name: str, error: ComponentError | None, created: bool | None) -> str:
    parts = []
    if created is not None:
        parts.append(f"<created>{_bool(created)}</created>")
    if error is not None:
        fields = "".join(f"<fields>{escape(f)}</fields>" for f in error.fields)
        parts.append(
            f"<errors>{fields}<message>{escape(error.message)}</message>"
            f"<statusCode>{error.code}</statusCode></errors>"
        )
    parts.append(f"<fullName>{escape(name)}</fullName><success>{_bool(error is None)}</success>")
    return f"<result>{''.join(parts)}</result>"


def _envelope(body: str) -> Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        f' xmlns="{MD_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    )
    return Response(xml, status=200, content_type="text/xml;charset=UTF-8")


def _fault(code: str, message: str) -> Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        f' xmlns:sf="{MD_NS}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(xml, status=500, content_type="text/xml;charset=UTF-8")
