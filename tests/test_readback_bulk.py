"""The verify pass on Salesforce's Bulk road (issue 13): above ``bulk.pull_above`` an object is
read back by one Bulk query job instead of a REST page per 200..2,000 records, with the values
typed as REST answers them, so the drift found is the REST road's; an org that refuses Bulk is
read back by REST."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_pipeline import Clock, demo_config, setup_targets

from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.pipeline import RunOptions, RunResult, run_once
from crm_kpi_worker.sync.readback import DriftFinder, verify_written
from crm_kpi_worker.sync.store import Store

AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
REFERENCE = dt.date(2026, 9, 30)
#: REST pages of 200; a query matching more than 100 records (and more than one page) goes by
#: Bulk. The demo org's 579 written deals do; its 54 scorecards fit one REST page.
BULK = {"pull_above": 100, "write_above": None}
REST_ONLY = {"pull_above": None, "write_above": None}
DEALS = "Opportunity"


class Env:
    def __init__(self, sandbox: SalesforceSandbox, config: AppConfig, clock: Clock) -> None:
        self.sandbox = sandbox
        self.config = config
        self.clock = clock
        self.source = config.sources[0]
        self.store = Store.open(config.store.resolve_url())
        card = config.kpi_fields_for(self.source).scorecard
        assert card is not None
        self.card = card

    def run(self, **options: Any) -> dict[str, Any]:
        result: RunResult = run_once(self.config, self.store, RunOptions(as_of=AS_OF, **options))
        (source,) = result.report()["sources"]
        return dict(source)

    def connector(self, bulk: dict[str, Any]) -> Any:
        return build_connector(self.source.with_changes(bulk=bulk), self.config.currency)

    def routes(self) -> Counter[str]:
        return Counter(self.sandbox.stats.by_route)

    def verify(self, store: Store, connector: Any) -> tuple[dict[str, list[str]], Counter[str]]:
        """A verify pass of every written object (``--verify``) against ``store``'s memory:
        the drifted keys per object, and the records read back per object."""
        drift = DriftFinder(store, self.source.name)
        report = SimpleNamespace(verified=Counter())
        verify_written(self.config, store, self.source, connector, drift, report, every=True)
        return {obj: sorted(keys) for obj, keys in drift.found.items()}, report.verified

    def read_back(self, connector: Any, object: str) -> dict[str, dict[str, Any]]:
        names = self.store.written_fields(self.source.name, object)
        key = self.card.external_id if object == self.card.object else None
        return {k: v for page in connector.read_back(object, names, key) for k, v in page.items()}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = Clock()
    with SalesforceSandbox.start(reference_date=REFERENCE, clock=clock) as sandbox:
        config = demo_config(sandbox, tmp_path / "store.sqlite")
        source = config.sources[0].with_changes(page_size=200, bulk=BULK)
        config = config.replace_source(source)
        setup_targets(config)
        environment = Env(sandbox, config, clock)
        yield environment
        environment.store.close()


def _spent(before: Counter[str], after: Counter[str]) -> Counter[str]:
    return Counter({k: v - before[k] for k, v in after.items() if v - before[k]})


def _hand_edits(env: Env) -> dict[str, list[str]]:
    """Hand edits through the API, as a person makes them: a scorecard's quota, and a number, a
    date and a percent field of three deals. Returns the edited keys per object."""
    sf = env.connector(REST_ONLY).client
    card = env.card
    key = sorted({k for k, _ in env.store.written(env.source.name, card.object)})[0]
    found = sf.query(f"SELECT Id FROM {card.object} WHERE {card.external_id} = '{key}'")
    getattr(sf, card.object).update(found["records"][0]["Id"], {card.fields["quota"]: 1})
    deals = sorted({k for k, _ in env.store.written(env.source.name, DEALS)})
    edits = {
        "KPI_Close_Date_Slips__c": 42,
        "KPI_Stage_Entered_On__c": "2020-01-01",
        "KPI_Owner_Quota_Attainment__c": 12.5,
    }
    edited = deals[10:13]
    for deal_id, (field, value) in zip(edited, edits.items(), strict=True):
        sf.Opportunity.update(deal_id, {field: value})
    env.clock.advance(1)
    return {card.object: [key], DEALS: edited}


def test_a_big_verify_pass_reads_one_bulk_job_and_finds_the_drift_rest_finds(
    env: Env, tmp_path: Path
) -> None:
    env.run()
    env.clock.advance(10)
    env.run()
    edited = _hand_edits(env)
    # The same memory for the REST road: a copy of the store as it is now (its WAL included).
    copy = tmp_path / "rest.sqlite"
    with sqlite3.connect(tmp_path / "store.sqlite") as live, sqlite3.connect(copy) as target:
        live.backup(target)

    rest, bulk = env.connector(REST_ONLY), env.connector(BULK)  # logged in, currency checked
    before = env.routes()
    with Store.open(f"sqlite:///{copy}") as rest_store:
        rest_found, rest_read = env.verify(rest_store, rest)
        rest_memory = rest_store.written(env.source.name, DEALS)
    rest_calls = _spent(before, env.routes())

    before = env.routes()
    bulk_found, bulk_read = env.verify(env.store, bulk)
    bulk_calls = _spent(before, env.routes())

    assert rest_found == bulk_found == edited
    assert rest_read == bulk_read == {env.card.object: 54, DEALS: 579}
    # The memory took the CRM's values, the same on both roads (type included).
    bulk_memory = env.store.written(env.source.name, DEALS)
    assert bulk_memory == rest_memory
    assert {k: type(v) for k, v in bulk_memory.items()} == {
        k: type(v) for k, v in rest_memory.items()
    }
    # REST: a page of 200 deals a call. Bulk: the first REST page (it says 579 records), then
    # one job; the 54 scorecards are one REST page either way.
    assert rest_calls["query_more"] == 2 and "bulk_query_create" not in rest_calls
    assert bulk_calls["bulk_query_create"] == 1 and "query_more" not in bulk_calls
    assert bulk_calls["query"] == 2 and bulk_calls["bulk_query_results"] == 1
    assert sum(bulk_calls.values()) == 2 + 3 + 1  # and a poll, and the deals' describe


def test_a_verify_right_after_a_write_finds_no_drift_on_the_bulk_road(env: Env) -> None:
    env.run()
    # More scorecards than a REST page, so they too are read back by Bulk: copies of the
    # written ones (every kind of field the worker writes: currency, percent, number, date,
    # datetime, text, lookup), written as the worker writes and remembered as it remembers.
    card, name = env.card, env.source.name
    memory = env.store.written(name, card.object)
    copies: dict[str, dict[str, Any]] = {}
    for (key, field), value in memory.items():
        for n in range(1, 5):
            copies.setdefault(f"{key}#{n}", {})[field] = value
    results = env.connector(REST_ONLY).upsert(card.object, card.external_id, copies)
    assert len(results) == 4 * 54 and all(r.success for r in results)
    env.store.record_written(
        name, card.object, [(k, f, v) for k, values in copies.items() for f, v in values.items()]
    )
    env.clock.advance(10)
    env.run()  # reads the written deals again (by Bulk)
    env.clock.advance(10)

    before = env.routes()
    report = env.run(verify=True)
    calls = _spent(before, env.routes())
    assert report["verified"] == {card.object: 5 * 54, DEALS: 579}
    assert report["drift"] == [] and report["written"] == []
    assert calls["bulk_query_create"] == 2 and "query_more" not in calls

    # Each value as REST answers it: numbers as numbers, null for empty (Bulk CSV instants
    # end in Z where REST's end in +0000).
    for object in (card.object, DEALS):
        rest = env.read_back(env.connector(REST_ONLY), object)
        bulk = env.read_back(env.connector(BULK), object)
        assert bulk.keys() == rest.keys()
        assert {k: _comparable(v) for k, v in bulk.items()} == {
            k: _comparable(v) for k, v in rest.items()
        }


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in values.items():
        if isinstance(value, str) and value.endswith("Z") and "T" in value:
            value = value[:-1] + "+0000"
        out[name] = (type(value).__name__ if value is not None else None, value)
    return out


def test_an_org_refusing_bulk_is_verified_by_rest_with_one_warning(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.run()
    env.clock.advance(10)
    env.run()
    edited = _hand_edits(env)
    env.sandbox.faults.add(FaultRule("server_error", path="jobs/", status=403, times=None))
    caplog.set_level(logging.WARNING)
    connector = env.connector(BULK)
    before = env.routes()
    found, read = env.verify(env.store, connector)
    calls = _spent(before, env.routes())
    assert found == edited and read == {env.card.object: 54, DEALS: 579}
    # The first REST page is not read twice: one per object, then the deals' two more pages.
    assert calls["query"] == 2 and calls["query_more"] == 2
    warnings = [r for r in caplog.records if "Bulk API 2.0 refused" in r.getMessage()]
    assert len(warnings) == 1
    # From then on this connector reads by REST without asking Bulk again.
    before = env.routes()
    assert len(env.read_back(connector, DEALS)) == 579
    assert "bulk_query_create" not in _spent(before, env.routes())


def test_the_bulk_read_back_query_has_no_order_by(env: Env) -> None:
    queries = env.connector(BULK).queries
    fields = ("KPI_Close_Date_Slips__c",)
    assert queries.read_back(DEALS, fields).soql.endswith("ORDER BY Id")
    assert "ORDER BY" not in queries.read_back(DEALS, fields, bulk=True).soql
