"""Relative SOQL date literals (``TODAY``, ``LAST_N_DAYS:30``, ``THIS_FISCAL_QUARTER``...).

``date_literal_range(lit, today)`` turns a :class:`DateFunctionLit` into a half-open range of
days ``[start, end)``: ``start`` is the first day in the range, ``end`` the first day *after* it.
The ranges follow Salesforce's "Date Formats and Date Literals in WHERE" documentation:

* ``LAST_N_DAYS:n`` and ``LAST_90_DAYS`` include today: ``LAST_N_DAYS:1`` is yesterday and
  today (n + 1 days in all). ``NEXT_N_DAYS:n`` and ``NEXT_90_DAYS`` start tomorrow and do not
  include today (``NEXT_N_DAYS:1`` == ``TOMORROW``). ``N_DAYS_AGO:n`` is the single day n days
  before today.
* ``LAST_N_WEEKS/MONTHS/QUARTERS/YEARS:n`` are the n whole periods before the current one;
  ``NEXT_N_...:n`` the n whole periods after it; ``N_..._AGO:n`` the one whole period that
  started n periods before the current one. The current period is never part of them.
* Weeks start on ``week_start`` (a ``date.weekday()`` number: 0 = Monday ... 6 = Sunday; the
  default is Sunday, the first day of the week in Salesforce's default en_US locale).
* Quarters and years are calendar ones; the ``..._FISCAL_...`` literals use a standard fiscal
  year that starts on day 1 of ``fiscal_year_start_month`` (April -> 4: Q1 is Apr-Jun).

How the engine compares a field value ``v`` (a date; a dateTime is first converted to its day
in the user's time zone, UTC in the sandbox) with a literal whose range is ``[start, end)``:

==================  ======================
``v = LIT``         ``start <= v < end``
``v != LIT``        ``not (start <= v < end)``
``v < LIT``         ``v < start``
``v <= LIT``        ``v < end``
``v > LIT``         ``v >= end``
``v >= LIT``        ``v >= start``
==================  ======================

``IN (LIT, ...)`` / ``NOT IN`` behave like ``=`` / ``!=`` against each literal.
"""

from __future__ import annotations

import datetime as dt

from crm_kpi_worker.sandbox.dataset import add_months
from crm_kpi_worker.sandbox.salesforce.soql_ast import DateFunctionLit

__all__ = [
    "DATE_LITERALS",
    "N_DATE_LITERALS",
    "date_literal_range",
]

#: Literals written without a number (``THIS_QUARTER``).
DATE_LITERALS: frozenset[str] = frozenset(
    {
        "YESTERDAY",
        "TODAY",
        "TOMORROW",
        "LAST_WEEK",
        "THIS_WEEK",
        "NEXT_WEEK",
        "LAST_MONTH",
        "THIS_MONTH",
        "NEXT_MONTH",
        "LAST_90_DAYS",
        "NEXT_90_DAYS",
        "THIS_QUARTER",
        "LAST_QUARTER",
        "NEXT_QUARTER",
        "THIS_YEAR",
        "LAST_YEAR",
        "NEXT_YEAR",
        "THIS_FISCAL_QUARTER",
        "LAST_FISCAL_QUARTER",
        "NEXT_FISCAL_QUARTER",
        "THIS_FISCAL_YEAR",
        "LAST_FISCAL_YEAR",
        "NEXT_FISCAL_YEAR",
    }
)

#: Literals that take ``:n`` (``LAST_N_DAYS:30``).
N_DATE_LITERALS: frozenset[str] = frozenset(
    {
        "LAST_N_DAYS",
        "NEXT_N_DAYS",
        "N_DAYS_AGO",
        "LAST_N_WEEKS",
        "NEXT_N_WEEKS",
        "N_WEEKS_AGO",
        "LAST_N_MONTHS",
        "NEXT_N_MONTHS",
        "N_MONTHS_AGO",
        "LAST_N_QUARTERS",
        "NEXT_N_QUARTERS",
        "N_QUARTERS_AGO",
        "LAST_N_YEARS",
        "NEXT_N_YEARS",
        "N_YEARS_AGO",
        "LAST_N_FISCAL_QUARTERS",
        "NEXT_N_FISCAL_QUARTERS",
        "N_FISCAL_QUARTERS_AGO",
        "LAST_N_FISCAL_YEARS",
        "NEXT_N_FISCAL_YEARS",
        "N_FISCAL_YEARS_AGO",
    }
)

_ONE_DAY = dt.timedelta(days=1)


def _periods(current_start: dt.date, months: int, shape: str, n: int) -> tuple[dt.date, dt.date]:
    """Ranges built from whole periods of ``months`` months, the current one starting at
    ``current_start``. ``shape`` is THIS, LAST, NEXT, LAST_N, NEXT_N or N_AGO."""
    if shape == "THIS":
        return current_start, add_months(current_start, months)
    if shape == "LAST":
        return add_months(current_start, -months), current_start
    if shape == "NEXT":
        return add_months(current_start, months), add_months(current_start, 2 * months)
    if shape == "LAST_N":
        return add_months(current_start, -months * n), current_start
    if shape == "NEXT_N":
        return add_months(current_start, months), add_months(current_start, months * (n + 1))
    # N_AGO
    start = add_months(current_start, -months * n)
    return start, add_months(start, months)


