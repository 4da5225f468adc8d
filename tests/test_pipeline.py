"""One pipeline run end to end: the sandbox Salesforce, the real connector, SQLite, the KPIs,
the write-back; and what the next runs do."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from simple_salesforce import Salesforce
from stored_rows import stored_runs

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.kpis.results import KPI_KEYS
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli_demo import last_quarter_end, run_demo
from crm_kpi_worker.sync.cli_sync import print_report
from crm_kpi_worker.sync.config import AppConfig, OwnerTarget
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.pipeline import RunOptions, RunResult, run_once
from crm_kpi_worker.sync.setup import set_up_source
from crm_kpi_worker.sync.store import Store

AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


class Clock:
    """The sandbox org's clock, moved by the tests (never slept on)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * 60


class Env:
    def __init__(self, sandbox: SalesforceSandbox, config: AppConfig, clock: Clock) -> None:
        self.sandbox = sandbox
        self.config = config
        self.clock = clock
        self.store = Store.open(config.store.resolve_url())

    def run(self, **options: Any) -> RunResult:
        return run_once(self.config, self.store, RunOptions(as_of=AS_OF, **options))

    def sf(self) -> Salesforce:
        return self.sandbox.client()


def demo_config(sandbox: SalesforceSandbox, store_path: Path) -> AppConfig:
    config = load_config(path_of("demo-salesforce.yaml"))
    source = config.sources[0].with_changes(
        login_url=sandbox.url, instance_url=sandbox.url, ca_bundle=str(sandbox.ca_path)
    )
    store = config.store.model_copy(update={"url": f"sqlite:///{store_path}"})
    return config.replace_source(source).model_copy(update={"store": store})


def setup_targets(config: AppConfig) -> None:
    """``crm-kpi setup``: the fields, and the access and placement that make them usable."""
    source = config.sources[0]
    connector = build_connector(source, config.currency)
    set_up_source(config, source, connector, dry_run=False, say=lambda line: None)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = Clock()
    with SalesforceSandbox.start(reference_date=dt.date(2026, 9, 30), clock=clock) as sandbox:
        config = demo_config(sandbox, tmp_path / "store.sqlite")
        setup_targets(config)
        environment = Env(sandbox, config, clock)
        yield environment
        environment.store.close()


def _source_report(result: RunResult) -> dict[str, Any]:
    (source,) = result.report()["sources"]
    return source


def test_demo_reproduces_the_scenario_quarter() -> None:
    demo = run_demo(reference_date=dt.date(2026, 9, 30), as_of=AS_OF)
    assert demo["scenario_quarter"] == "2026-Q3"
    alice = next(
        r for r in demo["kpis"] if r["subject"] == "Alice Martin" and r["period"] == "2026-Q3"
    )
    kpis = alice["kpis"]
    assert kpis["bookings_arr"] == 150000
    assert kpis["quota"] == 120000
    assert kpis["quota_attainment"] == 1.25
    assert kpis["deals_won"] == 10 and kpis["deals_lost"] == 30
    assert kpis["win_rate"] == 0.25
    assert kpis["conversion_rate"] == 0.25
    assert kpis["sales_cycle_days"] == 45.0
    assert kpis["avg_deal_size"] == 15000
    assert 11 <= kpis["demos_per_week"] <= 13
    # Every KPI of every AE has a value or an explained empty.
    for row in demo["kpis"]:
        assert set(row["kpis"]) == set(KPI_KEYS)
        for key, value in row["kpis"].items():
            assert value is not None or key in row["empty_because"], (row["subject"], key)
    chloe = next(
        r for r in demo["kpis"] if r["subject"] == "Chloé Dubois" and r["period"] == "2026-Q3"
    )
    assert chloe["kpis"]["quota_attainment"] is None and chloe["empty_because"]["quota_attainment"]


def test_demo_default_scenario_quarter_is_the_last_complete_one() -> None:
    assert last_quarter_end(dt.date(2026, 11, 26)) == dt.date(2026, 9, 30)
    assert last_quarter_end(dt.date(2027, 1, 1)) == dt.date(2026, 12, 31)
    assert last_quarter_end(dt.date(2026, 3, 31)) == dt.date(2025, 12, 31)


