"""How many pages (API calls) a Salesforce query answer takes, by the documented batch rule.

Salesforce's Query Options header (REST) and QueryOptions (SOAP): the batch size is 200..2000
(default 2000), child records of relationship subqueries count toward it, and a batch may hold
fewer records than asked. The sandbox fills a page with parents while the parents and their
inlined children stay within the batch size, at least one parent a page; a child result
inlines at most ``CHILD_BATCH_SIZE`` records (the rest follow its own ``nextRecordsUrl``, a
call of their own). Tests count expected calls here, written apart from the sandbox's code, so
a change to either shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from crm_kpi_worker.sandbox.salesforce.subqueries import CHILD_BATCH_SIZE

__all__ = [
    "child_calls",
    "child_results",
    "fewest_pages",
    "inlined_rows",
    "pages_of",
    "record_rows",
]


def child_results(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's relationship subquery results (a null one, no children, is left out)."""
    return [
        v for v in record.values() if isinstance(v, dict) and isinstance(v.get("records"), list)
    ]


def inlined_rows(record: dict[str, Any]) -> int:
    """Records a parent counts for in its page: itself and the children it inlines."""
    return 1 + sum(min(len(r["records"]), CHILD_BATCH_SIZE) for r in child_results(record))


def record_rows(record: dict[str, Any]) -> int:
    """The record and every child record it has (children read to the end)."""
    return 1 + sum(len(r["records"]) for r in child_results(record))


def pages_of(records: Iterable[dict[str, Any]], batch_size: int) -> int:
    """Pages of an answer holding ``records`` (children complete) at ``batch_size``."""
    pages, used = 0, 0
    for record in records:
        rows = inlined_rows(record)
        if pages == 0 or used + rows > batch_size:
            pages, used = pages + 1, rows
        else:
            used += rows
    return max(pages, 1)


def child_calls(records: Iterable[dict[str, Any]], batch_size: int) -> int:
    """Calls that read the children a page did not inline (batch by batch)."""
    calls = 0
    for record in records:
        for result in child_results(record):
            rest = len(result["records"]) - CHILD_BATCH_SIZE
            calls += math.ceil(rest / batch_size) if rest > 0 else 0
    return calls


def fewest_pages(rows_per_record: Sequence[int], batch_size: int) -> int:
    """The documented minimum: every row (parents and children) over full batches."""
    return max(1, math.ceil(sum(rows_per_record) / batch_size))
