"""Explained numbers: the deals (and other inputs) that make one KPI value of one rep.

Pure numpy beside the engine, and built from the engine's own parts (:class:`.engine.Part`):
the deals listed as counting for a KPI are exactly the deals the engine added up for it, so
the sums over the listed deals are the value, by construction (a property test checks it
over generated data). What this module adds is the "why not" of every other deal of the rep:
for each part, an ordered chain of conditions whose conjunction is the part's mask (tests
check that too); the first condition a deal fails is its reason.

KPIs explained by deals (:data:`DEAL_KPIS`): every KPI that sums or counts deals, plus the
ratios built only from such sums and the quota. KPIs explained by other inputs
(:data:`OTHER_INPUT_KPIS`): ``quota`` (quota rows), ``demos_per_week`` (demo activities),
``forecast_accuracy`` (a stored commit snapshot against bookings), ``variable_pay_estimate``
(the variable target and payout curve of the config, applied to attainment); their deals,
where they have some (bookings), are listed too.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .calendar import Period, elapsed_weeks
from .engine import (
    RETENTION_DAYS,
    Part,
    PeriodTable,
    Prepared,
    period_parts,
    quota_shares,
    trailing_parts,
)
from .frames import (
    EXCLUSIONS,
    FORECAST_CATEGORIES,
    Accounts,
    Activities,
    Deals,
    Quotas,
    Reps,
    Settings,
    Snapshots,
)

__all__ = [
    "DEAL_KPIS",
    "KPI_SPECS",
    "OTHER_INPUT_KPIS",
    "REASONS",
    "DealLine",
    "Explanation",
    "KpiSpec",
    "QuotaLine",
    "explain",
]


@dataclass(frozen=True)
class KpiSpec:
    """What one KPI is made of: its deal parts (``trailing``: velocity's window instead of
    the period) and its other inputs."""

    parts: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    trailing: bool = False


_CLOSED = ("won", "lost", "bookings", "credited", "cycle_sum", "cycle_n")
KPI_SPECS: dict[str, KpiSpec] = {
    "bookings_arr": KpiSpec(("bookings",)),
    "bookings_mrr": KpiSpec(("bookings",)),
    "deals_won": KpiSpec(("won",)),
    "deals_lost": KpiSpec(("lost",)),
    "win_rate": KpiSpec(("won", "lost")),
    "avg_deal_size": KpiSpec(("bookings", "credited")),
    "sales_cycle_days": KpiSpec(("cycle_sum", "cycle_n")),
    "sales_cycle_days_median": KpiSpec(("cycle_sum",)),
    "quota": KpiSpec((), ("quota",)),
    "quota_attainment": KpiSpec(("bookings",), ("quota",)),
    "quota_remaining": KpiSpec(("bookings",), ("quota",)),
    "open_pipeline_arr": KpiSpec(("open_arr",)),
    "weighted_pipeline_arr": KpiSpec(("weighted",)),
    "pipeline_coverage": KpiSpec(("open_arr", "bookings"), ("quota",)),
    "forecast_commit_arr": KpiSpec(("bookings", "commit_open")),
    "forecast_best_case_arr": KpiSpec(("bookings", "commit_open", "best_open")),
    "conversion_rate": KpiSpec(("entry_closed", "entry_won")),
    "demos_per_week": KpiSpec((), ("demos",)),
    "pipeline_velocity_per_day": KpiSpec((*_CLOSED, "open_qualified"), trailing=True),
    "retention_90d": KpiSpec(("eligible", "kept")),
    "forecast_accuracy": KpiSpec(("bookings",), ("snapshot",)),
    "variable_pay_estimate": KpiSpec(("bookings",), ("quota", "variable_target")),
}
#: Explained by the deals that make them (and the quota, for the ratios to quota).
DEAL_KPIS: tuple[str, ...] = tuple(
    k for k, s in KPI_SPECS.items() if s.parts and set(s.inputs) <= {"quota"}
)
#: Explained by other inputs (their deals, if any, are listed too).
OTHER_INPUT_KPIS: tuple[str, ...] = tuple(k for k in KPI_SPECS if k not in DEAL_KPIS)

#: Reason code -> one line for a person ({period}, {entry}: filled by the caller).
REASONS: dict[str, str] = {
    "counts": "counts",
    "created_after_as_of": "created after as_of",
    "no_close_date": "excluded: no close date",
    "outside_period": "outside the period",
    "outside_window": "closed outside the trailing window",
    "unknown_stage": "excluded: stage not in the mapping",
    "open": "open: not closed yet",
    "closed": "closed: not open",
    "closes_after_as_of": "close date after as_of",
    "won": "won, not lost",
    "lost": "lost",
    "not_quota_credited": "deal type not quota-credited",
    "no_arr": "excluded: no amount, or one that could not be converted",
    "no_cycle_start": "excluded: never entered the cycle-start stage",
    "close_before_cycle_start": "excluded: closed before its cycle start",
    "forecast_category": "forecast category not counted here",
    "never_entered_entry_stage": "never reached the conversion entry stage",
    "entered_after_as_of": "entered the entry stage after as_of",
    "not_won": "not won",
    "renewal": "a renewal, not a new customer",
    "no_account": "no account",
    "won_within_90_days": f"won less than {RETENTION_DAYS} days before as_of",
    "churned": f"churned within {RETENTION_DAYS} days of the close",
    "not_qualified": "before the qualified stage",
    "not_counted": "not counted (no recorded reason)",
}
#: Reasons of the deals that are only counted, not listed (far from the period).
_UNLISTED = frozenset({"outside_period", "outside_window", "created_after_as_of"})

_F = np.float64


@dataclass(frozen=True)
class DealLine:
    """One deal of the rep: whether it counts, why (a :data:`REASONS` code), and what it
    adds to each part where it counts."""

    row: int
    """Row of the Deals frame."""
    counts: bool
    reason: str
    contributions: dict[str, float] = field(default_factory=dict)
    exclusions: tuple[str, ...] = ()
    """Bad-data codes of the deal (:data:`..frames.EXCLUSIONS`)."""


@dataclass(frozen=True)
class QuotaLine:
    """One quota row overlapping the period: its span, amount and the share in the period."""

    start: dt.date
    end: dt.date
    amount: float
    share: float


@dataclass(frozen=True)
class Explanation:
    """One KPI of one rep and period, explained (see :func:`explain`)."""

    kpi: str
    period: Period
    as_of: dt.date
    value: float | None
    """The engine's value (what a run stores)."""
    empty_reason: str | None
    recomputed: float | None
    """The value recomputed from :attr:`totals` and :attr:`terms` alone."""
    totals: dict[str, float]
    """Part -> its sum over the listed counting deals."""
    terms: dict[str, float | None]
    """The other numbers of the formula (quota, demos, weeks, snapshot, target, payout...)."""
    formula: str
    deals: tuple[DealLine, ...]
    """Counting deals first (by close date), then the listed non-counting ones."""
    others: dict[str, int]
    """Reason -> how many more deals of the rep do not count for it (not listed)."""
    quota_rows: tuple[QuotaLine, ...] = ()


