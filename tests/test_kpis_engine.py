"""The KPI engine, one hand-computed example per definition of KPIS.md, plus its edge cases.

Unless a test says otherwise: fiscal year = calendar year, as_of 2026-08-20 (current periods
2026-08, 2026-Q3, FY2026; previous 2026-07, 2026-Q2, FY2025), one rep "alice" in team "east".
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from crm_kpi_worker.kpis import (
    EXCLUSIONS,
    FORECAST_CATEGORIES,
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
from crm_kpi_worker.kpis.frames import (
    EXCLUDED_CLOSE_BEFORE_CYCLE_START,
    EXCLUDED_NO_ARR,
    EXCLUDED_NO_CLOSE_DATE,
    EXCLUDED_NO_CYCLE_START,
    EXCLUDED_UNKNOWN_STAGE,
)
from crm_kpi_worker.kpis.notes import EMPTY_REASONS

D = dt.date
AS_OF = D(2026, 8, 20)
NAT = None


def make_deals(*rows: dict[str, Any]) -> Deals:
    """Deals from dicts; ``status`` is won|lost|open (default open), ``forecast`` a name."""
    defaults: dict[str, Any] = {
        "owner": 0,
        "created": D(2026, 7, 1),
        "close": D(2026, 8, 10),
        "arr": 1000.0,
        "status": "open",
    }
    full = [{**defaults, **row} for row in rows]
    columns: dict[str, list[Any]] = {
        "id": [row.get("id", f"d{i}") for i, row in enumerate(full)],
        "is_won": [row["status"] == "won" for row in full],
        "is_lost": [row["status"] == "lost" for row in full],
    }
    optional = (
        "account",
        "cycle_start",
        "stage_known",
        "credited",
        "is_renewal",
        "forecast",
        "probability",
        "qualified",
        "entered_entry",
        "stage_entered",
        "slips",
    )
    for name in ("owner", "created", "close", "arr", *optional):
        if name in defaults or any(name in row for row in full):
            column_defaults = {
                "account": -1,
                "stage_known": True,
                "credited": True,
                "is_renewal": False,
                "forecast": "pipeline",
                "probability": None,
                "qualified": False,
                "entered_entry": None,
                "slips": 0,
            }
            values = []
            for row in full:
                if name in row:
                    values.append(row[name])
                elif name in ("cycle_start", "stage_entered"):
                    values.append(row["created"])
                else:
                    values.append(column_defaults[name])
            if name == "forecast":
                values = [FORECAST_CATEGORIES.index(v) for v in values]
            columns[name] = values
    if not rows:
        columns.update(owner=[], created=[], close=[], arr=[])
    return Deals(**columns)


def alice(**kwargs: Any) -> Reps:
    return Reps(id=["alice"], email=["alice@example.com"], team=["east"], **kwargs)


def quarter_quota(amount: float = 120_000.0, rep: int = 0) -> Quotas:
    return Quotas(rep=[rep], start=[D(2026, 7, 1)], end=[D(2026, 9, 30)], amount=[amount])


def run(
    deals: Deals,
    reps: Reps | None = None,
    quotas: Quotas | None = None,
    activities: Activities | None = None,
    accounts: Accounts | None = None,
    snapshots: Snapshots | None = None,
    settings: Settings | None = None,
    as_of: dt.date = AS_OF,
) -> Results:
    return compute(
        deals,
        reps if reps is not None else alice(),
        quotas if quotas is not None else Quotas.empty(),
        activities if activities is not None else Activities.unmapped(),
        accounts if accounts is not None else Accounts.empty(),
        snapshots if snapshots is not None else Snapshots.empty(),
        settings if settings is not None else Settings(),
        as_of,
    )


def values(results: Results, period: str = "2026-Q3", subject: str = "alice") -> dict[str, Any]:
    scope = "org" if subject == "org" else "rep"
    return results.row(scope, subject, period).values  # type: ignore[arg-type]


def reasons(results: Results, period: str = "2026-Q3", subject: str = "alice") -> dict[str, str]:
    scope = "org" if subject == "org" else "rep"
    return results.row(scope, subject, period).empty_reasons  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The worked example of KPIS.md


def test_worked_example_alice_quarter() -> None:
    """40 deals reached demo in the quarter, 10 won at 15,000 (45-day cycles), 30 lost, quota
    120,000, ~12 demos a week; open deals closing next quarter."""
    as_of = D(2026, 9, 30)
    won = [
        {
            "status": "won",
            "created": D(2026, 7, 1) + dt.timedelta(days=i),
            "close": D(2026, 8, 15) + dt.timedelta(days=i),
            "arr": 15_000.0,
            "entered_entry": D(2026, 7, 5) + dt.timedelta(days=i),
        }
        for i in range(10)
    ]
    lost = [
        {
            "status": "lost",
            "created": D(2026, 6, 20),
            "close": D(2026, 9, 1),
            "arr": 20_000.0,
            "entered_entry": D(2026, 7, 10),
        }
        for _ in range(30)
    ]
    following = [
        {"close": D(2026, 11, 15), "arr": 30_000.0, "entered_entry": D(2026, 9, 20)}
        for _ in range(3)
    ]
    demos = 156  # 12 a week over 13 weeks
    activities = Activities(
        owner=[0] * demos,
        day=[D(2026, 7, 1) + dt.timedelta(days=i % 91) for i in range(demos)],
    )
    results = run(
        make_deals(*won, *lost, *following),
        quotas=quarter_quota(),
        activities=activities,
        settings=Settings(offsets=(0, -1, 1)),
        as_of=as_of,
    )
    q3 = values(results)
    assert q3["bookings_arr"] == 150_000.0
    assert q3["deals_won"] == 10
    assert q3["deals_lost"] == 30
    assert q3["quota_attainment"] == 1.25
    assert q3["win_rate"] == 0.25
    assert q3["conversion_rate"] == 0.25
    assert q3["sales_cycle_days"] == 45.0
    assert q3["avg_deal_size"] == 15_000.0
    assert q3["demos_per_week"] == pytest.approx(156 / (92 / 7))  # 11.87, "about 12"
    assert q3["open_pipeline_arr"] == 0.0
    assert values(results, "2026-Q4")["open_pipeline_arr"] == 90_000.0


# ---------------------------------------------------------------------------------------------
# Bookings, counts, win rate, deal size


def test_bookings_count_credited_won_deals_closed_in_the_period_to_date() -> None:
    results = run(
        make_deals(
            {"status": "won", "arr": 10_000.0},
            {"status": "won", "arr": 20_000.0, "close": D(2026, 7, 31)},
            {"status": "won", "arr": 40_000.0, "credited": False},  # renewal: not booked
            {"status": "won", "arr": np.nan},  # no amount: counted, not summed
            {"status": "won", "arr": 5_000.0, "close": D(2026, 8, 25)},  # after as_of
            {"status": "won", "arr": 7_000.0, "close": D(2026, 6, 30)},  # previous quarter
            {"status": "won", "arr": 9_000.0, "close": NAT},  # no close date
            {"status": "lost", "arr": 50_000.0},
            {"arr": 60_000.0},
        )
    )
    q3 = values(results)
    assert q3["bookings_arr"] == 30_000.0
    assert q3["bookings_mrr"] == 2_500.0
    assert q3["deals_won"] == 4
    assert q3["deals_lost"] == 1
    assert q3["win_rate"] == 0.8
    assert q3["avg_deal_size"] == 15_000.0  # 30,000 / 2 credited won deals with ARR
    august = values(results, "2026-08")
    assert august["bookings_arr"] == 10_000.0
    assert values(results, "2026-07")["bookings_arr"] == 20_000.0
    assert values(results, "2026-Q2")["bookings_arr"] == 7_000.0
    assert values(results, "FY2026")["bookings_arr"] == 37_000.0
    assert isinstance(q3["deals_won"], int)
    assert isinstance(q3["bookings_arr"], float)


def test_no_closed_deal_leaves_ratios_empty_with_reasons() -> None:
    results = run(make_deals({"arr": 10_000.0}))
    q3, why = values(results), reasons(results)
    assert (q3["bookings_arr"], q3["deals_won"], q3["deals_lost"]) == (0.0, 0, 0)
    assert q3["win_rate"] is None and why["win_rate"] == "no_closed_deal"
    assert q3["avg_deal_size"] is None and why["avg_deal_size"] == "no_won_deal"
    assert q3["sales_cycle_days"] is None and why["sales_cycle_days"] == "no_won_deal"
    assert why["sales_cycle_days_median"] == "no_won_deal"


def test_average_deal_size_needs_a_credited_won_deal_with_arr() -> None:
    results = run(make_deals({"status": "won", "credited": False}, {"status": "won", "arr": None}))
    q3 = values(results)
    assert q3["deals_won"] == 2 and q3["bookings_arr"] == 0.0
    assert q3["avg_deal_size"] is None
    assert reasons(results)["avg_deal_size"] == "no_credited_won_deal_with_arr"


# ---------------------------------------------------------------------------------------------
# Sales cycle


def test_sales_cycle_mean_and_median_over_won_deals() -> None:
    start = D(2026, 7, 1)
    results = run(
        make_deals(
            {"status": "won", "created": start, "close": D(2026, 7, 11)},  # 10
            {"status": "won", "created": start, "close": D(2026, 7, 21)},  # 20
            {"status": "won", "created": start, "close": D(2026, 8, 30)},  # after as_of
            {"status": "won", "created": D(2026, 5, 1), "close": D(2026, 6, 30)},  # Q2: 60
            {"status": "lost", "created": start, "close": D(2026, 8, 1)},  # lost: no cycle
            # cycle-start stage entered on Jul 10: 30 days to Aug 9
            {"status": "won", "created": D(2026, 6, 1), "cycle_start": D(2026, 7, 10),
             "close": D(2026, 8, 9)},
            {"status": "won", "created": start, "close": D(2026, 7, 1)},  # 0 days: valid
        )
    )  # fmt: skip
    q3 = values(results)
    assert q3["sales_cycle_days"] == pytest.approx((10 + 20 + 30 + 0) / 4)
    assert q3["sales_cycle_days_median"] == 15.0  # (10 + 20) / 2
    assert values(results, "FY2026")["sales_cycle_days_median"] == 20.0
    assert values(results, "2026-07")["sales_cycle_days"] == 10.0  # 10, 20, 0


def test_sales_cycle_leaves_out_deals_without_a_usable_cycle_start() -> None:
    deals = make_deals(
        {"status": "won", "cycle_start": None},  # never entered the cycle-start stage
        {"status": "won", "cycle_start": D(2026, 8, 15), "close": D(2026, 8, 12)},  # backwards
    )
    results = run(deals)
    q3 = values(results)
    assert q3["deals_won"] == 2
    assert q3["sales_cycle_days"] is None
    assert reasons(results)["sales_cycle_days"] == "no_cycle_data"
    assert deals.exclusions().tolist() == [
        EXCLUDED_NO_CYCLE_START,
        EXCLUDED_CLOSE_BEFORE_CYCLE_START,
    ]


# ---------------------------------------------------------------------------------------------
# Quota, attainment, remaining, coverage


def test_quota_attainment_remaining_and_coverage() -> None:
    results = run(
        make_deals(
            {"status": "won", "arr": 30_000.0},
            {"arr": 35_000.0, "close": D(2026, 9, 15)},
            {"arr": 100_000.0, "close": D(2026, 10, 15)},  # next quarter
        ),
        quotas=quarter_quota(100_000.0),
    )
    q3 = values(results)
    assert q3["quota"] == 100_000.0
    assert q3["quota_attainment"] == 0.3
    assert q3["quota_remaining"] == 70_000.0
    assert q3["pipeline_coverage"] == 0.5
    assert values(results, "2026-08")["quota"] == pytest.approx(100_000.0 / 3)


def test_no_quota_and_quota_zero_and_nothing_remaining() -> None:
    deals = make_deals({"status": "won", "arr": 30_000.0}, {"arr": 5_000.0})
    none = run(deals)
    q3, why = values(none), reasons(none)
    for key in ("quota", "quota_attainment", "quota_remaining", "pipeline_coverage"):
        assert q3[key] is None and why[key] == "no_quota"
    zero = run(deals, quotas=quarter_quota(0.0))
    q3, why = values(zero), reasons(zero)
    assert q3["quota"] == 0.0
    assert q3["quota_attainment"] is None and why["quota_attainment"] == "quota_zero"
    assert q3["quota_remaining"] == 0.0
    assert q3["pipeline_coverage"] is None and why["pipeline_coverage"] == "nothing_remaining"
    met = run(deals, quotas=quarter_quota(20_000.0))
    q3 = values(met)
    assert q3["quota_attainment"] == 1.5
    assert q3["quota_remaining"] == 0.0
    assert reasons(met)["pipeline_coverage"] == "nothing_remaining"


def test_quota_split_evenly_over_months() -> None:
    # A Q1 quota of 120,000 gives 40,000 to February as to March.
    quotas = Quotas(rep=[0], start=[D(2026, 1, 1)], end=[D(2026, 3, 31)], amount=[120_000.0])
    results = run(make_deals(), quotas=quotas, as_of=D(2026, 3, 10))
    assert values(results, "2026-03")["quota"] == pytest.approx(40_000.0)
    assert values(results, "2026-02")["quota"] == pytest.approx(40_000.0)
    assert values(results, "2026-Q1")["quota"] == 120_000.0
    assert values(results, "FY2026")["quota"] == 120_000.0  # only Q1 is covered
    assert values(results, "2025-Q4")["quota"] is None


def test_quota_not_aligned_to_months_is_prorated_by_days_within_months() -> None:
    quotas = Quotas(rep=[0], start=[D(2026, 7, 16)], end=[D(2026, 9, 30)], amount=[80_000.0])
    results = run(make_deals(), quotas=quotas, settings=Settings(offsets=(0, -1, 1)))
    months = 16 / 31 + 2
    assert values(results, "2026-07")["quota"] == pytest.approx(80_000 * (16 / 31) / months)
    assert values(results, "2026-08")["quota"] == pytest.approx(80_000 / months)
    assert values(results, "2026-09")["quota"] == pytest.approx(80_000 / months)
    assert values(results, "2026-Q3")["quota"] == pytest.approx(80_000.0)


def test_ramp_quota_is_prorated_from_the_start_date() -> None:
    reps = alice(start=[D(2026, 8, 16)])
    months = (-1, 0, 1)
    ramped = run(
        make_deals(),
        reps=reps,
        quotas=quarter_quota(120_000.0),
        settings=Settings(ramp_prorate=True, offsets=months),
    )
    july = ramped.row("rep", "alice", "2026-07")
    assert july.values["quota"] == 0.0
    assert july.empty_reasons["quota_attainment"] == "quota_zero"
    assert values(ramped, "2026-08")["quota"] == pytest.approx(40_000 * 16 / 31)
    assert values(ramped, "2026-09")["quota"] == pytest.approx(40_000.0)
    assert values(ramped, "2026-Q3")["quota"] == pytest.approx(120_000 * (16 / 31 + 1) / 3)
    month_sum = sum(values(ramped, k)["quota"] for k in ("2026-07", "2026-08", "2026-09"))
    assert month_sum == pytest.approx(values(ramped, "2026-Q3")["quota"])
    plain = run(make_deals(), reps=reps, quotas=quarter_quota(120_000.0))
    assert values(plain, "2026-08")["quota"] == pytest.approx(40_000.0)


# ---------------------------------------------------------------------------------------------
# Pipeline and forecasts


def test_open_pipeline_counts_overdue_deals_in_the_current_period_only() -> None:
    results = run(
        make_deals(
            {"arr": 10_000.0, "close": D(2026, 8, 25), "probability": 0.5},
            {"arr": 20_000.0, "close": D(2026, 6, 10), "probability": 0.25},  # overdue
            {"arr": 30_000.0, "close": D(2026, 10, 5), "probability": 0.1},  # next quarter
            {"arr": 40_000.0, "close": NAT},  # no close date: nowhere
            {"arr": None, "close": D(2026, 8, 25)},  # no ARR: adds nothing
            {"arr": 5_000.0, "close": D(2026, 8, 25)},  # unknown probability
            {"arr": 7_000.0, "status": "won"},  # closed
        )
    )
    aug, q3, fy = values(results, "2026-08"), values(results), values(results, "FY2026")
    assert aug["open_pipeline_arr"] == q3["open_pipeline_arr"] == 35_000.0
    assert fy["open_pipeline_arr"] == 65_000.0
    assert q3["weighted_pipeline_arr"] == 10_000 * 0.5 + 20_000 * 0.25
    assert fy["weighted_pipeline_arr"] == pytest.approx(10_000.0 + 3_000.0)
    for past in ("2026-07", "2026-Q2", "FY2025"):
        assert values(results, past)["open_pipeline_arr"] == 0.0


def test_pipeline_credited_only_setting() -> None:
    deals = make_deals({"arr": 10_000.0}, {"arr": 20_000.0, "credited": False})
    assert values(run(deals))["open_pipeline_arr"] == 30_000.0
    only = run(deals, settings=Settings(pipeline_credited_only=True))
    assert values(only)["open_pipeline_arr"] == 10_000.0


def test_forecast_commit_and_best_case() -> None:
    results = run(
        make_deals(
            {"status": "won", "arr": 30_000.0},
            {"forecast": "commit", "arr": 10_000.0},
            {"forecast": "commit", "arr": 1_000.0, "close": D(2026, 5, 1)},  # overdue
            {"forecast": "best_case", "arr": 5_000.0},
            {"forecast": "pipeline", "arr": 7_000.0},
            {"forecast": "omitted", "arr": 8_000.0},
            {"forecast": "commit", "arr": 9_000.0, "close": D(2026, 10, 1)},  # Q4
        )
    )
    q3 = values(results)
    assert q3["forecast_commit_arr"] == 41_000.0
    assert q3["forecast_best_case_arr"] == 46_000.0
    q2 = values(results, "2026-Q2")
    assert q2["forecast_commit_arr"] == q2["bookings_arr"] == 0.0


# ---------------------------------------------------------------------------------------------
# Conversion, demos


def test_conversion_rate_of_deals_entering_the_entry_stage_in_the_period() -> None:
    july = D(2026, 7, 5)
    results = run(
        make_deals(
            {"status": "won", "entered_entry": july},
            {"status": "won", "entered_entry": july, "close": NAT},  # closed, no date: counts
            {"status": "won", "entered_entry": july},
            {"status": "lost", "entered_entry": july},
            {"entered_entry": july},  # still open
            {"status": "won", "entered_entry": D(2026, 6, 30)},  # previous quarter
            {"status": "lost", "entered_entry": july, "close": D(2026, 8, 30)},  # after as_of
            {"status": "won"},  # never entered
        )
    )
    assert values(results)["conversion_rate"] == 0.75
    assert values(results, "2026-Q2")["conversion_rate"] == 1.0
    assert values(results, "2026-08")["conversion_rate"] is None
    assert reasons(results, "2026-08")["conversion_rate"] == "no_closed_entry_deal"


def test_demos_per_week() -> None:
    days = [D(2026, 8, 1) + dt.timedelta(days=i) for i in range(10)]
    activities = Activities(
        owner=[0] * 14,
        day=[*days, D(2026, 8, 21), D(2026, 7, 31), D(2026, 8, 2), D(2026, 8, 3)],
        is_demo=[True] * 12 + [False, False],
    )
    results = run(make_deals(), activities=activities)
    assert values(results, "2026-08")["demos_per_week"] == pytest.approx(10 / (20 / 7))
    assert values(results, "2026-07")["demos_per_week"] == pytest.approx(1 / (31 / 7))
    first_day = run(make_deals(), activities=activities, as_of=D(2026, 8, 1))
    assert values(first_day, "2026-08")["demos_per_week"] == 1.0  # at least one week
    unmapped = run(make_deals())
    assert values(unmapped)["demos_per_week"] is None
    assert reasons(unmapped)["demos_per_week"] == "no_activity_mapping"
    mapped_none = run(make_deals(), activities=Activities(owner=[], day=[]))
    assert values(mapped_none)["demos_per_week"] == 0.0


# ---------------------------------------------------------------------------------------------
# Velocity


def test_pipeline_velocity_over_the_trailing_window() -> None:
    window_start = AS_OF - dt.timedelta(days=179)
    results = run(
        make_deals(
            {"status": "won", "arr": 10_000.0, "created": D(2026, 3, 1), "close": D(2026, 3, 31)},
            {"status": "won", "arr": 20_000.0, "created": D(2026, 6, 1), "close": D(2026, 7, 31)},
            {"status": "lost", "close": window_start},
            {"status": "lost", "close": AS_OF},
            {"status": "won", "close": window_start - dt.timedelta(days=1)},  # before the window
            {"status": "won", "close": D(2026, 8, 25)},  # after as_of
            {"qualified": True},
            {"qualified": True, "close": NAT},  # counts without a close date
            {"qualified": True, "close": D(2027, 5, 1)},
            {"qualified": False},
        )
    )
    expected = 3 * 0.5 * 15_000.0 / 45.0
    for period in ("2026-08", "2026-Q3", "FY2026"):
        assert values(results, period)["pipeline_velocity_per_day"] == pytest.approx(expected)
    assert values(results, "2026-Q2")["pipeline_velocity_per_day"] is None
    assert reasons(results, "2026-Q2")["pipeline_velocity_per_day"] == "not_current_period"


def test_pipeline_velocity_empty_factors() -> None:
    no_close = run(make_deals({"qualified": True}))
    assert reasons(no_close)["pipeline_velocity_per_day"] == "no_trailing_closed_deal"
    lost_only = run(make_deals({"status": "lost"}))
    assert reasons(lost_only)["pipeline_velocity_per_day"] == "no_trailing_won_deal"
    same_day = run(make_deals({"status": "won", "created": D(2026, 8, 1), "close": D(2026, 8, 1)}))
    assert values(same_day)["sales_cycle_days"] == 0.0
    assert values(same_day)["pipeline_velocity_per_day"] is None
    assert reasons(same_day)["pipeline_velocity_per_day"] == "cycle_zero"
    no_cycle = run(make_deals({"status": "won", "cycle_start": None}))
    assert reasons(no_cycle)["pipeline_velocity_per_day"] == "no_trailing_cycle"


# ---------------------------------------------------------------------------------------------
# Retention


def test_retention_90d() -> None:
    accounts = Accounts(
        churn=[D(2026, 6, 1), None, D(2025, 12, 1), D(2026, 8, 1), None, None, None]
    )
    deals = make_deals(
        {"status": "won", "account": 0, "close": D(2026, 4, 10)},  # churned on Jun 1
        {"status": "won", "account": 1, "close": D(2026, 4, 15)},  # lost renewal on Jun 20
        {"status": "lost", "account": 1, "close": D(2026, 6, 20), "is_renewal": True,
         "credited": False, "owner": 1},
        {"status": "won", "account": 2, "close": D(2026, 5, 1)},  # churn before: kept
        {"status": "won", "account": 3, "close": D(2026, 4, 20)},  # churn 103 days after: kept
        {"status": "won", "account": 4, "close": D(2026, 6, 10)},  # < 90 days ago: not yet
        {"status": "won", "account": 5, "close": D(2026, 4, 5), "is_renewal": True},  # renewal
        {"status": "won", "close": D(2026, 4, 5)},  # no account
        {"status": "won", "account": 6, "close": D(2026, 5, 22)},  # exactly 90 days: kept
        {"status": "lost", "account": 6, "close": D(2026, 8, 21), "is_renewal": True},  # 91 d
    )  # fmt: skip
    reps = Reps(id=["alice", "bob"], team=["east", "east"])
    results = run(deals, reps=reps, accounts=accounts, settings=Settings(churn_signal=True))
    assert values(results, "2026-Q2")["retention_90d"] == pytest.approx(3 / 5)
    assert values(results)["retention_90d"] is None
    assert reasons(results)["retention_90d"] == "no_eligible_customer"
    unmapped = run(deals, reps=reps, accounts=accounts)
    assert reasons(unmapped, "2026-Q2")["retention_90d"] == "no_churn_signal"


# ---------------------------------------------------------------------------------------------
# Forecast accuracy and snapshots


def test_forecast_accuracy_uses_the_stored_snapshot_once_the_period_ended() -> None:
    deals = make_deals(
        {"status": "won", "arr": 100_000.0, "created": D(2026, 4, 1), "close": D(2026, 5, 5)}
    )
    snapshots = Snapshots.from_rows(
        [
            ("rep", "alice", "2026-Q2", 90_000.0, D(2026, 4, 15)),
            ("org", "org", "2026-Q2", 250_000.0, D(2026, 4, 15)),
            ("rep", "alice", "2026-05", 0.0, D(2026, 5, 15)),
            ("rep", "alice", "2026-06", 10.0, D(2026, 6, 15)),
        ]
    )
    results = run(deals, snapshots=snapshots, settings=Settings(offsets=(0, -1, -2, -3)))
    assert values(results, "2026-Q2")["forecast_accuracy"] == pytest.approx(0.9)
    assert values(results, "2026-Q2", "org")["forecast_accuracy"] == 0.0  # floored
    assert results.row("team", "east", "2026-Q2").empty_reasons["forecast_accuracy"] == (
        "no_snapshot"
    )
    assert values(results, "2026-05")["forecast_accuracy"] == 0.0  # 1 - 100%
    assert reasons(results, "2026-06")["forecast_accuracy"] == "no_bookings"
    assert reasons(results)["forecast_accuracy"] == "period_not_ended"


def test_new_snapshots_from_the_snapshot_day_while_the_period_runs() -> None:
    deals = make_deals({"status": "won", "arr": 10_000.0}, {"forecast": "commit", "arr": 5_000.0})
    stored = Snapshots.from_rows([("rep", "alice", "2026-Q3", 1.0, D(2026, 7, 15))])
    results = run(deals, snapshots=stored)
    taken = {(s, subject, p): (c, t) for s, subject, p, c, t in results.new_snapshots.rows()}
    assert taken[("rep", "alice", "2026-08")] == (15_000.0, AS_OF)
    assert taken[("team", "east", "2026-Q3")] == (15_000.0, AS_OF)
    assert ("rep", "alice", "2026-Q3") not in taken  # already stored
    assert ("org", "org", "FY2026") in taken
    assert not any(p in ("2026-07", "2026-Q2", "FY2025") for _, _, p in taken)  # ended
    before = run(deals, as_of=D(2026, 8, 14))
    assert not any(p == "2026-08" for _, _, p, _, _ in before.new_snapshots.rows())
    later = run(deals, settings=Settings(snapshot_day=25))
    assert {p for _, _, p, _, _ in later.new_snapshots.rows()} == {"2026-Q3", "FY2026"}


# ---------------------------------------------------------------------------------------------
# Variable pay


@pytest.mark.parametrize(
    ("bookings", "expected"),
    [
        (150_000.0, 10_000 * 1.375),  # 125%: 1 + 1.5 x 0.25
        (60_000.0, 10_000 * 0.5),  # linear below 100%
        (120_000.0, 10_000.0),
        (600_000.0, 10_000 * 2.0),  # capped
        (0.0, 0.0),
    ],
)
def test_variable_pay_estimate(bookings: float, expected: float) -> None:
    deals = make_deals({"status": "won", "arr": bookings})
    results = run(deals, quotas=quarter_quota(120_000.0), settings=Settings(variable_target=40_000))
    assert values(results)["variable_pay_estimate"] == pytest.approx(expected)


def test_variable_pay_targets_per_rep_period_share_and_empty_cases() -> None:
    reps = Reps(
        id=["alice", "bob", "carol", "dave"],
        email=["alice@x.io", "bob@x.io", "c@x.io", "d@x.io"],
        team=["east", "east", "east", None],
    )
    quotas = Quotas(
        rep=[0, 1, 3],
        start=[D(2026, 7, 1)] * 3,
        end=[D(2026, 9, 30)] * 3,
        amount=[100_000.0, 100_000.0, 0.0],
    )
    deals = make_deals(
        {"status": "won", "arr": 100_000.0, "owner": 0},
        {"status": "won", "arr": 50_000.0, "owner": 1},
        {"status": "won", "arr": 50_000.0, "owner": 3},
    )
    settings = Settings(variable_target=12_000, variable_targets={"Bob@x.io": 24_000})
    results = run(deals, reps=reps, quotas=quotas, settings=settings)
    assert values(results)["variable_pay_estimate"] == 3_000.0  # 12,000 / 4 x 1.0
    assert values(results, subject="bob")["variable_pay_estimate"] == 3_000.0  # 6,000 x 0.5
    # August: quota 100,000 / 3, bookings 100,000: attainment 3.0, capped at 2 x 1,000.
    assert values(results, "2026-08")["variable_pay_estimate"] == pytest.approx(2_000.0)
    assert reasons(results, subject="carol")["variable_pay_estimate"] == "no_quota"
    assert reasons(results, subject="dave")["variable_pay_estimate"] == "quota_zero"
    team = results.row("team", "east", "2026-Q3").values
    assert team["variable_pay_estimate"] == 6_000.0
    no_target = run(deals, reps=reps, quotas=quotas)
    assert reasons(no_target)["variable_pay_estimate"] == "no_variable_target"
    assert results.row("team", "east", "2026-Q3").empty_reasons == {
        "conversion_rate": "no_closed_entry_deal",
        "demos_per_week": "no_activity_mapping",
        "retention_90d": "no_churn_signal",
        "forecast_accuracy": "period_not_ended",
    }
    no_team_target = run(deals, reps=reps, quotas=quotas)
    why = no_team_target.row("team", "east", "2026-Q3").empty_reasons
    assert why["variable_pay_estimate"] == "no_rep_estimate"


# ---------------------------------------------------------------------------------------------
# Teams, org, unassigned


def test_team_ratios_are_recomputed_from_team_sums() -> None:
    reps = Reps(id=["alice", "bob", "carol"], team=["east", "east", None])
    deals = make_deals(
        {"owner": 0, "status": "won", "arr": 10_000.0, "created": D(2026, 7, 1)},  # cycle 40
        *[{"owner": 0, "status": "lost"} for _ in range(4)],
        {"owner": 1, "status": "won", "arr": 30_000.0, "created": D(2026, 7, 31)},  # cycle 10
        {"owner": 1, "status": "won", "arr": 50_000.0, "created": D(2026, 7, 21)},  # cycle 20
        {"owner": 1, "status": "lost"},
        {"owner": 2, "status": "won", "arr": 1_000.0},
    )
    quotas = Quotas(
        rep=[0, 1], start=[D(2026, 7, 1)] * 2, end=[D(2026, 9, 30)] * 2, amount=[50_000.0] * 2
    )
    results = run(deals, reps=reps, quotas=quotas)
    a, b = values(results), values(results, subject="bob")
    assert a["win_rate"] == 0.2 and b["win_rate"] == pytest.approx(2 / 3)
    team = results.row("team", "east", "2026-Q3").values
    assert team["deals_won"] == 3 and team["deals_lost"] == 5
    assert team["win_rate"] == 3 / 8  # not (0.2 + 0.667) / 2
    assert team["bookings_arr"] == 90_000.0
    assert team["avg_deal_size"] == 30_000.0
    assert team["quota"] == 100_000.0
    assert team["quota_attainment"] == 0.9
    assert team["quota_remaining"] == 10_000.0  # alice's 40,000 short, bob's 40,000 over
    assert team["sales_cycle_days"] == pytest.approx(70 / 3)
    assert team["sales_cycle_days_median"] == 20.0
    org = values(results, subject="org")
    assert org["deals_won"] == 4 and org["bookings_arr"] == 91_000.0
    assert org["quota"] == 100_000.0 and org["quota_attainment"] == 0.91
    assert org["sales_cycle_days_median"] == 30.0  # 10, 20, 40, 40
    assert {r.subject for r in results.rows if r.scope == "team"} == {"east"}


def test_team_quota_counts_reps_with_a_quota_and_all_bookings() -> None:
    reps = Reps(id=["alice", "bob"], team=["east", "east"])
    deals = make_deals(
        {"owner": 0, "status": "won", "arr": 50_000.0},
        {"owner": 1, "status": "won", "arr": 30_000.0},
    )
    results = run(deals, reps=reps, quotas=quarter_quota(100_000.0))
    team = results.row("team", "east", "2026-Q3").values
    assert team["quota"] == 100_000.0
    assert team["quota_attainment"] == 0.8  # bob has no quota but sells for the team
    nobody = run(deals, reps=reps).row("team", "east", "2026-Q3")
    assert nobody.values["quota"] is None
    assert nobody.empty_reasons["quota_attainment"] == "no_quota"


def test_unassigned_owner_counts_in_the_org_only() -> None:
    reps = Reps(
        id=["alice", "(unassigned)"],
        team=["east", None],
        is_unassigned=[False, True],
    )
    deals = make_deals(
        {"owner": 0, "status": "won", "arr": 10_000.0},
        {"owner": 1, "status": "won", "arr": 5_000.0},
    )
    results = run(deals, reps=reps, settings=Settings(variable_target=10_000))
    assert values(results, subject="(unassigned)")["bookings_arr"] == 5_000.0
    assert results.row("team", "east", "2026-Q3").values["bookings_arr"] == 10_000.0
    assert values(results, subject="org")["bookings_arr"] == 15_000.0
    row = results.row("rep", "(unassigned)", "2026-Q3")
    assert row.rep_index == 1 and row.empty_reasons["variable_pay_estimate"] == "no_quota"


# ---------------------------------------------------------------------------------------------
# Bad data, empty input, backfills


def test_bad_data_is_excluded_only_from_what_it_cannot_feed() -> None:
    deals = make_deals(
        {"status": "won", "arr": None, "entered_entry": D(2026, 7, 5)},
        {"status": "won", "arr": 10_000.0, "close": NAT, "entered_entry": D(2026, 7, 5)},
        {"status": "won", "arr": 20_000.0, "stage_known": False},
        {"arr": 40_000.0, "stage_known": False, "qualified": True},
        {"status": "lost", "arr": 5_000.0},
    )
    assert deals.exclusions().tolist() == [
        EXCLUDED_NO_ARR,
        EXCLUDED_NO_CLOSE_DATE,
        EXCLUDED_UNKNOWN_STAGE,
        EXCLUDED_UNKNOWN_STAGE,
        0,
    ]
    results = run(deals)
    q3 = values(results)
    assert q3["deals_won"] == 1 and q3["deals_lost"] == 1  # the no-ARR one
    assert q3["bookings_arr"] == 0.0
    assert q3["win_rate"] == 0.5
    assert q3["sales_cycle_days"] == 40.0
    assert q3["open_pipeline_arr"] == 0.0
    assert q3["conversion_rate"] == 1.0  # both entered demo and won, close date or not
    ages = [results.deals.values(i)["deal_age_days"] for i in range(5)]
    assert ages == [40, None, None, None, 40]
    assert {code for code, _ in EXCLUSIONS.values()} >= {"no_arr", "unknown_stage"}


def test_no_deals_at_all() -> None:
    results = run(make_deals(), quotas=quarter_quota())
    q3 = values(results)
    assert q3["bookings_arr"] == 0.0 and q3["deals_won"] == 0
    assert q3["quota_attainment"] == 0.0 and q3["pipeline_coverage"] == 0.0
    assert len(results.deals) == 0
    assert len(results.rows) == 6 * 3  # alice, east, org x 6 periods
    for row in results.rows:
        assert set(row.values) == set(KPI_KEYS)
        for key, value in row.values.items():
            assert (value is None) == (key in row.empty_reasons)
    assert {reason for *_, reason in results.explanations()} <= set(EMPTY_REASONS)


def test_deals_created_after_as_of_are_ignored() -> None:
    deals = make_deals(
        {"created": D(2026, 8, 25), "close": D(2026, 9, 1), "arr": 9_000.0},
        {"created": D(2026, 8, 1), "close": D(2026, 9, 1), "arr": 1_000.0},
    )
    results = run(deals)
    assert values(results)["open_pipeline_arr"] == 1_000.0
    assert results.deals.values(0)["deal_age_days"] is None


def test_period_boundaries_include_first_and_last_day() -> None:
    deals = make_deals(
        {"status": "won", "arr": 1.0, "close": D(2026, 7, 1)},
        {"status": "won", "arr": 2.0, "close": D(2026, 9, 30)},
        {"status": "won", "arr": 4.0, "close": D(2026, 6, 30)},
        {"status": "won", "arr": 8.0, "close": D(2026, 10, 1)},
    )
    last_day = run(deals, as_of=D(2026, 9, 30))
    assert values(last_day)["bookings_arr"] == 3.0
    assert values(last_day, "2026-Q2")["bookings_arr"] == 4.0
    first_day = run(deals, as_of=D(2026, 7, 1))
    assert values(first_day)["bookings_arr"] == 1.0


def test_fiscal_year_starting_in_april() -> None:
    deals = make_deals(
        {"status": "won", "arr": 1.0, "close": D(2026, 3, 31), "created": D(2026, 1, 1)},
        {"status": "won", "arr": 2.0, "close": D(2026, 4, 1), "created": D(2026, 1, 1)},
        {"status": "won", "arr": 4.0, "close": D(2026, 5, 9), "created": D(2026, 1, 1)},
    )
    results = run(deals, settings=Settings(year_start_month=4), as_of=D(2026, 5, 10))
    assert [p.key for p in results.periods] == [
        "2026-05",
        "2026-04",
        "2026-Q1",
        "2025-Q4",
        "FY2026",
        "FY2025",
    ]
    assert values(results, "2026-Q1")["bookings_arr"] == 6.0
    assert values(results, "2025-Q4")["bookings_arr"] == 1.0
    assert values(results, "FY2026")["bookings_arr"] == 6.0
    assert values(results, "FY2025")["bookings_arr"] == 1.0
    by_end = run(
        deals, settings=Settings(year_start_month=4, year_named_by="end"), as_of=D(2026, 5, 10)
    )
    assert values(by_end, "FY2027")["bookings_arr"] == 6.0
    assert values(by_end, "2027-Q1")["bookings_arr"] == 6.0


def test_only_configured_period_kinds_and_offsets() -> None:
    results = run(make_deals(), settings=Settings(periods=("quarter",), offsets=(1, 0)))
    assert [p.key for p in results.periods] == ["2026-Q4", "2026-Q3"]
    assert {r.period_key for r in results.rows} == {"2026-Q4", "2026-Q3"}
    assert [r.is_current for r in results.rows[:1]] == [False]


# ---------------------------------------------------------------------------------------------
# Per deal


def test_per_deal_values_and_dates() -> None:
    deals = make_deals(
        {"status": "won", "created": D(2026, 6, 1), "close": D(2026, 7, 1),
         "stage_entered": D(2026, 7, 1)},
        {"created": D(2026, 6, 1), "stage_entered": D(2026, 8, 10), "slips": 2},
        {"created": D(2026, 6, 1), "stage_entered": None},
        {"status": "lost", "created": D(2026, 6, 1), "close": D(2026, 5, 1)},  # backwards
    )  # fmt: skip
    results = run(deals, quotas=quarter_quota(60_000.0))
    table = results.deals
    rows = dict(table)
    assert rows["d0"] == {
        "deal_age_days": 30,
        "days_in_stage": 50,
        "close_date_slips": 0,
        "owner_quota_attainment": pytest.approx(1_000 / 60_000),  # d0's default ARR
    }
    assert rows["d1"]["deal_age_days"] == 80
    assert rows["d1"]["days_in_stage"] == 10
    assert rows["d1"]["close_date_slips"] == 2
    assert rows["d2"]["days_in_stage"] == 80  # unknown entry: the created date
    assert rows["d3"]["deal_age_days"] is None
    assert table.stage_entered[2] == np.datetime64("2026-06-01")
    assert table.created[0] == np.datetime64("2026-06-01")
    assert table.period.key == "2026-Q3"


def test_a_deal_of_an_unknown_stage_has_no_per_deal_value_at_all() -> None:
    deals = make_deals(
        {"status": "won", "arr": 30_000.0},
        {"stage_known": False, "slips": 3, "stage_entered": D(2026, 8, 1)},
    )
    results = run(deals, quotas=quarter_quota(120_000.0))
    assert results.deals.values(0)["owner_quota_attainment"] == pytest.approx(0.25)
    unknown = dict(results.deals)["d1"]
    assert unknown == {
        "deal_age_days": None,
        "days_in_stage": None,
        "close_date_slips": None,
        "owner_quota_attainment": None,
    }
    assert unknown == results.deals.values(1)
    assert np.isnat(results.deals.created[1]) and np.isnat(results.deals.stage_entered[1])
    assert results.deals.stage_known.tolist() == [True, False]


def test_the_age_dates_are_given_exactly_where_the_ages_have_a_value() -> None:
    deals = make_deals(
        {"created": D(2026, 6, 1), "stage_entered": D(2026, 7, 1)},  # both
        {"stage_known": False},  # unknown stage: neither
        {"status": "won", "close": None},  # closed without close date: no age
        {"created": D(2026, 8, 25), "stage_entered": D(2026, 8, 25)},  # created after as_of
        {"created": D(2026, 6, 1), "stage_entered": D(2026, 9, 1)},  # entered after as_of
        {"status": "lost", "created": D(2026, 6, 1), "close": D(2026, 5, 1)},  # negative age
    )
    table = run(deals).deals
    for i in range(len(table)):
        values = table.values(i)
        assert np.isnat(table.created[i]) == (values["deal_age_days"] is None), i
        assert np.isnat(table.stage_entered[i]) == (values["days_in_stage"] is None), i
    assert [table.values(i)["deal_age_days"] is None for i in range(6)] == [
        False,
        True,
        True,
        True,
        False,
        True,
    ]
    assert [table.values(i)["days_in_stage"] is None for i in range(6)] == [
        False,
        True,
        False,
        True,
        True,
        False,
    ]
    assert table.created[0] == np.datetime64("2026-06-01")
    assert table.stage_entered[0] == np.datetime64("2026-07-01")


def test_owner_quota_attainment_for_the_configured_period_kind() -> None:
    deals = make_deals({"status": "won", "arr": 30_000.0})
    settings = Settings(periods=("year",), deal_period="month")
    results = run(deals, quotas=quarter_quota(120_000.0), settings=settings)
    assert results.deals.values(0)["owner_quota_attainment"] == pytest.approx(0.75)
    assert results.deals.period.key == "2026-08"
    assert {r.period_key for r in results.rows} == {"FY2026", "FY2025"}
    unowned = run(deals)
    assert unowned.deals.values(0)["owner_quota_attainment"] is None


# ---------------------------------------------------------------------------------------------
# Input checks


def test_references_between_frames_are_checked() -> None:
    with pytest.raises(ValueError, match="Deals: a rep index"):
        run(make_deals({"owner": 3}))
    with pytest.raises(ValueError, match=r"Deals\.account"):
        run(make_deals({"account": 0}))
    with pytest.raises(ValueError, match=r"Activities\.owner"):
        run(make_deals(), activities=Activities(owner=[2], day=[AS_OF]))
    with pytest.raises(ValueError, match="Quotas: a rep index"):
        run(make_deals(), quotas=quarter_quota(rep=1))
