"""Bulk API 2.0 query jobs of the sandbox Salesforce (``/services/data/vXX.X/jobs/query``):
create, list, job info, results, abort, delete.

A job's query is checked when it is created (as the REST ``query`` resource checks it: the
same SOQL engine, the creator's object and field access) and refused where Bulk API 2.0
refuses it: parent-to-child subqueries, aggregate functions and ``COUNT()``, ``GROUP BY``,
``OFFSET``, ``TYPEOF``. It runs when the job completes (``bulk_jobs`` says when); its rows are
then fixed, and each results request renders one set of them as CSV (``bulk_csv.QueryCsv``).
Result sets are addressed by ``locator`` (the base64 of the set's first row, as Salesforce's
``MTAwMDA`` is) and sized by ``maxRecords``; ``Sforce-Locator`` is ``null`` on the last set.

Docs: developer.salesforce.com/docs/platform/api-asynch/guide/query-create-job.md,
query-get-job-results.md; WIRE-SHAPES.md section 7 in the project's references.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.salesforce import engine
from crm_kpi_worker.sandbox.salesforce import soql_ast as ast
from crm_kpi_worker.sandbox.salesforce.bulk_csv import CsvDialect, QueryCsv
from crm_kpi_worker.sandbox.salesforce.bulk_jobs import (
    KB,
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
from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg
from crm_kpi_worker.sandbox.salesforce.routes import OrgRoutes, SalesforceError
from crm_kpi_worker.sandbox.salesforce.soql import SoqlError

__all__ = ["BulkQueryRoutes", "QueryJob", "query_rules"]

MIN_VERSION = 47.0
#: The set size when a results request gives no maxRecords (Salesforce picks one itself).
DEFAULT_MAX_RECORDS = 50_000
_CREATE_PROPERTIES = {"operation", "query", "columnDelimiter", "lineEnding", "contentType"}
_UNSUPPORTED = "not supported in Bulk V2 Query with CSV content type."


@dataclass(eq=False)
class QueryJob(BulkJob):
    kind = "query"
    job_type = "V2Query"

    query: str = ""
    results: QueryCsv | None = None  # set when the job completes

    def brief(self, org: SandboxOrg) -> dict[str, Any]:
        """The answer to create and abort."""
        summary = self.summary(org)
        del summary["jobType"]
        return summary

    def info(self, org: SandboxOrg) -> dict[str, Any]:
        body = {
            **self.summary(org),
            "numberRecordsProcessed": self.records_processed,
            "retries": self.retries,
            "totalProcessingTime": self.processing_ms,
        }
        if self.error_message is not None:
            body["errorMessage"] = self.error_message
        return body

    def default_failure(self) -> tuple[str, int]:
        return "InternalServerError : Retried more than 15 times", 15


def query_rules() -> list[Rule]:
    """The routes; each endpoint name is the route's key in the sandbox's call counts."""
    base = "/services/data/v<version>/jobs/query"
    return [
        Rule(base, endpoint="bulk_query_create", methods=["POST"], strict_slashes=False),
        Rule(base, endpoint="bulk_query_list", methods=["GET"], strict_slashes=False),
        Rule(f"{base}/<job_id>", endpoint="bulk_query_job", methods=["GET"], strict_slashes=False),
        Rule(
            f"{base}/<job_id>", endpoint="bulk_query_abort", methods=["PATCH"], strict_slashes=False
        ),
        Rule(
            f"{base}/<job_id>",
            endpoint="bulk_query_delete",
            methods=["DELETE"],
            strict_slashes=False,
        ),
        Rule(
            f"{base}/<job_id>/results",
            endpoint="bulk_query_results",
            methods=["GET"],
            strict_slashes=False,
        ),
    ]


class BulkQueryRoutes(OrgRoutes):
    """Query jobs: the app sets ``bulk`` (the job store) and has ``_today`` (queries.py)."""

    bulk: BulkJobStore
    _today: Callable[[], dt.date]

    def on_bulk_query_create(self, request: Request, user_row: int, version: str) -> Response:
        check_version(version, MIN_VERSION)
        body = job_body(self._body(request), _CREATE_PROPERTIES)
        operation = body.get("operation")
        if operation not in {"query", "queryAll"}:
            raise invalid_value(operation, "operation")
        text = body.get("query")
        if not isinstance(text, str) or not text.strip():
            raise invalid_value(text, "query")
        delimiter, line_ending = csv_format(body)
        plan = self._bulk_plan(text, user_row, include_deleted=operation == "queryAll")
        self._check_query_allocations()
        now = self.org.now_ms()
        job = QueryJob(
            id=self.bulk.new_id(),
            operation=operation,
            object=plan.table.name,
            created_by=user_row,
            created_ms=now,
            api_version=version,
            column_delimiter=delimiter,
            line_ending=line_ending,
            state=JobState.UPLOAD_COMPLETE,
            query=text,
        )
        draw_job_faults(self.faults, request, job)
        self.bulk.query_jobs.spend(1)
        self.bulk.add(job)
        return self._json(job.brief(self.org))

    def on_bulk_query_list(self, request: Request, user_row: int, version: str) -> Response:
        check_version(version, MIN_VERSION)
        start = list_start(request.args.get("queryLocator"))
        jobs, next_start = self.bulk.page(
            "query", user_row, start, job_filter(request.args, QueryJob.job_type)
        )
        base = f"/services/data/v{version}/jobs/query"
        return self._json(list_body(jobs, next_start, self.org, base))

    def on_bulk_query_job(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        job = self._query_job(version, job_id, user_row)
        self.bulk.advance(job, self._run_query_job, poll=True)
        return self._json(job.info(self.org))

    def on_bulk_query_abort(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        job = self._query_job(version, job_id, user_row)
        state = requested_state(self._body(request))
        if state != JobState.ABORTED:
            raise invalid_value(state, "state")
        abort(job, self.org)
        return self._json(job.brief(self.org))

    def on_bulk_query_delete(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        job = self._query_job(version, job_id, user_row)
        check_deletable(job, TERMINAL_STATES)
        self.bulk.remove(job)
        return Response(status=204)

    def on_bulk_query_results(
        self, request: Request, user_row: int, version: str, job_id: str
    ) -> Response:
        job = self._query_job(version, job_id, user_row)
        if version != job.api_version:
            raise SalesforceError(
                409,
                "INVALIDURL",
                f"Get the results of job {job.id} with the API version it was created in"
                f" (v{job.api_version}), not v{version}",
            )
        self.bulk.advance(job, self._run_query_job, poll=False)
        if job.state != JobState.JOB_COMPLETE or job.results is None:
            raise SalesforceError(
                412,
                "JOB_NOT_COMPLETE",
                "can only download query results of successfully completed bulk job with"
                f" status: JOB_COMPLETE. Current status: {_status_name(job.state)}",
            )
        results = job.results
        start = _locator_start(request.args.get("locator"), results.total)
        stop = min(start + _max_records(request.args.get("maxRecords")), results.total)
        body = results.page(start, stop)
        rule = self.faults.draw(request.method, request.path, ("cut_download",))
        if rule is not None:
            body = cut_stream(body, rule.cut_after)
        self.stats.rows_served += stop - start
        headers = {
            "Sforce-NumberOfRecords": str(stop - start),
            "Sforce-Locator": _locator(stop) if stop < results.total else "null",
        }
        return Response(body, 200, headers=headers, content_type="text/csv; charset=UTF-8")

    # ---- helpers -------------------------------------------------------------------------------

    def _query_job(self, version: str, job_id: str, user_row: int) -> QueryJob:
        check_version(version, MIN_VERSION)
        job = self.bulk.get("query", job_id, user_row)
        assert isinstance(job, QueryJob)
        return job

    def _bulk_plan(self, text: str, user_row: int, *, include_deleted: bool) -> engine.Plan:
        """The query checked as the REST query resource checks it, then for what Bulk API 2.0
        does not support."""
        try:
            plan = engine.plan_query(
                self.org,
                text,
                include_deleted=include_deleted,
                today=self._today(),
                access=self.org.access_for(user_row),
            )
        except SoqlError as exc:
            for clause in ("GROUP BY", "TYPEOF", "HAVING"):
                if exc.reason is not None and exc.reason.startswith(clause):
                    raise SalesforceError(400, "API_ERROR", f"{clause} {_UNSUPPORTED}") from None
            raise
        _refuse_unsupported(plan.query)
        return plan

    def _check_query_allocations(self) -> None:
        jobs = self.bulk.query_jobs
        used = jobs.used()
        if used >= jobs.maximum:
            raise SalesforceError(
                400,
                "LIMIT_EXCEEDED",
                f"Max bulk v2 query jobs ({jobs.maximum}) per 24 hrs has been reached ({used + 1})",
            )
        storage = self.bulk.query_storage_kb
        if storage.used() >= storage.maximum:
            raise SalesforceError(
                400,
                "LIMIT_EXCEEDED",
                f"Max bulk v2 query result size stored ({storage.maximum}) kb per 24 hrs has"
                " been exceeded",
            )

    def _run_query_job(self, job: QueryJob) -> None:
        """Run the query now (its rows are fixed from here on) and count its result size."""
        try:
            result = engine.execute(
                self.org,
                job.query,
                include_deleted=job.operation == "queryAll",
                today=self._today(),
                access=self.org.access_for(job.created_by),
            )
        except (engine.QueryError, SoqlError) as exc:
            raise BulkJobFailure(
                f"InvalidBatch : Failed to process query: {exc.code}: {exc.message}"
            ) from None
        dialect = CsvDialect.of(job.column_delimiter, job.line_ending)
        job.results = QueryCsv(result, dialect, job.api_version, self.org.lock)
        job.records_processed = job.results.total
        self.bulk.query_storage_kb.spend(math.ceil(job.results.size() / KB))
        job.state = JobState.JOB_COMPLETE


def _refuse_unsupported(query: ast.Query) -> None:
    """What Bulk API 2.0 refuses in a query the REST API runs."""
    for item in query.select:
        if isinstance(item.expr, ast.SubQuery):
            raise SalesforceError(400, "API_ERROR", f"Aggregate Relationships {_UNSUPPORTED}")
        if isinstance(item.expr, ast.FuncCall) and item.expr.name in engine.AGGREGATE_FUNCTIONS:
            raise SalesforceError(400, "API_ERROR", f"Aggregate functions {_UNSUPPORTED}")
    if query.offset is not None:
        raise SalesforceError(400, "API_ERROR", f"OFFSET {_UNSUPPORTED}")


def _status_name(state: str) -> str:
    """JobComplete -> JOB_COMPLETE, as the JOB_NOT_COMPLETE message names states."""
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(state)).upper()


def _locator(start: int) -> str:
    """The opaque locator of the result set starting at row ``start`` (``MTAwMDA``: 10000)."""
    return base64.b64encode(str(start).encode()).decode().rstrip("=")


def _locator_start(locator: str | None, total: int) -> int:
    if not locator or locator == "null":
        return 0
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.isdigit() or not 0 < int(text) < total or _locator(int(text)) != locator:
        raise invalid_value(locator, "locator")
    return int(text)


def _max_records(value: str | None) -> int:
    if value is None:
        return DEFAULT_MAX_RECORDS
    if not value.isdigit() or int(value) < 1:
        raise invalid_value(value, "maxRecords")
    return int(value)
