"""Change Data Capture in the sandbox org: every committed create, update, delete or undelete
of a record of an entity selected for change notifications (``cdc_channels.py``) appends a
change event to the org's event bus, :class:`ChangeEventLog`.

``SandboxOrg.write`` and ``SandboxOrg.delete`` are the only places records change, so every
route (REST sObject rows, sObject Collections, Bulk API 2.0 ingest, logins as other users)
produces the same events. An event is Salesforce's change event: a ``ChangeEventHeader``
(entity, record ids, change type, origin, transaction key and sequence, commit time, number
and user, the changed/nulled/diff field names) and the record's field values by Salesforce's
body rules: a create carries every non-null field, an update only the fields it changed (the
audit fields LastModifiedDate and LastModifiedById included), a delete none.

Events of one API call form one transaction (the app opens it per request): they share a
``transactionKey``, number 1, 2, ... in ``sequenceNumber``, and are published when the request
ends; an sObject Collections ``allOrNone`` batch that rolls back discards them, as a rolled
back transaction publishes nothing. Events are kept 72 hours by the org's clock (Salesforce's
retention); positions (replay ids) only grow.

The Avro encoding and the bitmap form of the field lists are the Pub/Sub API's business
(``change_event_schema.py``); here field lists are names.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox.salesforce.store import (
    DateColumn,
    DateTimeColumn,
    FieldDef,
    Table,
)

__all__ = [
    "RETENTION_MS",
    "ChangeEvent",
    "ChangeEventLog",
    "event_fields",
    "record_values",
]

#: Salesforce keeps change events 72 hours.
RETENTION_MS = 72 * 3600 * 1000
_DAY_MS = 86_400_000
#: Fields a change event never carries: the Id travels in recordIds; IsDeleted and
#: SystemModstamp are not in change events (Change Data Capture Developer Guide, "Change
#: Event Body Fields").
_NOT_IN_EVENTS = frozenset({"id", "isdeleted", "systemmodstamp"})


def event_fields(table: Table) -> list[FieldDef]:
    """The fields of an entity's change event, in the entity's field order: stored fields
    only (no formulas, no compound parents such as an address)."""
    return [
        d
        for name, d in table.sobject.fields.items()
        if name not in _NOT_IN_EVENTS
        and not d.calculated
        and d.type not in {"address", "location"}
        and name in table.columns
    ]


#: The fields every update sets besides the written ones (``SystemModstamp`` is not in events).
UPDATE_STAMPS = frozenset({"lastmodifieddate", "lastmodifiedbyid"})


def record_values(table: Table, row: int, only: frozenset[str] | None = None) -> dict[str, Any]:
    """A record's change-event values by field name: dates and datetimes as epoch
    milliseconds (as the Pub/Sub API sends them), null as None; ``only``: just these fields
    (lower-case names), e.g. those an update writes."""
    rows = np.array([row])
    values: dict[str, Any] = {}
    for definition in event_fields(table):
        if only is not None and definition.name.lower() not in only:
            continue
        column = table.columns[definition.name.lower()]
        if isinstance(column, DateColumn | DateTimeColumn):  # the stored number, not text
            raw = column.data[row]
            scale = _DAY_MS if isinstance(column, DateColumn) else 1
            value = None if raw == column.null_value else int(raw) * scale
        else:
            value = column.to_json(rows)[0]
        values[definition.name] = value
    return values


@dataclass(frozen=True)
class ChangeEvent:
    """One change event on the bus; ``position`` orders the bus (the replay id's content)."""

    position: int
    event_uuid: str
    entity: str
    header: dict[str, Any]  # the ChangeEventHeader, field lists as names
    values: dict[str, Any]  # the body's non-null fields (the others are null)

    @property
    def commit_ms(self) -> int:
        return int(self.header["commitTimestamp"])

    @property
    def replay_id(self) -> bytes:
        return encode_replay_id(self.position)

    def value_of(self, name: str) -> Any:
        """A header field (``ChangeEventHeader.x``) or a body field, by name (any case)."""
        head, dot, rest = name.partition(".")
        if dot and head.lower() == "changeeventheader":
            return next((v for k, v in self.header.items() if k.lower() == rest.lower()), None)
        return next((v for k, v in self.values.items() if k.lower() == name.lower()), None)


def encode_replay_id(position: int) -> bytes:
    """Replay ids are opaque to clients; here 8 big-endian bytes of the bus position."""
    return position.to_bytes(8, "big")


def decode_replay_id(replay_id: bytes) -> int | None:
    """The position in a replay id, or None when it is not one the sandbox issued."""
    if len(replay_id) != 8:
        return None
    return int.from_bytes(replay_id, "big")


@dataclass
class _Transaction:
    key: str
    origin: str
    pending: list[ChangeEvent] = field(default_factory=list)


class ChangeEventLog:
    """The org's change event bus: appended by writes, read by Pub/Sub subscriptions.

    ``condition`` guards the bus and wakes subscriptions when events are published (the Pub/Sub
    server also waits on it for clients' flow-control requests)."""

    def __init__(self, now_ms: Callable[[], int], selected: Callable[[str], bool]) -> None:
        self.now_ms = now_ms
        self._selected = selected
        self.condition = threading.Condition()
        self._events: deque[ChangeEvent] = deque()
        self._next_position = 1
        self._commit_number = 0
        self._local = threading.local()

    # ---- writes -----------------------------------------------------------------------------

    def selected(self, entity: str) -> bool:
        """Whether changes of ``entity`` (e.g. ``Opportunity``) produce change events."""
        return self._selected(entity)

    @contextlib.contextmanager
    def transaction(self, origin: str) -> Iterator[None]:
        """Within the block, events are one transaction, published at its end; ``origin`` is
        the header's changeOrigin (e.g. ``com/salesforce/api/rest/62.0``)."""
        if getattr(self._local, "transaction", None) is not None:
            yield  # nested: the outer transaction publishes
            return
        self._local.transaction = _Transaction(str(uuid.uuid4()), origin)
        try:
            yield
        finally:
            current: _Transaction = self._local.transaction
            self._local.transaction = None
            self._publish(current.pending)

    def discard_transaction(self) -> None:
        """Drop the events of the current transaction: its writes were rolled back."""
        current = getattr(self._local, "transaction", None)
        if current is not None:
            current.pending.clear()

    def record_write(
        self,
        table: Table,
        row: int,
        before: dict[str, Any] | None,
        *,
        user_id: str,
        change_type: str,
        only: frozenset[str] | None = None,
    ) -> None:
        """A committed write of ``row``: ``before`` its values before an update (None for a
        create or an undelete), of the fields ``only`` names when given (an update's)."""
        after = record_values(table, row, only)
        if change_type == "UPDATE":
            assert before is not None
            changed = [name for name, value in after.items() if before.get(name) != value]
            body = {name: after[name] for name in changed if after[name] is not None}
            nulled = [name for name in changed if after[name] is None]
        else:
            changed, nulled = [], []
            body = {name: value for name, value in after.items() if value is not None}
        self._append(table.name, table.id_of(row), change_type, user_id, body, changed, nulled)

    def record_delete(self, table: Table, record_id: str, *, user_id: str) -> None:
        self._append(table.name, record_id, "DELETE", user_id, {}, [], [])

    def _append(
        self,
        entity: str,
        record_id: str,
        change_type: str,
        user_id: str,
        body: dict[str, Any],
        changed: list[str],
        nulled: list[str],
    ) -> None:
        transaction: _Transaction | None = getattr(self._local, "transaction", None)
        alone = transaction is None
        if transaction is None:
            transaction = _Transaction(str(uuid.uuid4()), "")
        header = {
            "entityName": entity,
            "recordIds": [record_id],
            "changeType": change_type,
            "changeOrigin": transaction.origin,
            "transactionKey": transaction.key,
            "sequenceNumber": len(transaction.pending) + 1,
            "commitTimestamp": 0,  # set when the transaction commits
            "commitNumber": 0,
            "commitUser": user_id,
            "nulledFields": nulled,
            "diffFields": [],
            "changedFields": changed,
        }
        event = ChangeEvent(0, str(uuid.uuid4()), entity, header, body)
        transaction.pending.append(event)
        if alone:
            self._publish(transaction.pending)

    def _publish(self, pending: list[ChangeEvent]) -> None:
        if not pending:
            return
        with self.condition:
            self._commit_number += 1
            commit_ms = self.now_ms()
            for event in pending:
                header = {
                    **event.header,
                    "commitTimestamp": commit_ms,
                    "commitNumber": self._commit_number,
                }
                self._events.append(
                    ChangeEvent(
                        self._next_position, event.event_uuid, event.entity, header, event.values
                    )
                )
                self._next_position += 1
            self.condition.notify_all()

    # ---- reads (hold ``condition``) -----------------------------------------------------------

    def _expire(self) -> None:
        horizon = self.now_ms() - RETENTION_MS
        while self._events and self._events[0].commit_ms < horizon:
            self._events.popleft()

    @property
    def latest_position(self) -> int:
        """The position of the newest event ever published (0: none yet)."""
        return self._next_position - 1

    def earliest_retained(self) -> int:
        """The position of the oldest event still kept (latest + 1 when none is)."""
        self._expire()
        return self._events[0].position if self._events else self._next_position

    def replayable(self, position: int) -> bool:
        """Whether a subscription can resume after ``position``: the event there was issued
        and is still retained (an expired one is refused, as Salesforce refuses a replay id
        outside the retention window)."""
        return self.earliest_retained() <= position <= self.latest_position

    def events_after(self, position: int, limit: int) -> list[ChangeEvent]:
        """Up to ``limit`` retained events after ``position``, oldest first."""
        self._expire()
        if not self._events or limit <= 0:
            return []
        start = max(0, position + 1 - self._events[0].position)
        return [self._events[i] for i in range(start, min(len(self._events), start + limit))]

    def all_events(self) -> list[ChangeEvent]:
        """Every retained event (tests)."""
        with self.condition:
            self._expire()
            return list(self._events)
