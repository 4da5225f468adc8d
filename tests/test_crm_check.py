"""The config checked against the CRM (issue 9, points 8 and 9), on both sandboxes.

A mapped field or stage value the CRM does not have stops ``config validate --check-crm``,
``setup`` (``--dry-run`` too) and ``sync`` before anything is pulled, with the config's
file:line:col: key path; a rep email no CRM user has is a warning of ``--check-crm`` and of
every run's report, with its line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import write_demo_config

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli import main
from crm_kpi_worker.sync.config_loader import load_config, load_config_text
from crm_kpi_worker.sync.store import Store

AS_OF = "2026-11-26T12:00:00+00:00"


@pytest.fixture(scope="module")
def sf_sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start() as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def hs_sandbox() -> Iterator[HubSpotSandbox]:
    with HubSpotSandbox.start(limits=RateLimits(None, None, None)) as sandbox:
        yield sandbox


@pytest.fixture
def sf_config(sf_sandbox: SalesforceSandbox, tmp_path: Path) -> Path:
    return write_demo_config(sf_sandbox, tmp_path)


@pytest.fixture
def hs_config(hs_sandbox: HubSpotSandbox, tmp_path: Path) -> Path:
    tmp_path = tmp_path / "hubspot"  # beside sf_config's files when a test takes both
    tmp_path.mkdir()
    text = path_of("demo-hubspot.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "base_url: https://127.0.0.1:0",
        f"base_url: {hs_sandbox.url}\n    ca_bundle: {hs_sandbox.ca_path}\n"
        "    rate_limits: {search_per_second: 100, per_10_seconds: 10000}",
    )
    text = text.replace(
        "url: sqlite:///crm-kpi-demo-hubspot.sqlite", f"url: sqlite:///{tmp_path / 'store.sqlite'}"
    )
    path = tmp_path / "crm-kpi.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def _at(path: Path, needle: str) -> str:
    """``file:line:col`` of the first ``needle`` in the file."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return f"{path}:{number}:{line.index(needle) + 1}"
    raise AssertionError(f"{needle!r} not in {path}")


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _assert_stopped_with(result: Result, line: str) -> None:
    assert result.exit_code == 4, result.output  # config error
    assert line in result.output.splitlines()
    assert "Traceback" not in result.output and "INVALID_FIELD" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _nothing_pulled(config: Path) -> bool:
    with Store.open(load_config(config).store.resolve_url()) as store:
        return store.reps("sandbox") == [] and store.cursor("sandbox", "deals") is None


# ---- unknown fields and stage values: errors ------------------------------------------------


def test_salesforce_unknown_amount_field_stops_check_setup_and_sync(sf_config: Path) -> None:
    _edit(sf_config, "      amount_is: arr\n", "      amount: Montant_Inexistant__c\n")
    expected = (
        f"{_at(sf_config, 'amount:')}: sources[0].mapping.amount: Opportunity has no field"
        " 'Montant_Inexistant__c'; did you mean 'Amount'?"
    )
    checked = _invoke("config", "validate", "--check-crm", str(sf_config))
    _assert_stopped_with(checked, expected)
    assert checked.stderr.splitlines()[-1] == f"1 problem found in {sf_config} against the CRM"

    for command in (("setup", "--dry-run"), ("setup",), ("sync", "--once", "--as-of", AS_OF)):
        result = _invoke(*command, "--config", str(sf_config))
        _assert_stopped_with(result, expected)
        assert "1 problem between the config and the CRM:" in result.output
    assert _nothing_pulled(sf_config)


def test_salesforce_unknown_stage_value_and_relationship_field(sf_config: Path) -> None:
    _edit(sf_config, "{crm: Demo, stage: demo,", "{crm: Dmo, stage: demo,")
    _edit(sf_config, "churn_date: Account.Churn_Date__c", "churn_date: Account.Churn_Dat__c")
    result = _invoke("config", "validate", "--check-crm", str(sf_config))
    assert result.exit_code == 4
    assert result.stderr.splitlines() == [
        f"{_at(sf_config, 'crm: Dmo')}: sources[0].mapping.stages[2].crm:"
        " 'Dmo' is not a value of the CRM's stage field StageName (its values:"
        " Prospecting, Qualification, Demo, Proposal, Negotiation, Closed Won, Closed Lost,"
        " Legacy Stage); did you mean 'Demo'?",
        f"{_at(sf_config, 'churn_date:')}: sources[0].mapping.churn_date: Account has no field"
        " 'Churn_Dat__c'; did you mean 'Churn_Date__c'?",
        f"2 problems found in {sf_config} against the CRM",
    ]
    sync = _invoke("sync", "--once", "--config", str(sf_config))
    assert sync.exit_code == 4 and "2 problems between the config and the CRM:" in sync.output
    assert _nothing_pulled(sf_config)


