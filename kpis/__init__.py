"""The KPI engine: pure functions from columnar frames to every KPI of KPIS.md.

No I/O, no CRM names, no other part of the project is imported here (DESIGN.md): the sync layer
builds the frames (:mod:`.frames`) from the canonical model and the config, calls
:func:`compute`, and writes the :class:`Results`. See :data:`KPI_NOTES` for the rules where
KPIS.md is silent.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .calendar import FiscalCalendar, Period, elapsed_weeks, snapshot_date
    from .engine import ADDITIVE_KPIS, compute
    from .frames import (
        EXCLUSIONS,
        FORECAST_CATEGORIES,
        Accounts,
        Activities,
        Deals,
        PayoutCurve,
        Quotas,
        Reps,
        Settings,
        Snapshots,
    )
    from .notes import EMPTY_REASONS, KPI_NOTES
    from .results import DEAL_KPI_KEYS, KPI_KEYS, DealKpis, KpiRow, Results

# Names are loaded on first use (PEP 562): importing the pure date arithmetic of
# ``kpis.calendar`` (shared by the config and the Salesforce normalizer) must not load the
# engine and numpy.
_HOME = {
    **dict.fromkeys(("FiscalCalendar", "Period", "elapsed_weeks", "snapshot_date"), "calendar"),
    **dict.fromkeys(("ADDITIVE_KPIS", "compute"), "engine"),
    **dict.fromkeys(
        (
            "EXCLUSIONS",
            "FORECAST_CATEGORIES",
            "Accounts",
            "Activities",
            "Deals",
            "PayoutCurve",
            "Quotas",
            "Reps",
            "Settings",
            "Snapshots",
        ),
        "frames",
    ),
    **dict.fromkeys(("EMPTY_REASONS", "KPI_NOTES"), "notes"),
    **dict.fromkeys(("DEAL_KPI_KEYS", "KPI_KEYS", "DealKpis", "KpiRow", "Results"), "results"),
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ADDITIVE_KPIS",
    "DEAL_KPI_KEYS",
    "EMPTY_REASONS",
    "EXCLUSIONS",
    "FORECAST_CATEGORIES",
    "KPI_KEYS",
    "KPI_NOTES",
    "Accounts",
    "Activities",
    "DealKpis",
    "Deals",
    "FiscalCalendar",
    "KpiRow",
    "PayoutCurve",
    "Period",
    "Quotas",
    "Reps",
    "Results",
    "Settings",
    "Snapshots",
    "compute",
    "elapsed_weeks",
    "snapshot_date",
]
