"""The sandbox Salesforce's Change Data Capture over the Pub/Sub API, driven by a plain gRPC
client built from the shared .proto, with fastavro decoding the payloads (not the connector)."""

from __future__ import annotations

import io
import json
import queue
from collections.abc import Iterator
from typing import Any

import fastavro
import grpc
import pytest

from crm_kpi_worker.connectors.salesforce.pubsub_wire import load_pubsub_wire
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.catalog import ORG_ID
from crm_kpi_worker.sandbox.salesforce.change_event_schema import names_in_bitmap
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

ALICE = "alice.martin@sandbox.local"
WIRE = load_pubsub_wire()
M = WIRE.messages
KEEPALIVE = 0.2


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start(
        deals=None, clock=clock, pubsub_keepalive_seconds=KEEPALIVE
    ) as running:
        yield running


class Client:
    """A Pub/Sub API client: a stub over TLS trusting the sandbox's CA, with the session's
    auth metadata on every call."""

    def __init__(self, sandbox: SalesforceSandbox, token: str) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=sandbox.ca_path.read_bytes())
        self.channel = grpc.secure_channel(sandbox.pubsub_endpoint, credentials)
        self.stub = WIRE.stub_class(self.channel)
        self.metadata = (
            ("accesstoken", token),
            ("instanceurl", sandbox.url),
            ("tenantid", ORG_ID),
        )
        self._schemas: dict[str, Any] = {}

    def subscribe(self, first: Any) -> tuple[queue.Queue[Any], Any]:
        requests: queue.Queue[Any] = queue.Queue()
        requests.put(first)
        responses = self.stub.Subscribe(iter(requests.get, None), metadata=self.metadata)
        return requests, responses

    def decode(self, event: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
        schema_id = event.event.schema_id
        if schema_id not in self._schemas:
            info = self.stub.GetSchema(M.SchemaRequest(schema_id=schema_id), metadata=self.metadata)
            parsed = json.loads(info.schema_json)
            self._schemas[schema_id] = (
                fastavro.parse_schema(parsed),
                tuple(f["name"] for f in parsed["fields"]),
            )
        schema, names = self._schemas[schema_id]
        return fastavro.schemaless_reader(io.BytesIO(event.event.payload), schema), names


def _tooling(sf: Any, kind: str, full_name: str, metadata: dict[str, Any]) -> Any:
    return sf.toolingexecute(
        f"sobjects/{kind}", method="POST", data={"FullName": full_name, "Metadata": metadata}
    )


def _select_opportunity(sf: Any) -> None:
    _tooling(
        sf,
        "PlatformEventChannelMember",
        "ChangeEvents_OpportunityChangeEvent",
        {"eventChannel": "ChangeEvents", "selectedEntity": "OpportunityChangeEvent"},
    )


def _opened(responses: Any) -> Any:
    """The first (keepalive) response: the subscription is placed in the stream."""
    return next(responses)


def _events(responses: Any, count: int) -> list[Any]:
    """The next ``count`` events, across responses (keepalives in between are skipped)."""
    found: list[Any] = []
    for _ in range(200):
        if len(found) >= count:
            break
        found.extend(next(responses).events)
    return found


def _open_deal(sf: Any) -> dict[str, Any]:
    return sf.query("SELECT Id, Amount, OwnerId FROM Opportunity WHERE IsClosed = false LIMIT 1")[
        "records"
    ][0]


def test_a_collections_update_arrives_with_its_header_and_changed_fields(
    sandbox: SalesforceSandbox,
) -> None:
    sf = sandbox.client()
    _select_opportunity(sf)
    client = Client(sandbox, sf.session_id)
    topic = client.stub.GetTopic(
        M.TopicRequest(topic_name="/data/OpportunityChangeEvent"), metadata=client.metadata
    )
    assert topic.can_subscribe and topic.schema_id and topic.tenant_guid == ORG_ID
    requests, responses = client.subscribe(
        M.FetchRequest(topic_name="/data/OpportunityChangeEvent", num_requested=5)
    )
    keepalive = _opened(responses)
    assert list(keepalive.events) == [] and keepalive.pending_num_requested == 5
    deal = _open_deal(sf)
    sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Opportunity"}, "Id": deal["Id"], "Amount": 4321.0}
            ],
        },
    )
    [event] = _events(responses, 1)
    payload, names = client.decode(event)
    header = payload["ChangeEventHeader"]
    assert header["entityName"] == "Opportunity"
    assert header["recordIds"] == [deal["Id"]]
    assert header["changeType"] == "UPDATE"
    assert header["commitUser"] == sandbox.integration_user_id
    assert header["changeOrigin"].startswith("com/salesforce/api/rest/")
    assert header["sequenceNumber"] == 1 and header["commitNumber"] >= 1
    assert header["changedFields"][0].startswith("0x")
    changed = set(names_in_bitmap(header["changedFields"], names))
    assert {"Amount", "LastModifiedDate"} <= changed
    assert "StageName" not in changed and header["nulledFields"] == []
    assert payload["Amount"] == 4321.0
    assert payload["StageName"] is None  # unchanged fields are null in Pub/Sub events
    assert event.replay_id
    requests.put(None)
    stats = sandbox.stats
    assert stats.pubsub_events_delivered == 1 and stats.pubsub_by_rpc["Subscribe"] == 1
    assert "Subscribe" not in stats.by_route  # not a REST API call


