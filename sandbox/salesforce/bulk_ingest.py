"""Bulk API 2.0 ingest jobs of the sandbox Salesforce (``/services/data/vXX.X/jobs/ingest``):
create, upload the CSV (``PUT .../batches``, once per job), close or abort, job info, list,
delete, and the successful, failed and unprocessed records.

Each record is written by ``record_writes.RecordWriter``, as sObject Collections writes its
records: the same permission and value checks, the same per-record errors, the same
``write_failure`` faults (matched against the job's upload request). An empty cell leaves a
field as it is; ``#N/A`` clears it. What fails the whole job, as on Salesforce: a header
naming a field the object does not have (``InvalidBatch : Field name not found : X``), a line
ending other than the job's, and the daily batch allocation running out (one batch per
10,000 records; the records past it stay unprocessed).

Docs: developer.salesforce.com/docs/platform/api-asynch/guide (create job, upload job data,
upload complete, get job info, successful/failed/unprocessed record results, abort, delete,
limits); a failed record's ``sf__Error`` is ``STATUS_CODE:message:fields --``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.salesforce.bulk_csv import CsvDialect, quote, read_csv
from crm_kpi_worker.sandbox.salesforce.bulk_jobs import (
    TERMINAL_STATES,
    BulkJob,
    BulkJobFailure,
    BulkJobStore,
    JobState,
    abort,
    check_deletable,
    check_version,
    csv_format,
    cut_stream,
    draw_job_faults,
    invalid_value,
    job_body,
    job_filter,
    list_body,
    list_start,
    requested_state,
)
from crm_kpi_worker.sandbox.salesforce.org import RecordError, SandboxOrg
from crm_kpi_worker.sandbox.salesforce.record_writes import RecordWriter, pop_record_id
from crm_kpi_worker.sandbox.salesforce.routes import OrgRoutes, SalesforceError
from crm_kpi_worker.sandbox.salesforce.store import Table

__all__ = ["BulkIngestRoutes", "IngestJob", "ingest_rules"]

MIN_VERSION = 41.0
RECORDS_PER_BATCH = 10_000
#: Job data is base64-encoded on its way in and may then be 150 MB at most (about 112 MB of
#: CSV); simple-salesforce keeps each upload to 100 MB.
MAX_ENCODED_UPLOAD_BYTES = 150 * 1024 * 1024
CLEAR_VALUE = "#N/A"
OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
_CREATE_PROPERTIES = {
    "object",
    "operation",
    "externalIdFieldName",
    "contentType",
    "lineEnding",
    "columnDelimiter",
    "assignmentRuleId",
}
_DELETABLE = TERMINAL_STATES | {JobState.UPLOAD_COMPLETE}


@dataclass(frozen=True)
class RecordOutcome:
    """What became of one uploaded record: its id (empty for an insert that failed), whether
    it was created, and the sf__Error of a failure (None: success)."""

    record_id: str
    created: bool
    error: str | None = None


@dataclass(eq=False)
class IngestJob(BulkJob):
    kind = "ingest"
    job_type = "V2Ingest"

    external_id_field: str | None = None
    data: str | None = None  # the uploaded CSV
    upload_path: str = ""  # PUT .../batches: what write_failure fault rules match
    outcomes: list[RecordOutcome | None] = field(default_factory=list)  # None: unprocessed
    records_failed: int = 0

    def with_external_id(self, org: SandboxOrg) -> dict[str, Any]:
        body = self.common(org)
        if self.external_id_field is not None:
            body["externalIdFieldName"] = self.external_id_field
        return body

    def created(self, org: SandboxOrg, version: str) -> dict[str, Any]:
        """The answer to create: the job Open, with where to upload its data."""
        return {
            **self.with_external_id(org),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
            "contentUrl": f"services/data/v{version}/jobs/ingest/{self.id}/batches",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
        }

    def changed(self, org: SandboxOrg) -> dict[str, Any]:
        """The answer to a state change (upload complete, abort)."""
        return {
            **self.with_external_id(org),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
        }

    def summary(self, org: SandboxOrg) -> dict[str, Any]:
        body = super().summary(org)
        if self.external_id_field is not None:
            body = {**self.with_external_id(org), **body}
        return body

    def info(self, org: SandboxOrg) -> dict[str, Any]:
        body = {
            **self.summary(org),
            "numberRecordsProcessed": self.records_processed,
            "numberRecordsFailed": self.records_failed,
            "retries": self.retries,
            "totalProcessingTime": self.processing_ms,
            "apiActiveProcessingTime": self.processing_ms,
            "apexProcessingTime": 0,
        }
        if self.error_message is not None:
            body["errorMessage"] = self.error_message
        return body

    def default_failure(self) -> tuple[str, int]:
        return "InternalServerError : Retried more than 10 times", 10


def ingest_rules() -> list[Rule]:
    """The routes; each endpoint name is the route's key in the sandbox's call counts."""
    base = "/services/data/v<version>/jobs/ingest"
    job = f"{base}/<job_id>"

    def rule(path: str, endpoint: str, method: str) -> Rule:
        return Rule(path, endpoint=endpoint, methods=[method], strict_slashes=False)

    return [
        rule(base, "bulk_ingest_create", "POST"),
        rule(base, "bulk_ingest_list", "GET"),
        rule(job, "bulk_ingest_job", "GET"),
        rule(job, "bulk_ingest_state", "PATCH"),
        rule(job, "bulk_ingest_delete", "DELETE"),
        rule(f"{job}/batches", "bulk_ingest_upload", "PUT"),
        rule(f"{job}/successfulResults", "bulk_ingest_successful_results", "GET"),
        rule(f"{job}/failedResults", "bulk_ingest_failed_results", "GET"),
        # The docs spell it unprocessedrecords; simple-salesforce asks for unprocessedRecords.
        rule(f"{job}/unprocessedrecords", "bulk_ingest_unprocessed_records", "GET"),
        rule(f"{job}/unprocessedRecords", "bulk_ingest_unprocessed_records", "GET"),
    ]


class BulkIngestRoutes(OrgRoutes):
    """Ingest jobs: the app sets ``bulk`` (the job store)."""

    bulk: BulkJobStore

    def on_bulk_ingest_create(self, request: Request, user_row: int, version: str) -> Response:
        check_version(version, MIN_VERSION)
        body = job_body(self._body(request), _CREATE_PROPERTIES)
        operation = body.get("operation")
        if operation not in OPERATIONS:
            raise invalid_value(operation, "operation")
        delimiter, line_ending = csv_format(body)
        table = self._ingest_table(body.get("object"), user_row)
        ext_field = None
        if operation == "upsert":
            ext_field = self._external_id_field(table, body.get("externalIdFieldName"), user_row)
        if operation == "hardDelete":
            access = self.org.access_for(user_row)
            if access is not None and not access.modify_all_data:
                raise SalesforceError(
                    400,
                    "INVALIDJOB",
                    "InvalidJob : hardDelete needs the Bulk API Hard Delete permission",
                )
        now = self.org.now_ms()
        job_id = self.bulk.new_id()
        job = IngestJob(
            id=job_id,
            operation=operation,
            object=table.name,
            created_by=user_row,
            created_ms=now,
            api_version=version,
            column_delimiter=delimiter,
            line_ending=line_ending,
            state=JobState.OPEN,
            external_id_field=ext_field,
            upload_path=f"/services/data/v{version}/jobs/ingest/{job_id}/batches",
        )
        draw_job_faults(self.faults, request, job)
        self.bulk.add(job)
        return self._json(job.created(self.org, version))

    def on_bulk_ingest_list(self, request: Request, user_row: int, version: str) -> Response:
        check_version(version, MIN_VERSION)
        start = list_start(request.args.get("queryLocator"))
        jobs, next_start = self.bulk.page(
            "ingest", user_row, start, job_filter(request.args, IngestJob.job_type)
        )
        base = f"/services/data/v{version}/jobs/ingest"
        return self._json(list_body(jobs, next_start, self.org, base))

    def on_bulk_ingest_job(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        job = self._ingest_job(version, job_id, user_row)
        self.bulk.advance(job, self._run_ingest_job, poll=True)
        return self._json(job.info(self.org))

    def on_bulk_ingest_state(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        job = self._ingest_job(version, job_id, user_row)
        state = requested_state(self._body(request))
        if state == JobState.ABORTED:
            abort(job, self.org)
        elif state == JobState.UPLOAD_COMPLETE:
            with job.lock:
                if job.state != JobState.OPEN:
                    raise SalesforceError(
                        400,
                        "INVALIDJOBSTATE",
                        f"Job {job.id} is {job.state}: only an Open job can be closed",
                    )
                job.state = JobState.UPLOAD_COMPLETE
                job.modstamp_ms = self.org.now_ms()
        else:
            raise invalid_value(state, "state")
        return self._json(job.changed(self.org))

    def on_bulk_ingest_delete(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        job = self._ingest_job(version, job_id, user_row)
        check_deletable(job, _DELETABLE)
        self.bulk.remove(job)
        return Response(status=204)

    def on_bulk_ingest_upload(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        job = self._ingest_job(version, job_id, user_row)
        raw = request.get_data()
        if math.ceil(len(raw) / 3) * 4 > MAX_ENCODED_UPLOAD_BYTES:
            raise SalesforceError(
                400,
                "LIMIT_EXCEEDED",
                f"Job data of {len(raw)} bytes exceeds the 150 MB an upload may hold once"
                " base64-encoded: split it over several jobs",
            )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SalesforceError(400, "API_ERROR", "Job data must be UTF-8 CSV") from None
        with job.lock:
            if job.state != JobState.OPEN:
                raise SalesforceError(
                    400,
                    "INVALIDJOBSTATE",
                    f"Job {job.id} is {job.state}: data can only be uploaded to an Open job",
                )
            if job.data is not None:
                raise SalesforceError(
                    400,
                    "BULK_API_ERROR",
                    f"Found multipe contents for job: <{job.id[:15]}>, please 'Close' /"
                    " 'Abort' / 'Delete' the current Job then create a new Job and make sure"
                    " you only do 'PUT' once on a given Job.",
                )
            job.data = text
            job.modstamp_ms = self.org.now_ms()
        return Response(status=201)

    def on_bulk_ingest_successful_results(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        return self._ingest_results(request, version, job_id, user_row, "successful")

    def on_bulk_ingest_failed_results(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        return self._ingest_results(request, version, job_id, user_row, "failed")

    def on_bulk_ingest_unprocessed_records(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        return self._ingest_results(request, version, job_id, user_row, "unprocessed")

    # ---- helpers -------------------------------------------------------------------------------

    def _ingest_job(self, version: str, job_id: str, user_row: int) -> IngestJob:
        check_version(version, MIN_VERSION)
        job = self.bulk.get("ingest", job_id, user_row)
        assert isinstance(job, IngestJob)
        return job

    def _ingest_table(self, name: Any, user_row: int) -> Table:
        table = self.org.table(name) if isinstance(name, str) and name else None
        access = self.org.access_for(user_row)
        if table is None or (access is not None and not access.can_read_object(table)):
            shown = name if isinstance(name, str) else ""
            raise SalesforceError(400, "INVALIDJOB", f"InvalidJob : Unable to find object: {shown}")
        return table

    def _external_id_field(self, table: Table, name: Any, user_row: int) -> str:
        """An upsert job's key: an external id field of the object, or Id."""
        if not isinstance(name, str) or not name:
            raise SalesforceError(
                400,
                "INVALIDJOB",
                f"InvalidJob : External ID was blank for {table.name}. An External ID must be"
                " specified for upsert.",
            )
        column = table.column(name)
        access = self.org.access_for(user_row)
        if (
            column is None
            or not (column.definition.external_id or column.definition.type == "id")
            or (access is not None and not access.can_read_field(table, column.definition))
        ):
            raise SalesforceError(
                400,
                "INVALIDJOB",
                f"InvalidJob : Field name provided, {name} does not match an External ID for"
                f" {table.name}",
            )
        return column.definition.name

    def _run_ingest_job(self, job: IngestJob) -> None:
        """Write the uploaded records, as many as the daily batch allocation allows."""
        dialect = CsvDialect.of(job.column_delimiter, job.line_ending)
        header, records = _parse_upload(job, dialect, self.org)
        job.outcomes = [None] * len(records)
        allowed = self.bulk.batches.remaining() * RECORDS_PER_BATCH
        processing = records[:allowed]
        self.bulk.batches.spend(math.ceil(len(processing) / RECORDS_PER_BATCH))
        writer = RecordWriter(
            self.org, self.faults, self.write_log, job.created_by, "PUT", job.upload_path
        )
        for position, cells in enumerate(processing):
            outcome = _write_record(writer, job, header, cells)
            job.outcomes[position] = outcome
            job.records_processed += 1
            job.records_failed += outcome.error is not None
        if len(processing) < len(records):
            raise BulkJobFailure(
                "ExceededQuota : The job exceeds the number of batches allowed in the past 24"
                " hours (DailyBulkApiBatches); the rest of its records were not processed"
            )
        job.state = JobState.JOB_COMPLETE

    def _ingest_results(
        self, request: Request, version: str, job_id: str, user_row: int, kind: str
    ) -> Response:
        job = self._ingest_job(version, job_id, user_row)
        self.bulk.advance(job, self._run_ingest_job, poll=False)
        body: Iterator[bytes] = iter([_results_csv(job, kind)])
        rule = self.faults.draw(request.method, request.path, ("cut_download",))
        if rule is not None:
            body = cut_stream(body, rule.cut_after)
        return Response(body, 200, content_type="text/csv; charset=UTF-8")


