"""What every CRM's mapping shares: stages, deal types, forecast categories, quota source.

Each CRM's mapping (``connectors/<crm>/config.py``) extends :class:`MappingBase` with the
names of its own fields. Imports nothing of the project but the canonical model's value
types and :mod:`.base`.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails

from crm_kpi_worker.sync.config.base import (
    ConfigModel,
    ConfigPath,
    CrmValue,
    Fraction,
    NonEmptyText,
    StageKey,
    did_you_mean,
    error_at,
    quoted,
    raise_all,
    rule,
    unique_items,
)
from crm_kpi_worker.sync.model import DealType, ForecastCategory

__all__ = [
    "AeFilter",
    "DealTypeMapping",
    "ForecastCategoryMapping",
    "MappingBase",
    "QuotaSourceSetting",
    "StageMap",
]


class StageMap(ConfigModel):
    """One CRM stage value and what it means."""

    crm: CrmValue
    """The CRM's value: Salesforce StageName (e.g. "Closed Won"), HubSpot stage id."""
    stage: StageKey
    """Canonical stage key, e.g. 'demo' or 'closed_won'."""
    order: int
    """Funnel position: later stages have larger numbers."""
    won: bool = False
    lost: bool = False
    probability: Fraction | None = None
    """Win probability 0..1 for weighted pipeline; the CRM's when absent."""
    forecast_category: ForecastCategory | None = None
    """Used when a deal in this stage has no forecast category of its own."""

    @model_validator(mode="after")
    def _won_xor_lost(self) -> StageMap:
        if self.won and self.lost:
            raise_all(
                "stage",
                [
                    error_at(
                        ("won",),
                        "a stage cannot be both won and lost; set won: true for a Closed Won"
                        " stage, lost: true for a Closed Lost stage, neither for open stages",
                    )
                ],
            )
        return self

    @property
    def closed(self) -> bool:
        return self.won or self.lost


class DealTypeMapping(ConfigModel):
    """CRM type values -> canonical deal types."""

    values: dict[CrmValue, DealType] = Field(default_factory=dict)
    """CRM type value -> new_business | expansion | renewal | other."""
    default: DealType = DealType.OTHER
    """For a value not listed (and for an empty type)."""
    quota_credited: list[DealType] = Field(
        default_factory=lambda: [DealType.NEW_BUSINESS, DealType.EXPANSION], min_length=1
    )
    """Types whose won ARR counts as bookings against quota."""

    @field_validator("quota_credited")
    @classmethod
    def _unique(cls, value: list[DealType]) -> list[DealType]:
        if len(set(value)) != len(value):
            raise rule("each deal type may be listed once")
        return value

    def map(self, crm_value: str | None) -> DealType:
        return self.values.get(crm_value, self.default) if crm_value else self.default


class ForecastCategoryMapping(ConfigModel):
    """CRM forecast category values -> canonical forecast categories."""

    values: dict[CrmValue, ForecastCategory] = Field(default_factory=dict)
    default: ForecastCategory = ForecastCategory.PIPELINE
    """For a value not listed; 'pipeline' never counts towards commit or best case."""

    def map(self, crm_value: str | None) -> ForecastCategory:
        return self.values.get(crm_value, self.default) if crm_value else self.default


def _quota_source_shape(value: Any) -> Any:
    if isinstance(value, str):
        if value in ("crm", "config"):
            return {"kind": value}
        raise rule(
            f"unknown quota source {value!r}; expected 'crm', 'config' or {{csv: path}}"
            + did_you_mean(value, ("crm", "config"))
        )
    if isinstance(value, dict) and "kind" not in value:
        return {"kind": "csv", **value}
    return value


class QuotaSourceSetting(ConfigModel):
    """``crm`` (Salesforce ForecastingQuota / HubSpot goals), ``config`` (the quotas section)
    or ``{csv: path}`` (a CSV file for this source)."""

    kind: Literal["crm", "config", "csv"]
    csv: ConfigPath | None = None

    @model_validator(mode="after")
    def _csv_given(self) -> QuotaSourceSetting:
        if (self.kind == "csv") != (self.csv is not None):
            raise rule("write quota_source: crm, quota_source: config or quota_source: {csv: path}")
        return self


class AeFilter(ConfigModel):
    """Which users are Account Executives: those whose ``field`` holds one of ``values``."""

    field: NonEmptyText
    values: list[CrmValue] = Field(min_length=1)


