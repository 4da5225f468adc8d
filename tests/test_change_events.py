"""Change events (issue 11, point 6): with ``change_events`` on, the run after a write-back reads
only what others changed, and a change someone makes between the worker's pull and its write of
the same record is still read, by Id, from its change event. End to end on the sandbox
Salesforce (its Pub/Sub API and Change Data Capture), through setup and the pipeline."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_pipeline import Clock, demo_config, setup_targets

from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.connectors.salesforce.config import SalesforceBulk, SalesforceChangeEvents
from crm_kpi_worker.connectors.salesforce.deals_feed import ReplayCursor
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.pipeline import RunOptions, RunResult, run_once
from crm_kpi_worker.sync.setup import set_up_source
from crm_kpi_worker.sync.store import Store

AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
ALICE = "alice.martin@sandbox.local"
ROADS = {
    "rest": SalesforceBulk(pull_above=None, write_above=None),
    "bulk": SalesforceBulk(pull_above=50, write_above=50),
}


class Org:
    def __init__(self, sandbox: SalesforceSandbox, config: AppConfig, clock: Clock) -> None:
        self.sandbox = sandbox
        self.config = config
        self.clock = clock
        self.source = config.sources[0]
        self.store = Store.open(config.store.resolve_url())

    def run(self, **options: Any) -> dict[str, Any]:
        options.setdefault("as_of", AS_OF)
        return report(run_once(self.config, self.store, RunOptions(**options)))

    def stored_amount(self, deal_id: str) -> float:
        from stored_rows import stored_deals

        deals = {d.id: d for d in stored_deals(self.store, self.source.name)}
        return float(deals[deal_id].amount or 0)

    def deals_cursor(self) -> ReplayCursor:
        return ReplayCursor.decode(self.store.cursor(self.source.name, "deals"))


def report(result: RunResult) -> dict[str, Any]:
    (source,) = result.report()["sources"]
    return source


def with_change_events(config: AppConfig, sandbox: SalesforceSandbox, road: str) -> AppConfig:
    events = SalesforceChangeEvents(endpoint=sandbox.pubsub_endpoint, idle_seconds=0.3)
    source = config.sources[0].with_changes(change_events=events, bulk=ROADS[road])
    return config.replace_source(source)


@pytest.fixture(params=sorted(ROADS))
def org(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Org]:
    clock = Clock()
    with SalesforceSandbox.start(
        reference_date=dt.date(2026, 9, 30), clock=clock, pubsub_keepalive_seconds=0.2
    ) as sandbox:
        config = with_change_events(
            demo_config(sandbox, tmp_path / "store.sqlite"), sandbox, request.param
        )
        setup_targets(config)
        env = Org(sandbox, config, clock)
        yield env
        env.store.close()


def test_setup_creates_the_filtered_channel_once(org: Org) -> None:
    sf = org.sandbox.client()
    members = sf.toolingexecute(
        "query/?q=SELECT+Id,EventChannel,SelectedEntity,FilterExpression"
        "+FROM+PlatformEventChannelMember"
    )["records"]
    me = org.sandbox.integration_user_id
    assert [(m["EventChannel"], m["SelectedEntity"], m["FilterExpression"]) for m in members] == [
        ("CrmKpiWorker__chn", "OpportunityChangeEvent", f"ChangeEventHeader.commitUser != '{me}'")
    ]
    said: list[str] = []
    connector = build_connector(org.source, org.config.currency)
    set_up_source(org.config, org.source, connector, dry_run=True, say=said.append)
    assert not [line for line in said if "change event channel" in line]  # nothing differs


def test_the_run_after_a_write_back_reads_only_what_others_changed(org: Org) -> None:
    first = org.run()
    written = {w["object"]: w["records_written"] for w in first["written"]}
    assert written["Opportunity"] > 100
    org.clock.advance(1)  # well inside the 5-minute lookback: every written deal's stamp is in it
    after = org.run()
    assert after["pulled"]["deals"] == 0, after["pulled"]  # none of the worker's writes re-read
    assert after["written"] == []
    # Someone else changes two deals: exactly those are read.
    alice = org.sandbox.client_as(ALICE)
    deal_ids = _deals(org)[:2]
    for deal_id in deal_ids:
        alice.Opportunity.update(deal_id, {"Amount": 4321})
    org.clock.advance(1)
    third = org.run()
    assert third["pulled"]["deals"] == 2
    assert third["change_events"] == {
        "events": 2,
        "read_by_id": 0,  # both were Alice's last changes: the query returned them
        "complete": True,
        "reason": None,
    }
    assert all(org.stored_amount(deal_id) == 4321 for deal_id in deal_ids)


def test_without_change_events_the_run_after_reads_the_workers_writes_again(
    tmp_path: Path,
) -> None:
    """The same org and runs as above, change events off: the cost they save."""
    clock = Clock()
    with SalesforceSandbox.start(reference_date=dt.date(2026, 9, 30), clock=clock) as sandbox:
        config = demo_config(sandbox, tmp_path / "store.sqlite")
        config = config.replace_source(config.sources[0].with_changes(bulk=ROADS["rest"]))
        setup_targets(config)
        env = Org(sandbox, config, clock)
        first = env.run()
        clock.advance(1)
        after = env.run()
        env.store.close()
    written = {w["object"]: w["records_written"] for w in first["written"]}
    assert after["pulled"]["deals"] >= written["Opportunity"]


def test_a_change_between_the_pull_and_the_write_is_read_from_its_event(org: Org) -> None:
    org.run()
    org.clock.advance(10)
    org.run()
    org.clock.advance(10)
    deal_field = org.config.kpi_fields_for(org.source).deal.fields["close_date_slips"]  # type: ignore[union-attr]
    memory = org.store.written(org.source.name, "Opportunity")
    deal_id = next(key for (key, name) in memory if name == deal_field)
    # The worker will write this deal in the next run (after Alice's edit), so it is last
    # modified by the worker, with her change underneath.
    org.store.record_written(org.source.name, "Opportunity", [(deal_id, deal_field, -1)])
    alice = org.sandbox.client_as(ALICE)
    edited: list[str] = []

    def factory(source: Any, currency: Any) -> Any:
        connector = build_connector(source, currency)
        upsert, update = connector.upsert, connector.update

        def edit_first(write: Any) -> Any:
            def written(*args: Any) -> Any:
                if not edited:  # Alice edits the deal once the pull is over, before the writes
                    alice.Opportunity.update(deal_id, {"Amount": 98765})
                    edited.append(deal_id)
                return write(*args)

            return written

        connector.upsert, connector.update = edit_first(upsert), edit_first(update)
        return connector

    # A week later the scorecards move too: the run writes; Alice's edit lands between its
    # pull and its writes, the worker's write over it hides it from SOQL.
    later = RunOptions(as_of=AS_OF + dt.timedelta(days=7))
    result = run_once(org.config, org.store, later, connector_factory=factory)
    assert edited
    written = {w["object"]: w["records_written"] for w in report(result)["written"]}
    assert written["Opportunity"] >= 1
    held = org.sandbox.client().query(
        f"SELECT LastModifiedById FROM Opportunity WHERE Id = '{deal_id}'"
    )["records"][0]
    assert held["LastModifiedById"] == org.sandbox.integration_user_id
    org.clock.advance(1)
    after = org.run(as_of=AS_OF + dt.timedelta(days=7))
    assert org.stored_amount(deal_id) == 98765
    assert after["pulled"]["deals"] >= 1
    assert after["change_events"]["read_by_id"] == 1  # the one the worker's write hid


def test_the_feed_down_means_one_warning_and_every_modified_deal_read(
    org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    first = org.run()
    written = {w["object"]: w["records_written"] for w in first["written"]}
    replay_before = org.deals_cursor().replay
    org.sandbox.faults.add(
        FaultRule(kind="pubsub_unavailable", path="/eventbus.v1.PubSub/Subscribe")
    )
    org.clock.advance(1)
    with caplog.at_level(logging.WARNING):
        after = org.run()
    assert after["pulled"]["deals"] >= written["Opportunity"]  # as without change events
    warnings = [
        r.getMessage() for r in caplog.records if "change events not read" in r.getMessage()
    ]
    assert len(warnings) == 1 and "UNAVAILABLE" in warnings[0]
    assert org.deals_cursor().replay == replay_before  # nothing read: the position stays
    assert after["change_events"]["complete"] is False
    assert "UNAVAILABLE" in after["change_events"]["reason"]


def test_on_the_bulk_road_the_query_jobs_leave_out_the_workers_writes(tmp_path: Path) -> None:
    """Many deals changed by others (more than ``bulk.pull_above``) right after a write-back:
    the Bulk jobs (deals and their histories) return exactly those, none of the worker's."""
    clock = Clock()
    with SalesforceSandbox.start(
        reference_date=dt.date(2026, 9, 30), clock=clock, pubsub_keepalive_seconds=0.2
    ) as sandbox:
        config = with_change_events(demo_config(sandbox, tmp_path / "s.sqlite"), sandbox, "bulk")
        # Pages of 200: a pull of more than one page and 50 records goes by Bulk.
        config = config.replace_source(config.sources[0].with_changes(page_size=200))
        setup_targets(config)
        org = Org(sandbox, config, clock)
        org.run()
        clock.advance(1)
        changed = _deals(org)[:250]
        assert len(changed) == 250
        alice = sandbox.client_as(ALICE)
        for at in range(0, len(changed), 200):
            alice.restful(
                "composite/sobjects",
                method="PATCH",
                json={
                    "allOrNone": True,
                    "records": [
                        {"attributes": {"type": "Opportunity"}, "id": i, "Amount": 777}
                        for i in changed[at : at + 200]
                    ],
                },
            )
        clock.advance(1)
        jobs_before = _bulk_query_jobs(sandbox)
        after = org.run()
        assert _bulk_query_jobs(sandbox) > jobs_before  # the pull took the Bulk road
        assert after["pulled"]["deals"] == len(changed)
        assert all(org.stored_amount(deal_id) == 777 for deal_id in changed)
        org.store.close()


