"""Salesforce ``setup`` plans: permission sets and assignments (``access.py``), layouts, tab and
list view (``placement.py``), against an in-memory org that records every call.

The planners only read; a change's ``apply`` writes. Applying a plan then planning again must
plan nothing, and a dry run (planning before the fields exist) lists everything.
"""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace
from typing import Any

import pytest

from crm_kpi_worker.connectors.base import SetupSettings, TargetField
from crm_kpi_worker.connectors.errors import RequestRejected
from crm_kpi_worker.connectors.salesforce.access import READ_SET, WRITE_SET, AccessPlanner
from crm_kpi_worker.connectors.salesforce.placement import PlacementPlanner, list_view_columns

ME = "005000000000000AAA"
REPS = {"005000000000001AAA": "alice@x.test", "005000000000002AAA": "bruno@x.test"}
MANAGER = ("005000000000003AAA", "marc@x.test")


def _fields() -> list[TargetField]:
    card = [
        TargetField("KPI_Scorecard__c", "Scorecard_Key__c", "text", "Key", external_id=True),
        TargetField("KPI_Scorecard__c", "Rep__c", "lookup", "Rep", reference_to="User"),
        TargetField("KPI_Scorecard__c", "Quota__c", "currency", "Quota"),
        TargetField("KPI_Scorecard__c", "Quota_Attainment__c", "percent", "Attainment"),
    ]
    deal = [
        TargetField("Opportunity", "KPI_Close_Date_Slips__c", "number", "Slips"),
        TargetField("Opportunity", "KPI_Owner_Quota_Attainment__c", "percent", "Owner"),
    ]
    return card + deal


class FakeOrg:
    """The REST side of an org: permission sets, their permissions and assignments, users."""

    def __init__(self, *, chatter: bool = True) -> None:
        self.chatter = chatter
        self.calls: list[str] = []
        self.tables: dict[str, list[dict[str, Any]]] = {
            "PermissionSet": [],
            "ObjectPermissions": [],
            "FieldPermissions": [],
            "PermissionSetAssignment": [],
        }
        self.profiles = {"Sales Manager": [MANAGER]}
        self._ids = itertools.count(1)

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):015d}"

    # simple-salesforce's surface
    def query_all(self, text: str) -> dict[str, Any]:
        self.calls.append("query " + text.split(" FROM ")[1].split()[0])
        sobject = text.split(" FROM ")[1].split()[0]
        if sobject == "User":
            if "Profile.Name" in text:
                users = [u for name, us in self.profiles.items() if name in text for u in us]
            else:
                users = list(REPS.items())
            return {"records": [{"Id": i, "Username": n} for i, n in users]}
        if sobject == "Profile":
            return {"records": [{"Name": n} for n in self.profiles if f"'{n}'" in text]}
        ids = set(re.findall(r"'([^']+)'", text))
        key = {"PermissionSet": "Name", "PermissionSetAssignment": "PermissionSetId"}
        column = key.get(sobject, "ParentId")
        return {"records": [r for r in self.tables[sobject] if r.get(column) in ids]}

    def restful(self, path: str, method: str = "GET", json: Any = None) -> Any:
        self.calls.append(f"{method} {path}")
        if path == "chatter/users/me":
            if not self.chatter:
                raise RequestRejected(
                    "Chatter is off", status=403, code="FUNCTIONALITY_NOT_ENABLED"
                )
            return {"id": ME, "username": "worker@x.test"}
        if path == "sobjects/PermissionSet":
            record = {"Id": self._id("0PS"), **json}
            self.tables["PermissionSet"].append(record)
            return {"id": record["Id"], "success": True}
        if path.startswith("sobjects/PermissionSet/"):
            record = next(r for r in self.tables["PermissionSet"] if r["Id"] == path[-18:])
            record.update(json)
            return None
        assert path == "composite/sobjects", path
        assert len(json["records"]) <= 200
        results = []
        for record in json["records"]:
            kind = record["attributes"]["type"]
            body = {k: v for k, v in record.items() if k != "attributes"}
            if method == "POST":
                body["Id"] = self._id("0XX")
                self.tables[kind].append(body)
            else:
                target = next(r for r in self.tables[kind] if r["Id"] == body["Id"])
                target.update(body)
            results.append({"id": body["Id"], "success": True})
        return results

    def oauth2(self, path: str) -> Any:
        self.calls.append(f"oauth2 {path}")
        return {"user_id": ME, "preferred_username": "worker@x.test"}


