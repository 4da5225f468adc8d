"""The connector contract: what every ``connectors.base.Connector`` must do, CRM-neutral.

The tests use only the Connector interface. What they need from a particular CRM (changing,
deleting or failing records through its own API, the name of a deal object, how to read a
record's modification stamp) comes from a :class:`Harness`, one per CRM; the ``harness``
fixture is parametrised by CRM, so a new connector joins by adding its harness factory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import create_and_grant

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.base import (
    STREAMS,
    Connector,
    Page,
    SetupSettings,
    TargetField,
    TargetObject,
)
from crm_kpi_worker.connectors.hubspot.connector import DEFAULT_LOOKBACK as HUBSPOT_LOOKBACK
from crm_kpi_worker.connectors.hubspot.search import parse_stamp as hs_parse_stamp
from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.connectors.retry import RetryPolicy
from crm_kpi_worker.connectors.salesforce.resources import parse_stamp
from crm_kpi_worker.connectors.salesforce.settings import DEFAULT_LOOKBACK
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.config_loader import load_config

DEMO_CONFIG = path_of("demo-salesforce.yaml")
HUBSPOT_CONFIG = path_of("demo-hubspot.yaml")


@dataclass
class Harness:
    """One CRM under test, seen from outside the connector."""

    connect: Callable[[], Connector]  # a freshly logged-in connector
    deal_object: str
    lookback: dt.timedelta
    stamp_of: Callable[[dict[str, Any]], dt.datetime]  # a raw record's modification stamp
    parse_cursor: Callable[[str], dt.datetime]
    id_of: Callable[[dict[str, Any]], str]
    deleted_of: Callable[[dict[str, Any]], bool]  # a raw record the CRM reports deleted
    edit_deals: Callable[[list[str]], None]  # change these deals through the CRM's API
    delete_deal: Callable[[str], None]
    fail_writes_for: Callable[[list[str]], None]  # make the CRM refuse these records
    deal_field: TargetField  # a number field to create on deals and write to
    scorecard: TargetObject
    scorecard_fields: tuple[TargetField, ...]  # the first one is the external id
    incremental_streams: tuple[str, ...]


def _sleeps() -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        raise AssertionError(f"the contract tests expect no retry, got a {seconds} s wait")

    return sleep


def salesforce_harness(sandbox: SalesforceSandbox) -> Harness:
    config = load_config(DEMO_CONFIG)
    source = config.sources[0].with_endpoints(
        login_url=sandbox.url, instance_url=sandbox.url, ca_bundle=sandbox.ca_path
    )
    sf = sandbox.client()

    def connect() -> Connector:
        return build_connector(
            source, config.currency, environ={}, retry_policy=RetryPolicy(sleep=_sleeps())
        )

    def edit_deals(ids: list[str]) -> None:
        for index, record_id in enumerate(ids):
            sf.Opportunity.update(record_id, {"Probability": 11 + index})

    def fail_writes_for(ids: list[str]) -> None:
        sandbox.faults.add(
            FaultRule(
                kind="write_failure", path="/composite/sobjects", record_ids=tuple(ids), times=None
            )
        )

    return Harness(
        connect=connect,
        deal_object="Opportunity",
        lookback=DEFAULT_LOOKBACK,
        stamp_of=lambda record: parse_stamp(record["SystemModstamp"]),
        parse_cursor=parse_stamp,
        id_of=lambda record: record["Id"],
        deleted_of=lambda record: bool(record.get("IsDeleted")),
        edit_deals=edit_deals,
        delete_deal=lambda record_id: sf.Opportunity.delete(record_id),
        fail_writes_for=fail_writes_for,
        deal_field=TargetField(
            "Opportunity", "KPI_Days_In_Stage__c", "number", "Days in stage", precision=6, scale=0
        ),
        scorecard=TargetObject("KPI_Scorecard__c", "KPI Scorecard", "KPI Scorecards", "Scorecard"),
        scorecard_fields=(
            TargetField(
                "KPI_Scorecard__c",
                "Scorecard_Key__c",
                "text",
                "Key",
                length=80,
                external_id=True,
                unique=True,
            ),
            TargetField(
                "KPI_Scorecard__c", "Win_Rate__c", "percent", "Win rate", precision=5, scale=2
            ),
        ),
        incremental_streams=("users", "accounts", "deals", "activities"),
    )


def hubspot_harness(sandbox: HubSpotSandbox) -> Harness:
    config = load_config(HUBSPOT_CONFIG)
    source = config.sources[0].with_changes(
        base_url=sandbox.url,
        ca_bundle=str(sandbox.ca_path),
        rate_limits={"search_per_second": 100, "per_10_seconds": 10_000},
    )
    portal = sandbox.portal

    def connect() -> Connector:
        return build_connector(
            source, config.currency, environ={}, retry_policy=RetryPolicy(sleep=_sleeps())
        )

    def edit_deals(ids: list[str]) -> None:
        client = sandbox.client()
        for index, record_id in enumerate(ids):
            client.crm.deals.basic_api.update(
                record_id, {"properties": {"hs_deal_stage_probability": str(0.11 + index / 100)}}
            )

    def fail_writes_for(ids: list[str]) -> None:
        sandbox.faults.add(
            FaultRule(kind="write_failure", path="/batch/", record_ids=tuple(ids), times=None)
        )

    return Harness(
        connect=connect,
        deal_object="deals",
        lookback=HUBSPOT_LOOKBACK,
        stamp_of=lambda record: hs_parse_stamp(record["properties"]["hs_lastmodifieddate"]),
        parse_cursor=hs_parse_stamp,
        id_of=lambda record: str(record["id"]),
        deleted_of=lambda record: record.get("archived") is True,
        edit_deals=edit_deals,
        delete_deal=portal.archive_deal,
        fail_writes_for=fail_writes_for,
        deal_field=TargetField("deals", "kpi_days_in_stage", "number", "Days in stage"),
        scorecard=TargetObject("p_kpi_scorecard", "KPI Scorecard", "KPI Scorecards", "Scorecard"),
        scorecard_fields=(
            TargetField(
                "p_kpi_scorecard",
                "kpi_scorecard_key",
                "text",
                "Key",
                external_id=True,
                unique=True,
            ),
            TargetField("p_kpi_scorecard", "kpi_win_rate", "percent", "Win rate"),
        ),
        incremental_streams=("accounts", "deals", "activities"),
    )


SANDBOXES: dict[str, Callable[[], Any]] = {
    "salesforce": lambda: SalesforceSandbox.start(seed=7),
    "hubspot": lambda: HubSpotSandbox.start(seed=7, limits=RateLimits(None, None, None)),
}
HARNESSES: dict[str, Callable[[Any], Harness]] = {
    "salesforce": salesforce_harness,
    "hubspot": hubspot_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A CRM of its own (tests here write to it)."""
    with SANDBOXES[request.param]() as sandbox:
        yield HARNESSES[request.param](sandbox)


