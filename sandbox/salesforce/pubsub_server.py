"""The sandbox's Pub/Sub API: a gRPC server (TLS, the sandbox's own CA) on its own loopback
port serving the org's change events (``change_events.py``) on the topics of its channels
(``cdc_channels.py``), as Salesforce's Pub/Sub API does.

Every call authenticates with the metadata ``accesstoken`` (a session of the REST API),
``instanceurl`` (the sandbox's URL) and ``tenantid`` (the org id); a refused call ends with a
gRPC status and the ``error-code`` trailer Salesforce documents (``ERROR_CODES``).

``Subscribe`` is pull-based: each FetchRequest adds its ``num_requested`` (1 to 100) to what
the server may send; the first one picks the topic and the start (LATEST, EARLIEST, or CUSTOM
after a stored replay id). Every FetchResponse carries ``latest_replay_id`` (the position the
subscription has read up to, filtered-out events included) and ``pending_num_requested``;
after ``keepalive_seconds`` without events the server sends an empty one (Salesforce: 270 s).

Calls are counted in the app's stats (``pubsub_calls``, ``pubsub_events_delivered``), apart
from the REST API's daily request count, which Pub/Sub does not consume. A
``pubsub_unavailable`` fault rule (path matched against ``/eventbus.v1.PubSub/<Method>``)
refuses a call with UNAVAILABLE.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from crm_kpi_worker.connectors.salesforce.pubsub_wire import MAX_NUM_REQUESTED, load_pubsub_wire
from crm_kpi_worker.sandbox.salesforce.catalog import ORG_ID
from crm_kpi_worker.sandbox.salesforce.cdc_channels import Member
from crm_kpi_worker.sandbox.salesforce.change_event_schema import EventSchema, schema_for
from crm_kpi_worker.sandbox.salesforce.change_events import (
    ChangeEvent,
    ChangeEventLog,
    decode_replay_id,
    encode_replay_id,
)

__all__ = ["DEFAULT_KEEPALIVE_SECONDS", "ERROR_CODES", "PubSubServer"]

#: Salesforce sends an empty FetchResponse within 270 seconds of no events.
DEFAULT_KEEPALIVE_SECONDS = 270.0
_PREFIX = "sfdc.platform.eventbus.grpc."
ERROR_CODES = {
    "auth": _PREFIX + "service.auth.error",
    "replay_corrupted": _PREFIX + "subscription.fetch.replayid.corrupted",
    "replay_validation": _PREFIX + "subscription.fetch.replayid.validation.failed",
    "num_requested": _PREFIX + "subscription.fetch.requested.events.invalid",
    "topic_not_found": _PREFIX + "service.topic.not.found",
    "topic_mismatch": _PREFIX + "subscription.fetch.topic.mismatch",
    "permission": _PREFIX + "service.permission.denied",
    "schema_not_found": _PREFIX + "service.schema.not.found",
    "unavailable": _PREFIX + "service.unavailable",
}


class _Refused(Exception):
    def __init__(self, status: grpc.StatusCode, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class _Subscription:
    """One Subscribe stream's state, guarded by the event bus's condition."""

    members: list[Member]
    position: int
    pending: int
    topic: str
    error: _Refused | None = None
    closed: bool = False


class PubSubServer:
    """The gRPC server; ``app`` is the sandbox's WSGI app (sessions, faults, stats, org)."""

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        key_pem: bytes,
        chain_pem: bytes,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> None:
        self.app = app
        self.keepalive_seconds = keepalive_seconds
        self.wire = load_pubsub_wire()
        self._schemas: dict[str, EventSchema] = {}
        self._schemas_lock = threading.Lock()
        self._stopping = False
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.wire.add_servicer_to_server(_Servicer(self), self._server)
        credentials = grpc.ssl_server_credentials([(key_pem, chain_pem)])
        netloc = f"[{host}]:0" if ":" in host else f"{host}:0"
        self.port = self._server.add_secure_port(netloc, credentials)
        self.endpoint = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def log(self) -> ChangeEventLog:
        return self.app.org.change_events

    def start(self) -> None:
        self._server.start()

    def wake(self) -> None:
        """Wake every waiting subscription (it checks whether it goes on)."""
        with self.log.condition:
            self.log.condition.notify_all()

    def stop(self) -> None:
        self._stopping = True
        self.wake()
        self._server.stop(grace=None).wait(timeout=10)

    # ---- what every call does first -----------------------------------------------------------

    def begin(self, context: grpc.ServicerContext, method: str) -> int:
        """Count the call, apply faults, authenticate; the session's user row."""
        path = f"/eventbus.v1.PubSub/{method}"
        with self.app._lock:
            self.app.stats.pubsub_calls += 1
            self.app.stats.pubsub_by_rpc[method] = self.app.stats.pubsub_by_rpc.get(method, 0) + 1
        if self.app.faults.draw("POST", path, ("pubsub_unavailable",)) is not None:
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE,
                ERROR_CODES["unavailable"],
                "The service is temporarily unavailable.",
            )
        metadata = {k.lower(): v for k, v in context.invocation_metadata()}
        token = metadata.get("accesstoken", "")
        tenant = metadata.get("tenantid", "")
        instance = str(metadata.get("instanceurl", "")).rstrip("/")
        with self.app._lock:
            user_row = self.app._sessions.get(token)
        if (
            user_row is None
            or tenant not in {ORG_ID, ORG_ID[:15]}
            or instance != self.app.base_url.rstrip("/")
        ):
            raise _Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                ERROR_CODES["auth"],
                "An authentication exception occurred.",
            )
        return int(user_row)

    def refuse(self, context: grpc.ServicerContext, refused: _Refused) -> None:
        rpc_id = secrets.token_hex(8)
        context.set_trailing_metadata((("error-code", refused.code), ("rpc-id", rpc_id)))
        context.abort(refused.status, f"{refused.message} rpcId: {rpc_id}")

    # ---- topics and schemas -------------------------------------------------------------------

    def members_of(self, topic: str) -> list[Member]:
        members = self.app.org.cdc_channels.topic_members(topic)
        if members is None:
            raise _Refused(
                grpc.StatusCode.NOT_FOUND,
                ERROR_CODES["topic_not_found"],
                f"The topic {topic} doesn't exist or you don't have access to it.",
            )
        return list(members)

    def can_subscribe(self, user_row: int, members: list[Member]) -> bool:
        """Change events need View All Data, or View All of the entity (Salesforce's rule);
        the sandbox's profiles grant the first or nothing."""
        access = self.app.org.access_for(user_row)
        return access is None or bool(access.view_all_data or access.modify_all_data)

    def schema_of(self, entity: str) -> EventSchema:
        table = self.app.org.table(entity)
        with self.app.org.lock:
            schema = schema_for(table)
        with self._schemas_lock:
            return self._schemas.setdefault(schema.schema_id, schema)

    def known_schema(self, schema_id: str) -> EventSchema | None:
        with self._schemas_lock:
            return self._schemas.get(schema_id)

    def consumer_event(self, event: ChangeEvent) -> Any:
        messages = self.wire.messages
        schema = self.schema_of(event.entity)
        return messages.ConsumerEvent(
            event=messages.ProducerEvent(
                id=event.event_uuid, schema_id=schema.schema_id, payload=schema.encode(event)
            ),
            replay_id=event.replay_id,
        )

    # ---- Subscribe ----------------------------------------------------------------------------

    def open(self, first: Any, user_row: int) -> _Subscription:
        """Check the first FetchRequest and place the subscription in the stream."""
        members = self.members_of(first.topic_name)
        if not self.can_subscribe(user_row, members):
            raise _Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                ERROR_CODES["permission"],
                f"You don't have access to the topic {first.topic_name}.",
            )
        pending = self.checked_num_requested(first.num_requested)
        presets = self.wire.messages.ReplayPreset
        log = self.log
        with log.condition:
            if first.replay_preset == presets.Value("EARLIEST"):
                position = log.earliest_retained() - 1
            elif first.replay_preset == presets.Value("CUSTOM"):
                if not first.replay_id:
                    raise _Refused(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        ERROR_CODES["replay_validation"],
                        "The replay_preset field in FetchRequest is set to ReplayPreset.CUSTOM,"
                        " but no Replay ID value is set.",
                    )
                stored = decode_replay_id(first.replay_id)
                if stored is None or not log.replayable(stored):
                    raise _Refused(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        ERROR_CODES["replay_corrupted"],
                        "The Replay ID validation failed. The Replay ID isn't valid or is"
                        " outside the retention window.",
                    )
                position = stored
            else:
                position = log.latest_position
        return _Subscription(members, position, pending, first.topic_name)

    @staticmethod
    def checked_num_requested(number: int) -> int:
        if not 0 < number <= MAX_NUM_REQUESTED:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                ERROR_CODES["num_requested"],
                f"num_requested must be between 1 and {MAX_NUM_REQUESTED}; got {number}.",
            )
        return number

    def read_requests(self, requests: Iterator[Any], state: _Subscription) -> None:
        """The client's later FetchRequests: more events wanted (runs in its own thread)."""
        condition = self.log.condition
        try:
            for request in requests:
                with condition:
                    if request.topic_name and request.topic_name != state.topic:
                        state.error = _Refused(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            ERROR_CODES["topic_mismatch"],
                            "The topic of a later FetchRequest must be the first one's.",
                        )
                    else:
                        try:
                            state.pending += self.checked_num_requested(request.num_requested)
                        except _Refused as refused:
                            state.error = refused
                    condition.notify_all()
                    if state.error is not None:
                        return
        except grpc.RpcError:
            pass  # the client went away
        finally:
            with condition:
                state.closed = True
                condition.notify_all()

    def next_response(self, state: _Subscription, context: grpc.ServicerContext) -> Any | None:
        """Wait for events the client can take (or the keepalive); None: the stream ends."""
        log = self.log
        with log.condition:
            waited = log.condition.wait_for(
                lambda: (
                    self._stopping
                    or state.error is not None
                    or not context.is_active()
                    or (state.pending > 0 and self._deliverable(state))
                ),
                timeout=self.keepalive_seconds,
            )
            if state.error is not None:
                raise state.error
            if self._stopping or not context.is_active():
                return None
            events: list[ChangeEvent] = []
            if waited:
                events = self._take(state)
        delivered = [self.consumer_event(e) for e in events]
        with self.app._lock:
            self.app.stats.pubsub_events_delivered += len(delivered)
        return self.wire.messages.FetchResponse(
            events=delivered,
            latest_replay_id=encode_replay_id(state.position),
            rpc_id=secrets.token_hex(8),
            pending_num_requested=state.pending,
        )

    def _deliverable(self, state: _Subscription) -> bool:
        """Whether an event for this subscription waits; skips filtered-out ones (holding the
        bus's condition)."""
        while True:
            batch = self.log.events_after(state.position, MAX_NUM_REQUESTED)
            if not batch:
                return False
            for event in batch:
                if any(m.accepts(event) for m in state.members):
                    return True
                state.position = event.position

    def _take(self, state: _Subscription) -> list[ChangeEvent]:
        taken: list[ChangeEvent] = []
        while state.pending > 0:
            batch = self.log.events_after(state.position, state.pending)
            if not batch:
                break
            for event in batch:
                state.position = event.position
                if any(m.accepts(event) for m in state.members):
                    taken.append(event)
                    state.pending -= 1
                    if state.pending == 0:
                        break
        return taken


