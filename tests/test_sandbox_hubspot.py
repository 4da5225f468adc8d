"""The sandbox HubSpot portal driven by the real hubspot-api-client, end to end over TLS."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from click.testing import CliRunner
from hubspot.crm.deals import ApiException as DealsApiException
from hubspot.crm.deals import BatchResponseSimplePublicObjectWithErrors
from hubspot.crm.objects import ApiException as ObjectsApiException
from urllib3.util.retry import Retry

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.generator import generate
from crm_kpi_worker.sandbox.hubspot.catalog import STAGE_IDS
from crm_kpi_worker.sandbox.hubspot.formats import parse_datetime_ms
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits
from crm_kpi_worker.sync.cli import main

UNLIMITED = RateLimits(None, None, None)
REF = dt.date(2026, 9, 30)
AFTER_DATA = dt.datetime(2026, 10, 1, 8, 0, tzinfo=dt.UTC).timestamp()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def sb() -> Iterator[HubSpotSandbox]:
    """The demo scenario, read only."""
    with HubSpotSandbox.start(seed=42, reference_date=REF, limits=UNLIMITED) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def client(sb: HubSpotSandbox) -> Any:
    return sb.client()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(AFTER_DATA)


@pytest.fixture
def fresh(clock: FakeClock) -> Iterator[HubSpotSandbox]:
    """A sandbox of its own (writes, faults), stamped by a fake clock."""
    data = generate(seed=7, reference_date=REF)
    data.users.is_active[6] = False  # the integration user: an archived owner
    sandbox = HubSpotSandbox(data, clock=clock, limits=UNLIMITED)
    sandbox.serve_in_background()
    with sandbox:
        yield sandbox


def _raw(sb: HubSpotSandbox, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {sb.token}", **kwargs.pop("headers", {})}
    return requests.request(
        method, sb.url + path, headers=headers, verify=str(sb.ca_path), timeout=30, **kwargs
    )


def _ms(text: str) -> int:
    return parse_datetime_ms(text)


# ---- deals: shapes, values, demo facts ---------------------------------------------------------


def test_alice_won_deals_in_the_scenario_quarter_sum_to_150000_eur(sb, client) -> None:
    data = sb.portal.data
    alice = sb.portal.owner_id(data.notes["alice"])
    start, end = data.notes["scenario_quarter"]
    page = client.crm.deals.search_api.do_search(
        {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "hubspot_owner_id", "operator": "EQ", "value": alice},
                        {"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"},
                        {
                            "propertyName": "closedate",
                            "operator": "BETWEEN",
                            "value": f"{start}T00:00:00Z",
                            "highValue": f"{end}T00:00:00Z",
                        },
                    ]
                }
            ],
            "properties": ["amount_in_home_currency", "deal_currency_code", "hs_is_closed_won"],
            "limit": 100,
        }
    )
    assert page.total == 10 and page.paging is None
    assert sum(float(r.properties["amount_in_home_currency"]) for r in page.results) == 150_000
    assert {r.properties["hs_is_closed_won"] for r in page.results} == {"true"}
    expected = sorted(sb.portal.deal_id(row) for row in data.notes["alice_won_deals"])
    assert sorted(r.id for r in page.results) == expected


def test_alices_quota_goal_target_for_the_scenario_quarter(sb, client) -> None:
    data = sb.portal.data
    alice = data.notes["alice"]
    page = client.crm.objects.goals.search_api.do_search(
        {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": "hubspot_owner_id",
                            "operator": "EQ",
                            "value": sb.portal.owner_id(alice),
                        },
                        {
                            "propertyName": "hs_start_datetime",
                            "operator": "EQ",
                            "value": "2026-07-01T00:00:00Z",
                        },
                    ]
                }
            ],
            "properties": [
                "hs_goal_name",
                "hs_target_amount",
                "hs_start_datetime",
                "hs_end_datetime",
                "hs_assignee_user_id",
                "hs_kpi_display_unit",
            ],
        }
    )
    assert page.total == 1
    goal = page.results[0].properties
    assert goal == {
        "hs_goal_name": "Revenue quota",
        "hs_target_amount": "120000",
        "hs_start_datetime": "2026-07-01T00:00:00.000Z",
        "hs_end_datetime": "2026-10-01T00:00:00.000Z",  # exclusive end
        "hs_assignee_user_id": str(sb.portal.user_id(alice)),
        "hs_kpi_display_unit": "currency",
    }


def test_deal_properties_formats(sb, client) -> None:
    data = sb.portal.data
    row = data.notes["foreign_currency_deals"]["USD"]
    deal = client.crm.deals.basic_api.get_by_id(
        sb.portal.deal_id(row),
        properties=[
            "dealname",
            "amount",
            "deal_currency_code",
            "amount_in_home_currency",
            "closedate",
            "createdate",
            "hs_createdate",
            "dealtype",
            "hs_forecast_category",
            "hs_deal_stage_probability",
            "hs_primary_associated_company",
            "pipeline",
            "hs_is_closed",
            "no_such_property",
        ],
    )
    p = deal.properties
    assert p["amount"] == "21600" and p["deal_currency_code"] == "USD"
    assert p["amount_in_home_currency"] == "20000"
    close = ds.day_to_date(int(data.deals.close_day[row]))
    assert p["closedate"] == f"{close.isoformat()}T00:00:00Z"
    assert p["createdate"] == p["hs_createdate"]
    assert len(p["createdate"]) == len("2026-07-01T09:30:00.123Z")
    account = data.accounts.name[int(data.deals.account[row])]
    assert p["dealname"] == f"{account} - {data.products[int(data.deals.product[row])]}"
    assert p["dealtype"] == "newbusiness" and p["pipeline"] == "default"
    assert p["hs_forecast_category"] == "CLOSED" and p["hs_deal_stage_probability"] == "1"
    assert p["hs_is_closed"] == "true"
    assert p["hs_primary_associated_company"] == sb.portal.company_id(int(data.deals.account[row]))
    assert "no_such_property" not in p
    assert deal.updated_at == deal.created_at or deal.updated_at > deal.created_at


def test_bad_data_deals(sb) -> None:
    bad = sb.portal.data.notes["bad_deals"]
    no_amount = sb.portal.deal_properties(sb.portal.deal_id(bad["no_amount"]))
    assert no_amount["amount"] is None and no_amount["amount_in_home_currency"] is None
    chf = sb.portal.deal_properties(sb.portal.deal_id(bad["unconvertible_currency"]))
    assert chf["deal_currency_code"] == "CHF" and chf["amount_in_home_currency"] is None
    assert sb.portal.deal_properties(sb.portal.deal_id(bad["no_close_date"]))["closedate"] is None
    legacy = sb.portal.deal_properties(sb.portal.deal_id(bad["unknown_stage"]))
    assert legacy["dealstage"] == "108765432"


def test_default_properties_and_stage_dates(sb, client) -> None:
    row = sb.portal.data.notes["alice_won_deals"][0]
    deal = client.crm.deals.basic_api.get_by_id(sb.portal.deal_id(row))
    assert sorted(deal.properties) == sorted(
        [
            "amount",
            "closedate",
            "createdate",
            "dealname",
            "dealstage",
            "hs_lastmodifieddate",
            "hs_object_id",
            "pipeline",
        ]
    )
    stage_props = [f"hs_v2_date_{kind}_{s}" for s in STAGE_IDS for kind in ("entered", "exited")]
    full = sb.portal.deal_properties(sb.portal.deal_id(row))
    sc = sb.portal.data.stage_changes
    mine = sc.deal == row
    won_at = int(sc.changed_at[mine][-1])
    assert _ms(full["hs_v2_date_entered_closedwon"]) == won_at
    assert full["hs_v2_date_exited_closedwon"] is None
    assert _ms(full["hs_v2_date_entered_appointmentscheduled"]) == int(sc.changed_at[mine][0])
    assert _ms(full["hs_v2_date_exited_appointmentscheduled"]) == int(sc.changed_at[mine][1])
    assert set(stage_props) <= set(full)


def test_property_history_is_newest_first(sb, client) -> None:
    row = sb.portal.data.notes["alice_won_deals"][0]
    deal = client.crm.deals.basic_api.get_by_id(
        sb.portal.deal_id(row), properties_with_history=["dealstage", "closedate"]
    )
    history = deal.properties_with_history["dealstage"]
    assert history[0].value == "closedwon"
    assert history[-1].value == "appointmentscheduled"
    stamps = [h.timestamp for h in history]
    assert stamps == sorted(stamps, reverse=True)
    owner_user = sb.portal.user_id(int(sb.portal.data.deals.owner[row]))
    assert history[0].source_type == "CRM_UI"
    assert history[0].source_id == f"userId:{owner_user}"
    assert history[0].updated_by_user_id == owner_user
    assert deal.properties_with_history["closedate"][-1].timestamp == deal.created_at


def test_get_all_pages_every_live_deal(sb, client) -> None:
    deals = client.crm.deals.get_all(properties=["dealstage"])
    data = sb.portal.data
    assert len(deals) == int((~data.deals.is_deleted).sum())
    assert len({d.id for d in deals}) == len(deals)
    assert all(not d.archived for d in deals)


def test_archived_listing_holds_only_archived_deals(sb, client) -> None:
    page = client.crm.deals.basic_api.get_page(archived=True, limit=100)
    deleted = sb.portal.data.notes["bad_deals"]["deleted"]
    assert [r.id for r in page.results] == [sb.portal.deal_id(deleted)]
    record = page.results[0]
    assert record.archived is True
    deleted_at = int(sb.portal.data.deals.deleted_at[deleted])
    assert int(record.archived_at.timestamp() * 1000) == deleted_at
    with pytest.raises(DealsApiException) as failure:
        client.crm.deals.basic_api.get_by_id(sb.portal.deal_id(deleted))
    assert failure.value.status == 404
    assert json.loads(failure.value.body)["category"] == "OBJECT_NOT_FOUND"
    search = client.crm.deals.search_api.do_search(
        {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": "hs_object_id",
                            "operator": "EQ",
                            "value": sb.portal.deal_id(deleted),
                        }
                    ]
                }
            ]
        }
    )
    assert search.total == 0


def test_deals_by_object_type_id(sb, client) -> None:
    page = client.crm.objects.basic_api.get_page("0-3", limit=5)
    assert len(page.results) == 5 and page.paging.next.after
    companies = client.crm.objects.basic_api.get_page(
        "companies", limit=2, properties=["name", "domain", "churn_date", "hubspot_owner_id"]
    )
    first = companies.results[0].properties
    assert first["domain"].endswith(".example") and first["hubspot_owner_id"]


def test_companies_churn_date_is_a_date(sb, client) -> None:
    churned = sb.portal.data.notes["churned_accounts"]
    account = next(iter(churned))
    record = client.crm.objects.basic_api.get_by_id(
        "companies", sb.portal.company_id(account), properties=["churn_date", "name"]
    )
    day = ds.day_to_date(int(sb.portal.data.accounts.churn_day[account]))
    assert record.properties["churn_date"] == day.isoformat()
    assert record.properties["name"] == sb.portal.data.accounts.name[account]


def test_meetings_render_activities(sb, client) -> None:
    act = sb.portal.data.activities
    row = int(np.flatnonzero(act.kind == ds.ACTIVITY_KINDS.index("demo"))[0])
    store = sb.portal.store("meetings")
    meeting = client.crm.objects.meetings.basic_api.get_by_id(
        store.record_id(row),
        properties=[
            "hs_activity_type",
            "hs_meeting_start_time",
            "hs_meeting_end_time",
            "hs_timestamp",
            "hubspot_owner_id",
        ],
    )
    p = meeting.properties
    assert p["hs_activity_type"] == "Demo"
    assert _ms(p["hs_meeting_start_time"]) == int(act.start[row]) == _ms(p["hs_timestamp"])
    assert _ms(p["hs_meeting_end_time"]) - _ms(p["hs_meeting_start_time"]) == (
        int(act.duration_minutes[row]) * 60_000
    )
    assert p["hubspot_owner_id"] == sb.portal.owner_id(int(act.owner[row]))


# ---- owners, pipelines ---------------------------------------------------------------------------


def test_owners(fresh) -> None:
    client = fresh.client()
    users = fresh.portal.data.users
    active = client.crm.owners.owners_api.get_page(limit=500)
    assert len(active.results) == int(users.is_active.sum()) and active.paging is None
    alice = active.results[0]
    assert alice.email == "alice.martin@sandbox.local" and alice.type == "PERSON"
    assert alice.teams[0].name == "France Nord" and alice.teams[0].primary is True
    assert alice.user_id == fresh.portal.user_id(0) == alice.user_id_including_inactive
    archived = client.crm.owners.owners_api.get_page(archived=True)
    assert [o.email for o in archived.results] == ["integration.user@sandbox.local"]
    assert archived.results[0].archived is True
    first = client.crm.owners.owners_api.get_page(limit=2)
    second = client.crm.owners.owners_api.get_page(limit=2, after=first.paging.next.after)
    assert [o.id for o in first.results + second.results] == [o.id for o in active.results[:4]]
    by_email = client.crm.owners.owners_api.get_page(email="bruno.lefevre@sandbox.local")
    assert [o.first_name for o in by_email.results] == ["Bruno"]
    one = client.crm.owners.owners_api.get_by_id(alice.id)
    assert one.email == alice.email
    by_user = client.crm.owners.owners_api.get_by_id(str(alice.user_id), id_property="userId")
    assert by_user.id == alice.id
    teams = {o.teams[0].id for o in active.results if o.teams}
    assert len(teams) == 2  # France Nord, France Sud
    assert _raw(fresh, "GET", "/crm/v3/owners").status_code == 200  # no trailing slash too


def test_pipeline_and_stages(client) -> None:
    pipelines = client.crm.pipelines.pipelines_api.get_all("deals")
    (pipeline,) = pipelines.results
    assert (pipeline.id, pipeline.label) == ("default", "Sales Pipeline")
    stages = [(s.id, s.label, s.metadata, s.display_order) for s in pipeline.stages]
    assert stages[0] == (
        "appointmentscheduled",
        "Prospecting",
        {"probability": "0.1", "isClosed": "false"},
        0,
    )
    assert stages[5] == ("closedwon", "Closed won", {"probability": "1.0", "isClosed": "true"}, 5)
    assert stages[6][:3] == (
        "closedlost",
        "Closed lost",
        {"probability": "0.0", "isClosed": "true"},
    )
    assert stages[7][:2] == ("108765432", "Legacy stage")
    assert [s[0] for s in stages] == list(STAGE_IDS)
    one = client.crm.pipelines.pipeline_stages_api.get_by_id("deals", "default", "contractsent")
    assert one.label == "Negotiation"
    assert len(client.crm.pipelines.pipeline_stages_api.get_all("deals", "default").results) == 8
    assert client.crm.pipelines.pipelines_api.get_by_id("0-3", "default").label == "Sales Pipeline"


# ---- search semantics --------------------------------------------------------------------------


def _search(client: Any, filters: list[dict[str, Any]], **extra: Any) -> Any:
    body = {"filterGroups": [{"filters": filters}], "limit": 200, **extra}
    return client.crm.deals.search_api.do_search(body)


def _expected(sb: HubSpotSandbox, mask: np.ndarray) -> int:
    return int((mask & ~sb.portal.data.deals.is_deleted).sum())


def test_search_operators(sb, client) -> None:
    deals = sb.portal.data.deals
    amount = deals.amount
    n = lambda f, **kw: _search(client, f, **kw).total  # noqa: E731
    assert n([{"propertyName": "amount", "operator": "GT", "value": "20000"}]) == _expected(
        sb, amount > 20000
    )
    assert n([{"propertyName": "amount", "operator": "LTE", "value": "15000"}]) == _expected(
        sb, amount <= 15000
    )
    assert n(
        [{"propertyName": "amount", "operator": "BETWEEN", "value": "10000", "highValue": "12000"}]
    ) == _expected(sb, (amount >= 10000) & (amount <= 12000))
    assert n([{"propertyName": "amount", "operator": "NOT_HAS_PROPERTY"}]) == _expected(
        sb, np.isnan(amount)
    )
    assert n([{"propertyName": "closedate", "operator": "HAS_PROPERTY"}]) == _expected(
        sb, deals.close_day != ds.NULL_DAY
    )
    won_lost = ["closedwon", "closedlost"]
    closed = np.isin(deals.stage, [ds.STAGE_WON, ds.STAGE_LOST])
    assert n([{"propertyName": "dealstage", "operator": "IN", "values": won_lost}]) == _expected(
        sb, closed
    )
    assert n(
        [{"propertyName": "dealstage", "operator": "NOT_IN", "values": won_lost}]
    ) == _expected(sb, ~closed)
    assert n([{"propertyName": "dealstage", "operator": "NEQ", "value": "closedwon"}]) == (
        _expected(sb, deals.stage != ds.STAGE_WON)
    )
    assert n([{"propertyName": "deal_currency_code", "operator": "EQ", "value": "chf"}]) == 1
    stamp = int(np.median(deals.last_modified))
    iso = dt.datetime.fromtimestamp(stamp / 1000, tz=dt.UTC).isoformat()
    by_ms = n([{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(stamp)}])
    by_iso = n([{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": iso}])
    assert by_ms == by_iso == _expected(sb, deals.last_modified >= stamp)
    assert n([{"propertyName": "hs_lastmodifieddate", "operator": "LT", "value": str(stamp)}]) == (
        _expected(sb, deals.last_modified < stamp)
    )
    name = sb.portal.deal_properties(sb.portal.deal_id(0))["dealname"]
    word = name.split()[0]
    tokens = n([{"propertyName": "dealname", "operator": "CONTAINS_TOKEN", "value": word}])
    assert tokens >= 1
    assert _search(client, [], query=word.lower()).total >= tokens
    first = sb.portal.deal_id(10)
    assert n([{"propertyName": "hs_object_id", "operator": "GT", "value": first}]) == _expected(
        sb, np.arange(len(deals)) > 10
    )


def test_search_groups_are_ored(sb, client) -> None:
    deals = sb.portal.data.deals
    body = {
        "filterGroups": [
            {"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]},
            {"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedlost"}]},
        ]
    }
    total = client.crm.deals.search_api.do_search(body).total
    assert total == _expected(sb, np.isin(deals.stage, [ds.STAGE_WON, ds.STAGE_LOST]))


def test_search_sorts_and_stable_paging(sb, client) -> None:
    seen: list[Any] = []
    after = None
    while True:
        body: dict[str, Any] = {
            "sorts": [{"propertyName": "amount", "direction": "DESCENDING"}],
            "properties": ["amount"],
            "limit": 50,
        }
        if after:
            body["after"] = after
        page = client.crm.deals.search_api.do_search(body)
        seen.extend(page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert len(seen) == page.total == len({r.id for r in seen})
    amounts = [float(r.properties["amount"]) for r in seen if r.properties["amount"]]
    assert amounts == sorted(amounts, reverse=True)
    assert seen[-1].properties["amount"] is None  # no value: last
    ties = [(float(r.properties["amount"]), int(r.id)) for r in seen if r.properties["amount"]]
    assert ties == sorted(ties, key=lambda t: (-t[0], t[1]))
    ascending = client.crm.deals.search_api.do_search({"sorts": ["hs_lastmodifieddate"]})
    stamps = [r.properties["hs_lastmodifieddate"] for r in ascending.results]
    assert stamps == sorted(stamps)
    default = client.crm.deals.search_api.do_search({"limit": 20})
    assert [int(r.id) for r in default.results] == sorted(int(r.id) for r in default.results)


def test_search_validation_errors(client) -> None:
    api = client.crm.deals.search_api
    cases = [
        {"limit": 201},
        {
            "filterGroups": [
                {"filters": [{"propertyName": "amount", "operator": "GT", "value": "1"}]}
            ]
            * 6
        },
        {
            "filterGroups": [
                {"filters": [{"propertyName": "amount", "operator": "GT", "value": "1"}] * 7}
            ]
        },
        {
            "filterGroups": [
                {"filters": [{"propertyName": "amount", "operator": "GT", "value": "1"}] * 6}
            ]
            * 4
        },
        {"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]},
        {
            "filterGroups": [
                {"filters": [{"propertyName": "amount", "operator": "LIKE", "value": "1"}]}
            ]
        },
    ]
    for body in cases:
        with pytest.raises(DealsApiException) as failure:
            api.do_search(body)
        assert failure.value.status == 400, body
        error = json.loads(failure.value.body)
        assert error["category"] == "VALIDATION_ERROR" and error["status"] == "error"
        assert error["correlationId"] == failure.value.headers["X-HubSpot-Correlation-Id"]


def test_the_10000_result_cap() -> None:
    with HubSpotSandbox.start(seed=5, deals=10_500, limits=UNLIMITED) as sandbox:
        api = sandbox.client().crm.deals.search_api
        live = int((~sandbox.portal.data.deals.is_deleted).sum())
        assert live > 10_000
        page = api.do_search({"limit": 200, "after": "9800", "sorts": ["hs_lastmodifieddate"]})
        assert page.total == live and len(page.results) == 200
        assert page.paging.next.after == "10000"  # HubSpot offers it; following it fails
        with pytest.raises(DealsApiException) as failure:
            api.do_search({"limit": 200, "after": "10000"})
        assert failure.value.status == 400
        error = json.loads(failure.value.body)
        assert error["category"] == "VALIDATION_ERROR"
        assert "10,000" in error["message"]
        with pytest.raises(DealsApiException):
            api.do_search({"limit": 100, "after": "9950"})


# ---- writes ------------------------------------------------------------------------------------


def test_update_bumps_last_modified_even_with_equal_values(fresh, clock) -> None:
    client = fresh.client()
    deal_id = fresh.portal.deal_id(3)
    current = fresh.portal.deal_properties(deal_id)["amount"]
    clock.advance(60)
    updated = client.crm.deals.basic_api.update(deal_id, {"properties": {"amount": current}})
    assert updated.properties["amount"] == current
    assert _ms(updated.properties["hs_lastmodifieddate"]) == int(clock.now * 1000)
    assert int(updated.updated_at.timestamp() * 1000) == int(clock.now * 1000)
    history = client.crm.deals.basic_api.get_by_id(deal_id, properties_with_history=["amount"])
    newest = history.properties_with_history["amount"][0]
    assert newest.source_type == "INTEGRATION" and newest.value == current


def test_stage_write_moves_stage_dates_and_probability(fresh, clock) -> None:
    client = fresh.client()
    data = fresh.portal.data
    row = int(np.flatnonzero(data.deals.stage == ds.STAGES.index("proposal"))[0])
    deal_id = fresh.portal.deal_id(row)
    clock.advance(3600)
    client.crm.deals.basic_api.update(deal_id, {"properties": {"dealstage": "contractsent"}})
    props = fresh.portal.deal_properties(deal_id)
    now = int(clock.now * 1000)
    assert _ms(props["hs_v2_date_exited_decisionmakerboughtin"]) == now
    assert _ms(props["hs_v2_date_entered_contractsent"]) == now
    assert props["hs_deal_stage_probability"] == "0.8"
    history = client.crm.deals.basic_api.get_by_id(deal_id, properties_with_history=["dealstage"])
    assert [h.value for h in history.properties_with_history["dealstage"][:2]] == [
        "contractsent",
        "decisionmakerboughtin",
    ]


def test_archive_does_not_bump_last_modified(fresh, clock) -> None:
    client = fresh.client()
    deal_id = fresh.portal.deal_id(4)
    before = fresh.portal.deal_properties(deal_id)["hs_lastmodifieddate"]
    clock.advance(120)
    client.crm.deals.basic_api.archive(deal_id)
    page = client.crm.deals.basic_api.get_page(archived=True, properties=["hs_lastmodifieddate"])
    record = next(r for r in page.results if r.id == deal_id)
    assert record.properties["hs_lastmodifieddate"] == before
    assert int(record.archived_at.timestamp() * 1000) == int(clock.now * 1000)


def test_touch_deals_stamps_many_at_one_millisecond(fresh) -> None:
    rows = np.arange(0, 40)
    fresh.portal.touch_deals(rows, at_ms=1_790_000_000_123, dealtype="renewal")
    page = fresh.client().crm.deals.search_api.do_search(
        {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": "hs_lastmodifieddate",
                            "operator": "EQ",
                            "value": "1790000000123",
                        }
                    ]
                }
            ],
            "properties": ["dealtype"],
            "limit": 100,
        }
    )
    live = [r for r in rows if not fresh.portal.data.deals.is_deleted[r]]
    assert page.total == len(live)
    assert {r.properties["dealtype"] for r in page.results} == {"renewal"}


def test_write_validation(fresh) -> None:
    api = fresh.client().crm.deals.basic_api
    deal_id = fresh.portal.deal_id(1)
    for props, code in [
        ({"amount": "lots"}, "INVALID_FLOAT"),
        ({"dealstage": "nowhere"}, "INVALID_OPTION"),
        ({"closedate": "someday"}, "INVALID_DATETIME"),
        ({"x": "1"}, "PROPERTY_DOESNT_EXIST"),
        ({"hs_object_id": "1"}, "READ_ONLY_VALUE"),
        ({"hubspot_owner_id": "12"}, "INVALID_OPTION"),
    ]:
        with pytest.raises(DealsApiException) as failure:
            api.update(deal_id, {"properties": props})
        assert failure.value.status == 400
        error = json.loads(failure.value.body)
        assert error["category"] == "VALIDATION_ERROR"
        assert error["message"].startswith("Property values were not valid")
        assert error["errors"][0]["code"] == code
    with pytest.raises(DealsApiException) as failure:
        api.update(deal_id, {"properties": {"x": "1"}})
    assert json.loads(failure.value.body)["errors"] == [
        {
            "message": 'Property "x" does not exist',
            "code": "PROPERTY_DOESNT_EXIST",
            "context": {"propertyName": ["x"]},
        }
    ]


def test_batch_update_caps_and_partial_failures(fresh) -> None:
    batch = fresh.client().crm.deals.batch_api
    ids = [fresh.portal.deal_id(r) for r in range(5)]
    fresh.faults.add(FaultRule(kind="write_failure", path="/batch/", record_ids=(ids[1],)))
    answer = batch.update(
        {
            "inputs": [{"id": i, "properties": {"amount": "1234.5"}} for i in ids]
            + [{"id": "999", "properties": {"amount": "1"}}]
        }
    )
    assert isinstance(answer, BatchResponseSimplePublicObjectWithErrors)
    assert answer.num_errors == 2
    categories = sorted(e.category for e in answer.errors)
    assert categories == ["OBJECT_NOT_FOUND", "VALIDATION_ERROR"]
    assert any(e.context == {"ids": ["999"]} for e in answer.errors)
    assert sorted(r.id for r in answer.results) == sorted(set(ids) - {ids[1]})
    assert fresh.portal.deal_properties(ids[0])["amount"] == "1234.5"
    assert fresh.portal.deal_properties(ids[1])["amount"] != "1234.5"
    ok = batch.update({"inputs": [{"id": ids[2], "properties": {"amount": "7"}}]})
    assert type(ok).__name__ == "BatchResponseSimplePublicObject" and ok.status == "COMPLETE"
    with pytest.raises(DealsApiException) as failure:
        batch.update({"inputs": [{"id": ids[0], "properties": {"amount": "1"}}] * 101})
    assert failure.value.status == 400
    with pytest.raises(DealsApiException) as failure:
        batch.update({"inputs": [{"id": ids[0], "properties": {"amount": "bad"}}]})
    assert failure.value.status == 400  # a bad value refuses the whole batch


def test_batch_read_caps_with_history(sb, client) -> None:
    batch = client.crm.deals.batch_api
    ids = [{"id": sb.portal.deal_id(r)} for r in range(60)]
    with pytest.raises(DealsApiException) as failure:
        batch.read({"inputs": ids, "propertiesWithHistory": ["dealstage"]})
    assert failure.value.status == 400
    assert json.loads(failure.value.body)["message"] == (
        "The maximum number of inputs supported in a batch request for property histories is 50"
    )
    answer = batch.read({"inputs": ids[:50], "propertiesWithHistory": ["dealstage"]})
    assert len(answer.results) == 50 and answer.results[0].properties_with_history["dealstage"]
    assert len(batch.read({"inputs": ids, "properties": ["amount"]}).results) == 60
    with pytest.raises(DealsApiException):
        batch.read({"inputs": ids * 2})
    with pytest.raises(DealsApiException) as failure:
        client.crm.deals.basic_api.get_page(limit=100, properties_with_history=["dealstage"])
    assert failure.value.status == 400  # a list page with history holds 50 at most
    page = client.crm.deals.basic_api.get_page(limit=50, properties_with_history=["dealstage"])
    assert len(page.results) == 50 and page.results[0].properties_with_history["dealstage"]


def test_batch_create_and_archive(fresh, clock) -> None:
    batch = fresh.client().crm.deals.batch_api
    created = batch.create(
        {"inputs": [{"properties": {"dealname": f"New {i}", "amount": "10"}} for i in range(3)]}
    )
    assert type(created).__name__ == "BatchResponseSimplePublicObject"
    assert [r.properties["dealname"] for r in created.results] == ["New 0", "New 1", "New 2"]
    assert int(created.results[0].created_at.timestamp() * 1000) == int(clock.now * 1000)
    batch.archive({"inputs": [{"id": created.results[0].id}]})
    assert fresh.portal.stores["deals"].archived[-3]


# ---- properties, schemas, custom objects ------------------------------------------------------


def test_properties_api(fresh) -> None:
    client = fresh.client()
    core = client.crm.properties.core_api
    names = {p.name for p in core.get_all("deals").results}
    assert {"dealstage", "amount_in_home_currency", "hs_v2_date_entered_closedwon"} <= names
    stage = core.get_by_name("deals", "dealstage")
    assert stage.type == "enumeration" and [o.value for o in stage.options] == list(STAGE_IDS)
    group = client.crm.properties.groups_api.create(
        "deals", {"name": "kpi_worker", "label": "KPI worker"}
    )
    assert group.name == "kpi_worker"
    created = core.create(
        "deals",
        {
            "name": "kpi_days_in_stage",
            "label": "Days in stage",
            "type": "number",
            "fieldType": "number",
            "groupName": "kpi_worker",
        },
    )
    assert created.name == "kpi_days_in_stage" and created.group_name == "kpi_worker"
    with pytest.raises(Exception) as failure:
        core.create(
            "deals",
            {
                "name": "kpi_days_in_stage",
                "label": "x",
                "type": "number",
                "fieldType": "number",
                "groupName": "kpi_worker",
            },
        )
    assert failure.value.status == 409  # type: ignore[attr-defined]
    assert json.loads(failure.value.body)["category"] == "OBJECT_ALREADY_EXISTS"  # type: ignore[attr-defined]
    with pytest.raises(Exception) as failure:
        core.create(
            "deals",
            {
                "name": "bad_mix",
                "label": "x",
                "type": "number",
                "fieldType": "select",
                "groupName": "kpi_worker",
            },
        )
    assert failure.value.status == 400  # type: ignore[attr-defined]
    with pytest.raises(Exception) as failure:
        core.get_by_name("deals", "nope")
    assert failure.value.status == 404  # type: ignore[attr-defined]
    deal_id = fresh.portal.deal_id(2)
    client.crm.deals.basic_api.update(deal_id, {"properties": {"kpi_days_in_stage": "12"}})
    assert fresh.portal.deal_properties(deal_id)["kpi_days_in_stage"] == "12"
    batch = client.crm.properties.batch_api.create(
        "deals",
        {
            "inputs": [
                {
                    "name": "kpi_win_rate",
                    "label": "Win rate",
                    "type": "number",
                    "fieldType": "number",
                    "groupName": "kpi_worker",
                },
                {
                    "name": "kpi_days_in_stage",
                    "label": "Days",
                    "type": "number",
                    "fieldType": "number",
                    "groupName": "kpi_worker",
                },
            ]
        },
    )
    assert type(batch).__name__ == "BatchResponsePropertyWithErrors"
    assert [p.name for p in batch.results] == ["kpi_win_rate"]
    read = client.crm.properties.batch_api.read(
        "deals", {"inputs": [{"name": "kpi_win_rate"}], "archived": False}
    )
    assert [p.name for p in read.results] == ["kpi_win_rate"]


def test_custom_object_schema_and_upsert(fresh, clock) -> None:
    client = fresh.client()
    schema = client.crm.schemas.core_api.create(
        {
            "name": "kpi_scorecard",
            "labels": {"singular": "KPI Scorecard", "plural": "KPI Scorecards"},
            "primaryDisplayProperty": "kpi_name",
            "requiredProperties": ["kpi_name"],
            "searchableProperties": ["kpi_name", "kpi_key"],
            "properties": [
                {"name": "kpi_name", "label": "Name", "type": "string", "fieldType": "text"},
                {
                    "name": "kpi_key",
                    "label": "Key",
                    "type": "string",
                    "fieldType": "text",
                    "hasUniqueValue": True,
                },
                {"name": "kpi_win_rate", "label": "Win", "type": "number", "fieldType": "number"},
            ],
            "associatedObjects": [],
        }
    )
    assert schema.object_type_id == "2-1"
    assert schema.fully_qualified_name == "p2468013_kpi_scorecard"
    assert [s.name for s in client.crm.schemas.core_api.get_all().results] == ["kpi_scorecard"]
    assert client.crm.schemas.core_api.get_by_id("p_kpi_scorecard").object_type_id == "2-1"
    batch = client.crm.objects.batch_api
    body = {
        "inputs": [
            {
                "id": "alice-2026-Q3",
                "idProperty": "kpi_key",
                "properties": {"kpi_name": "Alice Q3", "kpi_win_rate": "0.25"},
            }
        ]
    }
    first = batch.upsert("p_kpi_scorecard", body)
    assert first.results[0].new is True
    clock.advance(5)
    body["inputs"][0]["properties"]["kpi_win_rate"] = "0.3"
    second = batch.upsert("2-1", body)
    assert second.results[0].new is False and second.results[0].id == first.results[0].id
    records = fresh.portal.object_records("p2468013_kpi_scorecard")
    assert len(records) == 1
    assert records[0]["properties"]["kpi_win_rate"] == "0.3"
    assert records[0]["properties"]["kpi_key"] == "alice-2026-Q3"
    found = client.crm.objects.search_api.do_search(
        "p_kpi_scorecard",
        {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "kpi_key", "operator": "EQ", "value": "alice-2026-Q3"}
                    ]
                }
            ],
            "properties": ["kpi_win_rate"],
        },
    )
    assert found.total == 1 and found.results[0].properties["kpi_win_rate"] == "0.3"
    with pytest.raises(ObjectsApiException) as failure:
        client.crm.objects.basic_api.create(
            "p_kpi_scorecard", {"properties": {"kpi_win_rate": "1"}}
        )
    assert failure.value.status == 400  # kpi_name is required
    with pytest.raises(Exception) as failure:
        client.crm.schemas.core_api.create(
            {"name": "kpi_scorecard", "labels": {"singular": "x"}, "requiredProperties": [],
             "properties": [{"name": "a", "label": "a", "type": "string", "fieldType": "text"}],
             "associatedObjects": []}
        )  # fmt: skip
    assert failure.value.status == 409  # type: ignore[attr-defined]


def test_batch_upsert_partial_failures_name_the_records_by_their_input_id(fresh) -> None:
    """A 207 upsert error names each record as the input did (its idProperty value), as a
    batch update names its ids: a new record has no HubSpot id to name."""
    client = fresh.client()
    client.crm.schemas.core_api.create(
        {
            "name": "kpi_scorecard",
            "labels": {"singular": "KPI Scorecard", "plural": "KPI Scorecards"},
            "primaryDisplayProperty": "kpi_name",
            "requiredProperties": ["kpi_name"],
            "properties": [
                {"name": "kpi_name", "label": "Name", "type": "string", "fieldType": "text"},
                {
                    "name": "kpi_key",
                    "label": "Key",
                    "type": "string",
                    "fieldType": "text",
                    "hasUniqueValue": True,
                },
            ],
            "associatedObjects": [],
        }
    )
    batch = client.crm.objects.batch_api

    def body(*keys: str) -> dict[str, Any]:
        return {
            "inputs": [
                {"id": key, "idProperty": "kpi_key", "properties": {"kpi_name": key}}
                for key in keys
            ]
        }

    existing = batch.upsert("p_kpi_scorecard", body("alice")).results[0].id
    fresh.faults.add(FaultRule(kind="write_failure", path="/batch/", record_ids=("bruno",)))
    fresh.faults.add(FaultRule(kind="write_failure", path="/batch/", record_ids=(existing,)))
    answer = batch.upsert("p_kpi_scorecard", body("alice", "bruno", "chloe"))
    assert type(answer).__name__ == "BatchResponseSimplePublicUpsertObjectWithErrors"
    assert answer.num_errors == 2
    assert sorted(tuple(e.context["ids"]) for e in answer.errors) == [("alice",), ("bruno",)]
    assert {e.category for e in answer.errors} == {"VALIDATION_ERROR"}
    assert all("alice" in e.message or "bruno" in e.message for e in answer.errors)
    assert [r.properties["kpi_key"] for r in answer.results] == ["chloe"]


# ---- auth, OAuth, rate limits, faults ------------------------------------------------------------


def test_missing_and_bad_tokens_are_401(sb) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = requests.get(
            sb.url + "/crm/v3/objects/deals", headers=headers, verify=str(sb.ca_path), timeout=30
        )
        assert response.status_code == 401
        body = response.json()
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert body["message"].startswith("Authentication credentials not found")
        assert body["correlationId"] == response.headers["X-HubSpot-Correlation-Id"]


def test_oauth_refresh_and_expiry(fresh, clock) -> None:
    import hubspot

    oauth = fresh.oauth
    anonymous = hubspot.Client.create(host=fresh.url, ssl_ca_cert=str(fresh.ca_path))
    tokens = anonymous.oauth.tokens_api.create(
        grant_type="refresh_token",
        client_id=oauth.client_id,
        client_secret=oauth.client_secret,
        refresh_token=oauth.refresh_token,
    )
    assert tokens.token_type == "bearer" and tokens.expires_in == 1800
    assert tokens.refresh_token == oauth.refresh_token
    client = fresh.client(access_token=tokens.access_token)
    assert client.crm.deals.basic_api.get_page(limit=1).results
    page = _raw(
        fresh, "GET", "/crm/v3/owners/", headers={"Authorization": f"Bearer {tokens.access_token}"}
    )
    assert "X-HubSpot-RateLimit-Daily" not in page.headers  # OAuth calls: no daily headers
    clock.advance(1801)
    with pytest.raises(DealsApiException) as failure:
        client.crm.deals.basic_api.get_page(limit=1)
    assert failure.value.status == 401
    body = json.loads(failure.value.body)
    assert body["category"] == "EXPIRED_AUTHENTICATION"
    assert body["message"] == "The OAuth token used to make this call expired 1 second(s) ago."
    bad = requests.post(
        fresh.url + "/oauth/v1/token",
        data={"grant_type": "refresh_token", "client_id": oauth.client_id,
              "client_secret": oauth.client_secret, "refresh_token": "stale"},
        verify=str(fresh.ca_path), timeout=30,
    )  # fmt: skip
    assert bad.status_code == 400 and bad.json()["status"] == "BAD_REFRESH_TOKEN"
    bad = requests.post(
        fresh.url + "/oauth/v1/token",
        data={"grant_type": "refresh_token", "client_id": "who", "client_secret": "x",
              "refresh_token": oauth.refresh_token},
        verify=str(fresh.ca_path), timeout=30,
    )  # fmt: skip
    assert bad.status_code == 400 and bad.json()["status"] == "BAD_CLIENT_ID"


def test_expired_token_fault_and_admin_expiry(fresh) -> None:
    client = fresh.client()
    fresh.faults.add(FaultRule(kind="expire_session", path="/crm/v3/objects/deals"))
    with pytest.raises(DealsApiException) as failure:
        client.crm.deals.basic_api.get_page(limit=1)
    assert failure.value.status == 401
    assert json.loads(failure.value.body)["category"] == "EXPIRED_AUTHENTICATION"
    assert client.crm.deals.basic_api.get_page(limit=1).results  # once only
    assert (
        requests.post(
            fresh.url + "/_sandbox/expire-tokens", verify=str(fresh.ca_path), timeout=30
        ).status_code
        == 204
    )
    with pytest.raises(DealsApiException) as failure:
        client.crm.deals.basic_api.get_page(limit=1)
    assert failure.value.status == 401
    assert client.crm.deals.basic_api.get_page(limit=1).results


def test_rate_limits_with_a_fake_monotonic_clock() -> None:
    ticks = FakeClock(1000.0)
    limits = RateLimits(search_per_second=2, burst_per_10s=3, daily=7, monotonic=ticks)
    with HubSpotSandbox.start(seed=1, limits=limits) as sandbox:
        search = lambda: _raw(sandbox, "POST", "/crm/v3/objects/deals/search", json={"limit": 1})  # noqa: E731
        first = search()
        assert first.status_code == 200
        assert "X-HubSpot-RateLimit-Remaining" not in first.headers  # search: no rate headers
        assert search().status_code == 200
        third = search()
        assert third.status_code == 429
        body = third.json()
        assert body["policyName"] == "SECONDLY" and body["errorType"] == "RATE_LIMIT"
        assert body["message"] == "You have reached your secondly limit."
        assert int(third.headers["Retry-After"]) >= 1
        ticks.advance(1.0)
        assert search().status_code == 200
        owners = [_raw(sandbox, "GET", "/crm/v3/owners/") for _ in range(4)]
        assert [r.status_code for r in owners] == [200, 200, 200, 429]
        headers = owners[0].headers
        assert headers["X-HubSpot-RateLimit-Max"] == "3"
        assert headers["X-HubSpot-RateLimit-Remaining"] == "2"
        assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert headers["X-HubSpot-RateLimit-Daily"] == "7"
        assert headers["X-HubSpot-RateLimit-Daily-Remaining"] == "3"
        assert {"X-HubSpot-RateLimit-Secondly", "X-HubSpot-RateLimit-Secondly-Remaining"} <= set(
            headers
        )
        limited = owners[3].json()
        assert limited["policyName"] == "TEN_SECONDLY_ROLLING"
        assert limited["message"] == "You have reached your ten_secondly_rolling limit."
        ticks.advance(10.0)
        assert _raw(sandbox, "GET", "/crm/v3/owners/").status_code == 200
        daily = _raw(sandbox, "GET", "/crm/v3/owners/")
        assert daily.status_code == 429 and daily.json()["policyName"] == "DAILY"
        # urllib3's default Retry honours Retry-After on a GET 429 (it would sleep until
        # midnight here): a client must turn that off to see the 429 at once.
        quick = sandbox.client(retry=Retry(total=2, respect_retry_after_header=False))
        with pytest.raises(DealsApiException) as failure:
            quick.crm.deals.basic_api.get_page()
        assert failure.value.status == 429 and int(failure.value.headers["Retry-After"]) > 10


def test_faults_and_admin_endpoints(fresh) -> None:
    verify = str(fresh.ca_path)
    added = requests.post(
        fresh.url + "/_sandbox/faults",
        json={"kind": "server_error", "status": 502, "path": "owners"},
        verify=verify,
        timeout=30,
    )
    assert added.status_code == 201
    failing = _raw(fresh, "GET", "/crm/v3/owners/")
    assert failing.status_code == 502 and failing.json()["status"] == "error"
    assert _raw(fresh, "GET", "/crm/v3/owners/").status_code == 200
    fresh.faults.add(FaultRule(kind="rate_limit", retry_after=7))
    limited = _raw(fresh, "GET", "/crm/v3/owners/")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    fresh.faults.add(FaultRule(kind="daily_limit"))
    assert _raw(fresh, "GET", "/crm/v3/owners/").json()["policyName"] == "DAILY"
    assert requests.delete(fresh.url + "/_sandbox/faults", verify=verify, timeout=30).ok
    stats = requests.get(fresh.url + "/_sandbox/stats", verify=verify, timeout=30).json()
    assert stats["by_route"]["GET /crm/v3/owners/"] == 1  # faulted calls are not served
    assert fresh.stats.by_route == stats["by_route"]


def test_long_get_urls_are_414_and_unknown_routes_404(sb) -> None:
    long = "&".join(f"properties=p{i:05d}_{'x' * 20}" for i in range(400))
    response = _raw(sb, "GET", f"/crm/v3/objects/deals?{long}")
    assert response.status_code == 414
    missing = _raw(sb, "GET", "/crm/v3/objects/nothing_here")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"
    # A long property list in a POST body is fine.
    names = [f"p{i:05d}_{'x' * 20}" for i in range(400)] + ["amount"]
    body = {"inputs": [{"id": sb.portal.deal_id(0)}], "properties": names}
    answer = _raw(sb, "POST", "/crm/v3/objects/deals/batch/read", json=body)
    assert answer.status_code == 200 and list(answer.json()["results"][0]["properties"]) == [
        "amount"
    ]


def test_start_is_fast_and_describe() -> None:
    import time

    started = time.perf_counter()
    with HubSpotSandbox.start(seed=3, deals=200_000, limits=UNLIMITED) as sandbox:
        elapsed = time.perf_counter() - started
        lines = list(sandbox.describe())
        page = sandbox.client().crm.deals.search_api.do_search(
            {
                "filterGroups": [
                    {
                        "filters": [
                            {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}
                        ]
                    }
                ],
                "sorts": ["hs_lastmodifieddate"],
                "limit": 200,
            }
        )
    assert elapsed < 15  # generous: a shared CI machine (about a second when idle)
    assert page.total > 190_000 and len(page.results) == 200
    assert lines[0].startswith("Sandbox HubSpot portal 2468013 listening on https://127.0.0.1:")
    assert any("pat-sandbox-demo" in line for line in lines)


# ---- CLI ----------------------------------------------------------------------------------------


def test_cli_serves_the_benchmark_client() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_sandbox_hubspot

    result = bench_sandbox_hubspot.run(1500)
    assert result.rows == result.live and result.search_calls == result.minimum_calls
    lines = result.lines()
    assert lines[0].startswith("deals 1,500") and "ratio 1.000" in lines[3]


def test_cli_errors() -> None:
    runner = CliRunner()
    outcome = runner.invoke(main, ["sandbox", "hubspot", "--reference-date", "2026-09-15"])
    assert outcome.exit_code == 2 and "last day of a calendar quarter" in outcome.output
    outcome = runner.invoke(main, ["sandbox", "hubspot", "--fault", '{"kind": "meteor"}'])
    assert outcome.exit_code == 2 and "unknown fault kind 'meteor'" in outcome.output
    outcome = runner.invoke(main, ["sandbox", "hubspot", "--host", "0.0.0.0"])  # noqa: S104
    assert outcome.exit_code == 2 and "loopback only" in outcome.output
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        outcome = runner.invoke(main, ["sandbox", "hubspot", "--port", str(port)])
    assert outcome.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in outcome.output
