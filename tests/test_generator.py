"""The sandbox data set generator: the KPIS.md demo scenario, filler, determinism, invariants.

Every number is recomputed here straight from the arrays, not read back from ``notes``.
"""

from __future__ import annotations

import copy
import datetime as dt

import numpy as np
import pytest

from crm_kpi_worker.sandbox.dataset import (
    DEAL_TYPES,
    FORECAST_CATEGORIES,
    NULL_DAY,
    STAGE_LEGACY,
    STAGE_LOST,
    STAGE_WON,
    STAGES,
    USER_ROLES,
    Dataset,
    date_to_day,
)
from crm_kpi_worker.sandbox.generator import (
    CURRENCIES,
    DEFAULT_REFERENCE_DATE,
    FX_RATES,
    MAX_DEALS,
    generate,
    validate,
)

DAY_MS = 86_400_000
DEMO = STAGES.index("demo")
OPEN_STAGES = [STAGES.index(s) for s in ("qualification", "demo", "proposal", "negotiation")]
CREDITED = [DEAL_TYPES.index("new_business"), DEAL_TYPES.index("expansion")]
RENEWAL = DEAL_TYPES.index("renewal")
Q0 = (dt.date(2026, 7, 1), dt.date(2026, 9, 30))
PREVIOUS = [
    (dt.date(2025, 7, 1), dt.date(2025, 9, 30)),
    (dt.date(2025, 10, 1), dt.date(2025, 12, 31)),
    (dt.date(2026, 1, 1), dt.date(2026, 3, 31)),
    (dt.date(2026, 4, 1), dt.date(2026, 6, 30)),
]
NEXT = (dt.date(2026, 10, 1), dt.date(2026, 12, 31))


@pytest.fixture(scope="module")
def demo() -> Dataset:
    return generate()


@pytest.fixture(scope="module")
def big() -> Dataset:
    return generate(seed=7, deals=50_000)


# ---- helpers computing KPIs the plain way --------------------------------------------------


def user(ds: Dataset, email: str) -> int:
    return ds.users.email.index(email)


def days(period: tuple[dt.date, dt.date]) -> tuple[int, int]:
    return date_to_day(period[0]), date_to_day(period[1])


def closed_in(ds: Dataset, owner: int, period: tuple[dt.date, dt.date], stage: int) -> np.ndarray:
    start, end = days(period)
    d = ds.deals
    mask = (
        (d.owner == owner)
        & (d.stage == stage)
        & (d.close_day >= start)
        & (d.close_day <= end)
        & ~d.is_deleted
    )
    return np.flatnonzero(mask)


def eur(ds: Dataset, deals: np.ndarray) -> np.ndarray:
    rates = np.array([ds.fx_rates.get(c, np.nan) for c in ds.currencies])
    return ds.deals.amount[deals] / rates[ds.deals.currency[deals]]


def bookings(ds: Dataset, owner: int, period: tuple[dt.date, dt.date]) -> float:
    won = closed_in(ds, owner, period, STAGE_WON)
    won = won[np.isin(ds.deals.deal_type[won], CREDITED)]
    values = eur(ds, won)
    return float(values[np.isfinite(values)].sum())


def quota(ds: Dataset, owner: int, period: tuple[dt.date, dt.date]) -> list[float]:
    q = ds.quotas
    mask = (q.user == owner) & (q.period_start == date_to_day(period[0])) & (q.period_months == 3)
    return q.amount[mask].tolist()


def slips(ds: Dataset, deal: int) -> int:
    c = ds.close_date_changes
    mask = c.deal == deal
    return int((c.new_day[mask] > c.old_day[mask]).sum())


def day_of(ms: np.ndarray | int) -> np.ndarray:
    return np.asarray(ms) // DAY_MS


# ---- the data set's frame ------------------------------------------------------------------


def test_frame(demo: Dataset) -> None:
    assert demo.reference_date == DEFAULT_REFERENCE_DATE == dt.date(2026, 9, 30)
    assert demo.reporting_currency == "EUR"
    assert demo.currencies == ["EUR", "USD", "GBP", "CHF"] == list(CURRENCIES)
    assert demo.fx_rates == {"EUR": 1.0, "USD": 1.08, "GBP": 0.85} == FX_RATES
    assert "CHF" not in demo.fx_rates
    assert "Platform licence" in demo.products
    assert demo.notes["scenario_quarter"] == Q0
    assert demo.notes["next_quarter"] == NEXT
    assert demo.notes["history_quarters"] == PREVIOUS


