"""Money and pay: the reporting currency and its conversion, quotas, ramp, variable pay."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import InitErrorDetails

from crm_kpi_worker.sync.config.base import (
    ConfigModel,
    ConfigPath,
    CurrencyCode,
    Email,
    Money,
    PositiveDecimal,
    error_at,
    raise_all,
    rule,
    text_from_scalar,
)
from crm_kpi_worker.sync.config.calendar import PERIOD_LABEL, FiscalCalendar

__all__ = [
    "CurrencySettings",
    "PayoutCurve",
    "QuotaEntry",
    "QuotaSettings",
    "RampSettings",
    "VariablePay",
]


class CurrencySettings(ConfigModel):
    reporting: CurrencyCode
    """Currency of every KPI, quota and target, e.g. EUR."""
    conversion: Literal["crm", "static"] = "crm"
    """'crm': the CRM's own rates; 'static': the rates below."""
    rates: dict[CurrencyCode, PositiveDecimal] = Field(default_factory=dict)
    """Units of each currency per 1 unit of the reporting currency (static conversion)."""

    @model_validator(mode="after")
    def _check_rates(self) -> CurrencySettings:
        problems: list[InitErrorDetails] = []
        if self.conversion == "static" and not self.rates:
            problems.append(
                error_at(("rates",), "conversion 'static' needs rates, e.g. {USD: 1.08}")
            )
        if self.conversion == "crm" and self.rates:
            problems.append(
                error_at(("rates",), "rates are used only with conversion: static; remove them")
            )
        own = self.rates.get(self.reporting)
        if own is not None and own != 1:
            problems.append(
                error_at(("rates", self.reporting), "the reporting currency's own rate must be 1")
            )
        raise_all("currency", problems)
        return self


def _period_label(value: Any) -> Any:
    if isinstance(value, dt.date):
        raise rule(
            "a period is written 2026 (fiscal year), 2026-Q3 (fiscal quarter) or 2026-07"
            " (month); for explicit dates use start and end"
        )
    value = text_from_scalar(value)
    if isinstance(value, str):
        value = value.strip().upper()
        if not PERIOD_LABEL.match(value):
            raise rule(
                "expected a period such as 2026 (fiscal year), 2026-Q3 (fiscal quarter) or"
                " 2026-07 (month)"
            )
    return value


class QuotaEntry(ConfigModel):
    """A rep's quota for a period, in the reporting currency."""

    rep: Email
    period: Annotated[str, BeforeValidator(_period_label)] | None = None
    """2026 (fiscal year), 2026-Q3 (fiscal quarter) or 2026-07 (month)."""
    start: dt.date | None = None
    end: dt.date | None = None
    """Last day of the period (inclusive)."""
    amount: Money

    @model_validator(mode="after")
    def _one_period(self) -> QuotaEntry:
        if self.period is not None and (self.start is not None or self.end is not None):
            raise rule("give either period or start and end, not both")
        if self.period is None:
            if self.start is None or self.end is None:
                raise rule("give period (e.g. 2026-Q3) or both start and end dates")
            if self.end < self.start:
                raise_all(
                    "quota", [error_at(("end",), "end is before start (end is the last day)")]
                )
        return self

    def bounds(self, fiscal: FiscalCalendar) -> tuple[dt.date, dt.date]:
        """First and last day (inclusive)."""
        if self.period is not None:
            return fiscal.period_bounds(self.period)
        assert self.start is not None and self.end is not None
        return self.start, self.end


class RampSettings(ConfigModel):
    prorate: bool = False
    """Prorate the quota of a rep who started inside a period by the days worked."""


class QuotaSettings(ConfigModel):
    entries: list[QuotaEntry] = Field(default_factory=list)
    csv: ConfigPath | None = None
    """CSV with columns rep,period,start,end,amount (see config_loader.read_quota_csv)."""
    ramp: RampSettings = Field(default_factory=RampSettings)

    @property
    def configured(self) -> bool:
        return bool(self.entries) or self.csv is not None


class PayoutCurve(ConfigModel):
    """payout(attainment) as a multiple of the target: linear up to ``accelerator_from``,
    then ``accelerator`` x the attainment above it, never above ``cap``."""

    accelerator_from: PositiveDecimal = Decimal("1.0")
    accelerator: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] = Decimal("1.5")
    cap: PositiveDecimal = Decimal("2.0")

    @model_validator(mode="after")
    def _cap_above_linear(self) -> PayoutCurve:
        if self.cap < self.accelerator_from:
            raise_all(
                "curve",
                [
                    error_at(
                        ("cap",), "cap must be at least accelerator_from (the linear part's end)"
                    )
                ],
            )
        return self


class VariablePay(ConfigModel):
    target: Money | None = None
    """Default variable pay target per rep and year, in the reporting currency."""
    targets: dict[Email, Money] = Field(default_factory=dict)
    """Per-rep targets (rep email -> amount), overriding target."""
    curve: PayoutCurve = Field(default_factory=PayoutCurve)

    @model_validator(mode="after")
    def _some_target(self) -> VariablePay:
        if self.target is None and not self.targets:
            raise rule("give a default target, per-rep targets, or both")
        return self

    def target_for(self, email: str) -> Decimal | None:
        return self.targets.get(email.lower(), self.target)
