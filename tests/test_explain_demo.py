"""``crm-kpi kpis explain`` on both CRMs' demos (``crm-kpi demo --keep``): Alice's 2026-Q3
attainment and win rate, and for every rep, stored period and KPI, the listed deals' sums
give the stored value."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crm_kpi_worker.kpis.calendar import FiscalCalendar
from crm_kpi_worker.kpis.explain import DEAL_KPIS, KPI_SPECS, explain
from crm_kpi_worker.kpis.results import KPI_KEYS
from crm_kpi_worker.sync.cli import main
from crm_kpi_worker.sync.cli_demo import run_demo
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.explain import ExplainError, explain_kpi
from crm_kpi_worker.sync.frames import build_input
from crm_kpi_worker.sync.store import Store

AS_OF = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
ALICE = "alice.martin@sandbox.local"


@pytest.fixture(scope="module", params=["salesforce", "hubspot"])
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's kept folder; returns its config."""
    folder = tmp_path_factory.mktemp(f"demo-{request.param}")
    result = run_demo(
        crm=request.param, reference_date=dt.date(2026, 9, 30), as_of=AS_OF, keep=folder
    )
    return Path(result["kept"]["config"])


def _explain(config: Path, *args: str) -> Any:
    outcome = CliRunner().invoke(main, ["kpis", "explain", "--config", str(config), *args])
    assert outcome.exit_code == 0, outcome.output
    return outcome


def test_alice_attainment_is_her_ten_won_deals_against_her_quota(demo: Path) -> None:
    outcome = _explain(
        demo, "--rep", ALICE, "--period", "2026-Q3", "--kpi", "quota_attainment", "--format", "json"
    )
    found = json.loads(outcome.stdout)
    assert found["value"] == 1.25 and found["matches_store"] and found["recomputed"] == 1.25
    assert found["formula"] == (
        "quota attainment = bookings ARR 150,000 EUR / quota 120,000 EUR = 125%"
    )
    counting = [d for d in found["deals"] if d["counts"]]
    assert len(counting) == 10
    assert {d["arr"] for d in counting} == {15000.0}
    assert all(d["adds"] == {"bookings": 15000.0} and d["stage"] for d in counting)
    assert all(dt.date(2026, 7, 1).isoformat() <= d["close_date"] <= "2026-09-30" for d in counting)
    assert {d["reason"] for d in found["deals"] if not d["counts"]} == {"lost"}
    assert found["parts"]["bookings"]["total"] == 150000.0
    assert found["terms"] == {"quota": 120000.0}
    assert found["not_listed"]["outside_period"]["deals"] > 0


def test_alice_win_rate_table(demo: Path) -> None:
    outcome = _explain(demo, "--rep", ALICE, "--period", "2026-Q3", "--kpi", "win_rate")
    text = outcome.stdout
    assert "stored value: 0.25 (25%)" in text
    assert "win rate = won 10 / (won 10 + lost 30) = 25%" in text
    assert "Deals: 40 count, 0 do not" in text
    assert text.count("counts: won +1") == 10 and text.count("counts: lost +1") == 30


def test_every_stored_value_is_the_sum_of_its_listed_deals(demo: Path) -> None:
    config = load_config(demo)
    source = config.sources[0]
    with Store.open(config.store.resolve_url(), read_only=True) as store:
        run = store.last_computed_run(source.name)
        as_of = run["as_of"].astimezone(config.fiscal.tz).date()
        inputs = build_input(store, config, source, as_of)
        stored = {
            (row.subject, row.period_key, row.kpi): row.value
            for row in store.kpis(source.name)
            if row.scope == "rep"
        }
    calendar = FiscalCalendar(config.fiscal.year_start_month, config.fiscal.year_named_by)
    frames = (
        inputs.deals,
        inputs.reps,
        inputs.quotas,
        inputs.activities,
        inputs.accounts,
        inputs.snapshots,
        inputs.settings,
        as_of,
    )
    periods = sorted({period for _, period, _ in stored})
    checked = 0
    for rep, rep_id in enumerate(inputs.reps.id.tolist()):
        for key in periods:
            period = calendar.period(key)
            for kpi in KPI_KEYS:
                value = stored[(rep_id, key, kpi)]
                found = explain(*frames, rep=rep, period=period, kpi=kpi, currency="EUR")
                expected = None if value is None else float(value)
                assert _close(found.value, expected), (rep_id, key, kpi)
                assert _close(found.recomputed, expected), (rep_id, key, kpi, found.formula)
                for part in KPI_SPECS[kpi].parts:
                    adds = [d.contributions[part] for d in found.deals if part in d.contributions]
                    assert _close(math.fsum(adds), found.totals[part])
                checked += kpi in DEAL_KPIS
    assert checked >= 6 * 6 * len(DEAL_KPIS)


def test_bad_data_deals_say_why_they_are_left_out(demo: Path) -> None:
    config = load_config(demo)
    with Store.open(config.store.resolve_url(), read_only=True) as store:
        reps = [r.email for r in store.reps(config.sources[0].name) if r.is_ae]
        reasons: dict[str, list[Any]] = {}
        for email in reps:
            found = explain_kpi(
                config, store, rep=email, period="2026-Q3", kpi="bookings_arr", every_deal=True
            )
            for deal in found["deals"]:
                if deal["excluded"]:
                    reasons.setdefault(deal["reason"], []).append(deal["excluded"])
    # The scenario's rep with bad data: no amount, no close date, an unknown stage.
    assert {"no_arr", "no_close_date", "unknown_stage"} <= set(reasons)


def test_what_cannot_be_explained_says_why(demo: Path) -> None:
    config = load_config(demo)
    with Store.open(config.store.resolve_url(), read_only=True) as store:
        with pytest.raises(ExplainError, match=r"no rep matches 'nobody@x\.io'.*alice"):
            explain_kpi(config, store, rep="nobody@x.io", period="2026-Q3", kpi="win_rate")
        with pytest.raises(ExplainError, match="not a period key"):
            explain_kpi(config, store, rep=ALICE, period="quarter", kpi="win_rate")
        with pytest.raises(ExplainError, match="unknown KPI"):
            explain_kpi(config, store, rep=ALICE, period="2026-Q3", kpi="nope")
    command = ["kpis", "explain", "--config", str(demo), "--rep", "x", "--period", "2026-Q3"]
    outcome = CliRunner().invoke(main, [*command, "--kpi", "win_rate"])
    assert outcome.exit_code == 1 and "no rep matches 'x'" in outcome.output


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