def test_users(demo: Dataset) -> None:
    u = demo.users
    expected = [
        ("Alice", "Martin", "alice.martin", "France Nord"),
        ("Bruno", "Lefèvre", "bruno.lefevre", "France Nord"),
        ("Chloé", "Dubois", "chloe.dubois", "France Nord"),
        ("David", "Moreau", "david.moreau", "France Sud"),
        ("Emma", "Laurent", "emma.laurent", "France Sud"),
    ]
    sophie = user(demo, "sophie.bernard@sandbox.local")
    for first, last, local, team in expected:
        i = user(demo, f"{local}@sandbox.local")
        assert (u.first_name[i], u.last_name[i], u.team[i]) == (first, last, team)
        assert USER_ROLES[u.role[i]] == "ae"
        assert u.manager[i] == sophie
    assert USER_ROLES[u.role[sophie]] == "manager" and u.team[sophie] is None
    integration = u.first_name.index("Integration")
    assert USER_ROLES[u.role[integration]] == "integration"
    assert (u.role == USER_ROLES.index("ae")).sum() == 5
    assert all(e.endswith("@sandbox.local") for e in u.email)
    notes = demo.notes
    assert [notes[k] for k in ("alice", "bruno", "chloe", "david", "emma")] == [0, 1, 2, 3, 4]
    assert notes["integration_user"] == integration and notes["manager"] == sophie


# ---- Alice, the worked example -----------------------------------------------------------


def test_alice_scenario_quarter(demo: Dataset) -> None:
    alice = user(demo, "alice.martin@sandbox.local")
    d = demo.deals
    won = closed_in(demo, alice, Q0, STAGE_WON)
    lost = closed_in(demo, alice, Q0, STAGE_LOST)
    assert len(won) == 10 and len(lost) == 30
    assert d.amount[won].tolist() == [15000.0] * 10
    assert {demo.currencies[c] for c in d.currency[won]} == {"EUR"}
    assert set(d.deal_type[won].tolist()) <= set(CREDITED)
    assert bookings(demo, alice, Q0) == 150_000.0
    assert quota(demo, alice, Q0) == [120_000.0]
    assert bookings(demo, alice, Q0) / quota(demo, alice, Q0)[0] == 1.25
    assert len(won) / (len(won) + len(lost)) == 0.25
    assert (d.term_months[np.r_[won, lost]] == 12).all()
    # Sales cycle: whole calendar days from created to close, created at 09:00 UTC.
    cycles = d.close_day[won] - day_of(d.created_at[won])
    assert sorted(cycles.tolist()) == [30, 35, 40, 45, 45, 45, 50, 50, 55, 55]
    assert cycles.mean() == 45.0
    assert ((d.created_at[won] % DAY_MS) == 9 * 3_600_000).all()
    assert sorted(np.r_[won, lost].tolist()) == demo.notes["alice_scenario_deals"]
    assert demo.notes["alice_scenario_quarter"]["bookings_arr"] == 150_000.0


def test_alice_demo_stage_entries(demo: Dataset) -> None:
    alice = user(demo, "alice.martin@sandbox.local")
    sc, d = demo.stage_changes, demo.deals
    start, end = days(Q0)
    entered = (sc.stage == DEMO) & (d.owner[sc.deal] == alice)
    entered &= (day_of(sc.changed_at) >= start) & (day_of(sc.changed_at) <= end)
    deals = np.unique(sc.deal[entered])
    assert len(deals) == int(entered.sum()) == 40
    won = closed_in(demo, alice, Q0, STAGE_WON)
    lost = closed_in(demo, alice, Q0, STAGE_LOST)
    assert set(deals.tolist()) == set(won.tolist()) | set(lost.tolist())
    # Demo conversion: of the deals that entered demo in the quarter (all closed), 25% won.
    assert np.isin(d.stage[deals], [STAGE_WON, STAGE_LOST]).all()
    assert (d.stage[deals] == STAGE_WON).mean() == 0.25
    names = {s: STAGES.index(s) for s in STAGES}
    funnel_won = [names[s] for s in ("prospecting", "qualification", "demo", "proposal")]
    funnel_won += [names["negotiation"], STAGE_WON]
    funnel_lost = [names["prospecting"], names["qualification"], DEMO, STAGE_LOST]
    for deal in deals:
        rows = np.flatnonzero(sc.deal == deal)
        path = sc.stage[rows].tolist()
        assert path == (funnel_won if d.stage[deal] == STAGE_WON else funnel_lost)
        times = sc.changed_at[rows]
        assert times[0] == d.created_at[deal]
        assert (np.diff(times) > 0).all()
        assert day_of(times[-1]) == d.close_day[deal]  # the closing change on the close date
        assert d.last_modified[deal] >= times[-1]