def explain(
    deals: Deals,
    reps: Reps,
    quotas: Quotas,
    activities: Activities,
    accounts: Accounts,
    snapshots: Snapshots,
    settings: Settings,
    as_of: dt.date,
    *,
    rep: int,
    period: Period,
    kpi: str,
    currency: str = "",
    every_deal: bool = False,
) -> Explanation:
    """Explain KPI ``kpi`` of the rep at row ``rep`` of ``reps`` for ``period``, as
    :func:`..engine.compute` computes it from the same frames and ``as_of``.

    Lists the deals that count (with what each adds to each part), then the rep's deals that
    do not, each with its reason; deals far from the period (outside it, created after
    as_of) are only counted in :attr:`Explanation.others`, unless ``every_deal``."""
    if kpi not in KPI_SPECS:
        raise ValueError(f"unknown KPI {kpi!r}; expected one of {', '.join(KPI_SPECS)}")
    if not 0 <= rep < len(reps):
        raise ValueError(f"no rep at row {rep} of the {len(reps)} reps")
    spec = KPI_SPECS[kpi]
    prepared = Prepared(deals, reps, accounts, activities, settings, as_of)
    stored = {
        (scope, subject, key): commit
        for scope, subject, key, commit, _ in snapshots.rows()
        if commit == commit
    }
    table = PeriodTable(prepared, quotas, settings, period, as_of, stored)
    raw = float(table.values[kpi][rep])
    value = None if math.isnan(raw) else raw
    reason = table.reasons[kpi][rep] if value is None else None

    parts = trailing_parts(prepared) if spec.trailing else period_parts(prepared, *_bounds(period))
    owners = np.array([rep])
    lines, totals, counts, others = _deal_lines(prepared, parts, spec, owners, period, every_deal)
    terms: dict[str, float | None] = {}
    quota_rows: tuple[QuotaLine, ...] = ()
    if "quota" in spec.inputs:
        quota_rows, terms["quota"] = _quota(prepared, quotas, period, rep)
        terms["quota_rows"] = float(len(quota_rows))
    if "demos" in spec.inputs:
        a = prepared
        start, end = _bounds(period)
        chosen = (a.a_owner == rep) & (a.a_day >= _day(start)) & (a.a_day <= _day(end))
        terms["demos"] = float(chosen.sum()) if a.demos_mapped else None
        terms["weeks"] = elapsed_weeks(period, as_of)
    if "snapshot" in spec.inputs:
        snapshot = float(table.snapshot[rep])
        terms["snapshot"] = None if math.isnan(snapshot) else snapshot
        terms["ended"] = 1.0 if as_of > period.end else 0.0
    if "variable_target" in spec.inputs:
        target = float(prepared.variable_targets()[rep]) * period.months / 12.0
        terms["variable_target"] = None if math.isnan(target) else target
    if kpi == "sales_cycle_days_median":
        terms["median"] = _median(lines)
    if spec.trailing:
        terms["window_days"] = float(settings.trailing_window_days)
        terms["current"] = 1.0 if table.is_current else 0.0
    recomputed = _recompute(kpi, totals, terms, settings)
    formula = _formula(kpi, totals, counts, terms, value, currency, period)
    return Explanation(
        kpi=kpi,
        period=period,
        as_of=as_of,
        value=value,
        empty_reason=reason,
        recomputed=recomputed,
        totals=totals,
        terms=terms,
        formula=formula,
        deals=tuple(lines),
        others=others,
        quota_rows=quota_rows,
    )


