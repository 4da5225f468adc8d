"""The syntax tree of the SOQL subset the sandbox Salesforce understands.

``soql.parse(text) -> Query`` builds it; ``engine.py`` evaluates it against the sandbox's tables.
Names keep the case the query wrote them in; resolving them (case-insensitively, as Salesforce
does) is the engine's job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldRef:
    """A field, possibly through parent relationships: ``Owner.Email`` -> ("Owner", "Email")."""

    path: tuple[str, ...]


@dataclass(frozen=True)
class FuncCall:
    """``convertCurrency(Amount)``, ``toLabel(StageName)``, ``COUNT(Id)``, ``COUNT()``.

    ``name`` is lower-cased; ``args`` holds field references (empty for ``COUNT()``).
    """

    name: str
    args: tuple[FieldRef, ...]


@dataclass(frozen=True)
class SubQuery:
    """A parent-to-child subquery in the select list: ``(SELECT Id FROM OpportunityHistories)``.

    ``query.from_`` is the child relationship name.
    """

    query: Query


@dataclass(frozen=True)
class SelectItem:
    expr: FieldRef | FuncCall | SubQuery
    alias: str | None = None


# ---- literals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StringLit:
    value: str  # escapes already resolved


@dataclass(frozen=True)
class NumberLit:
    value: int | float


@dataclass(frozen=True)
class BoolLit:
    value: bool


@dataclass(frozen=True)
class NullLit:
    pass


@dataclass(frozen=True)
class DateLit:
    value: dt.date


@dataclass(frozen=True)
class DateTimeLit:
    value: dt.datetime  # always timezone-aware


@dataclass(frozen=True)
class DateFunctionLit:
    """A relative date literal: ``TODAY``, ``LAST_N_DAYS:30``, ``THIS_QUARTER``...

    ``name`` is upper-cased; ``n`` is set for the ``..._N_...`` forms.
    """

    name: str
    n: int | None = None


Literal = StringLit | NumberLit | BoolLit | NullLit | DateLit | DateTimeLit | DateFunctionLit


@dataclass(frozen=True)
class SemiJoin:
    """``Id IN (SELECT OpportunityId FROM OpportunityHistory WHERE ...)``."""

    query: Query


# ---- conditions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """``left op value``.

    ``op`` is one of ``= != < <= > >= LIKE IN NOT IN INCLUDES EXCLUDES`` (``<>`` is read as
    ``!=``). For IN / NOT IN / INCLUDES / EXCLUDES ``value`` is a tuple of literals or a
    SemiJoin; otherwise one literal.
    """

    left: FieldRef | FuncCall
    op: str
    value: Literal | tuple[Literal, ...] | SemiJoin


@dataclass(frozen=True)
class And:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Comparison | And | Or | Not


@dataclass(frozen=True)
class OrderItem:
    field: FieldRef
    descending: bool = False
    nulls_last: bool | None = None  # None: Salesforce's default (NULLS FIRST asc, LAST desc)


@dataclass(frozen=True)
class Query:
    select: tuple[SelectItem, ...]
    from_: str
    where: Condition | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: int | None = None
    offset: int | None = None

    @property
    def is_count(self) -> bool:
        """``SELECT COUNT() FROM ...``: only totalSize is answered."""
        return (
            len(self.select) == 1
            and isinstance(self.select[0].expr, FuncCall)
            and self.select[0].expr.name == "count"
            and not self.select[0].expr.args
        )