def test_alice_demo_activities(demo: Dataset) -> None:
    alice = user(demo, "alice.martin@sandbox.local")
    a = demo.activities
    start, end = days(Q0)
    mask = (a.owner == alice) & (a.kind == 0) & (day_of(a.start) >= start)
    mask &= day_of(a.start) <= end
    assert 150 <= mask.sum() <= 160
    assert mask.sum() == 156
    weeks = (end - start + 1) / 7
    assert 11.5 < mask.sum() / weeks < 12.5
    assert ((day_of(a.start[mask]) + 3) % 7 < 5).all()  # weekdays
    hours = (a.start[mask] % DAY_MS) // 3_600_000
    assert ((hours >= 8) & (hours <= 16)).all()  # business hours (UTC; 10:00-18:00 in Paris)


def test_alice_open_pipeline_next_quarter(demo: Dataset) -> None:
    alice = user(demo, "alice.martin@sandbox.local")
    d = demo.deals
    start, end = days(NEXT)
    open_next = np.flatnonzero(
        (d.owner == alice) & np.isin(d.stage, OPEN_STAGES) & (d.close_day >= start)
    )
    assert len(open_next) >= 5
    assert (d.close_day[open_next] <= end).all()
    categories = {FORECAST_CATEGORIES[c] for c in d.forecast_category[open_next]}
    assert categories == {"commit", "best_case", "pipeline"}
    assert sorted(open_next.tolist()) == sorted(demo.notes["alice_open_deals"])


def test_alice_history(demo: Dataset) -> None:
    alice = user(demo, "alice.martin@sandbox.local")
    expected = [  # (quota, bookings, won, lost) for Q3 2025 .. Q2 2026
        (100_000.0, 105_000.0, 7, 22),
        (110_000.0, 99_000.0, 7, 24),
        (110_000.0, 121_000.0, 8, 25),
        (120_000.0, 112_000.0, 8, 26),
    ]
    for period, (q, booked, n_won, n_lost) in zip(PREVIOUS, expected, strict=True):
        assert quota(demo, alice, period) == [q]
        assert bookings(demo, alice, period) == booked
        assert len(closed_in(demo, alice, period, STAGE_WON)) == n_won
        assert len(closed_in(demo, alice, period, STAGE_LOST)) == n_lost
    # Year to date (Q1-Q3 2026): 121k + 112k + 150k against 350k.
    ytd = sum(bookings(demo, alice, p) for p in (PREVIOUS[2], PREVIOUS[3], Q0))
    assert ytd == 383_000.0
    assert quota(demo, alice, NEXT) == [125_000.0]


# ---- the other four AEs ---------------------------------------------------------------------


def test_bruno_under_half(demo: Dataset) -> None:
    bruno = user(demo, "bruno.lefevre@sandbox.local")
    assert quota(demo, bruno, Q0) == [100_000.0]
    assert bookings(demo, bruno, Q0) == 42_000.0
    assert bookings(demo, bruno, Q0) / quota(demo, bruno, Q0)[0] < 0.5
    won = closed_in(demo, bruno, Q0, STAGE_WON)
    # A won renewal that is not quota-credited sits beside his three credited deals.
    assert len(won) == 4
    renewal = demo.notes["won_renewal"]
    assert renewal in won and demo.deals.deal_type[renewal] == RENEWAL
    assert demo.deals.amount[renewal] == 30_000.0


def test_chloe_has_no_quota(demo: Dataset) -> None:
    chloe = user(demo, "chloe.dubois@sandbox.local")
    assert not (demo.quotas.user == chloe).any()
    assert len(closed_in(demo, chloe, Q0, STAGE_WON)) == 5
    assert bookings(demo, chloe, Q0) == 61_500.0
    # Two overdue open deals (close date before the reference date, still open).
    d = demo.deals
    overdue = demo.notes["overdue_open_deals"]
    assert (d.owner[overdue] == chloe).all() and np.isin(d.stage[overdue], OPEN_STAGES).all()
    assert (d.close_day[overdue] < date_to_day(Q0[1])).all()