def test_a_new_stage_lists_the_probability_and_forecast_category_it_sets(
    sandbox: SalesforceSandbox,
) -> None:
    sf = sandbox.client()
    _select_opportunity(sf)
    client = Client(sandbox, sf.session_id)
    requests, responses = client.subscribe(
        M.FetchRequest(topic_name="/data/OpportunityChangeEvent", num_requested=5)
    )
    _opened(responses)
    deal = _open_deal(sf)
    sf.Opportunity.update(deal["Id"], {"StageName": "Closed Won"})
    [event] = _events(responses, 1)
    payload, names = client.decode(event)
    changed = set(names_in_bitmap(payload["ChangeEventHeader"]["changedFields"], names))
    assert {"StageName", "Probability", "ForecastCategoryName", "LastModifiedDate"} <= changed
    assert payload["Probability"] == 100.0 and payload["ForecastCategoryName"] == "Closed"
    assert "Amount" not in changed
    requests.put(None)


def test_a_bulk_ingest_update_is_a_change_event_too(sandbox: SalesforceSandbox) -> None:
    sf = sandbox.client()
    _select_opportunity(sf)
    client = Client(sandbox, sf.session_id)
    requests, responses = client.subscribe(
        M.FetchRequest(topic_name="/data/ChangeEvents", num_requested=10)
    )
    _opened(responses)
    deal = _open_deal(sf)
    sf.bulk2.Opportunity.update(records=[{"Id": deal["Id"], "Name": "Renamed by Bulk"}], wait=0.01)
    [event] = _events(responses, 1)
    payload, names = client.decode(event)
    assert payload["ChangeEventHeader"]["recordIds"] == [deal["Id"]]
    assert "Name" in names_in_bitmap(payload["ChangeEventHeader"]["changedFields"], names)
    assert payload["Name"] == "Renamed by Bulk"
    requests.put(None)


def test_a_custom_channel_filters_out_the_integration_users_own_changes(
    sandbox: SalesforceSandbox,
) -> None:
    sf = sandbox.client()
    _tooling(sf, "PlatformEventChannel", "KpiWorker__chn", {"channelType": "data", "label": "K"})
    _tooling(
        sf,
        "PlatformEventChannelMember",
        "KpiWorker_chn_OpportunityChangeEvent",
        {
            "eventChannel": "KpiWorker__chn",
            "selectedEntity": "OpportunityChangeEvent",
            "filterExpression": f"ChangeEventHeader.commitUser != '{sandbox.integration_user_id}'",
        },
    )
    members = sf.toolingexecute(
        "query?q=SELECT+Id,EventChannel,SelectedEntity,FilterExpression"
        "+FROM+PlatformEventChannelMember"
    )["records"]
    assert [(m["EventChannel"], m["SelectedEntity"]) for m in members] == [
        ("KpiWorker__chn", "OpportunityChangeEvent")
    ]
    client = Client(sandbox, sf.session_id)
    requests, responses = client.subscribe(
        M.FetchRequest(topic_name="/data/KpiWorker__chn", num_requested=10)
    )
    _opened(responses)
    alice = sandbox.client_as(ALICE)
    alice_id = alice.query(f"SELECT Id FROM User WHERE Username = '{ALICE}'")["records"][0]["Id"]
    mine, hers = sf.query(
        f"SELECT Id FROM Opportunity WHERE OwnerId = '{alice_id}' AND IsClosed = false LIMIT 2"
    )["records"]
    sf.Opportunity.update(mine["Id"], {"Name": "the worker write"})
    alice.Opportunity.update(hers["Id"], {"Name": "Alice edit"})
    [event] = _events(responses, 1)
    payload, _ = client.decode(event)
    assert payload["ChangeEventHeader"]["commitUser"] == alice_id
    assert payload["ChangeEventHeader"]["recordIds"] == [hers["Id"]]
    assert sandbox.stats.pubsub_events_delivered == 1  # the filtered-out one is not counted
    # The bus holds both: the worker's write went through, only this channel skipped it.
    assert len(sandbox.org.change_events.all_events()) == 2
    requests.put(None)