# name -> (unit, shape); unit: WEEK, MONTH, QUARTER, YEAR, FISCAL_QUARTER, FISCAL_YEAR.
_PERIOD_LITERALS: dict[str, tuple[str, str]] = {}
for _unit, _plural in (
    ("WEEK", "WEEKS"),
    ("MONTH", "MONTHS"),
    ("QUARTER", "QUARTERS"),
    ("YEAR", "YEARS"),
    ("FISCAL_QUARTER", "FISCAL_QUARTERS"),
    ("FISCAL_YEAR", "FISCAL_YEARS"),
):
    for _shape in ("THIS", "LAST", "NEXT"):
        _PERIOD_LITERALS[f"{_shape}_{_unit}"] = (_unit, _shape)
    _PERIOD_LITERALS[f"LAST_N_{_plural}"] = (_unit, "LAST_N")
    _PERIOD_LITERALS[f"NEXT_N_{_plural}"] = (_unit, "NEXT_N")
    _PERIOD_LITERALS[f"N_{_plural}_AGO"] = (_unit, "N_AGO")
del _unit, _plural, _shape


def date_literal_range(
    lit: DateFunctionLit,
    today: dt.date,
    fiscal_year_start_month: int = 1,
    week_start: int = 6,
) -> tuple[dt.date, dt.date]:
    """The days covered by ``lit`` on ``today``: ``(first day, first day after the range)``.

    ``fiscal_year_start_month`` is 1..12 (the org's standard fiscal year start); ``week_start``
    is a ``date.weekday()`` number, 6 (Sunday) by default. Raises ``ValueError`` for an unknown
    literal, a missing or superfluous ``n``, or a negative ``n``.
    """
    if isinstance(today, dt.datetime):
        today = today.date()
    if not 1 <= fiscal_year_start_month <= 12:
        raise ValueError(f"fiscal_year_start_month must be 1..12, not {fiscal_year_start_month}")
    if not 0 <= week_start <= 6:
        raise ValueError(f"week_start must be 0 (Monday)..6 (Sunday), not {week_start}")
    name, n = _checked_literal(lit)
    days = _day_range(name, n, today)
    if days is not None:
        return days
    unit, shape = _PERIOD_LITERALS[name]
    if unit == "WEEK":
        return _week_range(shape, n, today, week_start)
    return _month_based_range(unit, shape, n, today, fiscal_year_start_month)


def _checked_literal(lit: DateFunctionLit) -> tuple[str, int]:
    """The literal's upper-cased name and its ``n`` (0 for literals without one)."""
    name = lit.name.upper()
    n = lit.n
    if name in N_DATE_LITERALS:
        if n is None:
            raise ValueError(f"{name} needs a number: {name}:n")
        if n < 0:
            raise ValueError(f"{name}:{n}: n must not be negative")
        return name, n
    if name in DATE_LITERALS:
        if n is not None:
            raise ValueError(f"{name} does not take a number")
        return name, 0
    raise ValueError(f"unknown date literal: {lit.name}")


def _day_range(name: str, n: int, today: dt.date) -> tuple[dt.date, dt.date] | None:
    """The range of a literal counted in days; None for the period-based literals."""
    if name == "TODAY":
        return today, today + _ONE_DAY
    if name == "YESTERDAY":
        return today - _ONE_DAY, today
    if name == "TOMORROW":
        return today + _ONE_DAY, today + 2 * _ONE_DAY
    if name == "LAST_90_DAYS":
        return today - dt.timedelta(days=90), today + _ONE_DAY
    if name == "NEXT_90_DAYS":
        return today + _ONE_DAY, today + dt.timedelta(days=91)
    if name == "LAST_N_DAYS":
        return today - dt.timedelta(days=n), today + _ONE_DAY
    if name == "NEXT_N_DAYS":
        return today + _ONE_DAY, today + dt.timedelta(days=n + 1)
    if name == "N_DAYS_AGO":
        day = today - dt.timedelta(days=n)
        return day, day + _ONE_DAY
    return None


def _week_range(shape: str, n: int, today: dt.date, week_start: int) -> tuple[dt.date, dt.date]:
    week = today - dt.timedelta(days=(today.weekday() - week_start) % 7)
    length = dt.timedelta(days=7)
    if shape == "THIS":
        return week, week + length
    if shape == "LAST":
        return week - length, week
    if shape == "NEXT":
        return week + length, week + 2 * length
    if shape == "LAST_N":
        return week - n * length, week
    if shape == "NEXT_N":
        return week + length, week + (n + 1) * length
    start = week - n * length  # N_AGO
    return start, start + length


def _month_based_range(
    unit: str, shape: str, n: int, today: dt.date, fiscal_year_start_month: int
) -> tuple[dt.date, dt.date]:
    """Months, quarters, years (calendar or fiscal)."""
    month_start = dt.date(today.year, today.month, 1)
    if unit == "MONTH":
        return _periods(month_start, 1, shape, n)
    if unit == "QUARTER":
        return _periods(add_months(month_start, -((today.month - 1) % 3)), 3, shape, n)
    if unit == "YEAR":
        return _periods(dt.date(today.year, 1, 1), 12, shape, n)
    months_into_fiscal_year = (today.month - fiscal_year_start_month) % 12
    fiscal_year_start = add_months(month_start, -months_into_fiscal_year)
    if unit == "FISCAL_QUARTER":
        quarter_start = add_months(month_start, -(months_into_fiscal_year % 3))
        return _periods(quarter_start, 3, shape, n)
    return _periods(fiscal_year_start, 12, shape, n)  # FISCAL_YEAR