# ---- the deals -------------------------------------------------------------------------------


def _bounds(period: Period) -> tuple[dt.date, dt.date]:
    return period.start, period.end


def _day(value: dt.date) -> int:
    return int(np.datetime64(value, "D").view(np.int64))


def _days(values: np.ndarray) -> np.ndarray:
    return values.astype("datetime64[D]").view(np.int64)


Chain = list[tuple[str, np.ndarray]]


def _chains(p: Prepared, spec: KpiSpec, period: Period) -> dict[str, Chain]:
    """Per part, the conditions (over every deal) whose conjunction is the part's mask, in
    the order a person reads them; the first one a deal fails is why it does not count."""
    d, asof = p.deals, p.as_of
    created = ("created_after_as_of", p.created <= asof)
    has_close = ~np.isnat(d.close)
    stage = ("unknown_stage", d.stage_known)
    first, last = _day(period.start), _day(period.end)
    if spec.trailing:
        place = ("outside_window", p.close >= asof - p.settings.trailing_window_days + 1)
    else:
        place = ("outside_period", (p.close >= first) & (p.close <= last))
    closed_base: Chain = [
        created,
        ("no_close_date", has_close),
        place,
        stage,
        ("open", p.won | p.lost),
        ("closes_after_as_of", p.close <= asof),
    ]
    cycle = p.close - _days(d.cycle_start)
    credited_arr = [("not_quota_credited", d.credited), ("no_arr", ~np.isnan(d.arr))]
    chains: dict[str, Chain] = {
        "won": [*closed_base, ("lost", p.won)],
        "lost": [*closed_base, ("won", p.lost)],
        "bookings": [*closed_base, ("lost", p.won), *credited_arr],
        "credited": [*closed_base, ("lost", p.won), *credited_arr],
        "cycle_sum": [
            *closed_base,
            ("lost", p.won),
            ("no_cycle_start", ~np.isnat(d.cycle_start)),
            ("close_before_cycle_start", cycle >= 0),
        ],
    }
    chains["cycle_n"] = chains["cycle_sum"]
    chains["open_qualified"] = [created, stage, ("closed", p.open), ("not_qualified", d.qualified)]
    # Open deals: placed where as_of is when overdue (closed ones by their close date).
    placed = np.where(p.open, np.maximum(p.close, asof), p.close)
    open_base: Chain = [
        created,
        ("no_close_date", has_close),
        ("outside_period", (placed >= first) & (placed <= last)),
        stage,
        ("closed", p.open),
    ]
    if p.settings.pipeline_credited_only:
        open_base.append(("not_quota_credited", d.credited))
    open_base.append(("no_arr", ~np.isnan(d.arr)))
    chains["open_arr"] = chains["weighted"] = open_base
    chains["commit_open"] = [*open_base, ("forecast_category", d.forecast == _COMMIT)]
    chains["best_open"] = [*open_base, ("forecast_category", d.forecast == _BEST)]
    # Conversion: placed by the entry into the entry stage (else by close, else creation).
    entry = _days(d.entered_entry)
    entered = ~np.isnat(d.entered_entry)
    fallback = np.where(has_close, p.close, p.created)
    day = np.where(entered, entry, fallback)
    chains["entry_closed"] = [
        created,
        ("outside_period", (day >= first) & (day <= last)),
        ("never_entered_entry_stage", entered),
        ("entered_after_as_of", entry <= asof),
        stage,
        ("open", p.won | p.lost),
        ("closes_after_as_of", ~(has_close & (p.close > asof))),
    ]
    chains["entry_won"] = [*chains["entry_closed"], ("lost", p.won)]
    kept = np.zeros(len(d), bool)
    kept[p.r_rows] = p.r_kept
    chains["eligible"] = [
        created,
        ("no_close_date", has_close),
        ("outside_period", (p.close >= first) & (p.close <= last)),
        stage,
        ("not_won", p.won),
        ("renewal", ~d.is_renewal),
        ("no_account", d.account >= 0),
        ("won_within_90_days", p.close <= asof - RETENTION_DAYS),
    ]
    chains["kept"] = [*chains["eligible"], ("churned", kept)]
    return chains


