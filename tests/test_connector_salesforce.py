"""The Salesforce connector against the sandbox: logins, retries, limits, sessions, SOQL safety,
API call counts, child results, currency checks. Waits are recorded, never slept."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import create_and_grant
from requests.adapters import BaseAdapter
from salesforce_paging import fewest_pages, inlined_rows, pages_of, record_rows

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors import errors
from crm_kpi_worker.connectors.base import STREAMS, TargetField
from crm_kpi_worker.connectors.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    CurrencyCheckFailed,
    DailyLimitExceeded,
    RateLimited,
    ServerError,
    SessionExpired,
    TlsError,
)
from crm_kpi_worker.connectors.retry import RetryPolicy
from crm_kpi_worker.connectors.salesforce import SalesforceConnector, client, connect_salesforce
from crm_kpi_worker.connectors.salesforce.config import SalesforceSource
from crm_kpi_worker.connectors.salesforce.resources import parse_stamp
from crm_kpi_worker.connectors.salesforce.soql import UnsafeSoql
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.server import Credentials, SalesforceSandbox
from crm_kpi_worker.sandbox.salesforce.soql import parse
from crm_kpi_worker.sync.config import CurrencySettings
from crm_kpi_worker.sync.config_loader import load_config

DEMO = load_config(path_of("demo-salesforce.yaml"))
EUR = DEMO.currency


class Waits(list[float]):
    """An injected sleep: records each wait instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def source_for(sandbox: SalesforceSandbox, **changes: Any) -> SalesforceSource:
    demo = DEMO.sources[0]
    assert isinstance(demo, SalesforceSource)
    settings: dict[str, Any] = {
        "login_url": sandbox.url,
        "instance_url": sandbox.url,
        "ca_bundle": sandbox.ca_path,
        **changes,
    }
    if isinstance(settings.get("auth"), dict) and settings["auth"]["method"] == "session":
        settings["instance_url"] = None
    result: SalesforceSource = demo.with_changes(**settings)
    return result


def connect(
    sandbox: SalesforceSandbox,
    waits: Waits | None = None,
    currency: CurrencySettings = EUR,
    environ: dict[str, str] | None = None,
    **changes: Any,
) -> SalesforceConnector:
    return connect_salesforce(
        source_for(sandbox, **changes),
        currency,
        environ=environ or {},
        retry_policy=RetryPolicy(sleep=waits if waits is not None else Waits()),
    )


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox.start(seed=7) as running:
        yield running


def _pull_all(connector: SalesforceConnector, stream: str, since: str | None = None) -> list[Any]:
    return [record for page in connector.pull(stream, since) for record in page.records]


# ---- logins ---------------------------------------------------------------------------------


def _auth(sandbox: SalesforceSandbox, method: str) -> tuple[dict[str, Any], dict[str, str]]:
    user = {"value": "demo@sandbox.local"}
    if method == "password":
        return {"method": method, "username": user, "password": {"env": "PW"}}, {"PW": "demo"}
    if method == "oauth_password":
        return (
            {
                "method": method,
                "client_id": "sandbox",
                "client_secret": {"env": "SECRET"},
                "username": user,
                "password": {"env": "PW"},
            },
            {"PW": "demo", "SECRET": "sandbox"},
        )
    if method == "jwt":
        return (
            {
                "method": method,
                "client_id": "sandbox",
                "username": user,
                "private_key": {"file": str(sandbox.jwt_key_path)},
            },
            {},
        )
    if method == "client_credentials":
        return (
            {"method": method, "client_id": "sandbox", "client_secret": {"env": "SECRET"}},
            {"SECRET": "sandbox"},
        )
    if method == "refresh_token":
        return (
            {
                "method": method,
                "client_id": "sandbox",
                "client_secret": {"env": "SECRET"},
                "refresh_token": {"env": "REFRESH"},
            },
            {"SECRET": "sandbox", "REFRESH": sandbox.app.issue_refresh_token()},
        )
    token = sandbox.app.new_session(sandbox.org.admin_row)
    return (
        {"method": "session", "session_id": {"env": "SID"}, "instance_url": sandbox.url},
        {"SID": token},
    )