def test_hubspot_unknown_property_and_stage_id_stop_check_setup_and_sync(hs_config: Path) -> None:
    _edit(hs_config, "      amount_is: arr\n", "      amount: montant_inexistant\n")
    _edit(hs_config, "{crm: contractsent,", "{crm: contract_sent,")
    expected = [
        f"{_at(hs_config, 'amount:')}: sources[0].mapping.amount: deals has no property"
        " 'montant_inexistant'; did you mean 'amount'?",
        f"{_at(hs_config, 'crm: contract_sent')}: sources[0].mapping.stages[4].crm:"
        " 'contract_sent' is not a value of the CRM's stage field dealstage (its values:"
        " appointmentscheduled, qualifiedtobuy, presentationscheduled, decisionmakerboughtin,"
        " contractsent, closedwon, closedlost, 108765432); did you mean 'contractsent'?",
    ]
    checked = _invoke("config", "validate", "--check-crm", str(hs_config))
    assert checked.exit_code == 4
    assert checked.stderr.splitlines() == [
        *expected,
        f"2 problems found in {hs_config} against the CRM",
    ]
    for command in (("setup", "--dry-run"), ("sync", "--once", "--as-of", AS_OF)):
        result = _invoke(*command, "--config", str(hs_config))
        for line in expected:
            _assert_stopped_with(result, line)
    assert _nothing_pulled(hs_config)


def test_the_shipped_demo_configs_pass_the_check(sf_config: Path, hs_config: Path) -> None:
    for config in (sf_config, hs_config):
        result = _invoke("config", "validate", "--check-crm", str(config))
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        assert result.stdout.splitlines()[0] == f"{config}: valid (checked against the CRM)"


# ---- rep emails no CRM user has: warnings ---------------------------------------------------


def _misspell_alice(config: Path) -> tuple[str, str]:
    """Alice's team entry misspelt and a variable-pay target for nobody: (team, pay) lines."""
    _edit(config, "    - alice.martin@sandbox.local", "    - alice.martn@sandbox.local")
    _edit(
        config,
        "  target: 30000\n",
        "  target: 30000\n  targets:\n    ghost@sandbox.local: 45000\n",
    )
    team = (
        f"{_at(config, 'alice.martn@')}: teams[\"France Nord\"][0]: no user of source 'sandbox'"
        " has the email 'alice.martn@sandbox.local'; did you mean 'alice.martin@sandbox.local'?"
        " (until it matches a CRM user, this rep's team, quota and pay apply to no one and the"
        " rep's deals count as Unassigned)"
    )
    pay = (
        f'{_at(config, "ghost@")}: variable_pay.targets["ghost@sandbox.local"]: no user of'
        " source 'sandbox' has the email 'ghost@sandbox.local' (until it matches a CRM user,"
        " this rep's team, quota and pay apply to no one and the rep's deals count as"
        " Unassigned)"
    )
    return team, pay


@pytest.mark.parametrize("crm", ["salesforce", "hubspot"])
def test_unmatched_emails_are_warned_by_check_crm_and_in_the_run_report(
    crm: str, sf_config: Path, hs_config: Path
) -> None:
    config = sf_config if crm == "salesforce" else hs_config
    team, pay = _misspell_alice(config)
    checked = _invoke("config", "validate", "--check-crm", str(config))
    assert checked.exit_code == 0, checked.output  # warnings only
    assert checked.stderr.splitlines() == [f"warning: {team}", f"warning: {pay}"]

    ran = _invoke(
        "sync", "--once", "--dry-run", "--as-of", AS_OF, "--format", "json", "--config", str(config)
    )
    assert ran.exit_code == 0, ran.output
    (source,) = json.loads(ran.stdout)["sources"]
    assert source["warnings"] == [team, pay]
    table = _invoke("sync", "--once", "--dry-run", "--as-of", AS_OF, "--config", str(config))
    assert f"    warning: {team}" in table.stdout.splitlines()


def test_emails_of_teams_quotas_and_pay_targets_are_each_named_with_their_line() -> None:
    from crm_kpi_worker.sync.crm_check import unmatched_emails

    text = path_of("example-salesforce.yaml").read_text(encoding="utf-8")
    config = load_config_text(
        text, file="example.yaml", base_dir=path_of("example-salesforce.yaml").parent
    )
    users = {"bruno.lefevre@example.com", "chloe.dubois@example.com"}
    problems = unmatched_emails(config, "prod", users)

    def line_of(needle: str) -> int:
        return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)

    assert [(p.file, p.line, p.path) for p in problems] == [
        ("example.yaml", line_of("- alice.martin@"), "teams.Enterprise[0]"),
        ("example.yaml", line_of("{rep: alice.martin@"), "quotas.entries[0].rep"),
        (
            "example.yaml",
            line_of("alice.martin@example.com: 35000"),
            ('variable_pay.targets["alice.martin@example.com"]'),
        ),
    ]
    assert unmatched_emails(config, "prod", {*users, "Alice.Martin@example.com"}) == []