def _planner(org: FakeOrg) -> AccessPlanner:
    return AccessPlanner(org, lambda thunk: thunk())


def _plan(org: FakeOrg, settings: SetupSettings | None = None) -> list[Any]:
    return _planner(org).plan(["KPI_Scorecard__c"], _fields(), settings or SetupSettings())


def test_a_first_plan_lists_every_grant_and_assignment() -> None:
    org = FakeOrg()
    plan = _plan(org)
    assert [str(c) for c in plan] == [
        'permission set KPI_Worker_Read: create "KPI Worker: read KPIs"',
        "permission set KPI_Worker_Read: grant read on object KPI_Scorecard__c",
        "permission set KPI_Worker_Read: grant read on 6 fields (KPI_Scorecard__c 4,"
        " Opportunity 2)",
        "permission set KPI_Worker_Read: assign to 2 users (alice@x.test, bruno@x.test)",
        'permission set KPI_Worker_Write: create "KPI Worker: write KPIs"',
        "permission set KPI_Worker_Write: grant read, create, edit on object KPI_Scorecard__c",
        "permission set KPI_Worker_Write: grant read and edit on 6 fields (KPI_Scorecard__c 4,"
        " Opportunity 2)",
        "permission set KPI_Worker_Write: assign to 1 user (worker@x.test)",
    ]
    # Reads only: the sets do not exist, so their permissions are not even read.
    assert org.calls == ["query PermissionSet", "query User", "GET chatter/users/me"]


def test_applying_the_plan_then_planning_again_plans_nothing() -> None:
    org = FakeOrg()
    for change in _plan(org):
        change.apply()
    sets = {r["Name"]: r["Id"] for r in org.tables["PermissionSet"]}
    fields = org.tables["FieldPermissions"]
    write = [f for f in fields if f["ParentId"] == sets[WRITE_SET]]
    assert {f["Field"] for f in write} == {f"{f.object}.{f.name}" for f in _fields()}
    assert all(f["PermissionsRead"] and f["PermissionsEdit"] for f in write)
    read = [f for f in fields if f["ParentId"] == sets[READ_SET]]
    assert all(f["PermissionsRead"] and "PermissionsEdit" not in f for f in read)
    assigned = {
        (a["PermissionSetId"], a["AssigneeId"]) for a in org.tables["PermissionSetAssignment"]
    }
    assert assigned == {(sets[READ_SET], i) for i in REPS} | {(sets[WRITE_SET], ME)}
    org.calls.clear()
    assert _plan(org) == []
    assert len(org.calls) == 6  # sets, object perms, field perms, assignments, reps, me


