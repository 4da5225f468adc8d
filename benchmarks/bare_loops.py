"""The yardsticks of ``bench_full_sync.py``: bare loops over the same sandbox, the least work
a client must do to move the same data, with plain ``requests`` (no connector, no store).

- :func:`rest_pull`: simple-salesforce's ``query_all_iter`` over a query, records only counted
  (with their child records: what counts toward a query batch).
- :func:`bulk_pull`: Bulk API 2.0 query jobs (create them all, poll each until complete, read
  the CSV results along ``Sforce-Locator`` with ``maxRecords``), the CSV read as rows by
  ``csv.reader`` and counted, never made into records.
- :func:`collections_write`: ``PATCH composite/sobjects`` (by id) or
  ``composite/sobjects/{object}/{external id}`` (upsert), 200 records a call.
- :func:`ingest_write`: one Bulk ingest job per chunk: create, upload the CSV, close, poll
  until complete, read the three result sets.

Each loop counts the calls it makes itself (``Wire.calls``).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

#: Records per sObject Collections call.
COLLECTION_BATCH = 200


@dataclass
class Wire:
    """A plain ``requests`` session on the org's REST base (``.../services/data/vXX.X/``)."""

    base_url: str
    session_id: str
    ca_path: str
    calls: int = 0
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.headers["Authorization"] = f"Bearer {self.session_id}"

    def send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        self.calls += 1
        answer = self.session.request(
            method, self.base_url + path, timeout=600, verify=self.ca_path, **kwargs
        )
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        return answer


# ---- pulls ----------------------------------------------------------------------------------


def record_rows(record: dict[str, Any]) -> int:
    """What a record counts toward a query batch: itself and its child records (all of them,
    by each child result's totalSize)."""
    children = (v for v in record.values() if isinstance(v, dict) and "totalSize" in v)
    return 1 + sum(int(child["totalSize"]) for child in children)


def rest_pull(client: Any, soql: str, *, include_deleted: bool) -> tuple[int, int]:
    """(records, records + their child records) of one query, paged by ``query_all_iter``."""
    records = rows = 0
    for record in client.query_all_iter(soql, include_deleted=include_deleted):
        records += 1
        rows += record_rows(record)
    return records, rows


@dataclass(frozen=True)
class JobRows:
    """What one bare query job read."""

    soql: str
    rows: int
    result_pages: int


def bulk_pull(
    wire: Wire, queries: Sequence[str], *, include_deleted: bool, max_records: int
) -> list[JobRows]:
    """One query job per SOQL, created together; the last one's results read last (the
    connector reads the children first, then the main query's)."""
    operation = "queryAll" if include_deleted else "query"
    jobs = []
    for soql in queries:
        body = {"operation": operation, "query": soql, "contentType": "CSV", "lineEnding": "LF"}
        jobs.append(wire.send("POST", "jobs/query", json=body).json()["id"])
    found = []
    for soql, job_id in zip(queries, jobs, strict=True):
        wait_complete(wire, f"jobs/query/{job_id}")
        rows = pages = 0
        locator: str | None = None
        while True:
            params: dict[str, Any] = {"maxRecords": max_records}
            if locator:
                params["locator"] = locator
            answer = wire.send(
                "GET", f"jobs/query/{job_id}/results", params=params, headers={"Accept": "text/csv"}
            )
            pages += 1
            # Read as rows (tokenized, not made into records): the least a client does.
            text = answer.content.decode("utf-8")
            counted = sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1
            if counted != int(answer.headers["Sforce-NumberOfRecords"]):
                raise RuntimeError(f"job {job_id}: {counted} rows, the header says otherwise")
            rows += counted
            locator = answer.headers.get("Sforce-Locator")
            if not locator or locator == "null":
                break
        found.append(JobRows(soql, rows, pages))
    return found


def wait_complete(wire: Wire, path: str) -> None:
    while True:
        state = wire.send("GET", path).json()["state"]
        if state == "JobComplete":
            return
        if state in ("Failed", "Aborted"):
            raise RuntimeError(f"{path} ended {state}")
        time.sleep(0.5)


# ---- writes ---------------------------------------------------------------------------------

Records = Sequence[tuple[str, dict[str, Any]]]


def collections_write(
    wire: Wire, sobject: str, external_id: str | None, records: Records
) -> tuple[int, int]:
    """(records written, calls) for ``records`` (key, values), 200 a call."""
    path = (
        "composite/sobjects"
        if external_id is None
        else f"composite/sobjects/{sobject}/{external_id}"
    )
    written = calls = 0
    for start in range(0, len(records), COLLECTION_BATCH):
        body = []
        for key, values in records[start : start + COLLECTION_BATCH]:
            record = {"attributes": {"type": sobject}, **values}
            record["id" if external_id is None else external_id] = key
            body.append(record)
        answer = wire.send(
            "PATCH",
            path,
            data=json.dumps({"allOrNone": False, "records": body}),
            headers={"Content-Type": "application/json"},
        )
        calls += 1
        written += sum(1 for result in answer.json() if result.get("success"))
    return written, calls


def csv_cell(value: Any) -> str:
    if value is None:
        return "#N/A"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def ingest_write(
    wire: Wire, sobject: str, external_id: str | None, records: Records
) -> tuple[int, int]:
    """(records written, calls) for ``records`` in one ingest job."""
    calls_before = wire.calls
    names = list(dict.fromkeys(name for _, values in records for name in values))
    key = external_id or "Id"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key, *names])
    for record_key, values in records:
        writer.writerow([record_key, *(csv_cell(values[n]) if n in values else "" for n in names)])
    body: dict[str, Any] = {
        "object": sobject,
        "operation": "update" if external_id is None else "upsert",
        "contentType": "CSV",
        "lineEnding": "LF",
    }
    if external_id is not None:
        body["externalIdFieldName"] = external_id
    job_id = wire.send("POST", "jobs/ingest", json=body).json()["id"]
    wire.send(
        "PUT",
        f"jobs/ingest/{job_id}/batches",
        data=buffer.getvalue().encode(),
        headers={"Content-Type": "text/csv"},
    )
    wire.send("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
    wait_complete(wire, f"jobs/ingest/{job_id}")
    written = 0
    for which in ("successfulResults", "failedResults", "unprocessedrecords"):
        answer = wire.send("GET", f"jobs/ingest/{job_id}/{which}", headers={"Accept": "text/csv"})
        if which == "successfulResults":
            written = max(answer.content.count(b"\n") - 1, 0)
    return written, wire.calls - calls_before


def chunked(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
