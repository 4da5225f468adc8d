"""The sandbox Salesforce's users, permission model and field-level security, driven by the
real simple-salesforce client: logins as the org's users, Profile / PermissionSet /
ObjectPermissions / FieldPermissions / PermissionSetAssignment through REST and SOQL, and
object and field security enforced for the session's user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceMalformedRequest,
    SalesforceResourceNotFound,
)

from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

ALICE = "alice.martin@sandbox.local"
SOPHIE = "sophie.bernard@sandbox.local"  # the demo's sales manager
PASSWORD = "demo"
KPI_FIELD = "Opportunity.KPI_Attainment__c"


@pytest.fixture
def secure() -> Iterator[SalesforceSandbox]:
    """A sandbox of its own that enforces object and field-level security."""
    with SalesforceSandbox.start(seed=7, enforce_field_security=True) as sandbox:
        yield sandbox


def _create_field(sf: Any, full_name: str = KPI_FIELD, field_type: str = "Number") -> None:
    metadata: dict[str, Any] = {"label": full_name.split(".")[1][:-3], "type": field_type}
    if field_type == "Number":
        metadata.update(precision=6, scale=2)
    created = sf.toolingexecute(
        "sobjects/CustomField", method="POST", data={"FullName": full_name, "Metadata": metadata}
    )
    assert created["success"] is True


def _permission_set(sf: Any, name: str = "KPI_Worker_Read") -> str:
    created = sf.PermissionSet.create({"Name": name, "Label": name.replace("_", " ")})
    assert created["success"] is True
    return str(created["id"])


def _user_id(sf: Any, username: str) -> str:
    records = sf.query(f"SELECT Id FROM User WHERE Username = '{username}'")["records"]
    return str(records[0]["Id"])


def _errors(exc: pytest.ExceptionInfo[SalesforceMalformedRequest]) -> tuple[str, str]:
    content = exc.value.content[0]
    return content["errorCode"], content["message"]


# ---- users who log in -----------------------------------------------------------------------


def test_every_active_user_logs_in_with_the_sandbox_password(secure: SalesforceSandbox) -> None:
    alice = secure.client_as(ALICE)
    me = alice.query(f"SELECT Id, Name, Profile.Name FROM User WHERE Username = '{ALICE}'")[
        "records"
    ][0]
    assert me["Name"] == "Alice Martin"
    assert me["Profile"]["Name"] == "Standard User"
    token = alice.session_id
    assert secure.app._sessions[token] == secure.org.tables["user"].row_of(me["Id"])
    # OAuth password grant, as a connected app logs a user in
    oauth = Salesforce(
        username=ALICE,
        password=PASSWORD,
        consumer_key="sandbox",
        consumer_secret="sandbox",
        session=secure.session(),
    )
    assert oauth.query("SELECT COUNT() FROM Opportunity")["totalSize"] > 0
    with pytest.raises(SalesforceAuthenticationFailed):
        secure.client_as(ALICE, password="wrong")


def test_users_have_profiles_admin_reps_and_managers(secure: SalesforceSandbox) -> None:
    sf = secure.client()
    profiles = {r["Name"] for r in sf.query("SELECT Id, Name FROM Profile")["records"]}
    assert profiles == {"System Administrator", "Standard User", "Sales Manager"}
    rows = sf.query_all(
        "SELECT Username, Profile.Name FROM User WHERE IsActive = true"
        " AND Profile.Name IN ('System Administrator', 'Sales Manager')"
    )["records"]
    by_name = {r["Username"]: r["Profile"]["Name"] for r in rows}
    assert by_name["demo@sandbox.local"] == "System Administrator"
    assert by_name[SOPHIE] == "Sales Manager"
    assert ALICE not in by_name
    # Each profile owns one permission set, as on Salesforce.
    owned = sf.query(
        "SELECT Id, ProfileId, Profile.Name FROM PermissionSet WHERE IsOwnedByProfile = true"
    )["records"]
    assert sorted(r["Profile"]["Name"] for r in owned) == sorted(profiles)
    assert all(r["Id"].startswith("0PS") and r["ProfileId"].startswith("00e") for r in owned)


# ---- field-level security -------------------------------------------------------------------


def test_a_tooling_field_is_hidden_from_alice_until_a_permission_set_grants_it(
    secure: SalesforceSandbox,
) -> None:
    admin = secure.client()
    alice = secure.client_as(ALICE)
    _create_field(admin)
    names = {f["name"] for f in alice.Opportunity.describe()["fields"]}
    assert "KPI_Attainment__c" not in names and "Amount" in names
    for soql in (
        "SELECT Id, KPI_Attainment__c FROM Opportunity LIMIT 1",
        "SELECT Id FROM Opportunity WHERE KPI_Attainment__c > 1",
        "SELECT Id FROM Opportunity ORDER BY KPI_Attainment__c LIMIT 1",
    ):
        with pytest.raises(SalesforceMalformedRequest) as refused:
            alice.query(soql)
        code, message = _errors(refused)
        assert code == "INVALID_FIELD"
        assert "No such column 'KPI_Attainment__c' on entity 'Opportunity'" in message

    permission_set = _permission_set(admin)
    granted = admin.FieldPermissions.create(
        {
            "ParentId": permission_set,
            "SobjectType": "Opportunity",
            "Field": KPI_FIELD,
            "PermissionsRead": True,
            "PermissionsEdit": False,
        }
    )
    assert granted["id"].startswith("01k")
    found = admin.query(
        "SELECT Id, Field, PermissionsRead, PermissionsEdit FROM FieldPermissions"
        f" WHERE ParentId = '{permission_set}' AND SobjectType IN ('Opportunity', 'User')"
    )["records"]
    assert [(r["Field"], r["PermissionsRead"], r["PermissionsEdit"]) for r in found] == [
        (KPI_FIELD, True, False)
    ]
    # Not yet assigned: Alice still cannot see it.
    assert "KPI_Attainment__c" not in {f["name"] for f in alice.Opportunity.describe()["fields"]}
    assignment = admin.PermissionSetAssignment.create(
        {"AssigneeId": _user_id(admin, ALICE), "PermissionSetId": permission_set}
    )
    assert assignment["id"].startswith("0Pa")
    assert (
        admin.query(
            f"SELECT Id FROM PermissionSetAssignment WHERE PermissionSetId = '{permission_set}'"
        )["totalSize"]
        == 1
    )
    assert "KPI_Attainment__c" in {f["name"] for f in alice.Opportunity.describe()["fields"]}
    rows = alice.query("SELECT Id, KPI_Attainment__c FROM Opportunity LIMIT 1")["records"]
    assert rows[0]["KPI_Attainment__c"] is None
    # Read, not edit: her write is refused with Salesforce's message.
    with pytest.raises(SalesforceMalformedRequest) as refused:
        alice.Opportunity.update(rows[0]["Id"], {"KPI_Attainment__c": 1.25})
    code, message = _errors(refused)
    assert code == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert message.startswith("Unable to create/update fields: KPI_Attainment__c.")
    # Unassigned again, the field is gone for her.
    admin.PermissionSetAssignment.delete(assignment["id"])
    assert "KPI_Attainment__c" not in {f["name"] for f in alice.Opportunity.describe()["fields"]}


def test_the_admin_cannot_write_a_tooling_field_until_granted_edit(
    secure: SalesforceSandbox,
) -> None:
    admin = secure.client()
    _create_field(admin, "User.KPI_Win_Rate__c")
    user_id = _user_id(admin, ALICE)
    assert "KPI_Win_Rate__c" not in {f["name"] for f in admin.User.describe()["fields"]}
    with pytest.raises(SalesforceMalformedRequest) as refused:
        admin.User.update(user_id, {"KPI_Win_Rate__c": 0.5})
    assert _errors(refused)[0] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    # composite/sobjects: refused per record
    body = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "User"}, "id": user_id, "KPI_Win_Rate__c": 0.5}],
    }
    results = admin.restful("composite/sobjects", method="PATCH", data=json.dumps(body))
    assert results[0]["success"] is False
    assert results[0]["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"

    permission_set = _permission_set(admin, "KPI_Worker_Write")
    admin.FieldPermissions.create(
        {
            "ParentId": permission_set,
            "SobjectType": "User",
            "Field": "User.KPI_Win_Rate__c",
            "PermissionsRead": True,
            "PermissionsEdit": True,
        }
    )
    admin.PermissionSetAssignment.create(
        {"AssigneeId": _user_id(admin, "demo@sandbox.local"), "PermissionSetId": permission_set}
    )
    results = admin.restful("composite/sobjects", method="PATCH", data=json.dumps(body))
    assert results[0]["success"] is True
    assert admin.User.get(user_id)["KPI_Win_Rate__c"] == 0.5
    # A layout never grants access: Alice still does not see the field.
    alice = secure.client_as(ALICE)
    assert "KPI_Win_Rate__c" not in {f["name"] for f in alice.User.describe()["fields"]}


def test_a_tooling_object_is_the_admins_until_object_permissions_grant_it(
    secure: SalesforceSandbox,
) -> None:
    admin = secure.client()
    admin.toolingexecute(
        "sobjects/CustomObject",
        method="POST",
        data={
            "FullName": "KPI_Scorecard__c",
            "Metadata": {"label": "KPI Scorecard", "pluralLabel": "KPI Scorecards"},
        },
    )
    created = admin.KPI_Scorecard__c.create({"Name": "Q3 Alice"})
    assert admin.KPI_Scorecard__c.get(created["id"])["Name"] == "Q3 Alice"
    alice = secure.client_as(ALICE)
    with pytest.raises(SalesforceResourceNotFound):
        alice.KPI_Scorecard__c.describe()
    with pytest.raises(SalesforceMalformedRequest) as refused:
        alice.query("SELECT Id FROM KPI_Scorecard__c")
    code, message = _errors(refused)
    assert code == "INVALID_TYPE" and "sObject type 'KPI_Scorecard__c' is not supported." in message
    assert "KPI_Scorecard__c" not in {s["name"] for s in alice.describe()["sobjects"]}

    permission_set = _permission_set(admin, "KPI_Scorecard_Read")
    granted = admin.ObjectPermissions.create(
        {"ParentId": permission_set, "SobjectType": "KPI_Scorecard__c", "PermissionsRead": True}
    )
    assert granted["id"].startswith("110")
    admin.PermissionSetAssignment.create(
        {"AssigneeId": _user_id(admin, ALICE), "PermissionSetId": permission_set}
    )
    assert alice.query("SELECT Id, Name FROM KPI_Scorecard__c")["records"][0]["Name"] == "Q3 Alice"
    with pytest.raises(SalesforceMalformedRequest) as refused:
        alice.KPI_Scorecard__c.create({"Name": "mine"})
    assert _errors(refused)[0] == "INSUFFICIENT_ACCESS_OR_READONLY"


def test_relationship_paths_need_read_on_the_lookup(secure: SalesforceSandbox) -> None:
    admin = secure.client()
    admin.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={
            "FullName": "Opportunity.KPI_Coach__c",
            "Metadata": {"label": "Coach", "type": "Lookup", "referenceTo": "User"},
        },
    )
    alice = secure.client_as(ALICE)
    soql = "SELECT Id, KPI_Coach__r.Name FROM Opportunity WHERE KPI_Coach__r.Name = null LIMIT 1"
    with pytest.raises(SalesforceMalformedRequest) as refused:
        alice.query(soql)
    code, message = _errors(refused)
    assert code == "INVALID_FIELD"
    assert "Didn't understand relationship 'KPI_Coach__r' in field path" in message
    permission_set = _permission_set(admin)
    admin.FieldPermissions.create(
        {
            "ParentId": permission_set,
            "SobjectType": "Opportunity",
            "Field": "Opportunity.KPI_Coach__c",
            "PermissionsRead": True,
        }
    )
    admin.PermissionSetAssignment.create(
        {"AssigneeId": _user_id(admin, ALICE), "PermissionSetId": permission_set}
    )
    assert alice.query(soql)["records"][0]["KPI_Coach__r"] is None


def test_enforcement_is_on_by_default_and_can_be_turned_off(
    fresh_sandbox: SalesforceSandbox,
) -> None:
    sf = fresh_sandbox.client()
    _create_field(sf)
    assert "KPI_Attainment__c" not in {f["name"] for f in sf.Opportunity.describe()["fields"]}
    with SalesforceSandbox.start(seed=7, enforce_field_security=False) as lax:
        admin = lax.client()
        _create_field(admin)
        assert "KPI_Attainment__c" in {f["name"] for f in admin.Opportunity.describe()["fields"]}
        alice = lax.client_as(ALICE)
        assert alice.query("SELECT KPI_Attainment__c FROM Opportunity LIMIT 1")["records"]


# ---- validations ----------------------------------------------------------------------------


def test_permission_set_names_are_unique_developer_names(secure: SalesforceSandbox) -> None:
    admin = secure.client()
    _permission_set(admin)
    found = admin.query("SELECT Id, Name FROM PermissionSet WHERE Name = 'KPI_Worker_Read'")
    assert found["totalSize"] == 1 and found["records"][0]["Id"].startswith("0PS")
    with pytest.raises(SalesforceMalformedRequest) as taken:
        admin.PermissionSet.create({"Name": "kpi_worker_read", "Label": "Again"})
    assert _errors(taken)[0] == "DUPLICATE_DEVELOPER_NAME"
    for bad in ("KPI Worker", "1KPI", "KPI__Worker", "KPI_"):
        with pytest.raises(SalesforceMalformedRequest) as invalid:
            admin.PermissionSet.create({"Name": bad, "Label": "Bad"})
        assert _errors(invalid)[0] == "FIELD_INTEGRITY_EXCEPTION"


def test_field_permissions_are_checked_as_salesforce_checks_them(
    secure: SalesforceSandbox,
) -> None:
    admin = secure.client()
    _create_field(admin)
    permission_set = _permission_set(admin)

    def grant(**values: Any) -> dict[str, Any]:
        record = {
            "ParentId": permission_set,
            "SobjectType": "Opportunity",
            "Field": KPI_FIELD,
            "PermissionsRead": True,
            **values,
        }
        return admin.FieldPermissions.create(record)  # type: ignore[no-any-return]

    with pytest.raises(SalesforceMalformedRequest) as edit_only:
        grant(PermissionsRead=False, PermissionsEdit=True)
    assert _errors(edit_only)[0] == "FIELD_INTEGRITY_EXCEPTION"
    for field in (
        "Opportunity.Name",
        "Opportunity.Id",
        "Opportunity.CloseDate",
        "Opportunity.Nope__c",
    ):
        with pytest.raises(SalesforceMalformedRequest) as refused:
            grant(Field=field)
        code, message = _errors(refused)
        assert code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        assert message == f"Field Name: bad value for restricted picklist field: {field}"
    with pytest.raises(SalesforceMalformedRequest) as unknown_object:
        grant(SobjectType="Nope__c", Field="Nope__c.X__c")
    assert _errors(unknown_object)[0] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    first = grant()
    with pytest.raises(SalesforceMalformedRequest) as duplicate:
        grant()
    assert _errors(duplicate)[0] == "DUPLICATE_VALUE"
    # A lookup may be named without Id; Salesforce stores the API name.
    lookup = grant(Field="Opportunity.Account")
    assert admin.FieldPermissions.get(lookup["id"])["Field"] == "Opportunity.AccountId"
    # Taking Read away deletes the record, as on Salesforce.
    admin.FieldPermissions.update(first["id"], {"PermissionsRead": False})
    with pytest.raises(SalesforceResourceNotFound):
        admin.FieldPermissions.get(first["id"])


def test_object_permissions_and_assignments_are_checked(secure: SalesforceSandbox) -> None:
    admin = secure.client()
    permission_set = _permission_set(admin)
    with pytest.raises(SalesforceMalformedRequest) as dependency:
        admin.ObjectPermissions.create(
            {"ParentId": permission_set, "SobjectType": "Opportunity", "PermissionsEdit": True}
        )
    code, message = _errors(dependency)
    assert code == "FIELD_INTEGRITY_EXCEPTION"
    assert message == "Permission Edit Opportunity depends on permission(s): Read Opportunity"
    record = {"ParentId": permission_set, "SobjectType": "Opportunity", "PermissionsRead": True}
    admin.ObjectPermissions.create(record)
    with pytest.raises(SalesforceMalformedRequest) as duplicate:
        admin.ObjectPermissions.create(record)
    assert _errors(duplicate)[0] == "DUPLICATE_VALUE"
    alice = _user_id(admin, ALICE)
    admin.PermissionSetAssignment.create({"AssigneeId": alice, "PermissionSetId": permission_set})
    with pytest.raises(SalesforceMalformedRequest) as twice:
        admin.PermissionSetAssignment.create(
            {"AssigneeId": alice, "PermissionSetId": permission_set}
        )
    assert _errors(twice) == (
        "DUPLICATE_VALUE",
        "duplicate value found: <unknown> duplicates value on record with id: <unknown>",
    )
    owned = admin.query("SELECT Id FROM PermissionSet WHERE IsOwnedByProfile = true LIMIT 1")
    with pytest.raises(SalesforceMalformedRequest) as profile_set:
        admin.PermissionSetAssignment.create(
            {"AssigneeId": alice, "PermissionSetId": owned["records"][0]["Id"]}
        )
    assert _errors(profile_set)[0] == "FIELD_INTEGRITY_EXCEPTION"
    # Reps cannot grant themselves anything.
    rep = secure.client_as(ALICE)
    with pytest.raises(SalesforceMalformedRequest) as rep_grant:
        rep.PermissionSet.create({"Name": "Mine", "Label": "Mine"})
    assert _errors(rep_grant)[0] == "INSUFFICIENT_ACCESS_OR_READONLY"


def test_permission_objects_are_described_and_counted(secure: SalesforceSandbox) -> None:
    sf = secure.client()
    before = secure.stats.api_calls
    fields = {f["name"] for f in sf.FieldPermissions.describe()["fields"]}
    assert {"ParentId", "SobjectType", "Field", "PermissionsRead", "PermissionsEdit"} <= fields
    described = sf.ObjectPermissions.describe()
    assert described["keyPrefix"] == "110"
    assert {"PermissionsViewAllRecords", "PermissionsModifyAllRecords"} <= {
        f["name"] for f in described["fields"]
    }
    assert sf.PermissionSetAssignment.describe()["keyPrefix"] == "0Pa"
    assert sf.Profile.describe()["keyPrefix"] == "00e"
    assert secure.stats.api_calls == before + 4
