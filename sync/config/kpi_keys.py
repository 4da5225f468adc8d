"""The KPI keys ``kpi_fields`` may name: the engine's own lists (kpis/ is the single source;
sync may import it, not the reverse).

This is the one config module that imports the KPI engine. The keys are checked here, where
the config meets the engine (``AppConfig``'s ``kpi_fields`` and each source's), not in the
target models, which every CRM's source model (in ``connectors/``) uses: a connector must not
load the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import WrapValidator
from pydantic_core import InitErrorDetails

from crm_kpi_worker.kpis.results import DEAL_KPI_KEYS, KPI_KEYS
from crm_kpi_worker.sync.config.base import checked_alongside, did_you_mean, error_at

__all__ = [
    "DEAL_KPIS",
    "REP_KPIS",
    "SCORECARD_KPIS",
    "kpi_keys_checked",
    "source_kpi_keys_checked",
]

#: Per rep and period: written to the scorecard object or onto the rep.
SCORECARD_KPIS: tuple[str, ...] = KPI_KEYS
REP_KPIS: tuple[str, ...] = SCORECARD_KPIS
#: Per deal: written on the opportunity/deal itself.
DEAL_KPIS: tuple[str, ...] = DEAL_KPI_KEYS

#: kpi_fields target -> the KPI keys it takes.
_TARGET_KPIS: dict[str, tuple[str, ...]] = {
    "scorecard": SCORECARD_KPIS,
    "deal": DEAL_KPIS,
    "rep": REP_KPIS,
    "owner": REP_KPIS,
}


def _part(value: Any, name: str) -> Any:
    """``value[name]`` of raw input, or the attribute of a model built in code."""
    return value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)


def _key_problem(key: str, target: str) -> str | None:
    valid = _TARGET_KPIS[target]
    if key in valid:
        return None
    if key in DEAL_KPIS or key in SCORECARD_KPIS:
        where = "kpi_fields.deal" if key in DEAL_KPIS else "kpi_fields.scorecard or .rep"
        return f"'{key}' is not a {target} KPI; it belongs under {where}"
    return (
        f"unknown KPI key '{key}'{did_you_mean(key, valid, ' (did you mean {!r}?)')};"
        f" valid {target} KPI keys: {', '.join(valid)}"
    )


def kpi_key_problems(kpi_fields: Any, prefix: tuple[str | int, ...] = ()) -> list[InitErrorDetails]:
    """Every KPI key of a ``kpi_fields`` section (raw input or model) that its target does not
    take, located at ``(*prefix, target, "fields", key)``."""
    problems: list[InitErrorDetails] = []
    for target in _TARGET_KPIS:
        fields = _part(_part(kpi_fields, target) or {}, "fields")
        if not isinstance(fields, Mapping):
            continue  # not a mapping: reported by the model
        for key in fields:
            if isinstance(key, str) and (message := _key_problem(key, target)) is not None:
                problems.append(error_at((*prefix, target, "fields", key), message))
    return problems


def _in_sources(sources: Any) -> list[InitErrorDetails]:
    if not isinstance(sources, list):
        return []
    problems: list[InitErrorDetails] = []
    for index, source in enumerate(sources):
        section = _part(source, "kpi_fields")
        if section is not None:
            problems += kpi_key_problems(section, (index, "kpi_fields"))
    return problems


#: On ``AppConfig.kpi_fields``: its KPI keys, reported with the section's other mistakes.
kpi_keys_checked: WrapValidator = checked_alongside(kpi_key_problems, "kpi_fields")
#: On ``AppConfig.sources``: each source's own ``kpi_fields``' KPI keys.
source_kpi_keys_checked: WrapValidator = checked_alongside(_in_sources, "sources")
