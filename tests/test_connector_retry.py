"""The retry policy, the error table, typed errors and secret redaction (no network)."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from crm_kpi_worker.connectors.errors import (
    ERROR_TABLE,
    Action,
    AuthenticationFailed,
    ConnectionFailed,
    ConnectorError,
    DailyLimitExceeded,
    RateLimited,
    RequestRejected,
    ServerError,
    TlsError,
    classify,
    codes_of,
    error_details,
    redact_url,
    register_secret,
    scrub,
)
from crm_kpi_worker.connectors.failures import ErrorWording
from crm_kpi_worker.connectors.hubspot.settings import ERROR_RULES as HUBSPOT_RULES
from crm_kpi_worker.connectors.retry import RetryingAdapter, RetryPolicy, parse_retry_after
from crm_kpi_worker.connectors.salesforce.settings import ERROR_RULES as SALESFORCE_RULES

NOW = 1_800_000_000.0


class Waits(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def policy(waits: Waits, **kwargs: Any) -> RetryPolicy:
    return RetryPolicy(sleep=waits, clock=lambda: NOW, random=lambda: 0.5, **kwargs)


# ---- Retry-After ----------------------------------------------------------------------------


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after(" 120 ", NOW) == 120.0
    assert parse_retry_after(email.utils.formatdate(NOW + 30, usegmt=True), NOW) == 30.0
    assert parse_retry_after(email.utils.formatdate(NOW - 30, usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


# ---- the policy -----------------------------------------------------------------------------


def test_backoff_is_exponential_capped_and_jittered() -> None:
    low = RetryPolicy(random=lambda: 0.0)
    high = RetryPolicy(random=lambda: 1.0)
    assert [low.backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert [high.backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_transient_errors_are_retried_until_success() -> None:
    waits = Waits()
    outcomes: list[Any] = [ServerError("boom", status=503), ConnectionFailed("reset"), "ok"]

    def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    assert policy(waits).call(attempt) == "ok"
    assert waits == [0.75, 1.5]


def test_retry_after_comes_first() -> None:
    waits = Waits()
    outcomes: list[Any] = [RateLimited("slow down", retry_after=12.0, status=429), "ok"]

    def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    assert policy(waits).call(attempt) == "ok"
    assert waits == [12.0]


def test_attempts_are_bounded_and_the_typed_error_is_reraised() -> None:
    waits = Waits()
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise ServerError("still down", status=503)

    with pytest.raises(ServerError, match="still down"):
        policy(waits, attempts=3).call(attempt)
    assert len(calls) == 3 and len(waits) == 2


def test_other_errors_are_not_retried() -> None:
    waits = Waits()
    for error in (RequestRejected("bad query", status=400), DailyLimitExceeded("limit")):
        calls: list[int] = []

        def attempt(error: Exception = error, calls: list[int] = calls) -> None:
            calls.append(1)
            raise error

        with pytest.raises(type(error)):
            policy(waits).call(attempt)
        assert calls == [1]
    assert waits == []


def test_a_retry_after_beyond_the_maximum_stops_at_once() -> None:
    waits = Waits()

    def attempt() -> None:
        raise RateLimited("come back in an hour", retry_after=3600.0, status=429)

    with pytest.raises(RateLimited):
        policy(waits).call(attempt)
    assert waits == []


def test_policy_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=10, max_delay=1)


# ---- the error table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "action"),
    [
        ({"status": 429}, Action.RETRY),
        ({"status": 429, "code": "DAILY", "crm_rules": HUBSPOT_RULES}, Action.STOP_RUN),
        ({"status": 429, "code": "DAILY"}, Action.RETRY),  # HubSpot's code, from another CRM
        (
            {
                "status": 403,
                "code": "REQUEST_LIMIT_EXCEEDED",
                "message": "TotalRequests Limit",
                "crm_rules": SALESFORCE_RULES,
            },
            Action.STOP_RUN,
        ),
        (
            {
                "status": 403,
                "code": "REQUEST_LIMIT_EXCEEDED",
                "message": "ConcurrentPerOrgLongTxn",
                "crm_rules": SALESFORCE_RULES,
            },
            Action.RETRY,
        ),
        (
            {"per_record": True, "code": "REQUEST_LIMIT_EXCEEDED", "crm_rules": SALESFORCE_RULES},
            Action.SKIP_RECORD,
        ),
        ({"status": 403, "code": "INSUFFICIENT_ACCESS"}, Action.FAIL),
        ({"status": 401, "code": "INVALID_SESSION_ID"}, Action.REFRESH_SESSION),
        ({"status": 500, "code": "UNKNOWN_EXCEPTION"}, Action.RETRY),
        ({"status": 500, "code": "UNKNOWN_EXCEPTION", "crm_rules": SALESFORCE_RULES}, Action.RETRY),
        ({"status": 500, "code": "INVALID_TYPE", "crm_rules": SALESFORCE_RULES}, Action.FAIL),
        ({"status": 500, "crm_rules": SALESFORCE_RULES}, Action.RETRY),  # no code: a server error
        ({"status": 502}, Action.RETRY),
        ({"status": 503}, Action.RETRY),
        ({"status": 504}, Action.RETRY),
        ({"status": 501}, Action.FAIL),
        ({"status": 400, "code": "MALFORMED_QUERY"}, Action.FAIL),
        ({"status": 404, "code": "NOT_FOUND"}, Action.FAIL),
        ({"connection": True}, Action.RETRY),
        ({"per_record": True, "code": "UNABLE_TO_LOCK_ROW"}, Action.SKIP_RECORD),
        ({"status": 500, "code": "INVALID_LOGIN", "login": True}, Action.STOP_RUN),
        ({"status": 500, "code": "SERVER_UNAVAILABLE", "login": True}, Action.RETRY),
        ({"status": 503, "login": True}, Action.RETRY),  # a proxy's 503, no SOAP fault
        ({"status": 400, "code": "invalid_grant", "login": True}, Action.STOP_RUN),
    ],
)
def test_one_table_classifies_every_failure(failure: dict[str, Any], action: Action) -> None:
    assert classify(**failure).action is action


def test_only_the_crms_own_rows_say_its_daily_limit_is_used_up() -> None:
    assert [rule.why for rule in ERROR_TABLE if rule.daily_limit] == []
    assert [r.daily_limit for r in SALESFORCE_RULES] == [True, False, False, False]
    assert [r.daily_limit for r in HUBSPOT_RULES] == [True]


def test_the_table_ends_with_a_catch_all_and_explains_each_row() -> None:
    assert ERROR_TABLE[-1].action is Action.FAIL
    assert all(rule.why for rule in ERROR_TABLE)


def test_a_soap_fault_without_detail_names_its_code() -> None:
    fault = (
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soapenv:Body><soapenv:Fault><faultcode>sf:INVALID_TYPE</faultcode>"
        b"<faultstring>INVALID_TYPE: This type of metadata is not available</faultstring>"
        b"</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    assert error_details(fault) == (
        "INVALID_TYPE",
        "INVALID_TYPE: This type of metadata is not available",
    )


def test_error_details_reads_every_shape() -> None:
    assert error_details(
        b'[{"message": "Session expired", "errorCode": "INVALID_SESSION_ID"}]'
    ) == (
        "INVALID_SESSION_ID",
        "Session expired",
    )
    assert error_details('{"error": "invalid_grant", "error_description": "auth failure"}') == (
        "invalid_grant",
        "auth failure",
    )
    soap = (
        "<soapenv:Fault><detail><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>"
        "<sf:exceptionMessage>Invalid username</sf:exceptionMessage></detail></soapenv:Fault>"
    )
    assert error_details(soap) == ("INVALID_LOGIN", "Invalid username")
    assert error_details({"category": "RATE_LIMITS", "policyName": "DAILY", "message": "x"}) == (
        "DAILY",
        "x",
    )
    assert error_details("<html>Bad gateway</html>") == (None, "<html>Bad gateway</html>")
    assert error_details(None) == (None, None)
    assert codes_of(
        [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked", "fields": ["Amount"]}]
    ) == ("UNABLE_TO_LOCK_ROW", "locked (fields: Amount)")


# ---- redaction ------------------------------------------------------------------------------

SESSION = "00DSb0000000001!AQ4AQFakeSessionTokenValue.With-Chars_123"


def test_urls_lose_credentials_and_secret_parameters() -> None:
    url = (
        "https://user:pw@acme.my.salesforce.com:8443/services/oauth2/token?"
        f"access_token={SESSION}&client_secret=shh&sid=abc&state=ok"
    )
    redacted = redact_url(url) or ""
    assert "user" not in redacted and "pw@" not in redacted and SESSION not in redacted
    assert "shh" not in redacted and "sid=abc" not in redacted
    assert redacted.startswith("https://acme.my.salesforce.com:8443/services/oauth2/token?")
    assert "state=ok" in redacted
    long_query = "https://x.salesforce.com/services/data/v59.0/query/?q=" + "SELECT+Id+" * 100
    shown = redact_url(long_query) or ""
    assert shown.startswith("https://x.salesforce.com/services/data/v59.0/query/?q=SELECT Id ")
    assert shown.endswith("(700 more characters)")


def test_scrub_removes_registered_secrets_and_token_shapes() -> None:
    register_secret("correct-horse-battery")
    text = scrub(
        f"password correct-horse-battery, session {SESSION}, Authorization: Bearer abc.def,"
        ' <sessionId>XYZ</sessionId> {"access_token": "tok123"}'
    )
    assert "correct-horse-battery" not in text and SESSION not in text
    assert "abc.def" not in text and "XYZ" not in text and "tok123" not in text
    register_secret("abc")  # too short to be a secret: ordinary text stays readable
    assert scrub("abc") == "abc"


def test_errors_carry_status_redacted_url_and_truncated_body() -> None:
    register_secret("Sup3r-Secret-Value")
    error = RequestRejected(
        "refused: Sup3r-Secret-Value",
        status=400,
        code="MALFORMED_QUERY",
        url=f"https://x.salesforce.com/services/data/v59.0/query/?q=SELECT+Id&token={SESSION}",
        method="GET",
        body=[{"message": "x" * 2000, "errorCode": "MALFORMED_QUERY", "echo": SESSION}],
    )
    text = f"{error} {error!r} {error.url} {error.body}"
    assert "Sup3r-Secret-Value" not in text and SESSION not in text
    assert error.status == 400 and error.code == "MALFORMED_QUERY"
    assert "[400 MALFORMED_QUERY]" in str(error) and "(GET https://x.salesforce.com" in str(error)
    assert "more characters" in (error.body or "")
    assert isinstance(error, ConnectorError) and error.action is Action.FAIL


# ---- the transport adapter ------------------------------------------------------------------


class Scripted(BaseAdapter):
    """Answers each request with the next scripted response or exception."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__()
        self.script = script
        self.sent: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request.url or "")
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        status, body, headers = item
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
        response.headers.update(headers)
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass


def session_with(script: list[Any], waits: Waits) -> tuple[requests.Session, RetryingAdapter]:
    adapter = RetryingAdapter(
        Scripted(script),
        policy(waits),
        is_login=lambda r: "/services/Soap/u/" in (r.url or ""),
        wording=ErrorWording(rules=SALESFORCE_RULES),  # as the Salesforce client builds it
    )
    session = requests.Session()
    session.mount("https://", adapter)
    return session, adapter


API = "https://x.salesforce.com/services/data/v59.0/limits/"


def test_adapter_retries_429_with_an_http_date_and_counts_every_attempt() -> None:
    waits = Waits()
    later = email.utils.formatdate(NOW + 9, usegmt=True)
    session, adapter = session_with(
        [(429, [{"errorCode": "REQUEST_LIMIT_EXCEEDED"}], {"Retry-After": later}), (200, {}, {})],
        waits,
    )
    assert session.get(API).status_code == 200
    assert waits == [9.0] and adapter.calls == 2


def test_adapter_stops_the_run_on_the_daily_limit() -> None:
    waits = Waits()
    body = [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
    session, adapter = session_with([(403, body, {})], waits)
    with pytest.raises(DailyLimitExceeded):
        session.get(API)
    assert waits == [] and adapter.calls == 1


def test_adapter_hands_back_answers_the_client_handles() -> None:
    waits = Waits()
    expired = [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}]
    session, _ = session_with([(401, expired, {}), (400, [{"errorCode": "X"}], {})], waits)
    assert session.get(API).status_code == 401  # the client logs in again itself
    assert session.get(API).status_code == 400
    assert waits == []


