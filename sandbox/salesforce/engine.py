"""Evaluates parsed SOQL against the sandbox org's columnar tables.

A query becomes a ``Plan``: a vectorised filter over row indexes, an ordering, and a renderer
that turns a page of rows into the JSON records the REST API answers. Names resolve
case-insensitively, as in Salesforce; errors carry Salesforce's error codes and messages.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox.salesforce import describe
from crm_kpi_worker.sandbox.salesforce import soql_ast as ast
from crm_kpi_worker.sandbox.salesforce.access import UserAccess
from crm_kpi_worker.sandbox.salesforce.date_literals import date_literal_range
from crm_kpi_worker.sandbox.salesforce.ids import is_valid_id, make_id, parse_id
from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg
from crm_kpi_worker.sandbox.salesforce.soql import like_to_regex, parse
from crm_kpi_worker.sandbox.salesforce.store import (
    Column,
    FieldDef,
    NumberColumn,
    PolymorphicReferenceColumn,
    ReferenceColumn,
    StringColumn,
    Table,
)
from crm_kpi_worker.sandbox.salesforce.subqueries import (
    CHILD_BATCH_SIZE,
    ChildQuery,
    ChildSelection,
)

MAX_OFFSET = 2000
MS_PER_DAY = 86_400_000


class QueryError(Exception):
    """A query Salesforce would refuse: ``code`` is its errorCode (HTTP 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _no_such_column(name: str, table: Table, text: str) -> QueryError:
    message = (
        f"No such column '{name}' on entity '{table.name}'. If you are attempting to use a"
        " custom field, be sure to append the '__c' after the custom field name. Please"
        " reference your WSDL or the describe call for the appropriate names."
    )
    return QueryError("INVALID_FIELD", _with_position(text, name, message))


def _with_position(text: str, token: str, message: str) -> str:
    """Salesforce's layout: the query line, a caret, 'ERROR at Row:r:Column:c', the reason."""
    match = re.search(rf"(?<![\w.]){re.escape(token)}(?!\w)", text, re.IGNORECASE)
    if match is None:
        return message
    before = text[: match.start()]
    row = before.count("\n") + 1
    line_start = before.rfind("\n") + 1
    column = match.start() - line_start + 1
    line = text.splitlines()[row - 1] if text.splitlines() else text
    return f"{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{message}"


# ---- field access ---------------------------------------------------------------------------


@dataclass
class Accessor:
    """A field reached from a table's rows, possibly through parent relationships."""

    hops: list[tuple[ReferenceColumn, Table]]  # (reference column, the table it points to)
    column: Column
    relationship_names: list[str]  # API names of the relationships walked, for nesting

    @property
    def definition(self) -> FieldDef:
        return self.column.definition

    @property
    def kind(self) -> str:
        return self.column.kind

    def target_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        null = np.zeros(len(rows), dtype=bool)
        current = rows
        for reference, _table in self.hops:
            pointed = reference.data[current]
            null |= pointed < 0
            current = np.where(pointed < 0, 0, pointed)
        return current, null

    def vector(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        target, missing = self.target_rows(rows)
        if not self.hops:
            return self.column.vector(rows)
        values, null = self.column.vector(target)
        return values, null | missing

    def sort_keys(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        target, missing = self.target_rows(rows)
        keys, null = self.column.sort_keys(target)
        return keys, null | missing


def resolve(table: Table, path: tuple[str, ...], ctx: Context) -> Accessor:
    """The field at ``path`` from ``table``'s rows; a field or relationship the session's user
    cannot read is refused exactly as one that does not exist."""
    text, access = ctx.text, ctx.access
    hops: list[tuple[ReferenceColumn, Table]] = []
    names: list[str] = []
    current = table
    for step in path[:-1]:
        definition = current.sobject.relationship(step)
        column = current.column(definition.name) if definition else None
        target = ctx.tables[definition.reference_to[0].lower()] if definition else None
        if (
            definition is None
            or column is None
            or (
                access is not None
                and not (
                    access.can_read_field(current, definition) and access.can_read_object(target)  # type: ignore[arg-type]
                )
            )
        ):
            raise QueryError(
                "INVALID_FIELD",
                _with_position(
                    text,
                    ".".join(path),
                    f"Didn't understand relationship '{step}' in field path. If you are"
                    " attempting to use a custom relationship, be sure to append the '__r'"
                    " after the custom relationship name. Please reference your WSDL or the"
                    " describe call for the appropriate names.",
                ),
            )
        if not isinstance(column, ReferenceColumn):
            raise QueryError(
                "INVALID_FIELD",
                f"Polymorphic relationship '{step}' needs TYPEOF, which the sandbox does not"
                " support: select the id field instead.",
            )
        assert target is not None
        hops.append((column, target))
        names.append(definition.relationship_name or step)
        current = target
    column = current.column(path[-1])
    if column is None or (
        access is not None and not access.can_read_field(current, column.definition)
    ):
        raise _no_such_column(".".join(path) if len(path) > 1 else path[-1], current, text)
    return Accessor(hops, column, names)


# ---- conditions -----------------------------------------------------------------------------


def _type_name(definition: FieldDef) -> str:
    return {"datetime": "dateTime"}.get(definition.type, definition.type)


def _literal_error(definition: FieldDef, quoted: bool) -> QueryError:
    how = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
    return QueryError(
        "INVALID_QUERY_FILTER_OPERATOR",
        f"value of filter criterion for field '{definition.name}' must be of type "
        f"{_type_name(definition)} and {how}",
    )


@dataclass
class Context:
    org: SandboxOrg
    text: str
    today: dt.date
    include_deleted: bool
    tables: dict[str, Table]
    access: UserAccess | None = None  # the session user's permissions, when enforced


class Filter:
    """Evaluates a condition over an array of row indexes of one table."""

    def __init__(self, table: Table, condition: ast.Condition, ctx: Context) -> None:
        self.table = table
        self.condition = condition
        self.ctx = ctx
        self._check(condition)

    def _check(self, condition: ast.Condition) -> None:
        # Resolve every field now, so a bad name fails before any row is read.
        if isinstance(condition, ast.And | ast.Or):
            for item in condition.items:
                self._check(item)
        elif isinstance(condition, ast.Not):
            self._check(condition.item)
        else:
            self._left(condition.left)

    def _left(self, left: ast.FieldRef | ast.FuncCall) -> tuple[Accessor, str | None]:
        if isinstance(left, ast.FieldRef):
            accessor = resolve(self.table, left.path, self.ctx)
            if not describe.filterable(accessor.definition):
                raise QueryError(
                    "INVALID_FIELD",
                    f"field '{accessor.definition.name}' can not be filtered in query call",
                )
            return accessor, None
        if left.name not in _DATE_FUNCTIONS or len(left.args) != 1:
            raise QueryError(
                "MALFORMED_QUERY",
                f"{left.name.upper()}() cannot be used in the WHERE clause of this query",
            )
        return resolve(self.table, left.args[0].path, self.ctx), left.name

    def apply(self, rows: np.ndarray) -> np.ndarray:
        return rows[self.mask(self.condition, rows)]

    def mask(self, condition: ast.Condition, rows: np.ndarray) -> np.ndarray:
        if isinstance(condition, ast.And):
            keep = np.arange(len(rows))
            for item in condition.items:
                if not len(keep):
                    break
                keep = keep[self.mask(item, rows[keep])]
            result = np.zeros(len(rows), dtype=bool)
            result[keep] = True
            return result
        if isinstance(condition, ast.Or):
            result = np.zeros(len(rows), dtype=bool)
            for item in condition.items:
                pending = np.flatnonzero(~result)
                if not len(pending):
                    break
                result[pending[self.mask(item, rows[pending])]] = True
            return result
        if isinstance(condition, ast.Not):
            return ~self.mask(condition.item, rows)
        return self.compare(condition, rows)

    def compare(self, comparison: ast.Comparison, rows: np.ndarray) -> np.ndarray:
        accessor, function = self._left(comparison.left)
        op = comparison.op
        value = comparison.value
        if function is not None:
            values, null = _date_function(function, accessor, rows)
            return _compare_numbers(values, null, op, value, accessor.definition)
        if isinstance(value, ast.SemiJoin):
            return self._semi_join(accessor, rows, op, value)
        values, null = accessor.vector(rows)
        literals = value if isinstance(value, tuple) else (value,)
        if op in {"IN", "NOT IN"}:
            hits = np.zeros(len(rows), dtype=bool)
            for literal in literals:
                if isinstance(literal, ast.NullLit):
                    hits |= null
                else:
                    hits |= self._equal(accessor, values, null, literal)
            return hits if op == "IN" else ~hits
        if op in {"INCLUDES", "EXCLUDES"}:
            raise QueryError(
                "INVALID_QUERY_FILTER_OPERATOR",
                f"{op} can only be used with multi-select picklist fields",
            )
        (literal,) = literals
        if isinstance(literal, ast.NullLit):
            if op == "=":
                return null.copy()
            if op == "!=":
                return ~null
            raise QueryError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on null: {op}")
        if op == "=":
            return self._equal(accessor, values, null, literal)
        if op == "!=":
            # SOQL treats null as a value: "x != 'a'" keeps the rows where x is null.
            return ~self._equal(accessor, values, null, literal)
        if op == "LIKE":
            return self._like(accessor, values, null, literal)
        return self._order(accessor, values, null, op, literal)

    def _equal(
        self, accessor: Accessor, values: np.ndarray, null: np.ndarray, literal: ast.Literal
    ) -> np.ndarray:
        kind = accessor.kind
        definition = accessor.definition
        if isinstance(literal, ast.NullLit):
            return null.copy()
        if kind in {"string", "text"}:
            if not isinstance(literal, ast.StringLit):
                raise _literal_error(definition, quoted=True)
            wanted = literal.value.casefold()
            if kind == "string":
                column = accessor.column
                assert isinstance(column, StringColumn)
                codes = [c for c, text in enumerate(column.categories) if text.casefold() == wanted]
                return np.isin(values, codes) & ~null
            return np.array(
                [v is not None and v.casefold() == wanted for v in values.tolist()], dtype=bool
            )
        if kind in {"id", "reference", "polyref"}:
            if not isinstance(literal, ast.StringLit):
                raise _literal_error(definition, quoted=True)
            encoded = self._encode_id(accessor, literal.value)
            return (
                (values == encoded) & ~null if encoded is not None else np.zeros(len(values), bool)
            )
        if kind in {"date", "datetime"}:
            start, end = self._range(accessor, literal)
            return (values >= start) & (values < end) & ~null
        return _compare_numbers(values, null, "=", literal, definition)

    def _encode_id(self, accessor: Accessor, value: str) -> int | None:
        if not is_valid_id(value):
            raise QueryError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
        column = accessor.column
        if isinstance(column, PolymorphicReferenceColumn):
            return column.encode(value)
        if isinstance(column, ReferenceColumn):
            return parse_id(value, column.target_prefix)
        owner = accessor.hops[-1][1] if accessor.hops else self.table
        return parse_id(value, owner.sobject.key_prefix)

    def _like(
        self, accessor: Accessor, values: np.ndarray, null: np.ndarray, literal: ast.Literal
    ) -> np.ndarray:
        if accessor.kind not in {"string", "text"} or not isinstance(literal, ast.StringLit):
            raise QueryError(
                "INVALID_QUERY_FILTER_OPERATOR",
                f"invalid operator on field '{accessor.definition.name}': LIKE works on text"
                " fields with a quoted pattern",
            )
        pattern = like_to_regex(literal.value)
        if accessor.kind == "string":
            column = accessor.column
            assert isinstance(column, StringColumn)
            codes = [c for c, text in enumerate(column.categories) if pattern.fullmatch(text)]
            return np.isin(values, codes) & ~null
        return np.array(
            [v is not None and bool(pattern.fullmatch(v)) for v in values.tolist()], dtype=bool
        )

    def _order(
        self,
        accessor: Accessor,
        values: np.ndarray,
        null: np.ndarray,
        op: str,
        literal: ast.Literal,
    ) -> np.ndarray:
        kind = accessor.kind
        if kind in {"date", "datetime"}:
            start, end = self._range(accessor, literal)
            if op == "<":
                hit = values < start
            elif op == "<=":
                hit = values < end
            elif op == ">":
                hit = values >= end
            else:
                hit = values >= start
            return hit & ~null
        if kind in {"string", "text"}:
            if not isinstance(literal, ast.StringLit):
                raise _literal_error(accessor.definition, quoted=True)
            bound = literal.value.casefold()
            compare = _PY_OPS[op]
            if kind == "string":
                column = accessor.column
                assert isinstance(column, StringColumn)
                codes = [c for c, t in enumerate(column.categories) if compare(t.casefold(), bound)]
                return np.isin(values, codes) & ~null
            return np.array(
                [v is not None and compare(v.casefold(), bound) for v in values.tolist()],
                dtype=bool,
            )
        if kind in {"id", "reference", "polyref", "bool"}:
            raise QueryError(
                "INVALID_QUERY_FILTER_OPERATOR",
                f"invalid operator on {_type_name(accessor.definition)} field"
                f" '{accessor.definition.name}': {op}",
            )
        return _compare_numbers(values, null, op, literal, accessor.definition)

    def _range(self, accessor: Accessor, literal: ast.Literal) -> tuple[int, int]:
        """[start, end) of a literal in the field's own unit (days or milliseconds)."""
        definition = accessor.definition
        is_datetime = accessor.kind == "datetime"
        if isinstance(literal, ast.DateFunctionLit):
            start_day, end_day = date_literal_range(literal, self.ctx.today)
            start = (start_day - dt.date(1970, 1, 1)).days
            end = (end_day - dt.date(1970, 1, 1)).days
            return (start * MS_PER_DAY, end * MS_PER_DAY) if is_datetime else (start, end)
        if is_datetime and isinstance(literal, ast.DateTimeLit):
            ms = round(literal.value.timestamp() * 1000)
            return ms, ms + 1
        if not is_datetime and isinstance(literal, ast.DateLit):
            day = (literal.value - dt.date(1970, 1, 1)).days
            return day, day + 1
        raise _literal_error(definition, quoted=False)

    def _semi_join(
        self, accessor: Accessor, rows: np.ndarray, op: str, join: ast.SemiJoin
    ) -> np.ndarray:
        if op not in {"IN", "NOT IN"} or accessor.kind not in {"id", "reference"}:
            raise QueryError(
                "MALFORMED_QUERY",
                "semi-join sub-selects are only allowed on id or reference fields",
            )
        inner = build_plan(join.query, self.ctx)
        if len(join.query.select) != 1 or not isinstance(join.query.select[0].expr, ast.FieldRef):
            raise QueryError(
                "MALFORMED_QUERY", "a semi-join sub-select selects exactly one id field"
            )
        inner_field = resolve(inner.table, join.query.select[0].expr.path, self.ctx)
        inner_rows = inner.rows()
        wanted, wanted_null = inner_field.vector(inner_rows)
        values, null = accessor.vector(rows)
        hits = np.isin(values, wanted[~wanted_null]) & ~null
        return hits if op == "IN" else ~hits


_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

_DATE_FUNCTIONS = {
    "calendar_year",
    "calendar_quarter",
    "calendar_month",
    "day_in_month",
    "fiscal_year",
    "fiscal_quarter",
    "day_only",
}


def _date_function(
    name: str, accessor: Accessor, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if accessor.kind not in {"date", "datetime"}:
        raise QueryError(
            "MALFORMED_QUERY",
            f"{name.upper()}() takes a date or dateTime field, not '{accessor.definition.name}'",
        )
    values, null = accessor.vector(rows)
    days = np.where(null, 0, values if accessor.kind == "date" else values // MS_PER_DAY)
    stamp = days.astype("datetime64[D]")
    months = stamp.astype("datetime64[M]").astype(np.int64)
    if name in {"calendar_year", "fiscal_year"}:
        out = months // 12 + 1970
    elif name in {"calendar_quarter", "fiscal_quarter"}:
        out = (months % 12) // 3 + 1
    elif name == "calendar_month":
        out = months % 12 + 1
    elif name == "day_in_month":
        out = (stamp - stamp.astype("datetime64[M]")).astype(np.int64) + 1
    else:  # day_only: compared with date literals, in days
        return days.astype(np.int64), null
    return out.astype(np.float64), null


def _compare_numbers(
    values: np.ndarray, null: np.ndarray, op: str, literal: Any, definition: FieldDef
) -> np.ndarray:
    if isinstance(literal, ast.DateLit) and definition.type in {"date", "datetime"}:
        number: float = (literal.value - dt.date(1970, 1, 1)).days
    elif (isinstance(literal, ast.BoolLit) and definition.type == "boolean") or (
        isinstance(literal, ast.NumberLit) and definition.type != "boolean"
    ):
        number = float(literal.value)
    else:
        raise _literal_error(definition, quoted=False)
    values = values.astype(np.float64)
    if op in {"=", "IN"}:
        hit = values == number
    elif op == "!=":
        return (values != number) | null
    elif op == "<":
        hit = values < number
    elif op == "<=":
        hit = values <= number
    elif op == ">":
        hit = values > number
    elif op == ">=":
        hit = values >= number
    else:
        raise QueryError(
            "INVALID_QUERY_FILTER_OPERATOR",
            f"invalid operator on field '{definition.name}': {op}",
        )
    return hit & ~null


# ---- plans ----------------------------------------------------------------------------------


@dataclass
class Output:
    """One selected item and how to put it in a record."""

    key: str  # JSON key (field API name, alias, relationship name)
    nest: list[str]  # relationship names walked (nested objects)
    render: Callable[[np.ndarray, str], list[Any]]  # (rows, API version) -> values
    hops: list[tuple[ReferenceColumn, Table]] = field(default_factory=list)
    # The field an item selects as it is stored (None for computed items such as
    # convertCurrency and subqueries): Bulk API CSV pages read its column directly.
    accessor: Accessor | None = None
    children: ChildQuery | None = None  # a relationship subquery's rows and their rendering


@dataclass
class Plan:
    query: ast.Query
    table: Table
    ctx: Context
    where: Filter | None
    outputs: list[Output]
    order: list[tuple[Accessor, bool, bool]]  # accessor, descending, nulls last
    aggregates: list[tuple[str, ast.FuncCall, Accessor | None]]

    def rows(self) -> np.ndarray:
        rows = self.table.live_rows(self.ctx.include_deleted)
        if self.where is not None:
            rows = self.where.apply(rows)
        rows = self.sort(rows)
        offset = self.query.offset or 0
        if offset:
            rows = rows[offset:]
        if self.query.limit is not None:
            rows = rows[: self.query.limit]
        return rows

    def sort(self, rows: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Rows in ORDER BY order; with ``groups``, ordered within each group (children)."""
        if not self.order and groups is None:
            return rows
        keys: list[np.ndarray] = [rows]  # lexsort: last key is primary; row order breaks ties
        for accessor, descending, nulls_last in reversed(self.order):
            values, null = accessor.sort_keys(rows)
            values = np.where(null, 0, values)
            keys.append(-values if descending else values)
            keys.append(~null if not nulls_last else null)
        if groups is not None:
            keys.append(groups)
        return rows[np.lexsort(keys)]

    def render(
        self,
        rows: np.ndarray,
        version: str,
        selected: dict[int, ChildSelection] | None = None,
    ) -> list[dict[str, Any]]:
        """The records of ``rows``; ``selected``: child rows already chosen for them, by output
        position (a page chooses them to count them, and renders what it counted)."""
        if self.aggregates:
            return [self.aggregate(rows)]
        columns = []
        for position, output in enumerate(self.outputs):
            if output.children is not None and selected and position in selected:
                values = output.children.render(selected[position], len(rows), version)
            else:
                values = output.render(rows, version)
            columns.append((output, values))
        nested_targets: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray, Table]] = {}
        for output in self.outputs:
            for depth in range(1, len(output.nest) + 1):
                key = tuple(output.nest[:depth])
                if key not in nested_targets:
                    current = rows
                    missing = np.zeros(len(rows), dtype=bool)
                    table = self.table
                    for reference, target in output.hops[:depth]:
                        pointed = reference.data[current]
                        missing |= pointed < 0
                        current = np.where(pointed < 0, 0, pointed)
                        table = target
                    nested_targets[key] = (current, missing, table)
        base = f"/services/data/v{version}/sobjects/"
        type_name = self.table.name
        nested_info = {
            key: (targets.tolist(), missing.tolist(), table.name, table.sobject.key_prefix)
            for key, (targets, missing, table) in nested_targets.items()
        }
        records: list[dict[str, Any]] = []
        prefix = self.table.sobject.key_prefix
        for position, row in enumerate(rows.tolist()):
            record: dict[str, Any] = {
                "attributes": {
                    "type": type_name,
                    "url": base + type_name + "/" + make_id(prefix, row),
                }
            }
            for output, values in columns:
                target = record
                skip = False
                for depth in range(1, len(output.nest) + 1):
                    key = tuple(output.nest[:depth])
                    name = output.nest[depth - 1]
                    targets, missing, nested_type, nested_prefix = nested_info[key]
                    if missing[position]:
                        target[name] = None
                        skip = True
                        break
                    child = target.get(name)
                    if child is None:
                        child = {
                            "attributes": {
                                "type": nested_type,
                                "url": base
                                + nested_type
                                + "/"
                                + make_id(nested_prefix, targets[position]),
                            }
                        }
                        target[name] = child
                    target = child
                if not skip:
                    target[output.key] = values[position]
            records.append(record)
        return records

    def select_children(self, rows: np.ndarray) -> dict[int, ChildSelection]:
        """The child rows of ``rows`` for each relationship subquery, by output position."""
        return {
            position: output.children.select(rows)
            for position, output in enumerate(self.outputs)
            if output.children is not None
        }

    def aggregate(self, rows: np.ndarray) -> dict[str, Any]:
        record: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
        for key, call, accessor in self.aggregates:
            if accessor is None:
                record[key] = len(rows)
                continue
            values, null = accessor.vector(rows)
            present = values[~null]
            if call.name == "count":
                record[key] = len(present)
            elif call.name == "count_distinct":
                record[key] = len(np.unique(present))
            elif not len(present):
                record[key] = None
            elif accessor.kind != "number":
                raise QueryError(
                    "MALFORMED_QUERY",
                    f"{call.name.upper()}() in the sandbox works on number fields only",
                )
            else:
                reducer = {"sum": np.sum, "max": np.max, "min": np.min, "avg": np.mean}[call.name]
                record[key] = float(reducer(present.astype(np.float64)))
        return record


def build_plan(query: ast.Query, ctx: Context, table: Table | None = None) -> Plan:
    if table is None:
        table = ctx.tables.get(query.from_.lower())
        if table is None or (ctx.access is not None and not ctx.access.can_read_object(table)):
            raise QueryError(
                "INVALID_TYPE",
                _with_position(
                    ctx.text,
                    query.from_,
                    f"sObject type '{query.from_}' is not supported. If you are attempting to"
                    " use a custom object, be sure to append the '__c' after the entity name."
                    " Please reference your WSDL or the describe call for the appropriate names.",
                ),
            )
    if query.offset is not None and query.offset > MAX_OFFSET:
        raise QueryError(
            "NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}"
        )
    where = Filter(table, query.where, ctx) if query.where is not None else None
    order = []
    for item in query.order_by:
        accessor = resolve(table, item.field.path, ctx)
        if not describe.sortable(accessor.definition):
            raise QueryError(
                "INVALID_FIELD",
                f"field '{accessor.definition.name}' can not be sorted in a query call",
            )
        nulls_last = item.nulls_last if item.nulls_last is not None else item.descending
        order.append((accessor, item.descending, nulls_last))
    outputs: list[Output] = []
    aggregates: list[tuple[str, ast.FuncCall, Accessor | None]] = []
    expression = 0
    for item in () if query.is_count else query.select:
        expr = item.expr
        if isinstance(expr, ast.FuncCall) and expr.name in AGGREGATE_FUNCTIONS:
            accessor = resolve(table, expr.args[0].path, ctx) if expr.args else None
            key = item.alias or f"expr{expression}"
            expression += 0 if item.alias else 1
            aggregates.append((key, expr, accessor))
        elif isinstance(expr, ast.SubQuery):
            outputs.append(_child_output(table, expr.query, ctx))
        else:
            outputs.append(_field_output(table, expr, item.alias, ctx))
    if aggregates and outputs:
        raise QueryError(
            "MALFORMED_QUERY",
            "Field must be grouped or aggregated: the sandbox has no GROUP BY; select only"
            " aggregate functions",
        )
    if (
        any(
            isinstance(i.expr, ast.FuncCall) and i.expr.name == "count" and not i.expr.args
            for i in query.select
        )
        and not query.is_count
    ):
        raise QueryError("MALFORMED_QUERY", "COUNT() must be the only element in the SELECT list")
    return Plan(query, table, ctx, where, outputs, order, aggregates)


AGGREGATE_FUNCTIONS = frozenset({"count", "count_distinct", "sum", "max", "min", "avg"})


def _field_output(
    table: Table, expr: ast.FieldRef | ast.FuncCall, alias: str | None, ctx: Context
) -> Output:
    if isinstance(expr, ast.FieldRef):
        accessor = resolve(table, expr.path, ctx)

        def render(rows: np.ndarray, version: str, a: Accessor = accessor) -> list[Any]:
            target, missing = a.target_rows(rows)
            values = a.column.to_json(target)
            return [None if m else v for v, m in zip(values, missing.tolist(), strict=True)]

        return Output(
            accessor.definition.name, accessor.relationship_names, render, accessor.hops, accessor
        )
    if len(expr.args) != 1:
        raise QueryError("MALFORMED_QUERY", f"{expr.name}() takes one field")
    accessor = resolve(table, expr.args[0].path, ctx)
    key = alias or accessor.definition.name
    if expr.name in {"tolabel", "format"}:
        # Labels equal values in the sandbox (one language per picklist).
        plain = _field_output(table, expr.args[0], None, ctx)
        return Output(key, plain.nest, plain.render, plain.hops, plain.accessor)
    if expr.name == "convertcurrency":
        if accessor.definition.type != "currency" or accessor.hops:
            raise QueryError(
                "INVALID_FIELD",
                f"convertCurrency() takes a currency field of the queried object, not"
                f" '{'.'.join(expr.args[0].path)}'",
            )
        currency = table.column("CurrencyIsoCode")
        rates = _conversion_rates(ctx)
        amount_column = accessor.column
        assert isinstance(amount_column, NumberColumn)

        def convert(rows: np.ndarray, version: str) -> list[Any]:
            amounts = amount_column.data[rows].tolist()
            codes = currency.to_json(rows) if currency is not None else [None] * len(rows)
            out: list[Any] = []
            for amount, code in zip(amounts, codes, strict=True):
                rate = rates.get(code or "")
                out.append(None if amount != amount or rate is None else round(amount / rate, 2))
            return out

        return Output(key, [], convert)
    raise QueryError("MALFORMED_QUERY", f"function {expr.name}() is not supported in SELECT")


def _conversion_rates(ctx: Context) -> dict[str, float]:
    table = ctx.tables["currencytype"]
    rows = np.arange(table.size)
    codes = table.columns["isocode"].to_json(rows)
    rates = table.columns["conversionrate"].to_json(rows)
    active = table.columns["isactive"].to_json(rows)
    return {c: r for c, r, a in zip(codes, rates, active, strict=True) if a and r}


def _child_output(table: Table, query: ast.Query, ctx: Context) -> Output:
    relationship = table.sobject.children.get(query.from_.lower())
    child_table = ctx.tables.get(relationship.child.lower()) if relationship else None
    if (
        relationship is None
        or child_table is None
        or (ctx.access is not None and not ctx.access.can_read_object(child_table))
    ):
        raise QueryError(
            "INVALID_TYPE",
            _with_position(
                ctx.text,
                query.from_,
                f"Didn't understand relationship '{query.from_}' in FROM part of query call."
                " If you are attempting to use a custom relationship, be sure to append the"
                " '__r' after the custom relationship name. Please reference your WSDL or the"
                " describe call for the appropriate names.",
            ),
        )
    child = ctx.tables[relationship.child.lower()]
    plan = build_plan(query, ctx, child)
    if plan.aggregates:
        raise QueryError("MALFORMED_QUERY", "aggregate functions are not allowed in subqueries")
    children = ChildQuery(table, child, child.columns[relationship.field.lower()], plan)

    def render(rows: np.ndarray, version: str) -> list[Any]:
        return children.render(children.select(rows), len(rows), version)

    return Output(relationship.name, [], render, children=children)


# ---- entry point ----------------------------------------------------------------------------


@dataclass
class QueryResult:
    """A query's answer, served a batch at a time (``query``, then ``queryMore``).

    Batches follow Salesforce's documented rule for the batch size (the REST API's Query
    Options header, the SOAP API's QueryOptions): child records of relationship subqueries
    count toward it, and a batch may hold fewer records than asked. A batch takes parent rows
    while the parents plus the child records inlined in them stay within the batch size, and
    always at least one parent (a parent with more children than the batch size is served
    alone). A parent inlines at most ``CHILD_BATCH_SIZE`` child records per subquery (the rest
    follow that child result's own ``nextRecordsUrl``, see ``queries.py``), so that is what it
    counts. ``total`` stays the number of parent rows.
    """

    plan: Plan
    rows: np.ndarray  # every row of the answer, in order (empty for COUNT())
    total: int

    def page(self, start: int, size: int, version: str) -> tuple[list[dict[str, Any]], int]:
        """The records of the batch starting at row ``start`` of at most ``size`` records
        (children counted), and the row the next batch starts at."""
        if self.plan.aggregates:
            return ([self.plan.aggregate(self.rows)] if start == 0 else []), len(self.rows)
        window = self.rows[start : start + size]  # every parent costs one record at least
        if not len(window):
            return [], start
        selected = self.plan.select_children(window)
        cost = np.ones(len(window), dtype=np.int64)
        for selection in selected.values():
            cost += np.minimum(selection.counts(len(window)), CHILD_BATCH_SIZE)
        taken = max(1, int(np.searchsorted(np.cumsum(cost), size, side="right")))
        rows = window[:taken]
        chosen = {key: selection.of_first(taken) for key, selection in selected.items()}
        return self.plan.render(rows, version, chosen), start + taken

    def child_keys(self) -> list[str]:
        """The record keys holding relationship subqueries' results."""
        return [output.key for output in self.plan.outputs if output.children is not None]


def plan_query(
    org: SandboxOrg,
    text: str,
    *,
    include_deleted: bool,
    today: dt.date,
    access: UserAccess | None = None,
) -> Plan:
    """Parse and check one SOQL query without reading a row (a Bulk API job checks its query
    when it is created and runs it later); raises as :func:`execute` does."""
    query = parse(text)
    with org.lock:
        return build_plan(query, Context(org, text, today, include_deleted, org.tables, access))


def execute(
    org: SandboxOrg,
    text: str,
    *,
    include_deleted: bool,
    today: dt.date,
    access: UserAccess | None = None,
) -> QueryResult:
    """Run one SOQL query; raises QueryError or soql.SoqlError (both carry Salesforce codes).
    With ``access``, only what that user may read exists."""
    plan = plan_query(org, text, include_deleted=include_deleted, today=today, access=access)
    query = plan.query
    with org.lock:
        rows = plan.rows()
        if query.is_count:
            return QueryResult(plan, rows[:0], len(rows))
        if plan.aggregates:
            return QueryResult(plan, rows, 1)
        return QueryResult(plan, rows, len(rows))


__all__ = ["Output", "Plan", "QueryError", "QueryResult", "execute", "plan_query"]