def _parse_upload(
    job: IngestJob, dialect: CsvDialect, org: SandboxOrg
) -> tuple[list[str], list[list[str]]]:
    """The uploaded header and records, or the job's failure."""
    if job.data is None:
        raise BulkJobFailure("InvalidBatch : No data was uploaded for this job")
    first_break = job.data.find("\n")
    if first_break >= 0 and (job.data[first_break - 1 : first_break] == "\r") != (
        job.line_ending == "CRLF"
    ):
        raise BulkJobFailure(
            "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting"
            f" is {job.line_ending}"
        )
    header, records = _uploaded(job, dialect)
    if not header or header == [""]:
        raise BulkJobFailure("InvalidBatch : The uploaded data has no header row")
    table = org.table(job.object)
    assert table is not None
    access = org.access_for(job.created_by)
    for name in header:
        column = table.column(name)
        if column is None or (
            access is not None and not access.can_read_field(table, column.definition)
        ):
            raise BulkJobFailure(f"InvalidBatch : Field name not found : {name}")
    if job.operation in {"delete", "hardDelete"} and [n.lower() for n in header] != ["id"]:
        raise BulkJobFailure(f"InvalidBatch : The '{job.operation}' batch must contain only ids")
    return header, records


def _write_record(
    writer: RecordWriter, job: IngestJob, header: list[str], cells: list[str]
) -> RecordOutcome:
    """One record of the upload, written as sObject Collections writes a record."""
    values: dict[str, Any] = {
        name: (None if value == CLEAR_VALUE else value)
        for name, value in zip(header, cells, strict=False)
        if value != ""
    }
    record_id = pop_record_id(values)
    try:
        if len(cells) > len(header):
            raise RecordError(
                "INVALID_FIELD",
                f"The record has {len(cells)} values and the header row {len(header)} columns",
            )
        if job.operation in {"delete", "hardDelete"}:
            if not record_id:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in a delete call", ["Id"])
            writer.delete(job.object, record_id, hard=job.operation == "hardDelete")
            return RecordOutcome(record_id, False)
        outcome = writer.save(
            job.object,
            values,
            record_id,
            creating=job.operation == "insert",
            ext_field=job.external_id_field,
        )
        return RecordOutcome(outcome.record_id, outcome.created)
    except RecordError as exc:
        fields = "".join(f"{name} " for name in exc.fields)
        return RecordOutcome(record_id or "", False, f"{exc.code}:{exc.message}:{fields}--")


