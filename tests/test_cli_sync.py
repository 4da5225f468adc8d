"""``crm-kpi setup``, ``sync`` and ``kpis show`` as a user runs them, on the sandbox."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_demo_config

from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli import main

AS_OF = "2026-11-26T12:00:00+00:00"


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[Path]:
    with SalesforceSandbox.start() as sandbox:
        yield write_demo_config(sandbox, tmp_path)


def _ok(*args: str) -> str:
    """What the command printed on stdout (progress goes to stderr)."""
    outcome = CliRunner().invoke(main, list(args))
    assert outcome.exit_code == 0, outcome.output
    return outcome.stdout


def test_setup_lists_then_creates_then_finds_everything(config_file: Path) -> None:
    planned = _ok("setup", "--dry-run", "--config", str(config_file))
    assert "would create object KPI_Scorecard__c (Tableau de bord KPI)" in planned
    assert (
        "would create field Opportunity.KPI_Stage_Entered_On__c (date, Étape commencée le)"
        in planned
    )
    created = _ok("setup", "--config", str(config_file))
    assert "sandbox: created 1 objects and 33 fields" in created
    again = _ok("setup", "--config", str(config_file))
    assert again.splitlines() == [
        "sandbox: all 1 objects and 33 fields exist",
        "sandbox: access, layouts and labels are up to date",
    ]


def test_sync_dry_run_then_sync_then_kpis_show(config_file: Path) -> None:
    _ok("setup", "--config", str(config_file))
    dry = json.loads(
        _ok(
            "sync",
            "--once",
            "--dry-run",
            "--as-of",
            AS_OF,
            "--format",
            "json",
            "--config",
            str(config_file),
        )
    )
    (source,) = dry["sources"]
    assert source["written"] == []
    planned = {p["object"]: p["records_to_write"] for p in source["planned"]}
    assert planned["Opportunity"] == 579 and planned["KPI_Scorecard__c"] > 0

    table = _ok("sync", "--once", "--as-of", AS_OF, "--config", str(config_file))
    assert "completed" in table
    assert (
        "excluded: 4 (no_amount 1, no_close_date 1, unconvertible_currency 1, unknown_stage 1)"
        in table
    )
    assert "Opportunity: wrote 579 records" in table

    rows = json.loads(
        _ok(
            "kpis",
            "show",
            "--rep",
            "alice.martin@sandbox.local",
            "--period",
            "2026-Q3",
            "--format",
            "json",
            "--config",
            str(config_file),
        )
    )
    (alice,) = rows
    assert alice["name"] == "Alice Martin"
    assert alice["bookings_arr"] == 150000 and alice["quota_attainment"] == 1.25

    text = _ok(
        "kpis",
        "show",
        "--scope",
        "team",
        "--period",
        "2026-Q3",
        "--format",
        "csv",
        "--config",
        str(config_file),
    )
    teams = list(csv.DictReader(io.StringIO(text)))
    assert sorted(t["subject"] for t in teams) == ["France Nord", "France Sud"]

    human = _ok(
        "kpis", "show", "--period", "2026-Q3", "--scope", "rep", "--config", str(config_file)
    )
    assert "Alice Martin" in human and "125.0%" in human


def test_kpis_show_before_any_run_says_what_to_do(config_file: Path) -> None:
    outcome = CliRunner().invoke(main, ["kpis", "show", "--config", str(config_file)])
    assert outcome.exit_code == 1
    assert "no KPI values yet: run `crm-kpi sync --once` first" in outcome.output


def test_sync_without_schedule_needs_once(config_file: Path) -> None:
    outcome = CliRunner().invoke(main, ["sync", "--config", str(config_file)])
    assert outcome.exit_code == 4  # config error
    assert "the config has no schedule: add one, or run with --once" in outcome.output


def test_a_bad_config_is_refused_with_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nsources: []\nfiscal: {timezone: Mars/Olympus}\n", encoding="utf-8")
    outcome = CliRunner().invoke(main, ["sync", "--once", "--config", str(bad)])
    assert outcome.exit_code == 4
    assert "fiscal.timezone" in outcome.output and "crm-kpi config validate" in outcome.output


def test_as_of_needs_a_time_zone(config_file: Path) -> None:
    outcome = CliRunner().invoke(
        main, ["sync", "--once", "--as-of", "2026-11-26T12:00:00", "--config", str(config_file)]
    )
    assert outcome.exit_code == 2
    assert "has no time zone" in outcome.output


def test_a_run_that_cannot_log_in_fails_with_one_clear_line(config_file: Path) -> None:
    text = config_file.read_text(encoding="utf-8").replace("default: demo}", "default: wrong}")
    config_file.write_text(text, encoding="utf-8")
    outcome = CliRunner().invoke(main, ["sync", "--once", "--config", str(config_file)])
    assert outcome.exit_code == 5  # CRM auth error
    assert "error: the CRM refused the credentials:" in outcome.output
    assert "INVALID_LOGIN" in outcome.output and "Traceback" not in outcome.output
    assert "wrong" not in outcome.output  # the password never appears


# ---- the same commands on a HubSpot source --------------------------------------------------


@pytest.fixture
def hubspot_config_file(tmp_path: Path) -> Iterator[Path]:
    from crm_kpi_worker.config import path_of
    from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits

    with HubSpotSandbox.start(limits=RateLimits(None, None, None)) as sandbox:
        text = path_of("demo-hubspot.yaml").read_text(encoding="utf-8")
        text = text.replace(
            "base_url: https://127.0.0.1:0",
            f"base_url: {sandbox.url}\n    ca_bundle: {sandbox.ca_path}\n"
            "    rate_limits: {search_per_second: 100, per_10_seconds: 10000}",
        )
        text = text.replace(
            "url: sqlite:///crm-kpi-demo-hubspot.sqlite",
            f"url: sqlite:///{tmp_path / 'store.sqlite'}",
        )
        path = tmp_path / "crm-kpi.yaml"
        path.write_text(text, encoding="utf-8")
        yield path


def test_setup_and_sync_on_hubspot(hubspot_config_file: Path) -> None:
    planned = _ok("setup", "--dry-run", "--config", str(hubspot_config_file))
    assert "would create object p_kpi_scorecard (Tableau de bord KPI)" in planned
    assert "would create field deals.kpi_stage_entered_on (date, Étape commencée le)" in planned
    created = _ok("setup", "--config", str(hubspot_config_file))
    assert "sandbox: created 1 objects and 33 fields" in created
    again = _ok("setup", "--config", str(hubspot_config_file))
    assert again.splitlines() == [
        "sandbox: all 1 objects and 34 fields exist",
        "sandbox: access, layouts and labels are up to date",
    ]
    report = json.loads(
        _ok(
            "sync",
            "--once",
            "--as-of",
            AS_OF,
            "--format",
            "json",
            "--config",
            str(hubspot_config_file),
        )
    )
    (source,) = report["sources"]
    written = {w["object"]: w["records_written"] for w in source["written"]}
    assert written["deals"] > 500 and written["p_kpi_scorecard"] > 0
    shown = json.loads(
        _ok(
            "kpis",
            "show",
            "--rep",
            "alice.martin@sandbox.local",
            "--period",
            "2026-Q3",
            "--format",
            "json",
            "--config",
            str(hubspot_config_file),
        )
    )
    (alice,) = shown
    assert alice["name"] == "Alice Martin"
    assert alice["bookings_arr"] == 150000 and alice["quota_attainment"] == 1.25


def _calls(sandbox: object) -> dict[str, int]:
    """The sandbox's calls by route so far, then counting starts again."""
    stats = sandbox.stats  # type: ignore[attr-defined]
    calls = dict(stats.by_route)
    stats.by_route.clear()
    return calls


