"""Deterministic generator of the sandbox CRMs' data set.

``generate()`` always builds the KPIS.md "Demo scenario" (``demo_scenario.py``: five AEs, a
manager, an integration user, five quarters of history up to the reference date and the next
quarter's open pipeline), then, when asked for more deals, appends vectorised filler
(``filler.py``) with realistic distributions so the data set has exactly the requested number of
deals (up to a million).

Everything is drawn from ``np.random.default_rng(seed)`` (split into two independent streams:
one for the scenario, one for the filler), never from the global RNG or the clock, so the same
arguments always give identical arrays. The scenario does not depend on ``deals``: its rows are
the first rows of every table (before the activities' global sort by start) whatever the size.

``validate()`` (``dataset_checks.py``) checks the data set's invariants.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from crm_kpi_worker.sandbox.catalog import (
    CURRENCIES,
    DEFAULT_REFERENCE_DATE,
    FX_RATES,
    MAX_DEALS,
    PRODUCTS,
    REPORTING_CURRENCY,
    STAGE_FORECAST,
    STAGE_PROBABILITY,
    is_quarter_end,
)
from crm_kpi_worker.sandbox.dataset import Dataset, concat_tables, take_rows
from crm_kpi_worker.sandbox.dataset_checks import validate
from crm_kpi_worker.sandbox.demo_scenario import DemoScenario
from crm_kpi_worker.sandbox.filler import build_filler

__all__ = [
    "CURRENCIES",
    "DEFAULT_REFERENCE_DATE",
    "FX_RATES",
    "MAX_DEALS",
    "PRODUCTS",
    "REPORTING_CURRENCY",
    "STAGE_FORECAST",
    "STAGE_PROBABILITY",
    "generate",
    "validate",
]


def generate(
    seed: int = 42, deals: int | None = None, reference_date: dt.date | None = None
) -> Dataset:
    """The sandbox data set: the KPIS.md demo scenario, plus filler up to ``deals`` deals.

    ``reference_date`` (default 2026-09-30) must be the last day of a calendar quarter: the
    scenario quarter is the quarter ending on it. ``deals=None`` gives the scenario alone;
    otherwise ``deals`` must be between the scenario's own deal count and ``MAX_DEALS``.
    """
    if reference_date is None:
        reference_date = DEFAULT_REFERENCE_DATE
    if isinstance(reference_date, dt.datetime) or not isinstance(reference_date, dt.date):
        raise TypeError(f"reference_date must be a datetime.date, got {reference_date!r}")
    if not is_quarter_end(reference_date):
        raise ValueError(
            "reference_date must be the last day of a calendar quarter "
            f"(31 March, 30 June, 30 September or 31 December), got {reference_date.isoformat()}"
        )
    if deals is not None and (isinstance(deals, bool) or not isinstance(deals, int | np.integer)):
        raise TypeError(f"deals must be an integer or None, got {deals!r}")

    root = np.random.default_rng(seed)
    scenario_rng, filler_rng = root.spawn(2)
    scenario = DemoScenario(scenario_rng, reference_date)
    scenario.build()
    tables = scenario.tables()
    minimum = len(tables["deals"])
    if deals is not None and not minimum <= deals <= MAX_DEALS:
        raise ValueError(
            f"deals must be between {minimum} (the demo scenario's own deal count) and "
            f"{MAX_DEALS:,}, got {deals}"
        )
    n_filler = 0 if deals is None else int(deals) - minimum
    notes = scenario.notes
    filler_aes = (len(tables["users"]), len(tables["users"]))
    if n_filler:
        filler = build_filler(
            filler_rng,
            n_filler,
            reference_date,
            user_offset=len(tables["users"]),
            account_offset=len(tables["accounts"]),
            deal_offset=minimum,
        )
        filler_aes = filler.pop("filler_aes")
        for name, table in filler.items():
            tables[name] = concat_tables(tables[name], table)
    activities = tables["activities"]
    tables["activities"] = take_rows(activities, np.argsort(activities.start, kind="stable"))
    notes.update(scenario.facts(minimum, filler_aes))
    return Dataset(
        seed=seed,
        reference_date=reference_date,
        reporting_currency=REPORTING_CURRENCY,
        currencies=list(CURRENCIES),
        fx_rates=dict(FX_RATES),
        products=list(PRODUCTS),
        notes=notes,
        **tables,
    )
