"""The sandbox Salesforce org: the data set rendered as sObjects, and record writes.

Writes behave as Salesforce's do where the worker can tell: audit fields and SystemModstamp are
stamped, a change of stage, amount, probability or close date adds an OpportunityHistory row, a
close-date change adds an OpportunityFieldHistory row (the field is tracked), a new stage brings
its default probability and forecast category unless the write sets them.

Deliberate differences from a real org, to exercise the worker's bad-data paths: one demo deal
has no CloseDate (Salesforce requires one; HubSpot does not), one is in CHF, a currency the org
has no conversion rate for (``convertCurrency`` answers null), and one carries "Legacy Stage",
an inactive stage the demo mapping does not know.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.salesforce.access import UserAccess
from crm_kpi_worker.sandbox.salesforce.catalog import (
    picklist_of,
)
from crm_kpi_worker.sandbox.salesforce.cdc_channels import CdcChannels
from crm_kpi_worker.sandbox.salesforce.change_events import (
    UPDATE_STAMPS,
    ChangeEventLog,
    event_fields,
    record_values,
)
from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.permissions import (
    PERMISSION_OBJECTS,
    PermissionRefused,
    canonical_field,
    check_delete,
    check_write,
)
from crm_kpi_worker.sandbox.salesforce.seeding import seed_org
from crm_kpi_worker.sandbox.salesforce.store import (
    BoolColumn,
    Column,
    DateColumn,
    DateTimeColumn,
    FieldDef,
    FieldValueError,
    NumberColumn,
    ReferenceColumn,
    SObjectDef,
    StringColumn,
    Table,
    id_column,
)

TRACKED_HISTORY_FIELDS = ("stagename", "amount", "probability", "closedate")
#: Opportunity fields a new stage sets besides itself (its probability and forecast category).
_SET_WITH_STAGE = frozenset({"probability", "forecastcategoryname"})
#: The standard objects of the sandbox that Change Data Capture supports (custom objects all
#: do; history, share and setup objects do not).
CDC_STANDARD_OBJECTS = frozenset(
    {"account", "contact", "lead", "opportunity", "user", "case", "campaign", "task", "event"}
)
_PERMISSION_TABLES = frozenset(name.lower() for name in PERMISSION_OBJECTS)
_INSUFFICIENT_ACCESS = (
    "INSUFFICIENT_ACCESS_OR_READONLY",
    "You do not have the level of access necessary to perform the operation you requested."
    " Please contact the owner of the record or your administrator if access is necessary.",
)


class RecordError(Exception):
    """One record's failure, as Salesforce reports it in a per-record result."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or []

    def as_result(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


@dataclass(frozen=True)
class WriteOutcome:
    row: int
    record_id: str
    created: bool


class SandboxOrg:
    """All tables of one sandbox org, and the operations the REST API performs on them."""

    def __init__(
        self,
        data: ds.Dataset,
        clock: Callable[[], float] = time.time,
        *,
        enforce_field_security: bool = True,
    ) -> None:
        self.data = data
        # Object and field-level security for the session's user: describes, queries and
        # writes see only what the user's profile and permission sets grant.
        self.enforce_field_security = enforce_field_security
        self._access: dict[int, UserAccess] = {}  # user row -> access, until permissions change
        self.lock = threading.RLock()
        self.tables: dict[str, Table] = {}
        self._next_custom_prefix = 0
        latest = int(max(data.deals.last_modified.max(initial=0), data.users.created_at.max()))
        # The org's clock never runs behind its own data (a reference date in the future).
        offset = max(0.0, (latest + 1000) / 1000 - clock())
        self.now_ms: Callable[[], int] = lambda: int((clock() + offset) * 1000)
        self.stage_by_name: dict[str, tuple[Any, ...]] = {}
        # Change Data Capture: the selected entities (Tooling API) and the event bus.
        self.cdc_channels = CdcChannels(self._change_event_entity)
        self.change_events = ChangeEventLog(self.now_ms, self.cdc_channels.selected)
        seed_org(self)

    # ---- lookups ----------------------------------------------------------------------------

    def table(self, name: str) -> Table | None:
        return self.tables.get(name.lower())

    def _change_event_entity(self, name: str) -> tuple[str, set[str]] | None:
        """An entity's name and change-event fields, when it supports Change Data Capture."""
        table = self.table(name)
        if table is None or not (
            table.sobject.custom or table.name.lower() in CDC_STANDARD_OBJECTS
        ):
            return None
        return table.name, {d.name for d in event_fields(table)}

    def user_id(self, row: int) -> str:
        return make_id("005", row)

    @property
    def admin_row(self) -> int:
        return len(self.data.users)

    def access_for(self, user_row: int) -> UserAccess | None:
        """The user's permissions when the org enforces them (None: everything is allowed)."""
        if not self.enforce_field_security:
            return None
        with self.lock:
            access = self._access.get(user_row)
            if access is None:
                access = self._access[user_row] = UserAccess.of(self, user_row)
            return access

    def permissions_changed(self) -> None:
        with self.lock:
            self._access.clear()

    # ---- building blocks (seeding and schema changes) --------------------------------------

    def new_table(self, sobject: SObjectDef, size: int) -> Table:
        table = Table(sobject, size)
        table.add(id_column(table))
        self.tables[sobject.name.lower()] = table
        return table

    def add_reference(
        self,
        table: Table,
        name: str,
        target: str,
        relationship: str | None,
        values: np.ndarray,
        *,
        label: str | None = None,
        nillable: bool = True,
        updateable: bool = True,
    ) -> ReferenceColumn:
        prefix = self.tables[target.lower()].sobject.key_prefix
        definition = FieldDef(
            name,
            "reference",
            label or name.removesuffix("Id") + " ID",
            nillable=nillable,
            updateable=updateable,
            createable=updateable,
            reference_to=(target,),
            relationship_name=relationship,
            length=18,
        )
        column = ReferenceColumn(definition, prefix, values)
        column.target_size = lambda: self.tables[target.lower()].size
        table.add(column)
        return column

    def add_audit_fields(
        self,
        table: Table,
        created: np.ndarray,
        modified: np.ndarray | None,
        *,
        by: int | np.ndarray,
        modstamp: np.ndarray | None = None,
    ) -> None:
        """Audit fields. ``modified`` None: a history object (no LastModified* fields);
        ``modstamp`` defaults to ``modified`` (or ``created``) and may be shared with it."""
        size = table.size
        system = dict(createable=False, updateable=False, nillable=False)
        creator = np.array(np.broadcast_to(np.asarray(by, dtype=np.int32), (size,)))
        table.add(
            DateTimeColumn(FieldDef("CreatedDate", "datetime", "Created Date", **system), created)
        )
        self.add_reference(table, "CreatedById", "User", "CreatedBy", creator, updateable=False)
        if modified is not None:
            table.add(
                DateTimeColumn(
                    FieldDef("LastModifiedDate", "datetime", "Last Modified Date", **system),
                    modified,
                )
            )
            self.add_reference(
                table,
                "LastModifiedById",
                "User",
                "LastModifiedBy",
                creator.copy(),
                updateable=False,
            )
        stamp = modstamp if modstamp is not None else modified if modified is not None else created
        table.add(
            DateTimeColumn(
                FieldDef("SystemModstamp", "datetime", "System Modstamp", **system), stamp
            )
        )

    def corporate_currency(self, label: str, n: int) -> StringColumn:
        """CurrencyIsoCode of ``n`` records in the corporate currency, its default on create."""
        definition = FieldDef(
            "CurrencyIsoCode",
            "picklist",
            label,
            nillable=False,
            picklist=picklist_of(self.data.currencies),
            default_on_create=self.data.reporting_currency,
        )
        return StringColumn.from_values(definition, [self.data.reporting_currency] * n)

    def add_is_deleted(self, table: Table, values: np.ndarray) -> None:
        table.add(
            BoolColumn(
                FieldDef(
                    "IsDeleted",
                    "boolean",
                    "Deleted",
                    nillable=False,
                    createable=False,
                    updateable=False,
                ),
                values,
            )
        )

    # ---- writes -----------------------------------------------------------------------------

    def write(
        self,
        sobject: str,
        values: Mapping[str, Any],
        *,
        user_row: int,
        row: int | None = None,
    ) -> WriteOutcome:
        """Insert (row None) or update one record; raise RecordError on a bad record.

        Validates every field first, so a failing record changes nothing.
        """
        with self.lock:
            table = self.table(sobject)
            access = self.access_for(user_row)
            if table is None or (access is not None and not access.can_read_object(table)):
                raise RecordError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            creating = row is None
            if access is not None and not access.can_write_object(table, creating):
                raise RecordError(*_INSUFFICIENT_ACCESS)
            planned = self._plan_fields(table, values, creating, access)
            if creating:
                planned = self._with_create_defaults(table, planned)
            keep = True
            if table.name.lower() in _PERMISSION_TABLES:
                keep, planned = self._check_permission_write(table, row, planned)
            before = None if creating else self._tracked(table, row)  # type: ignore[arg-type]
            captured = self.change_events.selected(table.name)
            touched: frozenset[str] | None = None  # an update's fields (its event compares them)
            before_event = None
            if captured and row is not None:
                # Only what it writes, the stamps it sets and what a stage sets: reading every
                # field of the record twice made Bulk updates several times slower.
                written = {column.definition.name.lower() for column, _ in planned}
                extra = _SET_WITH_STAGE if table.name == "Opportunity" else frozenset()
                touched = UPDATE_STAMPS | written | extra
                before_event = record_values(table, row, touched)
            if creating:
                row = table.append_rows(1).start
            assert row is not None
            snapshot = [(column, column.to_json(np.array([row]))[0]) for column, _ in planned]
            try:
                for column, value in planned:
                    column.set(row, value)
            except FieldValueError as exc:
                if creating:
                    table.size -= 1
                else:
                    for column, old in snapshot:
                        column.set(row, old)
                raise RecordError(exc.code, exc.message, [column.definition.name]) from None
            self._stamp(table, row, user_row, creating)
            if table.name == "Opportunity":
                self._track_opportunity(table, row, before, values, user_row)
            if table.name.lower() in _PERMISSION_TABLES or table.name == "User":
                if not keep:  # a grant of nothing is deleted, as on Salesforce
                    table.removed.add(row)
                self.permissions_changed()
            if captured:
                self.change_events.record_write(
                    table,
                    row,
                    before_event,
                    user_id=self.user_id(user_row),
                    change_type="CREATE" if creating else "UPDATE",
                    only=touched,
                )
            return WriteOutcome(row, table.id_of(row), creating)

    def _plan_fields(
        self,
        table: Table,
        values: Mapping[str, Any],
        creating: bool,
        access: UserAccess | None,
    ) -> list[tuple[Column, Any]]:
        """The columns a write sets, each checked: it exists, the user may write it, a required
        field is not emptied."""
        planned: list[tuple[Column, Any]] = []
        for name, value in values.items():
            if name in {"attributes", "Id", "id"}:
                continue
            column = table.column(name)
            if column is None:
                raise RecordError(
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {table.name}",
                    [name],
                )
            definition = column.definition
            allowed = definition.createable if creating else definition.updateable
            if access is not None and not access.can_edit_field(table, definition):
                allowed = False
            if not allowed:
                raise RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {definition.name}. Please check the"
                    " security settings of this field and verify that it is read/write for"
                    " your profile or permission set.",
                    [definition.name],
                )
            if value is None and not definition.nillable:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{definition.name}]",
                    [definition.name],
                )
            planned.append((column, value))
        return planned

    @staticmethod
    def _with_create_defaults(
        table: Table, planned: list[tuple[Column, Any]]
    ) -> list[tuple[Column, Any]]:
        """A create's values with the defaults of the fields it leaves out; refused when a
        required field is missing."""
        given = {c.definition.name.lower() for c, _ in planned}
        missing = [
            d.name
            for d in table.sobject.fields.values()
            if not d.nillable
            and d.createable
            and d.type != "boolean"
            and d.default_on_create is None
            and d.name.lower() not in given
            and d.name.lower() != "ownerid"
        ]
        defaults = [
            (table.columns[name], d.default_on_create)
            for name, d in table.sobject.fields.items()
            if d.default_on_create is not None and name not in given
        ]
        if missing:
            raise RecordError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        return defaults + planned

    def _check_permission_write(
        self, table: Table, row: int | None, planned: list[tuple[Column, Any]]
    ) -> tuple[bool, list[tuple[Column, Any]]]:
        """Salesforce's checks on a permission object's record; whether it is kept, and the
        values to write (a FieldPermissions' Field as Salesforce stores it)."""
        after: dict[str, Any] = {}
        if row is not None:
            rows = np.array([row])
            after = {name: column.to_json(rows)[0] for name, column in table.columns.items()}
        after.update((column.definition.name.lower(), value) for column, value in planned)
        try:
            keep = check_write(self, table, row, after)
        except PermissionRefused as exc:
            raise RecordError(exc.code, exc.message, exc.fields) from None
        if table.name == "FieldPermissions":
            planned = [
                (c, canonical_field(self, str(after.get("sobjecttype")), v))
                if c.definition.name == "Field"
                else (c, v)
                for c, v in planned
            ]
        return keep, planned

    def _tracked(self, table: Table, row: int) -> dict[str, Any] | None:
        if table.name != "Opportunity":
            return None
        rows = np.array([row])
        return {name: table.columns[name].to_json(rows)[0] for name in TRACKED_HISTORY_FIELDS}

    def _stamp(self, table: Table, row: int, user_row: int, creating: bool) -> None:
        now = self.now_ms()
        names = ["lastmodifieddate", "systemmodstamp"] + (["createddate"] if creating else [])
        for name in names:
            column = table.columns.get(name)
            if isinstance(column, DateTimeColumn):
                column.data[row] = now
        for name in ["lastmodifiedbyid"] + (["createdbyid"] if creating else []):
            column = table.columns.get(name)
            if isinstance(column, ReferenceColumn):
                column.data[row] = user_row
        owner = table.columns.get("ownerid")
        if creating and isinstance(owner, ReferenceColumn) and owner.data[row] < 0:
            owner.data[row] = user_row
        deleted = table.columns.get("isdeleted")
        if creating and isinstance(deleted, BoolColumn):
            deleted.data[row] = False

    def _track_opportunity(
        self,
        table: Table,
        row: int,
        before: dict[str, Any] | None,
        values: Mapping[str, Any],
        user_row: int,
    ) -> None:
        rows = np.array([row])
        given = {k.lower() for k in values}
        stage = table.columns["stagename"].to_json(rows)[0]
        stage_info = self.stage_by_name.get((stage or "").casefold())
        if stage_info and (before is None or before["stagename"] != stage):
            if "probability" not in given:
                table.columns["probability"].set(row, stage_info[1])
            if "forecastcategoryname" not in given:
                table.columns["forecastcategoryname"].set(row, stage_info[2])
        after = {name: table.columns[name].to_json(rows)[0] for name in TRACKED_HISTORY_FIELDS}
        now = self.now_ms()
        if before is None or any(before[k] != after[k] for k in TRACKED_HISTORY_FIELDS):
            history = self.tables["opportunityhistory"]
            new = history.append_rows(1).start
            copy = {
                "opportunityid": table.id_of(row),
                "stagename": after["stagename"],
                "amount": after["amount"],
                "probability": after["probability"],
                "closedate": after["closedate"],
                "forecastcategory": table.columns["forecastcategory"].to_json(rows)[0],
                "prevamount": before["amount"] if before else None,
                "prevclosedate": before["closedate"] if before else None,
            }
            for name, value in copy.items():
                history.columns[name].set(new, value)
            self._stamp(history, new, user_row, creating=True)
            for name in ("createddate", "systemmodstamp", "lastmodifieddate"):
                column = history.columns.get(name)
                if isinstance(column, DateTimeColumn):
                    column.data[new] = now
        if before is not None and before["closedate"] != after["closedate"]:
            tracking = self.tables["opportunityfieldhistory"]
            new = tracking.append_rows(1).start
            for name, value in (
                ("opportunityid", table.id_of(row)),
                ("field", "CloseDate"),
                ("datatype", "Date"),
                ("oldvalue", before["closedate"]),
                ("newvalue", after["closedate"]),
            ):
                tracking.columns[name].set(new, value)
            self._stamp(tracking, new, user_row, creating=True)

    def delete(self, sobject: str, record_id: str, *, user_row: int, hard: bool = False) -> None:
        """Move a record to the recycle bin (IsDeleted = true; visible to queryAll); ``hard``
        (Bulk API's hardDelete): delete it and its cascade for good, as setup objects always
        are."""
        with self.lock:
            table = self.table(sobject)
            access = self.access_for(user_row)
            if (
                table is None
                or not (table.sobject.has_is_deleted or table.sobject.hard_delete)
                or (access is not None and not access.can_read_object(table))
            ):
                raise RecordError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            row = self.find_row(table, record_id)
            if access is not None and not (
                access.can_write_object(table, creating=False) and access.can(table, "Delete")
            ):
                raise RecordError(*_INSUFFICIENT_ACCESS)
            if table.sobject.hard_delete:
                try:
                    cascade = check_delete(self, table, row)
                except PermissionRefused as exc:
                    raise RecordError(exc.code, exc.message, exc.fields) from None
                for child, child_row in [(table, row), *cascade]:
                    child.removed.add(child_row)
                self.permissions_changed()
                return
            deleted = table.columns["isdeleted"]
            assert isinstance(deleted, BoolColumn)
            deleted.data[row] = True
            self._stamp(table, row, user_row, creating=False)
            if self.change_events.selected(table.name):
                self.change_events.record_delete(
                    table, table.id_of(row), user_id=self.user_id(user_row)
                )
            if hard:
                table.removed.add(row)
            for rel in table.sobject.children.values():
                child = self.tables[rel.child.lower()]
                fk = child.columns[rel.field.lower()]
                child_deleted = child.columns.get("isdeleted")
                if isinstance(fk, ReferenceColumn) and isinstance(child_deleted, BoolColumn):
                    children = np.flatnonzero(fk.data[: child.size] == row)
                    child_deleted.data[children] = True
                    if hard:
                        child.removed.update(children.tolist())

    def find_row(self, table: Table, record_id: str, *, include_deleted: bool = False) -> int:
        try:
            row = table.row_of(record_id)
        except ValueError:
            raise RecordError(
                "MALFORMED_ID", f"{table.name} ID: id value of incorrect type: {record_id}", ["Id"]
            ) from None
        if row is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["Id"])
        deleted = table.columns.get("isdeleted")
        if not include_deleted and isinstance(deleted, BoolColumn) and deleted.data[row]:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
        return row

    def find_by_external_id(self, table: Table, field_name: str, value: str) -> list[int]:
        column = table.column(field_name)
        if column is None or not (column.definition.external_id or column.definition.type == "id"):
            raise RecordError(
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        if column.definition.type == "id":
            return [self.find_row(table, value)]
        rows = table.live_rows(include_deleted=False)
        assert isinstance(column, StringColumn)
        wanted = {
            c for c, text in enumerate(column.categories) if text.casefold() == value.casefold()
        }
        codes = column.codes[rows]
        return [int(r) for r in rows[np.isin(codes, list(wanted))]] if wanted else []

    # ---- schema changes (Tooling API) -------------------------------------------------------

    def create_custom_object(
        self, api_name: str, label: str, plural: str, name_label: str
    ) -> Table:
        with self.lock:
            if not api_name.endswith("__c") or api_name.lower() in self.tables:
                raise RecordError(
                    "DUPLICATE_DEVELOPER_NAME"
                    if api_name.lower() in self.tables
                    else "INVALID_FIELD",
                    f"Cannot create custom object {api_name}",
                )
            prefix = f"a{self._next_custom_prefix:02d}"
            self._next_custom_prefix += 1
            table = self.new_table(SObjectDef(api_name, label, plural, prefix, custom=True), 0)
            self.add_is_deleted(table, np.zeros(0, dtype=bool))
            table.add(
                StringColumn(FieldDef("Name", "string", name_label, length=80, name_field=True))
            )
            self.add_reference(
                table, "OwnerId", "User", "Owner", np.zeros(0, dtype=np.int32), nillable=False
            )
            empty = np.zeros(0, dtype=np.int64)
            self.add_audit_fields(table, empty, empty.copy(), by=np.zeros(0, dtype=np.int32))
            table.sobject.fields["ownerid"].createable = True
            self.permissions_changed()
            return table

    def create_custom_field(
        self,
        sobject: str,
        api_name: str,
        field_type: str,
        label: str,
        *,
        length: int = 0,
        precision: int = 0,
        scale: int = 0,
        help_text: str | None = None,
        external_id: bool = False,
        unique: bool = False,
        reference_to: str | None = None,
    ) -> FieldDef:
        with self.lock:
            table = self.table(sobject)
            if table is None:
                raise RecordError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            if not api_name.endswith("__c") or not api_name[:-3].replace("_", "").isalnum():
                raise RecordError("INVALID_FIELD", f"Invalid custom field name: {api_name}")
            if table.column(api_name) is not None:
                raise RecordError(
                    "DUPLICATE_DEVELOPER_NAME",
                    f"There is already a field named {api_name[:-3]} on {table.name}.",
                )
            definition = FieldDef(
                api_name,
                field_type,
                label,
                custom=True,
                length=length,
                precision=precision,
                scale=scale,
                help_text=help_text,
                external_id=external_id,
                unique=unique,
            )
            column: Column
            if field_type in {"double", "currency", "percent", "int"}:
                column = NumberColumn(definition)
            elif field_type == "boolean":
                column = BoolColumn(definition)
            elif field_type == "date":
                column = DateColumn(definition)
            elif field_type == "datetime":
                column = DateTimeColumn(definition)
            elif field_type == "reference" and reference_to:
                target = self.table(reference_to)
                if target is None:
                    raise RecordError(
                        "INVALID_TYPE", f"sObject type '{reference_to}' is not supported."
                    )
                definition.reference_to = (target.name,)
                definition.relationship_name = api_name[:-3] + "__r"
                column = ReferenceColumn(definition, target.sobject.key_prefix)
                column.target_size = lambda: target.size
            else:
                column = StringColumn(definition)
            table.add(column)
            self.permissions_changed()
            return definition
