"""The KPI engine's output: one row per subject and period, the per-deal table, new snapshots.

Values are plain Python (``float``, ``int`` for counts, ``None`` for empty) so the writer and
the store can serialise them as they are. Every ``None`` has a reason code in the row's
``empty_reasons`` (see :data:`..notes.EMPTY_REASONS`), so the CLI can explain every empty.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .calendar import Period
from .frames import Snapshots

__all__ = ["DEAL_KPI_KEYS", "KPI_KEYS", "DealKpis", "KpiRow", "Results", "Scope"]

Scope = Literal["rep", "team", "org"]

#: Per subject and period, in the order of KPIS.md.
KPI_KEYS: tuple[str, ...] = (
    "bookings_arr",
    "bookings_mrr",
    "deals_won",
    "deals_lost",
    "win_rate",
    "avg_deal_size",
    "sales_cycle_days",
    "sales_cycle_days_median",
    "quota",
    "quota_attainment",
    "quota_remaining",
    "open_pipeline_arr",
    "weighted_pipeline_arr",
    "pipeline_coverage",
    "forecast_commit_arr",
    "forecast_best_case_arr",
    "conversion_rate",
    "demos_per_week",
    "pipeline_velocity_per_day",
    "retention_90d",
    "forecast_accuracy",
    "variable_pay_estimate",
)
#: Per deal.
DEAL_KPI_KEYS: tuple[str, ...] = (
    "deal_age_days",
    "days_in_stage",
    "close_date_slips",
    "owner_quota_attainment",
)


@dataclass(frozen=True)
class KpiRow:
    """The KPIs of one subject (a rep, a team or the org) for one period."""

    scope: Scope
    subject: str
    """Rep id, team name, or "org"."""
    period_kind: str
    period_key: str
    start: dt.date
    end: dt.date
    """Last day of the period (inclusive)."""
    is_current: bool
    """The period contains as_of (its values are "to date")."""
    values: dict[str, float | int | None]
    """Every key of :data:`KPI_KEYS`; ``None`` = empty."""
    empty_reasons: dict[str, str] = field(default_factory=dict)
    """For each empty value, its reason code."""
    rep_index: int | None = None
    """Row of the Reps frame (scope "rep" only)."""


@dataclass(frozen=True, eq=False)
class DealKpis:
    """Per-deal values, columnar (one entry per row of the Deals frame, same order).

    Every value is float64 with NaN for empty. A deal whose stage the mapping does not know
    (``stage_known`` False) has every value empty. The dates the ages count from are given too
    (``created``, ``stage_entered`` with an unknown entry read as the created date), NaT
    exactly where their age is empty, so the sync layer may write dates instead of ages that
    change every day and the two modes never disagree on which deals carry a value.
    """

    id: np.ndarray
    created: np.ndarray
    stage_entered: np.ndarray
    close: np.ndarray
    deal_age_days: np.ndarray
    days_in_stage: np.ndarray
    close_date_slips: np.ndarray
    owner_quota_attainment: np.ndarray
    stage_known: np.ndarray
    period: Period
    """The owner's period for owner_quota_attainment."""

    def __len__(self) -> int:
        return len(self.id)

    def values(self, index: int) -> dict[str, float | int | None]:
        """Python values of one deal (ints for day counts, None for empty)."""
        return {
            "deal_age_days": _int_or_none(self.deal_age_days[index]),
            "days_in_stage": _int_or_none(self.days_in_stage[index]),
            "close_date_slips": _int_or_none(self.close_date_slips[index]),
            "owner_quota_attainment": _float_or_none(self.owner_quota_attainment[index]),
        }

    def __iter__(self) -> Iterator[tuple[str, dict[str, float | int | None]]]:
        age = self.deal_age_days.tolist()
        stage = self.days_in_stage.tolist()
        slips = self.close_date_slips.tolist()
        owner = self.owner_quota_attainment.tolist()
        for i, deal_id in enumerate(self.id.tolist()):
            yield (
                deal_id,
                {
                    "deal_age_days": None if math.isnan(age[i]) else int(age[i]),
                    "days_in_stage": None if math.isnan(stage[i]) else int(stage[i]),
                    "close_date_slips": None if math.isnan(slips[i]) else int(slips[i]),
                    "owner_quota_attainment": None if math.isnan(owner[i]) else owner[i],
                },
            )


@dataclass(frozen=True, eq=False)
class Results:
    """Everything one :func:`..engine.compute` call produces."""

    as_of: dt.date
    periods: tuple[Period, ...]
    rows: tuple[KpiRow, ...]
    deals: DealKpis
    new_snapshots: Snapshots
    """Commit forecasts to store (see the notes on forecast_accuracy)."""

    def row(self, scope: Scope, subject: str, period_key: str) -> KpiRow:
        """The row of one subject and period; KeyError if not computed."""
        index = self.__dict__.get("_index")
        if index is None:
            index = {(r.scope, r.subject, r.period_key): r for r in self.rows}
            object.__setattr__(self, "_index", index)
        return index[(scope, subject, period_key)]

    def explanations(self) -> Iterator[tuple[Scope, str, str, str, str]]:
        """``(scope, subject, period_key, kpi_key, reason)`` for every empty value."""
        for r in self.rows:
            for key, reason in r.empty_reasons.items():
                yield r.scope, r.subject, r.period_key, key, reason


def _int_or_none(value: float) -> int | None:
    return None if math.isnan(value) else int(value)


def _float_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
