"""The CRM search engine of the sandbox HubSpot portal: filters, sorts and paging, vectorised.

Rules (HubSpot's sources disagree on some; the choices are stated here):

- ``limit`` defaults to 10 and may be at most 200 (more: 400 VALIDATION_ERROR) [HubSpot docs].
- At most 10,000 results per query: a request whose ``after + limit`` goes beyond 10,000 is
  answered 400 VALIDATION_ERROR. HubSpot's docs ("Limitations": "the search endpoints are
  limited to 10,000 total results for any given query. Attempting to page beyond 10,000 will
  result in a 400 error", quoted in activepieces/activepieces#10160; the 400 is in the log of
  airbytehq/airbyte#10700). No source records the body's wording: the message is modelled.
  ``total`` is always the true count and ``paging.next`` is given whenever more results exist,
  so a client that blindly follows it meets the 400, as on HubSpot.
- Filter limits: at most 5 filterGroups, 6 filters per group, 18 filters in all (HubSpot's
  docs before the 2024-08 change; the changelog's later 5/10/25 is more permissive, so a client
  within these limits works on both). Beyond: 400 VALIDATION_ERROR.
- Groups are ORed, filters in a group ANDed. Operators EQ, NEQ, LT, LTE, GT, GTE, BETWEEN
  (value..highValue inclusive), IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY, CONTAINS_TOKEN
  (word match, ``*`` wildcard). Strings compare case-insensitively; numbers, datetimes (values
  as epoch-ms strings or ISO), dates and hs_object_id numerically. NEQ and NOT_IN match records
  without a value. An unknown property in a filter or sort is a 400 VALIDATION_ERROR.
- ``sorts``: strings (property, ascending) or ``{"propertyName", "direction"}``. Without a sort
  results come by hs_object_id ascending; ties of a sort are broken by hs_object_id ascending,
  so paging is stable; records without a value come last.
- ``query``: case-insensitive substring of the type's primary display property.
- Archived records are never returned.

Speed: each sort order is computed once per store version and cached (a write bumps the
version); a query is boolean masks over numpy columns and one gather of the cached order, so a
window on hs_lastmodifieddate over 200,000 deals answers in milliseconds. Only the returned page
is rendered.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox.hubspot.objects import ObjectStore
from crm_kpi_worker.sandbox.hubspot.portal import WriteError

MAX_LIMIT = 200
DEFAULT_LIMIT = 10
MAX_RESULTS = 10_000
MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    }
)


@dataclass
class SearchPage:
    total: int
    rows: np.ndarray
    next_after: int | None
    properties: list[str] | None


def invalid(message: str, **context: list[str]) -> WriteError:
    return WriteError(400, "VALIDATION_ERROR", message, context=context or None)


def search(store: ObjectStore, body: Any) -> SearchPage:
    """Run one search request body against ``store`` (caller holds the portal lock)."""
    if not isinstance(body, dict):
        raise invalid("Invalid input JSON: the search request must be an object")
    limit = _int(body.get("limit", DEFAULT_LIMIT), "limit")
    after = _int(body.get("after") or 0, "after")
    if limit < 0 or after < 0:
        raise invalid("limit and after must not be negative")
    if limit > MAX_LIMIT:
        raise invalid(
            f"Page size {limit} is too large: the search endpoints return at most"
            f" {MAX_LIMIT} records per page.",
            limit=[str(limit)],
        )
    if after + limit > MAX_RESULTS:
        # Modelled body (no source records the wording); the 400 itself is documented.
        raise invalid(
            f"The search endpoints return at most {MAX_RESULTS:,} results for a query:"
            f" after={after} with limit={limit} pages beyond them. Narrow the query"
            " (e.g. by hs_lastmodifieddate windows) to read further.",
            after=[str(after)],
            limit=[str(limit)],
        )
    mask = ~store.archived
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list):
        raise invalid("filterGroups must be a list")
    if groups:
        _check_filter_limits(groups)
        matched = np.zeros(store.size, dtype=bool)
        for group in groups:
            in_group = np.ones(store.size, dtype=bool)
            for f in group.get("filters") or []:
                in_group &= _filter_mask(store, f)
            matched |= in_group
        mask &= matched
    query = body.get("query")
    if query:
        needle = str(query).lower()
        column = store.columns.get(store.primary_property)
        if column is not None and not column.numeric:
            mask &= column.text_mask(lambda v: v is not None and needle in v.lower())
    sorts = _sorts(store, body.get("sorts") or [])
    if sorts:
        order = _sort_order(store, sorts)
        rows = order[mask[order]]
    else:
        rows = np.flatnonzero(mask)  # ids grow with the row: hs_object_id ascending
    total = len(rows)
    page = rows[after : after + limit]
    next_after = after + limit if after + limit < total else None
    properties = body.get("properties")
    if properties is not None and not isinstance(properties, list):
        raise invalid("properties must be a list of property names")
    return SearchPage(total, page, next_after, properties or None)


def _int(value: Any, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise invalid(f"{name} must be an integer, got {value!r}", **{name: [str(value)]}) from None


def _check_filter_limits(groups: list[Any]) -> None:
    if len(groups) > MAX_GROUPS:
        raise invalid(
            f"Too many filter groups ({len(groups)}): at most {MAX_GROUPS} are allowed.",
            filterGroups=[str(len(groups))],
        )
    total = 0
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list):
            raise invalid("Each filter group needs a list of filters")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise invalid(
                f"Too many filters in a group ({len(filters)}): at most"
                f" {MAX_FILTERS_PER_GROUP} per group are allowed.",
                filters=[str(len(filters))],
            )
        total += len(filters)
    if total > MAX_FILTERS:
        raise invalid(
            f"Too many filters ({total}): at most {MAX_FILTERS} in all are allowed.",
            filters=[str(total)],
        )


def _column(store: ObjectStore, name: Any) -> Any:
    column = store.columns.get(str(name)) if name is not None else None
    if column is None:
        raise invalid(
            f'Property "{name}" does not exist on {store.name}.', propertyName=[str(name)]
        )
    return column


def _filter_mask(store: ObjectStore, f: Any) -> np.ndarray:
    if not isinstance(f, dict):
        raise invalid("Each filter must be an object")
    name, op = f.get("propertyName"), str(f.get("operator") or "").upper()
    if op not in OPERATORS:
        raise invalid(f"Unknown filter operator {f.get('operator')!r}", operator=[op])
    column = _column(store, name)
    value, high, values = f.get("value"), f.get("highValue"), f.get("values")
    needs_value = op not in {"HAS_PROPERTY", "NOT_HAS_PROPERTY", "IN", "NOT_IN"}
    if needs_value and value is None:
        raise invalid(f"Filter on {name} with operator {op} needs a value", propertyName=[name])
    if op == "BETWEEN" and high is None:
        raise invalid(f"BETWEEN on {name} needs highValue", propertyName=[name])
    if op in {"IN", "NOT_IN"} and not isinstance(values, list):
        raise invalid(f"{op} on {name} needs a list of values", propertyName=[name])
    if column.numeric:
        return _numeric_mask(column, op, value, high, values, name)
    return _text_mask(column, op, value, high, values)


def _numeric_mask(
    column: Any, op: str, value: Any, high: Any, values: Any, name: str
) -> np.ndarray:
    keys = column.keys()
    present = ~np.isnan(keys)
    if op == "HAS_PROPERTY":
        return present
    if op == "NOT_HAS_PROPERTY":
        return ~present

    def parse(text: Any) -> float:
        try:
            return column.parse_filter(str(text))
        except (ValueError, OverflowError):
            raise invalid(
                f"{text!r} is not a valid value for {name}", propertyName=[name]
            ) from None

    if op in {"IN", "NOT_IN"}:
        hit = np.isin(keys, np.array([parse(v) for v in values], dtype=np.float64))
        return hit if op == "IN" else ~hit
    if op in {"CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}:
        hit = keys == parse(value)
        return hit if op == "CONTAINS_TOKEN" else ~hit
    x = parse(value)
    with np.errstate(invalid="ignore"):
        if op == "EQ":
            return keys == x
        if op == "NEQ":
            return ~(keys == x)
        if op == "LT":
            return keys < x
        if op == "LTE":
            return keys <= x
        if op == "GT":
            return keys > x
        if op == "GTE":
            return keys >= x
        return (keys >= x) & (keys <= parse(high))  # BETWEEN


def _text_mask(column: Any, op: str, value: Any, high: Any, values: Any) -> np.ndarray:
    predicate: Callable[[str | None], bool]
    if op == "HAS_PROPERTY":
        predicate = _present
    elif op == "NOT_HAS_PROPERTY":
        predicate = _absent
    elif op in {"IN", "NOT_IN"}:
        wanted = {str(v).lower() for v in values}
        inside = op == "IN"

        def predicate(v: str | None) -> bool:
            return (v is not None and v.lower() in wanted) == inside

    elif op in {"CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}:
        pattern = str(value).lower()
        expected = op == "CONTAINS_TOKEN"

        def predicate(v: str | None) -> bool:
            if v is None:
                return not expected
            tokens = re.split(r"[^\w@.*-]+", v.lower())
            found = any(fnmatch.fnmatchcase(t, pattern) for t in tokens if t) or (
                " " in pattern and fnmatch.fnmatchcase(v.lower(), f"*{pattern}*")
            )
            return found == expected

    else:
        x = str(value).lower()
        y = str(high).lower() if high is not None else x
        tests: dict[str, Callable[[str], bool]] = {
            "EQ": lambda s: s == x,
            "LT": lambda s: s < x,
            "LTE": lambda s: s <= x,
            "GT": lambda s: s > x,
            "GTE": lambda s: s >= x,
            "BETWEEN": lambda s: x <= s <= y,
        }
        if op == "NEQ":

            def predicate(v: str | None) -> bool:
                return v is None or v.lower() != x

        else:
            test = tests[op]

            def predicate(v: str | None) -> bool:
                return v is not None and test(v.lower())

    return column.text_mask(predicate)


def _present(v: str | None) -> bool:
    return v is not None


def _absent(v: str | None) -> bool:
    return v is None


def _sorts(store: ObjectStore, sorts: Any) -> list[tuple[str, bool]]:
    if not isinstance(sorts, list):
        raise invalid("sorts must be a list")
    out = []
    for item in sorts:
        if isinstance(item, str):
            name, descending = item, False
        elif isinstance(item, dict):
            name = item.get("propertyName")
            direction = str(item.get("direction") or "ASCENDING").upper()
            if direction not in {"ASCENDING", "DESCENDING"}:
                raise invalid(f"Unknown sort direction {direction!r}", direction=[direction])
            descending = direction == "DESCENDING"
        else:
            raise invalid("Each sort is a property name or {propertyName, direction}")
        _column(store, name)
        out.append((str(name), descending))
    return out


def _sort_order(store: ObjectStore, sorts: list[tuple[str, bool]]) -> np.ndarray:
    """Row order for ``sorts`` (ties: hs_object_id ascending; no value: last), cached."""
    key = ("sort", tuple(sorts))
    cached = store.cache.get(key)
    if cached is not None and cached[0] == store.version and len(cached[1]) == store.size:
        return cached[1]
    columns: list[np.ndarray] = [np.arange(store.size)]  # row order = hs_object_id order
    for name, descending in reversed(sorts):
        column = store.columns[name]
        if column.numeric:
            keys = column.keys()
        elif hasattr(column, "rank_keys"):
            keys = column.rank_keys()
        else:
            keys = _rank(column.render(np.arange(store.size)))
        keys = np.asarray(keys, dtype=np.float64)
        missing = np.isnan(keys)
        values = np.where(missing, 0.0, -keys if descending else keys)
        columns.append(values)
        columns.append(missing)  # more significant than the value: missing ones last
    order = np.lexsort(columns)
    store.cache[key] = (store.version, order)
    return order


def _rank(values: list[str | None]) -> np.ndarray:
    keys = np.full(len(values), np.nan)
    present = [i for i, v in enumerate(values) if v is not None]
    if present:
        _, inverse = np.unique([values[i].lower() for i in present], return_inverse=True)  # type: ignore[union-attr]
        keys[present] = inverse
    return keys