@pytest.mark.parametrize(
    "method",
    ["password", "oauth_password", "jwt", "client_credentials", "refresh_token", "session"],
)
def test_every_auth_method_logs_in_and_pulls(sandbox: SalesforceSandbox, method: str) -> None:
    auth, environ = _auth(sandbox, method)
    domain = "acme.my" if method == "client_credentials" else "login"
    connector = connect(sandbox, environ=environ, auth=auth, domain=domain)
    assert len(_pull_all(connector, "stages")) == 8
    assert sandbox.stats.login_calls == (0 if method == "session" else 1)
    # Logins are not API calls: the connector and the sandbox agree on the count (the user's
    # currency is read when the method names a user).
    named = method in ("password", "oauth_password", "jwt")
    assert connector.api_calls == sandbox.stats.api_calls == (3 if named else 2)


def test_a_refused_password_is_a_clear_error_and_not_retried(sandbox: SalesforceSandbox) -> None:
    waits = Waits()
    auth, _ = _auth(sandbox, "password")
    with pytest.raises(AuthenticationFailed) as failure:
        connect(sandbox, waits, environ={"PW": "wrong-password-123"}, auth=auth)
    assert "INVALID_LOGIN" in str(failure.value)
    assert "auth method 'password'" in str(failure.value)
    assert "wrong-password-123" not in str(failure.value)
    assert waits == [] and sandbox.stats.login_calls == 1  # a SOAP fault (HTTP 500) is final


def test_a_refused_oauth_client_is_a_clear_error(sandbox: SalesforceSandbox) -> None:
    auth, environ = _auth(sandbox, "oauth_password")
    with pytest.raises(AuthenticationFailed, match="invalid_client_id"):
        connect(sandbox, environ={**environ, "SECRET": "not-the-secret"}, auth=auth)


