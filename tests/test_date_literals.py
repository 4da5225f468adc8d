"""Ranges of relative SOQL date literals: [start, end) in days."""

from __future__ import annotations

import datetime as dt

import pytest

from crm_kpi_worker.sandbox.salesforce.date_literals import (
    DATE_LITERALS,
    N_DATE_LITERALS,
    date_literal_range,
)
from crm_kpi_worker.sandbox.salesforce.soql import parse
from crm_kpi_worker.sandbox.salesforce.soql_ast import DateFunctionLit

D = dt.date
WED = D(2024, 5, 15)  # a Wednesday; the Sunday-started week is 2024-05-12 .. 2024-05-18


def lit(text: str) -> DateFunctionLit:
    name, _, n = text.partition(":")
    return DateFunctionLit(name, int(n) if n else None)


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        # days
        ("TODAY", (D(2024, 5, 15), D(2024, 5, 16))),
        ("YESTERDAY", (D(2024, 5, 14), D(2024, 5, 15))),
        ("TOMORROW", (D(2024, 5, 16), D(2024, 5, 17))),
        ("LAST_90_DAYS", (D(2024, 2, 15), D(2024, 5, 16))),  # 91 days, today included
        ("NEXT_90_DAYS", (D(2024, 5, 16), D(2024, 8, 14))),  # 90 days from tomorrow
        ("LAST_N_DAYS:1", (D(2024, 5, 14), D(2024, 5, 16))),  # yesterday and today
        ("LAST_N_DAYS:7", (D(2024, 5, 8), D(2024, 5, 16))),
        ("LAST_N_DAYS:0", (D(2024, 5, 15), D(2024, 5, 16))),
        ("NEXT_N_DAYS:1", (D(2024, 5, 16), D(2024, 5, 17))),  # == TOMORROW
        ("NEXT_N_DAYS:7", (D(2024, 5, 16), D(2024, 5, 23))),
        ("N_DAYS_AGO:3", (D(2024, 5, 12), D(2024, 5, 13))),
        # weeks (Sunday start)
        ("THIS_WEEK", (D(2024, 5, 12), D(2024, 5, 19))),
        ("LAST_WEEK", (D(2024, 5, 5), D(2024, 5, 12))),
        ("NEXT_WEEK", (D(2024, 5, 19), D(2024, 5, 26))),
        ("LAST_N_WEEKS:2", (D(2024, 4, 28), D(2024, 5, 12))),
        ("NEXT_N_WEEKS:2", (D(2024, 5, 19), D(2024, 6, 2))),
        ("N_WEEKS_AGO:2", (D(2024, 4, 28), D(2024, 5, 5))),
        # months
        ("THIS_MONTH", (D(2024, 5, 1), D(2024, 6, 1))),
        ("LAST_MONTH", (D(2024, 4, 1), D(2024, 5, 1))),
        ("NEXT_MONTH", (D(2024, 6, 1), D(2024, 7, 1))),
        ("LAST_N_MONTHS:3", (D(2024, 2, 1), D(2024, 5, 1))),
        ("NEXT_N_MONTHS:3", (D(2024, 6, 1), D(2024, 9, 1))),
        ("N_MONTHS_AGO:3", (D(2024, 2, 1), D(2024, 3, 1))),
        ("N_MONTHS_AGO:5", (D(2023, 12, 1), D(2024, 1, 1))),
        # calendar quarters
        ("THIS_QUARTER", (D(2024, 4, 1), D(2024, 7, 1))),
        ("LAST_QUARTER", (D(2024, 1, 1), D(2024, 4, 1))),
        ("NEXT_QUARTER", (D(2024, 7, 1), D(2024, 10, 1))),
        ("LAST_N_QUARTERS:2", (D(2023, 10, 1), D(2024, 4, 1))),
        ("NEXT_N_QUARTERS:2", (D(2024, 7, 1), D(2025, 1, 1))),
        ("N_QUARTERS_AGO:2", (D(2023, 10, 1), D(2024, 1, 1))),
        # calendar years
        ("THIS_YEAR", (D(2024, 1, 1), D(2025, 1, 1))),
        ("LAST_YEAR", (D(2023, 1, 1), D(2024, 1, 1))),
        ("NEXT_YEAR", (D(2025, 1, 1), D(2026, 1, 1))),
        ("LAST_N_YEARS:2", (D(2022, 1, 1), D(2024, 1, 1))),
        ("NEXT_N_YEARS:2", (D(2025, 1, 1), D(2027, 1, 1))),
        ("N_YEARS_AGO:2", (D(2022, 1, 1), D(2023, 1, 1))),
        # fiscal, default fiscal year = calendar year
        ("THIS_FISCAL_QUARTER", (D(2024, 4, 1), D(2024, 7, 1))),
        ("LAST_FISCAL_QUARTER", (D(2024, 1, 1), D(2024, 4, 1))),
        ("NEXT_FISCAL_QUARTER", (D(2024, 7, 1), D(2024, 10, 1))),
        ("LAST_N_FISCAL_QUARTERS:3", (D(2023, 7, 1), D(2024, 4, 1))),
        ("NEXT_N_FISCAL_QUARTERS:1", (D(2024, 7, 1), D(2024, 10, 1))),
        ("N_FISCAL_QUARTERS_AGO:1", (D(2024, 1, 1), D(2024, 4, 1))),
        ("THIS_FISCAL_YEAR", (D(2024, 1, 1), D(2025, 1, 1))),
        ("LAST_FISCAL_YEAR", (D(2023, 1, 1), D(2024, 1, 1))),
        ("NEXT_FISCAL_YEAR", (D(2025, 1, 1), D(2026, 1, 1))),
        ("LAST_N_FISCAL_YEARS:2", (D(2022, 1, 1), D(2024, 1, 1))),
        ("NEXT_N_FISCAL_YEARS:2", (D(2025, 1, 1), D(2027, 1, 1))),
        ("N_FISCAL_YEARS_AGO:3", (D(2021, 1, 1), D(2022, 1, 1))),
    ],
)
def test_ranges_on_a_wednesday_in_may(literal: str, expected: tuple[dt.date, dt.date]) -> None:
    assert date_literal_range(lit(literal), WED) == expected


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        # 2024-05-15 with a fiscal year starting in April: FY 2024-04-01 .. 2025-03-31,
        # fiscal Q1 = April..June.
        ("THIS_FISCAL_YEAR", (D(2024, 4, 1), D(2025, 4, 1))),
        ("LAST_FISCAL_YEAR", (D(2023, 4, 1), D(2024, 4, 1))),
        ("NEXT_FISCAL_YEAR", (D(2025, 4, 1), D(2026, 4, 1))),
        ("LAST_N_FISCAL_YEARS:2", (D(2022, 4, 1), D(2024, 4, 1))),
        ("NEXT_N_FISCAL_YEARS:2", (D(2025, 4, 1), D(2027, 4, 1))),
        ("N_FISCAL_YEARS_AGO:1", (D(2023, 4, 1), D(2024, 4, 1))),
        ("THIS_FISCAL_QUARTER", (D(2024, 4, 1), D(2024, 7, 1))),
        ("LAST_FISCAL_QUARTER", (D(2024, 1, 1), D(2024, 4, 1))),
        ("NEXT_FISCAL_QUARTER", (D(2024, 7, 1), D(2024, 10, 1))),
        # calendar literals ignore the fiscal year
        ("THIS_YEAR", (D(2024, 1, 1), D(2025, 1, 1))),
        ("THIS_QUARTER", (D(2024, 4, 1), D(2024, 7, 1))),
    ],
)
def test_fiscal_year_starting_in_april(literal: str, expected: tuple[dt.date, dt.date]) -> None:
    assert date_literal_range(lit(literal), WED, fiscal_year_start_month=4) == expected


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        # 2024-02-10, fiscal year from April: FY 2023-04-01 .. 2024-03-31, in its Q4 (Jan-Mar).
        ("THIS_FISCAL_YEAR", (D(2023, 4, 1), D(2024, 4, 1))),
        ("LAST_FISCAL_YEAR", (D(2022, 4, 1), D(2023, 4, 1))),
        ("THIS_FISCAL_QUARTER", (D(2024, 1, 1), D(2024, 4, 1))),
        ("LAST_FISCAL_QUARTER", (D(2023, 10, 1), D(2024, 1, 1))),
        ("NEXT_FISCAL_QUARTER", (D(2024, 4, 1), D(2024, 7, 1))),
        ("LAST_N_FISCAL_QUARTERS:2", (D(2023, 7, 1), D(2024, 1, 1))),
        ("NEXT_N_FISCAL_QUARTERS:3", (D(2024, 4, 1), D(2025, 1, 1))),
        ("N_FISCAL_QUARTERS_AGO:4", (D(2023, 1, 1), D(2023, 4, 1))),
    ],
)
def test_fiscal_april_before_the_fiscal_year_turns(
    literal: str, expected: tuple[dt.date, dt.date]
) -> None:
    assert date_literal_range(lit(literal), D(2024, 2, 10), fiscal_year_start_month=4) == expected