class _Servicer:
    """The PubSub service's methods (grpc calls them by name)."""

    def __init__(self, server: PubSubServer) -> None:
        self.server = server

    def GetTopic(self, request: Any, context: grpc.ServicerContext) -> Any:
        server = self.server
        try:
            user_row = server.begin(context, "GetTopic")
            members = server.members_of(request.topic_name)
        except _Refused as refused:
            server.refuse(context, refused)
            raise AssertionError("unreachable") from None  # abort raises
        schema_id = server.schema_of(members[0].entity).schema_id if members else ""
        return server.wire.messages.TopicInfo(
            topic_name=request.topic_name,
            tenant_guid=ORG_ID,
            can_publish=False,
            can_subscribe=server.can_subscribe(user_row, members),
            schema_id=schema_id,
            rpc_id=secrets.token_hex(8),
        )

    def GetSchema(self, request: Any, context: grpc.ServicerContext) -> Any:
        server = self.server
        try:
            server.begin(context, "GetSchema")
            schema = server.known_schema(request.schema_id)
            if schema is None:
                raise _Refused(
                    grpc.StatusCode.NOT_FOUND,
                    ERROR_CODES["schema_not_found"],
                    f"The schema {request.schema_id} doesn't exist.",
                )
        except _Refused as refused:
            server.refuse(context, refused)
            raise AssertionError("unreachable") from None
        return server.wire.messages.SchemaInfo(
            schema_json=schema.schema_json, schema_id=schema.schema_id, rpc_id=secrets.token_hex(8)
        )

    def Subscribe(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        server = self.server
        try:
            user_row = server.begin(context, "Subscribe")
            first = next(request_iterator, None)
            if first is None:
                return
            state = server.open(first, user_row)
            context.add_callback(server.wake)  # a cancelled stream stops waiting at once
            reader = threading.Thread(
                target=server.read_requests,
                args=(request_iterator, state),
                name="pubsub-requests",
                daemon=True,
            )
            reader.start()
            while True:
                response = server.next_response(state, context)
                if response is None:
                    return
                yield response
        except _Refused as refused:
            server.refuse(context, refused)