def test_first_run_pulls_excludes_and_writes(env: Env) -> None:
    result = env.run()
    report = _source_report(result)
    data = env.sandbox.org.data
    assert report["pulled"]["deals"] == len(data.deals)  # queryAll: the deleted one too
    assert report["deleted"] == {"deal": int(data.deals.is_deleted.sum())}
    assert report["excluded"]["by_reason"] == {
        "no_amount": 1,
        "no_close_date": 1,
        "unconvertible_currency": 1,
        "unknown_stage": 1,
    }
    assert report["unassigned_deals"] == 2
    written = {w["object"]: w for w in report["written"]}
    assert written["Opportunity"]["records_written"] == int((~data.deals.is_deleted).sum())
    assert (
        written["KPI_Scorecard__c"]["created"] == written["KPI_Scorecard__c"]["records_written"] > 0
    )
    assert report["failed"] == 0
    sf = env.sf()
    card = sf.query(
        "SELECT Name, Bookings_ARR__c, Quota_Attainment__c, Win_Rate__c, Period_Type__c, "
        "Rep__r.Email FROM KPI_Scorecard__c WHERE Scorecard_Key__c LIKE 'sandbox:rep:%:2026-Q3' "
        "AND Rep__r.Email = 'alice.martin@sandbox.local'"
    )
    (record,) = card["records"]
    assert record["Bookings_ARR__c"] == 150000.0
    assert record["Quota_Attainment__c"] == 125.0  # a percent field
    assert record["Win_Rate__c"] == 25.0


def test_scorecard_names_follow_the_write_language(env: Env) -> None:
    assert env.config.write.language == "fr"  # the demo config writes French
    env.run()
    rows = env.sf().query_all("SELECT Name, Scorecard_Key__c FROM KPI_Scorecard__c")["records"]
    names = {r["Scorecard_Key__c"]: r["Name"] for r in rows}
    assert names["sandbox:org:org:2026-Q3"] == "Organisation - 2026-T3"
    assert names["sandbox:rep:unassigned:FY2026"] == "Non attribué - Exercice 2026"
    assert names["sandbox:team:France Sud:2026-11"] == "France Sud - 2026-11"
    alice = next(k for k, n in names.items() if n == "Alice Martin - 2026-T3")
    assert alice.startswith("sandbox:rep:") and alice.endswith(":2026-Q3")  # keys stay as is
    assert not any("Unassigned" in n or n.startswith("Org ") for n in names.values())


def test_a_second_run_writes_nothing_and_a_later_one_reads_nothing(env: Env) -> None:
    env.run()
    env.clock.advance(30)
    second = _source_report(env.run())
    assert second["written"] == []
    assert all(p["records_to_write"] == 0 for p in second["planned"])
    # The second run re-read the records the first one wrote (their stamps moved)...
    env.clock.advance(30)
    third = _source_report(env.run())
    # ...the third reads nothing new: one call per stream to see that nothing changed, plus
    # one describe per object the mapping names (Opportunity, Account, Event), the check of
    # the mapped fields that starts every run.
    assert third["pulled"].get("deals", 0) == 0
    assert third["written"] == []
    assert third["api_calls"] <= 8 + 3


def test_editing_ten_opportunities_pulls_them_and_writes_only_changes(env: Env) -> None:
    env.run()
    env.clock.advance(30)
    env.run()
    env.clock.advance(30)
    sf = env.sf()
    open_deals = sf.query(
        "SELECT Id, CloseDate FROM Opportunity WHERE IsClosed = false"
        " AND StageName != 'Legacy Stage' ORDER BY Id LIMIT 10"  # unknown stage: no slips value
    )["records"]
    for deal in open_deals:
        later = dt.date.fromisoformat(deal["CloseDate"]) + dt.timedelta(days=20)
        sf.Opportunity.update(deal["Id"], {"CloseDate": later.isoformat()})
    env.clock.advance(30)
    report = _source_report(env.run())
    assert report["pulled"]["deals"] == 10
    written = {w["object"]: w for w in report["written"]}
    assert written["Opportunity"]["records_written"] == 10  # their close-date slips
    slips = sf.query(
        "SELECT KPI_Close_Date_Slips__c FROM Opportunity WHERE Id IN ("
        + ",".join(f"'{d['Id']}'" for d in open_deals)
        + ")"
    )["records"]
    assert all(r["KPI_Close_Date_Slips__c"] >= 1 for r in slips)


def test_per_record_write_failures_are_reported_and_retried_next_run(env: Env) -> None:
    rule = env.sandbox.faults.add(FaultRule(kind="write_failure", path="composite", times=3))
    first = _source_report(env.run())
    assert first["failed"] == 3
    assert rule.fired == 3
    env.clock.advance(30)
    second = _source_report(env.run())
    retried = sum(w["records_written"] for w in second["written"])
    assert retried == 3 and second["failed"] == 0


