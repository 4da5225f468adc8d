"""The KPI engine: :func:`compute` turns the frames into every KPI of KPIS.md.

How it stays fast on a million deals: per-deal work is done once, column-wise, into a few
subsets (deals closed to date, open deals with a close date, conversion candidates, retention
candidates, demos); each period then costs a handful of boolean masks and ``np.bincount`` calls
over those subsets, giving per-rep SUMS. Teams and the org are sums of their reps' sums; every
ratio is then derived from the sums of its own row by one vectorised function, the same for a
rep, a team and the org (so a team's win rate is team won / team closed, never a mean of
ratios). Only medians, which are not sums, are taken over each group's deals.

The rules where KPIS.md is silent are in :data:`..notes.KPI_NOTES`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from .calendar import FiscalCalendar, Period, elapsed_weeks, snapshot_date
from .frames import (
    FORECAST_BEST_CASE,
    FORECAST_COMMIT,
    Accounts,
    Activities,
    Deals,
    Quotas,
    Reps,
    Settings,
    Snapshots,
)
from .results import KPI_KEYS, DealKpis, KpiRow, Results, Scope

__all__ = [
    "ADDITIVE_KPIS",
    "COUNT_KPIS",
    "PART_MEANINGS",
    "RETENTION_DAYS",
    "Part",
    "Prepared",
    "compute",
    "period_parts",
    "quota_shares",
    "trailing_parts",
]

#: Days after close within which a churn counts against retention_90d.
RETENTION_DAYS = 90
#: KPIs whose team/org value is the sum of its reps' values (None when every rep's is None).
ADDITIVE_KPIS: tuple[str, ...] = (
    "bookings_arr",
    "bookings_mrr",
    "deals_won",
    "deals_lost",
    "quota",
    "open_pipeline_arr",
    "weighted_pipeline_arr",
    "forecast_commit_arr",
    "forecast_best_case_arr",
    "demos_per_week",
    "variable_pay_estimate",
)
#: KPIs written as ints.
COUNT_KPIS = frozenset({"deals_won", "deals_lost"})

_F = np.float64
_NAT = np.datetime64("NaT", "D")


def compute(
    deals: Deals,
    reps: Reps,
    quotas: Quotas,
    activities: Activities,
    accounts: Accounts,
    snapshots: Snapshots,
    settings: Settings,
    as_of: dt.date,
) -> Results:
    """Every KPI per rep, team and org for the configured periods, as of ``as_of`` (a date in
    the fiscal timezone), plus the per-deal values and the commit snapshots to store."""
    _check_references(deals, reps, quotas, activities, accounts)
    calendar = FiscalCalendar(settings.year_start_month, settings.year_named_by)
    periods = tuple(
        calendar.shift(calendar.period_of(kind, as_of), offset)
        for kind in settings.periods
        for offset in settings.offsets
    )
    prepared = Prepared(deals, reps, accounts, activities, settings, as_of)
    stored = {
        (scope, subject, period): commit
        for scope, subject, period, commit, _ in snapshots.rows()
        if commit == commit  # a NaN commit is no snapshot
    }
    rows: list[KpiRow] = []
    new_snapshots: list[tuple[str, str, str, float, dt.date]] = []
    owner_period = calendar.period_of(settings.deal_period, as_of)
    owner_attainment: np.ndarray | None = None
    for period in periods:
        table = PeriodTable(prepared, quotas, settings, period, as_of, stored)
        rows += table.rows()
        new_snapshots += table.new_snapshots()
        if period == owner_period:
            owner_attainment = table.values["quota_attainment"][: prepared.n_reps]
    if owner_attainment is None:
        table = PeriodTable(prepared, quotas, settings, owner_period, as_of, stored)
        owner_attainment = table.values["quota_attainment"][: prepared.n_reps]
    return Results(
        as_of=as_of,
        periods=periods,
        rows=tuple(rows),
        deals=prepared.deal_kpis(owner_attainment, owner_period),
        new_snapshots=Snapshots.from_rows(new_snapshots),
    )


def _check_references(
    deals: Deals, reps: Reps, quotas: Quotas, activities: Activities, accounts: Accounts
) -> None:
    n = len(reps)
    for frame, column in (("Deals", deals.owner), ("Quotas", quotas.rep)):
        if len(column) and column.max() >= n:
            raise ValueError(f"{frame}: a rep index is >= the {n} rows of Reps")
    if len(activities.owner) and activities.owner.max() >= n:
        raise ValueError(f"Activities.owner: a rep index is >= the {n} rows of Reps")
    if len(deals.account) and deals.account.max() >= len(accounts):
        raise ValueError(f"Deals.account: an index is >= the {len(accounts)} rows of Accounts")


def _days(values: np.ndarray) -> np.ndarray:
    """datetime64[D] -> int64 days since 1970-01-01 (NaT -> the int64 minimum)."""
    return values.astype("datetime64[D]").view(np.int64)


def _day(value: dt.date) -> int:
    return int(np.datetime64(value, "D").view(np.int64))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den > 0, NaN elsewhere; never a division-by-zero warning."""
    out = np.full(np.shape(num), np.nan)
    # Overflow needs absurd money (a denominator near 1e-300); it then gives inf, not a crash.
    with np.errstate(over="ignore"):
        np.divide(num, den, out=out, where=den > 0)
    return out