def test_david_foreign_currencies(demo: Dataset) -> None:
    david = user(demo, "david.moreau@sandbox.local")
    d = demo.deals
    won = closed_in(demo, david, Q0, STAGE_WON)
    codes = [demo.currencies[c] for c in d.currency[won]]
    usd = won[[c == "USD" for c in codes]]
    gbp = won[[c == "GBP" for c in codes]]
    assert len(usd) == 1 and len(gbp) == 1
    assert d.amount[usd[0]] == 21_600.0 and eur(demo, usd)[0] == pytest.approx(20_000.0)
    assert d.amount[gbp[0]] == 10_200.0 and eur(demo, gbp)[0] == pytest.approx(12_000.0)
    assert demo.accounts.country[d.account[usd[0]]] == "US"
    assert bookings(demo, david, Q0) == pytest.approx(80_000.0)
    assert quota(demo, david, Q0) == [90_000.0]


def test_emma_bad_deals(demo: Dataset) -> None:
    emma = user(demo, "emma.laurent@sandbox.local")
    d = demo.deals
    bad = demo.notes["bad_deals"]
    assert set(bad) == {"no_amount", "no_close_date", "unknown_stage", "unconvertible_currency",
                        "deleted"}  # fmt: skip
    assert (d.owner[list(bad.values())] == emma).all()
    start, end = days(Q0)
    in_q0 = lambda deal: start <= d.close_day[deal] <= end  # noqa: E731

    # Exactly one deal of each kind among all of Emma's deals.
    mine = d.owner == emma
    assert np.flatnonzero(mine & np.isnan(d.amount)).tolist() == [bad["no_amount"]]
    assert in_q0(bad["no_amount"]) and d.stage[bad["no_amount"]] == STAGE_WON

    assert np.flatnonzero(mine & (d.close_day == NULL_DAY)).tolist() == [bad["no_close_date"]]
    rows = demo.stage_changes.deal == bad["no_close_date"]
    assert (demo.stage_changes.close_day[rows] == NULL_DAY).all()
    assert start <= day_of(d.created_at[bad["no_close_date"]]) <= end

    assert np.flatnonzero(mine & (d.stage == STAGE_LEGACY)).tolist() == [bad["unknown_stage"]]
    assert STAGES[d.stage[bad["unknown_stage"]]] == "legacy" and in_q0(bad["unknown_stage"])

    chf = CURRENCIES.index("CHF")
    assert np.flatnonzero(mine & (d.currency == chf)).tolist() == [bad["unconvertible_currency"]]
    assert in_q0(bad["unconvertible_currency"]) and d.amount[bad["unconvertible_currency"]] > 0

    deleted = bad["deleted"]
    assert np.flatnonzero(mine & d.is_deleted).tolist() == [deleted]
    assert in_q0(deleted) and d.stage[deleted] == STAGE_WON
    last_change = demo.stage_changes.changed_at[demo.stage_changes.deal == deleted].max()
    assert d.last_modified[deleted] == last_change  # the deletion did not bump it
    assert d.deleted_at[deleted] > d.last_modified[deleted]
    assert day_of(d.deleted_at[deleted]) <= end

    # The clean part of her quarter.
    assert quota(demo, emma, Q0) == [110_000.0]
    assert bookings(demo, emma, Q0) == 99_000.0  # bad deals contribute nothing convertible


def test_unassigned_deals(demo: Dataset) -> None:
    integration = demo.notes["integration_user"]
    d = demo.deals
    start, end = days(Q0)
    mine = np.flatnonzero(d.owner == integration)
    assert sorted(mine.tolist()) == sorted(demo.notes["unassigned_deals"])
    assert len(mine) == 2
    assert ((d.close_day[mine] >= start) & (d.close_day[mine] <= end)).all()
    assert sorted(STAGES[s] for s in d.stage[mine]) == ["closed_lost", "closed_won"]


# ---- cross-cutting scenario facts ---------------------------------------------------------


