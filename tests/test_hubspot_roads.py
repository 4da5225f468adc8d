"""The two roads of a HubSpot full pull (connectors/hubspot/roads.py): the formula, the
client-side filters and the URL estimate alone; then on the sandbox portal, through the real
hubspot-api-client: the same store and KPIs by both roads, the road following the paced
limits and the share of records a filter keeps, the cursor of a list pull, incremental pulls
searching, a property list too long for a URL, and faults on the list road."""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import hubspot
import numpy as np
import pytest
from hubspot.crm.objects import ApiException
from stored_rows import stored_table
from test_connector_hubspot import Sleeps, config, connect
from test_pipeline_hubspot import AS_OF, REFERENCE, UNLIMITED, Clock, hubspot_config

from crm_kpi_worker.connectors.hubspot.connector import HubSpotConnector
from crm_kpi_worker.connectors.hubspot.roads import (
    MAX_LIST_REQUEST,
    RoadTimes,
    client_filter,
    list_page,
    list_request_chars,
)
from crm_kpi_worker.connectors.hubspot.search import parse_stamp
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox
from crm_kpi_worker.sync.pipeline import RunOptions, run_once
from crm_kpi_worker.sync.store import Store
from crm_kpi_worker.sync.store.schema import (
    accounts,
    activities,
    deals,
    exclusions,
    pulled_digests,
    quotas,
    reps,
)

LIST_DEALS = "GET /crm/v3/objects/deals"
SEARCH_DEALS = "POST /crm/v3/objects/deals/search"
#: HubSpot's limits times ten: the same ratios (so the same choices), and no pacing wait for
#: the few hundred records of the sandbox portal.
SCALED = {"search_per_second": 50, "per_10_seconds": 1_900}
#: Free/Starter's 100 per 10 s against 5 searches a second, times ten.
SCALED_STARTER = {"search_per_second": 50, "per_10_seconds": 1_000}


# ---- the formula, the filters, the URL ------------------------------------------------------


def times_at(per_10_seconds: int, *, history: bool = False) -> RoadTimes:
    return RoadTimes.at(
        search_per_second=5,
        api_per_second=per_10_seconds / 10,
        search_page=200,
        list_page=list_page(200, history=history),
        history=history,
    )


def test_the_list_road_is_faster_only_under_a_general_limit_above_100_per_10_seconds() -> None:
    pro = times_at(190)
    assert (pro.search, pro.list) == (pytest.approx(1.0), pytest.approx(10 / 19))
    assert pro.faster(1000, 1000) == "list"
    starter = times_at(100)  # 5 searches of 200 against 10 lists of 100: 1.0 s each
    assert (starter.search, starter.list) == (pytest.approx(1.0), pytest.approx(1.0))
    assert not starter.list_can_win and starter.faster(1000, 1000) == "search"
    # Close-date history: 20 calls per 1,000 deals on either road (batch reads of 50, or list
    # pages of 50 carrying it): a tie keeps search.
    history = times_at(190, history=True)
    assert history.search == history.list == pytest.approx(20 / 19)
    assert history.faster(1000, 1000) == "search"
    # A filtered population: the list reads everything, so it pays above a 10/19 share.
    assert pro.faster(52, 100) == "search" and pro.faster(53, 100) == "list"


def test_client_filters_keep_what_search_answers() -> None:
    churned = client_filter([{"propertyName": "churn_date", "operator": "HAS_PROPERTY"}])
    demos = client_filter(
        [{"propertyName": "hs_activity_type", "operator": "IN", "values": ["Demo"]}]
    )
    assert churned is not None and demos is not None
    values: list[Any] = [None, "", "2026-01-31"]
    assert [churned({"properties": {"churn_date": v}}) for v in values] == [False, False, True]
    assert not churned({"properties": {}})
    types: list[Any] = ["Demo", "demo", "Discovery call", None]
    assert [demos({"properties": {"hs_activity_type": t}}) for t in types] == [
        True,
        True,
        False,
        False,
    ]
    both = client_filter(
        [
            {"propertyName": "a", "operator": "HAS_PROPERTY"},
            {"propertyName": "b", "operator": "IN", "values": ["x"]},
        ]
    )
    assert both is not None
    assert both({"properties": {"a": "1", "b": "X"}}) and not both({"properties": {"b": "x"}})
    assert client_filter([{"propertyName": "a", "operator": "GTE", "value": "1"}]) is None


