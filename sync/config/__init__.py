"""The worker's configuration: one pydantic tree for the one YAML file ops write.

Load it with :func:`crm_kpi_worker.sync.config_loader.load_config`, which turns every validation
error into a problem with file, line and key path. The tree, by room:

- :mod:`.base`: the base model, error helpers, value types, secrets, tagged unions;
- :mod:`.mapping`: what every CRM's mapping shares (stages, deal types, forecast categories);
- :mod:`.source`: what every CRM's source shares; each CRM's own source, auth and mapping
  models live in its folder, ``connectors/<crm>/config.py``, and are found through the CRM
  registry (:mod:`crm_kpi_worker.connectors.registry`);
- :mod:`.targets`: ``kpi_fields`` (which KPI goes to which CRM field), :mod:`.kpi_keys`: the
  KPI keys they may name (the one module importing the KPI engine);
- :mod:`.calendar`, :mod:`.money`: fiscal calendar; currency, quotas, pay;
- :mod:`.runtime`: writes, store, schedule, runtime; :mod:`.app`: the whole file.

Every name is re-exported here, loaded when first used: a connector imports the rooms it needs
(:mod:`.base`, :mod:`.mapping`, :mod:`.source`, :mod:`.targets`) without the KPI engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm_kpi_worker.sync.config.app import (
        AppConfig,
        Source,
    )
    from crm_kpi_worker.sync.config.base import (
        RULE_ERROR,
        UNION_TAG_KEYS,
        ConfigModel,
        EnvRef,
        FileEnvRef,
        FileRef,
        SecretError,
        SecretRef,
        TaggedUnion,
        ValueRef,
        beside_config,
        iter_secret_refs,
    )
    from crm_kpi_worker.sync.config.calendar import (
        FiscalCalendar,
    )
    from crm_kpi_worker.sync.config.kpi_keys import (
        DEAL_KPIS,
        REP_KPIS,
        SCORECARD_KPIS,
    )
    from crm_kpi_worker.sync.config.mapping import (
        AeFilter,
        DealTypeMapping,
        ForecastCategoryMapping,
        MappingBase,
        QuotaSourceSetting,
        StageMap,
    )
    from crm_kpi_worker.sync.config.money import (
        CurrencySettings,
        PayoutCurve,
        QuotaEntry,
        QuotaSettings,
        RampSettings,
        VariablePay,
    )
    from crm_kpi_worker.sync.config.runtime import (
        BudgetSettings,
        RuntimeSettings,
        Schedule,
        StoreSettings,
        WriteSettings,
        cron_trigger,
    )
    from crm_kpi_worker.sync.config.source import (
        SourceBase,
    )
    from crm_kpi_worker.sync.config.targets import (
        DealTarget,
        KpiFields,
        OwnerTarget,
        PeriodKind,
        RepTarget,
        ScorecardTarget,
        TargetNaming,
    )

#: Exported name -> the module defining it.
_HOMES: dict[str, str] = {
    "AeFilter": "crm_kpi_worker.sync.config.mapping",
    "AppConfig": "crm_kpi_worker.sync.config.app",
    "ConfigModel": "crm_kpi_worker.sync.config.base",
    "CurrencySettings": "crm_kpi_worker.sync.config.money",
    "DEAL_KPIS": "crm_kpi_worker.sync.config.kpi_keys",
    "DealTarget": "crm_kpi_worker.sync.config.targets",
    "DealTypeMapping": "crm_kpi_worker.sync.config.mapping",
    "EnvRef": "crm_kpi_worker.sync.config.base",
    "FileEnvRef": "crm_kpi_worker.sync.config.base",
    "FileRef": "crm_kpi_worker.sync.config.base",
    "FiscalCalendar": "crm_kpi_worker.sync.config.calendar",
    "ForecastCategoryMapping": "crm_kpi_worker.sync.config.mapping",
    "KpiFields": "crm_kpi_worker.sync.config.targets",
    "MappingBase": "crm_kpi_worker.sync.config.mapping",
    "OwnerTarget": "crm_kpi_worker.sync.config.targets",
    "PayoutCurve": "crm_kpi_worker.sync.config.money",
    "PeriodKind": "crm_kpi_worker.sync.config.targets",
    "QuotaEntry": "crm_kpi_worker.sync.config.money",
    "QuotaSettings": "crm_kpi_worker.sync.config.money",
    "QuotaSourceSetting": "crm_kpi_worker.sync.config.mapping",
    "REP_KPIS": "crm_kpi_worker.sync.config.kpi_keys",
    "RULE_ERROR": "crm_kpi_worker.sync.config.base",
    "RampSettings": "crm_kpi_worker.sync.config.money",
    "RepTarget": "crm_kpi_worker.sync.config.targets",
    "BudgetSettings": "crm_kpi_worker.sync.config.runtime",
    "RuntimeSettings": "crm_kpi_worker.sync.config.runtime",
    "SCORECARD_KPIS": "crm_kpi_worker.sync.config.kpi_keys",
    "Schedule": "crm_kpi_worker.sync.config.runtime",
    "ScorecardTarget": "crm_kpi_worker.sync.config.targets",
    "SecretError": "crm_kpi_worker.sync.config.base",
    "SecretRef": "crm_kpi_worker.sync.config.base",
    "Source": "crm_kpi_worker.sync.config.app",
    "TaggedUnion": "crm_kpi_worker.sync.config.base",
    "SourceBase": "crm_kpi_worker.sync.config.source",
    "StageMap": "crm_kpi_worker.sync.config.mapping",
    "StoreSettings": "crm_kpi_worker.sync.config.runtime",
    "TargetNaming": "crm_kpi_worker.sync.config.targets",
    "UNION_TAG_KEYS": "crm_kpi_worker.sync.config.base",
    "ValueRef": "crm_kpi_worker.sync.config.base",
    "VariablePay": "crm_kpi_worker.sync.config.money",
    "WriteSettings": "crm_kpi_worker.sync.config.runtime",
    "beside_config": "crm_kpi_worker.sync.config.base",
    "cron_trigger": "crm_kpi_worker.sync.config.runtime",
    "iter_secret_refs": "crm_kpi_worker.sync.config.base",
}

__all__ = [
    "DEAL_KPIS",
    "REP_KPIS",
    "RULE_ERROR",
    "SCORECARD_KPIS",
    "UNION_TAG_KEYS",
    "AeFilter",
    "AppConfig",
    "BudgetSettings",
    "ConfigModel",
    "CurrencySettings",
    "DealTarget",
    "DealTypeMapping",
    "EnvRef",
    "FileEnvRef",
    "FileRef",
    "FiscalCalendar",
    "ForecastCategoryMapping",
    "KpiFields",
    "MappingBase",
    "OwnerTarget",
    "PayoutCurve",
    "PeriodKind",
    "QuotaEntry",
    "QuotaSettings",
    "QuotaSourceSetting",
    "RampSettings",
    "RepTarget",
    "RuntimeSettings",
    "Schedule",
    "ScorecardTarget",
    "SecretError",
    "SecretRef",
    "Source",
    "SourceBase",
    "StageMap",
    "StoreSettings",
    "TaggedUnion",
    "TargetNaming",
    "ValueRef",
    "VariablePay",
    "WriteSettings",
    "beside_config",
    "cron_trigger",
    "iter_secret_refs",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
