"""Bulk API 2.0 jobs of the sandbox Salesforce: what query jobs (``bulk_query.py``) and ingest
jobs (``bulk_ingest.py``) share.

- :class:`BulkJob`: a job's properties and state. States move as Salesforce documents them:
  ingest ``Open`` -> ``UploadComplete`` (the client closes it); then ``InProgress`` ->
  ``JobComplete`` or ``Failed``; ``Aborted`` by the client.
- Progress happens on the job's own status polls (``GET .../jobs/{kind}/{id}``) and result
  requests, not in a background thread, so tests see the same sequence on every run: a job
  completes at its first poll, unless a ``slow_job`` fault rule holds it ``InProgress`` for a
  number of polls (or until the rule is released), or a ``job_failure`` rule fails it.
- :class:`BulkJobStore`: the org's jobs (ids ``750...``), who may see one (its creator, or a
  user with Modify All Data), the paged job lists, and the rolling 24-hour allocations
  ``/limits`` reports: ``DailyBulkV2QueryJobs``, ``DailyBulkV2QueryFileStorageMB`` (kept in
  KB, as Salesforce's own message counts it) and ``DailyBulkApiBatches``.

Docs: developer.salesforce.com/docs/platform/api-asynch/guide (Bulk API 2.0: job states,
create job, get job info, get all jobs, abort, delete; limits and allocations).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from werkzeug.wrappers import Request

from crm_kpi_worker.sandbox.faults import FaultPlan, FaultRule
from crm_kpi_worker.sandbox.salesforce.bulk_csv import COLUMN_DELIMITERS, LINE_ENDINGS
from crm_kpi_worker.sandbox.salesforce.ids import case_safe_suffix, make_id
from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg
from crm_kpi_worker.sandbox.salesforce.routes import SalesforceError
from crm_kpi_worker.sandbox.salesforce.store import ms_to_json

__all__ = [
    "BulkJob",
    "BulkJobFailure",
    "BulkJobStore",
    "BulkLimits",
    "JobState",
    "invalid_value",
]

JOB_KEY_PREFIX = "750"
DAY_MS = 24 * 3600 * 1000
JOB_LIFESPAN_MS = 7 * DAY_MS  # finished jobs older than this are deleted
LIST_PAGE_SIZE = 1000  # jobs per page of GET /jobs/query and /jobs/ingest
LIST_LOCATOR_PREFIX = "01gSb00000JobList"  # a page's queryLocator: this, "-", its first job
KB = 1024


class JobState:
    OPEN = "Open"
    UPLOAD_COMPLETE = "UploadComplete"
    IN_PROGRESS = "InProgress"
    JOB_COMPLETE = "JobComplete"
    FAILED = "Failed"
    ABORTED = "Aborted"


TERMINAL_STATES = frozenset({JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED})
RUNNABLE_STATES = frozenset({JobState.UPLOAD_COMPLETE, JobState.IN_PROGRESS})


@dataclass(frozen=True)
class BulkLimits:
    """The org's Bulk API allocations per rolling 24 hours (Salesforce's defaults)."""

    query_jobs: int = 10_000  # DailyBulkV2QueryJobs
    query_storage_kb: int = 1_000_000_000  # DailyBulkV2QueryFileStorageMB: 976,562 MB
    batches: int = 15_000  # DailyBulkApiBatches; an ingest job uses one per 10,000 records


class RollingAllocation:
    """Amounts spent within the last 24 hours of the org's clock."""

    def __init__(self, maximum: int, now_ms: Callable[[], int]) -> None:
        self.maximum = maximum
        self._now_ms = now_ms
        self._spent: deque[tuple[int, int]] = deque()  # (when, amount), oldest first
        self._lock = threading.Lock()

    def used(self) -> int:
        with self._lock:
            horizon = self._now_ms() - DAY_MS
            while self._spent and self._spent[0][0] <= horizon:
                self._spent.popleft()
            return sum(amount for _, amount in self._spent)

    def remaining(self) -> int:
        return max(self.maximum - self.used(), 0)

    def spend(self, amount: int) -> None:
        if amount:
            with self._lock:
                self._spent.append((self._now_ms(), amount))