def test_retention_signals(demo: Dataset) -> None:
    d, acc = demo.deals, demo.accounts
    ref = date_to_day(demo.reference_date)
    new_business = DEAL_TYPES.index("new_business")
    won = np.flatnonzero((d.stage == STAGE_WON) & (d.deal_type == new_business) & ~d.is_deleted)
    eligible = won[d.close_day[won] <= ref - 90]
    churn = acc.churn_day[d.account[eligible]]
    within_90 = (churn != NULL_DAY) & (churn - d.close_day[eligible] <= 90)
    assert 2 <= within_90.sum() < len(eligible)
    later = (churn != NULL_DAY) & (churn - d.close_day[eligible] > 90)
    assert later.sum() >= 1  # churned, but after the 90-day window
    # One lost renewal on an account that had won new business, within 90 days of it.
    renewals = np.flatnonzero((d.deal_type == RENEWAL) & (d.stage == STAGE_LOST))
    assert len(renewals) == 1
    renewal = renewals[0]
    before = eligible[d.account[eligible] == d.account[renewal]]
    assert len(before) == 1
    assert 0 < d.close_day[renewal] - d.close_day[before[0]] <= 90
    # Alice's won deals in the scenario quarter are customers: won accounts.
    alice_won = closed_in(demo, demo.notes["alice"], Q0, STAGE_WON)
    assert len(set(d.account[alice_won].tolist())) == 10


def test_close_date_slips(demo: Dataset) -> None:
    c, d, sc = demo.close_date_changes, demo.deals, demo.stage_changes
    expected = demo.notes["close_date_slips"]
    assert sum(1 for n in expected.values() if n >= 1) >= 5
    assert {1, 2, 3} <= set(expected.values())
    edited = set(np.unique(c.deal).tolist())
    assert edited == set(expected)
    for deal, n in expected.items():
        assert slips(demo, deal) == n
        mask = c.deal == deal
        assert d.close_day[deal] == c.new_day[mask][-1]
        assert 1 <= mask.sum() <= 3
    earlier = demo.notes["moved_earlier_deal"]
    mask = c.deal == earlier
    assert mask.sum() == 1 and c.new_day[mask][0] < c.old_day[mask][0]
    assert slips(demo, earlier) == 0
    # Some slipped deals are open, some closed.
    stages = {int(d.stage[k]) for k, n in expected.items() if n}
    assert stages & {STAGE_WON, STAGE_LOST} and stages & set(OPEN_STAGES)
    # Stage rows carry the close date in effect at their time.
    deal = demo.notes["alice_won_deals"][2]
    rows = np.flatnonzero(sc.deal == deal)
    edits = np.flatnonzero(c.deal == deal)
    for r in rows:
        applied = edits[c.changed_at[edits] <= sc.changed_at[r]]
        in_effect = c.new_day[applied[-1]] if len(applied) else c.old_day[edits[0]]
        assert sc.close_day[r] == in_effect
    assert sc.close_day[rows[0]] != sc.close_day[rows[-1]]


def test_forecast_and_probability(demo: Dataset) -> None:
    d = demo.deals
    by_stage = {
        "prospecting": ("pipeline", 10),
        "qualification": ("pipeline", 20),
        "demo": ("pipeline", 40),
        "proposal": ("best_case", 60),
        "negotiation": ("commit", 80),
        "closed_won": ("closed", 100),
        "closed_lost": ("omitted", 0),
    }
    for i in range(len(d)):
        stage = STAGES[d.stage[i]]
        if stage in by_stage:
            category, probability = by_stage[stage]
            assert FORECAST_CATEGORIES[d.forecast_category[i]] == category
            assert d.probability[i] == probability


def test_timestamps_and_terms(demo: Dataset) -> None:
    d, sc, c = demo.deals, demo.stage_changes, demo.close_date_changes
    assert (d.last_modified >= d.created_at).all()
    assert (d.last_modified[sc.deal] >= sc.changed_at).all()
    assert (d.last_modified[c.deal] >= c.changed_at).all()
    assert (
        d.last_modified > np.array([sc.changed_at[sc.deal == i].max() for i in range(len(d))])
    ).any()
    terms = d.term_months
    assert set(terms.tolist()) == {12, 24, 36}
    assert (terms == 12).mean() > 0.95
    alice = demo.notes["alice"]
    assert (terms[d.owner == alice] == 12).all()


# ---- invariants ---------------------------------------------------------------------------