_COMMIT = FORECAST_CATEGORIES.index("commit")
_BEST = FORECAST_CATEGORIES.index("best_case")


def _classify(
    p: Prepared, parts: Mapping[str, Part], spec: KpiSpec, owners: np.ndarray, period: Period
) -> tuple[np.ndarray, list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The owners' deal rows, each one's reason, and per part its counting rows and values."""
    rows = np.flatnonzero(np.isin(p.deals.owner, owners))
    chains = _chains(p, spec, period)
    counted = {name: parts[name].contributions(owners) for name in spec.parts}
    counting = np.zeros(len(p.deals), bool)
    for found, _ in counted.values():
        counting[found] = True
    best_reason = np.full(len(rows), "not_counted", dtype=object)
    best_depth = np.full(len(rows), -1)
    for name in spec.parts:
        chain = chains[name]
        passed = np.ones(len(rows), bool)
        depth = np.zeros(len(rows), int)
        reason = np.full(len(rows), "not_counted", dtype=object)
        for code, holds in chain:
            fails = passed & ~holds[rows]
            reason[fails] = code
            passed &= holds[rows]
            depth += passed
        # The part where a deal went furthest says why (ties: the first part of the KPI).
        better = depth > best_depth
        best_reason[better] = reason[better]
        best_depth = np.maximum(depth, best_depth)
    reasons = [
        "counts" if counting[row] else str(why)
        for row, why in zip(rows.tolist(), best_reason, strict=True)
    ]
    return rows, reasons, counted


def _deal_lines(
    p: Prepared,
    parts: Mapping[str, Part],
    spec: KpiSpec,
    owners: np.ndarray,
    period: Period,
    every_deal: bool,
) -> tuple[list[DealLine], dict[str, float], dict[str, int], dict[str, int]]:
    if not spec.parts:  # quota, demos: no deal makes them
        return [], {}, {}, {}
    rows, reasons, counted = _classify(p, parts, spec, owners, period)
    adds: dict[int, dict[str, float]] = {}
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, (found, values) in counted.items():
        counts[name] = len(found)
        # The same order as the engine's bincount (frame order): the same float sum.
        totals[name] = float(np.bincount(np.zeros(len(values), np.int64), values, 1)[0])
        for row, value in zip(found.tolist(), values.tolist(), strict=True):
            adds.setdefault(row, {})[name] = value
    bits = p.deals.exclusions()
    close = p.close
    lines = [
        DealLine(
            row=row,
            counts=why == "counts",
            reason=why,
            contributions=adds.get(row, {}),
            exclusions=tuple(code for bit, (code, _) in EXCLUSIONS.items() if bits[row] & bit),
        )
        for row, why in zip(rows.tolist(), reasons, strict=True)
        if every_deal or why not in _UNLISTED
    ]
    lines.sort(key=lambda line: (not line.counts, int(close[line.row]), line.row))
    others = {} if every_deal else dict(Counter(why for why in reasons if why in _UNLISTED))
    return lines, totals, counts, others


def _median(lines: list[DealLine]) -> float | None:
    cycles = [
        line.contributions["cycle_sum"] for line in lines if "cycle_sum" in line.contributions
    ]
    return float(np.median(cycles)) if cycles else None


def _quota(
    p: Prepared, quotas: Quotas, period: Period, rep: int
) -> tuple[tuple[QuotaLine, ...], float | None]:
    share, overlap = quota_shares(p, quotas, period)
    chosen = np.flatnonzero(overlap & (quotas.rep == rep))
    lines = tuple(
        QuotaLine(
            start=quotas.start[i].item(),
            end=quotas.end[i].item(),
            amount=float(quotas.amount[i]),
            share=float(share[i]),
        )
        for i in chosen.tolist()
    )
    total = float(np.bincount(np.zeros(len(chosen), np.int64), share[chosen], 1)[0])
    return lines, (total if len(chosen) else None)


# ---- the formula -----------------------------------------------------------------------------


def _ratio(num: float, den: float | None) -> float | None:
    return None if den is None or den <= 0 else num / den


def _recompute(
    kpi: str, t: Mapping[str, float], terms: Mapping[str, float | None], settings: Settings
) -> float | None:
    """The KPI from the part totals and the other terms alone (KPIS.md's formulas)."""
    quota = terms.get("quota")
    g = t.get
    formulas: dict[str, Callable[[], float | None]] = {
        "bookings_arr": lambda: t["bookings"],
        "bookings_mrr": lambda: t["bookings"] / 12.0,
        "deals_won": lambda: t["won"],
        "deals_lost": lambda: t["lost"],
        "win_rate": lambda: _ratio(t["won"], t["won"] + t["lost"]),
        "avg_deal_size": lambda: _ratio(t["bookings"], t["credited"]),
        "sales_cycle_days": lambda: _ratio(t["cycle_sum"], t["cycle_n"]),
        "sales_cycle_days_median": lambda: terms.get("median"),
        "quota": lambda: quota,
        "quota_attainment": lambda: None if quota is None else _ratio(t["bookings"], quota),
        "quota_remaining": lambda: None if quota is None else max(quota - t["bookings"], 0.0),
        "open_pipeline_arr": lambda: t["open_arr"],
        "weighted_pipeline_arr": lambda: t["weighted"],
        "pipeline_coverage": lambda: (
            None if quota is None else _ratio(t["open_arr"], max(quota - t["bookings"], 0.0))
        ),
        "forecast_commit_arr": lambda: t["bookings"] + t["commit_open"],
        "forecast_best_case_arr": lambda: t["bookings"] + t["commit_open"] + t["best_open"],
        "conversion_rate": lambda: _ratio(t["entry_won"], t["entry_closed"]),
        "demos_per_week": lambda: _demos(terms),
        "pipeline_velocity_per_day": lambda: _velocity(t, terms),
        "retention_90d": lambda: (
            _ratio(t["kept"], t["eligible"]) if settings.churn_signal else None
        ),
        "forecast_accuracy": lambda: _accuracy(g("bookings", 0.0), terms),
        "variable_pay_estimate": lambda: _pay(t["bookings"], terms, settings),
    }
    return formulas[kpi]()


def _demos(terms: Mapping[str, float | None]) -> float | None:
    demos, weeks = terms.get("demos"), terms.get("weeks")
    return None if demos is None or not weeks else demos / weeks


def _velocity(t: Mapping[str, float], terms: Mapping[str, float | None]) -> float | None:
    win_rate = _ratio(t["won"], t["won"] + t["lost"])
    size = _ratio(t["bookings"], t["credited"])
    cycle = _ratio(t["cycle_sum"], t["cycle_n"])
    if not terms.get("current") or win_rate is None or size is None or not cycle:
        return None
    return t["open_qualified"] * win_rate * size / cycle


def _accuracy(bookings: float, terms: Mapping[str, float | None]) -> float | None:
    snapshot = terms.get("snapshot")
    if not terms.get("ended") or snapshot is None or bookings <= 0:
        return None
    return max(1.0 - abs(snapshot - bookings) / bookings, 0.0)


def _pay(bookings: float, terms: Mapping[str, float | None], settings: Settings) -> float | None:
    target, quota = terms.get("variable_target"), terms.get("quota")
    attainment = None if quota is None else _ratio(bookings, quota)
    if target is None or attainment is None:
        return None
    return target * float(settings.payout.payout(np.array([attainment]))[0])


def _money(value: float | None, currency: str) -> str:
    if value is None:
        return "-"
    decimals = 0 if abs(value - round(value)) < 0.005 else 2
    return f"{value:,.{decimals}f} {currency}".rstrip()


def _percent(value: float | None) -> str:
    if value is None:
        return "empty"
    text = f"{value * 100:.1f}".removesuffix(".0")
    return f"{text}%"


def _number(value: float | None, decimals: int = 1, unit: str = "") -> str:
    return "empty" if value is None else f"{value:,.{decimals}f}{unit}"


def _formula(
    kpi: str,
    t: Mapping[str, float],
    c: Mapping[str, int],
    terms: Mapping[str, float | None],
    value: float | None,
    currency: str,
    period: Period,
) -> str:
    """The formula with its numbers filled in, in one line (``c``: counting deals per part)."""

    def m(x: float | None) -> str:
        return _money(x, currency)

    quota = terms.get("quota")
    b = t.get("bookings", 0.0)
    remaining = None if quota is None else max(quota - b, 0.0)
    attainment = None if quota is None else _ratio(b, quota)
    k = period.key
    lines: dict[str, Callable[[], str]] = {
        "bookings_arr": lambda: (
            f"bookings ARR = ARR of {c['bookings']} quota-credited won"
            f" deals closed in {k} = {m(value)}"
        ),
        "bookings_mrr": lambda: f"bookings MRR = bookings ARR {m(b)} / 12 = {m(value)}",
        "deals_won": lambda: f"deals won = {c['won']} won deals closed in {k}",
        "deals_lost": lambda: f"deals lost = {c['lost']} lost deals closed in {k}",
        "win_rate": lambda: (
            f"win rate = won {c['won']} / (won {c['won']} + lost {c['lost']}) = {_percent(value)}"
        ),
        "avg_deal_size": lambda: (
            f"average deal size = bookings ARR {m(b)}"
            f" / {c['credited']} quota-credited won deals = {m(value)}"
        ),
        "sales_cycle_days": lambda: (
            f"sales cycle = {_number(t['cycle_sum'], 0)} days"
            f" / {c['cycle_n']} won deals = {_number(value, unit=' days')}"
        ),
        "sales_cycle_days_median": lambda: (
            f"median sales cycle = median of the"
            f" {c['cycle_sum']} won deals' cycles = {_number(value, unit=' days')}"
        ),
        "quota": lambda: f"quota = the {k} share of {_quota_rows(terms)} quota row(s) = {m(value)}",
        "quota_attainment": lambda: (
            f"quota attainment = bookings ARR {m(b)} / quota {m(quota)} = {_percent(value)}"
        ),
        "quota_remaining": lambda: (
            f"quota remaining = max(quota {m(quota)} - bookings ARR {m(b)}, 0) = {m(value)}"
        ),
        "open_pipeline_arr": lambda: (
            f"open pipeline = ARR of {c['open_arr']} open deals closing in {k} = {m(value)}"
        ),
        "weighted_pipeline_arr": lambda: (
            "weighted pipeline = ARR x stage probability of"
            f" {c['weighted']} open deals closing in {k} = {m(value)}"
        ),
        "pipeline_coverage": lambda: (
            f"pipeline coverage = open pipeline {m(t['open_arr'])}"
            f" / quota remaining {m(remaining)} (quota {m(quota)} - bookings ARR {m(b)})"
            f" = {_percent(value)}"
        ),
        "forecast_commit_arr": lambda: (
            f"forecast commit = bookings ARR {m(b)} + {c['commit_open']}"
            f" open Commit deals {m(t['commit_open'])} = {m(value)}"
        ),
        "forecast_best_case_arr": lambda: (
            f"forecast best case = bookings ARR {m(b)}"
            f" + {c['commit_open']} open Commit deals {m(t['commit_open'])}"
            f" + {c['best_open']} open Best Case deals {m(t['best_open'])} = {m(value)}"
        ),
        "conversion_rate": lambda: (
            f"conversion = won {c['entry_won']} / closed"
            f" {c['entry_closed']} of the deals that entered the entry stage in {k}"
            f" = {_percent(value)}"
        ),
        "demos_per_week": lambda: (
            f"demos per week = {_number(terms.get('demos'), 0)} demos"
            f" / {_number(terms.get('weeks'), 2)} elapsed weeks = {_number(value)}"
        ),
        "pipeline_velocity_per_day": lambda: _velocity_text(t, terms, value, m),
        "retention_90d": lambda: (
            f"retention 90d = kept {c['kept']} / eligible"
            f" {c['eligible']} customers won in {k} = {_percent(value)}"
        ),
        "forecast_accuracy": lambda: (
            "forecast accuracy = max(1 - |commit snapshot"
            f" {m(terms.get('snapshot'))} - bookings ARR {m(b)}| / bookings ARR {m(b)}, 0)"
            f" = {_percent(value)}"
        ),
        "variable_pay_estimate": lambda: (
            "variable pay = variable target for the period"
            f" {m(terms.get('variable_target'))} x payout(attainment {_percent(attainment)})"
            f" = {m(value)}"
        ),
    }
    return lines[kpi]()


def _quota_rows(terms: Mapping[str, float | None]) -> int:
    return int(terms.get("quota_rows") or 0)


def _velocity_text(
    t: Mapping[str, float],
    terms: Mapping[str, float | None],
    value: float | None,
    m: Callable[[float | None], str],
) -> str:
    won, lost = t["won"], t["lost"]
    days = int(terms.get("window_days") or 0)
    return (
        f"pipeline velocity = open qualified deals {int(t['open_qualified'])}"
        f" x win rate {_percent(_ratio(won, won + lost))} ({int(won)} won / {int(won + lost)}"
        f" closed in the last {days} days) x average deal size"
        f" {m(_ratio(t['bookings'], t['credited']))} / sales cycle"
        f" {_number(_ratio(t['cycle_sum'], t['cycle_n']), unit=' days')} = {m(value)} per day"
    )
