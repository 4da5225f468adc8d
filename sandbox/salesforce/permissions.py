"""The org's permission model as sObjects, as Salesforce exposes it: Profile, PermissionSet
(each profile owns one, ``IsOwnedByProfile``), ObjectPermissions, FieldPermissions and
PermissionSetAssignment; the profiles and grants the org is seeded with; and the checks
Salesforce makes when they are written (``check_write``, ``check_delete``).

Seeded profiles: "System Administrator" (the integration admin: View and Modify All Data, read
and edit on every field the org was seeded with), "Standard User" (the reps: read on the seeded
fields, edit on their deals' and accounts'), "Sales Manager" (Standard User plus View All on
accounts and opportunities). Fields and objects created later (Tooling API) get no grant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from crm_kpi_worker.sandbox.dataset import USER_ROLES
from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.store import (
    BoolColumn,
    DateTimeColumn,
    FieldDef,
    FieldValueError,
    ReferenceColumn,
    SObjectDef,
    StringColumn,
    Table,
)

if TYPE_CHECKING:
    from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg

SYSTEM_ADMINISTRATOR = "System Administrator"
STANDARD_USER = "Standard User"
SALES_MANAGER = "Sales Manager"
PERMISSION_OBJECTS = (
    "Profile",
    "PermissionSet",
    "ObjectPermissions",
    "FieldPermissions",
    "PermissionSetAssignment",
)
# Objects whose fields carry no field-level security and that every user reads: setup and
# reference objects, and histories (their access follows the parent's).
UNSECURED_OBJECTS = frozenset(
    name.lower()
    for name in (
        *PERMISSION_OBJECTS,
        "CurrencyType",
        "OpportunityStage",
        "Period",
        "OpportunityHistory",
        "OpportunityFieldHistory",
    )
)
# Standard objects with ObjectPermissions (custom objects have them too).
STANDARD_PERMISSIONABLE_OBJECTS = frozenset({"account", "opportunity"})
# Objects whose read access is another object's.
ACCESS_FOLLOWS = {"opportunityhistory": "opportunity", "opportunityfieldhistory": "opportunity"}
#: Fields the org sets itself (lower case): no field-level security, defaulted on create.
SYSTEM_FIELDS = frozenset(
    {
        "id",
        "isdeleted",
        "createddate",
        "createdbyid",
        "lastmodifieddate",
        "lastmodifiedbyid",
        "systemmodstamp",
        "ownerid",
    }
)
OBJECT_FLAGS = ("Read", "Create", "Edit", "Delete", "ViewAllRecords", "ModifyAllRecords")
# Salesforce's dependencies between object permissions: each needs the ones listed.
_OBJECT_DEPENDENCIES = {
    "Create": ("Read",),
    "Edit": ("Read",),
    "Delete": ("Read", "Edit"),
    "ViewAllRecords": ("Read",),
    "ModifyAllRecords": ("Read", "Edit", "Delete", "ViewAllRecords"),
}
_DEVELOPER_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*$")


class PermissionRefused(Exception):
    """A write Salesforce refuses: ``code`` and ``message`` as its per-record error."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or []


def is_permissionable(definition: FieldDef) -> bool:
    """Whether a field takes field-level security: not the id, name, audit or required fields."""
    return (
        definition.type != "id"
        and not definition.name_field
        and definition.name.lower() not in SYSTEM_FIELDS
        and (definition.nillable or definition.type == "boolean")
    )


def has_object_permissions(table: Table) -> bool:
    """Whether an object's access is granted by ObjectPermissions (custom objects, accounts,
    opportunities); every user reads the others."""
    return table.sobject.custom or table.name.lower() in STANDARD_PERMISSIONABLE_OBJECTS


def is_valid_developer_name(name: str) -> bool:
    return bool(_DEVELOPER_NAME.match(name)) and not name.endswith("_") and len(name) <= 80


# ---- seeding --------------------------------------------------------------------------------


def seed_permissions(org: SandboxOrg) -> None:
    """The permission objects, the users' profiles, and the seeded grants (after every other
    table, so every seeded field gets its field permissions)."""
    stamp = int(org.data.users.created_at.min(initial=0))
    profiles = _build_profiles(org, stamp)
    _give_users_profiles(org, profiles)
    sets = _build_permission_sets(org, profiles, stamp)
    _build_object_permissions(org, sets, stamp)
    _build_field_permissions(org, sets, stamp)
    _build_assignments(org)


def _new(org: SandboxOrg, sobject: SObjectDef, rows: int) -> Table:
    table = org.new_table(sobject, rows)
    table.sobject.hard_delete = True
    return table