def _pull(connector: Connector, stream: str, since: str | None = None) -> list[Page]:
    return list(connector.pull(stream, since))


def _records(pages: list[Page]) -> list[dict[str, Any]]:
    return [record for page in pages for record in page.records]


def _check_pages(
    harness: Harness, pages: list[Page], stream: str, since: str | None = None
) -> None:
    cursors = [harness.parse_cursor(page.cursor) for page in pages if page.cursor is not None]
    if since is not None and cursors:
        assert cursors[0] >= harness.parse_cursor(since)
    assert cursors == sorted(cursors)
    for page in pages:
        assert page.stream == stream
        assert all(isinstance(record, dict) and harness.id_of(record) for record in page.records)
        assert all(isinstance(i, str) and i for i in page.deleted_ids)


# ---- pulls ----------------------------------------------------------------------------------


def test_every_stream_pulls_in_full_with_monotonic_cursors(harness: Harness) -> None:
    connector = harness.connect()
    for stream in STREAMS:
        pages = _pull(connector, stream)
        _check_pages(harness, pages, stream)
        ids = [harness.id_of(record) for record in _records(pages)]
        assert len(ids) == len(set(ids)), f"{stream}: a record came twice in one full pull"
        if stream in harness.incremental_streams and ids:
            assert pages[-1].cursor is not None, f"{stream}: an incremental stream needs cursors"
    assert connector.api_calls > 0


def test_unknown_stream_and_bad_cursor_are_refused(harness: Harness) -> None:
    connector = harness.connect()
    with pytest.raises(ValueError, match="unknown stream"):
        _pull(connector, "opportunities")
    with pytest.raises(ValueError):
        _pull(connector, "deals", "yesterday' OR Id != '")


def test_incremental_pull_returns_exactly_the_lookback_overlap(harness: Harness) -> None:
    connector = harness.connect()
    for stream in harness.incremental_streams:
        full = _pull(connector, stream)
        records = _records(full)
        if not records:
            continue
        cursor = full[-1].cursor
        assert cursor is not None
        window_start = harness.parse_cursor(cursor) - harness.lookback
        expected = {harness.id_of(r) for r in records if harness.stamp_of(r) >= window_start}
        again = _pull(connector, stream, cursor)
        _check_pages(harness, again, stream, cursor)
        assert {harness.id_of(r) for r in _records(again)} == expected, stream
        assert harness.parse_cursor(again[-1].cursor or "") >= harness.parse_cursor(cursor)


