"""Fiscal periods: keys, bounds, shifts, fiscal years starting in April, elapsed weeks."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_kpi_worker.kpis.calendar import (
    FiscalCalendar,
    Period,
    add_months,
    elapsed_weeks,
    snapshot_date,
)

D = dt.date


def test_calendar_year_periods_and_keys() -> None:
    cal = FiscalCalendar()
    assert cal.period_of("month", D(2026, 8, 20)) == Period(
        D(2026, 8, 1), D(2026, 8, 31), "month", "2026-08"
    )
    assert cal.period_of("quarter", D(2026, 8, 20)) == Period(
        D(2026, 7, 1), D(2026, 9, 30), "quarter", "2026-Q3"
    )
    assert cal.period_of("year", D(2026, 8, 20)) == Period(
        D(2026, 1, 1), D(2026, 12, 31), "year", "FY2026"
    )
    # Named by end: identical with a January start.
    end = FiscalCalendar(year_named_by="end")
    assert end.period_of("year", D(2026, 8, 20)).key == "FY2026"
    assert end.period_of("quarter", D(2026, 8, 20)).key == "2026-Q3"


def test_current_and_previous_cross_the_year() -> None:
    keys = [p.key for p in FiscalCalendar().current_and_previous(D(2026, 1, 5))]
    assert keys == ["2026-01", "2025-12", "2026-Q1", "2025-Q4", "FY2026", "FY2025"]


def test_periods_containing_a_date() -> None:
    keys = [p.key for p in FiscalCalendar(10).periods_containing(D(2026, 1, 31))]
    assert keys == ["2026-01", "2025-Q2", "FY2025"]
    assert [p.kind for p in FiscalCalendar().periods_containing(D(2026, 1, 31), ("year",))] == [
        "year"
    ]


def test_fiscal_year_starting_in_april() -> None:
    cal = FiscalCalendar(year_start_month=4)
    may = D(2026, 5, 10)
    quarter = cal.period_of("quarter", may)
    assert (quarter.key, quarter.start, quarter.end) == ("2026-Q1", D(2026, 4, 1), D(2026, 6, 30))
    year = cal.period_of("year", may)
    assert (year.key, year.start, year.end) == ("FY2026", D(2026, 4, 1), D(2027, 3, 31))
    previous = cal.shift(quarter, -1)
    assert (previous.key, previous.start, previous.end) == (
        "2025-Q4",
        D(2026, 1, 1),
        D(2026, 3, 31),
    )
    assert cal.period_of("year", D(2026, 3, 31)).key == "FY2025"
    assert cal.period_of("quarter", D(2027, 2, 1)).key == "2026-Q4"
    # Named by the calendar year it ends in.
    end = FiscalCalendar(year_start_month=4, year_named_by="end")
    assert end.period_of("year", may).key == "FY2027"
    assert end.period_of("quarter", may).key == "2027-Q1"
    assert end.period_of("quarter", D(2026, 3, 1)).key == "2026-Q4"
    # Months keep calendar keys.
    assert end.period_of("month", may).key == "2026-05"


def test_period_from_key_round_trips_and_accepts_the_config_year_spelling() -> None:
    for cal in (FiscalCalendar(), FiscalCalendar(4), FiscalCalendar(10, "end")):
        for kind in ("month", "quarter", "year"):
            period = cal.period_of(kind, D(2026, 11, 3))
            assert cal.period(period.key) == period
    assert FiscalCalendar(4).period("2026") == FiscalCalendar(4).period("FY2026")
    assert FiscalCalendar(4).period("fy2026").start == D(2026, 4, 1)
    with pytest.raises(ValueError, match="not a period key"):
        FiscalCalendar().period("2026-Q5")


def test_invalid_calendar() -> None:
    with pytest.raises(ValueError, match="year_start_month"):
        FiscalCalendar(13)
    with pytest.raises(ValueError, match="year_named_by"):
        FiscalCalendar(1, "middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period kind"):
        FiscalCalendar().period_of("week", D(2026, 1, 1))  # type: ignore[arg-type]


def test_elapsed_weeks() -> None:
    august = FiscalCalendar().period_of("month", D(2026, 8, 1))
    assert elapsed_weeks(august, D(2026, 8, 20)) == pytest.approx(20 / 7)
    assert elapsed_weeks(august, D(2026, 8, 1)) == 1.0  # at least one week
    assert elapsed_weeks(august, D(2026, 7, 1)) == 1.0  # not started
    assert elapsed_weeks(august, D(2026, 12, 1)) == pytest.approx(31 / 7)  # whole period
    q3 = FiscalCalendar().period_of("quarter", D(2026, 8, 1))
    assert elapsed_weeks(q3, D(2026, 9, 30)) == pytest.approx(92 / 7)


def test_snapshot_date() -> None:
    cal = FiscalCalendar(year_start_month=4)
    assert snapshot_date(cal.period("2026-Q2"), 15) == D(2026, 7, 15)
    assert snapshot_date(cal.period("2026-02"), 15) == D(2026, 2, 15)
    assert snapshot_date(cal.period("FY2026"), 1) == D(2026, 4, 1)


@given(
    day=st.dates(min_value=D(1990, 1, 1), max_value=D(2100, 12, 31)),
    start_month=st.integers(1, 12),
    named_by=st.sampled_from(["start", "end"]),
    kind=st.sampled_from(["month", "quarter", "year"]),
    shift=st.integers(-30, 30),
)
def test_periods_tile_the_calendar(
    day: dt.date, start_month: int, named_by: str, kind: str, shift: int
) -> None:
    cal = FiscalCalendar(start_month, named_by)  # type: ignore[arg-type]
    period = cal.period_of(kind, day)  # type: ignore[arg-type]
    assert period.contains(day)
    assert period.start.day == 1
    assert add_months(period.start, period.months) == period.end + dt.timedelta(days=1)
    # The next period starts the day after this one ends; keys are unique and parse back.
    following = cal.shift(period, 1)
    assert following.start == period.end + dt.timedelta(days=1)
    assert following.key != period.key
    moved = cal.shift(period, shift)
    assert cal.period(moved.key) == moved
    assert cal.shift(moved, -shift) == period
    if kind != "month":
        assert (period.start.month - start_month) % 3 == 0
