"""The engine's input frames (validation, defaults) and the purity rule of DESIGN.md."""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import crm_kpi_worker.kpis as kpis
from crm_kpi_worker.kpis.frames import (
    Accounts,
    Activities,
    Deals,
    PayoutCurve,
    Quotas,
    Reps,
    Settings,
    Snapshots,
)

D = dt.date

# What kpis/ may import: the standard library's pure parts and numpy. No I/O, no other part
# of the project (not even the canonical model or the config).
ALLOWED_IMPORTS = {"__future__", "collections", "dataclasses", "datetime", "math", "numpy", "re"}
ALLOWED_IMPORTS |= {"typing", "importlib"}  # importlib: __init__ loads its own modules lazily
IO_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}


def kpis_modules() -> list[Path]:
    names = [m.name for m in pkgutil.iter_modules(kpis.__path__)]
    assert {"calendar", "engine", "frames", "notes", "results"} <= set(names)
    paths = [Path(kpis.__file__)]
    for name in names:
        module = importlib.import_module(f"crm_kpi_worker.kpis.{name}")
        assert module.__file__ is not None
        paths.append(Path(module.__file__))
    return paths


def test_kpis_is_pure() -> None:
    """DESIGN.md: kpis/ imports nothing else of the project and does no I/O."""
    for path in kpis_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    assert top in ALLOWED_IMPORTS, f"{path.name} imports {alias.name}"
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the kpis package only
                    assert node.level == 1, f"{path.name}: import from above kpis/"
                    continue
                module = node.module or ""
                if module.startswith("crm_kpi_worker"):
                    assert module.startswith("crm_kpi_worker.kpis"), f"{path.name}: {module}"
                else:
                    top = module.split(".")[0]
                    assert top in ALLOWED_IMPORTS, f"{path.name} imports from {module}"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in IO_CALLS, f"{path.name} calls {node.func.id}()"


def test_deals_defaults_for_optional_columns() -> None:
    deals = Deals(
        id=["a", "b"],
        owner=[0, 0],
        created=[D(2026, 1, 1), D(2026, 2, 1)],
        close=[None, D(2026, 3, 1)],
        is_won=[False, True],
        is_lost=[False, False],
        arr=[None, 5.0],
    )
    assert deals.owner.dtype == np.int32
    assert deals.close.dtype == np.dtype("datetime64[D]")
    assert np.isnat(deals.close[0])
    assert np.isnan(deals.arr[0])
    assert deals.account.tolist() == [-1, -1]
    assert (deals.cycle_start == deals.created).all()
    assert (deals.stage_entered == deals.created).all()
    assert deals.credited.all() and not deals.is_renewal.any() and deals.stage_known.all()
    assert deals.forecast.tolist() == [0, 0]
    assert np.isnan(deals.probability).all()
    assert np.isnat(deals.entered_entry).all()
    assert deals.slips.tolist() == [0, 0]
    assert len(deals) == 2
    assert deals.take([1]).id.tolist() == ["b"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"owner": [0]}, "Deals.owner: 1 rows, expected 2"),
        ({"owner": [-1, 0]}, "Deals.owner: a row of Reps"),
        ({"owner": [0.5, 0]}, "expected integers"),
        ({"is_won": [True, True], "is_lost": [True, False]}, "both won and lost"),
        ({"arr": [-1.0, 1.0]}, "never negative"),
        ({"arr": [float("inf"), 1.0]}, "infinite"),
        ({"arr": ["x", 1.0]}, "not numbers"),
        ({"probability": [1.5, None]}, "fraction 0..1"),
        ({"forecast": [5, 0]}, "an index into"),
        ({"created": [None, D(2026, 1, 1)]}, "every deal has a created date"),
        ({"close": ["soon", None]}, "not calendar dates"),
        ({"is_won": [1, 0]}, "expected booleans"),
        ({"account": [-2, 0]}, "or -1 for none"),
        ({"slips": [-1, 0]}, "never negative"),
    ],
)
def test_deals_are_validated(change: dict[str, object], message: str) -> None:
    columns: dict[str, object] = {
        "id": ["a", "b"],
        "owner": [0, 0],
        "created": [D(2026, 1, 1)] * 2,
        "close": [None, None],
        "is_won": [False, False],
        "is_lost": [False, False],
        "arr": [1.0, 1.0],
        **change,
    }
    with pytest.raises(ValueError, match=message):
        Deals(**columns)


def test_other_frames_are_validated() -> None:
    with pytest.raises(ValueError, match="ids must be unique"):
        Reps(id=["a", "a"])
    with pytest.raises(ValueError, match="at most one unassigned"):
        Reps(id=["a", "b"], is_unassigned=[True, True])
    with pytest.raises(ValueError, match="in no team"):
        Reps(id=["a", "b"], team=["east", "east"], is_unassigned=[False, True])
    with pytest.raises(ValueError, match="team name"):
        Reps(id=["a"], team=[3])
    with pytest.raises(ValueError, match="end: before start"):
        Quotas(rep=[0], start=[D(2026, 2, 1)], end=[D(2026, 1, 31)], amount=[1.0])
    with pytest.raises(ValueError, match="a number >= 0"):
        Quotas(rep=[0], start=[D(2026, 1, 1)], end=[D(2026, 1, 31)], amount=[None])
    with pytest.raises(ValueError, match="has a date"):
        Activities(owner=[0], day=[None])
    with pytest.raises(ValueError, match="rep, team or org"):
        Snapshots.from_rows([("user", "a", "2026-Q1", 1.0, D(2026, 1, 15))])
    with pytest.raises(ValueError, match="distinct kinds"):
        Settings(periods=("month", "month"))
    with pytest.raises(ValueError, match="distinct kinds"):
        Settings(periods=("week",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="snapshot_day"):
        Settings(snapshot_day=31)
    with pytest.raises(ValueError, match="amounts >= 0"):
        Settings(variable_target=-1.0)
    with pytest.raises(ValueError, match="cap"):
        PayoutCurve(cap=0.5)


def test_reps_defaults_and_snapshot_round_trip() -> None:
    reps = Reps(id=["u1", "u2"])
    assert reps.name.tolist() == ["u1", "u2"]
    assert reps.team.tolist() == [None, None]
    assert reps.is_ae.all() and not reps.is_unassigned.any()
    assert np.isnat(reps.start).all()
    rows = [("rep", "u1", "2026-Q1", 10.0, D(2026, 1, 15))]
    assert Snapshots.from_rows(rows).rows() == rows
    assert len(Accounts.empty()) == 0 and len(Snapshots.empty()) == 0
    assert Activities.unmapped().demos_mapped is False
    assert Settings(variable_targets={"A@X.IO": 1.0}).variable_targets == {"a@x.io": 1.0}


def test_payout_curve() -> None:
    curve = PayoutCurve()
    got = curve.payout(np.array([0.0, 0.5, 1.0, 1.25, 1.6667, 3.0]))
    assert got.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.375, 2.0, 2.0], abs=1e-4)
    steep = PayoutCurve(accelerator_from=0.8, accelerator=2.0, cap=3.0)
    assert steep.payout(np.array([1.0])).tolist() == pytest.approx([1.2])