def _build_profiles(org: SandboxOrg, stamp: int) -> list[str]:
    names = [SYSTEM_ADMINISTRATOR, STANDARD_USER, SALES_MANAGER]
    table = _new(
        org,
        SObjectDef("Profile", "Profile", "Profiles", "00e", createable=False, updateable=False),
        len(names),
    )
    table.add(
        StringColumn.from_values(
            FieldDef(
                "Name",
                "string",
                "Name",
                nillable=False,
                length=255,
                name_field=True,
                createable=False,
                updateable=False,
            ),
            names,
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef(
                "Description",
                "string",
                "Description",
                length=255,
                createable=False,
                updateable=False,
            ),
            [
                "Manages the org: View and Modify All Data.",
                "Reads the org's records and edits their own deals.",
                "Standard User, plus View All on accounts and opportunities.",
            ],
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("UserType", "picklist", "User Type", createable=False, updateable=False),
            ["Standard"] * len(names),
        )
    )
    times = np.full(len(names), stamp, dtype=np.int64)
    org.add_audit_fields(table, times, times.copy(), by=org.admin_row)
    return names


def _give_users_profiles(org: SandboxOrg, profiles: list[str]) -> None:
    role = np.append(org.data.users.role, USER_ROLES.index("integration"))
    manager = USER_ROLES.index("manager")
    profile = np.where(role == manager, profiles.index(SALES_MANAGER), 1).astype(np.int32)
    profile[org.admin_row] = profiles.index(SYSTEM_ADMINISTRATOR)
    users = org.tables["user"]
    column = org.add_reference(users, "ProfileId", "Profile", "Profile", profile, nillable=False)
    column.definition.label = "Profile ID"


def _build_permission_sets(org: SandboxOrg, profiles: list[str], stamp: int) -> Table:
    table = _new(org, SObjectDef("PermissionSet", "Permission Set", "Permission Sets", "0PS"), 0)
    table.add(StringColumn(FieldDef("Name", "string", "Name", nillable=False, length=80)))
    table.add(
        StringColumn(
            FieldDef("Label", "string", "Label", nillable=False, length=80, name_field=True)
        )
    )
    table.add(StringColumn(FieldDef("Description", "textarea", "Description", length=255)))
    table.add(
        BoolColumn(
            FieldDef(
                "IsOwnedByProfile",
                "boolean",
                "Is Owned by Profile",
                createable=False,
                updateable=False,
            )
        )
    )
    org.add_reference(table, "ProfileId", "Profile", "Profile", np.zeros(0, np.int32))
    table.sobject.fields["profileid"].createable = False
    table.sobject.fields["profileid"].updateable = False
    for flag, label in (("ViewAllData", "View All Data"), ("ModifyAllData", "Modify All Data")):
        table.add(BoolColumn(FieldDef(f"Permissions{flag}", "boolean", label, nillable=False)))
    empty = np.zeros(0, dtype=np.int64)
    org.add_audit_fields(table, empty, empty.copy(), by=np.zeros(0, dtype=np.int32))
    for row, profile in enumerate(profiles):
        # Salesforce names a profile's own permission set after the profile's id.
        name = "X" + make_id("00e", row)[:15]
        new = table.append_rows(1).start
        admin = profile == SYSTEM_ADMINISTRATOR
        for field, value in (
            ("name", name),
            ("label", name),
            ("isownedbyprofile", True),
            ("profileid", row),
            ("permissionsviewalldata", admin),
            ("permissionsmodifyalldata", admin),
        ):
            _set_raw(table, field, new, value)
        _stamp_seeded(org, table, new, stamp)
    return table


def _set_raw(table: Table, field: str, row: int, value: Any) -> None:
    column = table.columns[field]
    if isinstance(column, ReferenceColumn | BoolColumn):
        column.data[row] = value
    else:
        column.set(row, value)


def _stamp_seeded(org: SandboxOrg, table: Table, row: int, stamp: int) -> None:
    for name in ("createddate", "lastmodifieddate", "systemmodstamp"):
        column = table.columns.get(name)
        if isinstance(column, DateTimeColumn):
            column.data[row] = stamp
    for name in ("createdbyid", "lastmodifiedbyid"):
        column = table.columns.get(name)
        if isinstance(column, ReferenceColumn):
            column.data[row] = org.admin_row