def _bulk_query_jobs(sandbox: SalesforceSandbox) -> int:
    return int(sandbox.app.stats.by_route.get("bulk_query_create", 0))


def _deals(org: Org) -> list[str]:
    from stored_rows import stored_deals

    return sorted(d.id for d in stored_deals(org.store, org.source.name))


def test_a_channel_not_set_up_is_said_with_the_command_that_makes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with SalesforceSandbox.start(
        reference_date=dt.date(2026, 9, 30), clock=clock, pubsub_keepalive_seconds=0.2
    ) as sandbox:
        plain = demo_config(sandbox, tmp_path / "s.sqlite")
        setup_targets(plain)  # set up before change events were configured: no channel
        config = with_change_events(plain, sandbox, "rest")
        org = Org(sandbox, config, clock)
        org.run()
        clock.advance(1)
        with caplog.at_level(logging.WARNING):
            org.run()
        org.store.close()
    (warning,) = [r.getMessage() for r in caplog.records if "change events not" in r.getMessage()]
    assert "NOT_FOUND" in warning and "`crm-kpi setup` creates the channel" in warning


def test_a_change_made_after_the_soql_read_while_the_events_are_read_is_read_by_id(
    org: Org,
) -> None:
    """The feed is read beside the SOQL read: a deal SOQL returned and someone changed again
    right after (its event arriving in the same read) is read again by Id, in the same run:
    its replay position moves past that event, and a write of the worker's could hide it from
    the next run's SOQL."""
    org.run()
    org.clock.advance(10)
    deal_field = org.config.kpi_fields_for(org.source).deal.fields["close_date_slips"]  # type: ignore[union-attr]
    memory = org.store.written(org.source.name, "Opportunity")
    deal_id = next(key for (key, name) in memory if name == deal_field)
    alice = org.sandbox.client_as(ALICE)
    alice.Opportunity.update(deal_id, {"Amount": 1111})  # SOQL will return this one
    org.clock.advance(1)
    edited: list[str] = []
    assert org.source.change_events is not None
    slow_feed = org.source.change_events.model_copy(update={"idle_seconds": 3.0})
    config = org.config.replace_source(org.source.with_changes(change_events=slow_feed))

    def factory(source: Any, currency: Any) -> Any:
        connector = build_connector(source, currency)
        by_events = connector.deals_by_events
        soql = by_events.pull

        def pull(since: Any, skip: Any) -> Any:
            yield from soql(since, skip)
            if skip is not None and not edited:  # the SOQL read is over, the feed's is not
                org.clock.advance(1)
                alice.Opportunity.update(deal_id, {"Amount": 2222})
                edited.append(deal_id)

        by_events.pull = pull
        return connector

    result = run_once(config, org.store, RunOptions(as_of=AS_OF), connector_factory=factory)
    assert edited
    assert org.stored_amount(deal_id) == 2222  # read again by Id in this very run
    events = report(result)["change_events"]
    assert events["complete"] and events["read_by_id"] == 1