def test_validate_demo_and_filler(demo: Dataset, big: Dataset) -> None:
    assert validate(demo) == []
    assert validate(big) == []


def test_validate_reports_broken_data(demo: Dataset) -> None:
    broken = copy.deepcopy(demo)
    broken.deals.last_modified[0] = broken.deals.created_at[0] - 1
    broken.activities.start[0] = broken.activities.start[-1] + 1
    broken.stage_changes.close_day[0] += 1
    problems = validate(broken)
    assert any("last_modified < created_at" in p for p in problems)
    assert any("activities not sorted" in p for p in problems)
    assert any("close date in effect" in p for p in problems)

    dangling = copy.deepcopy(demo)
    dangling.stage_changes.deal[-1] = len(dangling.deals)
    dangling.activities.account[0] = len(dangling.accounts)
    problems = validate(dangling)
    assert any("stage_changes.deal out of range" in p for p in problems)
    assert any("activities.account out of range" in p for p in problems)

    short = copy.deepcopy(demo)
    short.deals.owner = short.deals.owner[:-1]
    assert any("different lengths" in p for p in validate(short))
    wrong = copy.deepcopy(demo)
    wrong.deals.owner = wrong.deals.owner.astype(np.int64)
    assert any("deals.owner: expected int32" in p for p in validate(wrong))


# ---- sizes, determinism, arguments --------------------------------------------------------


def test_sizes_exact(demo: Dataset) -> None:
    minimum = len(demo.deals)
    assert demo.notes["scenario_deal_count"] == minimum
    assert len(generate(deals=minimum).deals) == minimum
    ten = generate(deals=10_000)
    assert len(ten.deals) == 10_000
    assert validate(ten) == []


def test_scenario_does_not_depend_on_size(demo: Dataset, big: Dataset) -> None:
    sized = generate(deals=3_000)
    n = len(demo.deals)
    for column in ("owner", "account", "created_at", "close_day", "stage", "amount"):
        assert np.array_equal(getattr(sized.deals, column)[:n], getattr(demo.deals, column)[:n],
                              equal_nan=True)  # fmt: skip
    assert sized.users.email[:7] == demo.users.email
    assert sized.notes["alice_scenario_deals"] == demo.notes["alice_scenario_deals"]


def _same(a: Dataset, b: Dataset) -> bool:
    for name in ("users", "accounts", "deals", "stage_changes", "close_date_changes",
                 "activities", "quotas"):  # fmt: skip
        ta, tb = getattr(a, name), getattr(b, name)
        for column, va in vars(ta).items():
            vb = getattr(tb, column)
            if isinstance(va, np.ndarray):
                if va.dtype != vb.dtype or not np.array_equal(
                    va, vb, equal_nan=va.dtype.kind == "f"
                ):
                    return False
            elif va != vb:
                return False
    return True


def test_deterministic() -> None:
    assert _same(generate(), generate())
    assert _same(generate(seed=3, deals=2_000), generate(seed=3, deals=2_000))
    first, second = generate(seed=1, deals=2_000), generate(seed=2, deals=2_000)
    n = first.notes["scenario_deal_count"]
    assert not np.array_equal(first.deals.created_at[n:], second.deals.created_at[n:])
    assert first.accounts.name[-50:] != second.accounts.name[-50:]


def test_argument_errors(demo: Dataset) -> None:
    minimum = len(demo.deals)
    with pytest.raises(ValueError, match="last day of a calendar quarter"):
        generate(reference_date=dt.date(2026, 9, 29))
    with pytest.raises(ValueError, match="last day of a calendar quarter"):
        generate(reference_date=dt.date(2026, 8, 31))
    with pytest.raises(TypeError, match=r"datetime\.date"):
        generate(reference_date=dt.datetime(2026, 9, 30, tzinfo=dt.UTC))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"at least {minimum}|between {minimum}"):
        generate(deals=minimum - 1)
    with pytest.raises(ValueError, match="1,000,000"):
        generate(deals=MAX_DEALS + 1)
    with pytest.raises(TypeError):
        generate(deals=True)


