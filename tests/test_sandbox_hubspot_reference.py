"""The sandbox HubSpot against the client's wire schema in ../shared/reference/hubspot.

For each (client API, method) of the schema's groups the sandbox serves, the request is sent
live (method and path as the schema says) and the JSON answer is checked against the model the
client would deserialize it into: the status is one the method lists; every key is one of the
model's JSON names (nested models too); required fields are present; values have the declared
types; enum values are allowed. An operation of the schema that this test neither checks nor
lists in NOT_SERVED (with the reason) fails the test, so a new client operation is classified.

The reference is read in place, never copied; without it these tests skip (CI=true: they fail).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits

SCHEMA_FILE = "hubspot-api-client-12.0.0-wire-schema.json"
GROUPS = (
    "crm/deals",
    "crm/owners",
    "crm/pipelines",
    "crm/properties",
    "crm/schemas",
    "crm/objects",
    "crm/objects/goals",
)
_WRITES = "the worker never edits the CRM's pipelines; the sandbox serves them read-only"
NOT_SERVED = {
    ("crm/deals", "basic_api", "merge"): "merging deals is not something the worker does",
    ("crm/pipelines", "pipeline_audits_api", "get_audit"): "audit logs are not modelled",
    ("crm/pipelines", "pipeline_stage_audits_api", "get_audit"): "audit logs are not modelled",
    ("crm/pipelines", "pipeline_stages_api", "archive"): _WRITES,
    ("crm/pipelines", "pipeline_stages_api", "create"): _WRITES,
    ("crm/pipelines", "pipeline_stages_api", "replace"): _WRITES,
    ("crm/pipelines", "pipeline_stages_api", "update"): _WRITES,
    ("crm/pipelines", "pipelines_api", "archive"): _WRITES,
    ("crm/pipelines", "pipelines_api", "create"): _WRITES,
    ("crm/pipelines", "pipelines_api", "replace"): _WRITES,
    ("crm/pipelines", "pipelines_api", "update"): _WRITES,
    ("crm/properties", "batch_api", "archive"): "the worker never deletes properties",
    ("crm/properties", "core_api", "archive"): "the worker never deletes properties",
    ("crm/properties", "groups_api", "archive"): "the worker never deletes property groups",
    ("crm/schemas", "core_api", "archive"): "the worker never deletes object types",
    ("crm/schemas", "core_api", "archive_association"): "association labels are not modelled",
    ("crm/schemas", "core_api", "create_association"): "association labels are not modelled",
}


@pytest.fixture(scope="module")
def wire(references: Path) -> dict[str, Any]:
    return json.loads((references / "hubspot" / SCHEMA_FILE).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[HubSpotSandbox]:
    with HubSpotSandbox.start(seed=11, limits=RateLimits(None, None, None)) as running:
        yield running


# ---- the checker ----------------------------------------------------------------------------


def _check(value: Any, kind: str, models: dict[str, Any], where: str) -> None:
    if value is None:
        return  # the client's validation is off: None is accepted for any field
    if kind.startswith("list["):
        assert isinstance(value, list), f"{where}: expected a list, got {value!r}"
        for i, item in enumerate(value):
            _check(item, kind[5:-1], models, f"{where}[{i}]")
        return
    if kind.startswith("dict[str, "):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        for key, item in value.items():
            assert isinstance(key, str)
            _check(item, kind[10:-1], models, f"{where}.{key}")
        return
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}
    if kind in simple:
        if kind == "int":
            assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r}"
        else:
            assert isinstance(value, simple[kind]), f"{where}: expected {kind}, got {value!r}"
        return
    if kind in {"datetime", "date"}:
        assert isinstance(value, str), f"{where}: expected a {kind} string, got {value!r}"
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return
    model = models[kind]
    assert isinstance(value, dict), f"{where}: expected a {kind} object, got {value!r}"
    unknown = set(value) - set(model)
    assert not unknown, f"{where}: keys {sorted(unknown)} are not in {kind}"
    for name, spec in model.items():
        if spec.get("required"):
            assert name in value, f"{where}: required {kind}.{name} missing"
        if name in value:
            if spec.get("enum") and value[name] is not None:
                assert value[name] in spec["enum"], f"{where}.{name}: {value[name]!r}"
            _check(value[name], spec["type"], models, f"{where}.{name}")


# ---- the calls ------------------------------------------------------------------------------


class Caller:
    def __init__(self, sandbox: HubSpotSandbox) -> None:
        self.sb = sandbox
        self.portal = sandbox.portal
        self._setup_done = False

    def send(self, op: dict[str, Any], path_values: dict[str, str], **kwargs: Any) -> Any:
        path = op["path"]
        for name, value in path_values.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, f"unfilled path {path}"
        return requests.request(
            op["http_method"],
            self.sb.url + path,
            headers={"Authorization": f"Bearer {self.sb.token}"},
            verify=str(self.sb.ca_path),
            timeout=30,
            **kwargs,
        )

    def setup(self) -> None:
        """A custom object with a unique property, and one record of it."""
        if self._setup_done:
            return
        self._setup_done = True
        client = self.sb.client()
        client.crm.schemas.core_api.create(
            {
                "name": "scorecard",
                "labels": {"singular": "Scorecard", "plural": "Scorecards"},
                "primaryDisplayProperty": "label",
                "requiredProperties": ["label"],
                "properties": [
                    {"name": "label", "label": "Label", "type": "string", "fieldType": "text"},
                    {
                        "name": "key",
                        "label": "Key",
                        "type": "string",
                        "fieldType": "text",
                        "hasUniqueValue": True,
                    },
                ],
                "associatedObjects": ["deals"],
            }
        )
        client.crm.objects.basic_api.create("p_scorecard", {"properties": {"label": "first"}})

    def object_id(self, group: str) -> tuple[str, str]:
        """(objectType, a live record id) for an objects group."""
        if group == "crm/objects/goals":
            return "goal_targets", self.portal.store("goal_targets").record_id(0)
        if group == "crm/objects":
            return "p_scorecard", self.portal.store("p_scorecard").record_id(0)
        return "deals", self.portal.deal_id(0)

    def properties_for(self, object_type: str) -> dict[str, str]:
        return {
            "deals": {"amount": "123.5"},
            "goal_targets": {"hs_target_amount": "99000"},
            "p_scorecard": {"label": "edited"},
        }[object_type]

    def call(self, group: str, api: str, op: dict[str, Any]) -> Any:
        method = op["client_method"]
        if group in {"crm/deals", "crm/objects", "crm/objects/goals"}:
            return self._object_call(group, api, method, op)
        if group == "crm/owners":
            owner = self.portal.owners[0]
            if method == "get_page":
                return self.send(op, {}, params={"limit": "2"})
            return self.send(op, {"ownerId": owner.id})
        if group == "crm/pipelines":
            values = {"objectType": "deals", "pipelineId": "default", "stageId": "closedwon"}
            return self.send(op, values)
        if group == "crm/properties":
            return self._property_call(api, method, op)
        if group == "crm/schemas":
            self.setup()
            if method == "create":
                return self.send(
                    op,
                    {},
                    json={
                        "name": "extra_object",
                        "labels": {"singular": "Extra", "plural": "Extras"},
                        "primaryDisplayProperty": "label",
                        "requiredProperties": [],
                        "properties": [
                            {"name": "label", "label": "L", "type": "string", "fieldType": "text"}
                        ],
                        "associatedObjects": [],
                    },
                )
            if method == "update":
                body = {"secondaryDisplayProperties": ["key"], "labels": {"plural": "Cards"}}
                return self.send(op, {"objectType": "p_scorecard"}, json=body)
            return self.send(op, {"objectType": "p_scorecard"})
        raise AssertionError(f"no call for {group} {api}.{method}")

    def _property_call(self, api: str, method: str, op: dict[str, Any]) -> Any:
        values = {
            "objectType": "deals",
            "propertyName": "dealstage",
            "groupName": "dealinformation",
        }
        if api == "groups_api" and method == "create":
            return self.send(op, values, json={"name": "ref_group", "label": "Reference group"})
        if api == "core_api" and method == "create":
            body = {
                "name": "ref_number",
                "label": "Reference number",
                "type": "number",
                "fieldType": "number",
                "groupName": "dealinformation",
            }
            return self.send(op, values, json=body)
        if api == "batch_api" and method == "create":
            body = {
                "inputs": [
                    {
                        "name": "ref_text",
                        "label": "Reference text",
                        "type": "string",
                        "fieldType": "text",
                        "groupName": "dealinformation",
                    },
                    {"name": "dealstage", "label": "again", "type": "string", "fieldType": "text",
                     "groupName": "dealinformation"},
                ]
            }  # fmt: skip
            return self.send(op, values, json=body)
        if api == "core_api" and method == "update":  # the property created above
            values["propertyName"] = "ref_number"
            return self.send(op, values, json={"label": "Renamed", "description": "Help"})
        if api == "groups_api" and method == "update":
            values["groupName"] = "ref_group"
            return self.send(op, values, json={"label": "Renamed group"})
        if api == "batch_api" and method == "read":
            body = {"archived": False, "inputs": [{"name": "amount"}, {"name": "nope"}]}
            return self.send(op, values, json=body)
        return self.send(op, values)

    def _object_call(self, group: str, api: str, method: str, op: dict[str, Any]) -> Any:
        self.setup()
        object_type, record_id = self.object_id(group)
        id_key = re.search(r"\{(\w+Id)\}", op["path"])
        values = {"objectType": object_type}
        if id_key:
            values[id_key.group(1)] = record_id
        props = self.properties_for(object_type)
        if api == "search_api":
            body = {
                "filterGroups": [
                    {"filters": [{"propertyName": "hs_object_id", "operator": "GTE", "value": "0"}]}
                ],
                "sorts": ["hs_lastmodifieddate"],
                "limit": 3,
            }
            return self.send(op, values, json=body)
        if api == "basic_api":
            if method == "get_page":
                params = {"limit": "2", "properties": list(props), "archived": "False"}
                if object_type == "deals":
                    params["propertiesWithHistory"] = ["dealstage"]
                    params["associations"] = ["companies"]
                return self.send(op, values, params=params)
            if method == "get_by_id":
                params = {"properties": list(props), "propertiesWithHistory": list(props)}
                return self.send(op, values, params=params)
            if method == "create":
                return self.send(op, values, json={"properties": self._new(object_type)})
            if method == "update":
                return self.send(op, values, json={"properties": props})
            if method == "archive":
                values[id_key.group(1)] = self._spare(object_type)  # type: ignore[union-attr]
                return self.send(op, values)
        if api == "batch_api":
            if method == "read":
                body = {"inputs": [{"id": record_id}, {"id": "1"}], "properties": list(props)}
                return self.send(op, values, json=body, params={"archived": "False"})
            if method == "update":
                return self.send(
                    op, values, json={"inputs": [{"id": record_id, "properties": props}]}
                )
            if method == "create":
                return self.send(
                    op, values, json={"inputs": [{"properties": self._new(object_type)}]}
                )
            if method == "archive":
                return self.send(op, values, json={"inputs": [{"id": self._spare(object_type)}]})
            if method == "upsert":
                if object_type != "p_scorecard":
                    return None  # no unique-value property on the standard objects served
                body = {
                    "inputs": [
                        {"id": "k-1", "idProperty": "key", "properties": {"label": "upserted"}}
                    ]
                }
                return self.send(op, values, json=body)
        raise AssertionError(f"no call for {group} {api}.{method}")

    def _new(self, object_type: str) -> dict[str, str]:
        return {"label": "new"} if object_type == "p_scorecard" else {}

    def _spare(self, object_type: str) -> str:
        store = self.portal.store(object_type)
        row = self.portal.create(store, {"label": "spare"} if store.custom else {})
        return store.record_id(row)


def _operations(wire: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for group in GROUPS:
        for api, ops in wire[group]["operations"].items():
            for op in ops:
                yield group, api, op


def test_every_served_operation_answers_in_the_clients_model(wire, sandbox) -> None:
    caller = Caller(sandbox)
    checked = skipped = served = 0
    for group, api, op in _operations(wire):
        key = (group, api, op["client_method"])
        if key in NOT_SERVED:
            continue
        served += 1
        response = caller.call(group, api, op)
        if response is None:  # upsert on deals/goals: checked on the custom object instead
            skipped += 1
            continue
        where = f"{group} {api}.{op['client_method']} ({op['http_method']} {op['path']})"
        models = wire[group]["models"]
        expected = op["response_models"]
        if not expected:  # archive: the client expects no body (204)
            assert response.status_code == 204, f"{where}: {response.status_code}"
            checked += 1
            continue
        assert str(response.status_code) in expected, (
            f"{where}: status {response.status_code} not in {sorted(expected)}: {response.text}"
        )
        _check(response.json(), expected[str(response.status_code)], models, where)
        checked += 1
    assert checked == served - skipped and skipped == 2 and checked >= 45


def test_every_operation_is_checked_or_listed(wire) -> None:
    known = {(g, a, op["client_method"]) for g, a, op in _operations(wire)}
    stale = set(NOT_SERVED) - known
    assert not stale, f"NOT_SERVED names operations the schema no longer has: {sorted(stale)}"
    # Everything else is sent by the test above: Caller fails on an operation it cannot build.


def test_batch_answers_with_errors_use_the_207_models(wire, sandbox) -> None:
    caller = Caller(sandbox)
    ops = {(g, a, op["client_method"]): op for g, a, op in _operations(wire)}
    op = ops[("crm/deals", "batch_api", "read")]
    response = caller.send(
        op,
        {},
        json={"inputs": [{"id": "1"}], "properties": ["amount"]},
        params={"archived": "False"},
    )
    assert response.status_code == 207
    _check(response.json(), op["response_models"]["207"], wire["crm/deals"]["models"], "207")
    error = response.json()["errors"][0]
    assert error["category"] == "OBJECT_NOT_FOUND" and error["context"] == {"ids": ["1"]}


def test_error_envelopes_match_the_error_model(wire, sandbox) -> None:
    models = wire["crm/deals"]["models"]
    caller = Caller(sandbox)
    op = next(
        o
        for g, a, o in _operations(wire)
        if (g, a, o["client_method"]) == ("crm/deals", "search_api", "do_search")
    )
    response = caller.send(op, {}, json={"limit": 500})
    assert response.status_code == 400
    body = response.json()
    assert body.pop("status") == "error"  # on the wire, not in the client's Error model
    _check(body, "Error", models, "Error")


# ---- the list endpoint a full pull pages through -------------------------------------------


def _get_page(wire: dict[str, Any]) -> dict[str, Any]:
    return next(
        op
        for g, a, op in _operations(wire)
        if (g, a, op["client_method"]) == ("crm/objects", "basic_api", "get_page")
    )


def test_the_list_endpoint_pages_every_live_record_once_in_the_clients_model(wire, sandbox) -> None:
    """``limit`` above 100 is served as 100, ``after`` follows ``paging.next.after`` in id
    order, ``properties`` chooses the properties, ``archived`` the side; every answer is the
    client's model."""
    op = _get_page(wire)
    assert op["query_params"] == [
        "limit", "after", "properties", "propertiesWithHistory", "associations", "archived",
    ]  # fmt: skip
    models = wire["crm/objects"]["models"]
    model = op["response_models"]["200"]
    caller = Caller(sandbox)
    store = sandbox.portal.store("deals")
    ids: list[str] = []
    params: dict[str, Any] = {"limit": "500", "properties": ["amount", "dealstage"]}
    params["archived"] = "False"
    while True:
        response = caller.send(op, {"objectType": "deals"}, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        _check(body, model, models, "list")
        results = body["results"]
        assert len(results) == 100 or "paging" not in body
        assert all(set(r["properties"]) == {"amount", "dealstage"} for r in results)
        assert all(r["archived"] is False for r in results)
        ids += [r["id"] for r in results]
        if "paging" not in body:
            break
        params["after"] = body["paging"]["next"]["after"]
    live = [store.record_id(row) for row in range(store.size) if not store.archived[row]]
    assert ids == live  # every live deal once, in id order
    archived = caller.send(op, {"objectType": "deals"}, params={"archived": "True"}).json()
    assert [r["id"] for r in archived["results"]] == [
        store.record_id(row) for row in range(store.size) if store.archived[row]
    ]


def test_a_list_page_with_property_history_holds_50_at_most(wire, sandbox) -> None:
    op = _get_page(wire)
    caller = Caller(sandbox)
    params = {"limit": "50", "properties": ["closedate"], "propertiesWithHistory": ["closedate"]}
    answer = caller.send(op, {"objectType": "deals"}, params=params)
    assert answer.status_code == 200
    body = answer.json()
    _check(body, op["response_models"]["200"], wire["crm/objects"]["models"], "history")
    assert len(body["results"]) == 50
    assert all(r["propertiesWithHistory"]["closedate"] for r in body["results"])
    refused = caller.send(op, {"objectType": "deals"}, params={**params, "limit": "51"})
    assert refused.status_code == 400  # HubSpot/hubspot-api-python#143
    error = refused.json()
    assert error.pop("status") == "error" and error["category"] == "VALIDATION_ERROR"
    _check(error, "Error", wire["crm/deals"]["models"], "Error")


def test_list_calls_count_under_the_general_limit_not_the_search_limit() -> None:
    ticks = _Ticks()
    limits = RateLimits(search_per_second=1, burst_per_10s=3, daily=None, monotonic=ticks)
    with HubSpotSandbox.start(seed=11, limits=limits) as running:
        caller = Caller(running)
        listing = {"http_method": "GET", "path": "/crm/v3/objects/deals"}
        searching = {"http_method": "POST", "path": "/crm/v3/objects/deals/search"}
        assert caller.send(searching, {}, json={"limit": 1}).status_code == 200
        answers = [caller.send(listing, {}, params={"limit": "1"}) for _ in range(4)]
        # The search used the search second; the lists the 10 seconds' 3, no more.
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[3].json()["policyName"] == "TEN_SECONDLY_ROLLING"
        assert answers[0].headers["X-HubSpot-RateLimit-Max"] == "3"
        assert answers[2].headers["X-HubSpot-RateLimit-Remaining"] == "0"
        ticks.now += 1.0  # a new second for search; the 10 seconds still full
        assert caller.send(searching, {}, json={"limit": 1}).status_code == 200
        assert caller.send(listing, {}, params={"limit": "1"}).status_code == 429
        ticks.now += 10.0
        assert caller.send(listing, {}, params={"limit": "1"}).status_code == 200


class _Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- updates of definitions, with the real client ------------------------------------------


def test_schema_patch_takes_display_properties_that_exist(sandbox) -> None:
    from hubspot.crm.schemas import ApiException, ObjectTypeDefinitionPatch

    if not any(s.name == "scorecard" for s in sandbox.portal.custom_stores()):
        Caller(sandbox).setup()
    schemas = sandbox.client().crm.schemas.core_api
    patch = ObjectTypeDefinitionPatch(
        secondary_display_properties=["key", "label"],
        labels={"singular": "Card", "plural": "Cards"},
    )
    answer = schemas.update("p_scorecard", patch)
    assert answer.secondary_display_properties == ["key", "label"]
    assert answer.primary_display_property == "label" and answer.labels.singular == "Card"
    assert answer.portal_id and answer.updated_at >= answer.created_at
    again = schemas.get_by_id("p_scorecard")
    assert again.secondary_display_properties == ["key", "label"]
    assert again.labels.plural == "Cards" and again.properties  # a schema lists them, a patch not
    for wrong in (
        {"secondaryDisplayProperties": ["nope"]},
        {"primaryDisplayProperty": "nope"},
        {"properties": []},  # not a field of ObjectTypeDefinitionPatch
    ):
        with pytest.raises(ApiException) as refused:
            schemas.update("p_scorecard", wrong)
        assert refused.value.status == 400
        assert json.loads(refused.value.body)["category"] == "VALIDATION_ERROR"
    with pytest.raises(ApiException) as missing:
        schemas.update("deals", {"secondaryDisplayProperties": ["amount"]})
    assert missing.value.status == 404
    assert schemas.get_by_id("p_scorecard").secondary_display_properties == ["key", "label"]


def test_schema_create_refuses_secondary_display_properties_it_does_not_define(sandbox) -> None:
    from hubspot.crm.schemas import ApiException

    with pytest.raises(ApiException) as refused:
        sandbox.client().crm.schemas.core_api.create(
            {
                "name": "bad_display",
                "labels": {"singular": "Bad", "plural": "Bads"},
                "primaryDisplayProperty": "label",
                "secondaryDisplayProperties": ["missing"],
                "requiredProperties": [],
                "properties": [
                    {"name": "label", "label": "L", "type": "string", "fieldType": "text"}
                ],
                "associatedObjects": [],
            }
        )
    assert refused.value.status == 400 and "missing" in refused.value.body


def test_property_and_group_patches_change_labels_only_of_custom_definitions(sandbox) -> None:
    from hubspot.crm.properties import ApiException, PropertyGroupUpdate, PropertyUpdate

    properties = sandbox.client().crm.properties
    properties.groups_api.create("deals", {"name": "patch_group", "label": "Before"})
    properties.core_api.create(
        "deals",
        {
            "name": "patch_me",
            "label": "Before",
            "type": "number",
            "fieldType": "number",
            "groupName": "patch_group",
            "description": "old",
        },
    )
    changed = properties.core_api.update(
        "deals", "patch_me", PropertyUpdate(label="After", description="new")
    )
    assert (changed.label, changed.description, changed.type) == ("After", "new", "number")
    assert changed.group_name == "patch_group" and changed.updated_at >= changed.created_at
    assert properties.core_api.get_by_name("deals", "patch_me").label == "After"
    group = properties.groups_api.update("deals", "patch_group", PropertyGroupUpdate(label="G"))
    assert (group.name, group.label) == ("patch_group", "G")
    for name, body, status in (
        ("dealstage", {"label": "Stage"}, 400),  # HubSpot's own: a read-only definition
        ("patch_me", {"groupName": "no_such_group"}, 400),
        ("patch_me", {"name": "renamed"}, 400),  # not a field of PropertyUpdate
        ("no_such_property", {"label": "x"}, 404),
    ):
        with pytest.raises(ApiException) as refused:
            properties.core_api.update("deals", name, body)
        assert refused.value.status == status, (name, refused.value.body)
    with pytest.raises(ApiException) as missing:
        properties.groups_api.update("deals", "no_such_group", {"label": "x"})
    assert missing.value.status == 404
