"""Reading every record a HubSpot search matches, past the 10,000-result cap.

HubSpot's search answers at most 200 records a page and at most 10,000 records per query:
asking for a page beyond that is answered 400. :func:`windowed_search` therefore sorts by the
modification stamp and, when a query reaches the cap, starts a new query at the last stamp it
read (``GTE`` that stamp, skipping the ids already read at it). When 10,000 records or more
share one stamp (a bulk import or a workflow touching a whole segment in one millisecond),
that stamp is walked by ``hs_object_id`` instead (``EQ`` stamp, ``GT`` last id, sorted by id),
then the walk goes on after it. No record is lost and none is read twice except at window
edges, however many change at once.

Filters are sent as JSON in the POST body (never in a URL), values as text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["SEARCH_CAP", "format_stamp", "parse_stamp", "stamp_ms", "windowed_search"]

#: Results one search query can page through.
SEARCH_CAP = 10_000
ID_PROPERTY = "hs_object_id"

Search = Callable[[dict[str, Any]], dict[str, Any]]


def parse_stamp(value: str | None) -> dt.datetime:
    """An ISO instant (``2026-09-30T12:00:00.000Z``) or epoch milliseconds as text."""
    text = value.strip() if isinstance(value, str) else ""
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(
            f"not a HubSpot datetime: {value!r}; expected e.g. 2026-09-30T12:00:00.000Z"
        )
    return parsed.astimezone(dt.UTC)


def format_stamp(value: dt.datetime) -> str:
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def to_ms(value: dt.datetime) -> int:
    return round(value.timestamp() * 1000)


def stamp_ms(record: dict[str, Any], stamp_property: str) -> int:
    """The record's modification stamp in epoch ms (its ``updatedAt`` if the property is
    missing)."""
    props = record.get("properties") or {}
    value = props.get(stamp_property) or record.get("updatedAt")
    return to_ms(parse_stamp(value))


def _filter(name: str, operator: str, value: Any) -> dict[str, Any]:
    return {"propertyName": name, "operator": operator, "value": str(value)}


def windowed_search(
    search: Search,
    *,
    properties: Sequence[str],
    filters: Sequence[dict[str, Any]] = (),
    stamp_property: str = "hs_lastmodifieddate",
    since_ms: int | None = None,
    page_size: int = 200,
) -> Iterator[list[dict[str, Any]]]:
    """Pages (lists of raw records) of every record matching ``filters`` whose stamp is at
    or after ``since_ms``, in stamp order; see the module doc. ``search(body)`` sends one
    search request and returns its JSON answer."""
    wanted = list(dict.fromkeys([*properties, stamp_property, ID_PROPERTY]))
    low = since_ms
    skip: set[str] = set()  # ids already read at stamp ``low``
    while True:
        window = [*filters]
        if low is not None:
            window.append(_filter(stamp_property, "GTE", low))
        body: dict[str, Any] = {
            "filterGroups": [{"filters": window}] if window else [],
            "sorts": [{"propertyName": stamp_property, "direction": "ASCENDING"}],
            "properties": wanted,
            "limit": page_size,
        }
        first_stamp: int | None = None
        last_stamp: int | None = None
        at_last: set[str] = set()
        after: str | None = None
        capped = False
        while True:
            if after is not None:
                body["after"] = after
            answer = search(body)
            page: list[dict[str, Any]] = []
            for record in answer.get("results") or ():
                stamp = stamp_ms(record, stamp_property)
                record_id = str(record.get("id"))
                if first_stamp is None:
                    first_stamp = stamp
                if stamp != last_stamp:
                    last_stamp, at_last = stamp, set()
                at_last.add(record_id)
                if stamp == low and record_id in skip:
                    continue
                page.append(record)
            if page:
                yield page
            following = ((answer.get("paging") or {}).get("next") or {}).get("after")
            if not following:
                return
            if int(following) + page_size > SEARCH_CAP:
                capped = True
                break
            after = str(following)
        assert capped and last_stamp is not None
        if first_stamp == last_stamp:
            # The whole window is one stamp: walk that stamp by id, then go past it.
            seen = at_last | (skip if low == last_stamp else set())
            yield from _walk_one_stamp(
                search, wanted, filters, stamp_property, last_stamp, seen, page_size
            )
            low, skip = last_stamp + 1, set()
        else:
            skip = at_last | (skip if low == last_stamp else set())
            low = last_stamp


def _walk_one_stamp(
    search: Search,
    wanted: list[str],
    filters: Sequence[dict[str, Any]],
    stamp_property: str,
    stamp: int,
    seen: set[str],
    page_size: int,
) -> Iterator[list[dict[str, Any]]]:
    last_id: str | None = None
    while True:
        window = [*filters, _filter(stamp_property, "EQ", stamp)]
        if last_id is not None:
            window.append(_filter(ID_PROPERTY, "GT", last_id))
        body: dict[str, Any] = {
            "filterGroups": [{"filters": window}],
            "sorts": [{"propertyName": ID_PROPERTY, "direction": "ASCENDING"}],
            "properties": wanted,
            "limit": page_size,
        }
        after: str | None = None
        while True:
            if after is not None:
                body["after"] = after
            answer = search(body)
            results = answer.get("results") or []
            page = [r for r in results if str(r.get("id")) not in seen]
            if results:
                last_id = str(results[-1].get("id"))
            if page:
                yield page
            following = ((answer.get("paging") or {}).get("next") or {}).get("after")
            if not following:
                return
            if int(following) + page_size > SEARCH_CAP:
                break
            after = str(following)
