"""Bulk CSV rows made into REST-shaped records, the child spool, the stored Bulk position, the
CSV cells of ingest, and the Bulk queries the connector builds (no subquery, no ORDER BY)."""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal
from typing import Any

import pytest

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.salesforce.bulk import parse_csv
from crm_kpi_worker.connectors.salesforce.bulk_pull import BulkPosition, since_of
from crm_kpi_worker.connectors.salesforce.bulk_records import (
    Children,
    ChildSpool,
    RecordMaker,
    child_records,
)
from crm_kpi_worker.connectors.salesforce.bulk_write import _error, csv_value
from crm_kpi_worker.connectors.salesforce.config import SalesforceSource
from crm_kpi_worker.connectors.salesforce.resources import OrgFacts, StreamQueries
from crm_kpi_worker.connectors.salesforce.settings import SalesforceSettings
from crm_kpi_worker.sync.config_loader import load_config

DESCRIBE: dict[str, list[dict[str, Any]]] = {
    "Opportunity": [
        {"name": "Id", "type": "id"},
        {"name": "Amount", "type": "currency"},
        {"name": "IsDeleted", "type": "boolean"},
        {"name": "Probability", "type": "percent"},
        {"name": "CloseDate", "type": "date"},
        {
            "name": "AccountId",
            "type": "reference",
            "relationshipName": "Account",
            "referenceTo": ["Account"],
        },
    ],
    "Account": [{"name": "Churn_Date__c", "type": "date"}, {"name": "Score__c", "type": "int"}],
}


def describe(sobject: str) -> list[dict[str, Any]] | None:
    return DESCRIBE.get(sobject)


def test_csv_values_become_the_json_types_rest_answers() -> None:
    header, rows = parse_csv(
        b'"Id","Amount","IsDeleted","Probability","CloseDate"\n'
        b'"006A","1200.5","false","25","2026-03-31"\n'
        b'"006B","","true","","",\n'
    )
    records = RecordMaker("Opportunity", header, describe).records(rows)
    assert records[0] == {
        "Id": "006A",
        "Amount": 1200.5,
        "IsDeleted": False,
        "Probability": 25.0,
        "CloseDate": "2026-03-31",
    }
    assert records[1]["Amount"] is None and records[1]["IsDeleted"] is True
    assert records[1]["CloseDate"] is None


def test_dotted_columns_nest_and_an_empty_relationship_is_null() -> None:
    header = ["Id", "Account.Churn_Date__c", "Account.Score__c"]
    maker = RecordMaker("Opportunity", header, describe)
    records = maker.records([["006A", "2026-01-15", "7"], ["006B", "", ""]])
    assert records[0]["Account"] == {"Churn_Date__c": "2026-01-15", "Score__c": 7}
    assert records[1]["Account"] is None


def test_a_value_of_the_wrong_shape_is_left_as_text_for_the_normalizer_to_report() -> None:
    records = RecordMaker("Opportunity", ["Id", "Amount"], describe).records([["006A", "lots"]])
    assert records[0]["Amount"] == "lots"


def test_the_spool_joins_children_by_parent_in_date_order_and_deletes_its_file() -> None:
    spool = ChildSpool()
    path = spool.path
    stages = ["OpportunityId", "StageName", "CreatedDate"]
    rows = [
        ["006A", "Closed Won", "2026-02-01T00:00:00.000Z"],
        ["006B", "Qualification", "2026-01-02T00:00:00.000Z"],
        ["006A", "Prospecting", "2026-01-01T00:00:00.000Z"],
    ]
    assert spool.add("OpportunityHistories", stages, rows[:2]) == 2
    assert spool.add("OpportunityHistories", stages, rows[2:]) == 1
    fields = ["OpportunityId", "Field", "OldValue", "NewValue", "CreatedDate"]
    history = [["006B", "CloseDate", "2026-03-01", "", "2026-01-05T00:00:00.000Z"]]
    assert spool.add("Histories", fields, history) == 1
    assert spool.fields("OpportunityHistories") == ["CreatedDate", "StageName"]  # date first
    assert spool.fields("Histories") == ["CreatedDate", "Field", "OldValue", "NewValue"]
    found = spool.children(["006A", "006B", "006C"])
    assert {parent: {k: v.rows for k, v in mine.items()} for parent, mine in found.items()} == {
        "006A": {
            "OpportunityHistories": [
                ["2026-01-01T00:00:00.000Z", "Prospecting"],
                ["2026-02-01T00:00:00.000Z", "Closed Won"],
            ]
        },
        "006B": {
            "OpportunityHistories": [["2026-01-02T00:00:00.000Z", "Qualification"]],
            "Histories": [["2026-01-05T00:00:00.000Z", "CloseDate", "2026-03-01", ""]],
        },
    }
    assert json.loads(found["006A"]["OpportunityHistories"].text) == [
        ["2026-01-01T00:00:00.000Z", "Prospecting"],
        ["2026-02-01T00:00:00.000Z", "Closed Won"],
    ]
    with pytest.raises(RuntimeError, match="already joined"):
        spool.add("Histories", fields, history)
    spool.close()
    assert not os.path.exists(path)


