"""The write phase of one CRM object: its write plans sent chunk by chunk, what the CRM confirmed
remembered after each batch, and every planned record saved with its outcome.

Three things overlap, each on its own thread: the next chunk is diffed against the write memory
(``prefetched``), this chunk is sent (mostly waiting for the CRM), and the previous chunk's
planned records are saved (:meth:`PlannedWrites.save_planned`, the ``--output`` listing). What
the CRM confirmed is remembered before the next chunk is sent, so a run killed midway re-sends at
most the chunk in flight.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any, Protocol

from crm_kpi_worker.connectors.base import Connector
from crm_kpi_worker.sync.prefetch import prefetched
from crm_kpi_worker.sync.progress import WRITE, RunProgress
from crm_kpi_worker.sync.store import PlannedRecord, Store
from crm_kpi_worker.sync.writeback import Desired, WriteOutcome, WritePlan, execute

__all__ = ["ObjectWriter", "PlannedSummary"]

#: Records of a plan shown in the run report's sample.
SAMPLE = 5


class Guard(Protocol):
    """The run's guard, as the write phase asks it (``pipeline.RunGuard``)."""

    @property
    def run_id(self) -> int: ...

    def should_stop(self) -> bool: ...


@dataclass
class PlannedSummary:
    """The run report's ``planned`` entry of one object."""

    object: str
    records_to_write: int = 0
    fields_to_write: int = 0
    unchanged_records: int = 0
    sample: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, write_plan: WritePlan) -> None:
        self.records_to_write += len(write_plan.changes)
        self.fields_to_write += write_plan.fields_changed
        self.unchanged_records += write_plan.unchanged
        room = SAMPLE - len(self.sample)
        self.sample.update(islice(write_plan.changes.items(), max(room, 0)))

    def as_report(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "records_to_write": self.records_to_write,
            "fields_to_write": self.fields_to_write,
            "unchanged_records": self.unchanged_records,
            "sample": self.sample,
        }


@dataclass
class ObjectWriter:
    """Writes one object's plans (see the module doc). ``dry_run``: nothing is sent; what
    sending would cost is added up in ``calls_estimated`` (``Connector.write_calls``)."""

    store: Store
    source: str
    object: str
    connector: Connector
    guard: Guard
    say: RunProgress
    batch: int
    dry_run: bool
    expected: int | None = None  # the records compared: the progress bar's total
    calls_estimated: int = 0
    planned: PlannedSummary = field(init=False)
    outcome: WriteOutcome = field(init=False)

    def __post_init__(self) -> None:
        self.planned = PlannedSummary(self.object)
        self.outcome = WriteOutcome(self.object)

    def write(self, plans: Iterable[tuple[list[Desired], WritePlan]]) -> None:
        """Send every chunk's plan (``pipeline._plans``) until done or asked to stop."""
        saving: Future[None] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix=f"planned-{self.object}") as saver:
            try:
                chunks = prefetched(iter(plans), name=f"plan-{self.object}")
                for seq, (chunk, write_plan) in enumerate(chunks):
                    self.planned.add(write_plan)
                    confirmed, sent = self._send(write_plan)
                    if saving is not None:
                        saving.result()  # one chunk saved at a time, in order
                    # The log lines of the saving thread carry the run's context too.
                    saving = saver.submit(
                        contextvars.copy_context().run,
                        self._save_planned,
                        seq,
                        write_plan,
                        confirmed,
                        sent,
                    )
                    self.say.advance(
                        self.source,
                        WRITE + self.object,
                        len(chunk),
                        total=self.expected,
                        to_write=len(write_plan.changes),
                        written=len(confirmed),
                    )
                    if self.outcome.merge(sent):
                        break
            finally:
                if saving is not None:
                    wait([saving])  # an error of the phase itself is the one raised
        if saving is not None:
            saving.result()
        self.say.finish(self.source, WRITE + self.object)

    def _send(self, write_plan: WritePlan) -> tuple[set[str], WriteOutcome]:
        """The plan sent (the keys the CRM confirmed, the outcome), or costed on a dry run."""
        confirmed: set[str] = set()
        count = len(write_plan.changes)
        if self.dry_run:
            self.calls_estimated += self.connector.write_calls(count, self.batch)
            return confirmed, WriteOutcome(self.object)
        if not count:
            return confirmed, WriteOutcome(self.object)
        sent = execute(
            self.connector,
            write_plan,
            batch_size=self.connector.write_batch_size(count, self.batch),
            remember=partial(self._remember, confirmed),
            should_stop=self.guard.should_stop,
        )
        return confirmed, sent

    def _remember(self, confirmed: set[str], values: list[tuple[str, str, Any]]) -> None:
        """Remember what the CRM confirmed (the next run's diff), and which records it was."""
        self.store.record_written(self.source, self.object, values)
        confirmed.update(key for key, _name, _value in values)

    def _save_planned(
        self, seq: int, write_plan: WritePlan, confirmed: set[str], sent: WriteOutcome
    ) -> None:
        """Every planned record of the chunk, with its values and what became of it: written,
        failed (with the CRM's reason) or only planned (a dry run, or a stop before its batch
        was sent)."""
        failures = {failure.key: failure for failure in sent.failures}
        planned = []
        for key, values in write_plan.changes.items():
            if key in confirmed:
                planned.append(PlannedRecord(write_plan.object, key, "written", values))
            elif key in failures:
                failure = failures[key]
                code, message = failure.error_code, failure.error_message
                planned.append(
                    PlannedRecord(write_plan.object, key, "failed", values, code, message)
                )
            else:
                planned.append(PlannedRecord(write_plan.object, key, "planned", values))
        self.store.save_planned(self.guard.run_id, self.source, self.object, seq, planned)