def test_the_url_estimate_is_what_the_client_sends() -> None:
    api_client = hubspot.Client.create(access_token="pat-x").crm.objects.basic_api.api_client
    properties = ["dealname", "amount", "hs_v2_date_entered_closedwon"]
    params = [
        ("limit", 50),
        ("after", "x" * 64),
        ("properties", properties),
        ("propertiesWithHistory", ["closedate"]),
        ("archived", False),
    ]
    multi = {"properties": "multi", "propertiesWithHistory": "multi"}
    # The client's GET hands urllib3 these fields, which encodes them so into the URL.
    query = urllib.parse.urlencode(api_client.parameters_to_tuples(params, multi))
    sent = len("/crm/v3/objects/deals") + 1 + len(query)
    assert list_request_chars("https://api.hubapi.com", "deals", properties, ["closedate"], 50) == (
        sent
    )
    # A base URL with a path (a proxy) lengthens every request target.
    assert list_request_chars("https://proxy.example/hs/", "deals", properties, [], 100) == (
        list_request_chars("https://api.hubapi.com", "deals", properties, [], 100) + len("/hs")
    )


# ---- on the sandbox portal ------------------------------------------------------------------


@pytest.fixture(scope="module")
def portal() -> Iterator[HubSpotSandbox]:
    with HubSpotSandbox.start(seed=11, reference_date=REFERENCE, limits=UNLIMITED) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_faults(portal: HubSpotSandbox) -> Iterator[None]:
    yield
    portal.faults.clear()


def served(sandbox: HubSpotSandbox, action: Callable[[], Any]) -> tuple[Any, Counter[str]]:
    """What ``action`` returned, and the calls the portal served meanwhile, by route."""
    before = Counter(sandbox.stats.by_route)
    result = action()
    return result, Counter(sandbox.stats.by_route) - before


def records_of(connector: HubSpotConnector, stream: str) -> list[dict[str, Any]]:
    return [record for page in connector.pull(stream, None) for record in page.records]


def mapping_with(**changes: Any) -> dict[str, Any]:
    return {**config().sources[0].mapping.model_dump(exclude_unset=True), **changes}


def test_both_roads_give_the_same_store_and_kpis(portal: HubSpotSandbox, tmp_path: Path) -> None:
    tables = (reps, accounts, deals, activities, quotas, pulled_digests)
    held: dict[str, Any] = {}
    calls: dict[str, Counter[str]] = {}
    for road in ("search", "list"):
        app_config = hubspot_config(portal, tmp_path / f"{road}.sqlite")
        source = app_config.sources[0].with_changes(full_pull=road)
        app_config = app_config.replace_source(source)
        with Store.open(app_config.store.resolve_url()) as store:
            dry_run = RunOptions(as_of=AS_OF, dry_run=True)
            result, calls[road] = served(portal, partial(run_once, app_config, store, dry_run))
            assert result.status == "completed", result.report()
            kpis = [r._replace(run_id=None, changed_at=None) for r in store.kpis()]
            held[road] = {
                **{table.name: stored_table(store, table, "sandbox") for table in tables},
                "exclusions": stored_table(store, exclusions, "sandbox", leave_out={"recorded_at"}),
                "kpis": sorted(kpis, key=repr),
                "pulled": result.report()["sources"][0]["pulled"],
            }
            # A digest starts with 8 characters of the config's own (which names the road).
            for row in held[road]["pulled_digests"]:
                row["digest"] = row["digest"][8:]
    assert held["list"] == held["search"]
    assert len(held["list"]["deals"]) == int((~portal.portal.data.deals.is_deleted).sum())
    assert held["list"]["kpis"] and held["list"]["exclusions"]
    # Each road took its own way: the list road searched only to count (deals; companies and
    # meetings, whose filters it applied on the client, twice each).
    search_deals = calls["search"][SEARCH_DEALS]
    assert calls["search"][LIST_DEALS] == 0 and search_deals >= 3
    assert calls["list"][SEARCH_DEALS] == 1 and calls["list"][LIST_DEALS] >= 12
    for object_type in ("companies", "meetings"):
        assert calls["list"][f"POST /crm/v3/objects/{object_type}/search"] == 2
        assert calls["list"][f"GET /crm/v3/objects/{object_type}"] >= 1
    # Close-date history came in the list answers: no batch read at all.
    assert calls["list"]["POST /crm/v3/objects/deals/batch/read"] == 0
    assert calls["search"]["POST /crm/v3/objects/deals/batch/read"] >= 12