def test_the_report_keeps_every_id_and_its_table_says_how_many_more(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.sandbox.org.data.deals.amount[:250] = np.nan  # 250 more deals without an amount
    env.sandbox.faults.add(FaultRule(kind="write_failure", path="composite", times=None))
    result = env.run()
    report = result.report()
    source = _source_report(result)
    excluded = source["exclusions"]
    assert len(excluded) == source["excluded"]["total"] > 250
    assert len({(e["type"], e["id"]) for e in excluded}) == len(excluded)
    (deals,) = [w for w in source["written"] if w["object"] == "Opportunity"]
    assert deals["records_written"] == 0
    assert len(deals["failures"]) == deals["failed"] > 200
    # The stored report is the same report: every id.
    (stored,) = stored_runs(env.store, limit=1)
    assert stored["id"] == result.run_id
    assert stored["report"] == json.loads(json.dumps(report, default=str))
    print_report(report, "json")
    assert json.loads(capsys.readouterr().out) == stored["report"]
    print_report(report, "table")
    table = capsys.readouterr().out
    assert table.count("\n      failed ") == 2 * 20  # scorecards and deals: 20 lines each
    where = f"every id: `crm-kpi runs show {result.run_id}`"
    assert f"… and {len(excluded) - 20:,} more ({where})" in table
    assert f"… and {deals['failed'] - 20:,} more ({where})" in table


def test_dry_run_writes_nothing(env: Env) -> None:
    result = env.run(dry_run=True)
    report = _source_report(result)
    assert report["written"] == []
    assert {p["object"] for p in report["planned"]} == {"KPI_Scorecard__c", "Opportunity"}
    assert env.sf().query("SELECT COUNT() FROM KPI_Scorecard__c")["totalSize"] == 0


class _SplitQuotaPages:
    """The real connector, but quotas come in two pages (as they do past 2,000 rows)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def pull(self, stream: str, since: str | None) -> Iterator[Any]:
        from dataclasses import replace

        for page in self.inner.pull(stream, since):
            if stream != "quotas":
                yield page
                continue
            half = len(page.records) // 2
            yield replace(page, records=page.records[:half])
            yield replace(page, records=page.records[half:])


def test_quotas_arriving_in_several_pages_are_all_kept(env: Env) -> None:
    def factory(source: Any, currency: Any) -> Any:
        return _SplitQuotaPages(build_connector(source, currency))

    result = run_once(env.config, env.store, RunOptions(as_of=AS_OF), connector_factory=factory)
    report = _source_report(result)
    assert report["pages"]["quotas"] == 2
    stored = env.store.quotas("sandbox")
    assert len(stored) == report["pulled"]["quotas"] == len(env.sandbox.org.data.quotas)


DEAL_FIELDS = (
    "KPI_Deal_Created_On__c",
    "KPI_Stage_Entered_On__c",
    "KPI_Close_Date_Slips__c",
    "KPI_Owner_Quota_Attainment__c",
    "KPI_Owner_Deals_Won__c",
)


def test_a_deal_of_an_unknown_stage_carries_no_per_deal_value(tmp_path: Path) -> None:
    """KPIS.md: no per-deal value at all (owner stamps included) for an unknown stage; and the
    dates written instead of ages are there exactly when the ages would be. A value written
    while the deal's stage was known is cleared once it is not."""
    clock = Clock()
    with SalesforceSandbox.start(reference_date=dt.date(2026, 9, 30), clock=clock) as sandbox:
        base = demo_config(sandbox, tmp_path / "store.sqlite")
        owner = OwnerTarget.model_validate({"fields": {"deals_won": "KPI_Owner_Deals_Won__c"}})
        assert base.kpi_fields is not None
        fields = base.kpi_fields.model_copy(update={"owner": owner})
        config = base.model_copy(update={"kpi_fields": fields})
        setup_targets(config)
        env = Env(sandbox, config, clock)
        env.run()
        sf = env.sf()
        select = f"SELECT Id, StageName, {', '.join(DEAL_FIELDS)} FROM Opportunity"
        (legacy,) = sf.query(f"{select} WHERE StageName = 'Legacy Stage'")["records"]
        assert [legacy[f] for f in DEAL_FIELDS] == [None] * len(DEAL_FIELDS)
        # An open deal of a known stage carries every value...
        (deal,) = sf.query(
            f"{select} WHERE IsClosed = false AND StageName = 'Negotiation' ORDER BY Id LIMIT 1"
        )["records"]
        stamped = [f for f in DEAL_FIELDS if f != "KPI_Owner_Quota_Attainment__c"]
        assert all(deal[f] is not None for f in stamped), deal  # (no Q4 quota in the demo)
        # ...until its stage becomes one the mapping does not know: every value is cleared.
        clock.advance(30)
        sf.Opportunity.update(deal["Id"], {"StageName": "Legacy Stage"})
        clock.advance(30)
        report = _source_report(env.run())
        assert report["excluded"]["by_reason"]["unknown_stage"] == 2
        (cleared,) = sf.query(f"{select} WHERE Id = '{deal['Id']}'")["records"]
        assert [cleared[f] for f in DEAL_FIELDS] == [None] * len(DEAL_FIELDS)
        env.store.close()