def test_incremental_pull_returns_the_edited_records_and_the_overlap(harness: Harness) -> None:
    connector = harness.connect()
    full = _pull(connector, "deals")
    records = _records(full)
    cursor = full[-1].cursor
    assert cursor is not None
    window_start = harness.parse_cursor(cursor) - harness.lookback
    overlap = {harness.id_of(r) for r in records if harness.stamp_of(r) >= window_start}
    live = [harness.id_of(r) for r in records if not harness.deleted_of(r)]
    edited = live[:3]
    harness.edit_deals(edited)
    again = _pull(connector, "deals", cursor)
    _check_pages(harness, again, "deals", cursor)
    assert {harness.id_of(r) for r in _records(again)} == overlap | set(edited)
    assert harness.parse_cursor(again[-1].cursor or "") > harness.parse_cursor(cursor)
    # The next run, from the new cursor, sees the edits only through the lookback.
    newer = _pull(connector, "deals", again[-1].cursor)
    assert set(edited) <= {harness.id_of(r) for r in _records(newer)}


def test_deletions_appear_in_the_next_incremental_pull(harness: Harness) -> None:
    connector = harness.connect()
    full = _pull(connector, "deals")
    cursor = full[-1].cursor
    victim = next(harness.id_of(r) for r in _records(full) if not harness.deleted_of(r))
    harness.delete_deal(victim)
    again = _pull(connector, "deals", cursor)
    assert victim in {i for page in again for i in page.deleted_ids}


# ---- writes ---------------------------------------------------------------------------------


def test_missing_and_create_targets_are_idempotent(harness: Harness) -> None:
    connector = harness.connect()
    fields = [harness.deal_field, *harness.scorecard_fields]
    objects, missing = connector.missing_targets([harness.scorecard], fields)
    assert objects == [harness.scorecard] and missing == fields
    connector.create_targets([harness.scorecard], fields)
    assert connector.missing_targets([harness.scorecard], fields) == ([], [])
    connector.create_targets([harness.scorecard], fields)  # nothing left to create: no error
    # The rest of setup: on Salesforce, the integration user's permission set makes the new
    # fields visible to its describe (fields created through the Tooling API have no FLS).
    for change in connector.plan_setup([harness.scorecard], fields, SetupSettings()):
        change.apply()
    # A new run describes again and agrees; creating again changes nothing.
    later = harness.connect()
    assert later.missing_targets([harness.scorecard], fields) == ([], [])
    before = later.api_calls
    later.create_targets([harness.scorecard], fields)
    assert later.api_calls == before  # described already: no call at all


def test_update_reports_each_record_in_order_and_isolates_failures(harness: Harness) -> None:
    connector = harness.connect()
    create_and_grant(connector, [], [harness.deal_field])
    deals = [r for r in _records(_pull(connector, "deals")) if not harness.deleted_of(r)]
    ids = [harness.id_of(r) for r in deals[:205]]  # two or three batches
    failing = ids[3]
    harness.fail_writes_for([failing])
    values = {record_id: {harness.deal_field.name: index} for index, record_id in enumerate(ids)}
    results = connector.update(harness.deal_object, values)
    assert [r.key for r in results] == ids
    assert [r.key for r in results if not r.success] == [failing]
    failed = next(r for r in results if not r.success)
    assert failed.error_code and failed.error_message
    assert all(r.record_id == r.key for r in results)


def test_upsert_creates_then_updates(harness: Harness) -> None:
    connector = harness.connect()
    key_field, value_field = harness.scorecard_fields
    create_and_grant(connector, [harness.scorecard], list(harness.scorecard_fields))
    first = connector.upsert(
        harness.scorecard.name,
        key_field.name,
        {"alice-2026-Q3": {value_field.name: 25}, "bruno-2026-Q3": {value_field.name: 10}},
    )
    assert [(r.key, r.success, r.created) for r in first] == [
        ("alice-2026-Q3", True, True),
        ("bruno-2026-Q3", True, True),
    ]
    assert all(r.record_id for r in first)
    second = connector.upsert(
        harness.scorecard.name,
        key_field.name,
        {"alice-2026-Q3": {value_field.name: 26}, "chloe-2026-Q3": {value_field.name: 0}},
    )
    assert [(r.key, r.success, r.created) for r in second] == [
        ("alice-2026-Q3", True, False),
        ("chloe-2026-Q3", True, True),
    ]
    assert second[0].record_id == first[0].record_id


def test_the_registry_names_the_crms_it_knows() -> None:
    class Other:
        type = "pipedrive"

    with pytest.raises(ValueError, match="no connector for CRM type 'pipedrive' yet"):
        build_connector(Other(), load_config(DEMO_CONFIG).currency)


def test_describe_fields_names_the_deal_fields_and_the_stage_values(harness: Harness) -> None:
    connector = harness.connect()
    fields = connector.describe_fields(harness.deal_object)
    assert fields is not None
    salesforce = harness.deal_object == "Opportunity"
    amount, stage = ("Amount", "StageName") if salesforce else ("amount", "dealstage")
    assert fields[amount].name == amount and fields[amount].values is None
    # Picklist values (Salesforce), the pipelines' stage ids (HubSpot): "Legacy" included.
    assert fields[stage].values is not None and len(fields[stage].values) == 8
    assert connector.describe_fields("No_Such_Object__c" if salesforce else "2-999") is None