def test_hubspot_setup_makes_the_kpis_visible_in_the_configs_language(tmp_path: Path) -> None:
    """French labels and the scorecard's display properties at creation; a switch to English
    plans (dry run) then makes label updates only; a third setup changes nothing."""
    from crm_kpi_worker.config import path_of
    from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits

    with HubSpotSandbox.start(limits=RateLimits(None, None, None)) as sandbox:
        text = path_of("demo-hubspot.yaml").read_text(encoding="utf-8")
        text = text.replace(
            "base_url: https://127.0.0.1:0",
            f"base_url: {sandbox.url}\n    ca_bundle: {sandbox.ca_path}",
        )
        french = tmp_path / "fr.yaml"
        french.write_text(text, encoding="utf-8")
        assert "language: fr" in text
        english = tmp_path / "en.yaml"
        english.write_text(text.replace("language: fr", "language: en"), encoding="utf-8")
        portal = sandbox.portal

        created = _ok("setup", "--config", str(french))
        assert "sandbox: access, layouts and labels are up to date" in created
        first = _calls(sandbox)
        card = portal.store("p_kpi_scorecard")
        schema = portal.schema_json(card)
        assert schema["primaryDisplayProperty"] == "kpi_name"
        assert schema["secondaryDisplayProperties"] == [
            "kpi_quota_attainment",
            "kpi_bookings_arr",
            "kpi_win_rate",
        ]
        assert schema["labels"] == {
            "singular": "Tableau de bord KPI",
            "plural": "Tableaux de bord KPI",
        }
        assert card.properties["kpi_win_rate"].label == "Taux de réussite"
        deals = portal.store("deals")
        assert deals.properties["kpi_stage_entered_on"].label == "Étape commencée le"
        assert deals.groups["kpi_worker"].label == "KPI worker"
        check = {  # setup's check of the mapping against the portal
            "GET /crm/v3/properties/deals": 1,
            "GET /crm/v3/pipelines/deals": 1,
            "GET /crm/v3/properties/companies": 1,
            "GET /crm/v3/properties/meetings": 1,
        }
        # Creation only: the plan reads what creation answered (no call of its own).
        assert first == {
            **check,
            "GET /crm-object-schemas/v3/schemas": 2,
            "POST /crm-object-schemas/v3/schemas": 1,
            "POST /crm/v3/properties/deals/groups": 1,
            "POST /crm/v3/properties/deals/batch/create": 1,
        }

        again = _ok("setup", "--config", str(french))
        assert again.splitlines()[-1] == "sandbox: access, layouts and labels are up to date"
        second = _calls(sandbox)
        assert not any(route.startswith(("PATCH", "POST")) for route in second), second
        # The scorecard's properties come with its schema; the plan reads the deals' group.
        assert second == {
            **check,
            "GET /crm-object-schemas/v3/schemas": 1,
            "GET /crm/v3/properties/deals/groups/{groupName}": 1,
        }

        # A person renames the group; the language switches to English.
        deals.groups["kpi_worker"].label = "Mes KPI"
        planned = _ok("setup", "--dry-run", "--config", str(english))
        assert (
            "sandbox: would change property deals.kpi_stage_entered_on:"
            " label 'Stage entered on' (was 'Étape commencée le');"
            " description in the config's language"
        ) in planned
        assert (
            "sandbox: would change property group deals.kpi_worker: label 'KPI worker'"
            " (was 'Mes KPI')"
        ) in planned
        assert (
            "sandbox: would change object p_kpi_scorecard: labels 'KPI Scorecard'/'KPI Scorecards'"
            " (were 'Tableau de bord KPI'/'Tableaux de bord KPI')"
        ) in planned
        changes = [line for line in planned.splitlines() if "would change" in line]
        assert not any(route.startswith(("PATCH", "POST")) for route in _calls(sandbox))
        assert card.properties["kpi_win_rate"].label == "Taux de réussite"

        applied = _ok("setup", "--config", str(english))
        assert f"sandbox: made {len(changes)} changes" in applied
        patches = {r: n for r, n in _calls(sandbox).items() if r.startswith("PATCH")}
        assert sum(patches.values()) == len(changes), patches
        assert card.properties["kpi_win_rate"].label == "Win rate"
        assert card.properties["kpi_win_rate"].description.startswith("Won / (won + lost)")
        assert deals.properties["kpi_stage_entered_on"].label == "Stage entered on"
        assert deals.groups["kpi_worker"].label == "KPI worker"
        assert portal.schema_json(card)["labels"]["singular"] == "KPI Scorecard"
        assert portal.schema_json(card)["secondaryDisplayProperties"] == [
            "kpi_quota_attainment",
            "kpi_bookings_arr",
            "kpi_win_rate",
        ]

        third = _ok("setup", "--config", str(english))
        assert third.splitlines()[-1] == "sandbox: access, layouts and labels are up to date"
