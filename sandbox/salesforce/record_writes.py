"""One record written or deleted on behalf of a multi-record API call: sObject Collections
(``sobject_collections.py``) and Bulk API 2.0 ingest jobs (``bulk_ingest.py``) both go through
:class:`RecordWriter`, so a record fails the same way, with the same statusCode and message,
whichever API carried it.

A write is checked in Salesforce's order: the object exists, a ``write_failure`` fault rule
(``sandbox/faults.py``) may fail the record (``UNABLE_TO_LOCK_ROW``), the target row is found
(insert, update by Id, upsert by an external id or by Id), then ``SandboxOrg.write`` checks
object and field permissions and every value and stamps the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crm_kpi_worker.sandbox.faults import FaultPlan
from crm_kpi_worker.sandbox.salesforce.org import RecordError, SandboxOrg, WriteOutcome
from crm_kpi_worker.sandbox.salesforce.store import Table
from crm_kpi_worker.sandbox.serving import WriteLog

__all__ = ["RecordWriter", "pop_record_id"]

#: Called with (table, target row or None for an insert, the values to write) just before the
#: write: sObject Collections records how to take it back for an allOrNone batch.
BeforeWrite = Callable[[Table, "int | None", dict[str, Any]], None]


def pop_record_id(values: dict[str, Any]) -> str | None:
    """Take the record's Id out of ``values`` (any spelling of the key: ``id``, ``Id``, ``ID``),
    so it is never written as a field; None when it is absent or empty."""
    record_id = None
    for key in [k for k in values if k.lower() == "id"]:
        record_id = values.pop(key) or record_id
    return record_id


@dataclass(frozen=True)
class RecordWriter:
    """Writes records for one user; ``method`` and ``path`` are what fault rules match."""

    org: SandboxOrg
    faults: FaultPlan
    write_log: WriteLog
    user_row: int
    method: str
    path: str

    def save(
        self,
        sobject: str,
        values: dict[str, Any],
        record_id: str | None,
        *,
        creating: bool,
        ext_field: str | None,
        before_write: BeforeWrite | None = None,
    ) -> WriteOutcome:
        """Insert (``creating``), update (by ``record_id``) or upsert (``ext_field``, which
        may be ``Id``) one record; raises RecordError as Salesforce reports the record."""
        with self.org.lock:
            table = self.org.table(sobject)
            if table is None:
                raise RecordError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            key = _value_of(values, ext_field) if ext_field else None
            self._check_fault(record_id, key)
            row, values = self._target_row(table, values, record_id, creating, ext_field)
            if before_write is not None:
                before_write(table, row, values)
            outcome = self.org.write(table.name, values, user_row=self.user_row, row=row)
            self.write_log.add(table.name, outcome.record_id)
            return outcome

    def delete(self, sobject: str, record_id: str, *, hard: bool = False) -> None:
        """Delete one record (to the recycle bin; ``hard``: for good); raises RecordError."""
        self._check_fault(record_id, None)
        self.org.delete(sobject, record_id, user_row=self.user_row, hard=hard)

    def _check_fault(self, record_id: str | None, key: str | None) -> None:
        if self.faults.failing_record(record_id, self.method, self.path, key=key) is not None:
            raise RecordError(
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access to this record or 1 records",
            )

    def _target_row(
        self,
        table: Table,
        values: dict[str, Any],
        record_id: str | None,
        creating: bool,
        ext_field: str | None,
    ) -> tuple[int | None, dict[str, Any]]:
        """The row a record writes (None: a new one), and its values (an upsert's key field is
        not written again on an update)."""
        if ext_field is not None and ext_field.lower() == "id":
            # Upsert on Id: a record with an Id updates it, one without is created.
            return (self.org.find_row(table, record_id) if record_id else None), values
        if ext_field is not None:
            key = _value_of(values, ext_field)
            if key is None:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{ext_field}]",
                    [ext_field],
                )
            rows = self.org.find_by_external_id(table, ext_field, str(key))
            if len(rows) > 1:
                raise RecordError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"{ext_field}: more than one record found for external id"
                    f" field: {[table.id_of(r) for r in rows]}",
                    [ext_field],
                )
            if not rows:
                return None, values
            return rows[0], {k: v for k, v in values.items() if k.lower() != ext_field.lower()}
        if creating:
            if record_id:
                raise RecordError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
            return None, values
        if not record_id:
            raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        return self.org.find_row(table, record_id), values


def _value_of(values: dict[str, Any], name: str | None) -> Any:
    if name is None:
        return None
    return next((v for k, v in values.items() if k.lower() == name.lower()), None)
