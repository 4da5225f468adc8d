"""The HubSpot connector on the sandbox portal, through the real hubspot-api-client: retries,
limits, authentication, pacing, batch writes, histories. (The CRM-neutral contract is in
test_connector_contract.py; the 10,000 cap in test_hubspot_search.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.base import TargetField, TargetObject
from crm_kpi_worker.connectors.errors import (
    AuthenticationFailed,
    DailyLimitExceeded,
    SessionExpired,
    TlsError,
)
from crm_kpi_worker.connectors.hubspot.config import HubSpotSource
from crm_kpi_worker.connectors.hubspot.connector import HubSpotConnector, connect_hubspot
from crm_kpi_worker.connectors.hubspot.transport import SlidingWindow
from crm_kpi_worker.connectors.hubspot.writes import BatchWriter
from crm_kpi_worker.connectors.retry import RetryPolicy
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.normalize import NormalizeContext, normalize

UNLIMITED = RateLimits(search_per_second=None, burst_per_10s=None, daily=None)
FAST = {"search_per_second": 100, "per_10_seconds": 10_000}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[HubSpotSandbox]:
    with HubSpotSandbox.start(seed=11, limits=UNLIMITED) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_faults(sandbox: HubSpotSandbox) -> Iterator[None]:
    yield
    sandbox.faults.clear()


def config() -> AppConfig:
    return load_config(path_of("demo-hubspot.yaml"))


def source_for(sandbox: HubSpotSandbox, **changes: Any) -> HubSpotSource:
    source = config().sources[0]
    assert isinstance(source, HubSpotSource)
    settings: dict[str, Any] = {
        "base_url": sandbox.url,
        "ca_bundle": str(sandbox.ca_path),
        "rate_limits": FAST,
    }
    settings.update(changes)
    return source.with_changes(**settings)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def connect(
    sandbox: HubSpotSandbox, sleeps: Sleeps | None = None, **changes: Any
) -> HubSpotConnector:
    policy = RetryPolicy(sleep=sleeps or Sleeps(), random=lambda: 0.5)
    return connect_hubspot(
        source_for(sandbox, **changes), config().currency, retry_policy=policy, environ={}
    )


def test_a_rate_limit_answer_is_waited_out_as_retry_after_says(sandbox: HubSpotSandbox) -> None:
    sleeps = Sleeps()
    connector = connect(sandbox, sleeps, full_pull="search")
    sandbox.faults.add(FaultRule(kind="rate_limit", path="/search", times=2, retry_after=3))
    pages = list(connector.pull("deals", None))
    assert sum(len(p.records) for p in pages) > 0
    assert sleeps.waits == [3.0, 3.0]


def test_a_server_error_is_retried_with_backoff(sandbox: HubSpotSandbox) -> None:
    sleeps = Sleeps()
    connector = connect(sandbox, sleeps)
    sandbox.faults.add(FaultRule(kind="server_error", path="/owners", times=1, status=502))
    pages = list(connector.pull("users", None))
    assert sum(len(p.records) for p in pages) == len(sandbox.portal.data.users)
    assert len(sleeps.waits) == 1 and sleeps.waits[0] > 0


def test_the_daily_limit_stops_the_run_without_retrying(sandbox: HubSpotSandbox) -> None:
    sleeps = Sleeps()
    connector = connect(sandbox, sleeps, full_pull="search")
    sandbox.faults.add(FaultRule(kind="daily_limit", path="/search", times=1))
    with pytest.raises(DailyLimitExceeded, match="daily API limit is used up"):
        list(connector.pull("deals", None))
    assert sleeps.waits == []


def test_a_refused_token_is_a_clear_error_without_the_token(sandbox: HubSpotSandbox) -> None:
    source = source_for(sandbox)
    connector = connect_hubspot(
        source, config().currency, environ={"CRM_KPI_HUBSPOT_TOKEN": "pat-wrong-token-123"}
    )
    with pytest.raises(SessionExpired) as caught:
        list(connector.pull("users", None))
    assert "refused the access token" in str(caught.value)
    assert "pat-wrong-token-123" not in str(caught.value) + repr(caught.value)


def oauth_source(sandbox: HubSpotSandbox, refresh_token: str | None = None) -> HubSpotSource:
    o = sandbox.oauth
    auth = {
        "method": "oauth",
        "client_id": {"value": o.client_id},
        "client_secret": {"env": "HS_SECRET"},
        "refresh_token": {"env": "HS_REFRESH"},
    }
    return source_for(sandbox, auth=auth)


def test_oauth_gets_a_token_and_renews_it_once_when_it_expires(sandbox: HubSpotSandbox) -> None:
    o = sandbox.oauth
    environ = {"HS_SECRET": o.client_secret, "HS_REFRESH": o.refresh_token}
    before = sandbox.stats.oauth_calls
    connector = connect_hubspot(oauth_source(sandbox), config().currency, environ=environ)
    assert sandbox.stats.oauth_calls == before + 1
    sandbox.faults.add(FaultRule(kind="expire_session", path="/owners", times=1))
    pages = list(connector.pull("users", None))
    assert sum(len(p.records) for p in pages) == len(sandbox.portal.data.users)
    assert sandbox.stats.oauth_calls == before + 2


def test_a_bad_refresh_token_is_refused_at_connect(sandbox: HubSpotSandbox) -> None:
    o = sandbox.oauth
    environ = {"HS_SECRET": o.client_secret, "HS_REFRESH": "not-the-refresh-token"}
    with pytest.raises(AuthenticationFailed, match="refused to refresh") as caught:
        connect_hubspot(oauth_source(sandbox), config().currency, environ=environ)
    assert "not-the-refresh-token" not in str(caught.value)
    assert o.client_secret not in str(caught.value)


def test_an_untrusted_certificate_is_a_tls_error(sandbox: HubSpotSandbox) -> None:
    source = source_for(sandbox).with_changes(ca_bundle=None)
    sleeps = Sleeps()
    connector = connect_hubspot(
        source, config().currency, environ={}, retry_policy=RetryPolicy(sleep=sleeps)
    )
    with pytest.raises(TlsError, match="ca_bundle"):
        list(connector.pull("stages", None))
    assert sleeps.waits == []  # never retried


def test_the_sliding_window_paces_calls_without_sleeping_for_real() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    window = SlidingWindow(5, 1.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(12):
        window.acquire()
    # 12 calls at 5 a second: two waits of a full second (calls 6 and 11).
    assert waits == [1.0, 1.0] and now[0] == 2.0
    window.lower_to(100, 10.0)  # stricter: 10 a second is looser than 5 a second: ignored
    assert (window.limit, window.period) == (5, 1.0)
    window.lower_to(2, 1.0)
    assert (window.limit, window.period) == (2, 1.0)


def test_the_connector_paces_searches_at_the_configured_rate(sandbox: HubSpotSandbox) -> None:
    connector = connect(
        sandbox, rate_limits={"search_per_second": 2, "per_10_seconds": 100}, full_pull="search"
    )
    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    window = connector.transport.windows["search"]
    window._clock = lambda: clock[0]  # a fake clock, never a real sleep
    window._sleep = sleep
    pages = list(connector.pull("deals", None))
    searches = len(pages)
    assert searches >= 3
    # 2 a second: every third search waits for the window (with its 2% margin).
    assert len(waits) == (searches - 1) // 2
    assert all(w == pytest.approx(1.02) for w in waits)


def test_one_bad_value_fails_only_its_record(sandbox: HubSpotSandbox) -> None:
    connector = connect(sandbox)
    target = TargetField("deals", "kpi_test_number", "number", "Test number")
    connector.create_targets([], [target])
    ids = [sandbox.portal.deal_id(row) for row in range(40)]
    ids = [i for i in ids if sandbox.portal.deal_properties(i) is not None][:30]
    values: dict[str, dict[str, Any]] = {i: {target.name: n} for n, i in enumerate(ids)}
    values[ids[17]] = {target.name: "not a number"}
    before = connector.api_calls
    results = connector.update("deals", values)
    assert [r.key for r in results] == ids
    assert [r.key for r in results if not r.success] == [ids[17]]
    assert connector.api_calls - before <= 1 + 2 * 5  # halves down to the record at fault
    assert sandbox.portal.deal_properties(ids[3])[target.name] == "3"


def test_an_upsert_refused_by_hubspot_reports_hubspots_own_reason(sandbox: HubSpotSandbox) -> None:
    connector = connect(sandbox)
    card = TargetObject("p_kpi_upsert_test", "Upsert test", "Upsert tests", "Name")
    key = TargetField(card.name, "kpi_upsert_key", "text", "Key", external_id=True, unique=True)
    value = TargetField(card.name, "kpi_upsert_value", "number", "Value")
    connector.create_targets([card], [key, value])
    keys = [f"rep-{n}:2026-Q3" for n in range(5)]
    connector.upsert(card.name, key.name, {k: {value.name: 1} for k in keys[:2]})  # 2 exist
    sandbox.faults.add(
        FaultRule(
            kind="write_failure", path="/batch/upsert", record_ids=(keys[1], keys[3]), times=None
        )
    )
    results = connector.upsert(card.name, key.name, {k: {value.name: 2} for k in keys})
    assert [r.key for r in results] == keys
    failed = {r.key: r for r in results if not r.success}
    assert sorted(failed) == [keys[1], keys[3]]  # an existing record and a new one
    for record_key, result in failed.items():
        assert result.error_code == "VALIDATION_ERROR"  # HubSpot's category, not ours
        assert result.error_message == (
            f"Record {record_key} could not be written (injected write failure)."
        )
    assert [r.created for r in results if r.success] == [False, True, True]


def test_batch_errors_are_matched_to_the_records_they_name() -> None:
    batch = [(key, {}) for key in ("k1", "k2", "k3", "k4")]
    body = {
        "status": "COMPLETE",
        "results": [{"id": "101", "properties": {"key": "k1"}, "new": True}],
        "numErrors": 3,
        "errors": [
            {"category": "VALIDATION_ERROR", "message": "bad k2", "context": {"ids": ["k2"]}},
            {"category": "CONFLICT", "message": "k3 taken", "context": {"key": ["k3"]}},
            {"category": "RATE_LIMITS", "message": "try later", "context": {}},
        ],
    }
    results = BatchWriter._results(batch, body, False, "key")
    outcome = [(r.key, r.success, r.error_code, r.error_message) for r in results]
    assert outcome[:3] == [
        ("k1", True, None, None),
        ("k2", False, "VALIDATION_ERROR", "bad k2"),
        ("k3", False, "CONFLICT", "k3 taken"),
    ]
    key, success, code, message = outcome[3]
    assert (key, success, code) == ("k4", False, "UNEXPECTED_RESPONSE")
    assert message is not None and message.endswith("without naming them: RATE_LIMITS try later")


def test_close_date_history_feeds_the_slips(sandbox: HubSpotSandbox) -> None:
    connector = connect(sandbox)
    records = [r for page in connector.pull("deals", None) for r in page.records]
    with_history = [r for r in records if "propertiesWithHistory" in r]
    assert len(with_history) == len(records)
    app_config = config()
    context = NormalizeContext.for_source(app_config, "sandbox")
    out = normalize(context, "deals", records)
    slipped = {deal_id for deal_id, changes in out.field_changes.items() if changes}
    data = sandbox.portal.data
    expected = {
        sandbox.portal.deal_id(int(row))
        for row in set(data.close_date_changes.deal.tolist())
        if not data.deals.is_deleted[row]
    }
    assert slipped == expected
    # Stage history from hs_v2_date_entered_*: the first stage at creation, in order.
    deal = next(iter(out.deals))
    stages = out.stage_changes[deal.id]
    assert stages and stages[0].entered_at == deal.created_at


def test_archived_deals_are_reported_by_the_next_incremental_pull(
    sandbox: HubSpotSandbox,
) -> None:
    connector = connect(sandbox)
    pages = list(connector.pull("deals", None))
    cursor = pages[-1].cursor
    assert cursor is not None
    victim = pages[0].records[0]["id"]
    sandbox.portal.archive_deal(victim)
    again = list(connector.pull("deals", cursor))
    deleted = {i for page in again for i in page.deleted_ids}
    assert victim in deleted
    # Deals archived long before the cursor are not reported again.
    data = sandbox.portal.data
    old = {sandbox.portal.deal_id(int(r)) for r in data.deals.is_deleted.nonzero()[0]}
    assert not (old & deleted)