@pytest.mark.parametrize(
    ("limits", "history", "road"),
    [
        (SCALED, False, "list"),  # 190 per 10 s: the list road is 1.9 times as fast
        (SCALED_STARTER, False, "search"),  # 100 per 10 s: a tie keeps search
        (SCALED, True, "search"),  # with close-date history: 20 general calls either way
    ],
)
def test_the_road_of_a_full_deal_pull_follows_the_paced_limits(
    portal: HubSpotSandbox, limits: dict[str, int], history: bool, road: str
) -> None:
    connector = connect(
        portal, rate_limits=limits, mapping=mapping_with(close_date_history=history)
    )
    records, calls = served(portal, lambda: records_of(connector, "deals"))
    live = int((~portal.portal.data.deals.is_deleted).sum())
    assert len(records) == len({r["id"] for r in records}) == live
    if road == "list":
        assert calls[LIST_DEALS] == -(-live // 100) and calls[SEARCH_DEALS] == 1  # the count
    else:
        assert calls[LIST_DEALS] == 0 and calls[SEARCH_DEALS] == -(-live // 200)


def test_a_filtered_stream_lists_only_when_enough_of_its_records_match(
    portal: HubSpotSandbox,
) -> None:
    data = portal.portal
    meetings, companies = data.store("meetings"), data.store("companies")
    demo_types = meetings.columns["hs_activity_type"]
    demos = int((demo_types.text_mask(lambda v: v == "Demo")).sum())
    churned = int((~np.isnan(companies.columns["churn_date"].keys())).sum())
    assert demos / meetings.size > 10 / 19 > churned / companies.size  # 81% and 1%
    connector = connect(portal, rate_limits=SCALED)
    listed, calls = served(portal, lambda: records_of(connector, "activities"))
    assert len(listed) == demos
    assert all(r["properties"]["hs_activity_type"] == "Demo" for r in listed)
    assert calls["GET /crm/v3/objects/meetings"] == -(-meetings.size // 100)
    assert calls["POST /crm/v3/objects/meetings/search"] == 2  # matching, then everything
    searched, calls = served(portal, lambda: records_of(connector, "accounts"))
    assert len(searched) == churned
    assert calls["GET /crm/v3/objects/companies"] == 0
    assert calls["POST /crm/v3/objects/companies/search"] == 2 + 1  # two counts, one page
    # Where the list road cannot win even unfiltered, nothing is counted.
    slow = connect(portal, rate_limits=SCALED_STARTER)
    again, calls = served(portal, lambda: records_of(slow, "activities"))
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in listed)
    assert calls["POST /crm/v3/objects/meetings/search"] == -(-demos // 200)


def test_a_property_list_too_long_for_a_url_keeps_search(
    portal: HubSpotSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    connector = connect(portal, full_pull="list")
    # The worker's own deal properties are read along the deal pull: 300 long names.
    own = [f"kpi_{'x' * 30}_{n:03d}" for n in range(300)]
    connector.read_along({"deals": own})
    properties = [*connector.deal_properties(), "hs_object_id"]
    assert list_request_chars(portal.url, "deals", properties, ["closedate"], 50) > 8_192
    with caplog.at_level(logging.INFO, logger="crm_kpi_worker.connectors.hubspot.connector"):
        records, calls = served(portal, lambda: records_of(connector, "deals"))
    assert calls[LIST_DEALS] == 0 and calls[SEARCH_DEALS] >= 3
    assert len(records) == int((~portal.portal.data.deals.is_deleted).sum())
    (line,) = [r.getMessage() for r in caplog.records if "URL" in r.getMessage()]
    assert line.startswith("sandbox: deals: the full pull searches: the list endpoint's URL")
    assert f"more than the {MAX_LIST_REQUEST} HubSpot is sure to take" in line


def test_a_list_request_just_within_the_limit_is_served(portal: HubSpotSandbox) -> None:
    """The estimate is not below what is sent: a list URL of just under MAX_LIST_REQUEST
    characters by the estimate passes the sandbox's 8 KB check, one a little over 8 KB by it
    is refused with 414 (the client raises)."""
    api = connect(portal).apis.objects_basic
    after = "9" * 18  # past every id; shorter than the 64 characters the estimate keeps
    names = ["dealname"]

    def estimate(names: list[str]) -> int:
        return list_request_chars(portal.url, "deals", names, [], 100)

    while estimate([*names, "p" * 40]) <= MAX_LIST_REQUEST:
        names.append("p" * 40)
    page = api.get_page("deals", limit=100, after=after, properties=names, archived=False)
    assert page.results == []  # no 414
    while estimate(names) - 64 + len(after) <= 8_192:
        names.append("p" * 40)
    with pytest.raises(ApiException) as refused:
        api.get_page("deals", limit=100, after=after, properties=names, archived=False)
    assert refused.value.status == 414


def test_faults_on_the_list_road_are_retried_as_on_search(portal: HubSpotSandbox) -> None:
    sleeps = Sleeps()
    connector = connect(portal, sleeps, full_pull="list")
    page = "/crm/v3/objects/deals$"
    portal.faults.add(FaultRule(kind="rate_limit", method="GET", path=page, retry_after=3, times=2))
    portal.faults.add(FaultRule(kind="server_error", method="GET", path=page, status=503, times=1))
    records, calls = served(portal, lambda: records_of(connector, "deals"))
    live = int((~portal.portal.data.deals.is_deleted).sum())
    assert len(records) == len({r["id"] for r in records}) == live
    assert sleeps.waits[:2] == [3.0, 3.0] and len(sleeps.waits) == 3 and sleeps.waits[2] > 0
    # Every attempt counted, as on search: pipelines, the count, the pages, the three refused.
    assert connector.api_calls == 1 + 1 + calls[LIST_DEALS] + 3


@pytest.fixture
def clocked() -> Iterator[tuple[HubSpotSandbox, Clock]]:
    clock = Clock()
    with HubSpotSandbox.start(reference_date=REFERENCE, clock=clock, limits=UNLIMITED) as sandbox:
        yield sandbox, clock


def test_a_list_pull_ends_on_the_servers_time_before_it_and_the_next_pull_searches(
    clocked: tuple[HubSpotSandbox, Clock],
) -> None:
    """Records changed during a list pull: one already read (its old version), one read
    changed. Only the last page has a cursor, the server's time before the pull, not the
    later stamp read; so the incremental pull that follows (by search) reads both changes."""
    sandbox, clock = clocked
    connector = connect(sandbox, full_pull="list")
    started = dt.datetime.fromtimestamp(clock.now, dt.UTC)
    pages = connector.pull("deals", None)
    first = next(pages)
    read_early = first.records[0]["id"]
    clock.advance(10)
    store = sandbox.portal.store("deals")
    read_late = store.record_id(int(np.flatnonzero(~store.archived)[-1]))
    sandbox.portal.touch_deals([store.row_of(read_early), store.row_of(read_late)], amount="4242")
    rest = list(pages)
    assert [page.cursor for page in [first, *rest[:-1]]] == [None] * len(rest)
    cursor = rest[-1].cursor
    assert cursor is not None
    assert started - dt.timedelta(seconds=1) < parse_stamp(cursor) <= started
    late = next(r for page in rest for r in page.records if r["id"] == read_late)
    assert late["properties"]["amount"] == "4242"  # its stamp is 10 minutes after the cursor
    assert first.records[0]["properties"]["amount"] != "4242"
    clock.advance(1)
    listings: list[Any] = []
    get_page = connector.apis.objects_basic.get_page

    def spy(object_type: str, **options: Any) -> Any:
        listings.append(options.get("archived"))
        return get_page(object_type, **options)

    connector.apis.objects_basic.get_page = spy
    changed, calls = served(sandbox, lambda: list(connector.pull("deals", cursor)))
    again = {r["id"]: r for page in changed for r in page.records}
    assert {read_early, read_late} <= set(again)
    assert again[read_early]["properties"]["amount"] == "4242"
    assert calls[SEARCH_DEALS] >= 1 and listings == [True]  # only the archived listing
