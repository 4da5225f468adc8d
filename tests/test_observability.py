"""Seeing what a run does (issue 12): structured log lines, progress without a terminal, the
run history on the command line (``runs list``, ``runs show``) and ``sync --output``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_demo_config

from crm_kpi_worker.connectors.errors import register_secret
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli import main
from crm_kpi_worker.sync.logs import configure_logging, log_context, log_format
from crm_kpi_worker.sync.progress import LineProgress, as_run_progress

AS_OF = "2026-11-26T12:00:00+00:00"


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start(reference_date=dt.date(2026, 9, 30)) as running:
        yield running


@pytest.fixture
def config_file(sandbox: SalesforceSandbox, tmp_path: Path) -> Path:
    path = write_demo_config(sandbox, tmp_path)
    _run("setup", "--config", str(path))
    return path


def _run(*args: str, env: dict[str, str] | None = None, code: int = 0) -> Any:
    outcome = CliRunner().invoke(main, list(args), env=env)
    assert outcome.exit_code == code, (outcome.stdout, outcome.stderr)
    return outcome


# ---- 1. structured logs ---------------------------------------------------------------------


def test_json_log_lines_parse_and_carry_the_run_the_source_and_the_counts(
    config_file: Path,
) -> None:
    outcome = _run(
        "sync",
        "--once",
        "--as-of",
        AS_OF,
        "--config",
        str(config_file),
        env={"CRM_KPI_LOG_FORMAT": "json"},
    )
    lines = [json.loads(line) for line in outcome.stderr.splitlines() if line.strip()]
    assert lines, outcome.stderr
    for line in lines:
        assert {"time", "level", "event", "message"} <= set(line)
        assert dt.datetime.fromisoformat(line["time"]).tzinfo is not None
        assert not re.search(r"[{\[]'", line["message"]), line  # no Python reprs
    events = [line["event"] for line in lines]
    # No migration chatter, no "session expired" at the first login.
    assert not [line for line in lines if line["logger"].startswith("alembic")]
    assert not [line for line in lines if "session expired" in line["message"]]
    (started,) = [line for line in lines if line["event"] == "run_started"]
    run_id = started["run_id"]
    assert isinstance(run_id, int)
    deals = next(
        line for line in lines if line["event"] == "pull_done" and line["stream"] == "deals"
    )
    assert deals["source"] == "sandbox" and deals["run_id"] == run_id
    assert deals["records"] == 580 and deals["total"] == 580  # Salesforce's totalSize
    (finished,) = [line for line in lines if line["event"] == "run_finished"]
    assert finished["run_id"] == run_id and finished["status"] == "completed"
    assert finished["pulled"] == 3113 and finished["excluded"] == 4
    assert finished["written"] == finished["planned"] == 633 and finished["failed"] == 0
    assert isinstance(finished["api_calls"], int) and finished["api_calls"] > 0
    written = [line for line in lines if line["event"] == "write_done"]
    assert {line["object"]: line["written"] for line in written} == {
        "KPI_Scorecard__c": 54,
        "Opportunity": 579,
    }
    assert events.index("run_started") < events.index("run_finished")


def test_text_logs_have_no_reprs_no_alembic_lines_and_no_login_line(config_file: Path) -> None:
    outcome = _run("sync", "--once", "--as-of", AS_OF, "--config", str(config_file))
    text = outcome.stderr + outcome.stdout
    assert not re.search(r"[{\[]'", text), text
    assert "alembic" not in text
    assert "session expired" not in text
    assert "deleted in the CRM: deal 1" in outcome.stdout  # a count, not {'deal': 1}
    # (the source name may show as *** here: an earlier test registered "sandbox" as a secret)
    assert re.search(r"INFO crm_kpi_worker\.progress: \S+: deals: 580 records pulled", text)
    # --debug shows the migration lines, as DEBUG lines.
    debug = _run("--debug", "sync", "--once", "--as-of", AS_OF, "--config", str(config_file))
    assert "DEBUG alembic.runtime.migration: Context impl" in debug.stderr
    assert "INFO alembic" not in debug.stderr


def test_the_config_picks_the_format_before_the_environment(tmp_path: Path) -> None:
    assert log_format(None, {}) == "text"
    assert log_format(None, {"CRM_KPI_LOG_FORMAT": "JSON"}) == "json"
    assert log_format(None, {"CRM_KPI_LOG_FORMAT": "yaml"}) == "text"
    assert log_format("text", {"CRM_KPI_LOG_FORMAT": "json"}) == "text"


def test_a_json_line_carries_its_fields_and_never_a_secret() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    register_secret("tok-3f9a-very-secret")
    log = logging.getLogger("crm_kpi_worker.test")
    with log_context(run_id=7, source="hubspot-eu"):
        log.warning("calling with tok-3f9a-very-secret failed", extra={"event": "x", "n": 3})
    log.info("outside any run")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "x" and first["n"] == 3 and first["level"] == "WARNING"
    assert first["run_id"] == 7 and first["source"] == "hubspot-eu"
    assert "tok-3f9a-very-secret" not in stream.getvalue()
    assert second["event"] == "test" and "run_id" not in second and "source" not in second


def test_the_dockerfile_sets_json_logs() -> None:
    dockerfile = (Path(__file__).parent.parent / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"CRM_KPI_LOG_FORMAT=json", dockerfile)


# ---- 5. progress ----------------------------------------------------------------------------


def test_progress_lines_come_every_n_seconds_and_when_a_task_is_done() -> None:
    lines: list[str] = []
    now = [0.0]
    progress = LineProgress(lines.append, every_seconds=30, clock=lambda: now[0])
    for _ in range(10):  # 10 pages of 2,000 over 50 s: one line at 30 s, one at the end
        now[0] += 5
        progress.advance("sf", "deals", 2000, total=20000)
    progress.finish("sf", "deals")
    assert lines == [
        "sf: deals: 14,000 of 20,000 records pulled (70%)",
        "sf: deals: 20,000 records pulled",
    ]
    progress.advance("sf", "write Opportunity", 10, total=10, to_write=4, written=3)
    progress.finish("sf", "write Opportunity")
    assert lines[-1] == "sf: Opportunity: 10 of 10 records compared, 4 to write, 3 written"
    said: list[str] = []
    as_run_progress(said.append)("a note")
    assert said == ["a note"]


def test_progress_goes_to_the_log_without_a_terminal(
    sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    config = write_demo_config(sandbox, tmp_path)
    text = config.read_text(encoding="utf-8").replace(
        "runtime:\n", "runtime:\n  progress_seconds: 0\n", 1
    )
    config.write_text(text, encoding="utf-8")
    # The demo's 2,485 demo events come in two pages: a progress line for each (0 s).
    outcome = _run(
        "sync",
        "--once",
        "--dry-run",
        "--as-of",
        AS_OF,
        "--config",
        str(config),
        env={"CRM_KPI_LOG_FORMAT": "json"},
    )
    lines = [json.loads(line) for line in outcome.stderr.splitlines() if line.strip()]
    progress = [line for line in lines if line["event"] == "pull_progress"]
    activities = [line for line in progress if line["stream"] == "activities"]
    assert activities, [line["message"] for line in lines]
    assert all(line["total"] == 2485 for line in activities)
    assert activities[-1]["records"] == 2485
    assert "of 2,485 records pulled" in activities[0]["message"]
    writes = [line for line in lines if line["event"] in ("write_progress", "write_done")]
    assert {line["object"] for line in writes} == {"KPI_Scorecard__c", "Opportunity"}


# ---- 3. run history -------------------------------------------------------------------------


def test_runs_show_lists_every_exclusion_failure_and_planned_record(
    sandbox: SalesforceSandbox, config_file: Path
) -> None:
    sandbox.org.data.deals.amount[:30] = np.nan  # 30 more deals without an amount
    rule = sandbox.faults.add(FaultRule(kind="write_failure", path="composite", times=25))
    _run("sync", "--once", "--as-of", AS_OF, "--config", str(config_file), code=3)
    assert rule.fired == 25
    (listed,) = json.loads(
        _run("runs", "list", "--config", str(config_file), "--format", "json").stdout
    )
    run_id = listed["run_id"]
    assert listed["status"] == "completed_with_failures" and listed["failed"] == 25
    shown = json.loads(
        _run("runs", "show", str(run_id), "--config", str(config_file), "--format", "json").stdout
    )
    (source,) = shown["report"]["sources"]
    exclusions = {(e["id"], e["reason"]) for e in source["exclusions"]}
    assert len(exclusions) == source["excluded"]["total"] >= 34
    assert sum(reason == "no_amount" for _, reason in exclusions) >= 31
    records = shown["records"]
    failed = [r for r in records if r["outcome"] == "failed"]
    assert len(failed) == 25 and all(r["code"] and r["message"] for r in failed)
    failures = {f["key"] for w in source["written"] for f in w["failures"]}
    assert {r["id"] for r in failed} == failures
    assert len(records) == sum(p["records_to_write"] for p in source["planned"])
    written = [r for r in records if r["outcome"] == "written"]
    assert len(written) == sum(w["records_written"] for w in source["written"])
    # Each record with its fields and values: the Opportunity fields the demo writes.
    deal = next(r for r in written if r["object"] == "Opportunity")
    assert set(deal["values"]) == {
        "KPI_Close_Date_Slips__c",
        "KPI_Deal_Created_On__c",
        "KPI_Owner_Quota_Attainment__c",
        "KPI_Stage_Entered_On__c",
    }

    table = _run("runs", "show", str(run_id), "--config", str(config_file)).stdout
    for record_id, reason in exclusions:  # every one, not the first 20
        assert re.search(rf"deal {record_id}: {reason} ", table)
    for record in failed:
        assert f"{record['id']} failed ({record['code']}: " in table
        assert f"failed {record['id']}: {record['code']}" in table
    assert table.count(" written: ") == len(written)

    rows = list(
        csv.DictReader(
            io.StringIO(
                _run(
                    "runs", "show", str(run_id), "--config", str(config_file), "--format", "csv"
                ).stdout
            )
        )
    )
    assert {(r["id"], r["reason"]) for r in rows if r["section"] == "exclusion"} == exclusions
    assert {r["id"] for r in rows if r["section"] == "failure"} == failures
    record_rows = [r for r in rows if r["section"] == "record"]
    assert {r["id"] for r in record_rows} == {r["id"] for r in records}


def test_runs_list_filters_by_source_and_limits(config_file: Path) -> None:
    for _ in range(3):
        _run("sync", "--once", "--dry-run", "--as-of", AS_OF, "--config", str(config_file))
    table = _run("runs", "list", "--limit", "2", "--config", str(config_file)).stdout
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["run", "status"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2"]  # newest first
    assert "completed (dry run)" in lines[1]
    none = _run("runs", "list", "--source", "other", "--config", str(config_file), code=1)
    assert "no runs of source other" in none.stderr
    assert (
        len(
            json.loads(
                _run(
                    "runs",
                    "list",
                    "--source",
                    "sandbox",
                    "--config",
                    str(config_file),
                    "--format",
                    "json",
                ).stdout
            )
        )
        == 3
    )
    missing = _run("runs", "show", "99", "--config", str(config_file), code=1)
    assert "no run 99 in the store; the latest is run 3" in missing.stderr


@pytest.mark.parametrize("name", ["planned.csv", "planned.json"])
def test_dry_run_output_file_holds_every_planned_write(
    config_file: Path, tmp_path: Path, name: str
) -> None:
    target = tmp_path / name
    report = json.loads(
        _run(
            "sync",
            "--once",
            "--dry-run",
            "--as-of",
            AS_OF,
            "--format",
            "json",
            "--output",
            str(target),
            "--config",
            str(config_file),
        ).stdout
    )
    (source,) = report["sources"]
    planned = {p["object"]: p for p in source["planned"]}
    if name.endswith(".json"):
        records = json.loads(target.read_text(encoding="utf-8"))
        keys = {(r["object"], r["id"]) for r in records}
        fields = sum(len(r["values"]) for r in records)
        assert {r["outcome"] for r in records} == {"planned"}
        sample_key, sample_values = next(iter(planned["Opportunity"]["sample"].items()))
        (record,) = [r for r in records if r["id"] == sample_key]
        assert record["values"] == sample_values
    else:
        with target.open(encoding="utf-8") as opened:
            rows = list(csv.DictReader(opened))
        keys = {(r["object"], r["id"]) for r in rows}
        fields = len(rows)
        assert {r["outcome"] for r in rows} == {"planned"}
    # Every planned record (579 deals, 54 scorecards), not a sample of 5; every field.
    assert len(keys) == sum(p["records_to_write"] for p in planned.values()) == 633
    assert fields == sum(p["fields_to_write"] for p in planned.values())


def test_output_needs_once(config_file: Path, tmp_path: Path) -> None:
    outcome = _run(
        "sync", "--output", str(tmp_path / "x.csv"), "--config", str(config_file), code=2
    )
    assert "--output needs --once" in outcome.stderr


def test_an_interactive_run_shows_a_bar_per_stream_and_written_object() -> None:
    from rich.console import Console

    from crm_kpi_worker.sync.progress import BarProgress

    screen = io.StringIO()
    bars = BarProgress(Console(file=screen, force_terminal=True, width=140))
    bars.advance("sandbox", "deals", 2000, total=2485)
    bars.advance("sandbox", "deals", 485, total=2485)
    bars.finish("sandbox", "deals")
    bars.advance("sandbox", "write Opportunity", 579, total=579, to_write=12, written=11)
    bars.finish("sandbox", "write Opportunity")
    bars("sandbox: KPIs computed (54 rows)")
    bars.close()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert re.search(r"sandbox: deals .*2485/2485", shown), shown
    assert re.search(r"sandbox: write Opportunity .*579/579 +12 to write, 11 written", shown)
    assert "sandbox: KPIs computed (54 rows)" in shown


def test_hubspot_pages_carry_the_search_total(tmp_path: Path) -> None:
    from test_pipeline_hubspot import UNLIMITED, hubspot_config

    from crm_kpi_worker.connectors.registry import build_connector
    from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox

    with HubSpotSandbox.start(reference_date=dt.date(2026, 9, 30), limits=UNLIMITED) as portal:
        config = hubspot_config(portal, tmp_path / "store.sqlite")
        connector = build_connector(config.sources[0], config.currency)
        pages = list(connector.pull("deals", None))
        assert len(pages) > 1
        records = sum(len(page.records) for page in pages)
        assert {page.total for page in pages} == {records}


def test_windowed_search_total_is_the_first_answers_count() -> None:
    from crm_kpi_worker.connectors.paging import windowed_search

    answers = iter(
        [
            {"total": 3, "results": [_hit(1), _hit(2)], "paging": {"next": {"after": "2"}}},
            {"total": 3, "results": [_hit(3)]},
        ]
    )
    pages = windowed_search(lambda _body: next(answers), properties=["dealname"], page_size=2)
    assert pages.total is None  # nothing asked yet
    assert [len(page) for page in pages] == [2, 1]
    assert pages.total == 3


def _hit(number: int) -> dict[str, Any]:
    stamp = f"2026-11-0{number}T00:00:00Z"
    return {"id": str(number), "properties": {"hs_lastmodifieddate": stamp}}


# ---- 7. the demo ----------------------------------------------------------------------------


def test_the_demo_shows_the_current_pipeline_and_where_to_look_next() -> None:
    outcome = _run("demo", "--reference-date", "2026-09-30", "--as-of", "2026-11-26T12:00:00+00:00")
    table = outcome.stdout
    scenario, current = table.split("The current quarter 2026-Q4 so far")
    # The closed scenario quarter as before, without its pipeline column (always 0 there).
    assert re.search(r"Alice Martin +150,000 +120,000 +125%", scenario)
    assert "pipeline" not in scenario.splitlines()[3]
    # The current quarter: Alice's open pipeline against what is left of her quota.
    assert re.search(r"Alice Martin +0 +125,000 +125,000 +127,500 +60,400 +35,500 +1\.02x", current)
    assert re.search(r"Org +0 +435,000 +435,000 +633,000 .* +1\.46x", current)
    assert (
        "crm-kpi kpis explain --rep alice.martin@sandbox.local --period 2026-Q3"
        " --kpi quota_attainment" in table
    )
    assert "open http://127.0.0.1:8080/" in table and "crm-kpi runs show RUN_ID" in table
    assert not re.search(r"[{\[]'", table)  # reasons as words, not a dict


def test_planned_records_round_trip_and_only_the_newest_runs_keep_them(tmp_path: Path) -> None:
    from crm_kpi_worker.sync.store import PlannedRecord, Store

    T0 = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    with Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:
        runs = [store.start_run(T0, {}) for _ in range(3)]
        chunk = [
            PlannedRecord("Opportunity", "006A", "written", {"KPI_A__c": 1.5, "KPI_B__c": None}),
            PlannedRecord("Opportunity", "006B", "failed", {"KPI_A__c": 2}, "BAD", "no, é"),
            PlannedRecord("Opportunity", "006C", "planned", {"KPI_B__c": "2026-11-01"}),
        ]
        for run_id in runs:
            store.save_planned(run_id, "sf", "Opportunity", 0, chunk)
            store.save_planned(run_id, "sf", "Opportunity", 1, chunk[:1])
        back = list(store.planned(runs[0]))
        assert back == [*(replace_source(r) for r in chunk), replace_source(chunk[0])]
        assert store.planned_size(runs[0])[0] == 4
        assert store.forget_planned(2) == 2  # run 1's two chunks
        assert list(store.planned(runs[0])) == []
        assert len(list(store.planned(runs[2]))) == 4


def replace_source(record: Any) -> Any:
    from dataclasses import replace

    return replace(record, source="sf")


def test_runs_show_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """``crm-kpi runs show 1 | head -1``: the closed pipe is no error."""
    import subprocess
    import sys

    from crm_kpi_worker.sync.cli_demo import run_demo

    run_demo(reference_date=dt.date(2026, 9, 30), keep=tmp_path)
    command = [sys.executable, "-m", "crm_kpi_worker", "runs", "show", "1"]
    command += ["--config", str(tmp_path / "crm-kpi.yaml")]
    with subprocess.Popen(  # noqa: S603 - our own command line
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(b"run 1: ")
        process.stdout.close()  # the reader goes away; the records are more than a pipe holds
        errors = process.stderr.read().decode()
        assert process.wait(timeout=120) == 0, errors
    assert "error" not in errors.lower(), errors
