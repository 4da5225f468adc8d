"""windowed_search against an in-memory search that behaves like HubSpot's: 200 a page at most,
sorted by one property, and a 400 for any page past the 10,000th result."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from crm_kpi_worker.connectors.hubspot.search import (
    SEARCH_CAP,
    format_stamp,
    parse_stamp,
    windowed_search,
)

STAMP = "hs_lastmodifieddate"


class CapExceeded(Exception):
    pass


class FakeSearch:
    def __init__(self, stamps: list[int]) -> None:
        self.records = [
            {
                "id": str(index + 1),
                "properties": {
                    "hs_object_id": str(index + 1),
                    STAMP: format_stamp(dt.datetime.fromtimestamp(ms / 1000, dt.UTC)),
                },
                "_ms": ms,
            }
            for index, ms in enumerate(stamps)
        ]
        self.calls = 0
        # HubSpot orders ties arbitrarily: reverse ids within a stamp to prove it.
        self.by_stamp = sorted(self.records, key=lambda r: (r["_ms"], -int(r["id"])))
        self.by_id = sorted(self.records, key=lambda r: int(r["id"]))

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        limit, after = body["limit"], int(body.get("after", 0))
        assert limit <= 200
        if after + limit > SEARCH_CAP:
            raise CapExceeded(after)
        (sort,) = body["sorts"]
        rows = self.by_stamp if sort["propertyName"] == STAMP else self.by_id
        for group in body["filterGroups"]:
            for f in group["filters"]:
                rows = [r for r in rows if self._match(r, f)]
        page = rows[after : after + limit]
        answer: dict[str, Any] = {"total": len(rows), "results": page}
        if after + limit < len(rows):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return answer

    @staticmethod
    def _match(record: dict[str, Any], f: dict[str, Any]) -> bool:
        value = record["_ms"] if f["propertyName"] == STAMP else int(record["id"])
        wanted = int(f["value"])
        return {"GTE": value >= wanted, "EQ": value == wanted, "GT": value > wanted}[f["operator"]]


def read_all(search: FakeSearch, since: int | None = None) -> list[str]:
    ids = []
    for page in windowed_search(search, properties=["amount"], since_ms=since):
        assert 0 < len(page) <= 200
        ids.extend(r["id"] for r in page)
    return ids


def test_a_small_result_is_read_in_pages_of_200() -> None:
    search = FakeSearch([1_000 + i for i in range(450)])
    ids = read_all(search)
    assert ids == [str(i + 1) for i in range(450)]
    assert search.calls == 3


def test_more_than_10000_changes_are_all_read_past_the_cap() -> None:
    stamps = [1_000_000 + i // 3 for i in range(25_000)]  # three records per millisecond
    search = FakeSearch(stamps)
    ids = read_all(search)
    assert sorted(ids, key=int) == [str(i + 1) for i in range(25_000)]
    assert len(ids) == len(set(ids))  # nothing read twice
    # 125 pages of 200, plus one per restart at most.
    assert 125 <= search.calls <= 128


@pytest.mark.slow
def test_25000_changes_at_the_same_millisecond_are_walked_by_id() -> None:
    stamps = [5_000] * 25_000 + [6_000] * 10
    search = FakeSearch(stamps)
    ids = read_all(search)
    assert sorted(ids, key=int) == [str(i + 1) for i in range(25_010)]
    assert len(ids) == len(set(ids))
    assert search.calls <= 127 + 50 + 2  # the first window, re-read by id, then the rest


def test_since_filters_and_window_restart_keeps_order() -> None:
    stamps = [i for i in range(12_000)]
    search = FakeSearch(stamps)
    ids = read_all(search, since=2_000)
    assert ids == [str(i + 1) for i in range(2_000, 12_000)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-09-30T12:00:00.123Z", dt.datetime(2026, 9, 30, 12, 0, 0, 123000, dt.UTC)),
        ("1700000000000", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
    ],
)
def test_stamps_parse_and_format(text: str, expected: dt.datetime) -> None:
    assert parse_stamp(text) == expected
    assert parse_stamp(format_stamp(expected)) == expected
    with pytest.raises(ValueError, match="not a HubSpot datetime"):
        parse_stamp("2026-09-30T12:00:00")
