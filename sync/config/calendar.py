"""The fiscal calendar: when the fiscal year starts, its timezone, the periods computed, and
period labels (``2026``, ``2026-Q3``, ``2026-07``)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from crm_kpi_worker.kpis.calendar import add_months
from crm_kpi_worker.sync.config.base import ConfigModel, TimezoneName, rule
from crm_kpi_worker.sync.config.targets import PeriodKind

__all__ = ["PERIOD_LABEL", "FiscalCalendar"]

#: A period label: a fiscal year (2026), a fiscal quarter (2026-Q3) or a calendar month (2026-07).
PERIOD_LABEL = re.compile(r"^(?P<year>\d{4})(?:-Q(?P<quarter>[1-4])|-(?P<month>0[1-9]|1[0-2]))?$")

_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


_ALL_PERIODS: tuple[PeriodKind, ...] = ("month", "quarter", "year")


class FiscalCalendar(ConfigModel):
    year_start_month: Annotated[int, Field(ge=1, le=12)] = 1
    """First month of the fiscal year (1 = January)."""
    year_named_by: Literal["start", "end"] = "start"
    """Whether fiscal year N is the one starting or ending in calendar year N."""
    timezone: TimezoneName = "UTC"
    """IANA timezone in which dates are compared, e.g. Europe/Paris."""
    periods: list[PeriodKind] = Field(default_factory=lambda: [*_ALL_PERIODS], min_length=1)
    snapshot_day: Annotated[int, Field(ge=1, le=28)] = 15
    """Day of each period on which the commit forecast is stored (forecast_accuracy)."""
    trailing_window_days: Annotated[int, Field(ge=7, le=3660)] = 180
    """Window ending at as_of for pipeline velocity's rates."""

    @field_validator("periods")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise rule("each period kind may be listed once")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def fiscal_year_start(self, fiscal_year: int) -> dt.date:
        year = fiscal_year
        if self.year_named_by == "end" and self.year_start_month != 1:
            year -= 1
        return dt.date(year, self.year_start_month, 1)

    def period_bounds(self, label: str) -> tuple[dt.date, dt.date]:
        """First and last day (inclusive) of ``2026`` (fiscal year), ``2026-Q3`` (fiscal
        quarter) or ``2026-07`` (calendar month)."""
        match = PERIOD_LABEL.match(label)
        if match is None:
            raise ValueError(f"not a period label: {label!r}")
        year = int(match["year"])
        if match["month"]:
            start = dt.date(year, int(match["month"]), 1)
            months = 1
        elif match["quarter"]:
            start = add_months(self.fiscal_year_start(year), 3 * (int(match["quarter"]) - 1))
            months = 3
        else:
            start = self.fiscal_year_start(year)
            months = 12
        return start, add_months(start, months) - dt.timedelta(days=1)

    def describe(self) -> str:
        return (
            f"fiscal year starts in {_MONTH_NAMES[self.year_start_month - 1]}, timezone"
            f" {self.timezone}, periods {', '.join(self.periods)}"
        )