class MappingBase(ConfigModel):
    amount_is: Literal["arr", "mrr", "tcv"] = "arr"
    """What the amount field holds: ARR as is, MRR (x12) or TCV (/ contract years)."""
    stages: Annotated[list[StageMap], unique_items("crm", "CRM stage value")] = Field(min_length=1)
    """Every CRM stage value and its canonical stage; a value not listed is bad data."""
    # Plain text: _stage_exists checks them against the stage list, with better hints.
    qualified_stage: str
    """Canonical stage from which a deal counts as qualified (pipeline velocity)."""
    conversion_entry_stage: str = Field("demo", validate_default=True)
    """Canonical stage whose entry starts conversion_rate (default 'demo')."""
    cycle_start_stage: str | None = None
    """Canonical stage whose first entry starts the sales cycle (default: creation)."""
    deal_types: DealTypeMapping = Field(default_factory=DealTypeMapping)
    quota_source: Annotated[QuotaSourceSetting, BeforeValidator(_quota_source_shape)] = Field(
        default_factory=lambda: QuotaSourceSetting(kind="crm")
    )
    """Where quotas come from: crm, config, or {csv: path}."""
    ae_filter: AeFilter | None = None
    """Which users are AEs (default: the reps listed in teams, else every deal owner)."""
    # What every CRM may map, in its own terms (a CRM's mapping narrows the types).
    team_field: str | None = None
    """The user field naming a rep's team (instead of ``teams`` in the config)."""
    demos: ConfigModel | None = None
    """Which activities are demos; demos_per_week stays empty without it."""

    @field_validator("stages")
    @classmethod
    def _check_stages(cls, stages: list[StageMap]) -> list[StageMap]:
        problems: list[InitErrorDetails] = []
        first_of_key: dict[str, int] = {}
        key_of_order: dict[int, str] = {}
        for index, entry in enumerate(stages):
            if entry.stage in first_of_key:
                first = stages[first_of_key[entry.stage]]
                same = ("order", "won", "lost", "probability", "forecast_category")
                for name in same:
                    if getattr(entry, name) != getattr(first, name):
                        problems.append(
                            error_at(
                                (index, name),
                                f"stage '{entry.stage}' is also mapped by stages"
                                f"[{first_of_key[entry.stage]}] with a different {name};"
                                " CRM values sharing a canonical stage must agree",
                            )
                        )
                continue
            first_of_key[entry.stage] = index
            other = key_of_order.get(entry.order)
            if other is not None:
                problems.append(
                    error_at(
                        (index, "order"),
                        f"order {entry.order} is already the position of stage '{other}'; each"
                        " canonical stage needs its own funnel position",
                    )
                )
            key_of_order.setdefault(entry.order, entry.stage)
        if not any(s.won for s in stages):
            problems.append(
                error_at((), "no stage has won: true; map the CRM's Closed Won stage(s)")
            )
        if not any(s.lost for s in stages):
            problems.append(
                error_at((), "no stage has lost: true; map the CRM's Closed Lost stage(s)")
            )
        raise_all("stages", problems)
        return stages

    @field_validator("qualified_stage", "conversion_entry_stage", "cycle_start_stage")
    @classmethod
    def _stage_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        stages: list[StageMap] | None = info.data.get("stages")
        if value is None or stages is None:  # stages invalid: reported on their own
            return value
        by_key = {s.stage: s for s in stages}
        if value not in by_key:
            crm = next((s for s in stages if s.crm == value), None)
            hint = (
                f"; '{value}' is a CRM value: use its canonical key '{crm.stage}'"
                if crm
                else did_you_mean(value, by_key)
            )
            default = (
                " (the default)"
                if info.field_name == "conversion_entry_stage" and value == "demo"
                else ""
            )
            raise rule(
                f"{info.field_name} '{value}'{default} is not a mapped stage; expected one of"
                f" the canonical stages: {quoted(dict.fromkeys(s.stage for s in stages))}{hint}"
            )
        if by_key[value].closed:
            raise rule(f"{info.field_name} must be an open stage, not the closed stage '{value}'")
        return value

    @functools.cached_property
    def _stages_by_crm_value(self) -> dict[str, StageMap]:
        return {s.crm: s for s in reversed(self.stages)}  # the first entry wins, as before

    def stage_for(self, crm_value: str) -> StageMap | None:
        """The mapping of a CRM stage value, or None (unmapped: bad data)."""
        return self._stages_by_crm_value.get(crm_value)

    def stage_order(self, key: str) -> int:
        return next(s.order for s in self.stages if s.stage == key)