def _permission_child(org: SandboxOrg, sobject: SObjectDef) -> Table:
    table = _new(org, sobject, 0)
    reference = org.add_reference(
        table, "ParentId", "PermissionSet", "Parent", np.zeros(0, np.int32), nillable=False
    )
    reference.definition.label = "Parent ID"
    reference.definition.updateable = False
    table.add(
        StringColumn(
            FieldDef("SobjectType", "picklist", "SObject Type Name", nillable=False, length=40)
        )
    )
    table.sobject.fields["sobjecttype"].updateable = False
    return table


def _build_object_permissions(org: SandboxOrg, sets: Table, stamp: int) -> None:
    table = _permission_child(
        org, SObjectDef("ObjectPermissions", "Object Permissions", "Object Permissions", "110")
    )
    labels = (
        "Read Records",
        "Create Records",
        "Edit Records",
        "Delete Records",
        "Read All Records",
        "Edit All Records",
    )
    for flag, label in zip(OBJECT_FLAGS, labels, strict=True):
        table.add(BoolColumn(FieldDef(f"Permissions{flag}", "boolean", label, nillable=False)))
    empty = np.zeros(0, dtype=np.int64)
    org.add_audit_fields(table, empty, empty.copy(), by=np.zeros(0, dtype=np.int32))
    objects = [t for t in org.tables.values() if has_object_permissions(t)]
    for parent in range(sets.size):
        profile = _profile_of_set(org, sets, parent)
        for target in objects:
            flags = _seeded_object_flags(profile, target.name)
            row = table.append_rows(1).start
            _set_raw(table, "parentid", row, parent)
            _set_raw(table, "sobjecttype", row, target.name)
            for flag in OBJECT_FLAGS:
                _set_raw(table, f"permissions{flag.lower()}", row, flag in flags)
            _stamp_seeded(org, table, row, stamp)


def _seeded_object_flags(profile: str, sobject: str) -> set[str]:
    if profile == SYSTEM_ADMINISTRATOR:
        return set(OBJECT_FLAGS)
    flags = {"Read", "Create", "Edit"}
    if profile == SALES_MANAGER:
        flags.add("ViewAllRecords")
    return flags


def _profile_of_set(org: SandboxOrg, sets: Table, row: int) -> str:
    profile_row = int(sets.columns["profileid"].data[row])  # type: ignore[attr-defined]
    return str(org.tables["profile"].columns["name"].to_json(np.array([profile_row]))[0])


def _build_field_permissions(org: SandboxOrg, sets: Table, stamp: int) -> None:
    table = _permission_child(
        org, SObjectDef("FieldPermissions", "Field Permissions", "Field Permissions", "01k")
    )
    table.add(StringColumn(FieldDef("Field", "picklist", "Field Name", nillable=False, length=81)))
    table.sobject.fields["field"].updateable = False
    table.add(BoolColumn(FieldDef("PermissionsRead", "boolean", "Read Field", nillable=False)))
    table.add(BoolColumn(FieldDef("PermissionsEdit", "boolean", "Edit Field", nillable=False)))
    times = np.zeros(0, dtype=np.int64)
    table.add(
        DateTimeColumn(
            FieldDef(
                "SystemModstamp",
                "datetime",
                "System Modstamp",
                createable=False,
                updateable=False,
                nillable=False,
            ),
            times,
        )
    )
    grants = list(_seeded_field_grants(org))
    for parent in range(sets.size):
        profile = _profile_of_set(org, sets, parent)
        for sobject, definition in grants:
            writable = (definition.updateable or definition.createable) and not (
                definition.calculated
            )
            edit = writable and (
                profile == SYSTEM_ADMINISTRATOR or sobject.lower() in {"opportunity", "account"}
            )
            row = table.append_rows(1).start
            _set_raw(table, "parentid", row, parent)
            _set_raw(table, "sobjecttype", row, sobject)
            _set_raw(table, "field", row, f"{sobject}.{definition.name}")
            _set_raw(table, "permissionsread", row, True)
            _set_raw(table, "permissionsedit", row, edit)
            _stamp_seeded(org, table, row, stamp)


def _seeded_field_grants(org: SandboxOrg) -> Iterator[tuple[str, FieldDef]]:
    for table in list(org.tables.values()):
        if table.name.lower() in UNSECURED_OBJECTS:
            continue
        for definition in table.sobject.fields.values():
            if is_permissionable(definition):
                yield table.name, definition


