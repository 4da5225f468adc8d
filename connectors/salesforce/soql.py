"""SOQL built safely: names checked against a strict API-name pattern, values escaped.

Nothing from the config or the caller is pasted into a query as written:

- object, field and relationship names must match :data:`API_NAME` (letters, digits, single
  underscores, ``__c``/``__r``-style suffixes and a namespace prefix; dotted for relationship
  paths, at most 5 levels as SOQL allows), else :class:`UnsafeSoql` is raised;
- text values go through :func:`quote` (the sandbox's SOQL parser is tested against this
  escaper), dates and datetimes are formatted as SOQL literals from real
  ``date``/``datetime`` values, numbers from real numbers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "API_NAME",
    "Select",
    "UnsafeSoql",
    "api_name",
    "date_literal",
    "datetime_literal",
    "field_path",
    "in_list",
    "quote",
    "string_literal",
    "subquery",
]

_QUOTE_TABLE = str.maketrans(
    {
        "\\": "\\\\",
        "'": "\\'",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\b": "\\b",
        "\f": "\\f",
    }
)


def quote(value: str) -> str:
    """``value`` as a SOQL string literal, quotes included: ``quote("O'Brien") == "'O\\\\'Brien'"``.

    Every backslash and quote is escaped, so the text cannot leave the literal (``x' OR Name !=
    '`` stays one string). ``_`` and ``%`` are left alone: they are plain characters with ``=``;
    to match them literally in a LIKE pattern, escape them yourself as ``\\_`` / ``\\%``.
    """
    return "'" + value.translate(_QUOTE_TABLE) + "'"


_SEGMENT = r"[A-Za-z](?:[A-Za-z0-9]|_(?!_))*(?:__[A-Za-z0-9](?:[A-Za-z0-9]|_(?!_))*){0,2}"
#: One API name: ``CloseDate``, ``Churn_Date__c``, ``ns__Churn_Date__c``, ``Account__r``.
API_NAME = re.compile(rf"^{_SEGMENT}$")
_PATH = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT}){{0,4}}$")
_MAX_NAME = 120


class UnsafeSoql(ValueError):
    """A name that is not a plain Salesforce API name was about to enter a query."""


def _check(value: object, pattern: re.Pattern[str], what: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) > _MAX_NAME * 5
        or not pattern.match(value)
        or value.endswith("_")
        or any(len(part) > _MAX_NAME or part.endswith("_") for part in value.split("."))
    ):
        raise UnsafeSoql(
            f"{what} {value!r} is not a Salesforce API name (letters, digits and single '_',"
            " e.g. 'CloseDate' or 'Churn_Date__c'); refusing to put it in a query"
        )
    return value


def api_name(value: object, what: str = "field") -> str:
    """``value`` if it is one API name (no dots), else :class:`UnsafeSoql`."""
    return _check(value, API_NAME, what)


def field_path(value: object, what: str = "field") -> str:
    """``value`` if it is an API name or a relationship path (``Account.Churn_Date__c``)."""
    return _check(value, _PATH, what)


def string_literal(value: str) -> str:
    if not isinstance(value, str):
        raise UnsafeSoql(f"expected text for a SOQL string literal, got {type(value).__name__}")
    return quote(value)


def in_list(values: Iterable[str]) -> str:
    items = [string_literal(v) for v in values]
    if not items:
        raise UnsafeSoql("an IN list needs at least one value")
    return "(" + ", ".join(items) + ")"


def datetime_literal(value: dt.datetime) -> str:
    """A SOQL datetime literal in UTC, whole seconds (``2026-09-30T12:00:00Z``)."""
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise UnsafeSoql("a SOQL datetime literal needs a timezone-aware datetime")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def date_literal(value: dt.date) -> str:
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise UnsafeSoql("a SOQL date literal needs a date")
    return value.isoformat()


@dataclass(frozen=True)
class Select:
    """``SELECT fields, (subqueries) FROM object [WHERE a AND b] [ORDER BY ...]``.

    ``fields`` are API names or paths, or pre-built items such as ``convertCurrency(Amount)
    ConvertedAmount`` made by :meth:`converted`; ``where`` holds conditions already built from
    checked names and escaped literals (see the helpers above).
    """

    object: str
    fields: Sequence[str]
    subqueries: Sequence[str] = ()
    where: Sequence[str] = ()
    order_by: Sequence[str] = ()

    def __post_init__(self) -> None:
        api_name(self.object, "object")
        for name in self.fields:
            if not _is_converted(name):
                field_path(name)
        for name in self.order_by:
            field_path(name.removesuffix(" DESC").removesuffix(" ASC"))

    @staticmethod
    def converted(name: str, alias: str) -> str:
        """``convertCurrency(name) alias``: the value in the user's currency."""
        return f"convertCurrency({api_name(name)}) {api_name(alias, 'alias')}"

    def soql(self) -> str:
        items = list(dict.fromkeys(self.fields)) + [f"({s})" for s in self.subqueries]
        # Names were checked in __post_init__; conditions are built with the helpers above.
        text = f"SELECT {', '.join(items)} FROM {self.object}"  # noqa: S608
        if self.where:
            text += " WHERE " + " AND ".join(
                f"({w})" if len(self.where) > 1 else w for w in self.where
            )
        if self.order_by:
            text += " ORDER BY " + ", ".join(self.order_by)
        return text


_CONVERTED = re.compile(rf"^convertCurrency\({_SEGMENT}\) {_SEGMENT}$")


def _is_converted(item: str) -> bool:
    return bool(_CONVERTED.match(item))


def subquery(
    relationship: str,
    fields: Sequence[str],
    *,
    where: Sequence[str] = (),
    order_by: Sequence[str] = (),
) -> str:
    """A child relationship subquery (without its parentheses)."""
    return Select(relationship, fields, where=where, order_by=order_by).soql()