def test_fiscal_quarters_not_aligned_with_calendar_quarters() -> None:
    # Fiscal year from February: quarters Feb-Apr, May-Jul, Aug-Oct, Nov-Jan.
    assert date_literal_range(lit("THIS_FISCAL_QUARTER"), WED, fiscal_year_start_month=2) == (
        D(2024, 5, 1),
        D(2024, 8, 1),
    )
    # Fiscal year from November; 2024-01-20 is in the quarter Nov 2023 .. Jan 2024.
    day = D(2024, 1, 20)
    assert date_literal_range(lit("THIS_FISCAL_QUARTER"), day, fiscal_year_start_month=11) == (
        D(2023, 11, 1),
        D(2024, 2, 1),
    )
    assert date_literal_range(lit("THIS_FISCAL_YEAR"), day, fiscal_year_start_month=11) == (
        D(2023, 11, 1),
        D(2024, 11, 1),
    )


@pytest.mark.parametrize(
    ("today", "week_start", "expected"),
    [
        (D(2024, 5, 12), 6, (D(2024, 5, 12), D(2024, 5, 19))),  # Sunday, Sunday weeks
        (D(2024, 5, 18), 6, (D(2024, 5, 12), D(2024, 5, 19))),  # Saturday, Sunday weeks
        (D(2024, 5, 15), 0, (D(2024, 5, 13), D(2024, 5, 20))),  # Wednesday, Monday weeks
        (D(2024, 5, 12), 0, (D(2024, 5, 6), D(2024, 5, 13))),  # Sunday, Monday weeks
        (D(2024, 5, 13), 0, (D(2024, 5, 13), D(2024, 5, 20))),  # Monday, Monday weeks
    ],
)
def test_week_boundaries(
    today: dt.date, week_start: int, expected: tuple[dt.date, dt.date]
) -> None:
    assert date_literal_range(lit("THIS_WEEK"), today, week_start=week_start) == expected