def test_custom_replay_resumes_right_after_the_stored_replay_id(
    sandbox: SalesforceSandbox,
) -> None:
    sf = sandbox.client()
    _select_opportunity(sf)
    deals = sf.query("SELECT Id FROM Opportunity WHERE IsClosed = false LIMIT 3")["records"]
    for n, deal in enumerate(deals):
        sf.Opportunity.update(deal["Id"], {"Name": f"edit {n}"})
    client = Client(sandbox, sf.session_id)
    requests, responses = client.subscribe(
        M.FetchRequest(
            topic_name="/data/OpportunityChangeEvent",
            replay_preset=M.ReplayPreset.Value("EARLIEST"),
            num_requested=3,
        )
    )
    first_three = _events(responses, 3)
    assert [client.decode(e)[0]["ChangeEventHeader"]["recordIds"][0] for e in first_three] == [
        d["Id"] for d in deals
    ]
    requests.put(None)
    stored = first_three[0].replay_id
    requests, responses = client.subscribe(
        M.FetchRequest(
            topic_name="/data/OpportunityChangeEvent",
            replay_preset=M.ReplayPreset.Value("CUSTOM"),
            replay_id=stored,
            num_requested=1,
        )
    )
    [resumed] = _events(responses, 1)
    assert resumed.replay_id == first_three[1].replay_id
    follow = next(responses)  # num_requested spent: a keepalive, no event
    assert list(follow.events) == [] and follow.pending_num_requested == 0
    assert follow.latest_replay_id == first_three[1].replay_id
    requests.put(None)


def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    return error.code(), trailers.get("error-code", "")  # type: ignore[attr-defined]


def test_an_expired_replay_id_is_refused(sandbox: SalesforceSandbox, clock: Clock) -> None:
    sf = sandbox.client()
    _select_opportunity(sf)
    deals = sf.query("SELECT Id FROM Opportunity WHERE IsClosed = false LIMIT 2")["records"]
    sf.Opportunity.update(deals[0]["Id"], {"Name": "old"})
    stored = sandbox.org.change_events.all_events()[0].replay_id
    clock.now += 73 * 3600  # past the 72-hour retention
    sf.Opportunity.update(deals[1]["Id"], {"Name": "new"})
    client = Client(sandbox, sf.session_id)
    _, responses = client.subscribe(
        M.FetchRequest(
            topic_name="/data/OpportunityChangeEvent",
            replay_preset=M.ReplayPreset.Value("CUSTOM"),
            replay_id=stored,
            num_requested=1,
        )
    )
    status, code = _refusal(lambda: next(responses))
    assert status == grpc.StatusCode.INVALID_ARGUMENT
    assert code == "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"


def test_more_than_100_requested_events_are_refused(sandbox: SalesforceSandbox) -> None:
    sf = sandbox.client()
    _select_opportunity(sf)
    client = Client(sandbox, sf.session_id)
    _, responses = client.subscribe(
        M.FetchRequest(topic_name="/data/OpportunityChangeEvent", num_requested=101)
    )
    status, code = _refusal(lambda: next(responses))
    assert status == grpc.StatusCode.INVALID_ARGUMENT
    assert code == "sfdc.platform.eventbus.grpc.subscription.fetch.requested.events.invalid"


def test_a_bad_token_is_refused_and_a_fault_makes_pubsub_unavailable(
    sandbox: SalesforceSandbox,
) -> None:
    sf = sandbox.client()
    _select_opportunity(sf)
    client = Client(sandbox, "00Dbogus!token")
    status, code = _refusal(
        lambda: client.stub.GetTopic(
            M.TopicRequest(topic_name="/data/OpportunityChangeEvent"), metadata=client.metadata
        )
    )
    assert status == grpc.StatusCode.UNAUTHENTICATED
    assert code == "sfdc.platform.eventbus.grpc.service.auth.error"
    sandbox.faults.add(FaultRule(kind="pubsub_unavailable", path="GetTopic"))
    good = Client(sandbox, sf.session_id)
    status, _ = _refusal(
        lambda: good.stub.GetTopic(
            M.TopicRequest(topic_name="/data/OpportunityChangeEvent"), metadata=good.metadata
        )
    )
    assert status == grpc.StatusCode.UNAVAILABLE


def test_the_tooling_api_refuses_bad_members(sandbox: SalesforceSandbox) -> None:
    from simple_salesforce.exceptions import SalesforceError

    sf = sandbox.client()
    _tooling(sf, "PlatformEventChannel", "Mine__chn", {"channelType": "data", "label": "M"})
    for metadata in (
        {"eventChannel": "Mine__chn", "selectedEntity": "NoSuchThingChangeEvent"},
        {
            "eventChannel": "Mine__chn",
            "selectedEntity": "OpportunityChangeEvent",
            "filterExpression": "ChangeEventHeader.changedFields = 'Amount'",
        },
        {
            "eventChannel": "ChangeEvents",
            "selectedEntity": "OpportunityChangeEvent",
            "filterExpression": "Amount = 1",
        },
    ):
        with pytest.raises(SalesforceError) as refused:
            _tooling(sf, "PlatformEventChannelMember", "Member", metadata)
        assert refused.value.status == 400
