"""The sandbox Salesforce's Metadata API driven by the real ``sf.mdapi`` (zeep, with
simple-salesforce's bundled WSDL): page layouts, custom object tabs and list views read,
created, updated, upserted and deleted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from simple_salesforce import Salesforce
from zeep.exceptions import Fault

from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

OPPORTUNITY_LAYOUT = "Opportunity-Opportunity Layout"


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start(seed=7) as running:
        yield running


@pytest.fixture
def mdapi(sandbox: SalesforceSandbox) -> Any:
    return sandbox.metadata_api(sandbox.client())


def _items(layout: Any) -> dict[str, str]:
    # An empty column comes back as None from zeep (<layoutColumns/>), as from Salesforce.
    return {
        item.field: item.behavior
        for section in layout.layoutSections
        for column in section.layoutColumns
        if column is not None
        for item in column.layoutItems
    }


def test_seeded_layouts_read_with_their_sections(mdapi: Any) -> None:
    layout = mdapi.Layout.read(OPPORTUNITY_LAYOUT)
    assert layout.fullName == OPPORTUNITY_LAYOUT
    labels = [s.label for s in layout.layoutSections]
    assert labels == ["Opportunity Information", "Additional Information", "System Information"]
    assert {s.style for s in layout.layoutSections} == {"TwoColumnsTopToBottom"}
    items = _items(layout)
    assert items["Name"] == "Required" and items["Amount"] == "Edit"
    assert items["CreatedById"] == "Readonly"
    both = mdapi.Layout.read(["User-User Layout", "Account-Account Layout"])
    assert [layout.fullName for layout in both] == ["User-User Layout", "Account-Account Layout"]
    assert "ProfileId" in _items(both[0])


def test_reading_a_missing_component_answers_an_empty_record(mdapi: Any) -> None:
    missing = mdapi.Layout.read("Opportunity-No Such Layout")
    assert missing.fullName is None and missing.layoutSections == []


def test_a_layout_round_trips_through_update_and_refuses_unknown_fields(
    sandbox: SalesforceSandbox, mdapi: Any
) -> None:
    sf = sandbox.client()
    sf.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={
            "FullName": "Opportunity.KPI_Attainment__c",
            "Metadata": {"label": "Attainment", "type": "Percent", "precision": 5, "scale": 1},
        },
    )
    layout = mdapi.Layout.read(OPPORTUNITY_LAYOUT)
    item = mdapi.LayoutItem(field="KPI_Attainment__c", behavior="Readonly")
    kpis = mdapi.LayoutSection(
        label="KPIs",
        style="OneColumn",
        customLabel=True,
        detailHeading=True,
        editHeading=False,
        layoutColumns=[mdapi.LayoutColumn(layoutItems=[item])],
    )
    layout.layoutSections.append(kpis)
    before = sandbox.stats.api_calls
    mdapi.Layout.update([layout])
    assert sandbox.stats.api_calls == before + 1
    again = mdapi.Layout.read(OPPORTUNITY_LAYOUT)
    assert again.layoutSections[-1].label == "KPIs"
    assert _items(again)["KPI_Attainment__c"] == "Readonly"

    broken = mdapi.Layout.read(OPPORTUNITY_LAYOUT)
    broken.layoutSections[0].layoutColumns[0].layoutItems.append(
        mdapi.LayoutItem(field="No_Such_Field__c", behavior="Edit")
    )
    with pytest.raises(Exception, match="INVALID_CROSS_REFERENCE_KEY") as refused:
        mdapi.Layout.update([broken])
    assert "no CustomField named Opportunity.No_Such_Field__c found" in str(refused.value)
    assert "No_Such_Field__c" not in _items(mdapi.Layout.read(OPPORTUNITY_LAYOUT))


def test_create_update_upsert_and_delete_answer_their_results(
    sandbox: SalesforceSandbox, mdapi: Any
) -> None:
    service = mdapi._service
    session = [mdapi._session_header]
    view = mdapi.ListView(
        fullName="Opportunity.KPI_My_Open_Deals",
        label="My open deals",
        filterScope="Mine",
        columns=["OPPORTUNITY.NAME", "OPPORTUNITY.AMOUNT", "CloseDate"],
        filters=[mdapi.ListViewFilter(field="OPPORTUNITY.CLOSED", operation="equals", value="0")],
    )
    created = service.createMetadata([view], _soapheaders=session)
    assert [(r.fullName, r.success, r.errors) for r in created] == [
        ("Opportunity.KPI_My_Open_Deals", True, [])
    ]
    duplicate = service.createMetadata([view], _soapheaders=session)[0]
    assert duplicate.success is False
    assert duplicate.errors[0].statusCode == "DUPLICATE_DEVELOPER_NAME"
    read = mdapi.ListView.read("Opportunity.KPI_My_Open_Deals")
    assert read.filterScope == "Mine" and read.columns[-1] == "CloseDate"
    assert read.filters[0].operation == "equals"

    view.label = "Open deals"
    view.filterScope = "Everything"
    upserted = service.upsertMetadata([view], _soapheaders=session)[0]
    assert (upserted.success, upserted.created) == (True, False)
    assert mdapi.ListView.read("Opportunity.KPI_My_Open_Deals").label == "Open deals"
    fresh = mdapi.ListView(
        fullName="Opportunity.KPI_Team", label="Team", filterScope="Team", columns=["Amount"]
    )
    assert service.upsertMetadata([fresh], _soapheaders=session)[0].created is True

    missing = mdapi.ListView(
        fullName="Opportunity.Nobody", label="x", filterScope="Mine", columns=["Amount"]
    )
    updated = service.updateMetadata([missing], _soapheaders=session)[0]
    assert updated.success is False
    assert updated.errors[0].statusCode == "INVALID_CROSS_REFERENCE_KEY"

    deleted = service.deleteMetadata(
        "ListView", ["Opportunity.KPI_My_Open_Deals", "Opportunity.Nobody"], _soapheaders=session
    )
    assert [(r.fullName, r.success) for r in deleted] == [
        ("Opportunity.KPI_My_Open_Deals", True),
        ("Opportunity.Nobody", False),
    ]
    assert mdapi.ListView.read("Opportunity.KPI_My_Open_Deals").fullName is None


def test_list_views_are_checked(mdapi: Any) -> None:
    for full_name, columns, expected in (
        ("Opportunity.Bad Name", ["Amount"], "INVALID_NAME"),
        ("Nope__c.Mine", ["Amount"], "INVALID_CROSS_REFERENCE_KEY"),
        ("Opportunity.Mine", ["Nope__c"], "INVALID_CROSS_REFERENCE_KEY"),
    ):
        view = mdapi.ListView(fullName=full_name, label="x", filterScope="Mine", columns=columns)
        with pytest.raises(Exception, match=expected):
            mdapi.ListView.create([view])


def test_a_custom_tab_needs_its_object_and_a_motif(sandbox: SalesforceSandbox, mdapi: Any) -> None:
    tab = mdapi.CustomTab(
        fullName="KPI_Scorecard__c", customObject=True, motif="Custom20: Airplane"
    )
    with pytest.raises(Exception, match="no CustomObject named KPI_Scorecard__c found"):
        mdapi.CustomTab.create([tab])
    sandbox.client().toolingexecute(
        "sobjects/CustomObject",
        method="POST",
        data={"FullName": "KPI_Scorecard__c", "Metadata": {"label": "KPI Scorecard"}},
    )
    with pytest.raises(Exception, match="REQUIRED_FIELD_MISSING"):
        mdapi.CustomTab.create([mdapi.CustomTab(fullName="KPI_Scorecard__c", customObject=True)])
    mdapi.CustomTab.create([tab])
    read = mdapi.CustomTab.read("KPI_Scorecard__c")
    assert (read.fullName, read.customObject, read.motif) == (
        "KPI_Scorecard__c",
        True,
        "Custom20: Airplane",
    )
    mdapi.CustomTab.delete(["KPI_Scorecard__c"])
    assert mdapi.CustomTab.read("KPI_Scorecard__c").fullName is None


def test_faults_for_a_bad_session_and_an_unsupported_type(
    sandbox: SalesforceSandbox, mdapi: Any
) -> None:
    with pytest.raises(Fault) as unsupported:
        mdapi.ApexClass.read("KpiJob")
    assert unsupported.value.code.endswith("INVALID_TYPE")
    sandbox.app.expire_sessions()
    with pytest.raises(Fault) as expired:
        mdapi.Layout.read(OPPORTUNITY_LAYOUT)
    assert expired.value.code.endswith("INVALID_SESSION_ID")
    assert str(expired.value).startswith("INVALID_SESSION_ID: ")


def test_the_metadata_server_url_of_an_oauth_session_is_served(sandbox: SalesforceSandbox) -> None:
    sf = Salesforce(
        username="demo@sandbox.local",
        password="demo",
        consumer_key="sandbox",
        consumer_secret="sandbox",
        session=sandbox.session(),
    )
    assert sf.metadata_url == f"https://{sf.sf_instance}/services/Soap/m/{sf.sf_version}/"
    layout = sandbox.metadata_api(sf).Layout.read("User-User Layout")
    assert layout.fullName == "User-User Layout"


def test_a_layout_grants_no_field_access() -> None:
    with SalesforceSandbox.start(seed=7, enforce_field_security=True) as sandbox:
        admin = sandbox.client()
        admin.toolingexecute(
            "sobjects/CustomField",
            method="POST",
            data={
                "FullName": "User.KPI_Quota__c",
                "Metadata": {"label": "Quota", "type": "Currency", "precision": 16, "scale": 2},
            },
        )
        mdapi = sandbox.metadata_api(admin)
        layout = mdapi.Layout.read("User-User Layout")
        layout.layoutSections[1].layoutColumns[0].layoutItems.append(
            mdapi.LayoutItem(field="KPI_Quota__c", behavior="Edit")
        )
        mdapi.Layout.update([layout])
        alice = sandbox.client_as("alice.martin@sandbox.local")
        assert "KPI_Quota__c" not in {f["name"] for f in alice.User.describe()["fields"]}
        assert "KPI_Quota__c" not in {f["name"] for f in admin.User.describe()["fields"]}