@dataclass
class JobHold:
    """A ``slow_job`` fault on one job: it answers InProgress for ``polls`` status polls
    (None: until the rule is released)."""

    rule: FaultRule
    polls_left: int | None

    def holding(self) -> bool:
        return not self.rule.released and (self.polls_left is None or self.polls_left > 0)

    def polled(self) -> None:
        if self.polls_left is not None:
            self.polls_left -= 1


@dataclass(eq=False)
class BulkJob:
    """One job; the job kinds (``QueryJob``, ``IngestJob``) add their own properties and
    answers, their routes the work that completes them."""

    kind = "abstract"  # "query" or "ingest": the URL segment
    job_type = "abstract"  # V2Query or V2Ingest

    id: str
    operation: str
    object: str
    created_by: int  # the creator's user row
    created_ms: int
    api_version: str  # "59.0"
    column_delimiter: str
    line_ending: str
    state: str
    modstamp_ms: int = 0
    error_message: str | None = None
    records_processed: int = 0
    retries: int = 0
    processing_ms: int = 0
    hold: JobHold | None = None
    failure: FaultRule | None = None  # a job_failure fault drawn when the job was created
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def default_failure(self) -> tuple[str, int]:
        """The errorMessage and retries of a job the job_failure fault fails."""
        raise NotImplementedError

    def info(self, org: SandboxOrg) -> dict[str, Any]:
        """The job info body of GET .../jobs/{kind}/{id}."""
        raise NotImplementedError

    def common(self, org: SandboxOrg) -> dict[str, Any]:
        """The properties every job answer starts with, in Salesforce's order."""
        return {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": org.user_id(self.created_by),
            "createdDate": ms_to_json_one(self.created_ms),
            "systemModstamp": ms_to_json_one(self.modstamp_ms or self.created_ms),
            "state": self.state,
        }

    def summary(self, org: SandboxOrg) -> dict[str, Any]:
        """A record of the job lists (GET .../jobs/{kind})."""
        return {
            **self.common(org),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
            "jobType": self.job_type,
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
        }


