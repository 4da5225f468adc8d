"""The pipeline on the sandbox HubSpot portal: the demo's parity with Salesforce, what a run
pulls and writes, what the next runs do, and 25,000 changes at once past the search cap."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stored_rows import live_deal_ids

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits
from crm_kpi_worker.sync.cli_demo import run_demo
from crm_kpi_worker.sync.config import AppConfig, KpiFields
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.pipeline import RunOptions, RunResult, run_once
from crm_kpi_worker.sync.store import Store
from crm_kpi_worker.sync.targets import targets

AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
REFERENCE = dt.date(2026, 9, 30)
UNLIMITED = RateLimits(search_per_second=None, burst_per_10s=None, daily=None)


class Clock:
    """The sandbox portal's clock, moved by the tests (never slept on)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * 60


def hubspot_config(sandbox: HubSpotSandbox, store_path: Path, **mapping: Any) -> AppConfig:
    config = load_config(path_of("demo-hubspot.yaml"))
    source = config.sources[0]
    changes: dict[str, Any] = {
        "base_url": sandbox.url,
        "ca_bundle": str(sandbox.ca_path),
        "rate_limits": {"search_per_second": 100, "per_10_seconds": 10_000},
    }
    if mapping:
        changes["mapping"] = {**source.mapping.model_dump(exclude_unset=True), **mapping}
    source = source.with_changes(**changes)
    store = config.store.model_copy(update={"url": f"sqlite:///{store_path}"})
    return config.replace_source(source).model_copy(update={"store": store})


def setup_targets(config: AppConfig) -> None:
    source = config.sources[0]
    objects, fields = targets(config.kpi_fields_for(source), source.type, config.write.language)
    connector = build_connector(source, config.currency)
    connector.create_targets(*connector.missing_targets(objects, fields))


class Env:
    def __init__(self, sandbox: HubSpotSandbox, config: AppConfig, clock: Clock) -> None:
        self.sandbox = sandbox
        self.config = config
        self.clock = clock
        self.store = Store.open(config.store.resolve_url())

    def run(self, **options: Any) -> RunResult:
        return run_once(self.config, self.store, RunOptions(as_of=AS_OF, **options))


def _report(result: RunResult) -> dict[str, Any]:
    (source,) = result.report()["sources"]
    return source


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = Clock()
    with HubSpotSandbox.start(reference_date=REFERENCE, clock=clock, limits=UNLIMITED) as sandbox:
        config = hubspot_config(sandbox, tmp_path / "store.sqlite")
        setup_targets(config)
        environment = Env(sandbox, config, clock)
        yield environment
        environment.store.close()


# ---- parity with Salesforce ---------------------------------------------------------------