def test_ranges_across_a_year_boundary() -> None:
    day = D(2024, 1, 3)  # a Wednesday; its Sunday week starts 2023-12-31
    assert date_literal_range(lit("THIS_WEEK"), day) == (D(2023, 12, 31), D(2024, 1, 7))
    assert date_literal_range(lit("LAST_WEEK"), day) == (D(2023, 12, 24), D(2023, 12, 31))
    assert date_literal_range(lit("LAST_MONTH"), day) == (D(2023, 12, 1), D(2024, 1, 1))
    assert date_literal_range(lit("LAST_QUARTER"), day) == (D(2023, 10, 1), D(2024, 1, 1))
    assert date_literal_range(lit("NEXT_N_MONTHS:12"), day) == (D(2024, 2, 1), D(2025, 2, 1))
    assert date_literal_range(lit("YESTERDAY"), day) == (D(2024, 1, 2), D(2024, 1, 3))
    assert date_literal_range(lit("LAST_N_DAYS:3"), day) == (D(2023, 12, 31), D(2024, 1, 4))


def test_accepts_a_datetime_as_today() -> None:
    now = dt.datetime(2024, 5, 15, 23, 59, tzinfo=dt.UTC)
    assert date_literal_range(lit("TODAY"), now) == (D(2024, 5, 15), D(2024, 5, 16))


@pytest.mark.parametrize("name", sorted(DATE_LITERALS))
def test_every_plain_literal_has_a_nonempty_range(name: str) -> None:
    start, end = date_literal_range(DateFunctionLit(name), WED, fiscal_year_start_month=7)
    assert start < end


@pytest.mark.parametrize("name", sorted(N_DATE_LITERALS))
def test_every_n_literal_has_a_nonempty_range(name: str) -> None:
    start, end = date_literal_range(DateFunctionLit(name, 2), WED, fiscal_year_start_month=7)
    assert start < end


def test_literals_from_the_parser() -> None:
    query = parse("SELECT Id FROM Opportunity WHERE CloseDate = last_n_days:7")
    assert query.where is not None
    value = query.where.value  # type: ignore[union-attr]
    assert value == DateFunctionLit("LAST_N_DAYS", 7)
    assert date_literal_range(value, WED) == (D(2024, 5, 8), D(2024, 5, 16))


@pytest.mark.parametrize(
    ("literal", "kwargs", "message"),
    [
        (DateFunctionLit("LAST_FORTNIGHT"), {}, "unknown date literal: LAST_FORTNIGHT"),
        (DateFunctionLit("LAST_N_DAYS"), {}, "LAST_N_DAYS needs a number"),
        (DateFunctionLit("TODAY", 3), {}, "TODAY does not take a number"),
        (DateFunctionLit("LAST_N_DAYS", -1), {}, "n must not be negative"),
        (DateFunctionLit("TODAY"), {"fiscal_year_start_month": 13}, "fiscal_year_start_month"),
        (DateFunctionLit("TODAY"), {"week_start": 7}, "week_start"),
    ],
)
def test_errors(literal: DateFunctionLit, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        date_literal_range(literal, WED, **kwargs)
