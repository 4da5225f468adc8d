"""The shared layer of the connectors, unit by unit: the stamp parser, the incremental cursor,
the paginators, the windowed search's restarts, and the mapping of transport failures."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests
import urllib3

from crm_kpi_worker.connectors.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DailyLimitExceeded,
    RateLimited,
    RequestRejected,
    ServerError,
    TlsError,
)
from crm_kpi_worker.connectors.failures import ErrorWording, answer_failure, connection_failure
from crm_kpi_worker.connectors.hubspot.settings import ERROR_RULES
from crm_kpi_worker.connectors.incremental import (
    DEFAULT_LOOKBACK,
    IncrementalCursor,
    KeysAtStamp,
)
from crm_kpi_worker.connectors.paging import (
    SEARCH_CAP,
    AfterPaginator,
    NextUrlPaginator,
    follow,
    windowed_search,
)
from crm_kpi_worker.connectors.stamps import StampFormat, parse_stamp, to_ms

SF = StampFormat("Salesforce", "+0000")
HS = StampFormat("HubSpot", "Z")
T0 = dt.datetime(2026, 9, 15, 16, 0, tzinfo=dt.UTC)


# ---- stamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-09-15T16:00:00.000+0000",  # Salesforce
        "2026-09-15T16:00:00.000Z",  # HubSpot
        "2026-09-15T18:00:00+02:00",
        str(to_ms(T0)),  # epoch milliseconds, as HubSpot sends some
    ],
)
def test_one_parser_reads_every_crm_variant(text: str) -> None:
    assert parse_stamp(text) == T0


@pytest.mark.parametrize(
    "text",
    ["2026-09-15T16:00:00", "2026-09-15", "2026-W38-2T16:00Z", "2026-01-01T00:00:00Z OR x", ""],
)
def test_the_parser_refuses_anything_without_a_zone(text: str) -> None:
    with pytest.raises(ValueError, match="not a Salesforce datetime"):
        SF.parse(text)


def test_each_crm_writes_its_own_form() -> None:
    moment = T0 + dt.timedelta(microseconds=123_456)
    assert SF.format(moment) == "2026-09-15T16:00:00.123+0000"
    assert HS.format(moment) == "2026-09-15T16:00:00.123Z"


def test_the_latest_stamp_of_a_page() -> None:
    uniform = ["2026-09-15T16:00:00.000Z", "2026-09-15T16:00:02.000Z", None]
    assert HS.latest(uniform) == T0 + dt.timedelta(seconds=2)
    mixed = ["2026-09-15T16:00:03.000Z", "2026-09-15T17:00:00+02:00"]  # 15:00 UTC
    assert HS.latest(mixed) == T0 + dt.timedelta(seconds=3)
    assert HS.latest([None, 5]) is None


# ---- the cursor -----------------------------------------------------------------------------


def test_a_cursor_starts_its_filter_one_lookback_before_since() -> None:
    cursor = IncrementalCursor("2026-09-15T16:00:00.000Z", HS)
    assert cursor.start == T0 - DEFAULT_LOOKBACK
    assert IncrementalCursor(None, HS).start is None
    with pytest.raises(ValueError, match="not a HubSpot datetime"):
        IncrementalCursor("yesterday", HS)


def test_the_high_water_mark_never_goes_back_and_keeps_ties() -> None:
    cursor = IncrementalCursor("2026-09-15T16:00:00.000Z", HS)
    # A page whose latest stamp is the cursor itself: the value stays on that stamp, so the
    # next pull (>=) reads again the records that share it rather than skipping them.
    assert cursor.advance(T0, last=False) == "2026-09-15T16:00:00.000Z"
    assert cursor.advance(T0 - dt.timedelta(minutes=3), last=False) == HS.format(T0)
    later = T0 + dt.timedelta(seconds=7)
    assert cursor.advance(later, last=False) == HS.format(later)
    assert cursor.advance(None, last=False) == HS.format(later)


def test_a_quiet_stream_ends_on_the_server_time_at_the_start() -> None:
    cursor = IncrementalCursor("2026-09-15T16:00:00.000Z", HS)
    server = T0 + dt.timedelta(hours=1)
    cursor.note_server_time(server)
    cursor.note_server_time(server + dt.timedelta(minutes=1))  # the first one counts
    assert cursor.advance(None, last=True) == HS.format(server)


def test_the_server_time_only_ends_the_last_page_and_never_lowers_the_cursor() -> None:
    cursor = IncrementalCursor(None, SF)
    cursor.note_server_time(T0)
    assert cursor.advance(None, last=False) is None
    later = T0 + dt.timedelta(seconds=5)
    assert cursor.advance(later, last=False) == SF.format(later)
    assert cursor.advance(None, last=True) == SF.format(later)  # server time earlier
    assert IncrementalCursor(None, SF).advance(None, last=True) is None


def test_keys_at_the_last_stamp_are_deduplicated() -> None:
    read = KeysAtStamp(10)
    assert not read.seen(10, "a")
    assert read.seen(10, "a")  # read again at the restart stamp: a duplicate
    assert not read.seen(11, "a")  # the same record changed again: a new version
    assert not read.seen(11, "b")
    assert read.keys == {"a", "b"}


# ---- paginators -----------------------------------------------------------------------------


def test_follow_asks_for_the_next_page_only_when_the_consumer_comes_back() -> None:
    sent: list[str | None] = []

    def send(url: str | None) -> dict[str, Any]:
        sent.append(url)
        n = len(sent)
        return {"records": [], "done": n == 3, "nextRecordsUrl": f"/more-{n}"}

    answers = follow(send, NextUrlPaginator())
    next(answers)
    assert sent == [None]
    assert len(list(answers)) == 2
    assert sent == [None, "/more-1", "/more-2"]


def test_a_repeated_next_records_url_is_refused() -> None:
    paginator = NextUrlPaginator()
    answer = {"done": False, "nextRecordsUrl": "/services/data/v61.0/query/01g-2000"}
    assert paginator.advance(answer) == answer["nextRecordsUrl"]
    with pytest.raises(RequestRejected, match="same nextRecordsUrl twice"):
        paginator.advance(answer)
    with pytest.raises(RequestRejected, match="gave no nextRecordsUrl"):
        NextUrlPaginator().advance({"done": False})
    assert NextUrlPaginator().advance({"done": True, "nextRecordsUrl": "/x"}) is None


def test_a_repeated_after_token_is_refused() -> None:
    paginator = AfterPaginator()
    answer = {"results": [], "paging": {"next": {"after": "abc"}}}
    assert paginator.advance(answer) == "abc"
    with pytest.raises(RequestRejected, match=r"same paging\.next\.after twice"):
        paginator.advance(answer)
    assert paginator.advance({"results": []}) is None


def test_a_capped_after_paginator_stops_before_the_page_past_the_cap() -> None:
    paginator = AfterPaginator(cap=SEARCH_CAP, page_size=200)
    assert paginator.advance({"paging": {"next": {"after": "9600"}}}) == "9600"
    assert not paginator.capped
    assert paginator.advance({"paging": {"next": {"after": "9800"}}}) == "9800"
    assert paginator.advance({"paging": {"next": {"after": "10000"}}}) is None
    assert paginator.capped


# ---- the windowed search --------------------------------------------------------------------

STAMP = "hs_lastmodifieddate"


class RecordingSearch:
    """A HubSpot-like search over (id, ms) records that records the filters of each body."""

    def __init__(self, stamps: list[int]) -> None:
        self.rows = [(str(i + 1), ms) for i, ms in enumerate(stamps)]
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append({**body, "filterGroups": body["filterGroups"]})
        after, limit = int(body.get("after", 0)), body["limit"]
        assert after + limit <= SEARCH_CAP
        rows = list(self.rows)
        for group in body["filterGroups"]:
            for f in group["filters"]:
                wanted = int(f["value"])
                index = 1 if f["propertyName"] == STAMP else 0
                rows = [
                    r
                    for r in rows
                    if {"GTE": int(r[index]) >= wanted, "EQ": int(r[index]) == wanted}.get(
                        f["operator"], int(r[index]) > wanted
                    )
                ]
        by_id = body["sorts"][0]["propertyName"] == "hs_object_id"
        rows.sort(key=lambda r: int(r[0]) if by_id else (r[1], int(r[0])))
        page = rows[after : after + limit]
        answer: dict[str, Any] = {
            "results": [
                {
                    "id": i,
                    "properties": {STAMP: HS.format(dt.datetime.fromtimestamp(ms / 1000, dt.UTC))},
                }
                for i, ms in page
            ]
        }
        if after + limit < len(rows):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return answer

    def filters(self, index: int) -> list[tuple[str, str, str]]:
        groups = self.bodies[index]["filterGroups"]
        return [
            (f["propertyName"], f["operator"], f["value"]) for g in groups for f in g["filters"]
        ]


def test_the_windowed_search_restarts_at_the_last_stamp_without_reading_twice() -> None:
    stamps = [1_000 + i // 2 for i in range(10_400)]  # two records per millisecond
    search = RecordingSearch(stamps)
    ids = [r["id"] for page in windowed_search(search, properties=[]) for r in page]
    assert sorted(ids, key=int) == [str(i + 1) for i in range(10_400)]
    assert len(ids) == len(set(ids))
    restart = next(i for i, b in enumerate(search.bodies) if b["filterGroups"])
    assert restart == SEARCH_CAP // 200  # the first window's 50 pages, then a new query
    last_read = 1_000 + (SEARCH_CAP - 1) // 2
    assert search.filters(restart) == [(STAMP, "GTE", str(last_read))]  # >= the last stamp


def test_a_single_millisecond_past_the_cap_is_walked_by_id() -> None:
    search = RecordingSearch([7_000] * 10_300 + [7_001] * 3)
    ids = [r["id"] for page in windowed_search(search, properties=[]) for r in page]
    assert sorted(ids, key=int) == [str(i + 1) for i in range(10_303)]
    assert len(ids) == len(set(ids))
    walks = [i for i in range(len(search.bodies)) if (STAMP, "EQ", "7000") in search.filters(i)]
    assert walks and search.bodies[walks[0]]["sorts"][0]["propertyName"] == "hs_object_id"
    assert search.filters(walks[0]) == [(STAMP, "EQ", "7000")]
    assert search.filters(len(search.bodies) - 1) == [(STAMP, "GTE", "7001")]  # then past it


# ---- transport failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (requests.exceptions.SSLError("bad cert"), TlsError, "TLS certificate"),
        (urllib3.exceptions.SSLError("bad cert"), TlsError, "TLS certificate"),
        (
            urllib3.exceptions.MaxRetryError(None, "/x", urllib3.exceptions.SSLError("cert")),
            TlsError,
            "TLS certificate",
        ),
        (requests.exceptions.ReadTimeout("slow"), ConnectionFailed, "timed out (ReadTimeout)"),
        (requests.exceptions.ConnectionError("reset"), ConnectionFailed, "failed"),
        (
            urllib3.exceptions.MaxRetryError(
                None, "/x", urllib3.exceptions.NewConnectionError(None, "refused")
            ),
            ConnectionFailed,
            "failed (NewConnectionError)",
        ),
        (ConnectionResetError("reset"), ConnectionFailed, "failed (ConnectionResetError)"),
    ],
)
def test_transport_failures_become_typed_errors(exc: Exception, kind: type, text: str) -> None:
    error = connection_failure(exc, ErrorWording("HubSpot"), url="/crm/v3/x", method="GET")
    assert isinstance(error, kind) and text in str(error)


@pytest.mark.parametrize(
    "exc", [requests.exceptions.InvalidURL("no host"), ValueError("a bug"), KeyError("x")]
)
def test_other_exceptions_are_not_transport_failures(exc: Exception) -> None:
    assert connection_failure(exc, ErrorWording(), url=None, method=None) is None


def test_answers_to_retry_or_to_stop_on_become_typed_errors() -> None:
    def no_header(name: str) -> str | None:
        return None

    wording = ErrorWording("HubSpot", "portal", daily_limit="daily API limit", rules=ERROR_RULES)
    common: dict[str, Any] = {"url": "/x", "method": "POST", "now": 0.0}
    limited = answer_failure(429, b"{}", {"Retry-After": "7"}.get, wording, **common)
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    assert isinstance(answer_failure(503, b"", no_header, wording, **common), ServerError)
    daily = answer_failure(429, {"policyName": "DAILY"}, no_header, wording, **common)
    assert isinstance(daily, DailyLimitExceeded)
    assert str(daily).startswith("source 'portal': HubSpot's daily API limit is used up")
    login = answer_failure(
        400, {"error": "invalid_grant"}, no_header, ErrorWording(), login=True, **common
    )
    assert isinstance(login, AuthenticationFailed)
    assert answer_failure(400, {"message": "bad filter"}, no_header, wording, **common) is None
    assert answer_failure(401, {"message": "expired"}, no_header, wording, **common) is None