def test_a_private_key_that_cannot_sign_is_a_clear_error(
    sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot really a key\n-----END PRIVATE KEY-----\n")
    auth, _ = _auth(sandbox, "jwt")
    auth["private_key"] = {"file": str(key)}
    with pytest.raises(AuthenticationFailed, match="cannot sign the JWT") as failure:
        connect(sandbox, auth=auth)
    assert "not really a key" not in str(failure.value)
    assert sandbox.stats.login_calls == 0


def test_a_certificate_that_cannot_be_verified_is_not_retried(sandbox: SalesforceSandbox) -> None:
    waits = Waits()
    source = source_for(sandbox).with_changes(ca_bundle=None)
    with pytest.raises(TlsError, match="ca_bundle"):
        connect_salesforce(source, EUR, environ={}, retry_policy=RetryPolicy(sleep=waits))
    assert waits == []


def test_instance_url_pins_the_instance_login_returned(sandbox: SalesforceSandbox) -> None:
    connector = connect(sandbox, instance_url=sandbox.url.replace("127.0.0.1", "localhost"))
    assert connector.client.sf_instance.startswith("localhost:")
    assert len(_pull_all(connector, "stages")) == 8


# ---- retries --------------------------------------------------------------------------------


def test_429_waits_as_retry_after_says(sandbox: SalesforceSandbox) -> None:
    waits = Waits()
    connector = connect(sandbox, waits)
    sandbox.faults.add(FaultRule(kind="rate_limit", path="/query", times=2, retry_after=7))
    before = connector.api_calls
    assert len(_pull_all(connector, "stages")) == 8
    assert waits == [7.0, 7.0]
    assert connector.api_calls - before == 3  # every attempt is an HTTP call


def test_503_backs_off_exponentially_with_jitter(sandbox: SalesforceSandbox) -> None:
    waits = Waits()
    connector = connect(sandbox, waits)
    sandbox.faults.add(FaultRule(kind="server_error", path="/query", status=503, times=3))
    assert len(_pull_all(connector, "stages")) == 8
    assert len(waits) == 3
    for attempt, wait in enumerate(waits, start=1):
        ceiling = min(60.0, 2 ** (attempt - 1))
        assert ceiling / 2 <= wait <= ceiling


def test_retries_are_bounded_and_end_in_a_typed_error(sandbox: SalesforceSandbox) -> None:
    waits = Waits()
    connector = connect(sandbox, waits)
    sandbox.faults.add(FaultRule(kind="server_error", path="/query", status=502, times=None))
    with pytest.raises(ServerError) as failure:
        _pull_all(connector, "stages")
    assert failure.value.status == 502 and failure.value.code == "SERVER_UNAVAILABLE"
    assert "/services/data/v59.0/query" in (failure.value.url or "")
    assert len(waits) == 4  # 5 attempts


def test_a_very_long_retry_after_is_not_waited_for(sandbox: SalesforceSandbox) -> None:
    waits = Waits()
    connector = connect(sandbox, waits)
    sandbox.faults.add(FaultRule(kind="rate_limit", path="/query", times=1, retry_after=3600))
    with pytest.raises(RateLimited) as failure:
        _pull_all(connector, "stages")
    assert failure.value.retry_after == 3600 and waits == []


def test_a_timeout_is_retried(sandbox: SalesforceSandbox) -> None:
    waits = Waits()
    connector = connect(sandbox, waits, timeout_seconds=0.3)
    sandbox.faults.add(FaultRule(kind="slow", path="/query", times=1, delay=1.0))
    assert len(_pull_all(connector, "stages")) == 8
    assert len(waits) == 1
    sandbox.faults.add(FaultRule(kind="slow", path="/query", times=5, delay=1.0))
    with pytest.raises(ConnectionFailed, match="timed out"):
        _pull_all(connector, "stages")
    assert len(waits) == 1 + 4


def test_the_daily_limit_stops_the_run_without_retrying() -> None:
    waits = Waits()
    with SalesforceSandbox.start(seed=7, api_limit=4) as sandbox:
        connector = connect(sandbox, waits)  # 2 calls
        _pull_all(connector, "stages")  # 3
        _pull_all(connector, "users")  # 4: the limit
        with pytest.raises(DailyLimitExceeded) as failure:
            _pull_all(connector, "deals")
    assert waits == []
    assert failure.value.status == 403 and failure.value.code == "REQUEST_LIMIT_EXCEEDED"
    assert "daily API request limit" in str(failure.value)
    assert connector.api_calls == 5


def test_a_daily_limit_during_writes_reports_what_was_written(sandbox: SalesforceSandbox) -> None:
    connector = connect(sandbox)
    field = TargetField("Opportunity", "KPI_Deal_Age_Days__c", "number", "Age", scale=0)
    create_and_grant(connector, [], [field])
    ids = [r["Id"] for r in _pull_all(connector, "deals") if not r["IsDeleted"]][:450]
    sandbox.faults.add(
        FaultRule(kind="daily_limit", path="/composite/sobjects", method="PATCH", every=2)
    )
    with pytest.raises(DailyLimitExceeded) as failure:
        connector.update("Opportunity", {i: {field.name: 1} for i in ids})
    results = failure.value.write_results
    assert [r.key for r in results] == ids
    assert all(r.success for r in results[:200])
    assert not any(r.success for r in results[200:])
    assert {r.error_code for r in results[200:]} == {"REQUEST_LIMIT_EXCEEDED"}


def test_a_failed_batch_marks_its_records_and_the_next_batch_goes_on(
    sandbox: SalesforceSandbox,
) -> None:
    waits = Waits()
    connector = connect(sandbox, waits)
    field = TargetField("Opportunity", "KPI_Deal_Age_Days__c", "number", "Age", scale=0)
    create_and_grant(connector, [], [field])
    ids = [r["Id"] for r in _pull_all(connector, "deals") if not r["IsDeleted"]][:300]
    sandbox.faults.add(
        FaultRule(kind="server_error", path="/composite/sobjects", method="PATCH", times=5)
    )
    before = connector.api_calls
    results = connector.update("Opportunity", {i: {field.name: 2} for i in ids})
    assert [r.success for r in results] == [False] * 200 + [True] * 100
    assert {r.error_code for r in results[:200]} == {"SERVER_UNAVAILABLE"}
    assert connector.api_calls - before == 6  # 5 attempts, then the second batch
    assert len(waits) == 4


def test_writes_cost_one_call_per_200_records(sandbox: SalesforceSandbox) -> None:
    connector = connect(sandbox)
    field = TargetField("Opportunity", "KPI_Deal_Age_Days__c", "number", "Age", scale=0)
    create_and_grant(connector, [], [field])
    ids = [r["Id"] for r in _pull_all(connector, "deals") if not r["IsDeleted"]]
    before = connector.api_calls
    results = connector.update("Opportunity", {i: {field.name: 3} for i in ids})
    assert all(r.success for r in results) and len(results) == len(ids)
    assert connector.api_calls - before == math.ceil(len(ids) / 200)


# ---- sessions -------------------------------------------------------------------------------


def test_an_expired_session_is_renewed_by_logging_in_again(sandbox: SalesforceSandbox) -> None:
    connector = connect(sandbox)
    sandbox.faults.add(FaultRule(kind="expire_session", path="/query", times=1))
    assert len(_pull_all(connector, "stages")) == 8
    assert sandbox.stats.login_calls == 2


def test_a_session_refused_again_after_a_new_login_is_final(sandbox: SalesforceSandbox) -> None:
    connector = connect(sandbox)
    sandbox.faults.add(FaultRule(kind="expire_session", path="/query", times=None))
    with pytest.raises(SessionExpired, match="expired again right after logging in"):
        _pull_all(connector, "stages")
    assert sandbox.stats.login_calls == 2  # one new login, one retry, then stop


def test_an_expired_session_id_from_the_config_is_a_clear_fatal_error(
    sandbox: SalesforceSandbox,
) -> None:
    auth, environ = _auth(sandbox, "session")
    connector = connect(sandbox, environ=environ, auth=auth)
    sandbox.app.expire_sessions()
    with pytest.raises(SessionExpired) as failure:
        _pull_all(connector, "stages")
    message = str(failure.value)
    assert "method: session" in message and "fresh session id" in message
    assert environ["SID"] not in message and environ["SID"] not in repr(failure.value)
    assert failure.value.status == 401 and failure.value.code == "INVALID_SESSION_ID"


# ---- secrets --------------------------------------------------------------------------------

KNOWN_SECRET = "Kn0wn-S3cret-P4ssword!"


def test_no_secret_reaches_an_error_or_a_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = Credentials(password=KNOWN_SECRET)
    with SalesforceSandbox.start(seed=7, credentials=credentials) as sandbox:
        auth, _ = _auth(sandbox, "password")
        good = {"PW": KNOWN_SECRET}
        messages: list[str] = []
        with pytest.raises(AuthenticationFailed) as refused:
            connect(sandbox, environ={"PW": KNOWN_SECRET + "-typo"}, auth=auth)
        messages += [str(refused.value), repr(refused.value), refused.value.body or ""]
        connector = connect(sandbox, environ=good, auth=auth)
        token = connector.client.session_id
        for fault in (
            FaultRule(kind="server_error", path="/query", status=500, times=None),
            FaultRule(kind="daily_limit", path="/query"),
        ):
            sandbox.faults.clear()
            sandbox.faults.add(fault)
            with pytest.raises(errors.ConnectorError) as failure:
                _pull_all(connector, "deals")
            messages += [str(failure.value), repr(failure.value), failure.value.body or ""]
        sandbox.faults.clear()
        with pytest.raises(errors.RequestRejected) as rejected:
            connector._fetch(lambda: connector.client.query("SELECT Nope FROM Opportunity"))
        messages += [str(rejected.value), rejected.value.url or ""]
    text = "\n".join([*messages, caplog.text])
    assert KNOWN_SECRET not in text and token not in text
    assert "INVALID_FIELD" in text


# ---- SOQL safety ----------------------------------------------------------------------------


def test_config_values_are_escaped_in_soql(sandbox: SalesforceSandbox) -> None:
    mapping = DEMO.sources[0].mapping.model_dump()
    mapping["demos"] = {"object": "Event", "type_field": "Type", "values": ["Demo' OR Type != '"]}
    connector = connect(sandbox, mapping=mapping)
    query = connector.queries.build("activities", None)
    assert query is not None
    assert "Type IN ('Demo\\' OR Type != \\'')" in query.soql
    parsed = parse(query.soql)  # one string literal, not an injected condition
    assert "Demo' OR Type != '" in repr(parsed.where)
    (page,) = connector.pull("activities", None)
    assert page.records == []  # no event has that odd type


def test_names_that_are_not_api_names_never_reach_a_query(sandbox: SalesforceSandbox) -> None:
    mapping = DEMO.sources[0].mapping.model_dump()
    mapping["ae_filter"] = {"field": "Title FROM User WHERE Id != null --", "values": ["AE"]}
    with pytest.raises(UnsafeSoql, match="not a Salesforce API name"):
        connect(sandbox, mapping=mapping)
    with pytest.raises(UnsafeSoql):
        connect_salesforce(
            source_for(sandbox), EUR, environ={}, rep_start_date_field="Name) FROM User --"
        )
    connector = connect(sandbox)
    with pytest.raises(ValueError, match="not a Salesforce datetime"):
        connector.pull("deals", "2026-01-01T00:00:00Z OR Id != null")
    with pytest.raises(UnsafeSoql):
        connector.update("Opportunity", {"006x": {"Amount = 1, Name": 1}})
    with pytest.raises(UnsafeSoql):
        connector.update("Opportunity/../User", {"006x": {"Amount": 1}})


def test_a_username_with_quotes_is_escaped(sandbox: SalesforceSandbox) -> None:
    auth, _ = _auth(sandbox, "jwt")
    auth["username"] = {"value": "o'brien@example.com"}
    with pytest.raises(AuthenticationFailed):  # the sandbox knows no such user: refused
        connect(sandbox, auth=auth)


# ---- API calls ------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [2000, 500])
def test_a_full_deal_pull_costs_one_call_per_page(
    sf_sandbox: SalesforceSandbox, page_size: int
) -> None:
    connector = connect(sf_sandbox, page_size=page_size)
    before_connector, before_sandbox = connector.api_calls, sf_sandbox.stats.api_calls
    pages = list(connector.pull("deals", None))
    deals = [r for p in pages for r in p.records]
    assert len(deals) == len(sf_sandbox.org.data.deals)  # queryAll: deleted deals too
    # The history subqueries' children count toward each page's batch: more pages than
    # deals / page_size, at least every row over full pages, and one call each.
    assert len(pages) == pages_of(deals, page_size)
    assert len(pages) >= fewest_pages([record_rows(d) for d in deals], page_size)
    assert len(pages) > math.ceil(len(deals) / page_size)
    assert connector.api_calls - before_connector == len(pages)
    assert sf_sandbox.stats.api_calls - before_sandbox == len(pages)


def test_connecting_costs_two_calls_and_the_currency_page_is_reused(
    sandbox: SalesforceSandbox,
) -> None:
    connector = connect(sandbox)
    assert connector.api_calls == 2  # CurrencyType + the user's currency
    currencies = _pull_all(connector, "currencies")
    assert {c["IsoCode"] for c in currencies} == {"EUR", "USD", "GBP"}
    assert connector.api_calls == 2
    _pull_all(connector, "currencies")
    assert connector.api_calls == 3


def test_a_demo_full_pull_costs_one_call_per_page(sandbox: SalesforceSandbox) -> None:
    connector = connect(sandbox)
    pages = {stream: list(connector.pull(stream, None)) for stream in STREAMS}
    # The currencies page came from connecting; every other page is one call.
    assert connector.api_calls == 2 + sum(len(p) for p in pages.values()) - 1


# ---- child results --------------------------------------------------------------------------


class SplitChildren(BaseAdapter):
    """In front of the sandbox: cuts every child result after its first record (done: false,
    a nextRecordsUrl) and serves the rest itself, as Salesforce does for large children."""

    def __init__(self, inner: BaseAdapter) -> None:
        super().__init__()
        self.inner = inner
        self.rest: dict[str, list[Any]] = {}
        self.served = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        path = requests.utils.urlparse(request.url).path
        locator = path.rsplit("/", 1)[-1]
        if locator in self.rest:
            self.served += 1
            return self._answer(request, {"done": True, "records": self.rest.pop(locator)})
        response = self.inner.send(request, **kwargs)
        if "/query" not in path or response.status_code != 200:
            return response
        body = response.json()
        for record in body.get("records", []):
            for name, value in record.items():
                if isinstance(value, dict) and len(value.get("records") or []) > 1:
                    key = f"01gCHILD{len(self.rest) + self.served:06d}-1"
                    self.rest[key] = value["records"][1:]
                    value["records"] = value["records"][:1]
                    value["done"] = False
                    value["nextRecordsUrl"] = f"/services/data/v59.0/query/{key}"
                    record[name] = value
        return self._answer(request, body)

    @staticmethod
    def _answer(request: requests.PreparedRequest, body: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        self.inner.close()


def test_unfinished_child_results_are_completed(
    sandbox: SalesforceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {
        r["Id"]: r
        for r in sandbox.client().query_all(
            "SELECT Id, (SELECT StageName, CreatedDate FROM OpportunityHistories ORDER BY"
            " CreatedDate) FROM Opportunity",
            include_deleted=True,
        )["records"]
    }
    splitters: list[SplitChildren] = []
    real_build_session = client.build_session

    def build_session(**kwargs: Any) -> requests.Session:
        session = real_build_session(**kwargs)
        splitters.append(SplitChildren(session.get_adapter("https://")))
        session.mount("https://", splitters[-1])
        return session

    monkeypatch.setattr(client, "build_session", build_session)
    connector = connect(sandbox)
    before = connector.api_calls
    deals = _pull_all(connector, "deals")
    (splitter,) = splitters
    assert splitter.served > 0 and not splitter.rest
    assert connector.api_calls - before == pages_of(deals, 2000) + splitter.served
    for deal in deals:
        history = deal["OpportunityHistories"]
        want = expected[deal["Id"]]["OpportunityHistories"]
        if want is None:
            assert history is None
            continue
        assert history["done"] is True
        assert [h["StageName"] for h in history["records"]] == [
            h["StageName"] for h in want["records"]
        ]


# ---- currencies and optional objects ----------------------------------------------------------


def test_crm_conversion_needs_the_users_currency_to_be_the_reporting_one(
    sandbox: SalesforceSandbox,
) -> None:
    with pytest.raises(CurrencyCheckFailed) as failure:
        connect(sandbox, currency=CurrencySettings(reporting="USD", conversion="crm"))
    message = str(failure.value)
    assert "integration user's currency" in message and "EUR" in message and "USD" in message
    assert "conversion: static" in message


def test_without_a_username_the_corporate_currency_is_checked(sandbox: SalesforceSandbox) -> None:
    auth, environ = _auth(sandbox, "client_credentials")
    with pytest.raises(CurrencyCheckFailed, match="corporate currency, which is EUR"):
        connect(
            sandbox,
            currency=CurrencySettings(reporting="GBP", conversion="crm"),
            environ=environ,
            auth=auth,
            domain="acme.my",
        )


def test_static_conversion_needs_no_check_and_converts_nothing_in_soql(
    sandbox: SalesforceSandbox,
) -> None:
    static = CurrencySettings.model_validate(
        {"reporting": "USD", "conversion": "static", "rates": {"EUR": "0.92"}}
    )
    connector = connect(sandbox, currency=static)
    assert connector.api_calls == 1
    query = connector.queries.build("deals", None)
    assert query is not None and "convertCurrency" not in query.soql


def test_a_single_currency_org_has_no_currencies_and_no_currency_fields(
    sandbox: SalesforceSandbox,
) -> None:
    del sandbox.org.tables["currencytype"]  # as in an org without multi-currency
    connector = connect(sandbox)
    assert not connector.facts.multi_currency
    assert list(connector.pull("currencies", None)) == []
    deals = _pull_all(connector, "deals")
    assert deals and "CurrencyIsoCode" not in deals[0] and "ConvertedAmount" not in deals[0]


def test_an_org_without_forecasting_quotas_has_no_quota_pages(sandbox: SalesforceSandbox) -> None:
    del sandbox.org.tables["forecastingquota"]
    connector = connect(sandbox)
    assert list(connector.pull("quotas", None)) == []


def test_quotas_are_not_pulled_when_they_come_from_the_config(sandbox: SalesforceSandbox) -> None:
    mapping = DEMO.sources[0].mapping.model_dump()
    mapping["quota_source"] = {"kind": "csv", "csv": Path("quotas.csv")}
    connector = connect(sandbox, mapping=mapping)
    before = connector.api_calls
    assert list(connector.pull("quotas", None)) == []
    assert connector.api_calls == before


def test_deal_query_selects_the_mapping_with_history_subqueries(sandbox: SalesforceSandbox) -> None:
    connector = connect(sandbox)
    query = connector.queries.build("deals", "2026-09-30T12:00:00.000+0000")
    assert query is not None and query.include_deleted
    assert query.soql.startswith("SELECT Id, IsDeleted, SystemModstamp, Name, Amount, CloseDate")
    assert "Account.Churn_Date__c" in query.soql
    assert "convertCurrency(Amount) ConvertedAmount" in query.soql
    assert (
        "(SELECT StageName, CreatedDate FROM OpportunityHistories ORDER BY CreatedDate)"
        in query.soql
    )
    assert (
        "(SELECT Field, OldValue, NewValue, CreatedDate FROM Histories WHERE Field = 'CloseDate'"
        " ORDER BY CreatedDate)" in query.soql
    )
    assert query.soql.endswith(
        "WHERE SystemModstamp >= 2026-09-30T11:55:00Z ORDER BY SystemModstamp, Id"
    )
    parse(query.soql)


def test_the_batch_size_header_follows_page_size(sandbox: SalesforceSandbox) -> None:
    connector = connect(sandbox, page_size=300)
    assert connector.client.headers["Sforce-Query-Options"] == "batchSize=300"
    pages = list(connector.pull("deals", None))
    # Child records count toward the batch: a page holds at most 300 rows with them.
    assert all(sum(inlined_rows(r) for r in p.records) <= 300 for p in pages)
    assert len(pages) == pages_of([r for p in pages for r in p.records], 300)


def test_a_quiet_org_is_read_again_only_within_the_lookback() -> None:
    now = [time.time()]
    with SalesforceSandbox.start(seed=7, clock=lambda: now[0]) as sandbox:
        connector = connect(sandbox)
        full = list(connector.pull("deals", None))
        newest = max(parse_stamp(r["SystemModstamp"]) for p in full for r in p.records)
        cursor = full[-1].cursor
        assert cursor is not None and parse_stamp(cursor) >= newest  # the server's time
        assert all(p.cursor is not None and parse_stamp(p.cursor) <= newest for p in full[:-1])
        sandbox.client().Opportunity.update(full[0].records[0]["Id"], {"Probability": 12})
        now[0] += 30 * 60
        second = list(connector.pull("deals", cursor))
        assert [r["Id"] for p in second for r in p.records] == [full[0].records[0]["Id"]]
        before = connector.api_calls
        third = list(connector.pull("deals", second[-1].cursor))
        assert [r for p in third for r in p.records] == []  # nothing changed, nothing re-read
        assert connector.api_calls - before == 1
        assert parse_stamp(third[-1].cursor or "") >= parse_stamp(second[-1].cursor or "")


def test_a_deleted_deal_is_reported_with_its_id(sandbox: SalesforceSandbox) -> None:
    deleted = make_id("006", sandbox.org.data.notes["bad_deals"]["deleted"])
    connector = connect(sandbox)
    pages = list(connector.pull("deals", None))
    assert deleted in {i for p in pages for i in p.deleted_ids}


def test_latest_stamp_of_a_page_in_any_format() -> None:
    from crm_kpi_worker.connectors.salesforce.settings import STAMPS

    def _latest_stamp(records: list[dict[str, Any]]) -> dt.datetime | None:
        return STAMPS.latest(r.get("SystemModstamp") for r in records)

    same = [{"SystemModstamp": f"2026-09-{d:02d}T10:00:00.000+0000"} for d in (3, 17, 9)]
    assert _latest_stamp(same) == dt.datetime(2026, 9, 17, 10, tzinfo=dt.UTC)
    mixed = [
        {"SystemModstamp": "2026-09-17T10:00:00.000+0000"},
        {"SystemModstamp": "2026-09-17T11:30:00+02:00"},  # 09:30 UTC: earlier despite its text
        {"SystemModstamp": "2026-09-17T10:00:01Z"},
        {"SystemModstamp": None},
    ]
    assert _latest_stamp(mixed) == dt.datetime(2026, 9, 17, 10, 0, 1, tzinfo=dt.UTC)
    assert _latest_stamp([{"Id": "x"}]) is None
