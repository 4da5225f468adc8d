"""Salesforce's Bulk API 2.0 on the wire: query jobs and ingest jobs.

Every call goes through the library's own authenticated call (``client._call_salesforce``):
the same session, re-login on an expired session, CA trust, timeout, retry policy and call
count as every REST call of the connector. Error answers are turned into the connector's typed
errors by the caller's ``fetch``.

Query jobs (``jobs/query``): create (``query`` or ``queryAll``), wait until ``JobComplete``,
then read the CSV results page by page with ``maxRecords`` and the ``Sforce-Locator`` header
(``null`` on the last page). A page is read whole (one page at a time: memory stays bounded
by ``maxRecords``); a page cut short on the way (the connection dropped midway, or fewer rows
than ``Sforce-NumberOfRecords`` says) is asked again with the same locator, which reads the
same rows.

Ingest jobs (``jobs/ingest``): create, upload the CSV (one upload per job), close
(``UploadComplete``), wait until ``JobComplete``, then read ``successfulResults``,
``failedResults`` and ``unprocessedrecords``.

Waiting polls the job with growing pauses (``POLL_PAUSES``); each poll is an API call. A job
that ends ``Failed`` or ``Aborted`` raises :class:`BulkJobFailed` with Salesforce's
``errorMessage``. An org or user that cannot use Bulk API 2.0 raises :class:`BulkUnavailable`
when the job is created: the connector then takes the REST road.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from crm_kpi_worker.connectors.errors import ConnectorError, RequestRejected
from crm_kpi_worker.connectors.retry import RetryPolicy
from crm_kpi_worker.sync.bulk import gc_paused

__all__ = [
    "BULK_UNAVAILABLE_CODES",
    "RESULT_PAGES_PER_PAGE",
    "BulkApi",
    "BulkJobFailed",
    "BulkUnavailable",
    "ResultPage",
]

log = logging.getLogger(__name__)

Fetch = Callable[[Callable[[], Any]], Any]

#: Seconds between two polls of a job: short at first (small jobs finish in seconds), then
#: the last value over and over.
POLL_PAUSES = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
#: Rows per results page (``maxRecords``), in REST pages of the source: 40,000 rows at the
#: default page size of 2,000, a page of deals of some tens of MB.
RESULT_PAGES_PER_PAGE = 20
#: Error codes that mean "this org or user cannot use Bulk API 2.0" (not "this query is
#: wrong"): the connector falls back to REST for the run.
BULK_UNAVAILABLE_CODES = frozenset(
    {
        "API_DISABLED_FOR_ORG",
        "FEATURENOTENABLED",
        "FEATURE_NOT_ENABLED",
        "INSUFFICIENTACCESS",
        "INSUFFICIENT_ACCESS",
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "NOT_FOUND",
        "API_CURRENTLY_DISABLED",
        "EXCEEDED_QUOTA",
        "LIMIT_EXCEEDED",
    }
)
#: How many times a results page cut short on the way is asked again.
CUT_PAGE_ATTEMPTS = 4

JSON = {"Content-Type": "application/json", "Accept": "application/json"}
CSV_IN = {"Content-Type": "text/csv", "Accept": "application/json"}
CSV_OUT = {"Content-Type": "application/json", "Accept": "text/csv"}


class BulkUnavailable(ConnectorError):
    """The org or the integration user cannot use Bulk API 2.0 (the REST road is taken)."""


class BulkJobFailed(ConnectorError):
    """A Bulk job ended ``Failed`` or ``Aborted`` (its ``errorMessage`` says why)."""


class CutPage(Exception):
    """A results page arrived incomplete."""


@dataclass(frozen=True)
class ResultPage:
    """One page of a query job's results: the header and rows, and the next locator (None:
    the last page)."""

    header: list[str]
    rows: list[list[str]]
    locator: str | None


class BulkApi:
    """Bulk API 2.0 calls of one client; see the module doc."""

    def __init__(
        self,
        client: Any,
        fetch: Fetch,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_seconds: float = 3600.0,
        retry_policy: RetryPolicy | None = None,
        max_records: int = RESULT_PAGES_PER_PAGE * 2000,
    ) -> None:
        self.client = client
        self.fetch = fetch
        self.sleep = sleep
        self.max_wait_seconds = max_wait_seconds
        self.retry_policy = retry_policy or RetryPolicy()
        self.max_records = max_records

    # ---- plumbing ------------------------------------------------------------------------------

    def _url(self, kind: str, *parts: str) -> str:
        base: str = self.client.base_url  # https://host/services/data/vXX.X/
        return base + "/".join(("jobs", kind, *parts))

    def _call(self, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
        response = self.fetch(
            lambda: self.client._call_salesforce(
                method, url, name="bulk2", headers=headers, **kwargs
            )
        )
        return response

    def _json(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        data = json.dumps(body) if body is not None else None
        response = self._call(method, url, JSON, data=data)
        if response.status_code == 204 or not response.content:
            return {}
        answer = response.json()
        if not isinstance(answer, dict):
            raise RequestRejected(
                "Salesforce answered a Bulk API call without a JSON object",
                code="UNEXPECTED_RESPONSE",
            )
        return answer

    def _create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            job = self._json("POST", self._url(kind), body)
        except RequestRejected as error:
            if (error.code or "").upper() in BULK_UNAVAILABLE_CODES or error.status in (403, 404):
                raise BulkUnavailable(
                    f"Bulk API 2.0 is not available to this user: {error.detail}",
                    status=error.status,
                    code=error.code,
                ) from None
            raise
        if not isinstance(job.get("id"), str):
            raise RequestRejected(
                "Salesforce created a Bulk job without an id", code="UNEXPECTED_RESPONSE"
            )
        return job

    # ---- jobs ----------------------------------------------------------------------------------

    def create_query(self, soql: str, *, include_deleted: bool) -> dict[str, Any]:
        """A new query job for ``soql`` (``queryAll`` when ``include_deleted``): its job info."""
        return self._create(
            "query",
            {
                "operation": "queryAll" if include_deleted else "query",
                "query": soql,
                "contentType": "CSV",
                "columnDelimiter": "COMMA",
                "lineEnding": "LF",
            },
        )

    def create_ingest(
        self, sobject: str, operation: str, external_id: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "object": sobject,
            "operation": operation,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        }
        if external_id is not None:
            body["externalIdFieldName"] = external_id
        return self._create("ingest", body)

    def job(self, kind: str, job_id: str) -> dict[str, Any]:
        """A job's info (``kind``: query or ingest)."""
        return self._json("GET", self._url(kind, job_id))

    def wait(self, kind: str, job_id: str) -> dict[str, Any]:
        """Poll the job until it is ``JobComplete`` (its info); raise on Failed/Aborted."""
        started = time.monotonic()
        for attempt in range(1_000_000):
            info = self.job(kind, job_id)
            state = info.get("state")
            if state == "JobComplete":
                return info
            if state in ("Failed", "Aborted"):
                raise BulkJobFailed(
                    f"Bulk {kind} job {job_id} ended {state}:"
                    f" {info.get('errorMessage') or 'no error message'}",
                    code=f"BULK_JOB_{str(state).upper()}",
                )
            if time.monotonic() - started > self.max_wait_seconds:
                self.abort(kind, job_id)
                raise BulkJobFailed(
                    f"Bulk {kind} job {job_id} was still {state} after"
                    f" {self.max_wait_seconds:.0f} s: aborted",
                    code="BULK_JOB_TIMEOUT",
                )
            self.sleep(POLL_PAUSES[min(attempt, len(POLL_PAUSES) - 1)])
        raise AssertionError("unreachable")

    def abort(self, kind: str, job_id: str) -> None:
        """Abort a job that has not finished (best effort: a finished job stays as it is)."""
        try:
            self._json("PATCH", self._url(kind, job_id), {"state": "Aborted"})
        except ConnectorError as error:
            log.info("Bulk %s job %s not aborted: %s", kind, job_id, error.detail)

    def delete(self, kind: str, job_id: str) -> None:
        """Delete a finished job and its results (best effort)."""
        try:
            self._call("DELETE", self._url(kind, job_id), JSON)
        except ConnectorError as error:
            log.info("Bulk %s job %s not deleted: %s", kind, job_id, error.detail)

    # ---- query results -------------------------------------------------------------------------

    def result_pages(self, job_id: str, locator: str | None = None) -> Iterator[ResultPage]:
        """The job's result pages from ``locator`` (None: the first)."""
        while True:
            page = self.result_page(job_id, locator)
            yield page
            if page.locator is None:
                return
            locator = page.locator

    def result_page(self, job_id: str, locator: str | None) -> ResultPage:
        """One results page, asked again (same locator) while it arrives cut short."""
        for attempt in range(CUT_PAGE_ATTEMPTS):
            try:
                return self._result_page(job_id, locator)
            except CutPage as cut:
                if attempt + 1 == CUT_PAGE_ATTEMPTS:
                    raise RequestRejected(
                        f"the results of Bulk query job {job_id} arrived cut short"
                        f" {CUT_PAGE_ATTEMPTS} times in a row ({cut})",
                        code="BULK_RESULTS_CUT",
                    ) from None
                log.warning("Bulk results page cut short (%s): asking again", cut)
                self.sleep(self.retry_policy.backoff(attempt + 1))
        raise AssertionError("unreachable")

    def _result_page(self, job_id: str, locator: str | None) -> ResultPage:
        params: dict[str, Any] = {"maxRecords": self.max_records}
        if locator:
            params["locator"] = locator
        try:
            response = self._call(
                "GET", self._url("query", job_id, "results"), CSV_OUT, params=params
            )
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as e:
            raise CutPage(type(e).__name__) from None
        expected = response.headers.get("Sforce-NumberOfRecords")
        with gc_paused():  # a page of tens of thousands of rows, no cycle among them
            header, rows = parse_csv(response.content)
        if expected is not None and expected.isdigit() and int(expected) != len(rows):
            raise CutPage(f"{len(rows)} rows of {expected}")
        next_locator = response.headers.get("Sforce-Locator")
        if not next_locator or next_locator == "null":
            next_locator = None
        return ResultPage(header, rows, next_locator)

    # ---- ingest --------------------------------------------------------------------------------

    def upload(self, job_id: str, data: bytes) -> None:
        self._call("PUT", self._url("ingest", job_id, "batches"), CSV_IN, data=data)

    def close(self, job_id: str) -> dict[str, Any]:
        return self._json("PATCH", self._url("ingest", job_id), {"state": "UploadComplete"})

    def ingest_results(self, job_id: str, which: str) -> tuple[list[str], list[list[str]]]:
        """``successfulResults``, ``failedResults`` or ``unprocessedrecords`` as CSV rows."""
        response = self._call("GET", self._url("ingest", job_id, which), CSV_OUT)
        return parse_csv(response.content)


def parse_csv(content: bytes) -> tuple[list[str], list[list[str]]]:
    """A Bulk CSV body (UTF-8, comma, LF; values quoted where needed): header and rows."""
    text = content.decode("utf-8")
    if not text.strip():
        return [], []
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    rows = list(reader)
    if [] in rows:  # a blank line holds no record
        rows = [row for row in rows if row]
    return header, rows
