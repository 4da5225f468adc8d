"""The whole config file: :class:`AppConfig`, and :data:`Source`, one entry of ``sources``.

A source's ``type`` picks its model through the CRM registry (:mod:`crm_kpi_worker.connectors.
registry`), so a CRM registered at run time validates like the built-in ones; :data:`Source`
names the built-in models as its static type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from crm_kpi_worker.sync.config.base import (
    ConfigModel,
    Email,
    NonEmptyText,
    TaggedUnion,
    config_dir_of,
    error_at,
    raise_all,
    unique_items,
)
from crm_kpi_worker.sync.config.calendar import FiscalCalendar
from crm_kpi_worker.sync.config.kpi_keys import kpi_keys_checked, source_kpi_keys_checked
from crm_kpi_worker.sync.config.money import CurrencySettings, QuotaSettings, VariablePay
from crm_kpi_worker.sync.config.runtime import (
    BudgetSettings,
    RuntimeSettings,
    Schedule,
    StoreSettings,
    WriteSettings,
)
from crm_kpi_worker.sync.config.source import SourceBase
from crm_kpi_worker.sync.config.targets import KpiFields

__all__ = ["AppConfig", "Source"]


def _source_models() -> Mapping[str, type[BaseModel]]:
    from crm_kpi_worker.connectors.registry import source_models

    return source_models()


#: One entry of ``sources``: statically a ``SourceBase``; validated through the registry
#: (every registered CRM's model, chosen by ``type``).
Source = Annotated[SourceBase, TaggedUnion("type", _source_models, "source type")]


class AppConfig(ConfigModel):
    """The whole config file."""

    version: Literal[1] = 1
    """Schema version of this file."""
    sources: Annotated[
        list[Source], unique_items("name", "source name"), source_kpi_keys_checked
    ] = Field(min_length=1)
    """The CRMs to read from and write to."""
    fiscal: FiscalCalendar = Field(default_factory=FiscalCalendar)
    currency: CurrencySettings
    """Reporting currency and conversion."""
    teams: dict[NonEmptyText, list[Email]] = Field(default_factory=dict)
    """Team name -> rep emails (a rep belongs to one team)."""
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    variable_pay: VariablePay | None = None
    kpi_fields: Annotated[KpiFields | None, kpi_keys_checked] = None
    """Which KPI is written to which CRM field (per-source kpi_fields override it)."""
    write: WriteSettings = Field(default_factory=WriteSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    """The share of the CRM's daily API limit the worker may use."""
    store: StoreSettings = Field(default_factory=StoreSettings, validate_default=True)
    schedule: Schedule | None = None
    """When to run; without it the worker runs once per command."""
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)

    #: Where the loader read this config (``config_loader.ConfigOrigin``: the file and every
    #: key's line), so problems found later, against the CRM, still name file:line:key.
    _origin: Any = PrivateAttr(default=None)

    @field_validator("teams")
    @classmethod
    def _one_team_per_rep(cls, teams: dict[str, list[str]]) -> dict[str, list[str]]:
        problems: list[InitErrorDetails] = []
        team_of: dict[str, str] = {}
        for team, emails in teams.items():
            for index, email in enumerate(emails):
                if email in team_of:
                    where = "again in" if team_of[email] == team else f"in '{team_of[email]}' and"
                    problems.append(
                        error_at(
                            (team, index),
                            f"{email} is listed {where} '{team}'; a rep belongs to one team",
                        )
                    )
                else:
                    team_of[email] = team
        raise_all("teams", problems)
        return teams

    @field_validator("store")
    @classmethod
    def _store_beside_the_config(cls, store: StoreSettings, info: ValidationInfo) -> StoreSettings:
        # Also for the default store (validate_default): its file goes beside the config too.
        config_dir = config_dir_of(info)
        if config_dir is not None:
            store = store.model_copy()
            store._config_dir = config_dir
        return store

    @model_validator(mode="after")
    def _cross_checks(self) -> AppConfig:
        problems: list[InitErrorDetails] = []
        for index, source in enumerate(self.sources):
            if self.teams and source.mapping.team_field is not None:
                problems.append(
                    error_at(
                        ("sources", index, "mapping", "team_field"),
                        "teams are listed in the config and also read from team_field; keep"
                        " one of them",
                    )
                )
            if source.mapping.quota_source.kind == "config" and not self.quotas.configured:
                problems.append(
                    error_at(
                        ("sources", index, "mapping", "quota_source"),
                        "quota_source is 'config' but the quotas section has no entries and no csv",
                    )
                )
        if self.quotas.configured and not any(
            s.mapping.quota_source.kind == "config" for s in self.sources
        ):
            problems.append(
                error_at(
                    ("quotas",),
                    "the quotas section is unused: no source has quota_source: config",
                )
            )
        seen: dict[tuple[str, dt.date, dt.date], int] = {}
        for index, entry in enumerate(self.quotas.entries):
            key = (entry.rep, *entry.bounds(self.fiscal))
            if key in seen:
                problems.append(
                    error_at(
                        ("quotas", "entries", index),
                        f"{entry.rep} already has a quota for {key[1]}..{key[2]}"
                        f" (entries[{seen[key]}])",
                    )
                )
            seen.setdefault(key, index)
        if self.kpi_fields is not None:
            crms = {s.crm for s in self.sources if s.kpi_fields is None}
            if len(crms) > 1:
                problems.append(
                    error_at(
                        ("kpi_fields",),
                        "kpi_fields names fields of one CRM but sources of both types use it;"
                        " give each source its own kpi_fields",
                    )
                )
            for crm in sorted(crms):
                problems += [
                    error_at(("kpi_fields", *loc), msg)
                    for loc, msg in self.kpi_fields.problems(crm)
                ]
        for path, fields in self._kpi_targets():
            for target in ("deal", "rep"):
                chosen = getattr(fields, target)
                if chosen is not None and chosen.period not in self.fiscal.periods:
                    problems.append(
                        error_at(
                            (*path, target, "period"),
                            f"period '{chosen.period}' is not computed; fiscal.periods lists"
                            f" {', '.join(self.fiscal.periods)}",
                        )
                    )
        raise_all("config", problems)
        return self

    def _kpi_targets(self) -> Iterator[tuple[tuple[str | int, ...], KpiFields]]:
        if self.kpi_fields is not None:
            yield ("kpi_fields",), self.kpi_fields
        for index, source in enumerate(self.sources):
            if source.kpi_fields is not None:
                yield ("sources", index, "kpi_fields"), source.kpi_fields

    # Convenience accessors for the rest of the worker.

    def source(self, name: str) -> SourceBase:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"no source named {name!r}; sources: {[s.name for s in self.sources]}")

    def kpi_fields_for(self, source: SourceBase) -> KpiFields:
        """The source's own kpi_fields, else the top level's. Without either, an empty
        ``KpiFields()``: the source runs compute-only (KPIs computed and stored, nothing
        written to the CRM, nothing for setup to create)."""
        if source.kpi_fields is not None:
            return source.kpi_fields
        return self.kpi_fields if self.kpi_fields is not None else KpiFields()

    def team_of(self, email: str) -> str | None:
        email = email.lower()
        return next((team for team, emails in self.teams.items() if email in emails), None)

    def replace_source(self, source: SourceBase) -> AppConfig:
        """A copy with the source of the same name replaced (e.g. pointed at the sandbox)."""
        self.source(source.name)  # KeyError when there is none
        sources = [source if s.name == source.name else s for s in self.sources]
        return self.model_copy(update={"sources": sources})
