"""Others' changes to opportunities, from Change Data Capture over the Pub/Sub API.

The worker writes its KPI fields onto opportunities, which moves their ``SystemModstamp``: an
incremental pull by stamp alone would read again, on the next run, every opportunity the
worker wrote. With change events configured (:class:`~crm_kpi_worker.connectors.salesforce.
config.SalesforceChangeEvents`) an incremental pull of the deals is two reads instead:

1. SOQL for the opportunities modified since the cursor whose last modifier is not the worker
   (``LastModifiedById != me``): whatever others changed after the worker's last write;
2. by Id, the opportunities named by change events someone else committed after the stored
   replay position that the first read did not return: others' changes the worker then wrote over
   (their last modifier is the worker now). The events come from a custom channel filtered on
   ``ChangeEventHeader.commitUser != me``, so the worker's own writes are never delivered.

No change is missed: a change someone else makes is either the record's last (read 1) or was
followed by the worker's write, and then its event is read (2). The replay position is kept
in the deals stream's cursor and moves only past events whose records were saved; events that
arrive late are read on the next run. When the events cannot be read completely (the feed
refuses or is unreachable, the stored replay position is past the 72-hour retention, an
overflow event names no records) :meth:`ChangeFeed.read` says so and the pull reads every
modified opportunity, as without change events, once.

This module is the Pub/Sub side: a subscription read until it stays quiet for
``idle_seconds``, the events decoded with their Avro schema (``GetSchema``, cached by id).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import fastavro
import grpc

from crm_kpi_worker.connectors.salesforce.pubsub_wire import MAX_NUM_REQUESTED, load_pubsub_wire
from crm_kpi_worker.connectors.stamps import to_ms

__all__ = ["ChangeBatch", "ChangeFeed", "FeedSession"]

#: Events asked for in one FetchRequest (the most the Pub/Sub API takes).
BATCH = MAX_NUM_REQUESTED

#: Pub/Sub error codes (the ``error-code`` trailer) meaning the stored replay id is no longer
#: in the event bus (older than the retention window) or is not one of this topic's.
REPLAY_LOST_CODES = frozenset(
    {
        "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed",
        "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted",
    }
)

#: Change types whose event names records whose current state must be read again (a gap
#: event says a change happened without its fields: the record is read all the same).
_RECORD_CHANGES = frozenset(
    {
        "CREATE",
        "UPDATE",
        "DELETE",
        "UNDELETE",
        "GAP_CREATE",
        "GAP_UPDATE",
        "GAP_DELETE",
        "GAP_UNDELETE",
    }
)


@dataclass(frozen=True)
class FeedSession:
    """What a subscription authenticates with: the REST session's token and the org."""

    access_token: str
    instance_url: str
    org_id: str

    def __repr__(self) -> str:  # the token never appears
        return f"FeedSession(instance_url={self.instance_url!r}, org_id={self.org_id!r})"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            ("accesstoken", self.access_token),
            ("instanceurl", self.instance_url),
            ("tenantid", self.org_id),
        )


@dataclass
class ChangeBatch:
    """What a read of the feed found.

    ``complete`` is False when the events since the stored position could not all be read
    (the pull must then read every modified record); ``reason`` says why. ``changed``: the
    opportunities others changed (at or after ``not_before``, when given), each with when its
    latest change was made (epoch ms; see ``_take``); ``replay`` is the position after the
    last event read (None: no event yet, keep the one stored)."""

    complete: bool
    changed: dict[str, int] = field(default_factory=dict)
    replay: bytes | None = None
    events: int = 0
    reason: str | None = None


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode | None, error_code: str | None, detail: str):
        super().__init__(detail)
        self.code = code
        self.error_code = error_code
        self.detail = detail


