"""The demo scenario, pulled by the connector from the sandbox and normalized: every bad deal of
Emma's excluded with its reason, David's USD/GBP deals converted, the deleted deal kept out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.base import STREAMS
from crm_kpi_worker.connectors.salesforce import connect_salesforce
from crm_kpi_worker.connectors.salesforce.normalize import salesforce_metadata
from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.config import AppConfig, CurrencySettings
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.normalize import NormalizeContext, Normalized, normalize


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[SalesforceSandbox, AppConfig, dict[str, list[Any]]]]:
    with SalesforceSandbox.start(seed=42) as sandbox:
        config = load_config(path_of("demo-salesforce.yaml"))
        source = config.sources[0].with_endpoints(
            login_url=sandbox.url, instance_url=sandbox.url, ca_bundle=sandbox.ca_path
        )
        config = config.replace_source(source)
        connector = connect_salesforce(source, config.currency, environ={})
        raw = {
            stream: [record for page in connector.pull(stream, None) for record in page.records]
            for stream in STREAMS
        }
        yield sandbox, config, raw


def _normalized(
    demo: tuple[SalesforceSandbox, AppConfig, dict[str, list[Any]]],
    stream: str,
    currency: CurrencySettings | None = None,
) -> Normalized:
    _, config, raw = demo
    metadata = salesforce_metadata(raw["stages"], raw["currencies"])
    context = NormalizeContext.for_source(config, "sandbox", metadata)
    if currency is not None:
        context = NormalizeContext(context.source, currency, context.teams, context.metadata)
    return normalize(context, stream, raw[stream])


def _deal_id(sandbox: SalesforceSandbox, index: int) -> str:
    return make_id("006", index)


def test_emmas_bad_deals_are_excluded_each_with_its_reason(demo: Any) -> None:
    sandbox = demo[0]
    result = _normalized(demo, "deals")
    bad = sandbox.org.data.notes["bad_deals"]
    expected = {
        (_deal_id(sandbox, bad["no_amount"]), "no_amount"),
        (_deal_id(sandbox, bad["no_close_date"]), "no_close_date"),
        (_deal_id(sandbox, bad["unknown_stage"]), "unknown_stage"),
        (_deal_id(sandbox, bad["unconvertible_currency"]), "unconvertible_currency"),
    }
    assert {(e.record_id, e.reason) for e in result.exclusions} == expected
    assert all(e.record_type == "deal" and e.detail for e in result.exclusions)
    by_id = {d.id: d for d in result.deals}
    assert by_id[_deal_id(sandbox, bad["unknown_stage"])].stage == "unmapped"
    chf = by_id[_deal_id(sandbox, bad["unconvertible_currency"])]
    assert (chf.currency, chf.amount, chf.arr) == ("CHF", Decimal("18000.0"), None)


def test_the_deleted_deal_is_marked_and_not_reported(demo: Any) -> None:
    sandbox = demo[0]
    result = _normalized(demo, "deals")
    deleted = _deal_id(sandbox, sandbox.org.data.notes["bad_deals"]["deleted"])
    assert result.deleted == {"deal": [deleted]}
    assert next(d for d in result.deals if d.id == deleted).is_deleted
    assert deleted not in {e.record_id for e in result.exclusions}


@pytest.mark.parametrize("conversion", ["crm", "static"])
def test_davids_foreign_currency_deals_are_converted(demo: Any, conversion: str) -> None:
    sandbox = demo[0]
    currency = (
        None
        if conversion == "crm"
        else CurrencySettings.model_validate(
            {"reporting": "EUR", "conversion": "static", "rates": {"USD": 1.08, "GBP": 0.85}}
        )
    )
    result = _normalized(demo, "deals", currency)
    by_id = {d.id: d for d in result.deals}
    foreign = sandbox.org.data.notes["foreign_currency_deals"]
    usd, gbp = by_id[_deal_id(sandbox, foreign["USD"])], by_id[_deal_id(sandbox, foreign["GBP"])]
    assert (usd.currency, usd.amount, usd.arr) == ("USD", Decimal("21600.0"), Decimal("20000.00"))
    assert (gbp.currency, gbp.amount, gbp.arr) == ("GBP", Decimal("10200.0"), Decimal("12000.00"))
    assert usd.owner_id == make_id("005", sandbox.org.data.notes["david"])


def test_alices_quarter_normalizes_to_the_worked_example(demo: Any) -> None:
    sandbox = demo[0]
    notes = sandbox.org.data.notes
    start, end = notes["scenario_quarter"]
    alice = make_id("005", notes["alice"])
    result = _normalized(demo, "deals")
    quarter = [
        d
        for d in result.deals
        if d.owner_id == alice and d.close_date is not None and start <= d.close_date <= end
    ]
    won = [d for d in quarter if d.is_won]
    lost = [d for d in quarter if d.is_closed and not d.is_won]
    assert len(won) == 10 and len(lost) == 30
    assert sum(d.arr or 0 for d in won) == Decimal("150000.00")
    cycles = [(d.close_date - d.created_at.date()).days for d in won if d.close_date]
    assert sum(cycles) / len(cycles) == 45
    # Every one of her 40 entered the demo stage in the quarter (stage history).
    for deal in won + lost:
        demo_entries = [c for c in result.stage_changes[deal.id] if c.stage == "demo"]
        assert demo_entries and start <= demo_entries[0].entered_at.date() <= end


def test_reps_quotas_accounts_and_demos(demo: Any) -> None:
    sandbox = demo[0]
    notes = sandbox.org.data.notes
    reps = {r.email: r for r in _normalized(demo, "users").reps}
    assert reps["alice.martin@sandbox.local"].team == "France Nord"
    assert reps["emma.laurent@sandbox.local"].team == "France Sud"
    assert sorted(r.email.split("@")[0] for r in reps.values() if r.is_ae) == [
        "alice.martin",
        "bruno.lefevre",
        "chloe.dubois",
        "david.moreau",
        "emma.laurent",
    ]
    quotas = _normalized(demo, "quotas")
    alice = make_id("005", notes["alice"])
    start, end = notes["scenario_quarter"]
    (q3,) = [q for q in quotas.quotas if q.rep_id == alice and q.period_start == start]
    assert (q3.period_end, q3.amount) == (end, Decimal("120000.00"))
    assert make_id("005", notes["chloe"]) not in {q.rep_id for q in quotas.quotas}
    assert quotas.exclusions == []
    accounts = _normalized(demo, "accounts")
    assert accounts.accounts and all(a.churn_date is not None for a in accounts.accounts)
    activities = _normalized(demo, "activities")
    alice_demos = [
        a
        for a in activities.activities
        if a.owner_id == alice and a.kind == "demo" and start <= a.start.date() <= end
    ]
    assert len(alice_demos) == notes["alice_scenario_quarter"]["demo_activities"] == 156
    assert all(isinstance(a.start, dt.datetime) for a in alice_demos)