def _build_assignments(org: SandboxOrg) -> None:
    table = _new(
        org,
        SObjectDef(
            "PermissionSetAssignment",
            "Permission Set Assignment",
            "Permission Set Assignments",
            "0Pa",
        ),
        0,
    )
    for name, target, relationship, label in (
        ("AssigneeId", "User", "Assignee", "Assignee ID"),
        ("PermissionSetId", "PermissionSet", "PermissionSet", "Permission Set ID"),
    ):
        column = org.add_reference(
            table, name, target, relationship, np.zeros(0, np.int32), nillable=False
        )
        column.definition.label = label
        column.definition.updateable = False
    table.add(
        DateTimeColumn(
            FieldDef(
                "SystemModstamp",
                "datetime",
                "System Modstamp",
                createable=False,
                updateable=False,
                nillable=False,
            )
        )
    )


# ---- checks on writes -----------------------------------------------------------------------


def check_write(org: SandboxOrg, table: Table, row: int | None, values: Mapping[str, Any]) -> bool:
    """Refuse (PermissionRefused) a write of a permission object Salesforce would refuse.

    ``values`` are the record's values after the write, by lower-cased field name. Returns
    whether the record is kept (a FieldPermissions or ObjectPermissions record that grants
    nothing is deleted, as on Salesforce).
    """
    name = table.name.lower()
    if name == "permissionset":
        _check_permission_set(table, row, values)
    elif name == "objectpermissions":
        _check_object_permissions(org, table, row, values)
        return any(values.get(f"permissions{f.lower()}") for f in OBJECT_FLAGS)
    elif name == "fieldpermissions":
        _check_field_permissions(org, table, row, values)
        return bool(values.get("permissionsread"))
    elif name == "permissionsetassignment":
        _check_assignment(org, table, row, values)
    return True


def _others(table: Table, row: int | None) -> np.ndarray:
    rows = table.live_rows(include_deleted=False)
    return rows[rows != row] if row is not None else rows


def _matching(table: Table, row: int | None, **wanted: Any) -> np.ndarray:
    """Live rows other than ``row`` whose fields equal ``wanted`` (strings case-insensitively,
    ids in their 15- or 18-character forms)."""
    rows = _others(table, row)
    for field, value in wanted.items():
        column = table.columns[field]
        if isinstance(column, ReferenceColumn):
            try:
                target = column.coerce(value)
            except FieldValueError:
                return rows[:0]
            rows = rows[column.data[rows] == target]
            continue
        values = column.to_json(rows)
        keep = [
            (v.casefold() == value.casefold()) if isinstance(v, str) else v == value for v in values
        ]
        rows = rows[np.array(keep, dtype=bool)] if len(rows) else rows
    return rows


def _check_permission_set(table: Table, row: int | None, values: Mapping[str, Any]) -> None:
    name = values.get("name") or ""
    if not is_valid_developer_name(name):
        raise PermissionRefused(
            "FIELD_INTEGRITY_EXCEPTION",
            "The API Name can only contain underscores and alphanumeric characters. It must be"
            " unique, begin with a letter, not include spaces, not end with an underscore, and"
            " not contain two consecutive underscores.",
            ["Name"],
        )
    if row is not None and values.get("isownedbyprofile"):
        raise PermissionRefused(
            "FIELD_INTEGRITY_EXCEPTION",
            "You can't edit a permission set that's owned by a profile: edit the profile.",
        )
    if len(_matching(table, row, name=name)):
        raise PermissionRefused(
            "DUPLICATE_DEVELOPER_NAME",
            f"The API name {name} is already in use by another permission set.",
            ["Name"],
        )


def _check_object_permissions(
    org: SandboxOrg, table: Table, row: int | None, values: Mapping[str, Any]
) -> None:
    sobject = str(values.get("sobjecttype") or "")
    target = org.table(sobject)
    if target is None or not has_object_permissions(target):
        raise PermissionRefused(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"SObject Type Name: bad value for restricted picklist field: {sobject}",
            ["SobjectType"],
        )
    for flag, needed in _OBJECT_DEPENDENCIES.items():
        missing = [n for n in needed if not values.get(f"permissions{n.lower()}")]
        if values.get(f"permissions{flag.lower()}") and missing:
            raise PermissionRefused(
                "FIELD_INTEGRITY_EXCEPTION",
                f"Permission {_flag_label(flag)} {target.name} depends on permission(s): "
                + ", ".join(f"{_flag_label(n)} {target.name}" for n in missing),
            )
    duplicates = _matching(table, row, parentid=values.get("parentid"), sobjecttype=target.name)
    if len(duplicates):
        raise PermissionRefused(
            "DUPLICATE_VALUE",
            "duplicate value found: SobjectType duplicates value on record with id:"
            f" {table.id_of(int(duplicates[0]))}",
            ["SobjectType"],
        )


