"""Conformance of the sandbox Salesforce's describe answers with Salesforce's documented
describe results: every property of a field (the SOAP API's Field type, REST's
DescribeFieldResult), of an object (DescribeSObjectResult) and of a global describe entry is
there, with its JSON type, on every field of every object; values follow the field's type; a
tool that reads ``compoundFieldName`` builds a query that works.

The property lists are written here from the documentation (and the partner WSDL the JSON
serialises), apart from the sandbox's code, so a property dropped there shows here.
"""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce import Salesforce

BOOL, INT, STR, LIST, DICT, NULL = bool, int, str, list, dict, type(None)
ANY = object  # defaultValue: the field's own type, or null

FIELD_PROPERTIES: dict[str, tuple[type, ...]] = {
    "aggregatable": (BOOL,),
    "aiPredictionField": (BOOL,),
    "autoNumber": (BOOL,),
    "byteLength": (INT,),
    "calculated": (BOOL,),
    "calculatedFormula": (STR, NULL),
    "cascadeDelete": (BOOL,),
    "caseSensitive": (BOOL,),
    "compoundFieldName": (STR, NULL),
    "controllerName": (STR, NULL),
    "createable": (BOOL,),
    "custom": (BOOL,),
    "dataTranslationEnabled": (BOOL, NULL),
    "defaultValue": (ANY,),
    "defaultValueFormula": (STR, NULL),
    "defaultedOnCreate": (BOOL,),
    "dependentPicklist": (BOOL,),
    "deprecatedAndHidden": (BOOL,),
    "digits": (INT,),
    "displayLocationInDecimal": (BOOL,),
    "encrypted": (BOOL,),
    "externalId": (BOOL,),
    "extraTypeInfo": (STR, NULL),
    "filterable": (BOOL,),
    "filteredLookupInfo": (DICT, NULL),
    "formulaTreatNullNumberAsZero": (BOOL,),
    "groupable": (BOOL,),
    "highScaleNumber": (BOOL,),
    "htmlFormatted": (BOOL,),
    "idLookup": (BOOL,),
    "inlineHelpText": (STR, NULL),
    "label": (STR,),
    "length": (INT,),
    "mask": (STR, NULL),
    "maskType": (STR, NULL),
    "name": (STR,),
    "nameField": (BOOL,),
    "namePointing": (BOOL,),
    "nillable": (BOOL,),
    "permissionable": (BOOL,),
    "picklistValues": (LIST,),
    "polymorphicForeignKey": (BOOL,),
    "precision": (INT,),
    "queryByDistance": (BOOL,),
    "referenceTargetField": (STR, NULL),
    "referenceTo": (LIST,),
    "relationshipName": (STR, NULL),
    "relationshipOrder": (INT, NULL),
    "restrictedDelete": (BOOL,),
    "restrictedPicklist": (BOOL,),
    "scale": (INT,),
    "searchPrefilterable": (BOOL,),
    "soapType": (STR,),
    "sortable": (BOOL,),
    "type": (STR,),
    "unique": (BOOL,),
    "updateable": (BOOL,),
    "writeRequiresMasterRead": (BOOL,),
}

GLOBAL_ENTRY_PROPERTIES: dict[str, tuple[type, ...]] = {
    "activateable": (BOOL,),
    "associateEntityType": (STR, NULL),
    "associateParentEntity": (STR, NULL),
    "createable": (BOOL,),
    "custom": (BOOL,),
    "customSetting": (BOOL,),
    "deepCloneable": (BOOL,),
    "deletable": (BOOL,),
    "deprecatedAndHidden": (BOOL,),
    "feedEnabled": (BOOL,),
    "hasSubtypes": (BOOL,),
    "isInterface": (BOOL,),
    "isSubtype": (BOOL,),
    "keyPrefix": (STR, NULL),
    "label": (STR,),
    "labelPlural": (STR,),
    "layoutable": (BOOL,),
    "mergeable": (BOOL,),
    "mruEnabled": (BOOL,),
    "name": (STR,),
    "queryable": (BOOL,),
    "replicateable": (BOOL,),
    "retrieveable": (BOOL,),
    "searchable": (BOOL,),
    "triggerable": (BOOL,),
    "undeletable": (BOOL,),
    "updateable": (BOOL,),
    "urls": (DICT,),
}

