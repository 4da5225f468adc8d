"""Diff-only write-back: what the CRM should hold, minus what the worker last wrote there.

Values are formatted for their field first (rounded to the field's scale, ratios as
percentages for percent fields) so a value that did not really change is never rewritten, and
the next run after our own writes, which bump the records' modification stamps, writes nothing.
Per-record failures are reported and, since the store only remembers confirmed writes, retried
by the next run; they never abort the other records.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from crm_kpi_worker.connectors.base import Connector, WriteResult
from crm_kpi_worker.sync.targets import FieldKind

Mode = Literal["update", "upsert"]


def format_value(kind: FieldKind, value: Any) -> Any:
    """A KPI value as the CRM field stores it (and as the store remembers it)."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if kind == "currency" or kind == "ratio":
        return round(float(value), 2)
    if kind == "percent":
        return round(float(value) * 100, 2)
    if kind == "count":
        return int(value)
    if kind == "days":
        return round(float(value), 1)
    if kind == "date":
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    if kind == "datetime":
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return str(value)
    return str(value)


@dataclass(frozen=True)
class Desired:
    """The values one CRM record should hold in the fields the worker owns."""

    object: str
    key: str  # record id (update) or external id value (upsert)
    values: Mapping[str, Any]  # field -> formatted value


@dataclass
class WritePlan:
    """The changes for one object: only fields whose value differs from the last write."""

    object: str
    mode: Mode
    external_id: str | None
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> field -> value
    unchanged: int = 0

    @property
    def fields_changed(self) -> int:
        return sum(len(values) for values in self.changes.values())


def plan(
    desired: Iterable[Desired],
    written: Mapping[tuple[str, str], Any],
    *,
    object: str,
    mode: Mode,
    external_id: str | None = None,
    always: tuple[str, ...] = (),
) -> WritePlan:
    """Compare desired values with the last confirmed writes; keep only what differs.

    ``always``: fields sent with any change of a record, changed or not (the scorecard's
    name: an upsert may create the record, and HubSpot's scorecard object requires it)."""
    result = WritePlan(object, mode, external_id)
    for record in desired:
        changed = {
            name: value
            for name, value in record.values.items()
            if (record.key, name) not in written or written[(record.key, name)] != value
        }
        if changed:
            for name in always:
                if name in record.values:
                    changed.setdefault(name, record.values[name])
            result.changes[record.key] = changed
        else:
            result.unchanged += 1
    return result


@dataclass
class WriteOutcome:
    object: str
    records_written: int = 0
    fields_written: int = 0
    created: int = 0
    failed: int = 0
    failures: list[WriteResult] = field(default_factory=list)  # every one: the report's ids
    stopped: bool = False  # asked to stop before every batch was sent

    def fail(self, result: WriteResult) -> None:
        self.failed += 1
        self.failures.append(result)

    def merge(self, other: WriteOutcome) -> bool:
        """Add ``other``'s counts; True when it stopped early."""
        self.records_written += other.records_written
        self.fields_written += other.fields_written
        self.created += other.created
        self.failed += other.failed
        self.failures.extend(other.failures)
        self.stopped = self.stopped or other.stopped
        return other.stopped

    def as_report(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "records_written": self.records_written,
            "fields_written": self.fields_written,
            "created": self.created,
            "failed": self.failed,
            "failures": [
                {"key": f.key, "code": f.error_code, "message": f.error_message}
                for f in self.failures
            ],
        }


def _batches(items: dict[str, dict[str, Any]], size: int) -> Iterator[dict[str, dict[str, Any]]]:
    keys = list(items)
    for start in range(0, len(keys), size):
        yield {key: items[key] for key in keys[start : start + size]}


def execute(
    connector: Connector,
    write_plan: WritePlan,
    *,
    batch_size: int,
    remember: Callable[[list[tuple[str, str, Any]]], None],
    should_stop: Callable[[], bool] | None = None,
) -> WriteOutcome:
    """Send the plan in batches; ``remember`` is called after each batch with the confirmed
    (key, field, value) triples, so a run stopped midway keeps what it already wrote.
    ``should_stop`` is asked before each batch: when True, the rest is not sent
    (``outcome.stopped``)."""
    outcome = WriteOutcome(write_plan.object)
    for batch in _batches(write_plan.changes, batch_size):
        if should_stop is not None and should_stop():
            outcome.stopped = True
            break
        if write_plan.mode == "upsert":
            assert write_plan.external_id is not None
            results = connector.upsert(write_plan.object, write_plan.external_id, batch)
        else:
            results = connector.update(write_plan.object, batch)
        confirmed: list[tuple[str, str, Any]] = []
        for result in results:
            if not result.success:
                outcome.fail(result)
                continue
            values = batch.get(result.key, {})
            confirmed.extend((result.key, name, value) for name, value in values.items())
            outcome.records_written += 1
            outcome.fields_written += len(values)
            outcome.created += int(result.created)
        if confirmed:
            remember(confirmed)
    return outcome
