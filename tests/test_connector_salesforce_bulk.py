"""The Salesforce connector's Bulk API 2.0 road against the sandbox: the same records as REST,
the road chosen by the first page's totalSize, resuming a stopped pull from its position,
faults on jobs, the fallback to REST, and writes through ingest jobs with per-record failures."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import create_and_grant
from test_connector_salesforce import Waits, connect

from crm_kpi_worker.connectors.base import TargetField
from crm_kpi_worker.connectors.salesforce import SalesforceConnector
from crm_kpi_worker.connectors.salesforce.bulk import BulkJobFailed
from crm_kpi_worker.connectors.salesforce.bulk_pull import BulkPosition
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

BULK_ALWAYS = {"pull_above": 0, "write_above": 0}
REST_ONLY = {"pull_above": None, "write_above": None}


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start(seed=7) as running:
        yield running


def _bulk(sandbox: SalesforceSandbox, page_size: int = 200, **bulk: Any) -> SalesforceConnector:
    """A connector that takes the Bulk road for any pull of more than one REST page."""
    connector = connect(sandbox, page_size=page_size, bulk={**BULK_ALWAYS, **bulk})
    connector.bulk.sleep = Waits()  # polls are recorded, never slept
    return connector


def _by_id(connector: SalesforceConnector, stream: str, since: str | None = None) -> dict[str, Any]:
    return {str(r["Id"]): r for page in connector.pull(stream, since) for r in page.records}


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without REST's ``attributes`` metadata, children in date order."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, dict) and "records" in value:
            rows = [_comparable(r) for r in value["records"]]
            value = sorted(rows, key=lambda r: (str(r.get("CreatedDate")), str(r)))
        elif isinstance(value, dict):
            value = _comparable(value)
            if all(v is None for v in value.values()):
                value = None  # CSV cannot tell a null parent from a parent of null fields
        elif isinstance(value, str) and value.endswith("Z") and "T" in value:
            value = value[:-1] + "+0000"  # Bulk CSV instants end in Z, REST's in +0000
        out[key] = value
    return out


def _jobs_created(sandbox: SalesforceSandbox) -> int:
    return sandbox.stats.by_route.get("bulk_query_create", 0)


@pytest.mark.parametrize("stream", ["deals", "activities"])
def test_a_bulk_pull_gives_the_records_a_rest_pull_gives(
    sandbox: SalesforceSandbox, stream: str
) -> None:
    rest = _by_id(connect(sandbox, bulk=REST_ONLY), stream)
    assert _jobs_created(sandbox) == 0
    bulk = _by_id(_bulk(sandbox), stream)
    assert _jobs_created(sandbox) == (3 if stream == "deals" else 1)
    assert rest and bulk.keys() == rest.keys()
    for record_id, record in rest.items():
        assert _comparable(bulk[record_id]) == _comparable(record), record_id


def test_bulk_digests_hold_from_pull_to_pull_and_move_with_a_change(
    sandbox: SalesforceSandbox,
) -> None:
    def digests() -> dict[str, str]:
        return {i: d for page in _bulk(sandbox).pull("deals", None) for i, d in page.digests}

    first = digests()
    assert len(first) == len(sandbox.org.data.deals) and digests() == first
    changed = sorted(first)[0]
    connect(sandbox, bulk=REST_ONLY).client.Opportunity.update(changed, {"StageName": "Demo"})
    after = digests()
    assert {i for i in first if after[i] != first[i]} == {changed}


def test_the_road_follows_the_first_pages_total(sandbox: SalesforceSandbox) -> None:
    total = len(sandbox.org.data.deals)
    small = connect(sandbox, page_size=200, bulk={"pull_above": total})  # not above: REST
    before = sandbox.stats.api_calls
    pages = list(small.pull("deals", None))
    assert all(not p.cursor or not p.cursor.startswith("bulk:") for p in pages)
    rest_calls = sandbox.stats.api_calls - before
    assert rest_calls == len(pages) >= 3
    big = _bulk(sandbox, pull_above=total - 1, page_size=200)
    before = dict(sandbox.stats.by_route)
    records = sum(len(p.records) for p in big.pull("deals", None))
    assert records == total
    calls = {k: v - before.get(k, 0) for k, v in sandbox.stats.by_route.items()}
    calls = {k: v for k, v in calls.items() if v}
    # The one REST page that said the total, then per job (deals and two histories): its
    # creation, one poll (finished), one results page; and the describes that type the CSV.
    assert {k: v for k, v in calls.items() if k != "describe"} == {
        "query_all": 1,
        "bulk_query_create": 3,
        "bulk_query_job": 3,
        "bulk_query_results": 3,
    }
    # Opportunity, its two history objects, and Account (the churn date is read through it).
    assert calls["describe"] == 4


def test_a_stopped_bulk_pull_resumes_from_its_position_without_querying_again(
    sandbox: SalesforceSandbox,
) -> None:
    connector = _bulk(sandbox)  # pages of 5 x 200 records, results pages of 200 rows
    connector.bulk.max_records = 200  # so the position has a locator to resume from
    expected = _by_id(connect(sandbox, bulk=REST_ONLY), "deals")
    pages = connector.pull("deals", None)
    seen: dict[str, Any] = {}
    cursor = None
    for _ in range(2):  # a run stops after two pages of three (each saved with its cursor)
        page = next(pages)
        seen.update((str(r["Id"]), r) for r in page.records)
        cursor = page.cursor
    pages.close()
    position = BulkPosition.decode(cursor)
    assert position is not None and position.since is None and position.locator is not None
    created = _jobs_created(sandbox)
    again = _bulk(sandbox)
    again.bulk.max_records = 200
    last = None
    for page in again.pull("deals", cursor):
        seen.update((str(r["Id"]), r) for r in page.records)
        last = page.cursor
    assert _jobs_created(sandbox) == created == 3
    assert seen.keys() == expected.keys()
    assert last is not None and not last.startswith("bulk:")
    assert last == position.started  # the time the first job was created


def test_a_position_whose_jobs_are_gone_starts_new_jobs_from_its_since(
    sandbox: SalesforceSandbox,
) -> None:
    gone = BulkPosition(
        since="2020-01-01T00:00:00.000+0000",
        started="2020-01-01T00:00:00.000+0000",
        query="0",
        jobs={"main": "750Sb0000000999AAA"},
        locator="xyz",
    )
    records = _by_id(_bulk(sandbox), "activities", gone.encode())
    assert records.keys() == _by_id(connect(sandbox, bulk=REST_ONLY), "activities").keys()
    assert _jobs_created(sandbox) == 1


def test_a_failed_job_stops_the_pull_with_its_message(sandbox: SalesforceSandbox) -> None:
    sandbox.faults.add(FaultRule("job_failure", path="jobs/query", message="disk on fire"))
    connector = _bulk(sandbox)
    with pytest.raises(BulkJobFailed, match="disk on fire"):
        list(connector.pull("activities", None))


def test_a_slow_job_is_polled_with_growing_pauses(sandbox: SalesforceSandbox) -> None:
    sandbox.faults.add(FaultRule("slow_job", path="jobs/query", polls=4))
    connector = _bulk(sandbox)
    records = _by_id(connector, "activities")
    assert len(records) == len(_by_id(connect(sandbox, bulk=REST_ONLY), "activities"))
    waits = connector.bulk.sleep
    assert isinstance(waits, Waits) and waits[:4] == [0.5, 1.0, 2.0, 3.0]


def test_a_results_page_cut_midway_is_read_again(sandbox: SalesforceSandbox) -> None:
    cut = FaultRule("cut_download", path="results", cut_after=300, times=2)
    sandbox.faults.add(cut)
    connector = _bulk(sandbox)
    records = _by_id(connector, "activities")
    assert records.keys() == _by_id(connect(sandbox, bulk=REST_ONLY), "activities").keys()
    assert cut.fired == 2


def test_an_org_without_bulk_is_pulled_by_rest_with_one_warning(
    sandbox: SalesforceSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.faults.add(FaultRule("server_error", path="jobs/", status=403, times=None))
    caplog.set_level(logging.WARNING)
    connector = _bulk(sandbox)
    pulled = _by_id(connector, "activities")
    assert pulled.keys() == _by_id(connect(sandbox, bulk=REST_ONLY), "activities").keys()
    assert _by_id(connector, "deals")
    warnings = [r for r in caplog.records if "Bulk API 2.0 refused" in r.getMessage()]
    assert len(warnings) == 1


# ---- writes ----------------------------------------------------------------------------------

FIELD = TargetField("Opportunity", "KPI_Bulk_Test__c", "number", "Bulk test")


def test_writes_above_the_threshold_go_through_one_ingest_job(sandbox: SalesforceSandbox) -> None:
    connector = _bulk(sandbox, write_above=10)
    create_and_grant(connector, [], [FIELD])
    ids = sorted(_by_id(connect(sandbox, bulk=REST_ONLY), "deals"))[:50]
    assert connector.write_batch_size(len(ids), 200) == len(ids)
    assert connector.write_batch_size(10, 200) == 200
    before = dict(sandbox.stats.by_route)
    results = connector.update("Opportunity", {i: {FIELD.name: n} for n, i in enumerate(ids)})
    assert [r.key for r in results] == ids and all(r.success for r in results)
    routes = {k: v - before.get(k, 0) for k, v in sandbox.stats.by_route.items()}
    # create, upload, close, one poll, and the three result sets: whatever the batch's size.
    assert {k: v for k, v in routes.items() if v} == {
        "bulk_ingest_create": 1,
        "bulk_ingest_upload": 1,
        "bulk_ingest_state": 1,
        "bulk_ingest_job": 1,
        "bulk_ingest_successful_results": 1,
        "bulk_ingest_failed_results": 1,
        "bulk_ingest_unprocessed_records": 1,
    }
    # What a dry run says the write would cost is what it cost; below the threshold,
    # one Collections call per batch.
    assert connector.write_calls(len(ids), 200) == sum(routes.values())
    assert connector.write_calls(10, 4) == 3 and connector.write_calls(0, 200) == 0
    values = {
        record_id: fields[FIELD.name]
        for page in connector.read_back("Opportunity", [FIELD.name])
        for record_id, fields in page.items()
    }
    assert [values[i] for i in ids] == [float(n) for n in range(50)]


def test_records_an_ingest_job_refuses_are_failed_results(sandbox: SalesforceSandbox) -> None:
    connector = _bulk(sandbox, write_above=1)
    create_and_grant(connector, [], [FIELD])
    ids = sorted(_by_id(connect(sandbox, bulk=REST_ONLY), "deals"))[:5]
    sandbox.faults.add(FaultRule("write_failure", record_ids=(ids[1], ids[3]), times=None))
    results = connector.update("Opportunity", {i: {FIELD.name: 1} for i in ids})
    assert [r.success for r in results] == [True, False, True, False, True]
    failed = [r for r in results if not r.success]
    assert all(r.error_code and r.error_message for r in failed)
    assert [r.key for r in failed] == [ids[1], ids[3]]