SOBJECT_PROPERTIES: dict[str, tuple[type, ...]] = {
    **GLOBAL_ENTRY_PROPERTIES,
    "actionOverrides": (LIST,),
    "childRelationships": (LIST,),
    "compactLayoutable": (BOOL,),
    "defaultImplementation": (STR, NULL),
    "extendedBy": (STR, NULL),
    "extendsInterfaces": (STR, NULL),
    "fields": (LIST,),
    "implementedBy": (STR, NULL),
    "implementsInterfaces": (STR, NULL),
    "listviewable": (BOOL, NULL),
    "lookupLayoutable": (BOOL, NULL),
    "namedLayoutInfos": (LIST,),
    "networkScopeFieldName": (STR, NULL),
    "recordTypeInfos": (LIST,),
    "searchLayoutable": (BOOL,),
    "sobjectDescribeOption": (STR,),
    "supportedScopes": (LIST,),
}

CHILD_RELATIONSHIP_PROPERTIES: dict[str, tuple[type, ...]] = {
    "cascadeDelete": (BOOL,),
    "childSObject": (STR,),
    "deprecatedAndHidden": (BOOL,),
    "field": (STR,),
    "junctionIdListNames": (LIST,),
    "junctionReferenceTo": (LIST,),
    "relationshipName": (STR, NULL),
    "restrictedDelete": (BOOL,),
}

PICKLIST_ENTRY_PROPERTIES: dict[str, tuple[type, ...]] = {
    "active": (BOOL,),
    "defaultValue": (BOOL,),
    "label": (STR, NULL),
    "validFor": (STR, NULL),
    "value": (STR,),
}

#: soapType of each field type (the partner WSDL's XML types).
SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "string": "xsd:string",
    "picklist": "xsd:string",
    "combobox": "xsd:string",
    "textarea": "xsd:string",
    "email": "xsd:string",
    "anyType": "xsd:anyType",
    "address": "urn:address",
}
TEXT_TYPES = {"string", "picklist", "combobox", "textarea", "email"}


def _type_problems(
    where: str, body: dict[str, Any], spec: dict[str, tuple[type, ...]]
) -> list[str]:
    problems = [f"{where}: {name} missing" for name in spec if name not in body]
    for name, allowed in spec.items():
        if name not in body or ANY in allowed:
            continue
        if not any(_is(body[name], kind) for kind in allowed):
            problems.append(f"{where}: {name} is {body[name]!r}")
    return problems


def _is(value: Any, kind: type) -> bool:
    if kind in (BOOL, INT, NULL):
        return type(value) is kind  # bool is an int in Python; JSON's true is no number
    return isinstance(value, kind)  # the client's JSON objects are OrderedDicts


@pytest.fixture(scope="module")
def described(sf: Salesforce) -> dict[str, dict[str, Any]]:
    """Every object's describe, by name (the integration user sees every object)."""
    return {
        entry["name"]: sf.restful(f"sobjects/{entry['name']}/describe")
        for entry in sf.describe()["sobjects"]
    }


def test_every_global_entry_has_the_documented_properties(sf: Salesforce) -> None:
    answer = sf.describe()
    assert answer["encoding"] == "UTF-8" and answer["maxBatchSize"] == 200
    problems = [
        problem
        for entry in answer["sobjects"]
        for problem in _type_problems(entry["name"], entry, GLOBAL_ENTRY_PROPERTIES)
    ]
    assert problems == []
    names = {entry["name"] for entry in answer["sobjects"]}
    assert {"Account", "Opportunity", "OpportunityHistory", "User"} <= names
    for entry in answer["sobjects"]:
        assert set(entry["urls"]) == {"sobject", "describe", "rowTemplate"}


def test_every_field_of_every_object_has_the_documented_properties(
    described: dict[str, dict[str, Any]],
) -> None:
    problems: list[str] = []
    for name, body in described.items():
        problems += _type_problems(name, body, SOBJECT_PROPERTIES)
        for rel in body["childRelationships"]:
            problems += _type_problems(f"{name} child", rel, CHILD_RELATIONSHIP_PROPERTIES)
        for field in body["fields"]:
            where = f"{name}.{field['name']}"
            problems += _type_problems(where, field, FIELD_PROPERTIES)
            for entry in field["picklistValues"]:
                problems += _type_problems(f"{where} picklist", entry, PICKLIST_ENTRY_PROPERTIES)
    assert problems == []
    assert sum(len(body["fields"]) for body in described.values()) > 200


