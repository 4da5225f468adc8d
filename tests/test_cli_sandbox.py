"""``crm-kpi sandbox salesforce`` and ``crm-kpi demo`` as a user runs them."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path

import requests
from click.testing import CliRunner

from crm_kpi_worker.sandbox.generator import generate
from crm_kpi_worker.sync.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_sandbox_salesforce  # noqa: E402 - the benchmark script, run as the CLI's client
from sandbox_process import sandbox_process  # noqa: E402 - the benchmarks' sandbox process


def test_standalone_sandbox_serves_every_page_to_the_real_client() -> None:
    # The real console command in its own process, read with simple-salesforce; this also
    # keeps the benchmark script working.
    result = bench_sandbox_salesforce.run(5000)
    assert result.rows == 5000  # queryAll: deleted rows included
    data = generate(seed=42, deals=5000)
    assert result.child_rows == len(data.stage_changes) + len(data.close_date_changes)
    # The histories' rows count toward each page's 2,000: the documented minimum, which whole
    # opportunities a page reach here (ceil(5,000 / 2,000) would be 3).
    assert result.minimum_calls == -(-(5000 + result.child_rows) // 2000) > 3
    assert result.pages == result.api_calls == result.minimum_calls
    assert result.server_peak_mb > 0
    lines = result.lines()
    assert lines[0] == "deals 5,000"
    assert "ratio 1.000" in lines[3] and "child records count toward the batch" in lines[4]


def test_the_standalone_sandbox_honours_the_refresh_tokens_it_gives() -> None:
    token = "5Aep861-given-on-the-command-line"
    with sandbox_process("salesforce", "--refresh-token", token) as sandbox:
        assert f"refresh tokens: {token}; more from POST {sandbox.url}/_sandbox/refresh-tokens" in (
            sandbox.banner
        )
        issued = requests.post(
            f"{sandbox.url}/_sandbox/refresh-tokens", verify=sandbox.ca_path, timeout=30
        )
        assert issued.status_code == 201
        for refresh_token in (token, issued.json()["refresh_token"]):
            answer = requests.post(
                f"{sandbox.url}/services/oauth2/token",
                data={
                    "grant_type": "refresh_token",
                    "client_id": "sandbox",
                    "client_secret": "sandbox",
                    "refresh_token": refresh_token,
                },
                verify=sandbox.ca_path,
                timeout=30,
            )
            assert answer.status_code == 200 and "refresh_token" not in answer.json()


def test_reference_date_must_be_a_quarter_end() -> None:
    outcome = CliRunner().invoke(
        main, ["sandbox", "salesforce", "--port", "0", "--reference-date", "2026-09-15"]
    )
    assert outcome.exit_code == 2
    assert "last day of a calendar quarter" in outcome.output


def test_bad_fault_rule_is_a_usage_error() -> None:
    outcome = CliRunner().invoke(main, ["sandbox", "salesforce", "--fault", '{"kind": "meteor"}'])
    assert outcome.exit_code == 2
    assert "unknown fault kind 'meteor'" in outcome.output


def test_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        outcome = CliRunner().invoke(main, ["sandbox", "salesforce", "--port", str(port)])
    assert outcome.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in outcome.output


def test_sandbox_refuses_non_loopback_hosts() -> None:
    outcome = CliRunner().invoke(main, ["sandbox", "salesforce", "--host", "0.0.0.0"])  # noqa: S104
    assert outcome.exit_code == 2
    assert "loopback only" in outcome.output


def test_demo_command_prints_the_scenario_kpis_as_json() -> None:
    outcome = CliRunner().invoke(
        main,
        [
            "demo",
            "--format",
            "json",
            "--reference-date",
            "2026-09-30",
            "--as-of",
            "2026-11-26T12:00:00+00:00",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    demo = json.loads(outcome.output)
    assert demo["scenario_quarter"] == "2026-Q3"
    data = generate(reference_date=dt.date(2026, 9, 30))
    source = demo["run"]["sources"][0]
    assert source["pulled"]["deals"] == len(data.deals)
    alice = next(
        r
        for r in demo["kpis"]
        if r["email"] == "alice.martin@sandbox.local" and r["period"] == "2026-Q3"
    )
    assert alice["kpis"]["bookings_arr"] == 150000
    assert demo["written"]["objects_created"] == ["KPI_Scorecard__c"]


def test_demo_refuses_a_date_that_is_not_a_quarter_end() -> None:
    outcome = CliRunner().invoke(main, ["demo", "--reference-date", "2026-09-15"])
    assert outcome.exit_code == 2
    assert "last day of a calendar quarter" in outcome.output


def test_console_script_runs() -> None:
    completed = subprocess.run(  # noqa: S603
        [str(Path(sys.executable).parent / "crm-kpi"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.startswith("crm-kpi, version ")


def test_each_sandboxs_help_lists_the_fault_kinds_and_their_options() -> None:
    """Issue 12, point 6: `crm-kpi sandbox <crm> --help` says every fault kind (what that
    CRM's sandbox answers) and every option of a rule."""
    import dataclasses

    from crm_kpi_worker.sandbox.faults import FAULT_KINDS, FaultRule

    options = [
        f.name
        for f in dataclasses.fields(FaultRule)
        if f.init and f.name not in ("kind", "fired", "seen")  # counters, not options
    ]
    for crm, answer in (("salesforce", "INVALID_SESSION_ID"), ("hubspot", "TEN_SECONDLY")):
        outcome = CliRunner().invoke(main, ["sandbox", crm, "--help"])
        assert outcome.exit_code == 0, outcome.output
        text = outcome.output.split("Fault kinds", 1)[1]
        for name in (*FAULT_KINDS, *options):
            assert f"\n    {name} " in text, (crm, name)
        assert answer in text
