"""Bulk API 2.0 query jobs of the sandbox Salesforce, against the references (WIRE-SHAPES.md
section 7, the Postman "Bulk 2.0 query" requests, the Bulk API 2.0 guide): the unmodified
simple-salesforce ``bulk2`` client end to end, raw HTTP for headers, states and errors."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import pytest
import requests
from bulk_api import BulkHttp, records_of, rows_of
from conftest import grant_fields
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceOperationError

from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce import bulk_jobs
from crm_kpi_worker.sandbox.salesforce.bulk_jobs import BulkLimits
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

FIELDS = "Id, Name, Owner.Name, Account.Name, Amount, CloseDate, IsWon, Probability, CreatedDate"
SOQL = f"SELECT {FIELDS} FROM Opportunity"
ALICE = "alice.martin@sandbox.local"


def _flat(record: dict, prefix: str = "") -> dict[str, object]:
    """A REST record with its parents' fields as dotted names, as Bulk CSV columns are."""
    out: dict[str, object] = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _as_cell(value: object) -> str:
    """A REST JSON value as its Bulk CSV cell reads (after CSV unquoting)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.endswith("+0000"):
        return value.removesuffix("+0000") + "Z"  # Bulk CSV datetimes are UTC with a Z
    return str(value)


def _rest_rows(sf: Salesforce, soql: str, *, include_deleted: bool = False) -> list[dict]:
    records = sf.query_all(soql, include_deleted=include_deleted)["records"]
    return [{k: _as_cell(v) for k, v in _flat(r).items()} for r in records]


# ---- simple-salesforce's bulk2 client -------------------------------------------------------


def test_query_streams_pages_of_max_records_matching_the_rest_query(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    before = dict(sf_sandbox.stats.by_route)
    pages = list(sf.bulk2.Opportunity.query(SOQL, max_records=2000, wait=0.01))
    expected = _rest_rows(sf, SOQL)
    assert len(pages) == math.ceil(len(expected) / 2000)
    bulk = [row for page in pages for row in records_of(page)]
    assert bulk == expected
    assert all(page.startswith('"Id","Name","Owner.Name","Account.Name",') for page in pages)
    calls = {k: v - before.get(k, 0) for k, v in sf_sandbox.stats.by_route.items()}
    assert calls["bulk_query_create"] == 1
    assert calls["bulk_query_results"] == len(pages)


def test_query_all_includes_deleted_rows(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    soql = "SELECT Id, IsDeleted FROM Opportunity"
    live = [r for p in sf.bulk2.Opportunity.query(soql, wait=0.01) for r in records_of(p)]
    every = [r for p in sf.bulk2.Opportunity.query_all(soql, wait=0.01) for r in records_of(p)]
    deleted = int(sf_sandbox.org.data.deals.is_deleted.sum())
    assert deleted > 0
    assert len(every) == len(live) + deleted
    assert sum(r["IsDeleted"] == "true" for r in every) == deleted
    assert every == _rest_rows(sf, soql, include_deleted=True)


def test_download_writes_one_file_per_result_set(sf: Salesforce, tmp_path: Path) -> None:
    soql = "SELECT Id, StageName FROM Opportunity"
    results = sf.bulk2.Opportunity.download(soql, path=str(tmp_path), max_records=2500, wait=0.01)
    total = len(_rest_rows(sf, soql))
    assert [r["number_of_records"] for r in results] == [
        min(2500, total - start) for start in range(0, total, 2500)
    ]
    assert [r["locator"] for r in results][-1] == ""
    rows = [row for r in results for row in records_of(Path(r["file"]).read_text("utf-8"))]
    assert len(rows) == total and len({r["Id"] for r in rows}) == total


# ---- the wire: job info, results, locators --------------------------------------------------


def test_create_and_job_info_shapes(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    http = BulkHttp(sf_sandbox, sf)
    created = http.query_job("SELECT Id FROM Opportunity WHERE IsClosed = false")
    assert list(created) == [
        "id",
        "operation",
        "object",
        "createdById",
        "createdDate",
        "systemModstamp",
        "state",
        "concurrencyMode",
        "contentType",
        "apiVersion",
        "lineEnding",
        "columnDelimiter",
    ]
    assert created["id"].startswith("750") and len(created["id"]) == 18
    assert (created["operation"], created["object"], created["state"]) == (
        "query",
        "Opportunity",
        "UploadComplete",
    )
    assert (created["apiVersion"], created["contentType"], created["concurrencyMode"]) == (
        59.0,
        "CSV",
        "Parallel",
    )
    assert (created["lineEnding"], created["columnDelimiter"]) == ("LF", "COMMA")
    me = sf.query(f"SELECT Id FROM User WHERE Username = '{sf_sandbox.credentials.username}'")
    assert created["createdById"] == me["records"][0]["Id"]
    assert created["createdDate"].endswith("+0000")
    info = http.finish("query", created["id"])
    open_count = sf.query("SELECT COUNT() FROM Opportunity WHERE IsClosed = false")["totalSize"]
    assert info["state"] == "JobComplete"
    assert info["jobType"] == "V2Query"
    assert info["numberRecordsProcessed"] == open_count
    assert info["retries"] == 0 and info["totalProcessingTime"] >= 1
    assert "errorMessage" not in info


def test_results_sets_locators_and_headers(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    http = BulkHttp(sf_sandbox, sf)
    soql = "SELECT Id FROM Opportunity ORDER BY Id LIMIT 7"
    job = http.query_job(soql)["id"]
    http.finish("query", job)
    first = http.get(f"query/{job}/results", maxRecords=3)
    assert first.status_code == 200
    assert first.headers["Content-Type"].startswith("text/csv")
    assert first.headers["Sforce-NumberOfRecords"] == "3"
    locator = first.headers["Sforce-Locator"]
    assert locator == base64.b64encode(b"3").decode().rstrip("=")  # opaque, like MTAwMDA
    assert first.headers["Sforce-Limit-Info"].startswith("api-usage=")
    second = http.get(f"query/{job}/results", maxRecords=3, locator=locator)
    again = http.get(f"query/{job}/results", maxRecords=3, locator=locator)
    assert second.text == again.text  # a locator can be used again while the job exists
    last = http.get(f"query/{job}/results", maxRecords=3, locator=second.headers["Sforce-Locator"])
    assert last.headers["Sforce-NumberOfRecords"] == "1"
    assert last.headers["Sforce-Locator"] == "null"
    ids = [r[0] for text in (first.text, second.text, last.text) for r in rows_of(text)[1:]]
    assert ids == [r["Id"] for r in sf.query(soql)["records"]]
    assert rows_of(first.text)[0] == ["Id"]
    whole = http.get(f"query/{job}/results")
    assert whole.headers["Sforce-Locator"] == "null" and len(rows_of(whole.text)) == 8


def test_csv_quotes_values_and_leaves_nulls_empty(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    http = BulkHttp(sf_sandbox, sf)
    soql = (
        "SELECT Id, Name, CloseDate, Amount, IsWon, Account.Name, SystemModstamp FROM Opportunity"
        " WHERE CloseDate = null"
    )
    job = http.query_job(soql)["id"]
    http.finish("query", job)
    body = http.get(f"query/{job}/results").text
    lines = body.split("\n")
    assert lines[0] == '"Id","Name","CloseDate","Amount","IsWon","Account.Name","SystemModstamp"'
    record = sf.query(soql)["records"][0]
    assert lines[1] == ",".join(
        [
            f'"{record["Id"]}"',
            '"' + record["Name"].replace('"', '""') + '"',
            "",  # null: an empty cell, not ""
            f'"{record["Amount"]}"',
            '"true"' if record["IsWon"] else '"false"',
            f'"{record["Account"]["Name"]}"',
            '"' + record["SystemModstamp"].replace("+0000", "Z") + '"',
        ]
    )
    assert body.endswith("\n") and lines[-1] == ""


def test_delimiter_and_line_ending_of_the_job(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    http = BulkHttp(sf_sandbox, sf)
    job = http.query_job(
        "SELECT Id, StageName FROM Opportunity LIMIT 2", columnDelimiter="PIPE", lineEnding="CRLF"
    )
    assert (job["columnDelimiter"], job["lineEnding"]) == ("PIPE", "CRLF")
    http.finish("query", job["id"])
    body = http.get(f"query/{job['id']}/results").text
    assert body.startswith('"Id"|"StageName"\r\n') and body.count("\r\n") == 3


def test_parent_fields_are_dotted_columns_and_a_missing_parent_is_empty(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    http = BulkHttp(sf_sandbox, sf)
    soql = "SELECT Id, Owner.Name, Owner.Manager.Email FROM Opportunity ORDER BY Id"
    job = http.query_job(soql)["id"]
    http.finish("query", job)
    body = http.get(f"query/{job}/results").text
    assert rows_of(body)[0] == ["Id", "Owner.Name", "Owner.Manager.Email"]
    rows = records_of(body)
    expected = []
    for record in sf.query_all(soql)["records"]:
        manager = record["Owner"]["Manager"] or {}
        expected.append(
            {
                "Id": record["Id"],
                "Owner.Name": record["Owner"]["Name"],
                "Owner.Manager.Email": manager.get("Email") or "",
            }
        )
    assert rows == expected
    assert any(r["Owner.Manager.Email"] for r in rows)
    assert any(not r["Owner.Manager.Email"] for r in rows)  # no manager: an empty cell
    assert ',"Owner.Manager.Email"\n' in body and '",\n' in body


# ---- what Bulk API 2.0 refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("soql", "message"),
    [
        (
            "SELECT Id, (SELECT StageName FROM OpportunityHistories) FROM Opportunity",
            "Aggregate Relationships not supported in Bulk V2 Query with CSV content type.",
        ),
        (
            "SELECT COUNT() FROM Opportunity",
            "Aggregate functions not supported in Bulk V2 Query with CSV content type.",
        ),
        (
            "SELECT SUM(Amount) FROM Opportunity",
            "Aggregate functions not supported in Bulk V2 Query with CSV content type.",
        ),
        (
            "SELECT StageName FROM Opportunity GROUP BY StageName",
            "GROUP BY not supported in Bulk V2 Query with CSV content type.",
        ),
        (
            "SELECT Id FROM Opportunity OFFSET 10",
            "OFFSET not supported in Bulk V2 Query with CSV content type.",
        ),
        (
            "SELECT TYPEOF What WHEN Opportunity THEN Name END FROM Event",
            "TYPEOF not supported in Bulk V2 Query with CSV content type.",
        ),
    ],
)
def test_what_bulk_queries_do_not_support_is_refused(
    sf_sandbox: SalesforceSandbox, sf: Salesforce, soql: str, message: str
) -> None:
    refused = BulkHttp(sf_sandbox, sf).post("query", {"operation": "query", "query": soql})
    assert refused.status_code == 400
    assert refused.json() == [{"message": message, "errorCode": "API_ERROR"}]


def test_query_errors_are_the_rest_query_errors(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    http = BulkHttp(sf_sandbox, sf)
    for soql in ("SELECT Id FORM Opportunity", "SELECT Amout FROM Opportunity"):
        rest = sf_sandbox.session().get(
            f"{sf_sandbox.url}/services/data/v59.0/query/",
            params={"q": soql},
            headers=http.headers,
        )
        bulk = http.post("query", {"operation": "query", "query": soql})
        assert bulk.status_code == rest.status_code == 400
        assert bulk.json() == rest.json()


def test_bad_job_properties_are_refused(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    http = BulkHttp(sf_sandbox, sf)
    bad = {
        "operation": {"operation": "insert", "query": SOQL},
        "columnDelimiter": {"operation": "query", "query": SOQL, "columnDelimiter": "COLON"},
        "lineEnding": {"operation": "query", "query": SOQL, "lineEnding": "CR"},
        "contentType": {"operation": "query", "query": SOQL, "contentType": "JSON"},
        "query": {"operation": "query"},
    }
    for prop, body in bad.items():
        refused = http.post("query", body)
        assert refused.status_code == 400, prop
        value = "null" if prop == "query" else body[prop]
        assert refused.json() == [
            {
                "message": f"Invalid value: '{value}' supplied for property: '{prop}'",
                "errorCode": "API_ERROR",
            }
        ]


def test_field_security_is_the_creators_as_in_rest(fresh_sandbox: SalesforceSandbox) -> None:
    admin = fresh_sandbox.client()
    admin.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={
            "FullName": "Opportunity.Margin__c",
            "Metadata": {"label": "Margin", "type": "Number", "precision": 6, "scale": 2},
        },
    )
    grant_fields(admin, ["Opportunity.Margin__c"])  # the admin only
    soql = "SELECT Id, Margin__c FROM Opportunity"
    alice = fresh_sandbox.client_as(ALICE)
    refused = BulkHttp(fresh_sandbox, alice).post("query", {"operation": "query", "query": soql})
    assert refused.status_code == 400
    assert refused.json()[0]["errorCode"] == "INVALID_FIELD"
    pages = list(admin.bulk2.Opportunity.query(soql, wait=0.01))
    assert rows_of(pages[0])[0] == ["Id", "Margin__c"]
    # Another user's job does not exist for Alice; the admin (Modify All Data) sees hers.
    theirs = BulkHttp(fresh_sandbox, admin).query_job(soql)["id"]
    alice_http = BulkHttp(fresh_sandbox, alice)
    assert alice_http.get(f"query/{theirs}").status_code == 404
    mine = alice_http.query_job("SELECT Id FROM Opportunity")["id"]
    assert [j["id"] for j in alice_http.get("query").json()["records"]] == [mine]
    assert BulkHttp(fresh_sandbox, admin).get(f"query/{mine}").status_code == 200


# ---- states: unfinished, abort, delete, unknown ----------------------------------------------


def test_results_of_an_unfinished_job_and_a_slow_job(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    http = BulkHttp(fresh_sandbox, sf)
    fresh_sandbox.faults.add(FaultRule(kind="slow_job", path="/jobs/query$", polls=2))
    job = http.query_job("SELECT Id FROM Opportunity")["id"]
    early = http.get(f"query/{job}/results")
    assert early.status_code == 412
    assert early.json() == [
        {
            "message": "can only download query results of successfully completed bulk job"
            " with status: JOB_COMPLETE. Current status: IN_PROGRESS",
            "errorCode": "JOB_NOT_COMPLETE",
        }
    ]
    states = [http.get(f"query/{job}").json()["state"] for _ in range(3)]
    assert states == ["InProgress", "InProgress", "JobComplete"]
    assert http.get(f"query/{job}/results").status_code == 200


def test_a_slow_job_takes_its_rows_when_it_completes(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    http = BulkHttp(fresh_sandbox, sf)
    rule = fresh_sandbox.faults.add(FaultRule(kind="slow_job", polls=None))
    soql = "SELECT Id FROM Opportunity WHERE Name LIKE 'Bulk snapshot%'"
    job = http.query_job(soql)["id"]
    assert http.get(f"query/{job}").json()["state"] == "InProgress"
    first = sf.Opportunity.create(
        {"Name": "Bulk snapshot 1", "StageName": "Prospecting", "CloseDate": "2026-12-01"}
    )["id"]
    assert http.get(f"query/{job}").json()["state"] == "InProgress"  # held until released
    rule.release()
    assert http.get(f"query/{job}").json()["state"] == "JobComplete"
    sf.Opportunity.create(
        {"Name": "Bulk snapshot 2", "StageName": "Prospecting", "CloseDate": "2026-12-01"}
    )
    rows = records_of(http.get(f"query/{job}/results").text)
    assert [r["Id"] for r in rows] == [first]  # the rows were fixed at completion


def test_abort_and_delete(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    http = BulkHttp(fresh_sandbox, sf)
    fresh_sandbox.faults.add(FaultRule(kind="slow_job", polls=None))
    held = http.query_job("SELECT Id FROM Opportunity")["id"]
    refused = http.delete(f"query/{held}")
    assert refused.status_code == 400 and refused.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    aborted = http.patch(f"query/{held}", {"state": "Aborted"})
    assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"
    assert http.get(f"query/{held}").json()["state"] == "Aborted"
    again = http.patch(f"query/{held}", {"state": "Aborted"})
    assert again.status_code == 400
    assert again.json() == [
        {"message": "Aborting already Aborted Job not allowed", "errorCode": "INVALIDJOBSTATE"}
    ]
    fresh_sandbox.faults.clear()
    done = http.query_job("SELECT Id FROM User")["id"]
    http.finish("query", done)
    too_late = http.patch(f"query/{done}", {"state": "Aborted"})
    assert too_late.json() == [
        {"message": "Aborting already Completed Job not allowed", "errorCode": "INVALIDJOBSTATE"}
    ]
    bad_state = http.patch(f"query/{done}", {"state": "UploadComplete"})
    assert bad_state.status_code == 400 and bad_state.json()[0]["errorCode"] == "API_ERROR"
    deleted = http.delete(f"query/{done}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert http.get(f"query/{done}").status_code == 404
    assert http.get(f"query/{done}/results").status_code == 404


def test_unknown_job_bad_locator_and_bad_max_records(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    http = BulkHttp(sf_sandbox, sf)
    missing = http.get("query/750Sb0000009999IAA")
    assert missing.status_code == 404
    assert missing.json() == [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
    ]
    job = http.query_job("SELECT Id FROM Opportunity LIMIT 5")["id"]
    http.finish("query", job)
    for locator in ("bogus!", base64.b64encode(b"99").decode(), "MA"):
        bad = http.get(f"query/{job}/results", locator=locator)
        assert bad.status_code == 400, locator
        assert bad.json()[0]["errorCode"] == "API_ERROR"
    for value in ("0", "-5", "many"):
        bad = http.get(f"query/{job}/results", maxRecords=value)
        assert bad.status_code == 400
        assert bad.json() == [
            {
                "message": f"Invalid value: '{value}' supplied for property: 'maxRecords'",
                "errorCode": "API_ERROR",
            }
        ]


def test_versions_before_47_and_results_in_another_version(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    old = BulkHttp(sf_sandbox, sf, version="46.0")
    assert old.post("query", {"operation": "query", "query": SOQL}).status_code == 404
    http = BulkHttp(sf_sandbox, sf)
    job = http.query_job("SELECT Id FROM User LIMIT 1")["id"]
    http.finish("query", job)
    other = BulkHttp(sf_sandbox, sf, version="58.0").get(f"query/{job}/results")
    assert other.status_code == 409


def test_a_15_character_job_id_and_the_seven_day_lifespan() -> None:
    now = [1_800_000_000.0]
    with SalesforceSandbox.start(seed=7, clock=lambda: now[0]) as sandbox:
        http = BulkHttp(sandbox, sandbox.client())
        done = http.query_job("SELECT Id FROM User")["id"]
        assert http.finish("query", done[:15])["id"] == done  # as Salesforce accepts ids
        now[0] += 7 * 24 * 3600 + 1
        http.query_job("SELECT Id FROM User")  # finished jobs older than 7 days go
        assert http.get(f"query/{done}").status_code == 404


# ---- job lists -------------------------------------------------------------------------------


def test_job_list_pages_and_filters(
    fresh_sandbox: SalesforceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk_jobs, "LIST_PAGE_SIZE", 2)
    sf = fresh_sandbox.client()
    http = BulkHttp(fresh_sandbox, sf)
    jobs = [http.query_job(f"SELECT Id FROM User LIMIT {n}")["id"] for n in (1, 2, 3)]
    first = http.get("query").json()
    assert first["done"] is False
    assert [r["id"] for r in first["records"]] == jobs[:2]
    assert first["records"][0]["jobType"] == "V2Query"
    next_url = first["nextRecordsUrl"]
    assert next_url.startswith("/services/data/v59.0/jobs/query?queryLocator=")
    second = http.session.get(f"{fresh_sandbox.url}{next_url}", headers=http.headers).json()
    assert (second["done"], second["nextRecordsUrl"]) == (True, None)
    assert [r["id"] for r in second["records"]] == jobs[2:]
    assert http.get("query", jobType="V2Ingest").json()["records"] == []
    assert http.get("query", isPkChunkingEnabled="true").json()["records"] == []
    assert len(http.get("query", jobType="V2Query", concurrencyMode="parallel").json()["records"])
    assert http.get("query", queryLocator="nonsense").status_code == 400


# ---- limits, API accounting ------------------------------------------------------------------


def test_query_job_allocation_and_api_calls() -> None:
    with SalesforceSandbox.start(seed=7, bulk_limits=BulkLimits(query_jobs=2)) as sandbox:
        sf = sandbox.client()
        http = BulkHttp(sandbox, sf)
        assert sf.limits()["DailyBulkV2QueryJobs"] == {"Max": 2, "Remaining": 2}
        for _ in range(2):
            http.query_job("SELECT Id FROM User")
        calls = sandbox.stats.api_calls
        refused = http.post("query", {"operation": "query", "query": "SELECT Id FROM User"})
        assert refused.status_code == 400
        assert refused.json() == [
            {
                "message": "Max bulk v2 query jobs (2) per 24 hrs has been reached (3)",
                "errorCode": "LIMIT_EXCEEDED",
            }
        ]
        assert sandbox.stats.api_calls == calls + 1  # a Bulk API call is an API call
        assert refused.headers["Sforce-Limit-Info"] == f"api-usage={calls + 1}/100000"
        assert sf.limits()["DailyBulkV2QueryJobs"] == {"Max": 2, "Remaining": 0}


def test_result_storage_allocation() -> None:
    limits = BulkLimits(query_storage_kb=1024)  # 1 MB
    soql = (
        "SELECT Id, Name, AccountId, OwnerId, Owner.Name, Owner.Email, Account.Name, StageName,"
        " CloseDate, CreatedDate, SystemModstamp FROM Opportunity"
    )
    with SalesforceSandbox.start(seed=7, bulk_limits=limits) as sandbox:
        sf = sandbox.client()
        http = BulkHttp(sandbox, sf)
        assert sf.limits()["DailyBulkV2QueryFileStorageMB"] == {"Max": 1, "Remaining": 1}
        job = http.query_job(soql)["id"]
        http.finish("query", job)
        size = len(http.get(f"query/{job}/results").content)
        assert sandbox.app.bulk.query_storage_kb.used() == math.ceil(size / 1024)
        assert sf.limits()["DailyBulkV2QueryFileStorageMB"] == {"Max": 1, "Remaining": 0}
        while sandbox.app.bulk.query_storage_kb.used() < 1024:
            http.finish("query", http.query_job(soql)["id"])
        refused = http.post("query", {"operation": "query", "query": "SELECT Id FROM User"})
        assert refused.status_code == 400
        assert refused.json() == [
            {
                "message": "Max bulk v2 query result size stored (1024) kb per 24 hrs has been"
                " exceeded",
                "errorCode": "LIMIT_EXCEEDED",
            }
        ]


def test_allocations_roll_over_after_24_hours() -> None:
    now = [1_800_000_000.0]
    with SalesforceSandbox.start(
        seed=7, clock=lambda: now[0], bulk_limits=BulkLimits(query_jobs=1)
    ) as sandbox:
        http = BulkHttp(sandbox, sandbox.client())
        http.query_job("SELECT Id FROM User")
        assert (
            http.post("query", {"operation": "query", "query": "SELECT Id FROM User"}).status_code
            == 400
        )
        now[0] += 24 * 3600 + 1
        assert (
            http.post("query", {"operation": "query", "query": "SELECT Id FROM User"}).status_code
            == 200
        )


# ---- faults ----------------------------------------------------------------------------------


def test_job_failure_fault(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    fresh_sandbox.faults.add(
        FaultRule(kind="job_failure", path="/jobs/query", message="InvalidBatch : test failure")
    )
    with pytest.raises(SalesforceOperationError, match="InvalidBatch : test failure"):
        list(sf.bulk2.Opportunity.query("SELECT Id FROM Opportunity", wait=0.01))
    http = BulkHttp(fresh_sandbox, sf)
    failed = http.get("query").json()["records"][0]
    info = http.get(f"query/{failed['id']}").json()
    assert (info["state"], info["errorMessage"]) == ("Failed", "InvalidBatch : test failure")
    results = http.get(f"query/{failed['id']}/results")
    assert results.status_code == 412 and "Current status: FAILED" in results.json()[0]["message"]
    # The rule fired once: the next job completes.
    assert list(sf.bulk2.Opportunity.query("SELECT Id FROM User", wait=0.01))


def test_cut_download_fault_breaks_the_read(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    fresh_sandbox.faults.add(FaultRule(kind="cut_download", path="/results$", cut_after=100))
    soql = "SELECT Id, Name FROM Opportunity"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(sf.bulk2.Opportunity.query(soql, max_records=200, wait=0.01))
    http = BulkHttp(fresh_sandbox, sf)
    job = http.get("query").json()["records"][0]["id"]
    whole = http.get(f"query/{job}/results", maxRecords=200)  # the rule fired once
    assert whole.status_code == 200 and len(rows_of(whole.text)) == 201


def test_rate_limit_and_server_error_faults_on_bulk_paths(
    fresh_sandbox: SalesforceSandbox,
) -> None:
    sf = fresh_sandbox.client()
    http = BulkHttp(fresh_sandbox, sf)
    fresh_sandbox.faults.add(
        FaultRule(kind="rate_limit", path="/jobs/query", method="POST", retry_after=3)
    )
    limited = http.post("query", {"operation": "query", "query": "SELECT Id FROM User"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    job = http.query_job("SELECT Id FROM User")["id"]
    fresh_sandbox.faults.add(FaultRule(kind="server_error", path="/results", status=503))
    failed = http.get(f"query/{job}/results")
    assert failed.status_code == 503 and failed.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert http.get(f"query/{job}/results").status_code == 200
    assert [r["id"] for r in http.get("query").json()["records"]] == [job]
