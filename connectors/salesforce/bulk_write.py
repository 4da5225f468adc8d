"""The Bulk road of writes: one Bulk API 2.0 ingest job per batch the pipeline hands over.

``update`` writes by record id (operation ``update``), ``upsert`` by an external id field
(operation ``upsert``). The batch becomes one CSV upload (a null value is ``#N/A``, which
clears the field as Salesforce documents); the job is closed, waited for, and its
``successfulResults``, ``failedResults`` (``sf__Error``: ``CODE:message:fields``) and
``unprocessedrecords`` are read back into one :class:`WriteResult` per record, in the caller's
order, exactly as the Collections road answers: a record Salesforce refused is a failed result
that the pipeline retries next run. A job that fails as a whole fails every record of the batch
(retried next run); a :class:`StopRun` (daily limit, budget) is raised as on the REST road.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from crm_kpi_worker.connectors.base import WriteResult
from crm_kpi_worker.connectors.errors import ConnectorError, StopRun, classify
from crm_kpi_worker.connectors.salesforce import soql
from crm_kpi_worker.connectors.salesforce.bulk import BulkApi, BulkUnavailable
from crm_kpi_worker.connectors.salesforce.writes import json_value

__all__ = ["CALLS_PER_JOB", "IngestWriter", "csv_value"]

log = logging.getLogger(__name__)

#: What a Bulk CSV holds to clear a field.
CLEAR = "#N/A"
#: The calls of one ingest job at the least: create, upload, close, one state poll, and the
#: three result sets (successful, failed, unprocessed).
CALLS_PER_JOB = 7


def csv_value(value: Any, field: str) -> str:
    """A value as a Bulk CSV cell (numbers, ISO dates and instants, true/false; #N/A clears)."""
    kind = type(value)
    if kind is str:  # the common cases first: a chunk is tens of thousands of cells
        return value
    if value is None:
        return CLEAR
    if kind is float and math.isfinite(value):
        return repr(value)
    if kind is int:
        return str(value)
    plain = json_value(value, field)
    if plain is None:
        return CLEAR
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, float):
        return repr(plain)
    return str(plain)


class IngestWriter:
    """Writes a batch of records through one ingest job; see the module doc."""

    def __init__(self, api: BulkApi) -> None:
        self.api = api

    def update(self, sobject: str, records: Mapping[str, Mapping[str, Any]]) -> list[WriteResult]:
        return self._write(soql.api_name(sobject, "object"), "update", "Id", records)

    def upsert(
        self, sobject: str, external_id: str, records: Mapping[str, Mapping[str, Any]]
    ) -> list[WriteResult]:
        key = soql.api_name(external_id, "external id field")
        for fields in records.values():
            if any(name.lower() == key.lower() for name in fields):
                raise ValueError(f"{key} is the key: give it as the record's key only")
        return self._write(soql.api_name(sobject, "object"), "upsert", key, records)

    def _write(
        self, sobject: str, operation: str, key: str, records: Mapping[str, Mapping[str, Any]]
    ) -> list[WriteResult]:
        if not records:
            return []
        data = _csv(key, records)
        by_id = operation == "update"
        job = self.api.create_ingest(sobject, operation, key if not by_id else None)
        job_id = str(job["id"])
        try:
            self.api.upload(job_id, data)
            self.api.close(job_id)
            self.api.wait("ingest", job_id)
            results = self._results(job_id, key, records, by_id=by_id)
        except (StopRun, BulkUnavailable):
            self.api.abort("ingest", job_id)
            raise
        except ConnectorError as error:
            self.api.abort("ingest", job_id)
            log.warning("Bulk ingest job %s failed: %s", job_id, error.detail)
            return [
                WriteResult.failed(
                    k, k if by_id else None, error.code or "BULK_JOB_FAILED", error.detail
                )
                for k in records
            ]
        return results  # the job is not deleted: a call saved (Salesforce drops it in time)

    def _results(
        self,
        job_id: str,
        key: str,
        records: Mapping[str, Mapping[str, Any]],
        *,
        by_id: bool,
    ) -> list[WriteResult]:
        found: dict[str, WriteResult] = {}
        header, rows = self.api.ingest_results(job_id, "successfulResults")
        at = _column(header, key)
        for row in rows:
            record_key = row[at]
            found[record_key] = WriteResult(
                row[0] or None, record_key, True, created=row[1].lower() == "true"
            )
        header, rows = self.api.ingest_results(job_id, "failedResults")
        at = _column(header, key)
        for row in rows:
            record_key = row[at]
            code, message = _error(row[1])
            rule = classify(code=code, message=message, per_record=True)
            log.info("record %s not written (%s): %s %s", record_key, rule.action, code, message)
            found[record_key] = WriteResult.failed(
                record_key, row[0] or (record_key if by_id else None), code, message
            )
        header, rows = self.api.ingest_results(job_id, "unprocessedrecords")
        at = _column(header, key)
        for row in rows:
            record_key = row[at]
            found[record_key] = WriteResult.failed(
                record_key,
                record_key if by_id else None,
                "UNPROCESSED",
                "Salesforce did not process the record (the job stopped first)",
            )
        out = []
        for record_key in records:
            result = found.get(str(record_key))
            if result is None:
                result = WriteResult.failed(
                    str(record_key),
                    str(record_key) if by_id else None,
                    "UNEXPECTED_RESPONSE",
                    "the Bulk job's results do not mention the record",
                )
            out.append(result)
        return out


def _csv(key: str, records: Mapping[str, Mapping[str, Any]]) -> bytes:
    names = list(dict.fromkeys(name for fields in records.values() for name in fields))
    columns = [soql.api_name(name) for name in names]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key, *columns])
    writer.writerows(
        [str(record_key), *(csv_value(fields[n], n) if n in fields else "" for n in names)]
        for record_key, fields in records.items()
    )
    return buffer.getvalue().encode("utf-8")


def _column(header: Sequence[str], key: str) -> int:
    lowered = [name.lower() for name in header]
    if key.lower() in lowered:
        return lowered.index(key.lower())
    raise ConnectorError(f"the Bulk job's results have no {key} column", code="UNEXPECTED_RESPONSE")


def _error(text: str) -> tuple[str, str]:
    """``sf__Error`` (``CODE:message:fields``) as (code, message)."""
    code, _, rest = text.partition(":")
    message, _, _fields = rest.rpartition(":")
    return (code or "UNKNOWN_ERROR"), (message or rest or text)