class ChangeFeed:
    """One Pub/Sub topic read from a replay position until it stays quiet."""

    def __init__(
        self,
        endpoint: str,
        topic: str,
        entity: str,
        session: FeedSession,
        *,
        ca_bundle: str | None = None,
        idle_seconds: float = 1.0,
        timeout: float = 120.0,
    ) -> None:
        self.endpoint = endpoint
        self.topic = topic
        self.entity = entity
        self.session = session
        self.idle_seconds = idle_seconds
        self.timeout = timeout
        self._ca_bundle = ca_bundle
        self._schemas: dict[str, Any] = {}

    def read(self, replay: bytes | None, not_before: dt.datetime | None) -> ChangeBatch:
        """The records others changed at or after ``not_before`` (None: any time), from the
        events after ``replay`` (None: the earliest retained)."""
        try:
            with self._channel() as channel:
                try:
                    return self._read(channel, replay, not_before)
                except _Refused as refused:
                    if replay is None or refused.error_code not in REPLAY_LOST_CODES:
                        raise
                    batch = self._read(channel, None, not_before)
                    batch.complete = False
                    batch.reason = (
                        "the stored replay position is no longer retained by the event bus"
                        f" ({refused.error_code})"
                    )
                    return batch
        except _Refused as refused:
            return ChangeBatch(complete=False, reason=refused.detail)

    # ---- one subscription ----------------------------------------------------------------

    def _channel(self) -> grpc.Channel:
        root = None
        if self._ca_bundle is not None:
            with open(self._ca_bundle, "rb") as pem:
                root = pem.read()
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.secure_channel(self.endpoint, credentials)

    def _read(
        self, channel: grpc.Channel, replay: bytes | None, not_before: dt.datetime | None
    ) -> ChangeBatch:
        pubsub = load_pubsub_wire()
        wire, stub = pubsub.messages, pubsub.stub_class(channel)
        requests: queue.Queue[Any] = queue.Queue()
        preset = wire.ReplayPreset.Value("CUSTOM" if replay is not None else "EARLIEST")
        requests.put(
            wire.FetchRequest(
                topic_name=self.topic,
                replay_preset=preset,
                replay_id=replay or b"",
                num_requested=BATCH,
            )
        )
        call = stub.Subscribe(_until_none(requests), metadata=self.session.metadata())
        answers: queue.Queue[Any] = queue.Queue()
        reader = threading.Thread(
            target=_drain, args=(call, answers), name="change-feed", daemon=True
        )
        reader.start()
        batch = ChangeBatch(complete=True, replay=replay)
        cutoff = to_ms(not_before) if not_before is not None else None
        quiet_since = time.monotonic()
        try:
            while True:
                wait = self.idle_seconds - (time.monotonic() - quiet_since)
                try:
                    answer = answers.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    return batch  # quiet: everything stored so far was delivered
                if isinstance(answer, _Refused):
                    raise answer
                if answer is None or not answer.events:
                    # The stream ended, or a keepalive: nothing more is pending. A keepalive's
                    # position is past the events the channel's filter held back.
                    if answer is not None and answer.latest_replay_id:
                        batch.replay = bytes(answer.latest_replay_id)
                    return batch
                quiet_since = time.monotonic()
                for event in answer.events:
                    try:
                        self._take(stub, event, cutoff, batch)
                    except _Refused as unreadable:
                        if unreadable.code is not None:  # GetSchema refused: nothing is past
                            raise
                        # Past it, as past an overflow: this run reads every modified record.
                        batch.replay = bytes(event.replay_id)
                        batch.complete, batch.reason = False, unreadable.detail
                    if not batch.complete:
                        return batch
                if answer.latest_replay_id:  # every event of this answer is taken
                    batch.replay = bytes(answer.latest_replay_id)
                if answer.pending_num_requested == 0:
                    requests.put(wire.FetchRequest(topic_name=self.topic, num_requested=BATCH))
        finally:
            requests.put(None)
            call.cancel()
            reader.join(timeout=5)

    def _take(self, stub: Any, event: Any, cutoff: int | None, batch: ChangeBatch) -> None:
        values = self._decode(stub, event.event.schema_id, event.event.payload)
        header = values.get("ChangeEventHeader") or {}
        batch.events += 1
        change = str(header.get("changeType") or "")
        ids = [str(i) for i in header.get("recordIds") or ()]
        # Past this event either way: an overflow means this run reads every modified record,
        # which covers it, so the next run does not stop on it again.
        batch.replay = bytes(event.replay_id)
        if change.startswith("GAP_OVERFLOW") or any(i.endswith("*") for i in ids):
            batch.complete = False
            batch.reason = f"a {change or 'wildcard'} event names no records one by one"
            return
        if header.get("entityName") != self.entity or change not in _RECORD_CHANGES:
            return
        stamp = header.get("commitTimestamp")
        committed = stamp if isinstance(stamp, int) else 2**62  # unknown: the latest
        if cutoff is not None and committed < cutoff:
            return  # before the window: the pull read the record after this change
        # When the change was made: the stamp it gave the record (an update's or a create's
        # LastModifiedDate; a record read with a SystemModstamp at least that holds it), else
        # the commit, later than the record's stamp (so the record is read again).
        modified = values.get("LastModifiedDate")
        made = modified if isinstance(modified, int) else committed
        for record_id in ids:
            batch.changed[record_id] = max(made, batch.changed.get(record_id, 0))

    def _decode(self, stub: Any, schema_id: str, payload: bytes) -> Mapping[str, Any]:
        schema = self._schemas.get(schema_id)
        if schema is None:
            try:
                info = stub.GetSchema(
                    load_pubsub_wire().messages.SchemaRequest(schema_id=schema_id),
                    metadata=self.session.metadata(),
                    timeout=self.timeout,
                )
            except grpc.RpcError as error:
                raise _refused(error) from None
            try:
                schema = fastavro.parse_schema(json.loads(info.schema_json))
            except Exception as error:  # any bad schema is said, never raised
                raise _unreadable(f"the schema {schema_id}", error) from None
            self._schemas[schema_id] = schema
        try:
            record = fastavro.schemaless_reader(io.BytesIO(payload), schema, None)
        except Exception as error:  # any bad payload is said, never raised
            raise _unreadable(f"an event of schema {schema_id}", error) from None
        return record if isinstance(record, dict) else {}


def _until_none(requests: queue.Queue[Any]) -> Iterator[Any]:
    """The subscription's request stream: what is put on ``requests``, until None."""
    while True:
        request = requests.get()
        if request is None:
            return
        yield request


def _drain(call: Any, answers: queue.Queue[Any]) -> None:
    """Hands the subscription's answers over, then None (ended) or the refusal."""
    try:
        for answer in call:
            answers.put(answer)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.CANCELLED:
            answers.put(_refused(error))
            return
    answers.put(None)


def _refused(error: grpc.RpcError) -> _Refused:
    code = error.code() if hasattr(error, "code") else None
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    error_code = None
    for key, value in trailers or ():
        if key == "error-code":
            error_code = value if isinstance(value, str) else value.decode()
    details = error.details() if hasattr(error, "details") else str(error)
    name = code.name if code is not None else "UNKNOWN"
    text = f"Pub/Sub API {name}: {details}"
    if error_code:
        text += f" ({error_code})"
    if code == grpc.StatusCode.NOT_FOUND:
        text += "; `crm-kpi setup` creates the channel"
    return _Refused(code, error_code, text)


def _unreadable(what: str, error: Exception) -> _Refused:
    """An answer of the feed that cannot be decoded: the run reads every modified record."""
    return _Refused(None, None, f"{what} could not be decoded ({type(error).__name__}: {error})")
