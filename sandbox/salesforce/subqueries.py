"""Relationship subqueries (parent-to-child, ``(SELECT ... FROM OpportunityHistories)``) of
the sandbox's SOQL engine: which child rows each parent row has, in the subquery's order, and
their records, each parent's a query result of its own (null when it has none).

A page of the parent query (``engine.QueryResult.page``) selects its parents' children once,
counts them toward its batch size and renders what it counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from crm_kpi_worker.sandbox.salesforce.store import (
    Column,
    PolymorphicReferenceColumn,
    ReferenceColumn,
    Table,
)

if TYPE_CHECKING:
    from crm_kpi_worker.sandbox.salesforce.engine import Plan

__all__ = ["CHILD_BATCH_SIZE", "ChildQuery", "ChildSelection"]

#: Child records a relationship subquery's result inlines in its parent record; the rest are
#: served along the child result's ``nextRecordsUrl``. Salesforce documents that large child
#: results need queryMore, not where they are cut; clients have reported cuts at 199
#: (jsforce#1752) and 499 (simple-salesforce#311). The sandbox cuts at 200: the smaller
#: figure, so clients meet unfinished child results early.
CHILD_BATCH_SIZE = 200


@dataclass
class ChildSelection:
    """The child rows of some parent rows: ``rows`` grouped by ``group`` (the position of their
    parent among the parent rows), in the subquery's order within each group."""

    rows: np.ndarray
    group: np.ndarray

    def counts(self, parents: int) -> np.ndarray:
        """Child rows per parent position."""
        return np.bincount(self.group, minlength=parents)

    def of_first(self, parents: int) -> ChildSelection:
        """The child rows of the first ``parents`` parent positions."""
        keep = self.group < parents
        return ChildSelection(self.rows[keep], self.group[keep])


@dataclass
class ChildQuery:
    """A relationship subquery: which child rows each parent row has, and their records (each
    parent's a query result of its own, null when it has none)."""

    parent: Table
    child: Table
    fk: Column
    plan: Plan
    _index: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def by_parent(self) -> tuple[np.ndarray, np.ndarray]:
        """The child rows in parent order, and their parent rows: sorted once per query, as
        every page of it asks again (a query's pages read the child rows it started with)."""
        if self._index is None:
            parents_of_children = _parents(self.fk, self.child, self.parent)
            order = np.argsort(parents_of_children, kind="stable")
            self._index = (order, parents_of_children[order])
        return self._index

    def select(self, rows: np.ndarray) -> ChildSelection:
        query, ctx, child = self.plan.query, self.plan.ctx, self.child
        order, sorted_parents = self.by_parent()
        starts = np.searchsorted(sorted_parents, rows, "left")
        ends = np.searchsorted(sorted_parents, rows, "right")
        counts = ends - starts
        group = np.repeat(np.arange(len(rows)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        child_rows = order[np.repeat(starts, counts) + offsets]
        if not len(child_rows):
            return ChildSelection(child_rows, group)
        if not ctx.include_deleted and child.sobject.has_is_deleted:
            alive = ~child.columns["isdeleted"].vector(child_rows)[0]
            child_rows, group = child_rows[alive], group[alive]
        if self.plan.where is not None and len(child_rows):
            keep = self.plan.where.mask(self.plan.where.condition, child_rows)
            child_rows, group = child_rows[keep], group[keep]
        sort_index = _child_sort(self.plan, child_rows, group)
        child_rows, group = child_rows[sort_index], group[sort_index]
        if query.offset or query.limit is not None:
            size = np.bincount(group, minlength=len(rows))
            rank = np.arange(len(group)) - np.repeat(np.cumsum(size) - size, size)
            keep = rank >= (query.offset or 0)
            if query.limit is not None:
                keep &= rank < (query.offset or 0) + query.limit
            child_rows, group = child_rows[keep], group[keep]
        return ChildSelection(child_rows, group)

    def render(self, selection: ChildSelection, parents: int, version: str) -> list[Any]:
        if not len(selection.rows):
            return [None] * parents
        records = self.plan.render(selection.rows, version)
        grouped: list[list[dict[str, Any]]] = [[] for _ in range(parents)]
        for record, owner in zip(records, selection.group.tolist(), strict=True):
            grouped[owner].append(record)
        return [
            {"totalSize": len(items), "done": True, "records": items} if items else None
            for items in grouped
        ]


def _child_sort(plan: Plan, rows: np.ndarray, group: np.ndarray) -> np.ndarray:
    keys: list[np.ndarray] = [rows]
    for accessor, descending, nulls_last in reversed(plan.order):
        values, null = accessor.sort_keys(rows)
        values = np.where(null, 0, values)
        keys.append(-values if descending else values)
        keys.append(~null if not nulls_last else null)
    keys.append(group)
    return np.lexsort(keys)


def _parents(fk: Column, child: Table, parent: Table) -> np.ndarray:
    rows = np.arange(child.size)
    if isinstance(fk, PolymorphicReferenceColumn):
        code = fk.prefixes.index(parent.sobject.key_prefix)
        return np.where(fk.codes[rows] == code, fk.rows[rows], -1).astype(np.int64)
    assert isinstance(fk, ReferenceColumn)
    return fk.data[rows].astype(np.int64)
