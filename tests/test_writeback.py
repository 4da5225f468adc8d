"""Write-back planning: formatting, diff against the last confirmed writes, batched execution."""

from __future__ import annotations

import datetime as dt
from typing import Any

from crm_kpi_worker.connectors.base import WriteResult
from crm_kpi_worker.sync.writeback import Desired, WriteOutcome, execute, format_value, plan


def test_values_are_formatted_for_their_field() -> None:
    assert format_value("percent", 1.25) == 125.0
    assert format_value("percent", 0.256789) == 25.68
    assert format_value("currency", 150000.004) == 150000.0
    assert format_value("count", 10.0) == 10
    assert format_value("days", 45.04) == 45.0
    assert format_value("ratio", 2.346) == 2.35
    assert format_value("date", dt.date(2026, 9, 30)) == "2026-09-30"
    when = dt.datetime(2026, 9, 30, 22, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_value("datetime", when) == "2026-09-30T20:00:00.000Z"
    assert format_value("currency", None) is None
    assert format_value("ratio", float("nan")) is None


def test_plan_keeps_only_changed_fields() -> None:
    desired = [
        Desired("Opportunity", "006A", {"Slips__c": 1, "Stage_On__c": "2026-09-01"}),
        Desired("Opportunity", "006B", {"Slips__c": 0, "Stage_On__c": "2026-08-01"}),
        Desired("Opportunity", "006C", {"Slips__c": None}),
    ]
    written = {
        ("006A", "Slips__c"): 1,
        ("006A", "Stage_On__c"): "2026-08-15",
        ("006B", "Slips__c"): 0,
        ("006B", "Stage_On__c"): "2026-08-01",
    }
    result = plan(desired, written, object="Opportunity", mode="update")
    assert result.changes == {"006A": {"Stage_On__c": "2026-09-01"}, "006C": {"Slips__c": None}}
    assert result.unchanged == 1
    assert result.fields_changed == 2


def test_a_null_that_was_written_is_not_rewritten() -> None:
    desired = [Desired("User", "005A", {"Attainment__c": None})]
    result = plan(desired, {("005A", "Attainment__c"): None}, object="User", mode="update")
    assert result.changes == {} and result.unchanged == 1


class _Recorder:
    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def update(self, object: str, records: dict[str, dict[str, Any]]) -> list[WriteResult]:
        self.calls.append(("update", dict(records)))
        return [
            WriteResult(
                key,
                key,
                key not in self.failing,
                "UNABLE_TO_LOCK_ROW" if key in self.failing else None,
            )
            for key in records
        ]

    def upsert(
        self, object: str, external_id: str, records: dict[str, dict[str, Any]]
    ) -> list[WriteResult]:
        self.calls.append(("upsert", dict(records)))
        return [WriteResult(f"a00{key}", key, True, created=key.endswith("new")) for key in records]


def test_execute_batches_remembers_successes_and_reports_failures() -> None:
    desired = [Desired("Opportunity", f"006{i:03d}", {"F__c": i}) for i in range(5)]
    connector = _Recorder(failing={"006003"})
    remembered: list[tuple[str, str, Any]] = []
    outcome = execute(
        connector,  # type: ignore[arg-type]
        plan(desired, {}, object="Opportunity", mode="update"),
        batch_size=2,
        remember=remembered.extend,
    )
    assert [len(records) for _, records in connector.calls] == [2, 2, 1]
    assert outcome.records_written == 4 and outcome.fields_written == 4
    assert [f.key for f in outcome.failures] == ["006003"]
    assert ("006003", "F__c", 3) not in remembered
    assert sorted(remembered) == [(f"006{i:03d}", "F__c", i) for i in (0, 1, 2, 4)]
    assert outcome.as_report()["failures"] == [
        {"key": "006003", "code": "UNABLE_TO_LOCK_ROW", "message": None}
    ]


def test_execute_upsert_counts_created_records() -> None:
    desired = [
        Desired("KPI__c", "alice-new", {"X__c": 1}),
        Desired("KPI__c", "bob-old", {"X__c": 2}),
    ]
    connector = _Recorder(failing=set())
    outcome = execute(
        connector,  # type: ignore[arg-type]
        plan(desired, {}, object="KPI__c", mode="upsert", external_id="Key__c"),
        batch_size=200,
        remember=lambda _: None,
    )
    assert connector.calls[0][0] == "upsert"
    assert outcome.created == 1 and outcome.records_written == 2


def test_every_failure_is_kept_through_merges() -> None:
    desired = [Desired("Opportunity", f"006{i:04d}", {"F__c": i}) for i in range(250)]
    connector = _Recorder(failing={d.key for d in desired})
    outcome = WriteOutcome("Opportunity")
    for chunk in (desired[:130], desired[130:]):  # two chunks, as the pipeline merges them
        outcome.merge(
            execute(
                connector,  # type: ignore[arg-type]
                plan(chunk, {}, object="Opportunity", mode="update"),
                batch_size=50,
                remember=lambda _: None,
            )
        )
    report = outcome.as_report()
    assert report["failed"] == 250
    assert [f["key"] for f in report["failures"]] == [d.key for d in desired]
