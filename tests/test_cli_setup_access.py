"""``crm-kpi setup`` gives the reps read access to their KPIs: end to end on the sandbox with
object and field-level security enforced, the demo AE Alice reading through her own session.

Placement (layouts, tab, list view) is off in this config: the sandbox does not serve the
Metadata API yet; ``tests/test_salesforce_setup.py`` covers its plans.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import write_demo_config
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError

from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli import main

AS_OF = "2026-11-26T12:00:00+00:00"
ALICE = "alice.martin@sandbox.local"


@pytest.fixture
def enforced() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start() as sandbox:
        sandbox.org.enforce_field_security = True
        yield sandbox


def _config(sandbox: SalesforceSandbox, folder: Path) -> Path:
    path = write_demo_config(sandbox, folder)
    text = path.read_text(encoding="utf-8").replace(
        '    api_version: "59.0"\n',
        '    api_version: "59.0"\n    layouts: {Opportunity: [], User: []}\n'
        "    scorecard_tab: false\n",
    )
    path.write_text(text, encoding="utf-8")
    return path


def _ok(*args: str) -> str:
    outcome = CliRunner().invoke(main, list(args))
    assert outcome.exit_code == 0, outcome.output
    return outcome.stdout


def _as(sandbox: SalesforceSandbox, email: str) -> tuple[Salesforce, str]:
    """A session of the user with this email (the sandbox does not log reps in yet)."""
    row = sandbox.org.data.users.email.index(email)
    token = sandbox.app.new_session(row)
    client = Salesforce(session_id=token, instance_url=sandbox.url, session=sandbox.session())
    return client, sandbox.org.user_id(row)


def _read(client: Salesforce, text: str) -> list[dict[str, Any]]:
    return list(client.query_all(text)["records"])


def test_after_setup_and_a_sync_alice_reads_her_kpis(
    enforced: SalesforceSandbox, tmp_path: Path
) -> None:
    config = str(_config(enforced, tmp_path))
    alice, alice_id = _as(enforced, ALICE)
    with pytest.raises(SalesforceError):
        _read(alice, "SELECT Id, KPI_Close_Date_Slips__c FROM Opportunity")

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

    before = enforced.stats.api_calls
    again = _ok("setup", "--config", config)
    assert again.splitlines() == [
        "sandbox: all 1 objects and 33 fields exist",
        "sandbox: access, layouts and labels are up to date",
    ]
    second_calls = enforced.stats.api_calls - before
    print(f"setup API calls: first {first_calls}, second {second_calls}")
    assert second_calls <= 13  # login checks and describes included; 6 for the plan