def _count(groups: np.ndarray, n: int, mask: np.ndarray | None = None) -> np.ndarray:
    if mask is not None:
        groups = groups[mask]
    return np.bincount(groups, minlength=n).astype(_F)


def _sum(groups: np.ndarray, weights: np.ndarray, n: int, mask: np.ndarray) -> np.ndarray:
    # bincount returns ints for empty input even with weights: always give floats.
    return np.bincount(groups[mask], weights=weights[mask], minlength=n).astype(_F)


def _group_median(groups: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Median of ``values`` per group 0..n-1 (NaN for an empty group)."""
    out = np.full(n, np.nan)
    if not len(values):
        return out
    order = np.lexsort((values, groups))
    ordered = values[order]
    counts = np.bincount(groups, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    low = starts[has] + (counts[has] - 1) // 2
    high = starts[has] + counts[has] // 2
    out[has] = (ordered[low] + ordered[high]) / 2.0
    return out


def _month_position(days: np.ndarray) -> np.ndarray:
    """Months since 1970-01 as a float: whole months plus the elapsed fraction of the month
    (``F(2026-07-16) = 12 * 56 + 6 + 15/31``). ``F(b + 1) - F(a)`` measures the days a..b in
    months, each day counting 1/length of its own month; quotas are split with it."""
    day = days.astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    first = month.astype("datetime64[D]").view(np.int64)
    following = (month + 1).astype("datetime64[D]").view(np.int64)
    return month.view(np.int64) + (days - first) / (following - first)


class Prepared:
    """Per-deal work done once per run: resolved masks and the candidate subsets."""

    def __init__(
        self,
        deals: Deals,
        reps: Reps,
        accounts: Accounts,
        activities: Activities,
        settings: Settings,
        as_of: dt.date,
    ) -> None:
        self.deals = deals
        self.reps = reps
        self.settings = settings
        self.as_of = _day(as_of)
        self.n_reps = len(reps)
        self._teams(reps)
        asof = self.as_of
        created = _days(deals.created)
        close = _days(deals.close)
        has_close = ~np.isnat(deals.close)
        has_arr = ~np.isnan(deals.arr)
        arr = np.where(has_arr, deals.arr, 0.0)
        # A deal created after as_of (a backfill) did not exist yet.
        known = deals.stage_known & (created <= asof)
        won = known & deals.is_won
        lost = known & deals.is_lost
        open_ = known & ~deals.is_won & ~deals.is_lost
        self.created, self.close, self.known, self.won, self.lost, self.open = (
            created,
            close,
            known,
            won,
            lost,
            open_,
        )
        owner = deals.owner

        # Closed to date: won or lost with a close date up to as_of.
        cycle = (close - _days(deals.cycle_start)).astype(_F)
        cycle_ok = won & ~np.isnat(deals.cycle_start) & has_close & (cycle >= 0)
        credited_won = won & deals.credited & has_arr
        closed = np.flatnonzero((won | lost) & has_close & (close <= asof))
        self.c_rows = closed
        self.c_close = close[closed]
        self.c_owner = owner[closed]
        self.c_won = won[closed]
        self.c_credited = credited_won[closed]
        self.c_bookings = np.where(credited_won, arr, 0.0)[closed]
        self.c_cycle_ok = cycle_ok[closed]
        self.c_cycle = np.where(cycle_ok, cycle, 0.0)[closed]

        # Open with a close date; an overdue one (close before as_of) counts where as_of is.
        pipeline = open_ & has_close
        if settings.pipeline_credited_only:
            pipeline &= deals.credited
        opened = np.flatnonzero(pipeline)
        self.o_rows = opened
        self.o_close = np.maximum(close[opened], asof)
        self.o_owner = owner[opened]
        o_arr = arr[opened]
        self.o_arr = o_arr
        self.o_weighted = o_arr * np.nan_to_num(deals.probability[opened], nan=0.0)
        self.o_has_arr = has_arr[opened]
        self.o_is_commit = deals.forecast[opened] == FORECAST_COMMIT
        self.o_is_best = deals.forecast[opened] == FORECAST_BEST_CASE
        self.o_commit = np.where(self.o_is_commit, o_arr, 0.0)
        self.o_best = np.where(self.o_is_best, o_arr, 0.0)

        # Conversion: entered the entry stage by as_of and closed by as_of.
        entry = _days(deals.entered_entry)
        converted = (
            (won | lost)
            & ~np.isnat(deals.entered_entry)
            & (entry <= asof)
            & ~(has_close & (close > asof))
        )
        chosen = np.flatnonzero(converted)
        self.e_rows = chosen
        self.e_day = entry[chosen]
        self.e_owner = owner[chosen]
        self.e_won = won[chosen]

        # Retention: customers won at least RETENTION_DAYS before as_of.
        eligible = (
            won
            & ~deals.is_renewal
            & (deals.account >= 0)
            & has_close
            & (close <= asof - RETENTION_DAYS)
        )
        chosen = np.flatnonzero(eligible)
        self.r_rows = chosen
        self.r_close = close[chosen]
        self.r_owner = owner[chosen]
        lost_renewal = lost & deals.is_renewal & (deals.account >= 0) & has_close
        self.r_kept = ~self._churned(
            deals.account[chosen],
            self.r_close,
            accounts,
            deals.account[lost_renewal],
            close[lost_renewal],
        )

        # Demos up to as_of.
        day = _days(activities.day)
        demo = activities.is_demo & (day <= asof)
        self.demos_mapped = activities.demos_mapped
        self.a_day = day[demo]
        self.a_owner = activities.owner[demo]

        # Velocity: rates over the trailing window, open qualified deals at as_of.
        self.open_qualified = open_ & deals.qualified
        self.trailing = {
            name: part.totals(self.n_reps) for name, part in trailing_parts(self).items()
        }

    def _teams(self, reps: Reps) -> None:
        names = sorted({t for t in reps.team.tolist() if t is not None})
        index = {name: i for i, name in enumerate(names)}
        self.team_names = names
        self.team_of_rep = np.array(
            [-1 if t is None else index[t] for t in reps.team.tolist()], dtype=np.int64
        )
        self.in_team = self.team_of_rep >= 0

    @staticmethod
    def _churned(
        account: np.ndarray,
        won_close: np.ndarray,
        accounts: Accounts,
        renewal_account: np.ndarray,
        renewal_close: np.ndarray,
    ) -> np.ndarray:
        """Per won deal: its account churned within RETENTION_DAYS of the close (a churn
        date, or a lost renewal of the same account closing in that window)."""
        churn = _days(accounts.churn)[account]
        churned = (
            ~np.isnat(accounts.churn[account])
            & (churn >= won_close)
            & (churn <= won_close + RETENTION_DAYS)
        )
        if len(renewal_close) and len(won_close):
            # One sorted key per (account, day); a window is a searchsorted range.
            base = min(int(renewal_close.min()), int(won_close.min()))
            span = max(int(renewal_close.max()), int(won_close.max()) + RETENTION_DAYS) - base + 1
            keys = np.sort(renewal_account.astype(np.int64) * span + (renewal_close - base))
            low = account.astype(np.int64) * span + (won_close - base)
            found = np.searchsorted(keys, low + RETENTION_DAYS, "right") - np.searchsorted(
                keys, low, "left"
            )
            churned |= found > 0
        return churned

    def stack(self, per_rep: np.ndarray) -> np.ndarray:
        """Rep values followed by each team's sum and the org's sum."""
        teams = _sum(self.team_of_rep, per_rep.astype(_F), len(self.team_names), self.in_team)
        return np.concatenate((per_rep, teams, [per_rep.sum()])).astype(_F)

    def medians(self, owner: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Median per rep, per team and for the org, over the given deals."""
        team = self.team_of_rep[owner]
        in_team = team >= 0
        org = np.median(values) if len(values) else np.nan
        return np.concatenate(
            (
                _group_median(owner, values, self.n_reps),
                _group_median(team[in_team], values[in_team], len(self.team_names)),
                [org],
            )
        )

    def variable_targets(self) -> np.ndarray:
        """Yearly variable pay target per rep (NaN = none)."""
        s = self.settings
        default = np.nan if s.variable_target is None else s.variable_target
        targets = [
            np.nan if unassigned else s.variable_targets.get(email.lower(), default)
            for email, unassigned in zip(
                self.reps.email.tolist(), self.reps.is_unassigned.tolist(), strict=True
            )
        ]
        return np.array(targets, dtype=_F)

    def deal_kpis(self, owner_attainment: np.ndarray, period: Period) -> DealKpis:
        d = self.deals
        asof = self.as_of
        stage_entered = np.where(np.isnat(d.stage_entered), d.created, d.stage_entered)
        closed = self.won | self.lost
        age = np.where(closed, self.close - self.created, asof - self.created).astype(_F)
        age[~self.known | (closed & np.isnat(d.close)) | (age < 0)] = np.nan
        in_stage = (asof - _days(stage_entered)).astype(_F)
        in_stage[~self.known | (in_stage < 0)] = np.nan
        # A deal whose stage the mapping does not know has no per-deal value at all (KPIS.md).
        slips = d.slips.astype(_F)
        slips[~d.stage_known] = np.nan
        owner = owner_attainment[d.owner]
        owner[~d.stage_known] = np.nan
        # The dates the ages count from, exactly where the ages have a value: writing dates
        # instead of ages never puts a value where the age would be empty.
        return DealKpis(
            id=d.id,
            created=np.where(np.isnan(age), _NAT, d.created),
            stage_entered=np.where(np.isnan(in_stage), _NAT, stage_entered),
            close=d.close,
            deal_age_days=age,
            days_in_stage=in_stage,
            close_date_slips=slips,
            owner_quota_attainment=owner,
            stage_known=d.stage_known,
            period=period,
        )


# ---- the deal-based sums: one definition for the values and their explanation ---------------


@dataclass(frozen=True, eq=False)
class Part:
    """One deal-based sum or count, per rep: over the deals ``rows`` (rows of the Deals frame)
    of one prepared subset, those where ``mask`` holds, adding ``weights`` (``None``: each
    counts 1). Every KPI value that adds deals up is computed from parts, and
    :mod:`..explain` lists the same parts' deals, so a value and its explanation cannot
    disagree on which deals count."""

    rows: np.ndarray
    owner: np.ndarray
    mask: np.ndarray
    weights: np.ndarray | None = None

    def totals(self, n_reps: int) -> np.ndarray:
        """The sum (or count) per rep, float64."""
        if self.weights is None:
            return _count(self.owner, n_reps, self.mask)
        return _sum(self.owner, self.weights, n_reps, self.mask)

    def contributions(self, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The deal rows of the reps ``owners`` that count here, and what each adds."""
        chosen = self.mask & np.isin(self.owner, owners)
        weights = np.ones(len(self.mask)) if self.weights is None else self.weights
        return self.rows[chosen], weights[chosen].astype(_F)


#: What each deal-based part adds up (README, explanations).
PART_MEANINGS: dict[str, str] = {
    "won": "won deals closed in the period (to date)",
    "lost": "lost deals closed in the period (to date)",
    "bookings": "ARR of the quota-credited won deals closed in the period (to date)",
    "credited": "quota-credited won deals with an ARR closed in the period (to date)",
    "cycle_sum": "days from cycle start to close of the won deals with a usable cycle",
    "cycle_n": "won deals with a usable cycle",
    "open_arr": "ARR of the open deals closing in the period (overdue ones where as_of is)",
    "weighted": "ARR x stage probability of the same open deals",
    "commit_open": "ARR of those open deals in forecast category Commit",
    "best_open": "ARR of those open deals in forecast category Best Case",
    "entry_closed": "deals that entered the entry stage in the period and are closed",
    "entry_won": "of those, the won deals",
    "eligible": "customers won in the period at least 90 days before as_of",
    "kept": "of those, the ones not churned within 90 days",
    "open_qualified": "open deals at or past the qualified stage at as_of",
}


def period_parts(p: Prepared, start: dt.date, end: dt.date) -> dict[str, Part]:
    """Every deal-based part of one period (first to last day, inclusive)."""
    first, last = _day(start), _day(end)
    c = (p.c_close >= first) & (p.c_close <= last)
    o = (p.o_close >= first) & (p.o_close <= last)
    e = (p.e_day >= first) & (p.e_day <= last)
    r = (p.r_close >= first) & (p.r_close <= last)
    return {
        **_closed_parts(p, c),
        # Open deals without an ARR, or outside the category, add 0: left out of the mask.
        "open_arr": Part(p.o_rows, p.o_owner, o & p.o_has_arr, p.o_arr),
        "weighted": Part(p.o_rows, p.o_owner, o & p.o_has_arr, p.o_weighted),
        "commit_open": Part(p.o_rows, p.o_owner, o & p.o_has_arr & p.o_is_commit, p.o_commit),
        "best_open": Part(p.o_rows, p.o_owner, o & p.o_has_arr & p.o_is_best, p.o_best),
        "entry_closed": Part(p.e_rows, p.e_owner, e),
        "entry_won": Part(p.e_rows, p.e_owner, e & p.e_won),
        "eligible": Part(p.r_rows, p.r_owner, r),
        "kept": Part(p.r_rows, p.r_owner, r & p.r_kept),
    }


def trailing_parts(p: Prepared) -> dict[str, Part]:
    """Pipeline velocity's parts: deals closed in the trailing window ending at as_of, and the
    open qualified deals at as_of."""
    window = p.c_close >= p.as_of - p.settings.trailing_window_days + 1
    rows = np.arange(len(p.deals))
    return {
        **_closed_parts(p, window),
        "open_qualified": Part(rows, p.deals.owner, p.open_qualified),
    }


def _closed_parts(p: Prepared, m: np.ndarray) -> dict[str, Part]:
    """The parts over the deals closed to date where ``m`` holds (a period, a window)."""
    rows, owner = p.c_rows, p.c_owner
    return {
        "won": Part(rows, owner, m & p.c_won),
        "lost": Part(rows, owner, m & ~p.c_won),
        # Deals adding 0 (lost, not credited, no ARR) are left out of the mask: the same sum.
        "bookings": Part(rows, owner, m & p.c_credited, p.c_bookings),
        "credited": Part(rows, owner, m & p.c_credited),
        "cycle_sum": Part(rows, owner, m & p.c_cycle_ok, p.c_cycle),
        "cycle_n": Part(rows, owner, m & p.c_cycle_ok),
    }


def quota_shares(p: Prepared, quotas: Quotas, period: Period) -> tuple[np.ndarray, np.ndarray]:
    """Per quota row: the part of its amount that falls in ``period``, and whether it overlaps
    the period at all. A rep's quota for the period is the sum of its rows' shares.

    A row's amount is spread over its span by :func:`_month_position` (evenly per month, by
    days inside a month); with ramp proration, the part before the rep's start date is
    dropped."""
    start, end = _day(period.start), _day(period.end)
    q_start, q_end = _days(quotas.start), _days(quotas.end)
    low = np.maximum(q_start, start)
    high = np.minimum(q_end, end)
    overlap = high >= low
    if p.settings.ramp_prorate:
        rep_start = p.reps.start[quotas.rep]
        low = np.where(np.isnat(rep_start), low, np.maximum(low, _days(rep_start)))
    part = np.maximum(_month_position(high + 1) - _month_position(low), 0.0)
    whole = _month_position(q_end + 1) - _month_position(q_start)
    return quotas.amount * part / whole, overlap


@dataclass
class _Reasons:
    """Reason codes of one KPI over all subjects (None where the value is not empty)."""

    codes: np.ndarray

    @classmethod
    def new(cls, n: int) -> _Reasons:
        return cls(np.full(n, None, dtype=object))

    def where(self, mask: np.ndarray, code: str) -> _Reasons:
        """Set ``code`` where ``mask`` holds and no earlier (more basic) reason is set."""
        # Element-wise ``is None`` on an object array; numpy's stubs reject None as an operand.
        self.codes[mask & np.equal(self.codes, None)] = code  # type: ignore[call-overload]
        return self


class PeriodTable:
    """All KPIs of one period for every subject: reps, then teams, then the org."""

    def __init__(
        self,
        p: Prepared,
        quotas: Quotas,
        settings: Settings,
        period: Period,
        as_of: dt.date,
        stored: dict[tuple[str, str, str], float],
    ) -> None:
        self.p = p
        self.period = period
        self.as_of = as_of
        self.is_current = period.contains(as_of)
        self.settings = settings
        reps: list[Scope] = ["rep"] * p.n_reps
        teams: list[Scope] = ["team"] * len(p.team_names)
        self.scopes: list[Scope] = [*reps, *teams, "org"]
        self.subjects: list[str] = [*p.reps.id.tolist(), *p.team_names, "org"]
        self.values: dict[str, np.ndarray] = {}
        self.reasons: dict[str, np.ndarray] = {}
        self._compute(quotas, stored)

    # -- sums per rep, stacked with teams and org ---------------------------------------------

    def _compute(self, quotas: Quotas, stored: dict[tuple[str, str, str], float]) -> None:
        p, r = self.p, self.p.n_reps
        start, end = _day(self.period.start), _day(self.period.end)
        n = len(self.subjects)

        parts = period_parts(p, self.period.start, self.period.end)
        total = {name: p.stack(part.totals(r)) for name, part in parts.items()}
        won, lost, bookings, credited = (total[k] for k in ("won", "lost", "bookings", "credited"))
        cycle_sum, cycle_n = total["cycle_sum"], total["cycle_n"]
        cycled = parts["cycle_n"].mask
        cycle_median = p.medians(p.c_owner[cycled], p.c_cycle[cycled])
        open_arr, weighted = total["open_arr"], total["weighted"]
        commit_open, best_open = total["commit_open"], total["best_open"]
        entry_closed, entry_won = total["entry_closed"], total["entry_won"]
        eligible, kept = total["eligible"], total["kept"]

        start, end = _day(self.period.start), _day(self.period.end)
        m = (p.a_day >= start) & (p.a_day <= end)
        demos = p.stack(_count(p.a_owner, r, m))

        rep_quota, rep_has_quota = self._quotas(quotas)
        quota = p.stack(rep_quota)
        has_quota = p.stack(rep_has_quota.astype(_F)) > 0

        v, why = self.values, self.reasons
        for key in KPI_KEYS:
            why[key] = _Reasons.new(n).codes

        v["bookings_arr"] = bookings
        v["bookings_mrr"] = bookings / 12.0
        v["deals_won"] = won
        v["deals_lost"] = lost
        v["win_rate"] = _ratio(won, won + lost)
        _Reasons(why["win_rate"]).where(won + lost == 0, "no_closed_deal")
        v["avg_deal_size"] = _ratio(bookings, credited)
        _Reasons(why["avg_deal_size"]).where(won == 0, "no_won_deal").where(
            credited == 0, "no_credited_won_deal_with_arr"
        )
        v["sales_cycle_days"] = _ratio(cycle_sum, cycle_n)
        v["sales_cycle_days_median"] = np.where(cycle_n > 0, cycle_median, np.nan)
        for key in ("sales_cycle_days", "sales_cycle_days_median"):
            _Reasons(why[key]).where(won == 0, "no_won_deal").where(cycle_n == 0, "no_cycle_data")

        v["quota"] = np.where(has_quota, quota, np.nan)
        _Reasons(why["quota"]).where(~has_quota, "no_quota")
        v["quota_attainment"] = np.where(has_quota, _ratio(bookings, quota), np.nan)
        _Reasons(why["quota_attainment"]).where(~has_quota, "no_quota").where(
            quota <= 0, "quota_zero"
        )
        remaining = np.maximum(quota - bookings, 0.0)
        v["quota_remaining"] = np.where(has_quota, remaining, np.nan)
        _Reasons(why["quota_remaining"]).where(~has_quota, "no_quota")

        v["open_pipeline_arr"] = open_arr
        v["weighted_pipeline_arr"] = weighted
        v["pipeline_coverage"] = np.where(has_quota, _ratio(open_arr, remaining), np.nan)
        _Reasons(why["pipeline_coverage"]).where(~has_quota, "no_quota").where(
            remaining <= 0, "nothing_remaining"
        )
        v["forecast_commit_arr"] = bookings + commit_open
        v["forecast_best_case_arr"] = bookings + commit_open + best_open

        v["conversion_rate"] = _ratio(entry_won, entry_closed)
        _Reasons(why["conversion_rate"]).where(entry_closed == 0, "no_closed_entry_deal")

        if p.demos_mapped:
            v["demos_per_week"] = demos / elapsed_weeks(self.period, self.as_of)
        else:
            v["demos_per_week"] = np.full(n, np.nan)
            why["demos_per_week"][:] = "no_activity_mapping"

        self._velocity()

        if self.settings.churn_signal:
            v["retention_90d"] = _ratio(kept, eligible)
            _Reasons(why["retention_90d"]).where(eligible == 0, "no_eligible_customer")
        else:
            v["retention_90d"] = np.full(n, np.nan)
            why["retention_90d"][:] = "no_churn_signal"

        self._forecast_accuracy(stored)
        self._variable_pay(has_quota)

    def _quotas(self, quotas: Quotas) -> tuple[np.ndarray, np.ndarray]:
        """Per rep: the quota for the period and whether any quota row overlaps it."""
        share, overlap = quota_shares(self.p, quotas, self.period)
        r = self.p.n_reps
        amount = _sum(quotas.rep, share, r, overlap)
        has = np.bincount(quotas.rep[overlap], minlength=r) > 0
        return amount, has

    def _velocity(self) -> None:
        p, v = self.p, self.values
        why = _Reasons(self.reasons["pipeline_velocity_per_day"])
        t = {key: p.stack(value) for key, value in p.trailing.items()}
        win_rate = _ratio(t["won"], t["won"] + t["lost"])
        deal_size = _ratio(t["bookings"], t["credited"])
        cycle = _ratio(t["cycle_sum"], t["cycle_n"])
        velocity = np.full(len(cycle), np.nan)
        ok = ~np.isnan(win_rate) & ~np.isnan(deal_size) & (cycle > 0)
        velocity[ok] = t["open_qualified"][ok] * win_rate[ok] * deal_size[ok] / cycle[ok]
        if not self.is_current:
            velocity[:] = np.nan
            why.where(np.ones(len(cycle), bool), "not_current_period")
        why.where(np.isnan(win_rate), "no_trailing_closed_deal")
        why.where(np.isnan(deal_size), "no_trailing_won_deal")
        why.where(np.isnan(cycle), "no_trailing_cycle")
        why.where(cycle == 0, "cycle_zero")
        v["pipeline_velocity_per_day"] = velocity

    def _forecast_accuracy(self, stored: dict[tuple[str, str, str], float]) -> None:
        n = len(self.subjects)
        key = self.period.key
        snapshot = np.array(
            [
                stored.get((scope, subject, key), np.nan)
                for scope, subject in zip(self.scopes, self.subjects, strict=True)
            ],
            dtype=_F,
        )
        bookings = self.values["bookings_arr"]
        accuracy = np.maximum(1.0 - _ratio(np.abs(snapshot - bookings), bookings), 0.0)
        ended = self.as_of > self.period.end
        self.values["forecast_accuracy"] = accuracy if ended else np.full(n, np.nan)
        _Reasons(self.reasons["forecast_accuracy"]).where(
            np.full(n, not ended), "period_not_ended"
        ).where(np.isnan(snapshot), "no_snapshot").where(bookings <= 0, "no_bookings")
        self.snapshot = snapshot

    def _variable_pay(self, has_quota: np.ndarray) -> None:
        p, r = self.p, self.p.n_reps
        target = p.variable_targets() * (self.period.months / 12.0)
        attainment = self.values["quota_attainment"][:r]
        pay = target * self.settings.payout.payout(attainment)  # NaN where either is empty
        has_pay = ~np.isnan(pay)
        total = p.stack(np.where(has_pay, pay, 0.0))
        count = p.stack(has_pay.astype(_F))
        self.values["variable_pay_estimate"] = np.where(count > 0, total, np.nan)
        why = _Reasons(self.reasons["variable_pay_estimate"])
        rep = np.zeros(len(total), bool)
        rep[:r] = True
        why.where(rep & ~has_quota, "no_quota")
        why.where(
            rep & np.concatenate((np.isnan(target), np.zeros(len(total) - r, bool))),
            "no_variable_target",
        )
        why.where(rep & (count == 0), "quota_zero")
        why.where(count == 0, "no_rep_estimate")

    # -- output --------------------------------------------------------------------------------

    def rows(self) -> list[KpiRow]:
        columns: dict[str, list[float | int | None]] = {}
        for key in KPI_KEYS:
            values = self.values[key].tolist()
            if key in COUNT_KPIS:
                columns[key] = [int(x) for x in values]
            else:
                columns[key] = [None if x != x else x for x in values]
        reasons = {key: self.reasons[key].tolist() for key in KPI_KEYS}
        period = self.period
        out = []
        for i, (scope, subject) in enumerate(zip(self.scopes, self.subjects, strict=True)):
            out.append(
                KpiRow(
                    scope=scope,
                    subject=subject,
                    period_kind=period.kind,
                    period_key=period.key,
                    start=period.start,
                    end=period.end,
                    is_current=self.is_current,
                    values={key: columns[key][i] for key in KPI_KEYS},
                    empty_reasons={
                        key: reasons[key][i]
                        for key in KPI_KEYS
                        if columns[key][i] is None and reasons[key][i] is not None
                    },
                    rep_index=i if scope == "rep" else None,
                )
            )
        return out

    def new_snapshots(self) -> list[tuple[str, str, str, float, dt.date]]:
        """The current commit forecast of every subject without a stored snapshot, once the
        period's snapshot day is reached and while the period runs."""
        period = self.period
        if not snapshot_date(period, self.settings.snapshot_day) <= self.as_of <= period.end:
            return []
        commit = self.values["forecast_commit_arr"].tolist()
        missing = np.isnan(self.snapshot).tolist()
        return [
            (scope, subject, period.key, commit[i], self.as_of)
            for i, (scope, subject) in enumerate(zip(self.scopes, self.subjects, strict=True))
            if missing[i]
        ]