def test_adapter_does_not_count_logins_and_refuses_bad_credentials() -> None:
    waits = Waits()
    fault = b"<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>"
    session, adapter = session_with([(500, fault, {})], waits)
    with pytest.raises(AuthenticationFailed, match="login refused"):
        session.post("https://login.salesforce.com/services/Soap/u/59.0", data="<x/>")
    assert adapter.calls == 0 and waits == []


def test_adapter_retries_connection_failures_but_not_tls_failures() -> None:
    waits = Waits()
    session, adapter = session_with(
        [requests.exceptions.ConnectionError("reset"), (200, {}, {})], waits
    )
    assert session.get(API).status_code == 200
    assert len(waits) == 1 and adapter.calls == 2
    session, _ = session_with([requests.exceptions.SSLError("bad cert")], waits)
    with pytest.raises(TlsError):
        session.get(API)
    assert len(waits) == 1


def test_adapter_keeps_the_servers_clock_from_the_date_header() -> None:
    waits = Waits()
    date = email.utils.formatdate(NOW, usegmt=True)
    session, adapter = session_with([(200, {}, {"Date": date}), (200, {}, {"Date": "junk"})], waits)
    assert adapter.server_time is None
    session.get(API)
    assert adapter.server_time is not None and adapter.server_time.timestamp() == NOW
    session.get(API)  # an unreadable Date leaves the last good one
    assert adapter.server_time.timestamp() == NOW
