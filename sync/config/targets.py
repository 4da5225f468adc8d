"""Which KPI goes to which CRM field: ``kpi_fields`` (the scorecard object, deal, rep and
owner targets), and how each CRM names what the worker writes (:class:`TargetNaming`, given by
its registry entry).

The KPI keys themselves are checked in :mod:`.kpi_keys`, the one config module that imports
the KPI engine: this one is used by every CRM's source model, which connectors import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from crm_kpi_worker.sync.config.base import ConfigModel, NonEmptyText

if TYPE_CHECKING:
    from crm_kpi_worker.connectors.registry import CrmPlugin

__all__ = [
    "DealTarget",
    "KpiFields",
    "OwnerTarget",
    "PeriodKind",
    "RepTarget",
    "ScorecardTarget",
    "TargetNaming",
]

PeriodKind = Literal["month", "quarter", "year"]


@dataclass(frozen=True)
class TargetNaming:
    """How one CRM names the objects and fields the worker writes."""

    #: (name, "field" or "object") -> why the CRM cannot take it as a written field/object,
    #: or None when it can.
    name_problem: Callable[[str, str], str | None]
    #: The scorecard's dimension columns when the config does not name them
    #: (``rep_field``, ``team_field``, ``period_type_field``, ``period_start_field``,
    #: ``period_end_field``, ``computed_at_field``).
    scorecard_columns: Mapping[str, str]
    #: Why ``kpi_fields.rep`` cannot be written (the CRM's users take no custom fields), or
    #: None when it can.
    no_rep_fields: str | None = None


def crm_plugin(crm: str) -> CrmPlugin:
    # Imported when first needed: the registry's entries import the CRMs' source models,
    # which import this module.
    from crm_kpi_worker.connectors.registry import plugin_for

    return plugin_for(crm)


class _Target(ConfigModel):
    fields: dict[str, NonEmptyText] = Field(default_factory=dict)
    """KPI key -> CRM field name (the keys are checked against the engine's KPIs by
    :mod:`.kpi_keys`, where the config meets the engine)."""


class ScorecardTarget(_Target):
    """A custom object with one record per rep (or team) and period, upserted by external id.

    The ``*_field`` columns default, per CRM, to the names in :meth:`columns`.
    """

    object: NonEmptyText
    """Salesforce custom object (KPI_Scorecard__c) or HubSpot custom object type."""
    external_id: NonEmptyText
    """Unique external id field used to upsert, e.g. Scorecard_Key__c."""
    rep_field: NonEmptyText | None = None
    team_field: NonEmptyText | None = None
    period_type_field: NonEmptyText | None = None
    period_start_field: NonEmptyText | None = None
    period_end_field: NonEmptyText | None = None
    computed_at_field: NonEmptyText | None = None

    def columns(self, crm: str) -> dict[str, str]:
        """Effective dimension columns: ``{"rep_field": "Rep__c", ...}``."""
        defaults = crm_plugin(crm).target_naming.scorecard_columns
        return {name: getattr(self, name) or default for name, default in defaults.items()}


class DealTarget(_Target):
    """Fields on the Opportunity (Salesforce) or deal (HubSpot)."""

    period: PeriodKind = "quarter"
    """Period of owner_quota_attainment (the current one)."""
    daily_ages: bool = False
    """deal_age_days and days_in_stage grow by one every day. By default the worker writes the
    date they count from (creation, entry into the current stage) into their field, a Date
    field, and a CRM formula (TODAY() - field) shows the days: no daily rewrite of every open
    deal. True writes the day counts themselves (a daily write of every open deal)."""


class RepTarget(_Target):
    """Fields on the User record (Salesforce only), holding the current period's values."""

    period: PeriodKind = "quarter"


class OwnerTarget(_Target):
    """The owner's current-period KPIs stamped on each of the owner's open deals, for
    portals without custom objects (HubSpot Starter) or teams that want them on the deal.
    Closed deals get the fields emptied once. Each change of an owner's values rewrites
    that owner's open deals."""

    period: PeriodKind = "quarter"


class KpiFields(ConfigModel):
    """Which KPI goes to which CRM field."""

    scorecard: ScorecardTarget | None = None
    deal: DealTarget | None = None
    rep: RepTarget | None = None
    owner: OwnerTarget | None = None

    def count(self) -> int:
        return sum(
            len(t.fields)
            for t in (self.scorecard, self.deal, self.rep, self.owner)
            if t is not None
        )

    @property
    def writes_nothing(self) -> bool:
        """No target at all (no ``kpi_fields``, or an empty one): the source runs
        compute-only."""
        return all(t is None for t in (self.scorecard, self.deal, self.rep, self.owner))

    def problems(self, crm: str) -> list[tuple[tuple[str | int, ...], str]]:
        """Names invalid for ``crm`` and fields written twice, as (path, message)."""
        naming = crm_plugin(crm).target_naming
        check = naming.name_problem
        out: list[tuple[tuple[str | int, ...], str]] = []
        if self.rep is not None and naming.no_rep_fields is not None:
            out.append((("rep",), naming.no_rep_fields))
        if self.scorecard is not None:
            card = self.scorecard
            if (why := check(card.object, "object")) is not None:
                out.append((("scorecard", "object"), why))
            named = {"external_id": card.external_id, **card.columns(crm)}
            explicit = {"external_id", *(n for n in named if getattr(card, n, None))}
            for name, value in named.items():
                if name in explicit and (why := check(value, "field")) is not None:
                    out.append((("scorecard", name), why))
            out += _field_problems(card.fields, check, ("scorecard",), set(named.values()))
        for target_name in ("deal", "rep"):
            target = getattr(self, target_name)
            if target is not None:
                out += _field_problems(target.fields, check, (target_name,), set())
        if self.owner is not None:
            # Written on deals too: no field may also be a deal field.
            taken = set(self.deal.fields.values()) if self.deal is not None else set()
            for loc, message in _field_problems(self.owner.fields, check, ("owner",), taken):
                out.append((loc, message.replace("a key column of the scorecard", "a deal field")))
        return out


def _field_problems(
    fields: Mapping[str, str],
    check: Callable[[str, str], str | None],
    prefix: tuple[str, ...],
    reserved: set[str],
) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    writer_of: dict[str, str] = {}
    for key, name in fields.items():
        loc = (*prefix, "fields", key)
        if (why := check(name, "field")) is not None:
            out.append((loc, why))
        elif name.lower() in {r.lower() for r in reserved}:
            out.append((loc, f"field '{name}' is already a key column of the scorecard"))
        elif name.lower() in writer_of:
            out.append(
                (
                    loc,
                    f"field '{name}' already receives '{writer_of[name.lower()]}';"
                    " one KPI per field",
                )
            )
        writer_of.setdefault(name.lower(), key)
    return out
