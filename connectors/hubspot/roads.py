"""Which road a full pull of a HubSpot object takes: CRM search or the basic list endpoint.

Search (``POST /crm/v3/objects/{type}/search``) answers 200 records a call but is paced on its
own, 5 calls a second per portal; the list endpoint (``GET /crm/v3/objects/{type}``) answers
100 a call (50 with ``propertiesWithHistory``) under the general limit (100 to 190 calls per
10 seconds by tier), as are the batch reads that fetch close-date history for searched deals
(50 ids a call). Incremental pulls always search (only search filters on the modification
stamp); a full pull (no cursor) takes the list road when it is the faster one at the limits
the worker paces itself to, by this formula, seconds per 1,000 records:

- search: ``max(1000 / search_page / search_rate, history_calls / api_rate)`` where
  ``history_calls`` is ``1000 / 50`` when close-date history is read, else 0 (the two paces
  are independent buckets, so their waits overlap: the slower one sets the time);
- list: ``1000 / list_page / api_rate`` (history comes in the same answer).

At 5 searches a second and 190 calls per 10 s that is 1.00 s against 0.53 s: the list road is
1.9 times as fast. At 100 per 10 s (Free/Starter) both take 1.00 s, and with close-date
history both take 20 general calls per 1,000 deals; a tie keeps search, whose full pull
resumes from its cursor after a stop where the list road's starts over (see
``HubSpotConnector``).

A stream search filters on the server (companies with a churn date, meetings of a demo type,
deals of some pipelines) is filtered on the client on the list road, which reads every record
of the type: the list road then pays only if ``list * everything < search * matching``, both
counts taken by two one-record searches (``total``). Only the operators the connector sends
(``HAS_PROPERTY``, ``IN``) are evaluated on the client, with search's rules (a value is
present when neither null nor empty; ``IN`` on text ignores case); any other keeps search.

The list endpoint takes its property names in the URL, and HubSpot answers 414 to a long one
(observed past about 16,300 characters by airbytehq/airbyte's HubSpot source, past about 8,000
by others; the sandbox refuses 8,192 bytes). A list request whose target would exceed
:data:`MAX_LIST_REQUEST` characters falls back to search for the whole pull; it is not split
into passes of fewer properties, which would cost a call per pass and per page and could join
two versions of a record changed between the passes.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "HISTORY_BATCH",
    "LIST_PAGE",
    "LIST_PAGE_WITH_HISTORY",
    "MAX_LIST_REQUEST",
    "Keep",
    "Road",
    "RoadTimes",
    "client_filter",
    "list_page",
    "list_request_chars",
]

Road = Literal["search", "list"]
#: A client-side filter: whether a listed record is one search would have answered.
Keep = Callable[[dict[str, Any]], bool]

#: List endpoints answer at most 100 records a page.
LIST_PAGE = 100
#: ... and 50 when ``propertiesWithHistory`` is asked (HubSpot answers 400 to more:
#: HubSpot/hubspot-api-python#143; the client's own ``get_all`` pages by 50 then).
LIST_PAGE_WITH_HISTORY = 50
#: Batch read with ``propertiesWithHistory`` takes at most 50 ids.
HISTORY_BATCH = 50
#: The longest list request target (path and query) the worker sends, in characters: below
#: the sandbox's 8,192 bytes and half what HubSpot was seen to accept (see the module doc).
MAX_LIST_REQUEST = 8_000
#: Relative difference below which the two roads' times are a tie.
TIE = 1e-9
#: Room kept in the URL for the ``after`` token of later pages (an id today; opaque).
AFTER_ROOM = 64


def list_page(page_size: int, *, history: bool) -> int:
    """Records per list call: the configured page size, at most what the endpoint answers."""
    return min(page_size, LIST_PAGE_WITH_HISTORY if history else LIST_PAGE)


def list_request_chars(
    base_url: str,
    object_type: str,
    properties: Sequence[str],
    history: Sequence[str],
    limit: int,
) -> int:
    """The length of the longest list request target the list road would send, as
    hubspot-api-client encodes it (repeated ``properties=``, ``archived=False``)."""
    query: list[tuple[str, Any]] = [("limit", limit), ("after", "x" * AFTER_ROOM)]
    query += [("properties", name) for name in properties]
    query += [("propertiesWithHistory", name) for name in history]
    query.append(("archived", "False"))
    prefix = urllib.parse.urlsplit(base_url).path.rstrip("/")
    path = f"{prefix}/crm/v3/objects/{urllib.parse.quote(object_type)}"
    return len(path) + 1 + len(urllib.parse.urlencode(query))


@dataclass(frozen=True)
class RoadTimes:
    """Seconds each road needs per 1,000 records at the paced limits (see the module doc):
    ``search`` per 1,000 records that match, ``list`` per 1,000 records of the type (it reads
    them all)."""

    search: float
    list: float

    @classmethod
    def at(
        cls,
        *,
        search_per_second: float,
        api_per_second: float,
        search_page: int,
        list_page: int,
        history: bool,
    ) -> RoadTimes:
        history_calls = 1000 / HISTORY_BATCH if history else 0.0
        search = max(1000 / search_page / search_per_second, history_calls / api_per_second)
        return cls(search=search, list=1000 / list_page / api_per_second)

    @property
    def list_can_win(self) -> bool:
        """Whether the list road is faster for an unfiltered population (a filtered one can
        only make it slower: it reads the records that do not match too)."""
        return self.faster(1, 1) == "list"

    def faster(self, matching: int, everything: int) -> Road:
        """The faster road for ``matching`` records of ``everything`` of the type; a tie
        (within rounding: the paces carry a margin) keeps search."""
        faster = self.list * everything < self.search * matching * (1 - TIE)
        return "list" if faster else "search"


def client_filter(filters: Sequence[dict[str, Any]]) -> Keep | None:
    """A predicate keeping the records ``filters`` (one search filter group, ANDed) match,
    as search would; None when a filter uses an operator evaluated only by search."""
    tests: list[Keep] = []
    for spec in filters:
        name = str(spec.get("propertyName"))
        operator = str(spec.get("operator") or "").upper()
        if operator == "HAS_PROPERTY":
            tests.append(_has_property(name))
        elif operator == "IN" and isinstance(spec.get("values"), list):
            tests.append(_in(name, spec["values"]))
        else:
            return None
    return lambda record: all(test(record) for test in tests)


def _value(record: dict[str, Any], name: str) -> Any:
    return (record.get("properties") or {}).get(name)


def _has_property(name: str) -> Keep:
    return lambda record: _value(record, name) not in (None, "")


def _in(name: str, values: Sequence[Any]) -> Keep:
    wanted = {str(value).lower() for value in values}

    def keep(record: dict[str, Any]) -> bool:
        value = _value(record, name)
        return value is not None and str(value).lower() in wanted

    return keep