def test_field_values_follow_the_field_type(described: dict[str, dict[str, Any]]) -> None:
    for name, body in described.items():
        by_name = {f["name"]: f for f in body["fields"]}
        for field in body["fields"]:
            kind, where = field["type"], f"{name}.{field['name']}"
            assert field["soapType"] == SOAP_TYPES[kind], where
            if kind in TEXT_TYPES:
                assert field["length"] > 0 and field["byteLength"] == 3 * field["length"], where
            if kind in {"id", "reference"}:
                assert field["length"] == field["byteLength"] == 18, where
            assert field["idLookup"] is (kind == "id" or field["externalId"]), where
            assert bool(field["referenceTo"]) is (kind == "reference"), where
            assert field["polymorphicForeignKey"] is (len(field["referenceTo"]) > 1), where
            if kind == "boolean":
                assert field["nillable"] is False and field["defaultValue"] is False, where
            if kind in {"textarea", "anyType", "address"}:
                assert not (field["filterable"] or field["sortable"] or field["groupable"])
            if kind == "id":
                assert field["permissionable"] is False and field["nillable"] is False, where
            compound = field["compoundFieldName"]
            assert compound is None or compound in by_name, where  # names a field of the object
        ids = [f for f in body["fields"] if f["type"] == "id"]
        assert [f["name"] for f in ids] == ["Id"], name


def test_compound_fields_and_their_components(described: dict[str, dict[str, Any]]) -> None:
    def components(obj: str) -> dict[str, str]:
        return {
            f["name"]: f["compoundFieldName"]
            for f in described[obj]["fields"]
            if f["compoundFieldName"]
        }

    assert components("Account") == {"BillingCountry": "BillingAddress"}
    assert components("User") == {"FirstName": "Name", "LastName": "Name"}
    assert components("Opportunity") == {}
    address = next(f for f in described["Account"]["fields"] if f["name"] == "BillingAddress")
    assert address["type"] == "address" and not address["createable"]
    names = {f["name"]: f["extraTypeInfo"] for f in described["User"]["fields"]}
    assert names["FirstName"] == names["LastName"] == names["Name"] == "personname"


def test_object_properties_follow_the_object(described: dict[str, dict[str, Any]]) -> None:
    opportunity = described["Opportunity"]
    assert opportunity["keyPrefix"] == "006" and opportunity["layoutable"] is True
    assert opportunity["undeletable"] is True and opportunity["sobjectDescribeOption"] == "FULL"
    assert [r["developerName"] for r in opportunity["recordTypeInfos"]] == ["Master"]
    assert {s["name"] for s in opportunity["supportedScopes"]} == {"everything", "mine"}
    relationships = {r["relationshipName"]: r for r in opportunity["childRelationships"]}
    assert relationships["OpportunityHistories"]["field"] == "OpportunityId"
    assert relationships["OpportunityHistories"]["cascadeDelete"] is True
    history = described["OpportunityHistory"]
    assert not (history["createable"] or history["layoutable"] or history["undeletable"])
    lookup = next(f for f in history["fields"] if f["name"] == "OpportunityId")
    assert lookup["cascadeDelete"] is True  # the opportunity's histories go with it
    field_history = described["OpportunityFieldHistory"]
    assert (field_history["associateEntityType"], field_history["associateParentEntity"]) == (
        "History",
        "Opportunity",
    )
    assert described["Account"]["mergeable"] is True
    user = described["User"]
    assert user["deletable"] is False and user["undeletable"] is False
    assert {r["relationshipName"]: r["cascadeDelete"] for r in user["childRelationships"]} == {
        "ForecastingQuotas": False  # users are deactivated, never deleted
    }


def test_a_tool_that_leaves_compound_fields_out_queries_every_other_field(
    sf: Salesforce, described: dict[str, dict[str, Any]]
) -> None:
    """As extraction tools do: a compound field duplicates its components (and Bulk queries
    refuse it), so the fields some component names as its compound are left out."""
    for name, body in described.items():
        fields = body["fields"]
        compounds = {f["compoundFieldName"] for f in fields if f["compoundFieldName"] is not None}
        selected = [f["name"] for f in fields if f["name"] not in compounds]
        assert compounds == {"Account": {"BillingAddress"}, "User": {"Name"}}.get(name, set())
        answer = sf.query(f"SELECT {', '.join(selected)} FROM {name} LIMIT 5")
        for record in answer["records"]:
            assert list(record)[1:] == selected


def test_compound_fields_cannot_be_filtered_or_sorted(sf: Salesforce) -> None:
    with pytest.raises(Exception, match="'BillingAddress' can not be filtered"):
        sf.query("SELECT Id FROM Account WHERE BillingAddress != null")
    with pytest.raises(Exception, match="'BillingAddress' can not be sorted"):
        sf.query("SELECT Id FROM Account ORDER BY BillingAddress")
    (record,) = sf.query("SELECT BillingCountry, BillingAddress FROM Account LIMIT 1")["records"]
    assert record["BillingAddress"]["country"] == record["BillingCountry"]