def test_only_differences_are_planned_and_flags_are_raised_never_lowered() -> None:
    org = FakeOrg()
    for change in _plan(org):
        change.apply()
    sets = {r["Name"]: r["Id"] for r in org.tables["PermissionSet"]}
    # An admin lowered one flag, removed one field permission; a rep was added.
    write_field = next(
        f for f in org.tables["FieldPermissions"] if f["ParentId"] == sets[WRITE_SET]
    )
    write_field["PermissionsEdit"] = False
    org.tables["FieldPermissions"] = [
        f
        for f in org.tables["FieldPermissions"]
        if not (
            f["ParentId"] == sets[READ_SET] and f["Field"] == "Opportunity.KPI_Close_Date_Slips__c"
        )
    ]
    REPS_BEFORE = dict(REPS)
    REPS["005000000000009AAA"] = "zoe@x.test"
    try:
        plan = _plan(org)
        assert [str(c) for c in plan] == [
            "permission set KPI_Worker_Read: grant read on 1 fields (Opportunity 1)",
            "permission set KPI_Worker_Read: assign to 1 user (zoe@x.test)",
            f"permission set KPI_Worker_Write: grant read and edit on 1 fields"
            f" ({write_field['SobjectType']} 1)",
        ]
        for change in plan:
            change.apply()
        assert write_field["PermissionsEdit"] is True
        assert _plan(org) == []
    finally:
        REPS.clear()
        REPS.update(REPS_BEFORE)


def test_profiles_are_granted_and_an_unknown_profile_is_a_clear_error() -> None:
    org = FakeOrg()
    settings = SetupSettings(grant_to_reps=False, grant_to_profiles=("Sales Manager",))
    plan = _plan(org, settings)
    assert "permission set KPI_Worker_Read: assign to 1 user (marc@x.test)" in [
        str(c) for c in plan
    ]
    with pytest.raises(ValueError, match=r"profiles this org does not have: Sales Boss"):
        _plan(FakeOrg(), SetupSettings(grant_to_profiles=("Sales Boss",)))


def test_french_labels_and_a_language_change_relabels() -> None:
    org = FakeOrg()
    for change in _plan(org):
        change.apply()
    plan = _plan(org, SetupSettings(language="fr"))
    assert [str(c) for c in plan] == [
        'permission set KPI_Worker_Read: set label "KPI Worker : lecture des KPI" and description',
        'permission set KPI_Worker_Write: set label "KPI Worker : écriture des KPI" and'
        " description",
    ]


def test_the_integration_user_comes_from_userinfo_when_chatter_is_off() -> None:
    org = FakeOrg(chatter=False)
    assert _planner(org).integration_user() == (ME, "worker@x.test")
    assert org.calls == ["GET chatter/users/me", "oauth2 userinfo"]


# ---- placement ---------------------------------------------------------------------------