def _results_csv(job: IngestJob, kind: str) -> bytes:
    """successful (sf__Id, sf__Created) or failed (sf__Id, sf__Error) records, then their
    uploaded values quoted; or the unprocessed records as they were uploaded."""
    dialect = CsvDialect.of(job.column_delimiter, job.line_ending)
    header, records = _uploaded(job, dialect)
    outcomes = job.outcomes + [None] * (len(records) - len(job.outcomes))
    columns = _plain_line(header, dialect)
    if kind == "unprocessed":
        unprocessed = [r for r, o in zip(records, outcomes, strict=True) if o is None]
        return columns + b"".join(_plain_line(r, dialect) for r in unprocessed)
    extra = ("sf__Id", "sf__Created") if kind == "successful" else ("sf__Id", "sf__Error")
    lines = [dialect.delimiter_bytes.join([quote(extra[0]), quote(extra[1]), columns])]
    for outcome, cells in zip(outcomes, records, strict=True):
        if outcome is None or (outcome.error is None) != (kind == "successful"):
            continue
        second = outcome.error if outcome.error is not None else str(outcome.created).lower()
        padded = cells + [""] * (len(header) - len(cells))
        lines.append(dialect.line([quote(outcome.record_id), quote(second), *map(quote, padded)]))
    return b"".join(lines)


def _uploaded(job: IngestJob, dialect: CsvDialect) -> tuple[list[str], list[list[str]]]:
    """The uploaded header and records (none before the upload)."""
    if job.data is None:
        return [], []
    rows = read_csv(job.data, dialect)
    header = next(rows, None) or []
    return header, [r for r in rows if r != []]


def _plain_line(names: list[str], dialect: CsvDialect) -> bytes:
    """Names or values as uploaded: quoted only where they must be."""
    out = io.StringIO()
    csv.writer(out, delimiter=dialect.delimiter, lineterminator=dialect.line_ending).writerow(names)
    return out.getvalue().encode("utf-8")
