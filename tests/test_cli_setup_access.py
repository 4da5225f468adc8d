"""``crm-kpi setup`` makes the KPIs visible to the reps: end to end on the sandbox, which
enforces object and field-level security as Salesforce does, the demo AE Alice logged in with
her own username and password; the page layout, tab and list view through the Metadata API.
``tests/test_salesforce_setup.py`` covers the plans' details.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import write_demo_config
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli import main

AS_OF = "2026-11-26T12:00:00+00:00"
ALICE = "alice.martin@sandbox.local"


@pytest.fixture
def enforced() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start() as sandbox:  # field-level security is enforced by default
        yield sandbox


def _ok(*args: str) -> str:
    outcome = CliRunner().invoke(main, list(args))
    assert outcome.exit_code == 0, outcome.output
    return outcome.stdout


def _as(sandbox: SalesforceSandbox, username: str) -> tuple[Salesforce, str]:
    """The user logged in with their own username and password, and their id."""
    client = sandbox.client_as(username)
    (me,) = client.query(f"SELECT Id FROM User WHERE Username = '{username}'")["records"]
    return client, str(me["Id"])


def _read(client: Salesforce, text: str) -> list[dict[str, Any]]:
    return list(client.query_all(text)["records"])


def test_after_setup_and_a_sync_alice_reads_her_kpis(
    enforced: SalesforceSandbox, tmp_path: Path
) -> None:
    config = str(write_demo_config(enforced, tmp_path))
    alice, alice_id = _as(enforced, ALICE)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        _read(alice, "SELECT Id, KPI_Close_Date_Slips__c FROM Opportunity")
    assert refused.value.content[0]["errorCode"] == "INVALID_FIELD"

    planned = _ok("setup", "--dry-run", "--config", config).splitlines()
    grants = [line for line in planned if "permission set" in line]
    assert grants[:2] == [
        'sandbox: would change permission set KPI_Worker_Read: create "KPI Worker : lecture'
        ' des KPI"',
        "sandbox: would change permission set KPI_Worker_Read: grant read on object"
        " KPI_Scorecard__c",
    ]
    assert (
        "sandbox: would change permission set KPI_Worker_Read: grant read on 33 fields"
        " (KPI_Scorecard__c 29, Opportunity 4)"
    ) in grants
    assert any(ALICE in line and "assign to 6 users" in line for line in grants), grants
    assert grants[-1] == (
        "sandbox: would change permission set KPI_Worker_Write: assign to 1 user"
        " (demo@sandbox.local)"
    )

    before = enforced.stats.api_calls
    _ok("setup", "--config", config)
    first_calls = enforced.stats.api_calls - before
    _ok("sync", "--once", "--as-of", AS_OF, "--config", config)

    (card,) = _read(
        alice,
        "SELECT Name, OwnerId, Quota_Attainment__c FROM KPI_Scorecard__c"
        f" WHERE Rep__c = '{alice_id}' AND Period_Type__c = 'quarter'"
        " AND Period_Start__c = 2026-07-01",
    )
    assert card["Quota_Attainment__c"] == 125.0
    assert card["OwnerId"] == alice_id  # "My scorecards" (filterScope Mine) shows it to her
    deals = _read(
        alice,
        "SELECT KPI_Owner_Quota_Attainment__c FROM Opportunity"
        f" WHERE OwnerId = '{alice_id}' AND IsClosed = false",
    )
    assert deals and all("KPI_Owner_Quota_Attainment__c" in d for d in deals)

    # The Opportunity layout holds the KPI section, the scorecards have a tab and a list view.
    admin = enforced.metadata_api(enforced.client())
    layout = admin.Layout.read("Opportunity-Opportunity Layout")
    (section,) = [s for s in layout.layoutSections if s.label == "Indicateurs KPI"]
    placed = {item.field for column in section.layoutColumns for item in column.layoutItems or []}
    assert placed == {
        "KPI_Close_Date_Slips__c",
        "KPI_Deal_Created_On__c",  # the demo writes ages as dates
        "KPI_Stage_Entered_On__c",
        "KPI_Owner_Quota_Attainment__c",
    }
    assert admin.CustomTab.read("KPI_Scorecard__c").customObject is True
    view = admin.ListView.read("KPI_Scorecard__c.My_Scorecards")
    assert view.filterScope == "Mine" and "Quota_Attainment__c" in view.columns

    before = enforced.stats.api_calls
    again = _ok("setup", "--config", config)
    assert again.splitlines() == [
        "sandbox: all 1 objects and 33 fields exist",
        "sandbox: access, layouts and labels are up to date",
    ]
    second_calls = enforced.stats.api_calls - before
    print(f"setup API calls: first {first_calls}, second {second_calls}")
    # The mapping check's describes, then 6 queries for access and one Metadata read each of
    # the layout, the tab and the list view.
    assert second_calls <= 16