def _comparable(demo: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(
        (
            {k: row[k] for k in ("scope", "subject", "email", "team", "period", "kpis")}
            | {"empty_because": row["empty_because"]}
            for row in demo["kpis"]
        ),
        key=lambda row: (row["scope"], row["subject"], row["period"]),
    )


@pytest.mark.slow
def test_the_hubspot_demo_equals_the_salesforce_demo() -> None:
    hubspot = run_demo(crm="hubspot", reference_date=REFERENCE, as_of=AS_OF)
    salesforce = run_demo(crm="salesforce", reference_date=REFERENCE, as_of=AS_OF)
    assert hubspot["crm"] == "hubspot" and hubspot["scenario_quarter"] == "2026-Q3"
    alice = next(
        r for r in hubspot["kpis"] if r["subject"] == "Alice Martin" and r["period"] == "2026-Q3"
    )
    kpis = alice["kpis"]
    assert (kpis["bookings_arr"], kpis["quota"], kpis["quota_attainment"]) == (
        150000,
        120000,
        1.25,
    )
    assert (kpis["deals_won"], kpis["win_rate"], kpis["conversion_rate"]) == (10, 0.25, 0.25)
    assert kpis["sales_cycle_days"] == 45.0
    assert _comparable(hubspot) == _comparable(salesforce)
    # The same records excluded for the same reasons (ids differ by CRM).
    hs_run, sf_run = hubspot["run"]["sources"][0], salesforce["run"]["sources"][0]
    assert hs_run["excluded"]["by_reason"] == sf_run["excluded"]["by_reason"]
    assert hs_run["unassigned_deals"] == sf_run["unassigned_deals"]
    # What was written: the same numbers of records per kind of target.
    assert hubspot["written"]["fields_created"] == salesforce["written"]["fields_created"]
    hs_written = sorted(w["records_written"] for w in hubspot["written"]["writes"])
    sf_written = sorted(w["records_written"] for w in salesforce["written"]["writes"])
    assert hs_written == sf_written


# ---- runs ---------------------------------------------------------------------------------


def test_first_run_pulls_excludes_and_writes(env: Env) -> None:
    report = _report(env.run())
    data = env.sandbox.portal.data
    live = int((~data.deals.is_deleted).sum())
    assert report["pulled"]["deals"] == live  # search never returns archived deals
    assert report["excluded"]["by_reason"] == {
        "no_amount": 1,
        "no_close_date": 1,
        "unconvertible_currency": 1,
        "unknown_stage": 1,
    }
    written = {w["object"]: w for w in report["written"]}
    assert written["deals"]["records_written"] == live
    card = written["p_kpi_scorecard"]
    assert card["created"] == card["records_written"] > 0
    assert report["failed"] == 0
    records = env.sandbox.portal.object_records("p_kpi_scorecard")
    key = next(
        r["properties"]["kpi_scorecard_key"]
        for r in records
        if r["properties"].get("kpi_scorecard_key", "").endswith(":2026-Q3")
        and r["properties"].get("hubspot_owner_id") == env.sandbox.portal.owner_id(0)
    )
    alice = next(r for r in records if r["properties"]["kpi_scorecard_key"] == key)
    assert float(alice["properties"]["kpi_bookings_arr"]) == 150000.0
    assert float(alice["properties"]["kpi_quota_attainment"]) == 125.0


def test_scorecard_names_follow_the_write_language(env: Env) -> None:
    assert env.config.write.language == "fr"  # the demo config writes French
    env.run()
    records = env.sandbox.portal.object_records("p_kpi_scorecard")
    names = {r["properties"]["kpi_scorecard_key"]: r["properties"]["kpi_name"] for r in records}
    assert names["sandbox:org:org:2026-Q3"] == "Organisation - 2026-T3"
    assert names["sandbox:rep:unassigned:FY2026"] == "Non attribué - Exercice 2026"
    assert "Alice Martin - 2026-T3" in names.values()


def test_a_second_run_writes_nothing_and_a_third_reads_nothing(env: Env) -> None:
    env.run()
    env.clock.advance(30)
    second = _report(env.run())
    assert second["written"] == []
    env.clock.advance(30)
    third = _report(env.run())
    assert third["pulled"].get("deals", 0) == 0
    assert third["written"] == []
    # pipelines, owners (active, archived), companies, archived deals, deals, meetings,
    # goal targets: one call each; and the properties of deals, companies and meetings, the
    # check of the mapped properties that starts every run (its pipelines call is reused).
    assert third["api_calls"] <= 9 + 3


def test_archiving_a_deal_is_seen_by_the_next_run(env: Env) -> None:
    env.run()
    env.clock.advance(30)
    victim = env.sandbox.portal.deal_id(0)
    env.sandbox.portal.archive_deal(victim)
    env.clock.advance(1)
    report = _report(env.run())
    assert report["deleted"].get("deal") == 1
    assert victim not in set(live_deal_ids(env.store, "sandbox"))


def test_per_record_write_failures_are_reported_and_retried_next_run(env: Env) -> None:
    rule = env.sandbox.faults.add(FaultRule(kind="write_failure", path="batch", times=3))
    first = _report(env.run())
    assert first["failed"] == 3 and rule.fired == 3
    # The scorecards go first: HubSpot's own reason for each upsert it refused, by its key.
    (card,) = [w for w in first["written"] if w["object"] == "p_kpi_scorecard"]
    assert [f["code"] for f in card["failures"]] == ["VALIDATION_ERROR"] * 3
    for failure in card["failures"]:
        assert failure["key"].startswith("sandbox:")
        assert failure["message"] == (
            f"Record {failure['key']} could not be written (injected write failure)."
        )
    env.clock.advance(30)
    second = _report(env.run())
    assert sum(w["records_written"] for w in second["written"]) == 3
    assert second["failed"] == 0


@pytest.mark.slow
def test_25000_deals_changed_at_once_are_all_pulled_and_nothing_unchanged_is_written(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with HubSpotSandbox.start(
        reference_date=REFERENCE, deals=30_000, clock=clock, limits=UNLIMITED
    ) as sandbox:
        config = hubspot_config(sandbox, tmp_path / "store.sqlite", close_date_history=False)
        setup_targets(config)
        env = Env(sandbox, config, clock)
        env.run()
        env.clock.advance(30)
        env.run()  # re-reads what the first run wrote
        env.clock.advance(30)
        live = np.flatnonzero(~sandbox.portal.data.deals.is_deleted)
        touched = live[-25_000:]
        sandbox.portal.touch_deals(touched)  # one millisecond for all 25,000
        env.clock.advance(30)
        report = _report(env.run())
        assert report["pulled"]["deals"] == 25_000
        assert len(live_deal_ids(env.store, "sandbox")) == len(live)
        assert report["written"] == []  # the values did not change: nothing to write
        env.store.close()


def test_owner_kpis_stamped_on_open_deals_where_there_is_no_custom_object(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with HubSpotSandbox.start(reference_date=REFERENCE, clock=clock, limits=UNLIMITED) as sandbox:
        base = hubspot_config(sandbox, tmp_path / "store.sqlite")
        fields = KpiFields.model_validate(
            {
                "owner": {
                    "fields": {
                        "quota_attainment": "kpi_owner_attainment",
                        "deals_won": "kpi_owner_deals_won",
                    }
                }
            }
        )
        config = base.model_copy(update={"kpi_fields": fields})
        setup_targets(config)
        env = Env(sandbox, config, clock)
        result = env.run()
        report = _report(result)
        assert [w["object"] for w in report["written"]] == ["deals"]
        rows = result.results["sandbox"].rows
        alice = sandbox.portal.owner_id(0)
        (current,) = [
            r
            for r in rows
            if r.scope == "rep"
            and r.subject == alice
            and r.is_current
            and r.period_kind == "quarter"
        ]
        data = sandbox.portal.data
        stages = data.deals.stage
        alice_rows = np.flatnonzero((data.deals.owner == 0) & ~data.deals.is_deleted)
        open_rows = [r for r in alice_rows if stages[r] < 5]  # before closed_won
        closed_rows = [r for r in alice_rows if stages[r] in (5, 6)]
        assert open_rows and closed_rows
        for row in open_rows:
            props = sandbox.portal.deal_properties(sandbox.portal.deal_id(int(row)))
            assert float(props["kpi_owner_deals_won"]) == current.values["deals_won"]
            expected = current.values["quota_attainment"]
            if expected is None:
                assert props.get("kpi_owner_attainment") in (None, "")
            else:
                assert float(props["kpi_owner_attainment"]) == round(expected * 100, 2)
        for row in closed_rows:
            props = sandbox.portal.deal_properties(sandbox.portal.deal_id(int(row)))
            assert props.get("kpi_owner_deals_won") in (None, "")
        env.clock.advance(30)
        assert _report(env.run())["written"] == []
        env.store.close()
