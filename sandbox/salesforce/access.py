"""What one user may read and write: the union of their profile's permission set and the
permission sets assigned to them, as Salesforce computes it.

A :class:`UserAccess` is built once per user and per change of the permission model (the org
keeps them in a cache it clears on every such change), so checking a query costs a few set
lookups, nothing per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from crm_kpi_worker.sandbox.salesforce.permissions import (
    ACCESS_FOLLOWS,
    OBJECT_FLAGS,
    UNSECURED_OBJECTS,
    has_object_permissions,
    is_permissionable,
)
from crm_kpi_worker.sandbox.salesforce.store import FieldDef, Table

if TYPE_CHECKING:
    from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg


@dataclass
class UserAccess:
    """One user's object and field permissions."""

    view_all_data: bool = False
    modify_all_data: bool = False
    objects: dict[str, set[str]] = field(default_factory=dict)  # object -> granted flags
    readable: dict[str, set[str]] = field(default_factory=dict)  # object -> fields (lower)
    editable: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, org: SandboxOrg, user_row: int) -> UserAccess:
        access = cls()
        sets = _permission_sets_of(org, user_row)
        if not sets:
            return access
        permission_sets = org.tables["permissionset"]
        rows = np.array(sorted(sets))
        access.view_all_data = bool(
            permission_sets.columns["permissionsviewalldata"].vector(rows)[0].any()
        )
        access.modify_all_data = bool(
            permission_sets.columns["permissionsmodifyalldata"].vector(rows)[0].any()
        )
        access.view_all_data |= access.modify_all_data
        objects = org.tables["objectpermissions"]
        live = _children_of(objects, sets)
        types = objects.columns["sobjecttype"].to_json(live)
        for flag in OBJECT_FLAGS:
            granted = objects.columns[f"permissions{flag.lower()}"].to_json(live)
            for sobject, on in zip(types, granted, strict=True):
                if on:
                    access.objects.setdefault(sobject.lower(), set()).add(flag)
        fields = org.tables["fieldpermissions"]
        live = _children_of(fields, sets)
        names = fields.columns["field"].to_json(live)
        reads = fields.columns["permissionsread"].to_json(live)
        edits = fields.columns["permissionsedit"].to_json(live)
        for name, read, edit in zip(names, reads, edits, strict=True):
            sobject, _, field_name = name.lower().partition(".")
            if read:
                access.readable.setdefault(sobject, set()).add(field_name)
            if edit:
                access.editable.setdefault(sobject, set()).add(field_name)
        return access

    # ---- objects ----------------------------------------------------------------------------

    def can(self, table: Table, flag: str) -> bool:
        """Object permission ``flag`` (Read, Create, Edit, Delete) on ``table``."""
        name = ACCESS_FOLLOWS.get(table.name.lower(), table.name.lower())
        if name != table.name.lower():
            return flag == "Read" and (self.view_all_data or "Read" in self.objects.get(name, ()))
        if not has_object_permissions(table):
            return True
        if self.modify_all_data or (self.view_all_data and flag == "Read"):
            return True
        return flag in self.objects.get(name, ())

    def can_read_object(self, table: Table) -> bool:
        return self.can(table, "Read")

    # ---- fields -----------------------------------------------------------------------------

    def can_read_field(self, table: Table, definition: FieldDef) -> bool:
        if not self.can_read_object(table):
            return False
        return self._field_granted(table, definition, self.readable)

    def can_edit_field(self, table: Table, definition: FieldDef) -> bool:
        return self._field_granted(table, definition, self.editable)

    @staticmethod
    def _field_granted(table: Table, definition: FieldDef, granted: dict[str, set[str]]) -> bool:
        name = table.name.lower()
        if name in UNSECURED_OBJECTS or not is_permissionable(definition):
            return True
        return definition.name.lower() in granted.get(name, ())

    def can_write_object(self, table: Table, creating: bool) -> bool:
        """Create or edit records of ``table``: permission objects and users need Modify All
        Data (the sandbox's stand-in for Manage Users / Manage Profiles and Permission Sets)."""
        name = table.name.lower()
        if name in {"user", *(n for n in UNSECURED_OBJECTS if n not in ACCESS_FOLLOWS)}:
            return self.modify_all_data
        return self.can(table, "Create" if creating else "Edit")


def _permission_sets_of(org: SandboxOrg, user_row: int) -> set[int]:
    """Rows of the user's profile's permission set and of the sets assigned to them."""
    users = org.tables["user"]
    if user_row >= users.size:
        return set()
    profile = int(users.columns["profileid"].data[user_row])  # type: ignore[attr-defined]
    permission_sets = org.tables["permissionset"]
    live = permission_sets.live_rows(include_deleted=False)
    owner = permission_sets.columns["profileid"].data[live]  # type: ignore[attr-defined]
    owned = permission_sets.columns["isownedbyprofile"].data[live]  # type: ignore[attr-defined]
    sets = {int(r) for r in live[(owner == profile) & owned].tolist()}
    assignments = org.tables["permissionsetassignment"]
    rows = assignments.live_rows(include_deleted=False)
    assignee = assignments.columns["assigneeid"].data[rows]  # type: ignore[attr-defined]
    assigned = assignments.columns["permissionsetid"].data[rows]  # type: ignore[attr-defined]
    sets.update(int(r) for r in assigned[assignee == user_row].tolist())
    return sets & {int(r) for r in live.tolist()}


def _children_of(table: Table, sets: set[int]) -> np.ndarray:
    rows = table.live_rows(include_deleted=False)
    parent = table.columns["parentid"].data[rows]  # type: ignore[attr-defined]
    return rows[np.isin(parent, list(sets))]