class BulkJobFailure(Exception):
    """A job that cannot be done: it ends Failed with this errorMessage."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BulkJobStore:
    """The org's Bulk API 2.0 jobs and allocations; thread-safe."""

    def __init__(self, org: SandboxOrg, limits: BulkLimits) -> None:
        self.org = org
        self.query_jobs = RollingAllocation(limits.query_jobs, org.now_ms)
        self.query_storage_kb = RollingAllocation(limits.query_storage_kb, org.now_ms)
        self.batches = RollingAllocation(limits.batches, org.now_ms)
        self._jobs: dict[str, BulkJob] = {}
        self._sequence = 0
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            self._sequence += 1
            return make_id(JOB_KEY_PREFIX, self._sequence)

    def add(self, job: BulkJob) -> BulkJob:
        """Keep a new job; jobs done for more than seven days go, as on Salesforce."""
        horizon = self.org.now_ms() - JOB_LIFESPAN_MS
        with self._lock:
            expired = [
                j.id
                for j in self._jobs.values()
                if j.state in TERMINAL_STATES and (j.modstamp_ms or j.created_ms) < horizon
            ]
            for job_id in expired:
                del self._jobs[job_id]
            self._jobs[job.id] = job
        return job

    def remove(self, job: BulkJob) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)

    def get(self, kind: str, job_id: str, user_row: int) -> BulkJob:
        """A job of ``kind`` the user may see; 404 NOT_FOUND otherwise."""
        with self._lock:
            job = self._jobs.get(job_id) or self._jobs.get(_id15_to_18(job_id))
        if job is None or job.kind != kind or not self.visible(job, user_row):
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def visible(self, job: BulkJob, user_row: int) -> bool:
        """Its creator sees a job, and so do users with Modify All Data (the sandbox's stand-in
        for Manage Data Integrations)."""
        access = self.org.access_for(user_row)
        return job.created_by == user_row or access is None or access.modify_all_data

    def page(
        self, kind: str, user_row: int, start: int, keep: Callable[[BulkJob], bool]
    ) -> tuple[list[BulkJob], int | None]:
        """Up to LIST_PAGE_SIZE jobs of ``kind`` from ``start`` (oldest first) and where the
        next page starts (None: the last page)."""
        with self._lock:
            jobs = list(self._jobs.values())
        jobs = [j for j in jobs if j.kind == kind and self.visible(j, user_row) and keep(j)]
        end = start + LIST_PAGE_SIZE
        return jobs[start:end], (end if end < len(jobs) else None)

    def advance(self, job: BulkJob, work: Callable[[Any], None], *, poll: bool) -> None:
        """Move a job on as its status is asked (``poll``: a status poll, which counts against
        a slow_job hold; a result request does not): a runnable job is done now by ``work``
        (which completes it, or raises BulkJobFailure) unless a fault holds or fails it."""
        with job.lock:
            if job.state not in RUNNABLE_STATES:
                return
            if job.hold is not None and job.hold.holding():
                if job.state != JobState.IN_PROGRESS:
                    job.state = JobState.IN_PROGRESS
                    job.modstamp_ms = self.org.now_ms()
                if poll:
                    job.hold.polled()
                return
            started = time.perf_counter()
            job.state = JobState.IN_PROGRESS
            try:
                if job.failure is not None:
                    default_message, retries = job.default_failure()
                    job.retries = retries
                    raise BulkJobFailure(job.failure.message or default_message)
                work(job)
            except BulkJobFailure as failure:
                job.state = JobState.FAILED
                job.error_message = failure.message
            job.processing_ms = max(1, round((time.perf_counter() - started) * 1000))
            job.modstamp_ms = self.org.now_ms()

    def limits_json(self) -> dict[str, Any]:
        """This store's entries of the /limits resource."""
        storage_mb = self.query_storage_kb.maximum // KB
        return {
            "DailyBulkApiBatches": {
                "Max": self.batches.maximum,
                "Remaining": self.batches.remaining(),
            },
            "DailyBulkV2QueryFileStorageMB": {
                "Max": storage_mb,
                "Remaining": self.query_storage_kb.remaining() // KB,
            },
            "DailyBulkV2QueryJobs": {
                "Max": self.query_jobs.maximum,
                "Remaining": self.query_jobs.remaining(),
            },
        }


# ---- request checks both job kinds make --------------------------------------------------------


def invalid_value(value: Any, prop: str) -> SalesforceError:
    """Salesforce's answer to a property or parameter outside its allowed values."""
    shown = "null" if value is None else value
    return SalesforceError(
        400, "API_ERROR", f"Invalid value: '{shown}' supplied for property: '{prop}'"
    )


def job_body(body: Any, allowed: set[str]) -> dict[str, Any]:
    """A create-job request body: an object of known properties."""
    if not isinstance(body, dict):
        raise SalesforceError(
            400, "JSON_PARSER_ERROR", "The request body must be a JSON object of job properties"
        )
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise SalesforceError(
            400,
            "JSON_PARSER_ERROR",
            f'Unrecognized field "{unknown[0]}"; a job takes {", ".join(sorted(allowed))}',
        )
    return body


def csv_format(body: dict[str, Any]) -> tuple[str, str]:
    """``columnDelimiter`` (default COMMA) and ``lineEnding`` (default LF), checked; and
    ``contentType``, which can only be CSV."""
    delimiter = body.get("columnDelimiter") or "COMMA"
    line_ending = body.get("lineEnding") or "LF"
    content_type = body.get("contentType") or "CSV"
    if delimiter not in COLUMN_DELIMITERS:
        raise invalid_value(delimiter, "columnDelimiter")
    if line_ending not in LINE_ENDINGS:
        raise invalid_value(line_ending, "lineEnding")
    if content_type != "CSV":
        raise invalid_value(content_type, "contentType")
    return delimiter, line_ending