def test_child_rows_become_a_rest_subquery_result() -> None:
    names = ["Field", "OldValue", "NewValue", "CreatedDate"]
    text = [lambda v: v] * 4
    rows = [["CloseDate", "2026-03-01", "", "2026-01-05T00:00:00.000Z"]]
    assert child_records(rows, names, text) == {
        "totalSize": 1,
        "done": True,
        "records": [
            {
                "Field": "CloseDate",
                "OldValue": "2026-03-01",
                "NewValue": None,
                "CreatedDate": "2026-01-05T00:00:00.000Z",
            }
        ],
    }
    assert child_records([], names, text) is None


def test_a_bulk_digest_leaves_out_the_stamps_and_own_fields_and_sees_children() -> None:
    header = ["Id", "Amount", "SystemModstamp", "KPI__c"]
    maker = RecordMaker("Opportunity", header, describe)
    row = ["006A", "10", "2026-01-01T00:00:00.000Z", "3"]

    def history(*rows: list[str]) -> dict[str, dict[str, Children]]:
        return {"006A": {"OpportunityHistories": Children(list(rows), json.dumps(list(rows)))}}

    def digest(cells: list[str], children: Any) -> str:
        return maker.digests(["006A"], [cells], children, {"SystemModstamp", "kpi__c"})[0][1]

    stage = ["2026-01-01T00:00:00.000Z", "Prospecting"]
    same = digest(row, history(stage))
    assert digest(["006A", "10", "2026-02-01T00:00:00.000Z", "4"], history(stage)) == same
    assert digest(["006A", "11", "2026-01-01T00:00:00.000Z", "3"], history(stage)) != same
    assert digest(row, {}) != same
    assert digest(row, history(["2026-01-02T00:00:00.000Z", "Prospecting"])) != same


def test_short_rows_have_nulls_and_nested_relationships_keep_their_place() -> None:
    header = ["Id", "Account.Churn_Date__c", "Amount", "Account.Score__c"]
    records = RecordMaker("Opportunity", header, describe).records(
        [["006A", "2026-01-15", "5", "7"], ["006B"]]
    )
    assert records == [
        {"Id": "006A", "Account": {"Churn_Date__c": "2026-01-15", "Score__c": 7}, "Amount": 5.0},
        {"Id": "006B", "Account": None, "Amount": None},
    ]
    assert list(records[0]) == ["Id", "Account", "Amount"]


def test_a_bulk_position_round_trips_and_reads_from_its_since() -> None:
    position = BulkPosition(
        since="2026-01-01T00:00:00.000+0000",
        started="2026-02-01T10:00:00.000+0000",
        query="abc",
        jobs={"main": "750A", "OpportunityHistories": "750B"},
        locator="MTAwMDA",
    )
    stored = position.encode()
    assert BulkPosition.decode(stored) == position
    assert since_of(stored) == "2026-01-01T00:00:00.000+0000"
    assert since_of("2026-01-01T00:00:00.000+0000") == "2026-01-01T00:00:00.000+0000"
    assert BulkPosition.decode(None) is None


def test_an_unreadable_bulk_position_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unreadable Bulk pull position"):
        BulkPosition.decode("bulk:not-base64-json")


def test_ingest_cells() -> None:
    assert csv_value(None, "X") == "#N/A"  # clears the field
    assert csv_value(True, "X") == "true"
    assert csv_value(Decimal("0.25"), "X") == "0.25"
    assert csv_value(dt.date(2026, 3, 31), "X") == "2026-03-31"
    assert csv_value(dt.datetime(2026, 3, 31, 12, tzinfo=dt.UTC), "X") == "2026-03-31T12:00:00.000Z"
    with pytest.raises(ValueError, match="not a finite number"):
        csv_value(float("nan"), "X")


def test_a_failed_result_error_is_split_into_code_and_message() -> None:
    assert _error("FIELD_CUSTOM_VALIDATION_EXCEPTION:Quota must be positive:Quota__c") == (
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "Quota must be positive",
    )
    assert _error("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record:--") == (
        "UNABLE_TO_LOCK_ROW",
        "unable to obtain exclusive access to this record",
    )


def _queries() -> StreamQueries:
    config = load_config(path_of("demo-salesforce.yaml"))
    source = config.sources[0]
    assert isinstance(source, SalesforceSource)
    facts = OrgFacts(False, None, None, convert_in_query=False)
    return StreamQueries(source.mapping, SalesforceSettings.from_source(source), facts)


def test_bulk_deal_queries_have_no_subquery_nor_order_and_children_follow_the_window() -> None:
    queries = _queries()
    bulk = queries.bulk("deals", "2026-01-01T00:10:00.000+0000")
    assert bulk is not None
    assert "ORDER BY" not in bulk.main and "(SELECT" not in bulk.main
    assert "SystemModstamp >= 2026-01-01T00:05:00Z" in bulk.main  # the lookback applies
    assert [c.relationship for c in bulk.children] == ["OpportunityHistories", "Histories"]
    for child in bulk.children:
        assert "ORDER BY" not in child.soql
        assert "Opportunity.SystemModstamp >= 2026-01-01T00:05:00Z" in child.soql
        assert child.soql.startswith(f"SELECT OpportunityId, {', '.join(child.fields)} FROM")
    full = queries.bulk("deals", None)
    assert full is not None and "WHERE" not in full.main
    assert all("Opportunity.SystemModstamp" not in c.soql for c in full.children)
    assert queries.bulk("stages", None) is None and queries.bulk("quotas", None) is None
