"""The service's HTTP port (issue 12, point 2): the store's read paths for it, the Prometheus
metrics (parsed with prometheus-client's own parser), and every endpoint of the WSGI app
through werkzeug's test client, on a store filled by real runs against the sandbox Salesforce.

The real process, its port and a real browser are in ``test_status_browser.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import write_demo_config
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli import main
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.config_loader import ConfigError, load_config
from crm_kpi_worker.sync.status import RunMetrics, ServiceProbe, StatusApp, schedule_interval
from crm_kpi_worker.sync.store import Store

AS_OF = "2026-09-30T20:00:00+02:00"  # the demo quarter 2026-Q3 is the current one
SOURCE = "sandbox"


def _with(text: str, *, language: str = "en", extra_runtime: str = "") -> str:
    text = text.replace("  language: fr", f"  language: {language}")
    return text.replace(
        "runtime:\n  log_level: INFO",
        f"runtime:\n  log_level: INFO\n  as_of: {AS_OF}{extra_runtime}",
    )


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A config on the demo scenario and its store after two real runs (``setup`` first)."""
    folder = tmp_path_factory.mktemp("status")
    with SalesforceSandbox.start(seed=42, reference_date=dt.date(2026, 9, 30)) as sandbox:
        config = write_demo_config(sandbox, folder)
        original = config.read_text(encoding="utf-8")
        text = _with(original)
        config.write_text(text + "\nschedule:\n  every_minutes: 5\n", encoding="utf-8")
        runner = CliRunner()
        for args in (["setup"], ["sync", "--once"]):
            outcome = runner.invoke(main, [*args, "--config", str(config)])
            assert outcome.exit_code == 0, outcome.output
        # runtime.http is off for --once: a port already taken does not stop it.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            http = f"\n  http: {{port: {taken.getsockname()[1]}}}"
            with_http = _with(original, extra_runtime=http)
            config.write_text(with_http + "\nschedule:\n  every_minutes: 5\n", encoding="utf-8")
            outcome = runner.invoke(main, ["sync", "--once", "--config", str(config)])
            assert outcome.exit_code == 0, outcome.output
        config.write_text(text + "\nschedule:\n  every_minutes: 5\n", encoding="utf-8")
    yield config


def _app(config: AppConfig, **options: Any) -> tuple[StatusApp, Client]:
    probe = options.pop("probe", ServiceProbe(lambda: True))
    app = StatusApp(config, options.pop("metrics", RunMetrics()), probe, **options)
    return app, Client(app)


# ---- config ---------------------------------------------------------------------------------


