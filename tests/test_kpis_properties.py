"""Invariants of the KPI engine on random frames (hypothesis).

- team sums are the sums of their reps; org sums the sums of every rep;
- every ratio on a team/org row is recomputed from the sums on that row;
- ratios stay in their bounds, values are finite, empties are None with a reason, never a
  division by zero (warnings are errors in this suite);
- results do not depend on the order of deals, reps, quotas or activities.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_kpi_worker.kpis import (
    ADDITIVE_KPIS,
    EMPTY_REASONS,
    KPI_KEYS,
    Accounts,
    Activities,
    Deals,
    Quotas,
    Reps,
    Results,
    Settings,
    Snapshots,
    compute,
)

BASE = dt.date(2025, 1, 1)
SPAN = 900  # days: 2025-01-01 .. 2027-06-19
TEAMS = ["east", "west", None]


def day(offset: int | None) -> dt.date | None:
    return None if offset is None else BASE + dt.timedelta(days=offset)


days = st.integers(0, SPAN)
maybe_day = st.none() | days
# Money in cents, as CRMs store it.
money = (
    st.none()
    | st.sampled_from([0.0, 1000.0, 15000.0])
    | st.integers(0, 10**8).map(lambda cents: cents / 100)
)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n_reps = draw(st.integers(1, 5))
    unassigned = draw(st.booleans())
    teams = draw(st.lists(st.sampled_from(TEAMS), min_size=n_reps, max_size=n_reps))
    reps = Reps(
        id=[f"r{i}" for i in range(n_reps)] + (["(unassigned)"] if unassigned else []),
        email=[f"r{i}@x.io" for i in range(n_reps)] + ([""] if unassigned else []),
        team=teams + ([None] if unassigned else []),
        start=[day(draw(maybe_day)) for _ in range(n_reps)] + ([None] if unassigned else []),
        is_unassigned=[False] * n_reps + ([True] if unassigned else []),
    )
    r = len(reps)
    n_accounts = draw(st.integers(0, 4))
    accounts = Accounts(churn=[day(draw(maybe_day)) for _ in range(n_accounts)])
    n = draw(st.integers(0, 25))
    rows = []
    for i in range(n):
        created = draw(days)
        status = draw(st.sampled_from(["won", "lost", "open"]))
        rows.append(
            {
                "id": f"d{i}",
                "owner": draw(st.integers(0, r - 1)),
                "created": day(created),
                "close": day(draw(st.none() | st.integers(created - 5, created + 200))),
                "is_won": status == "won",
                "is_lost": status == "lost",
                "arr": draw(money),
                "account": draw(st.integers(-1, n_accounts - 1)),
                "cycle_start": day(draw(st.none() | st.integers(created, created + 30))),
                "stage_known": draw(st.booleans() | st.just(True)),
                "credited": draw(st.booleans()),
                "is_renewal": draw(st.booleans()),
                "forecast": draw(st.integers(0, 4)),
                "probability": draw(st.none() | st.floats(0, 1)),
                "qualified": draw(st.booleans()),
                "entered_entry": day(draw(st.none() | st.integers(created, created + 60))),
                "stage_entered": day(draw(st.none() | st.integers(created, created + 90))),
                "slips": draw(st.integers(0, 3)),
            }
        )
    columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
    if not rows:
        columns = {k: [] for k in ("id", "owner", "created", "close", "is_won", "is_lost", "arr")}
    deals = Deals(**columns)
    n_quotas = draw(st.integers(0, 6))
    starts = [draw(days) for _ in range(n_quotas)]
    quotas = Quotas(
        rep=[draw(st.integers(0, r - 1)) for _ in range(n_quotas)],
        start=[day(s) for s in starts],
        end=[day(s + draw(st.integers(0, 200))) for s in starts],
        amount=[draw(st.sampled_from([0.0, 50000.0, 120000.0])) for _ in range(n_quotas)],
    )
    mapped = draw(st.booleans())
    n_activities = draw(st.integers(0, 15)) if mapped else 0
    activities = Activities(
        owner=[draw(st.integers(0, r - 1)) for _ in range(n_activities)],
        day=[day(draw(days)) for _ in range(n_activities)],
        is_demo=[draw(st.booleans()) for _ in range(n_activities)],
        demos_mapped=mapped,
    )
    as_of = day(draw(st.integers(60, SPAN)))
    assert as_of is not None
    subjects = [("rep", f"r{i}") for i in range(n_reps)]
    subjects += [("team", "east"), ("team", "west"), ("org", "org")]
    periods = ["2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4", "2026-Q1", "2026-Q2", "2026-Q3"]
    snapshot_rows = [
        (*draw(st.sampled_from(subjects)), draw(st.sampled_from(periods)), draw(money), as_of)
        for _ in range(draw(st.integers(0, 4)))
    ]
    snapshot_rows = [row for row in snapshot_rows if row[3] is not None]
    unique = {(s, subject, p): (s, subject, p, c, t) for s, subject, p, c, t in snapshot_rows}
    config = Settings(
        year_start_month=draw(st.integers(1, 12)),
        year_named_by=draw(st.sampled_from(["start", "end"])),
        offsets=(0, -1, draw(st.sampled_from([1, -2]))),
        snapshot_day=draw(st.integers(1, 28)),
        trailing_window_days=draw(st.integers(7, 400)),
        ramp_prorate=draw(st.booleans()),
        variable_target=draw(st.none() | st.just(40000.0)),
        variable_targets=draw(st.dictionaries(st.sampled_from(["r0@x.io", "r1@x.io"]), money.filter(lambda m: m is not None))),  # noqa: E501
        churn_signal=draw(st.booleans()),
        deal_period=draw(st.sampled_from(["month", "quarter", "year"])),
        pipeline_credited_only=draw(st.booleans()),
    )  # fmt: skip
    return {
        "deals": deals,
        "reps": reps,
        "quotas": quotas,
        "activities": activities,
        "accounts": accounts,
        "snapshots": Snapshots.from_rows(list(unique.values())),
        "settings": config,
        "as_of": as_of,
    }


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def by_key(results: Results) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r.scope, r.subject, r.period_key): r.values for r in results.rows}


def ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


# KPI_PROPERTY_EXAMPLES=5000 for a longer hunt.
PROPERTY = settings(
    max_examples=int(os.environ.get("KPI_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.slow
@PROPERTY
@given(scenarios())
def test_team_and_org_sums_and_recomputed_ratios(scenario: dict[str, Any]) -> None:
    results = compute(**scenario)
    reps: Reps = scenario["reps"]
    rows = by_key(results)
    for period in results.periods:
        rep_values = [rows[("rep", rid, period.key)] for rid in reps.id.tolist()]
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {("org", "org"): rep_values}
        for team in {t for t in reps.team.tolist() if t is not None}:
            members = [v for v, t in zip(rep_values, reps.team.tolist(), strict=True) if t == team]
            groups[("team", team)] = members
        for (scope, subject), members in groups.items():
            row = rows[(scope, subject, period.key)]
            for key in ADDITIVE_KPIS:
                present = [m[key] for m in members if m[key] is not None]
                expected = math.fsum(present) if present else None
                assert close(row[key], expected), (scope, subject, period.key, key)
            won, lost = row["deals_won"], row["deals_lost"]
            assert close(row["win_rate"], ratio(won, won + lost))
            quota = row["quota"]
            if quota is not None:
                remaining = max(quota - row["bookings_arr"], 0.0)
                assert close(row["quota_remaining"], remaining)
                assert close(row["quota_attainment"], ratio(row["bookings_arr"], quota))
                assert close(row["pipeline_coverage"], ratio(row["open_pipeline_arr"], remaining))
            assert close(row["bookings_mrr"], row["bookings_arr"] / 12)


@pytest.mark.slow
@PROPERTY
@given(scenarios())
def test_bounds_and_every_empty_explained(scenario: dict[str, Any]) -> None:
    results = compute(**scenario)
    for row in results.rows:
        assert list(row.values) == list(KPI_KEYS)
        for key, value in row.values.items():
            if value is None:
                assert row.empty_reasons.get(key) in EMPTY_REASONS, (key, row.empty_reasons)
                continue
            assert key not in row.empty_reasons
            assert isinstance(value, int if key in ("deals_won", "deals_lost") else float)
            assert math.isfinite(value) and value >= 0, (key, value)
        v = row.values
        for key in ("win_rate", "conversion_rate", "retention_90d", "forecast_accuracy"):
            assert v[key] is None or 0.0 <= v[key] <= 1.0, (key, v[key])
        assert v["forecast_best_case_arr"] >= v["forecast_commit_arr"] >= v["bookings_arr"]
        if v["sales_cycle_days"] is not None:
            assert v["sales_cycle_days_median"] is not None
        assert v["weighted_pipeline_arr"] <= v["open_pipeline_arr"] * (1 + 1e-12) + 1e-6
        if not row.is_current:
            assert v["pipeline_velocity_per_day"] is None
    table = results.deals
    assert len(table) == len(scenario["deals"])
    for values in (table.deal_age_days, table.days_in_stage):
        assert not (values < 0).any()
    attainment = table.owner_quota_attainment
    assert not (attainment[~np.isnan(attainment)] < 0).any()
    for *_, commit, taken in results.new_snapshots.rows():
        assert taken == scenario["as_of"] and math.isfinite(commit)


def remap_reps(scenario: dict[str, Any], order: np.ndarray) -> dict[str, Any]:
    """The same scenario with reps listed in ``order`` (indexes remapped everywhere)."""
    new_index = np.empty(len(order), dtype=np.int32)
    new_index[order] = np.arange(len(order), dtype=np.int32)
    deals: Deals = scenario["deals"]
    quotas: Quotas = scenario["quotas"]
    activities: Activities = scenario["activities"]
    columns = {name: getattr(deals, name) for name in deals.__dataclass_fields__}
    columns["owner"] = new_index[deals.owner]
    return {
        **scenario,
        "reps": scenario["reps"].take(order),
        "deals": Deals(**columns),
        "quotas": Quotas(
            rep=new_index[quotas.rep], start=quotas.start, end=quotas.end, amount=quotas.amount
        ),
        "activities": Activities(
            owner=new_index[activities.owner],
            day=activities.day,
            is_demo=activities.is_demo,
            demos_mapped=activities.demos_mapped,
        ),
    }


@pytest.mark.slow
@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False))
def test_results_do_not_depend_on_row_order(scenario: dict[str, Any], rnd: Any) -> None:
    baseline = compute(**scenario)
    shuffled = dict(scenario)
    for name in ("deals", "quotas", "activities"):
        frame = scenario[name]
        order = list(range(len(frame)))
        rnd.shuffle(order)
        shuffled[name] = frame.take(np.array(order, dtype=np.int64))
    rep_order = list(range(len(scenario["reps"])))
    rnd.shuffle(rep_order)
    shuffled = remap_reps(shuffled, np.array(rep_order, dtype=np.int64))
    other = compute(**shuffled)
    a, b = by_key(baseline), by_key(other)
    assert a.keys() == b.keys()
    for key, values in a.items():
        for kpi, value in values.items():
            assert close(value, b[key][kpi]), (key, kpi, value, b[key][kpi])
    deals_a, deals_b = dict(baseline.deals), dict(other.deals)
    assert deals_a.keys() == deals_b.keys()
    for deal_id, values in deals_a.items():
        for kpi, value in values.items():
            assert close(value, deals_b[deal_id][kpi])
    snaps_a = {row[:3]: row[3] for row in baseline.new_snapshots.rows()}
    snaps_b = {row[:3]: row[3] for row in other.new_snapshots.rows()}
    assert snaps_a.keys() == snaps_b.keys()
    assert all(close(snaps_a[k], snaps_b[k]) for k in snaps_a)