def check_version(version: str, minimum: float) -> None:
    """Query jobs exist from API 47.0, ingest jobs from 41.0: before, the resource does not."""
    if float(version) < minimum:
        raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")


def requested_state(body: Any) -> str:
    """The ``state`` of a PATCH on a job."""
    if not isinstance(body, dict) or not isinstance(body.get("state"), str):
        raise invalid_value(body.get("state") if isinstance(body, dict) else None, "state")
    return str(body["state"])


def abort(job: BulkJob, org: SandboxOrg) -> None:
    """Abort a job that is not finished; a finished one is refused as Salesforce does."""
    with job.lock:
        if job.state in TERMINAL_STATES:
            done = {JobState.JOB_COMPLETE: "Completed"}.get(job.state, job.state)
            raise SalesforceError(
                400, "INVALIDJOBSTATE", f"Aborting already {done} Job not allowed"
            )
        job.state = JobState.ABORTED
        job.modstamp_ms = org.now_ms()


def check_deletable(job: BulkJob, states: frozenset[str]) -> None:
    if job.state not in states:
        raise SalesforceError(
            400,
            "INVALIDJOBSTATE",
            f"Deleting a job in state {job.state} is not allowed: abort it first, or wait"
            " until it is JobComplete or Failed",
        )


def job_filter(args: Any, job_type: str) -> Callable[[BulkJob], bool]:
    """The list filters: ``jobType``, ``concurrencyMode`` and ``isPkChunkingEnabled`` (PK
    chunking is a Bulk API 1.0 option: no Bulk API 2.0 job has it)."""
    wanted_type = args.get("jobType")
    mode = args.get("concurrencyMode")
    pk_chunking = (args.get("isPkChunkingEnabled") or "false").lower() == "true"

    def keep(job: BulkJob) -> bool:
        if pk_chunking or (wanted_type and wanted_type != job_type):
            return False
        return not mode or mode.lower() == "parallel"

    return keep


def list_start(locator: str | None) -> int:
    """Where a job list page starts, from its ``queryLocator`` (a previous nextRecordsUrl's)."""
    if not locator:
        return 0
    prefix, _, start = locator.rpartition("-")
    if prefix != LIST_LOCATOR_PREFIX or not start.isdigit():
        raise invalid_value(locator, "queryLocator")
    return int(start)


def list_body(
    jobs: list[BulkJob], next_start: int | None, org: SandboxOrg, base: str
) -> dict[str, Any]:
    return {
        "done": next_start is None,
        "records": [job.summary(org) for job in jobs],
        "nextRecordsUrl": None
        if next_start is None
        else f"{base}?queryLocator={LIST_LOCATOR_PREFIX}-{next_start}",
    }


def draw_job_faults(faults: FaultPlan, request: Request, job: BulkJob) -> None:
    """job_failure and slow_job rules fire on the request that creates a job."""
    job.failure = faults.draw(request.method, request.path, ("job_failure",))
    slow = faults.draw(request.method, request.path, ("slow_job",))
    if slow is not None:
        job.hold = JobHold(slow, slow.polls)


def cut_stream(body: Iterator[bytes], after: int) -> Iterator[bytes]:
    """A ``cut_download`` fault: the first ``after`` bytes of ``body``, then the connection
    drops (the client's read of the body ends short)."""
    sent = 0
    for chunk in body:
        if sent + len(chunk) >= after:
            yield chunk[: after - sent]
            break
        sent += len(chunk)
        yield chunk
    raise ConnectionAbortedError("cut_download fault: the download stops here")


def ms_to_json_one(ms: int) -> str:
    value = ms_to_json(np.array([ms], dtype=np.int64))[0]
    assert value is not None
    return value


def _id15_to_18(job_id: str) -> str:
    """Salesforce accepts a 15-character id where it takes an 18-character one."""
    if len(job_id) != 15 or not job_id.isalnum():
        return job_id
    return job_id + case_safe_suffix(job_id)
