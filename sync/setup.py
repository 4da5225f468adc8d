"""``setup`` of one source: create the objects and fields its ``kpi_fields`` write to, then
plan and make what the CRM needs for people to see them (access, placement, labels: the
connector's ``plan_setup``). ``crm-kpi setup`` and ``crm-kpi demo`` both set up through here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm_kpi_worker.connectors.base import Connector, SetupChange, TargetField, TargetObject
    from crm_kpi_worker.sync.config import AppConfig, SourceBase

__all__ = ["NO_KPI_FIELDS", "SetupOutcome", "set_up_source"]

NO_KPI_FIELDS = "no kpi_fields configured"


@dataclass
class SetupOutcome:
    """What setup created (or, in a dry run, would create) and changed."""

    objects_created: list[TargetObject] = field(default_factory=list)
    fields_created: list[TargetField] = field(default_factory=list)
    changes: list[SetupChange] = field(default_factory=list)


def set_up_source(
    config: AppConfig,
    source: SourceBase,
    connector: Connector,
    *,
    dry_run: bool,
    say: Callable[[str], None],
) -> SetupOutcome:
    """Set up ``source`` through ``connector`` (its mapping already checked against the CRM),
    saying each step; with ``dry_run``, say what would be done and do nothing."""
    from crm_kpi_worker.sync.targets import targets

    name = source.name
    kpi_fields = config.kpi_fields_for(source)
    if kpi_fields.writes_nothing:
        say(f"{name}: {NO_KPI_FIELDS}: nothing to create")
        return SetupOutcome()
    objects, fields = targets(kpi_fields, source.type, config.write.language)
    missing_objects, missing_fields = connector.missing_targets(objects, fields)
    if not missing_objects and not missing_fields:
        say(f"{name}: all {len(objects)} objects and {len(fields)} fields exist")
    else:
        verb = "would create" if dry_run else "creating"
        for obj in missing_objects:
            say(f"{name}: {verb} object {obj.name} ({obj.label})")
        for fld in missing_fields:
            say(f"{name}: {verb} field {fld.object}.{fld.name} ({fld.type}, {fld.label})")
        if not dry_run:
            connector.create_targets(missing_objects, missing_fields)
            say(f"{name}: created {len(missing_objects)} objects and {len(missing_fields)} fields")
    plan = connector.plan_setup(objects, fields, config.write.setup_settings())
    _apply(name, plan, dry_run, say)
    return SetupOutcome(missing_objects, missing_fields, plan)


def _apply(name: str, plan: list[SetupChange], dry_run: bool, say: Callable[[str], None]) -> None:
    """Say, and unless ``dry_run`` make, the access, placement and label changes in order."""
    if not plan:
        say(f"{name}: access, layouts and labels are up to date")
        return
    verb = "would change" if dry_run else "changing"
    for change in plan:
        say(f"{name}: {verb} {change}")
    if dry_run:
        return
    for change in plan:
        change.apply()
    say(f"{name}: made {len(plan)} changes")
