"""Raw Bulk API 2.0 calls to a sandbox Salesforce, for the shapes the simple-salesforce client
does not expose (headers, error bodies, states, abort, delete)."""

from __future__ import annotations

import csv
import io
from typing import Any

import requests

from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

TERMINAL = {"JobComplete", "Failed", "Aborted"}


class BulkHttp:
    """``jobs/query`` and ``jobs/ingest`` of one sandbox, as one logged-in client."""

    def __init__(self, sandbox: SalesforceSandbox, sf: Any, version: str = "59.0") -> None:
        self.session = sandbox.session()
        self.base = f"{sandbox.url}/services/data/v{version}/jobs"
        self.headers = {"Authorization": f"Bearer {sf.session_id}"}

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.url(path), headers=self.headers, params=params)

    def post(self, path: str, body: Any) -> requests.Response:
        return self.session.post(self.url(path), headers=self.headers, json=body)

    def patch(self, path: str, body: Any) -> requests.Response:
        return self.session.patch(self.url(path), headers=self.headers, json=body)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.url(path), headers=self.headers)

    def put_csv(self, path: str, text: str) -> requests.Response:
        headers = {**self.headers, "Content-Type": "text/csv"}
        return self.session.put(self.url(path), headers=headers, data=text.encode("utf-8"))

    def query_job(self, soql: str, **properties: Any) -> dict[str, Any]:
        created = self.post("query", {"operation": "query", "query": soql, **properties})
        assert created.status_code == 200, created.text
        return created.json()  # type: ignore[no-any-return]

    def finish(self, kind: str, job_id: str, polls: int = 10) -> dict[str, Any]:
        """Poll a job's status until it is done (the sandbox completes a job at a poll)."""
        for _ in range(polls):
            info = self.get(f"{kind}/{job_id}").json()
            if info["state"] in TERMINAL:
                return info  # type: ignore[no-any-return]
        raise AssertionError(f"job {job_id} still {info['state']} after {polls} polls")


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def records_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))
