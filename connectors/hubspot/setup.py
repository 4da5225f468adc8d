"""What ``crm-kpi setup`` changes on HubSpot besides creating the targets (:mod:`.writes`
creates them): the plan of :meth:`HubSpotConnector.plan_setup`, only what differs.

- **Labels.** The worker owns the labels and descriptions (help texts) of its properties: those
  in its ``kpi_worker`` property group, and every target property of its own scorecard object
  (created in the object's default group). They follow ``write.language``; one that differs
  (the language changed, a person renamed it, an older release's wording) is set back by
  ``PATCH /crm/v3/properties/{objectType}/{propertyName}``, one call per property (HubSpot has
  no batch update of property definitions). A property a person moved to another group is
  theirs: setup leaves its label alone. The group's own label is the product's name in every
  language (``KPI worker``) and is set back the same way (``PATCH .../groups/kpi_worker``).
- **Display properties** of the scorecard object: ``kpi_name`` as primary display property
  (the record's name) and the object's headline KPIs (``TargetObject.headline_fields``) as
  secondary display properties, shown under the name on each record, the first one also a
  filter on the object's index page; and the object's labels in ``write.language``. Set at
  creation; when the object has others, one ``PATCH /crm-object-schemas/v3/schemas/{type}``.
- **Access.** Nothing: HubSpot shows every property to every user who can see the object
  (``write.grant_to`` has no effect, see :data:`GRANT_TO_NOTE`).

Reads: the properties of each object (one call each, shared with the rest of setup; a custom
object's come with its schema), and the ``kpi_worker`` group of each standard object (one
call each). Properties and objects that do not exist yet (a dry run) plan nothing: creation
gives them the right labels and display properties.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from crm_kpi_worker.connectors.base import SetupChange, SetupSettings, TargetField, TargetObject
from crm_kpi_worker.connectors.hubspot.writes import (
    BUILT_IN,
    NAME_PROPERTY,
    PROPERTY_GROUP,
    PROPERTY_GROUP_LABEL,
    TargetManager,
)

__all__ = ["GRANT_TO_NOTE", "plan_hubspot_setup"]

log = logging.getLogger(__name__)

GRANT_TO_NOTE = (
    "write.grant_to has no effect on HubSpot: every user who can see an object sees all its"
    " properties, the KPI ones included; restricting who views or edits a property is an"
    " Enterprise setting of HubSpot's UI (Settings > Properties), not in its public API"
)


def plan_hubspot_setup(
    targets: TargetManager,
    objects: Sequence[TargetObject],
    fields: Sequence[TargetField],
    settings: SetupSettings,
) -> list[SetupChange]:
    """The changes ``setup`` makes besides creating ``objects`` and ``fields``: only what
    differs from the portal as it is. Reads only."""
    if not settings.grant_to_reps or settings.grant_to_profiles:
        log.warning(GRANT_TO_NOTE)
    plan: list[SetupChange] = []
    for target in objects:
        own = [f for f in fields if f.object == target.name]
        plan.extend(_schema_changes(targets, target, own))
    by_object: dict[str, list[TargetField]] = {}
    for target_field in fields:
        if target_field.name not in BUILT_IN:
            by_object.setdefault(target_field.object, []).append(target_field)
    ours = {o.name for o in objects}
    for name, own in by_object.items():
        plan.extend(_label_changes(targets, name, own, whole_object=name in ours))
    return plan


def _schema_changes(
    targets: TargetManager, target: TargetObject, fields: Sequence[TargetField]
) -> list[SetupChange]:
    schema = targets.schema_of(target.name)
    if schema is None:
        return []  # created by setup with these very settings
    object_type = targets.object_type(target.name)
    # What will exist once setup has created the missing properties.
    defined = {str(p.get("name")) for p in targets.properties_of(object_type)}
    defined |= {f.name for f in fields}
    wanted: dict[str, Any] = {
        "labels": {"singular": target.label, "plural": target.plural_label},
        "secondaryDisplayProperties": [n for n in target.headline_fields if n in defined],
    }
    if NAME_PROPERTY in defined:
        wanted["primaryDisplayProperty"] = NAME_PROPERTY
    changes = {
        key: value
        for key, value in wanted.items()
        if (schema.get(key) or ([] if isinstance(value, list) else None)) != value
    }
    if not changes:
        return []
    details = []
    if "primaryDisplayProperty" in changes:
        details.append(f"primary display property {NAME_PROPERTY}")
    if "secondaryDisplayProperties" in changes:
        shown = ", ".join(changes["secondaryDisplayProperties"]) or "none"
        before = ", ".join(schema.get("secondaryDisplayProperties") or ()) or "none"
        details.append(f"secondary display properties {shown} (were {before})")
    if "labels" in changes:
        labels = schema.get("labels") or {}
        details.append(
            f"labels '{target.label}'/'{target.plural_label}'"
            f" (were '{labels.get('singular')}'/'{labels.get('plural')}')"
        )
    return [
        SetupChange(
            "object",
            target.name,
            "; ".join(details),
            partial(targets.update_schema, object_type, changes),
        )
    ]


def _label_changes(
    targets: TargetManager, name: str, fields: Sequence[TargetField], *, whole_object: bool
) -> list[SetupChange]:
    """Label and description changes of the worker's properties of object ``name`` (every
    target property of its own object, ``whole_object``; else those in its group)."""
    if targets.is_custom(name) and targets.schema_of(name) is None:
        return []  # the object does not exist yet
    object_type = targets.object_type(name)
    existing = {str(p.get("name")): p for p in targets.properties_of(object_type)}
    plan: list[SetupChange] = []
    in_group = False
    for target in fields:
        current = existing.get(target.name)
        if current is None:
            continue  # created with the right label
        if not whole_object and current.get("groupName") != PROPERTY_GROUP:
            continue  # moved out of the worker's group by a person: theirs
        in_group |= current.get("groupName") == PROPERTY_GROUP
        changes: dict[str, Any] = {}
        details = []
        if current.get("label") != target.label:
            changes["label"] = target.label
            details.append(f"label '{target.label}' (was '{current.get('label')}')")
        if target.help_text and (current.get("description") or "") != target.help_text:
            changes["description"] = target.help_text
            details.append("description in the config's language")
        if changes:
            plan.append(
                SetupChange(
                    "property",
                    f"{name}.{target.name}",
                    "; ".join(details),
                    partial(targets.update_property, object_type, target.name, changes),
                )
            )
    if in_group or not whole_object:
        plan.extend(_group_change(targets, name, object_type))
    return plan


def _group_change(targets: TargetManager, name: str, object_type: str) -> list[SetupChange]:
    group = targets.group(object_type)
    if group is None or group.get("label") == PROPERTY_GROUP_LABEL:
        return []
    return [
        SetupChange(
            "property group",
            f"{name}.{PROPERTY_GROUP}",
            f"label '{PROPERTY_GROUP_LABEL}' (was '{group.get('label')}')",
            partial(targets.update_group, object_type, {"label": PROPERTY_GROUP_LABEL}),
        )
    ]
