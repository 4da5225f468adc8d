"""The KPI engine's input: columnar numpy frames, one array per column.

The sync layer builds these from the canonical model; the engine never sees a CRM name, a
pydantic model or a timezone. Conventions shared by every frame:

- One row per record; every column of a frame has the same length.
- Dates are ``datetime64[D]``: calendar dates in the fiscal timezone (the sync layer converts
  instants to local dates). ``NaT`` means unknown/none.
- Money is ``float64`` in the reporting currency; ``NaN`` means missing or unconvertible.
- References between frames are ``int32`` row indexes (a deal's ``owner`` is a row of
  :class:`Reps`); ``-1`` means none where a column allows it.
- Optional columns may be omitted (``None``): each documents its default, so a test can build a
  frame from the few columns it cares about. The sync layer passes every column explicitly.
- Frames are validated on construction (lengths, dtypes, ranges) with a ``ValueError`` naming
  the frame and column; cross-frame indexes are checked by :func:`..engine.compute`.

Bad data is not a column: the engine derives it from the values themselves (NaN ARR, NaT close
date, unknown stage...). :meth:`Deals.exclusions` returns the per-deal bitmask of
:data:`EXCLUSIONS` so the run report can list every excluded deal with its reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from .calendar import PERIOD_KINDS, PeriodKind

__all__ = [
    "EXCLUDED_CLOSE_BEFORE_CYCLE_START",
    "EXCLUDED_NO_ARR",
    "EXCLUDED_NO_CLOSE_DATE",
    "EXCLUDED_NO_CYCLE_START",
    "EXCLUDED_UNKNOWN_STAGE",
    "EXCLUSIONS",
    "FORECAST_BEST_CASE",
    "FORECAST_CATEGORIES",
    "FORECAST_CLOSED",
    "FORECAST_COMMIT",
    "FORECAST_OMITTED",
    "FORECAST_PIPELINE",
    "Accounts",
    "Activities",
    "Deals",
    "PayoutCurve",
    "Quotas",
    "Reps",
    "Settings",
    "Snapshots",
]

#: Values of ``Deals.forecast`` (an index into this tuple).
FORECAST_CATEGORIES: tuple[str, ...] = ("pipeline", "best_case", "commit", "closed", "omitted")
FORECAST_PIPELINE, FORECAST_BEST_CASE, FORECAST_COMMIT, FORECAST_CLOSED, FORECAST_OMITTED = range(5)

#: Bits of :meth:`Deals.exclusions`.
EXCLUDED_NO_ARR = 1
EXCLUDED_NO_CLOSE_DATE = 2
EXCLUDED_UNKNOWN_STAGE = 4
EXCLUDED_NO_CYCLE_START = 8
EXCLUDED_CLOSE_BEFORE_CYCLE_START = 16
#: Bit -> (reason code, what the deal is left out of). Written for the run report.
EXCLUSIONS: dict[int, tuple[str, str]] = {
    EXCLUDED_NO_ARR: (
        "no_arr",
        "no amount, or an amount that could not be converted: left out of every ARR sum"
        " (bookings, average deal size, pipeline, forecasts); still counted in deal counts,"
        " win rate, sales cycle, conversion and retention",
    ),
    EXCLUDED_NO_CLOSE_DATE: (
        "no_close_date",
        "no close date: left out of every KPI tied to a close date (bookings, deals won/lost,"
        " win rate, average deal size, sales cycle, pipeline, forecasts, retention, the"
        " velocity rates) and of deal_age_days when closed; still in conversion and in the"
        " open qualified deal count",
    ),
    EXCLUDED_UNKNOWN_STAGE: (
        "unknown_stage",
        "stage not in the mapping: won, lost or open is unknown, so left out of every rep,"
        " team and org KPI; deal_age_days and days_in_stage are empty",
    ),
    EXCLUDED_NO_CYCLE_START: (
        "no_cycle_start",
        "won without ever entering the cycle-start stage: left out of sales_cycle_days and its"
        " median (own period and velocity's trailing window)",
    ),
    EXCLUDED_CLOSE_BEFORE_CYCLE_START: (
        "close_before_cycle_start",
        "closed before its cycle start (or creation) date: left out of sales_cycle_days and its"
        " median, and deal_age_days is empty",
    ),
}

_NAT = np.datetime64("NaT", "D")


# ---------------------------------------------------------------------------------------------
# Column coercion


def _length(frame: str, name: str, values: np.ndarray, n: int) -> np.ndarray:
    if values.ndim != 1:
        raise ValueError(f"{frame}.{name}: expected a 1-d column, got shape {values.shape}")
    if len(values) != n:
        raise ValueError(f"{frame}.{name}: {len(values)} rows, expected {n}")
    return values


def _dates(frame: str, name: str, values: Any, n: int) -> np.ndarray:
    try:
        out = np.asarray(values, dtype="datetime64[D]")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{frame}.{name}: not calendar dates ({exc})") from None
    return _length(frame, name, out, n)


def _ints(frame: str, name: str, values: Any, n: int, dtype: str) -> np.ndarray:
    raw = np.asarray(values)
    whole = raw.dtype == bool or np.issubdtype(raw.dtype, np.integer)
    if (
        raw.size
        and not whole
        and not (np.issubdtype(raw.dtype, np.floating) and np.all(raw == np.floor(raw)))
    ):
        raise ValueError(f"{frame}.{name}: expected integers, got {raw.dtype}")
    info = np.iinfo(dtype)
    if raw.size and (raw.min() < info.min or raw.max() > info.max):
        raise ValueError(f"{frame}.{name}: values outside the {dtype} range")
    return _length(frame, name, raw.astype(dtype), n)


def _bools(frame: str, name: str, values: Any, n: int) -> np.ndarray:
    raw = np.asarray(values)
    if raw.size and raw.dtype != bool:
        raise ValueError(f"{frame}.{name}: expected booleans, got {raw.dtype}")
    return _length(frame, name, raw.astype(bool), n)


def _floats(frame: str, name: str, values: Any, n: int) -> np.ndarray:
    try:
        raw = np.asarray(
            [np.nan if v is None else v for v in values]
            if isinstance(values, list | tuple)
            else values,
            dtype=np.float64,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{frame}.{name}: not numbers ({exc})") from None
    if np.isinf(raw).any():
        raise ValueError(f"{frame}.{name}: infinite values")
    return _length(frame, name, raw, n)


def _objects(frame: str, name: str, values: Any, n: int) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == object and values.ndim == 1:
        return _length(frame, name, values.copy(), n)  # a million ids: no list in between
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return _length(frame, name, out, n)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


class _Frame:
    """Shared helpers: ``len()`` and ``take()`` (a row subset/permutation, same columns)."""

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))  # type: ignore[arg-type]

    def take(self, rows: Any) -> Any:
        """A new frame of the given rows (indexes or a boolean mask), in that order."""
        changes = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            changes[f.name] = value[rows] if isinstance(value, np.ndarray) else value
        return type(self)(**changes)


# ---------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True, eq=False)
class Reps(_Frame):
    """Reps (CRM users who may own deals), one row each; deals and quotas point at rows.

    ============== ================= =======================================================
    column         dtype             meaning
    ============== ================= =======================================================
    id             object (str)      CRM user id; the subject of the rep's result rows
    email          object (str)      lower-case email ("" if unknown); keys variable targets
    name           object (str)      display name (default: the id)
    team           object (str|None) team name; None = in no team (counted in the org only)
    is_ae          bool              whether the user is an AE (default True); carried for
                                     the writer, the engine treats every rep alike
    start          datetime64[D]     first working day, for ramp quotas; NaT = unknown
    is_unassigned  bool              the synthetic "unassigned" rep (at most one) owning the
                                     deals and activities whose owner is not a known rep
    ============== ================= =======================================================
    """

    id: Any
    email: Any = None
    name: Any = None
    team: Any = None
    is_ae: Any = None
    start: Any = None
    is_unassigned: Any = None

    def __post_init__(self) -> None:
        n = len(self.id)
        _set(self, "id", _objects("Reps", "id", self.id, n))
        if len(set(self.id.tolist())) != n:
            raise ValueError("Reps.id: ids must be unique")
        for name, default in (("email", ""), ("name", None), ("team", None)):
            value = getattr(self, name)
            if value is None:
                value = self.id.copy() if name == "name" else [default] * n
            _set(self, name, _objects("Reps", name, value, n))
        if any(t is not None and not isinstance(t, str) for t in self.team.tolist()):
            raise ValueError("Reps.team: expected a team name (str) or None")
        _set(self, "is_ae", _bools("Reps", "is_ae", _or(self.is_ae, np.ones(n, bool)), n))
        _set(self, "start", _dates("Reps", "start", _or(self.start, np.full(n, _NAT)), n))
        flag = _bools("Reps", "is_unassigned", _or(self.is_unassigned, np.zeros(n, bool)), n)
        if flag.sum() > 1:
            raise ValueError("Reps.is_unassigned: at most one unassigned rep")
        if any(team is not None for team in self.team[flag].tolist()):
            raise ValueError("Reps.team: the unassigned rep is in no team (None)")
        _set(self, "is_unassigned", flag)


@dataclass(frozen=True, eq=False)
class Deals(_Frame):
    """Live deals (deleted/archived ones are never passed), one row each.

    ============== ============= ===========================================================
    column         dtype         meaning (default when the column is omitted)
    ============== ============= ===========================================================
    id             object (str)  CRM deal id
    owner          int32         row of Reps (the unassigned rep for an unknown owner)
    created        datetime64[D] created date; never NaT
    close          datetime64[D] close date; NaT = missing (bad data)
    is_won         bool          current stage is a won stage
    is_lost        bool          current stage is a lost stage (open = neither)
    arr            float64       ARR in the reporting currency; NaN = no amount or not
                                 convertible (bad data)
    account        int32         row of Accounts; -1 = none (default -1)
    cycle_start    datetime64[D] start of the sales cycle: the created date, or the first
                                 entry into the configured cycle-start stage; NaT = that
                                 stage was never entered (default: created)
    stage_known    bool          the current stage is in the mapping; False = unknown stage,
                                 is_won/is_lost meaningless (default True)
    credited       bool          the deal type counts towards quota (default True)
    is_renewal     bool          the deal type is a renewal (default False)
    forecast       int8          index into FORECAST_CATEGORIES (default 0, pipeline)
    probability    float64       win probability 0..1, the stage default already resolved
                                 by the sync layer; NaN = unknown (default NaN)
    qualified      bool          current stage is at or past the qualified stage (default
                                 False)
    entered_entry  datetime64[D] first entry into the conversion entry stage (demo); NaT =
                                 never. For CRMs without stage history the sync layer has
                                 already applied "a won deal passed every earlier stage" by
                                 setting it; the engine takes it as given (default NaT)
    stage_entered  datetime64[D] entry into the current stage; NaT = unknown, read as the
                                 created date (default: created)
    slips          int32         times the close date was moved later; 0 without field
                                 history (default 0)
    ============== ============= ===========================================================
    """

    id: Any
    owner: Any
    created: Any
    close: Any
    is_won: Any
    is_lost: Any
    arr: Any
    account: Any = None
    cycle_start: Any = None
    stage_known: Any = None
    credited: Any = None
    is_renewal: Any = None
    forecast: Any = None
    probability: Any = None
    qualified: Any = None
    entered_entry: Any = None
    stage_entered: Any = None
    slips: Any = None

    def __post_init__(self) -> None:
        n = len(self.id)
        f = "Deals"
        _set(self, "id", _objects(f, "id", self.id, n))
        _set(self, "owner", _ints(f, "owner", self.owner, n, "int32"))
        _set(self, "created", _dates(f, "created", self.created, n))
        _set(self, "close", _dates(f, "close", self.close, n))
        _set(self, "is_won", _bools(f, "is_won", self.is_won, n))
        _set(self, "is_lost", _bools(f, "is_lost", self.is_lost, n))
        _set(self, "arr", _floats(f, "arr", self.arr, n))
        _set(self, "account", _ints(f, "account", _or(self.account, np.full(n, -1)), n, "int32"))
        _set(self, "cycle_start", _dates(f, "cycle_start", _or(self.cycle_start, self.created), n))
        known = _or(self.stage_known, np.ones(n, bool))
        _set(self, "stage_known", _bools(f, "stage_known", known, n))
        _set(self, "credited", _bools(f, "credited", _or(self.credited, np.ones(n, bool)), n))
        renewal = _or(self.is_renewal, np.zeros(n, bool))
        _set(self, "is_renewal", _bools(f, "is_renewal", renewal, n))
        _set(self, "forecast", _ints(f, "forecast", _or(self.forecast, np.zeros(n)), n, "int8"))
        prob = _or(self.probability, np.full(n, np.nan))
        _set(self, "probability", _floats(f, "probability", prob, n))
        _set(self, "qualified", _bools(f, "qualified", _or(self.qualified, np.zeros(n, bool)), n))
        entry = _or(self.entered_entry, np.full(n, _NAT))
        _set(self, "entered_entry", _dates(f, "entered_entry", entry, n))
        entered = _or(self.stage_entered, self.created)
        _set(self, "stage_entered", _dates(f, "stage_entered", entered, n))
        _set(self, "slips", _ints(f, "slips", _or(self.slips, np.zeros(n)), n, "int32"))
        self._check()

    def _check(self) -> None:
        if np.isnat(self.created).any():
            raise ValueError("Deals.created: every deal has a created date (NaT found)")
        if (self.owner < 0).any():
            raise ValueError("Deals.owner: a row of Reps (the unassigned rep for no owner)")
        if (self.account < -1).any():
            raise ValueError("Deals.account: a row of Accounts, or -1 for none")
        if (self.is_won & self.is_lost).any():
            raise ValueError("Deals: a deal cannot be both won and lost")
        if (self.arr < 0).any():
            raise ValueError("Deals.arr: ARR is never negative")
        if ((self.probability < 0) | (self.probability > 1)).any():
            raise ValueError("Deals.probability: a fraction 0..1 (or NaN when unknown)")
        if ((self.forecast < 0) | (self.forecast >= len(FORECAST_CATEGORIES))).any():
            raise ValueError(f"Deals.forecast: an index into {FORECAST_CATEGORIES}")
        if (self.slips < 0).any():
            raise ValueError("Deals.slips: a count, never negative")

    def exclusions(self) -> np.ndarray:
        """Per deal, the OR of the :data:`EXCLUSIONS` bits that apply (0 = clean). A bit
        says which KPIs the deal cannot feed; it is never dropped from the others."""
        out = np.zeros(len(self), dtype=np.uint8)
        out[np.isnan(self.arr)] |= EXCLUDED_NO_ARR
        out[np.isnat(self.close)] |= EXCLUDED_NO_CLOSE_DATE
        out[~self.stage_known] |= EXCLUDED_UNKNOWN_STAGE
        won = self.is_won & self.stage_known
        out[won & np.isnat(self.cycle_start)] |= EXCLUDED_NO_CYCLE_START
        closed = (self.is_won | self.is_lost) & self.stage_known
        # NaT compares False, so only two known dates in the wrong order are flagged.
        backwards = closed & (
            (self.close < self.created) | (self.is_won & (self.close < self.cycle_start))
        )
        out[backwards] |= EXCLUDED_CLOSE_BEFORE_CYCLE_START
        return out


@dataclass(frozen=True, eq=False)
class Quotas(_Frame):
    """Quota rows: a rep's quota for one span of days, in the reporting currency.

    ====== ============= ==================================================================
    rep    int32         row of Reps
    start  datetime64[D] first day
    end    datetime64[D] last day (inclusive)
    amount float64       quota for the whole span, >= 0
    ====== ============= ==================================================================

    A rep's rows should not overlap (the sync layer keeps one source per rep and period);
    overlapping rows add up. How a row is split onto shorter periods: see the engine's notes.
    """

    rep: Any
    start: Any
    end: Any
    amount: Any

    def __post_init__(self) -> None:
        n = len(self.rep)
        _set(self, "rep", _ints("Quotas", "rep", self.rep, n, "int32"))
        _set(self, "start", _dates("Quotas", "start", self.start, n))
        _set(self, "end", _dates("Quotas", "end", self.end, n))
        _set(self, "amount", _floats("Quotas", "amount", self.amount, n))
        if (self.rep < 0).any():
            raise ValueError("Quotas.rep: a row of Reps")
        if (np.isnat(self.start) | np.isnat(self.end)).any():
            raise ValueError("Quotas.start/end: every quota has both dates")
        if (self.end < self.start).any():
            raise ValueError("Quotas.end: before start (end is the last day, inclusive)")
        if (np.isnan(self.amount) | (self.amount < 0)).any():
            raise ValueError("Quotas.amount: a number >= 0")

    @classmethod
    def empty(cls) -> Quotas:
        return cls(rep=[], start=[], end=[], amount=[])


@dataclass(frozen=True, eq=False)
class Activities(_Frame):
    """Activities owned by reps (only demos matter today).

    ============ ============= ============================================================
    owner        int32         row of Reps (the unassigned rep for an unknown owner)
    day          datetime64[D] the activity's date
    is_demo      bool          the mapping recognises it as a demo (default True)
    ============ ============= ============================================================

    ``demos_mapped`` (not a column): whether demo activities are mapped at all. When False,
    demos_per_week is empty (reason ``no_activity_mapping``) instead of 0.
    """

    owner: Any
    day: Any
    is_demo: Any = None
    demos_mapped: bool = True

    def __post_init__(self) -> None:
        n = len(self.owner)
        _set(self, "owner", _ints("Activities", "owner", self.owner, n, "int32"))
        _set(self, "day", _dates("Activities", "day", self.day, n))
        demo = _or(self.is_demo, np.ones(n, bool))
        _set(self, "is_demo", _bools("Activities", "is_demo", demo, n))
        if (self.owner < 0).any():
            raise ValueError("Activities.owner: a row of Reps")
        if np.isnat(self.day).any():
            raise ValueError("Activities.day: every activity has a date")

    @classmethod
    def unmapped(cls) -> Activities:
        """No activity data: demos_per_week is empty everywhere."""
        return cls(owner=[], day=[], demos_mapped=False)


@dataclass(frozen=True, eq=False)
class Accounts(_Frame):
    """Accounts; deals point at rows.

    ===== ============= ===================================================================
    churn datetime64[D] the day the customer churned (mapped churn-date field); NaT = never
                        or unmapped
    ===== ============= ===================================================================
    """

    churn: Any

    def __post_init__(self) -> None:
        _set(self, "churn", _dates("Accounts", "churn", self.churn, len(self.churn)))

    @classmethod
    def empty(cls) -> Accounts:
        return cls(churn=[])


@dataclass(frozen=True, eq=False)
class Snapshots(_Frame):
    """Stored commit forecasts (forecast_accuracy), one per subject and period.

    ======== ============= ================================================================
    scope    object (str)  "rep", "team" or "org"
    subject  object (str)  rep id, team name or "org" (as in the result rows)
    period   object (str)  period key, e.g. 2026-Q3 (keys are unique across kinds)
    commit   float64       forecast_commit_arr when the snapshot was taken
    taken    datetime64[D] the as_of date of the run that took it
    ======== ============= ================================================================
    """

    scope: Any
    subject: Any
    period: Any
    commit: Any
    taken: Any

    def __post_init__(self) -> None:
        n = len(self.scope)
        for name in ("scope", "subject", "period"):
            _set(self, name, _objects("Snapshots", name, getattr(self, name), n))
        _set(self, "commit", _floats("Snapshots", "commit", self.commit, n))
        _set(self, "taken", _dates("Snapshots", "taken", self.taken, n))
        bad = set(self.scope.tolist()) - {"rep", "team", "org"}
        if bad:
            raise ValueError(f"Snapshots.scope: expected rep, team or org, not {sorted(bad)}")

    @classmethod
    def empty(cls) -> Snapshots:
        return cls(scope=[], subject=[], period=[], commit=[], taken=[])

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, str, str, float, dt.date]]) -> Snapshots:
        """From ``(scope, subject, period, commit, taken)`` tuples."""
        columns: list[Sequence[Any]] = (
            list(zip(*rows, strict=True)) if rows else [[], [], [], [], []]
        )
        return cls(*columns)

    def rows(self) -> list[tuple[str, str, str, float, dt.date]]:
        return list(
            zip(
                self.scope.tolist(),
                self.subject.tolist(),
                self.period.tolist(),
                self.commit.tolist(),
                self.taken.tolist(),
                strict=True,
            )
        )


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class PayoutCurve:
    """payout(attainment), a multiple of the variable target: ``attainment`` up to
    ``accelerator_from``, then ``accelerator`` x the attainment above it, at most ``cap``."""

    accelerator_from: float = 1.0
    accelerator: float = 1.5
    cap: float = 2.0

    def __post_init__(self) -> None:
        if self.accelerator_from <= 0 or self.accelerator < 0 or self.cap < self.accelerator_from:
            raise ValueError("PayoutCurve: need accelerator_from > 0, accelerator >= 0, cap >= it")

    def payout(self, attainment: np.ndarray) -> np.ndarray:
        above = self.accelerator_from + self.accelerator * (attainment - self.accelerator_from)
        linear = np.where(attainment <= self.accelerator_from, attainment, above)
        return np.minimum(linear, self.cap)


@dataclass(frozen=True)
class Settings:
    """Everything the engine needs from the config, as plain values.

    - ``year_start_month``, ``year_named_by``: the fiscal calendar (see calendar.py).
    - ``periods``: period kinds to compute, a subset of month/quarter/year.
    - ``offsets``: which periods of each kind, relative to the one containing as_of
      (0 = current, -1 = previous, 1 = next). Default: current and previous.
    - ``snapshot_day``: day of each period (1-based from its start) from which its commit
      forecast is stored.
    - ``trailing_window_days``: pipeline velocity's window ending at as_of.
    - ``ramp_prorate``: prorate the quota of a rep who started inside a quota's span.
    - ``variable_target``: default variable pay target per rep and YEAR; ``variable_targets``
      per rep email (lower case), overriding it; ``payout``: the curve.
    - ``churn_signal``: a churn-date field or renewal deal type is mapped (retention_90d is
      empty otherwise).
    - ``deal_period``: period kind of the per-deal ``owner_quota_attainment`` (the current one).
    - ``pipeline_credited_only``: count only quota-credited deal types in open pipeline,
      weighted pipeline and the open part of the forecasts. Default False: KPIS.md counts every
      open deal there.

    Team membership is the ``team`` column of :class:`Reps` (one team per rep, as the config's
    ``teams`` section and a mapped team field both give it).
    """

    year_start_month: int = 1
    year_named_by: Literal["start", "end"] = "start"
    periods: tuple[PeriodKind, ...] = PERIOD_KINDS
    offsets: tuple[int, ...] = (0, -1)
    snapshot_day: int = 15
    trailing_window_days: int = 180
    ramp_prorate: bool = False
    variable_target: float | None = None
    variable_targets: Mapping[str, float] = field(default_factory=dict)
    payout: PayoutCurve = field(default_factory=PayoutCurve)
    churn_signal: bool = False
    deal_period: PeriodKind = "quarter"
    pipeline_credited_only: bool = False

    def __post_init__(self) -> None:
        _set(self, "periods", tuple(self.periods))
        _set(self, "offsets", tuple(self.offsets))
        unknown = [k for k in (*self.periods, self.deal_period) if k not in PERIOD_KINDS]
        if unknown or not self.periods or len(set(self.periods)) != len(self.periods):
            raise ValueError(f"Settings.periods: distinct kinds among {PERIOD_KINDS}")
        if not self.offsets or len(set(self.offsets)) != len(self.offsets):
            raise ValueError("Settings.offsets: distinct integers, e.g. (0, -1)")
        if not 1 <= self.snapshot_day <= 28:
            raise ValueError("Settings.snapshot_day: 1..28")
        if self.trailing_window_days < 1:
            raise ValueError("Settings.trailing_window_days: at least 1")
        targets = [self.variable_target, *self.variable_targets.values()]
        if any(t is not None and not (t >= 0 and np.isfinite(t)) for t in targets):
            raise ValueError("Settings.variable_target(s): amounts >= 0")
        _set(self, "variable_targets", {k.lower(): v for k, v in self.variable_targets.items()})


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