def _flag_label(flag: str) -> str:
    return {"ViewAllRecords": "View All", "ModifyAllRecords": "Modify All"}.get(flag, flag)


def _check_field_permissions(
    org: SandboxOrg, table: Table, row: int | None, values: Mapping[str, Any]
) -> None:
    sobject = str(values.get("sobjecttype") or "")
    target = org.table(sobject)
    if target is None or target.name.lower() in UNSECURED_OBJECTS:
        raise PermissionRefused(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"SObject Type Name: bad value for restricted picklist field: {sobject}",
            ["SobjectType"],
        )
    field = str(values.get("field") or "")
    prefix, _, field_name = field.partition(".")
    definition = target.sobject.field(field_name) if prefix.lower() == sobject.lower() else None
    if definition is None and field_name and not field_name.lower().endswith("id"):
        # A lookup may be named without its Id suffix (Contact.Account).
        definition = target.sobject.field(field_name + "Id")
        definition = definition if definition and definition.type == "reference" else None
    if definition is None or not is_permissionable(definition):
        raise PermissionRefused(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"Field Name: bad value for restricted picklist field: {field}",
            ["Field"],
        )
    if values.get("permissionsedit") and not values.get("permissionsread"):
        raise PermissionRefused(
            "FIELD_INTEGRITY_EXCEPTION",
            f"Permission Edit {target.name}.{definition.name} depends on permission(s):"
            f" Read {target.name}.{definition.name}",
            ["PermissionsRead"],
        )
    canonical = f"{target.name}.{definition.name}"
    duplicates = _matching(table, row, parentid=values.get("parentid"), field=canonical)
    if len(duplicates):
        raise PermissionRefused(
            "DUPLICATE_VALUE",
            "duplicate value found: Field duplicates value on record with id:"
            f" {table.id_of(int(duplicates[0]))}",
            ["Field"],
        )


def canonical_field(org: SandboxOrg, sobject: str, field: str) -> str:
    """A FieldPermissions ``Field`` as Salesforce stores it (its object's and field's names)."""
    target = org.table(sobject)
    _, _, name = field.partition(".")
    if target is None:
        return field
    definition = target.sobject.field(name) or target.sobject.field(name + "Id")
    return f"{target.name}.{definition.name}" if definition else field


def _check_assignment(
    org: SandboxOrg, table: Table, row: int | None, values: Mapping[str, Any]
) -> None:
    sets = org.tables["permissionset"]
    set_id = values.get("permissionsetid")
    set_row = sets.row_of(set_id) if isinstance(set_id, str) else None
    if set_row is not None and sets.columns["isownedbyprofile"].data[set_row]:  # type: ignore[attr-defined]
        raise PermissionRefused(
            "FIELD_INTEGRITY_EXCEPTION",
            "You can't assign or unassign this permission set because it's associated with a"
            " profile.",
            ["PermissionSetId"],
        )
    users = org.tables["user"]
    user_id = values.get("assigneeid")
    user_row = users.row_of(user_id) if isinstance(user_id, str) else None
    if user_row is not None and not users.columns["isactive"].data[user_row]:  # type: ignore[attr-defined]
        raise PermissionRefused(
            "INACTIVE_OWNER_OR_USER", "operation performed with inactive user", ["AssigneeId"]
        )
    if len(_matching(table, row, assigneeid=user_id, permissionsetid=set_id)):
        raise PermissionRefused(
            "DUPLICATE_VALUE",
            "duplicate value found: <unknown> duplicates value on record with id: <unknown>",
        )


def check_delete(org: SandboxOrg, table: Table, row: int) -> list[tuple[Table, int]]:
    """Refuse a delete Salesforce refuses; the rows deleted with this one (a permission set's
    object and field permissions)."""
    name = table.name.lower()
    if name != "permissionset":
        return []
    if table.columns["isownedbyprofile"].data[row]:  # type: ignore[attr-defined]
        raise PermissionRefused(
            "CANNOT_MODIFY_MANAGED_OBJECT",
            "A permission set owned by a profile is deleted with its profile only.",
        )
    assignments = org.tables["permissionsetassignment"]
    if len(_matching(assignments, None, permissionsetid=table.id_of(row))):
        raise PermissionRefused(
            "DELETE_FAILED",
            "This permission set is assigned to users: remove its assignments first.",
        )
    cascade: list[tuple[Table, int]] = []
    for child_name in ("objectpermissions", "fieldpermissions"):
        child = org.tables[child_name]
        for child_row in _matching(child, None, parentid=table.id_of(row)).tolist():
            cascade.append((child, int(child_row)))
    return cascade