def test_runtime_http_is_off_unless_configured_and_binds_to_loopback(tmp_path: Path) -> None:
    text = path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
    path = tmp_path / "crm-kpi.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path).runtime.http is None
    path.write_text(
        text.replace("runtime:\n  log_level: INFO", "runtime:\n  http: {port: 8080}"),
        encoding="utf-8",
    )
    http = load_config(path).runtime.http
    assert http is not None and (http.host, http.port, http.url) == (
        "127.0.0.1",
        8080,
        "http://127.0.0.1:8080",
    )
    path.write_text(
        text.replace("runtime:\n  log_level: INFO", "runtime:\n  http: {port: 70000}"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"runtime\.http\.port"):
        load_config(path)


def test_the_schedule_interval_is_the_longest_gap_between_its_times(tmp_path: Path) -> None:
    text = path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
    path = tmp_path / "crm-kpi.yaml"
    path.write_text(text + "\nschedule:\n  every_minutes: 15\n", encoding="utf-8")
    assert schedule_interval(load_config(path)) == dt.timedelta(minutes=15)
    # Weekdays at 06:00: the weekend's gap (Friday to Monday) is the interval.
    path.write_text(text + "\nschedule:\n  cron: '0 6 * * 1-5'\n", encoding="utf-8")
    monday = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    assert schedule_interval(load_config(path), monday) == dt.timedelta(days=3)
    path.write_text(text, encoding="utf-8")
    assert schedule_interval(load_config(path)) is None


def test_the_service_refuses_to_start_on_a_port_already_taken(tmp_path: Path) -> None:
    text = path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
    path = tmp_path / "crm-kpi.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = f"runtime:\n  http: {{port: {port}}}"
        path.write_text(
            text.replace("runtime:\n  log_level: INFO", runtime)
            + "\nschedule:\n  every_minutes: 5\n",
            encoding="utf-8",
        )
        outcome = CliRunner().invoke(main, ["sync", "--config", str(path)])
    assert outcome.exit_code == 4, outcome.output
    assert f"runtime.http: cannot listen on http://127.0.0.1:{port}" in outcome.output


# ---- store read paths -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


def test_recent_runs_and_last_success_per_source(store_url: str) -> None:
    as_of = dt.datetime(2026, 9, 30, tzinfo=dt.UTC)
    with Store.open(store_url) as store:
        assert store.recent_runs() == [] and store.last_success("a") is None
        store.ping()
        first = store.start_run(as_of, {}, sources=["a", "b_%"])
        store.finish_run(first, "completed", {"run_id": first})
        second = store.start_run(as_of, {}, sources=["a"])
        store.finish_run(second, "completed_with_failures", {"run_id": second})
        third = store.start_run(as_of, {}, sources=["a"])
        store.finish_run(third, "failed", {"run_id": third})
        fourth = store.start_run(as_of, {}, sources=["bx"])  # still running
        assert [run["id"] for run in store.recent_runs()] == [fourth, third, second, first]
        assert [run["id"] for run in store.recent_runs(2, source="a")] == [third, second]
        # LIKE's wildcards in a name are plain characters: "b_%" is not "bx".
        assert [run["id"] for run in store.recent_runs(source="b_%")] == [first]
        assert store.recent_runs(source="b")[:1] == []
        assert store.recent_runs(1)[0]["report"] is None
        assert store.recent_runs(source="a")[0]["report"] == {"run_id": third}
        success_a = store.last_success("a")
        assert success_a == store.run(second)["finished_at"]  # type: ignore[index]
        assert store.last_success("b_%") == store.run(first)["finished_at"]  # type: ignore[index]
        assert store.last_success("bx") is None


# ---- metrics --------------------------------------------------------------------------------


def _report(**extra: Any) -> dict[str, Any]:
    source = {
        "source": SOURCE,
        "pulled": {"deals": 580, "users": 8, "quotas": 0},
        "excluded": {"total": 3, "by_reason": {"no_amount": 2, "unknown_stage": 1}},
        "written": [
            {"object": "Opportunity", "records_written": 579, "failed": 1},
            {"object": "KPI_Scorecard__c", "records_written": 54, "failed": 0},
        ],
        "api_calls": 16,
        "seconds": {"pull": 0.27, "compute": 0.06, "write": 0.18},
        **extra,
    }
    return {"run_id": 1, "status": "completed_with_failures", "sources": [source]}


def _samples(metrics: RunMetrics) -> dict[str, Any]:
    """Every sample, by name and sorted labels, parsed by prometheus-client's own parser; and
    every family's type."""
    text = metrics.exposition().decode("utf-8")
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return {"values": values, "types": types, "text": text}


def test_metrics_follow_prometheus_conventions_and_parse() -> None:
    metrics = RunMetrics()
    finished = dt.datetime(2026, 9, 30, 18, tzinfo=dt.UTC)
    drift = [{"object": "KPI_Scorecard__c", "records": 3, "repaired": 2, "keys": ["a", "b", "c"]}]
    budget = {"share": 0.5, "daily_limit": 15000, "org_used": 1200}
    events = {"events": 3, "read_by_id": 1, "complete": True, "reason": None}
    metrics.run_finished(_report(drift=drift, budget=budget, change_events=events), finished)
    down = {"events": 0, "read_by_id": 0, "complete": False, "reason": "UNAVAILABLE"}
    metrics.run_finished(_report(change_events=down), finished)
    metrics.run_failed([SOURCE], "crm_unavailable")
    metrics.lock_wait(SOURCE)
    found = _samples(metrics)
    values, types = found["values"], found["types"]
    s = (("source", SOURCE),)
    assert values[("crm_kpi_runs_total", (("outcome", "completed_with_failures"), *s))] == 2
    assert values[("crm_kpi_runs_total", (("outcome", "crm_unavailable"), *s))] == 1
    assert values[("crm_kpi_records_pulled_total", (*s, ("stream", "deals")))] == 1160
    assert ("crm_kpi_records_pulled_total", (*s, ("stream", "quotas"))) not in values
    assert values[("crm_kpi_records_excluded", (("reason", "no_amount"), *s))] == 2
    assert values[("crm_kpi_records_written_total", (("object", "Opportunity"), *s))] == 1158
    assert values[("crm_kpi_records_failed_total", (("object", "Opportunity"), *s))] == 2
    assert values[("crm_kpi_drift_repaired_total", (("object", "KPI_Scorecard__c"), *s))] == 2
    assert values[("crm_kpi_api_calls_total", s)] == 32
    assert values[("crm_kpi_change_events_total", s)] == 3
    assert values[("crm_kpi_change_events_incomplete_total", s)] == 1
    assert values[("crm_kpi_crm_daily_calls_remaining", s)] == 13800
    assert values[("crm_kpi_budget_share_ratio", s)] == 0.5
    assert values[("crm_kpi_last_success_timestamp_seconds", s)] == finished.timestamp()
    assert values[("crm_kpi_lock_waits_total", s)] == 1
    assert values[("crm_kpi_run_in_progress", ())] == 0
    pull = (("phase", "pull"), *s)
    assert values[("crm_kpi_phase_duration_seconds_count", pull)] == 2
    assert values[("crm_kpi_phase_duration_seconds_bucket", (("le", "0.5"), *pull))] == 2
    assert values[("crm_kpi_phase_duration_seconds_bucket", (("le", "0.25"), *pull))] == 0
    assert types["crm_kpi_runs"] == "counter"
    assert types["crm_kpi_phase_duration_seconds"] == "histogram"
    assert types["crm_kpi_records_excluded"] == "gauge"
    for name in types:
        assert re.fullmatch(r"crm_kpi_[a-z0-9_]+", name), name
    assert "_created" not in found["text"]


def test_metrics_leave_out_what_a_report_does_not_say_and_track_exclusions() -> None:
    """Drift and the budget come from another part's report keys: absent, no series at all;
    an exclusion reason gone from the store leaves the gauge."""
    metrics = RunMetrics()
    metrics.run_finished(_report())
    later = _report()
    later["sources"][0]["excluded"]["by_reason"] = {"no_amount": 1}
    metrics.run_finished(later)
    text = _samples(metrics)["text"]
    assert "crm_kpi_drift_repaired_total{" not in text
    assert "crm_kpi_crm_daily_calls_remaining{" not in text
    assert "crm_kpi_budget_share_ratio{" not in text
    assert "crm_kpi_change_events_total{" not in text
    assert 'reason="unknown_stage"' not in text
    assert 'crm_kpi_records_excluded{reason="no_amount",source="sandbox"} 1.0' in text


def test_metrics_start_from_the_stores_last_successes() -> None:
    metrics = RunMetrics()
    finished = dt.datetime(2026, 9, 30, 18, tzinfo=dt.UTC)
    metrics.seed({"a": finished, "b": None})
    values = _samples(metrics)["values"]
    assert values[("crm_kpi_last_success_timestamp_seconds", (("source", "a"),))] == (
        finished.timestamp()
    )
    assert ("crm_kpi_last_success_timestamp_seconds", (("source", "b"),)) not in values


# ---- the endpoints --------------------------------------------------------------------------


def test_healthz_says_whether_the_scheduler_is_alive(demo_store: Path) -> None:
    config = load_config(demo_store)
    alive = {"scheduler": True}
    _, client = _app(config, probe=ServiceProbe(lambda: alive["scheduler"], lambda: True))
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json == {"status": "ok", "scheduler": "running", "run_in_progress": True}
    alive["scheduler"] = False
    assert client.get("/healthz").status_code == 503


def test_readyz_needs_the_store_and_a_recent_successful_run(demo_store: Path) -> None:
    config = load_config(demo_store)
    with Store.open(config.store.resolve_url(), read_only=True) as store:
        finished = store.last_success(SOURCE)
    assert finished is not None
    now = {"at": finished + dt.timedelta(minutes=9)}
    _, client = _app(config, clock=lambda: now["at"])
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json["checks"]["store"] == "ok"
    assert answer.json["allowed_age_seconds"] == 600  # twice every 5 minutes
    now["at"] = finished + dt.timedelta(minutes=11)
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert "over twice the schedule's interval" in answer.json["checks"][f"source {SOURCE}"]


def test_readyz_fails_while_the_store_is_missing(tmp_path: Path) -> None:
    text = path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
    text = text.replace("url: sqlite:///crm-kpi-demo.sqlite", "url: sqlite:///missing.sqlite")
    path = tmp_path / "crm-kpi.yaml"
    path.write_text(text, encoding="utf-8")
    _, client = _app(load_config(path))
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json["checks"]["store"].startswith("failing: no state store at")
    assert client.get("/").status_code == 503


def test_metrics_endpoint_serves_the_text_format(demo_store: Path) -> None:
    metrics = RunMetrics()
    metrics.run_finished(_report())
    _, client = _app(load_config(demo_store), metrics=metrics)
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {"crm_kpi_runs", "crm_kpi_api_calls", "crm_kpi_phase_duration_seconds"} <= names


def test_run_reports_are_served_as_json(demo_store: Path) -> None:
    _, client = _app(load_config(demo_store))
    answer = client.get("/runs/1.json")
    assert answer.status_code == 200
    run = json.loads(answer.text)
    assert run["id"] == 1 and run["status"] == "completed"
    assert run["report"]["sources"][0]["exclusions"]  # the whole report, every exclusion
    assert client.get("/runs/999.json").status_code == 404
    assert client.post("/runs/1.json").status_code == 405
    assert client.get("/nothing").status_code == 404


def _bars(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-label="([^"]+)" data-attainment="([^"]*)"', html))


def test_the_status_page_shows_runs_attainment_and_coverage(demo_store: Path) -> None:
    _, client = _app(load_config(demo_store))
    answer = client.get("/")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    html = answer.text
    assert '<html lang="en">' in html
    assert 'data-period="2026-Q3"' in html  # the quarter of the last run's as_of
    bars = _bars(html)
    assert float(bars["Alice Martin"]) == pytest.approx(1.25)
    assert float(bars["Team France Nord"]) == pytest.approx(253_500 / 220_000)
    assert ">125%<" in html and 'class="line100"' in html
    assert re.search(r'<tr class="run" data-run-id="2" data-status="completed">', html)
    assert 'href="runs/1.json"' in html and 'href="runs/2.json"' in html
    assert "Pipeline coverage" in html and "Unassigned" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3", "")
    # Another quarter, by link.
    assert 'href="?period=2026-Q2"' in html
    other = client.get("/?period=2026-Q2").text
    assert 'data-period="2026-Q2"' in other


def test_each_reps_bar_links_to_the_explanation_of_their_attainment(demo_store: Path) -> None:
    _, client = _app(load_config(demo_store))
    html = client.get("/").text
    links = re.findall(r'<a class="explain" href="([^"]+)">', html)
    (alice_id,) = re.findall(
        r'data-scope="rep" data-subject="([^"]+)" data-label="Alice Martin"', html
    )
    (alice,) = [link for link in links if f"rep={alice_id}&" in link]
    answer = client.get(alice.replace("&amp;", "&"))
    assert answer.status_code == 200, answer.text
    explained = answer.get_json()
    assert explained["kpi"] == "quota_attainment" and explained["value"] == pytest.approx(1.25)
    assert explained["period"]["key"] == "2026-Q3"
    assert (
        client.get("/explain.json?rep=nobody@example.com&period=2026-Q3&kpi=win_rate").status_code
        == 404
    )
    assert client.get("/explain.json?rep=x").status_code == 400
    assert len(links) == sum(1 for _ in re.finditer(r'data-scope="rep"', html)) // 2


def test_the_status_page_speaks_french(tmp_path: Path, demo_store: Path) -> None:
    text = demo_store.read_text(encoding="utf-8").replace("  language: en", "  language: fr")
    path = tmp_path / "crm-kpi.yaml"
    path.write_text(text, encoding="utf-8")
    html = _app(load_config(path))[1].get("/").text
    assert '<html lang="fr">' in html
    assert "Dernières exécutions" in html and "terminée" in html
    assert "125\u202f%" in html and "Équipe France Nord" in html and "Non attribué" in html
    assert "150\u202f000 EUR" in html  # Alice's bookings