@pytest.mark.parametrize(
    "reference_date", [dt.date(2025, 3, 31), dt.date(2024, 3, 31), dt.date(2027, 12, 31)]
)
def test_other_reference_dates(reference_date: dt.date) -> None:
    ds = generate(deals=1_500, reference_date=reference_date)
    assert validate(ds) == []
    start, end = ds.notes["scenario_quarter"]
    assert end == reference_date and start.day == 1 and (end - start).days < 92
    alice = ds.notes["alice"]
    won = closed_in(ds, alice, (start, end), STAGE_WON)
    assert len(won) == 10 and len(closed_in(ds, alice, (start, end), STAGE_LOST)) == 30
    assert bookings(ds, alice, (start, end)) == 150_000.0
    assert (ds.deals.close_day[won] - day_of(ds.deals.created_at[won])).mean() == 45.0
    a = ds.activities
    mask = (a.owner == alice) & (a.kind == 0)
    mask &= (day_of(a.start) >= date_to_day(start)) & (day_of(a.start) <= date_to_day(end))
    assert mask.sum() == 156


# ---- filler realism -----------------------------------------------------------------------


def test_filler_shape(big: Dataset) -> None:
    n = big.notes["scenario_deal_count"]
    d = big.deals
    assert len(d) == 50_000
    first_ae, end_ae = big.notes["filler_aes"]
    n_ae = end_ae - first_ae
    assert n_ae == round((50_000 - n) / 1600)
    assert (big.users.role[first_ae:end_ae] == USER_ROLES.index("ae")).all()
    teams = [big.users.team[i] for i in range(first_ae, end_ae)]
    assert max(teams.count(t) for t in set(teams)) <= 8
    assert len(set(big.users.email)) == len(big.users)
    assert len(set(big.accounts.name)) == len(big.accounts)
    assert abs(len(big.accounts) - 50_000 / 4) < 500
    # Filler deals never go to the demo AEs.
    assert not np.isin(d.owner[n:], [0, 1, 2, 3, 4, 5]).any()
    # Currency mix.
    mix = np.bincount(d.currency[n:], minlength=4) / (50_000 - n)
    assert mix == pytest.approx([0.75, 0.15, 0.08, 0.02], abs=0.02)
    # Amounts and cycles.
    euros = d.amount[n:][d.currency[n:] == 0]
    assert 10_000 <= np.nanmedian(euros) <= 14_000
    assert (np.nan_to_num(euros) % 100 == 0).all()
    cycles = d.close_day[n:] - day_of(d.created_at[n:])
    assert 35 <= np.median(cycles) <= 45
    # Outcomes of deals due before the reference date.
    ref = date_to_day(big.reference_date)
    due = d.close_day[n:] <= ref
    stage = d.stage[n:]
    assert 0.22 <= (stage[due] == STAGE_WON).mean() <= 0.32
    assert 0.02 <= np.isin(stage[due], [*OPEN_STAGES, 0]).mean() <= 0.08
    assert np.isin(stage[~due], [*OPEN_STAGES, 0]).all()
    assert 0.005 <= d.is_deleted[n:].mean() <= 0.015
    # Close-date edits for about 10% of the deals, activities 1-2x the deals.
    edited = np.unique(big.close_date_changes.deal)
    assert 0.07 <= len(edited[edited >= n]) / (50_000 - n) <= 0.12
    assert 1.0 <= len(big.activities) / len(d) <= 2.0
    # Quotas for every filler AE for every quarter covered (8 quarters + the next one).
    q = big.quotas
    filler_q = (q.user >= first_ae) & (q.user < end_ae)
    assert filler_q.sum() == n_ae * 9
    assert (q.amount[filler_q] % 1000 == 0).all() and (q.amount[filler_q] >= 1000).all()


def test_filler_stage_histories_walk_the_funnel(big: Dataset) -> None:
    n = big.notes["scenario_deal_count"]
    sc, d = big.stage_changes, big.deals
    rows = sc.deal >= n
    deal, stage = sc.deal[rows], sc.stage[rows]
    first = np.flatnonzero(np.r_[True, deal[1:] != deal[:-1]])
    within = np.arange(len(deal)) - np.repeat(first, np.diff(np.r_[first, len(deal)]))
    last = np.r_[first[1:] - 1, len(deal) - 1]
    not_last = np.ones(len(deal), dtype=bool)
    not_last[last] = False
    assert (stage[not_last] == within[not_last]).all()  # prospecting, qualification, ...
    final = stage[last]
    assert (final == d.stage[deal[last]]).all()
    won = final == STAGE_WON
    assert (within[last][won] == 5).all()  # won deals walked the whole funnel
