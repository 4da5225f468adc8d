"""Fiscal periods: months, fiscal quarters and fiscal years, their keys and bounds.

A fiscal year starts on the first day of ``year_start_month`` (1 = January). Quarters are the
fiscal year's four runs of three months; months are calendar months. Period keys:

- month: ``2026-07`` (the calendar year and month);
- quarter: ``2026-Q3`` (fiscal year 2026, third fiscal quarter);
- year: ``FY2026``.

A fiscal year is named by the calendar year it starts in (``year_named_by="start"``, the
default) or ends in (``"end"``). With a January start both namings agree. Example, April
start: fiscal year April 2026 - March 2027 is ``FY2026`` named by start, ``FY2027`` named by end,
and its first quarter (April - June 2026) is ``2026-Q1`` or ``2027-Q1``.

Every bound is a calendar date (the fiscal timezone is applied before dates reach this
package); ``end`` is inclusive (the last day of the period).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "PERIOD_KINDS",
    "FiscalCalendar",
    "Period",
    "PeriodKind",
    "add_months",
    "elapsed_weeks",
    "snapshot_date",
]

PeriodKind = Literal["month", "quarter", "year"]
PERIOD_KINDS: tuple[PeriodKind, ...] = ("month", "quarter", "year")
_MONTHS_IN: dict[str, int] = {"month": 1, "quarter": 3, "year": 12}
_KEY = re.compile(
    r"^(?:FY(?P<fy>\d{4})|(?P<year>\d{4})(?:-Q(?P<quarter>[1-4])|-(?P<month>0[1-9]|1[0-2]))?)$"
)


def add_months(day: dt.date, months: int) -> dt.date:
    """The first day of the month ``months`` after ``day``'s month."""
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True, order=True)
class Period:
    """One month, fiscal quarter or fiscal year. ``end`` is the last day (inclusive)."""

    start: dt.date
    end: dt.date
    kind: PeriodKind
    key: str

    @property
    def days(self) -> int:
        """Number of days, both ends included."""
        return (self.end - self.start).days + 1

    @property
    def months(self) -> int:
        """Number of calendar months (1, 3 or 12)."""
        return _MONTHS_IN[self.kind]

    def contains(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


@dataclass(frozen=True)
class FiscalCalendar:
    """The fiscal calendar: where the year starts and how fiscal years are named."""

    year_start_month: int = 1
    year_named_by: Literal["start", "end"] = "start"

    def __post_init__(self) -> None:
        if not 1 <= self.year_start_month <= 12:
            raise ValueError(f"year_start_month must be 1..12, not {self.year_start_month}")
        if self.year_named_by not in ("start", "end"):
            raise ValueError(f"year_named_by must be 'start' or 'end', not {self.year_named_by!r}")

    # Fiscal years --------------------------------------------------------------------------

    def fiscal_year_start(self, fiscal_year: int) -> dt.date:
        """First day of the fiscal year named ``fiscal_year``."""
        year = fiscal_year
        if self.year_named_by == "end" and self.year_start_month != 1:
            year -= 1
        return dt.date(year, self.year_start_month, 1)

    def fiscal_year_name(self, start_year: int) -> int:
        """Name of the fiscal year that starts in calendar year ``start_year``."""
        if self.year_named_by == "end" and self.year_start_month != 1:
            return start_year + 1
        return start_year

    def _year_start_of(self, day: dt.date) -> dt.date:
        year = day.year if day.month >= self.year_start_month else day.year - 1
        return dt.date(year, self.year_start_month, 1)

    # Periods -------------------------------------------------------------------------------

    def _from_start(self, kind: PeriodKind, start: dt.date) -> Period:
        """The period of ``kind`` that starts on ``start`` (a first day of its kind)."""
        end = add_months(start, _MONTHS_IN[kind]) - dt.timedelta(days=1)
        if kind == "month":
            key = f"{start.year:04d}-{start.month:02d}"
        else:
            year_start = self._year_start_of(start)
            fiscal_year = self.fiscal_year_name(year_start.year)
            if kind == "year":
                key = f"FY{fiscal_year:04d}"
            else:
                offset = (start.year - year_start.year) * 12 + start.month - year_start.month
                key = f"{fiscal_year:04d}-Q{offset // 3 + 1}"
        return Period(start=start, end=end, kind=kind, key=key)

    def period_of(self, kind: PeriodKind, day: dt.date) -> Period:
        """The period of ``kind`` containing ``day``."""
        if kind == "month":
            return self._from_start(kind, day.replace(day=1))
        year_start = self._year_start_of(day)
        if kind == "year":
            return self._from_start(kind, year_start)
        if kind == "quarter":
            offset = (day.year - year_start.year) * 12 + day.month - year_start.month
            return self._from_start(kind, add_months(year_start, offset - offset % 3))
        raise ValueError(f"unknown period kind {kind!r}; expected one of {PERIOD_KINDS}")

    def shift(self, period: Period, count: int) -> Period:
        """The period ``count`` periods of the same kind after (negative: before) ``period``."""
        return self._from_start(period.kind, add_months(period.start, count * period.months))

    def periods_containing(
        self, day: dt.date, kinds: tuple[PeriodKind, ...] = PERIOD_KINDS
    ) -> list[Period]:
        """One period per kind, each containing ``day``."""
        return [self.period_of(kind, day) for kind in kinds]

    def current_and_previous(
        self, as_of: dt.date, kinds: tuple[PeriodKind, ...] = PERIOD_KINDS
    ) -> list[Period]:
        """For each kind, the period containing ``as_of`` and the one before it."""
        out = []
        for kind in kinds:
            current = self.period_of(kind, as_of)
            out += [current, self.shift(current, -1)]
        return out

    def period(self, key: str) -> Period:
        """The period named ``key``: ``2026-07``, ``2026-Q3``, ``FY2026`` (or ``2026``, the
        config's spelling of a fiscal year)."""
        match = _KEY.match(key.strip().upper())
        if match is None:
            raise ValueError(f"not a period key: {key!r}; expected e.g. 2026-07, 2026-Q3 or FY2026")
        if match["month"]:
            return self._from_start("month", dt.date(int(match["year"]), int(match["month"]), 1))
        year_start = self.fiscal_year_start(int(match["fy"] or match["year"]))
        if match["quarter"]:
            start = add_months(year_start, 3 * (int(match["quarter"]) - 1))
            return self._from_start("quarter", start)
        return self._from_start("year", year_start)


def elapsed_weeks(period: Period, as_of: dt.date) -> float:
    """Weeks of ``period`` elapsed at ``as_of`` (demos_per_week's denominator).

    Days from the period's start to ``as_of`` (both included) / 7 while the period runs, the
    whole period once it has ended; never less than 1 (a period starting today, or a future
    one, counts one week).
    """
    last = min(period.end, as_of)
    days = (last - period.start).days + 1
    return max(days / 7.0, 1.0)


def snapshot_date(period: Period, snapshot_day: int) -> dt.date:
    """The day of ``period`` on which its commit forecast is stored: day ``snapshot_day``
    (1-based) counted from the period's first day (day 15 of a quarter is the 15th of its first
    month)."""
    if snapshot_day < 1:
        raise ValueError("snapshot_day is 1-based")
    return min(period.start + dt.timedelta(days=snapshot_day - 1), period.end)
