"""The sandbox Salesforce's describe answers: ``/sobjects`` (the global describe),
``/sobjects/{Type}/describe`` and the ``objectDescribe`` of ``/sobjects/{Type}``.

Every property Salesforce documents for a field (the SOAP API's ``Field`` type, which the REST
describe serialises as JSON: DescribeFieldResult) and for an object (DescribeSObjectResult,
DescribeGlobalSObjectResult) is present, with the value Salesforce gives a field of that type
where the sandbox's definitions do not say more. The rules per type, in one place here, also
tell the query engine which fields can be filtered and sorted.

What the sandbox fixes for its whole org: feed tracking is off (``feedEnabled`` false), no
field is encrypted, restricted, dependent or a formula with a formula text, and the objects
users work with in the app (``SObjectDef.layoutable``) have the Master record type only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crm_kpi_worker.sandbox.salesforce.permissions import SYSTEM_FIELDS, is_permissionable
from crm_kpi_worker.sandbox.salesforce.store import (
    NUMBER_TYPES,
    STRING_TYPES,
    FieldDef,
    SObjectDef,
)

__all__ = [
    "MASTER_RECORD_TYPE_ID",
    "describe_field",
    "describe_sobject",
    "filterable",
    "global_entry",
    "sortable",
]

#: The id Salesforce gives every object's Master record type.
MASTER_RECORD_TYPE_ID = "012000000000000AAA"

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "time": "xsd:time",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "anyType": "xsd:anyType",
    "address": "urn:address",
    "location": "urn:location",
}
#: Types whose values are not filtered, sorted, grouped or aggregated in SOQL.
_UNQUERYABLE_TYPES = {"textarea", "anyType", "address", "location"}


def filterable(definition: FieldDef) -> bool:
    """Whether SOQL may filter on the field (a WHERE condition)."""
    return definition.type not in _UNQUERYABLE_TYPES


def sortable(definition: FieldDef) -> bool:
    """Whether SOQL may order by the field."""
    return definition.type not in _UNQUERYABLE_TYPES


def _groupable(definition: FieldDef) -> bool:
    return definition.type not in (NUMBER_TYPES - {"int"}) | _UNQUERYABLE_TYPES | {"datetime"}


def _byte_length(definition: FieldDef) -> int:
    if definition.type in {"id", "reference"}:
        return 18
    if definition.type in STRING_TYPES or definition.type == "anyType":
        return definition.length * 3  # up to three bytes a character (UTF-8)
    return 0


def describe_field(definition: FieldDef, cascades: bool = False) -> dict[str, Any]:
    """One entry of a describe's ``fields``; ``cascades``: a lookup whose parent's deletion
    deletes this record (the child relationship cascades)."""
    kind = definition.type
    polymorphic = len(definition.reference_to) > 1
    return {
        "aggregatable": kind not in _UNQUERYABLE_TYPES,
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": _byte_length(definition),
        "calculated": definition.calculated,
        "calculatedFormula": None,
        "cascadeDelete": cascades,
        "caseSensitive": False,
        "compoundFieldName": definition.compound_field_name,
        "controllerName": None,
        "createable": definition.createable,
        "custom": definition.custom,
        "dataTranslationEnabled": None,
        "defaultValue": False if kind == "boolean" else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": kind == "boolean"
        or definition.name.lower() in SYSTEM_FIELDS
        or definition.default_on_create is not None,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": (definition.precision or 9) if kind == "int" else 0,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": definition.external_id,
        "extraTypeInfo": "plaintextarea" if kind == "textarea" else definition.extra_type_info,
        "filterable": filterable(definition),
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": _groupable(definition),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": kind == "id" or definition.external_id,
        "inlineHelpText": definition.help_text,
        "label": definition.label,
        "length": definition.length,
        "mask": None,
        "maskType": None,
        "name": definition.name,
        "nameField": definition.name_field,
        "namePointing": polymorphic,
        # A checkbox is never null (unset is false).
        "nillable": definition.nillable and kind != "boolean",
        "permissionable": is_permissionable(definition),
        "picklistValues": [value.describe() for value in definition.picklist],
        "polymorphicForeignKey": polymorphic,
        "precision": 0 if kind == "int" else definition.precision,
        "queryByDistance": kind == "location",
        "referenceTargetField": None,
        "referenceTo": list(definition.reference_to),
        "relationshipName": definition.relationship_name,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": False,
        "scale": definition.scale,
        "searchPrefilterable": False,
        "soapType": _SOAP_TYPES.get(kind, "xsd:string"),
        "sortable": sortable(definition),
        "type": kind,
        "unique": definition.unique,
        "updateable": definition.updateable,
        "writeRequiresMasterRead": False,
    }


def _deletable(sobject: SObjectDef) -> bool:
    return sobject.createable


def _urls(sobject: SObjectDef, base: str) -> dict[str, str]:
    return {
        "sobject": f"{base}/sobjects/{sobject.name}",
        "describe": f"{base}/sobjects/{sobject.name}/describe",
        "rowTemplate": f"{base}/sobjects/{sobject.name}/{{ID}}",
    }


def global_entry(sobject: SObjectDef, base: str) -> dict[str, Any]:
    """An object's entry in the global describe (and ``objectDescribe``); ``base`` is
    ``/services/data/vXX.X``."""
    layoutable = sobject.is_layoutable
    deletable = _deletable(sobject)
    associate = sobject.associate
    return {
        "activateable": False,
        "associateEntityType": associate[0] if associate else None,
        "associateParentEntity": associate[1] if associate else None,
        "createable": sobject.createable,
        "custom": sobject.custom,
        "customSetting": False,
        "deepCloneable": False,
        "deletable": deletable,
        "deprecatedAndHidden": False,
        "feedEnabled": False,
        "hasSubtypes": False,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": sobject.key_prefix,
        "label": sobject.label,
        "labelPlural": sobject.label_plural,
        "layoutable": layoutable,
        "mergeable": sobject.mergeable,
        "mruEnabled": layoutable,
        "name": sobject.name,
        "queryable": True,
        "replicateable": True,
        "retrieveable": True,
        "searchable": layoutable,
        "triggerable": layoutable,
        "undeletable": deletable and sobject.has_is_deleted and not sobject.hard_delete,
        "updateable": sobject.updateable,
        "urls": _urls(sobject, base),
    }


def describe_sobject(
    sobject: SObjectDef,
    base: str,
    instance_url: str,
    sobjects: Mapping[str, SObjectDef],
    fields: list[FieldDef] | None = None,
) -> dict[str, Any]:
    """``/sobjects/{Type}/describe``: ``sobjects`` are the org's objects by lower-cased name
    (a lookup cascades when its parent's child relationship does); ``fields``: the ones the
    caller may see (all by default)."""
    layoutable = sobject.is_layoutable
    name = sobject.name
    children = [
        {
            "cascadeDelete": _cascades(sobject),
            "childSObject": rel.child,
            "deprecatedAndHidden": False,
            "field": rel.field,
            "junctionIdListNames": [],
            "junctionReferenceTo": [],
            "relationshipName": rel.name,
            "restrictedDelete": False,
        }
        for rel in sobject.children.values()
    ]
    urls = _urls(sobject, base)
    if layoutable:
        urls.update(
            {
                "compactLayouts": f"{base}/sobjects/{name}/describe/compactLayouts",
                "approvalLayouts": f"{base}/sobjects/{name}/describe/approvalLayouts",
                "uiDetailTemplate": f"{instance_url}/{{ID}}",
                "uiEditTemplate": f"{instance_url}/{{ID}}/e",
                "listviews": f"{base}/sobjects/{name}/listviews",
                "uiNewRecord": f"{instance_url}/{sobject.key_prefix}/e",
                "quickActions": f"{base}/sobjects/{name}/quickActions",
                "layouts": f"{base}/sobjects/{name}/describe/layouts",
            }
        )
    scopes = [{"label": f"All {sobject.label_plural.lower()}", "name": "everything"}]
    if sobject.field("OwnerId") is not None:
        scopes.append({"label": f"My {sobject.label_plural.lower()}", "name": "mine"})
    record_types = (
        [
            {
                "active": True,
                "available": True,
                "defaultRecordTypeMapping": True,
                "developerName": "Master",
                "master": True,
                "name": "Master",
                "recordTypeId": MASTER_RECORD_TYPE_ID,
                "urls": {
                    "layout": f"{base}/sobjects/{name}/describe/layouts/{MASTER_RECORD_TYPE_ID}"
                },
            }
        ]
        if layoutable
        else []
    )
    described = [
        describe_field(definition, _lookup_cascades(sobject, definition, sobjects))
        for definition in (sobject.fields.values() if fields is None else fields)
    ]
    body = {
        **global_entry(sobject, base),
        "actionOverrides": [],
        "childRelationships": children,
        "compactLayoutable": layoutable,
        "defaultImplementation": None,
        "extendedBy": None,
        "extendsInterfaces": None,
        "fields": described,
        "implementedBy": None,
        "implementsInterfaces": None,
        "listviewable": None,
        "lookupLayoutable": None,
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "recordTypeInfos": record_types,
        "searchLayoutable": layoutable,
        "sobjectDescribeOption": "FULL",
        "supportedScopes": scopes,
        "urls": urls,
    }
    return dict(sorted(body.items()))


def _cascades(parent: SObjectDef) -> bool:
    """Whether deleting a ``parent`` record deletes its children: parents that cannot be
    deleted (users) have nothing to cascade."""
    return _deletable(parent)


def _lookup_cascades(
    sobject: SObjectDef, definition: FieldDef, sobjects: Mapping[str, SObjectDef]
) -> bool:
    for target in definition.reference_to:
        parent = sobjects.get(target.lower())
        if parent is None or not _cascades(parent):
            continue
        for rel in parent.children.values():
            if rel.child == sobject.name and rel.field == definition.name:
                return True
    return False