class FakeMetadata:
    """``MetadataClient``'s surface over components held as namespaces."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.components: dict[tuple[str, str], Any] = {
            ("Layout", "Opportunity-Opportunity Layout"): SimpleNamespace(
                fullName="Opportunity-Opportunity Layout",
                layoutSections=[
                    SimpleNamespace(
                        label="Information",
                        layoutColumns=[
                            SimpleNamespace(layoutItems=[SimpleNamespace(field="Name")])
                        ],
                    )
                ],
            ),
            ("Layout", "User-User Layout"): SimpleNamespace(
                fullName="User-User Layout", layoutSections=[]
            ),
        }

    def new(self, kind: str, **values: Any) -> Any:
        return SimpleNamespace(**values)

    def read(self, kind: str, names: list[str]) -> list[Any]:
        self.calls.append(f"read {kind}")
        return [self.components.get((kind, n)) for n in names]

    def names(self, kind: str) -> list[str]:
        self.calls.append(f"list {kind}")
        return sorted(n for k, n in self.components if k == kind)

    def update(self, kind: str, items: list[Any]) -> None:
        self.calls.append(f"update {kind}")
        for item in items:
            self.components[(kind, item.fullName)] = item

    upsert = update


LAYOUTS = {"Opportunity": ["Opportunity Layout"], "User": ["User Layout"]}


def _placement(
    meta: FakeMetadata, language: str = "en", fields: list[TargetField] | None = None
) -> list[Any]:
    return PlacementPlanner(meta).plan(LAYOUTS, "KPI_Scorecard__c", fields or _fields(), language)


def test_placement_adds_a_kpis_section_a_tab_and_a_list_view_once() -> None:
    meta = FakeMetadata()
    plan = _placement(meta)
    assert [str(c) for c in plan] == [
        "page layout Opportunity-Opportunity Layout: add section KPIs (2 fields)",
        "tab KPI_Scorecard__c: create the object's tab",
        'list view KPI_Scorecard__c.My_Scorecards: create "My scorecards" (the running'
        " user's own scorecards, 3 columns)",
    ]
    assert meta.calls == ["read Layout", "read CustomTab", "read ListView"]  # User: no fields
    for change in plan:
        change.apply()
    layout = meta.components[("Layout", "Opportunity-Opportunity Layout")]
    (section,) = [s for s in layout.layoutSections if s.label == "KPIs"]
    items = [i for c in section.layoutColumns for i in c.layoutItems]
    assert [(i.field, i.behavior) for i in items] == [
        ("KPI_Close_Date_Slips__c", "Readonly"),
        ("KPI_Owner_Quota_Attainment__c", "Readonly"),
    ]
    view = meta.components[("ListView", "KPI_Scorecard__c.My_Scorecards")]
    assert view.filterScope == "Mine"
    assert view.columns == ["NAME", "Quota__c", "Quota_Attainment__c"]
    assert meta.components[("CustomTab", "KPI_Scorecard__c")].customObject is True
    assert _placement(meta) == []


def test_an_existing_section_is_updated_in_place_never_duplicated() -> None:
    meta = FakeMetadata()
    for change in _placement(meta):
        change.apply()
    fewer = [f for f in _fields() if f.name != "KPI_Close_Date_Slips__c"]
    more = [*fewer, TargetField("Opportunity", "KPI_New__c", "number", "New")]
    (change,) = [c for c in _placement(meta, "fr", more) if c.kind == "page layout"]
    assert str(change) == (
        "page layout Opportunity-Opportunity Layout: section Indicateurs KPI: add 1 fields,"
        " remove 1 fields, relabel 'KPIs' to 'Indicateurs KPI'"
    )
    change.apply()
    layout = meta.components[("Layout", "Opportunity-Opportunity Layout")]
    labels = [s.label for s in layout.layoutSections]
    assert labels == ["Information", "Indicateurs KPI"]
    fields = [i.field for c in layout.layoutSections[1].layoutColumns for i in c.layoutItems]
    assert sorted(fields) == ["KPI_New__c", "KPI_Owner_Quota_Attainment__c"]


def test_a_kpi_field_an_admin_placed_elsewhere_stays_there() -> None:
    meta = FakeMetadata()
    layout = meta.components[("Layout", "Opportunity-Opportunity Layout")]
    layout.layoutSections[0].layoutColumns[0].layoutItems.append(
        SimpleNamespace(field="KPI_Close_Date_Slips__c")
    )
    (change,) = [c for c in _placement(meta) if c.kind == "page layout"]
    assert change.detail == "add section KPIs (1 fields)"


def test_a_layout_that_does_not_exist_is_named_with_the_ones_that_do() -> None:
    meta = FakeMetadata()
    planner = PlacementPlanner(meta)
    with pytest.raises(ValueError) as error:
        planner.plan({"Opportunity": ["Deal Layout"]}, None, _fields(), "en")
    assert str(error.value) == (
        "sources[].layouts names page layouts this org does not have: 'Deal Layout';"
        " Opportunity's layouts are: 'Opportunity Layout'"
    )


def test_no_layouts_and_no_tab_when_the_config_says_so() -> None:
    meta = FakeMetadata()
    assert PlacementPlanner(meta).plan({"Opportunity": []}, None, _fields(), "en") == []
    assert meta.calls == []


def test_list_view_columns_are_the_name_and_at_most_14_kpis() -> None:
    many = [TargetField("KPI_Scorecard__c", f"K{i}__c", "number", "K") for i in range(20)]
    columns = list_view_columns(many)
    assert columns[0] == "NAME" and len(columns) == 15
