"""Bulk API 2.0 ingest jobs of the sandbox Salesforce, against the references (the Bulk API
2.0 guide: create job, upload job data, upload complete, job info, successful / failed /
unprocessed records, abort, delete, limits): the unmodified simple-salesforce ``bulk2``
client end to end, raw HTTP for states, error bodies and the shapes it does not expose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from bulk_api import BulkHttp, records_of, rows_of
from conftest import grant_fields
from simple_salesforce import Salesforce
from simple_salesforce.bulk2 import ColumnDelimiter, LineEnding
from simple_salesforce.exceptions import SalesforceOperationError

from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce import bulk_ingest
from crm_kpi_worker.sandbox.salesforce.bulk_jobs import BulkLimits
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

ALICE = "alice.martin@sandbox.local"


def _open_deals(sf: Salesforce, n: int) -> list[dict[str, Any]]:
    return sf.query(
        "SELECT Id, Name, Amount, Probability, StageName, CloseDate, SystemModstamp"
        f" FROM Opportunity WHERE IsClosed = false ORDER BY Id LIMIT {n}"
    )["records"]


def _ingest_job(http: BulkHttp, body: dict[str, Any], data: str) -> str:
    """Create an ingest job, upload ``data``, close it; its id."""
    created = http.post("ingest", body)
    assert created.status_code == 200, created.text
    job = created.json()["id"]
    assert http.put_csv(f"ingest/{job}/batches", data).status_code == 201
    assert http.patch(f"ingest/{job}", {"state": "UploadComplete"}).status_code == 200
    return str(job)


def _collection_errors(sf: Salesforce, records: list[dict[str, Any]]) -> list[str]:
    """The per-record errors sObject Collections answers, in Bulk's sf__Error form."""
    body = {
        "records": [{"attributes": {"type": "Opportunity"}, **r} for r in records],
    }
    results = sf.restful("composite/sobjects", method="PATCH", data=json.dumps(body))
    out = []
    for result in results:
        error = result["errors"][0]
        fields = "".join(f"{f} " for f in error["fields"])
        out.append(f"{error['statusCode']}:{error['message']}:{fields}--")
    return out


# ---- simple-salesforce's bulk2 client -------------------------------------------------------


def test_insert_records_and_their_results(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    records = [
        {"Name": "Bulk Alpha", "StageName": "Prospecting", "CloseDate": "2026-12-01"},
        {"Name": 'Bulk "Beta", Ltd', "StageName": "Qualification", "CloseDate": "2026-12-15"},
        {"Name": "Bulk Gamma", "StageName": "Prospecting", "CloseDate": "not a date"},
    ]
    results = sf.bulk2.Opportunity.insert(records=records, wait=0.01)
    assert results == [
        {
            "numberRecordsFailed": 1,
            "numberRecordsProcessed": 3,
            "numberRecordsTotal": 3,
            "job_id": results[0]["job_id"],
        }
    ]
    job = results[0]["job_id"]
    successful = sf.bulk2.Opportunity.get_successful_records(job)
    header = rows_of(successful)[0]
    assert header[:2] == ["sf__Id", "sf__Created"]
    assert successful.startswith('"sf__Id","sf__Created",')
    rows = records_of(successful)
    assert [(r["Name"], r["sf__Created"]) for r in rows] == [
        ("Bulk Alpha", "true"),
        ('Bulk "Beta", Ltd', "true"),
    ]
    for row in rows:
        stored = sf.Opportunity.get(row["sf__Id"])
        assert (stored["Name"], stored["StageName"], stored["CloseDate"]) == (
            row["Name"],
            row["StageName"],
            row["CloseDate"],
        )
    failed = records_of(sf.bulk2.Opportunity.get_failed_records(job))
    assert failed == [
        {
            "sf__Id": "",
            "sf__Error": "INVALID_TYPE_ON_FIELD_IN_RECORD:Close Date: value not of required"
            " type: not a date:CloseDate --",
            **{k: records[2][k] for k in header[2:]},
        }
    ]
    assert rows_of(sf.bulk2.Opportunity.get_unprocessed_records(job)) == [header[2:]]
    assert len(fresh_sandbox.app.write_log.entries) == 2


def test_update_from_a_csv_file_fails_records_as_collections_does(
    fresh_sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    sf = fresh_sandbox.client()
    deals = _open_deals(sf, 2)
    bad = [
        {"Id": "006xx000BAD", "Probability": "40"},
        {"Id": deals[1]["Id"], "Amout": "5"},
        {"Id": deals[1]["Id"], "Amount": "lots"},
        {"Id": deals[1]["Id"], "IsWon": "true"},
    ]
    path = tmp_path / "update.csv"
    path.write_text(f"Id,Probability\n{deals[0]['Id']},35\n006xx000BAD,40\n")
    results = sf.bulk2.Opportunity.update(csv_file=str(path), wait=0.01)
    assert (results[0]["numberRecordsProcessed"], results[0]["numberRecordsFailed"]) == (2, 1)
    after = sf.Opportunity.get(deals[0]["Id"])
    assert after["Probability"] == 35
    assert after["SystemModstamp"] > deals[0]["SystemModstamp"]
    failed = records_of(sf.bulk2.Opportunity.get_failed_records(results[0]["job_id"]))
    assert [(f["sf__Id"], f["sf__Error"]) for f in failed] == [
        ("006xx000BAD", _collection_errors(sf, [{"id": "006xx000BAD", "Probability": 40}])[0])
    ]
    # The same bad records through the API's two doors: the same statusCode and message.
    http = BulkHttp(fresh_sandbox, sf)
    for record in bad[2:]:
        field = next(k for k in record if k != "Id")
        job = _ingest_job(
            http,
            {"object": "Opportunity", "operation": "update"},
            f"Id,{field}\n{record['Id']},{record[field]}\n",
        )
        http.finish("ingest", job)
        bulk_error = records_of(http.get(f"ingest/{job}/failedResults").text)[0]["sf__Error"]
        rest = {"id": record["Id"], field: record[field]}
        assert bulk_error == _collection_errors(sf, [rest])[0]


def test_upsert_by_external_id_and_by_id(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    sf.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={
            "FullName": "Opportunity.Deal_Key__c",
            "Metadata": {"label": "Deal key", "type": "Text", "length": 40, "externalId": True},
        },
    )
    grant_fields(sf, ["Opportunity.Deal_Key__c"])
    deal = _open_deals(sf, 1)[0]
    sf.Opportunity.update(deal["Id"], {"Deal_Key__c": "K-1"})
    results = sf.bulk2.Opportunity.upsert(
        records=[
            {"Deal_Key__c": "K-1", "Amount": "1234"},
            {
                "Deal_Key__c": "K-2",
                "Name": "Bulk K2",
                "StageName": "Prospecting",
                "CloseDate": "2027-01-31",
                "Amount": "99",
            },
        ],
        external_id_field="Deal_Key__c",
        wait=0.01,
    )
    successful = records_of(sf.bulk2.Opportunity.get_successful_records(results[0]["job_id"]))
    assert [(r["Deal_Key__c"], r["sf__Created"]) for r in successful] == [
        ("K-1", "false"),
        ("K-2", "true"),
    ]
    assert successful[0]["sf__Id"] == deal["Id"]
    assert sf.Opportunity.get(deal["Id"])["Amount"] == 1234.0
    assert sf.Opportunity.get(successful[1]["sf__Id"])["Deal_Key__c"] == "K-2"
    # simple-salesforce's default key is Id: a record with an Id updates it, one without is new.
    by_id = sf.bulk2.Opportunity.upsert(
        records=[
            {"Id": deal["Id"], "Name": "Renamed by Id", "StageName": "", "CloseDate": ""},
            {"Id": "", "Name": "New by Id", "StageName": "Prospecting", "CloseDate": "2027-02-28"},
        ],
        wait=0.01,
    )
    created = records_of(sf.bulk2.Opportunity.get_successful_records(by_id[0]["job_id"]))
    assert [r["sf__Created"] for r in created] == ["false", "true"]
    assert sf.Opportunity.get(deal["Id"])["Name"] == "Renamed by Id"
    assert sf.Opportunity.get(created[1]["sf__Id"])["Name"] == "New by Id"


def test_empty_cells_keep_values_and_na_clears_them(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    deal = _open_deals(sf, 1)[0]
    assert deal["Amount"] is not None
    sf.bulk2.Opportunity.update(
        records=[{"Id": deal["Id"], "Amount": "#N/A", "Probability": ""}], wait=0.01
    )
    after = sf.Opportunity.get(deal["Id"])
    assert after["Amount"] is None
    assert after["Probability"] == deal["Probability"]


def test_delete_and_hard_delete(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    soft, hard = (d["Id"] for d in _open_deals(sf, 2))
    sf.bulk2.Opportunity.delete(records=[{"Id": soft}], wait=0.01)
    sf.bulk2.Opportunity.hard_delete(records=[{"Id": hard}], wait=0.01)
    every = sf.query_all(
        f"SELECT Id, IsDeleted FROM Opportunity WHERE Id IN ('{soft}', '{hard}')",
        include_deleted=True,
    )["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in every] == [(soft, True)]  # hard: gone for good
    alice = fresh_sandbox.client_as(ALICE)
    refused = BulkHttp(fresh_sandbox, alice).post(
        "ingest", {"object": "Opportunity", "operation": "hardDelete"}
    )
    assert refused.status_code == 400 and refused.json()[0]["errorCode"] == "INVALIDJOB"


def test_tab_delimited_crlf_job(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    deal = _open_deals(sf, 1)[0]
    results = sf.bulk2.Opportunity.update(
        records=[{"Id": deal["Id"], "Name": "Tab\tseparated"}],
        column_delimiter=ColumnDelimiter.TAB,
        line_ending=LineEnding.CRLF,
        wait=0.01,
    )
    assert results[0]["numberRecordsFailed"] == 0
    assert sf.Opportunity.get(deal["Id"])["Name"] == "Tab\tseparated"
    http = BulkHttp(fresh_sandbox, sf)
    text = http.get(f"ingest/{results[0]['job_id']}/successfulResults").text
    header, row = text.split("\r\n")[:2]
    assert header.split("\t")[:2] == ['"sf__Id"', '"sf__Created"']
    assert sorted(header.split("\t")[2:]) == ["Id", "Name"]  # the client's column order
    assert row.startswith(f'"{deal["Id"]}"\t"false"\t') and text.endswith("\r\n")


# ---- the wire: create, upload, close, info ---------------------------------------------------


def test_job_shapes_through_its_states(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    http = BulkHttp(fresh_sandbox, sf)
    created = http.post("ingest", {"object": "opportunity", "operation": "insert"})
    body = created.json()
    job = body["id"]
    assert list(body) == [
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
        "contentUrl",
        "lineEnding",
        "columnDelimiter",
    ]
    assert (body["object"], body["state"], body["apiVersion"]) == ("Opportunity", "Open", 59.0)
    assert body["contentUrl"] == f"services/data/v59.0/jobs/ingest/{job}/batches"
    upload = http.put_csv(
        f"ingest/{job}/batches", "Name,StageName,CloseDate\nX,Prospecting,2027-01-01\n"
    )
    assert (upload.status_code, upload.content) == (201, b"")
    closed = http.patch(f"ingest/{job}", {"state": "UploadComplete"}).json()
    assert list(closed)[-3:] == ["concurrencyMode", "contentType", "apiVersion"]
    assert closed["state"] == "UploadComplete"
    info = http.finish("ingest", job)
    assert {k: info[k] for k in ("state", "jobType", "numberRecordsProcessed")} == {
        "state": "JobComplete",
        "jobType": "V2Ingest",
        "numberRecordsProcessed": 1,
    }
    assert (info["numberRecordsFailed"], info["retries"], info["apexProcessingTime"]) == (0, 0, 0)
    assert info["totalProcessingTime"] >= 1
    listed = http.get("ingest").json()
    assert listed["done"] is True and [r["id"] for r in listed["records"]] == [job]
    assert http.get("ingest", jobType="V2Query").json()["records"] == []
    assert http.delete(f"ingest/{job}").status_code == 204
    assert http.get(f"ingest/{job}").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            {"object": "Nothing__c", "operation": "insert"},
            400,
            {
                "errorCode": "INVALIDJOB",
                "message": "InvalidJob : Unable to find object: Nothing__c",
            },
        ),
        (
            {"object": "Opportunity", "operation": "upsert"},
            400,
            {
                "errorCode": "INVALIDJOB",
                "message": "InvalidJob : External ID was blank for Opportunity. An External ID"
                " must be specified for upsert.",
            },
        ),
        (
            {"object": "Opportunity", "operation": "upsert", "externalIdFieldName": "Name"},
            400,
            {
                "errorCode": "INVALIDJOB",
                "message": "InvalidJob : Field name provided, Name does not match an External ID"
                " for Opportunity",
            },
        ),
        (
            {"object": "Opportunity", "operation": ""},
            400,
            {
                "errorCode": "API_ERROR",
                "message": "Invalid value: '' supplied for property: 'operation'",
            },
        ),
        (
            {"object": "Opportunity", "operation": "insert", "columnDelimiter": "COLON"},
            400,
            {
                "errorCode": "API_ERROR",
                "message": "Invalid value: 'COLON' supplied for property: 'columnDelimiter'",
            },
        ),
    ],
)
def test_bad_jobs_are_refused(
    sf_sandbox: SalesforceSandbox,
    sf: Salesforce,
    body: dict[str, Any],
    status: int,
    error: dict[str, str],
) -> None:
    refused = BulkHttp(sf_sandbox, sf).post("ingest", body)
    assert refused.status_code == status
    assert refused.json() == [{"message": error["message"], "errorCode": error["errorCode"]}]


def test_upload_once_to_an_open_job(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    http = BulkHttp(fresh_sandbox, sf)
    job = http.post("ingest", {"object": "Opportunity", "operation": "update"}).json()["id"]
    assert http.put_csv(f"ingest/{job}/batches", "Id,Probability\n").status_code == 201
    twice = http.put_csv(f"ingest/{job}/batches", "Id,Probability\n")
    assert twice.status_code == 400
    assert twice.json() == [
        {
            "message": f"Found multipe contents for job: <{job[:15]}>, please 'Close' / 'Abort'"
            " / 'Delete' the current Job then create a new Job and make sure you only do 'PUT'"
            " once on a given Job.",
            "errorCode": "BULK_API_ERROR",
        }
    ]
    assert http.patch(f"ingest/{job}", {"state": "UploadComplete"}).status_code == 200
    closed = http.put_csv(f"ingest/{job}/batches", "Id\n")
    assert closed.status_code == 400 and closed.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    again = http.patch(f"ingest/{job}", {"state": "UploadComplete"})
    assert again.status_code == 400 and again.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    other = http.post("ingest", {"object": "Opportunity", "operation": "insert"}).json()["id"]
    assert http.delete(f"ingest/{other}").status_code == 400  # Open: abort it first


def test_abort_leaves_every_record_unprocessed(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    http = BulkHttp(fresh_sandbox, sf)
    data = (
        "Name,StageName,CloseDate\n"
        "A,Prospecting,2027-01-01\n"
        '"B, ""quoted""",Prospecting,2027-01-02\n'
    )
    job = http.post("ingest", {"object": "Opportunity", "operation": "insert"}).json()["id"]
    http.put_csv(f"ingest/{job}/batches", data)
    aborted = http.patch(f"ingest/{job}", {"state": "Aborted"})
    assert aborted.json()["state"] == "Aborted"
    assert http.get(f"ingest/{job}").json()["state"] == "Aborted"
    assert http.get(f"ingest/{job}/unprocessedrecords").text == data
    assert rows_of(http.get(f"ingest/{job}/successfulResults").text) == [
        ["sf__Id", "sf__Created", "Name", "StageName", "CloseDate"]
    ]
    assert sf.query("SELECT COUNT() FROM Opportunity WHERE Name = 'A'")["totalSize"] == 0


# ---- what fails the whole job ----------------------------------------------------------------


def test_an_unknown_header_field_fails_the_job(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    with pytest.raises(
        SalesforceOperationError, match="InvalidBatch : Field name not found : Amout"
    ):
        sf.bulk2.Opportunity.update(
            records=[{"Id": _open_deals(sf, 1)[0]["Id"], "Amout": "1"}], wait=0.01
        )
    http = BulkHttp(fresh_sandbox, sf)
    job = http.get("ingest").json()["records"][0]["id"]
    info = http.get(f"ingest/{job}").json()
    assert (info["state"], info["numberRecordsProcessed"]) == ("Failed", 0)
    assert rows_of(http.get(f"ingest/{job}/unprocessedrecords").text)[1:] != []


def test_a_line_ending_other_than_the_jobs_fails_it(fresh_sandbox: SalesforceSandbox) -> None:
    http = BulkHttp(fresh_sandbox, fresh_sandbox.client())
    job = _ingest_job(
        http,
        {"object": "Opportunity", "operation": "insert", "lineEnding": "LF"},
        "Name,StageName,CloseDate\r\nA,Prospecting,2027-01-01\r\n",
    )
    info = http.finish("ingest", job)
    assert (info["state"], info["errorMessage"]) == (
        "Failed",
        "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF",
    )


def test_the_daily_batch_allocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk_ingest, "RECORDS_PER_BATCH", 2)
    with SalesforceSandbox.start(seed=7, bulk_limits=BulkLimits(batches=2)) as sandbox:
        sf = sandbox.client()
        http = BulkHttp(sandbox, sf)
        names = [f"Batch {n}" for n in range(5)]
        data = "Name,StageName,CloseDate\n" + "".join(
            f"{n},Prospecting,2027-01-01\n" for n in names
        )
        job = _ingest_job(http, {"object": "Opportunity", "operation": "insert"}, data)
        info = http.finish("ingest", job)
        assert (info["state"], info["numberRecordsProcessed"]) == ("Failed", 4)
        assert info["errorMessage"].startswith("ExceededQuota : ")
        unprocessed = records_of(http.get(f"ingest/{job}/unprocessedrecords").text)
        assert [r["Name"] for r in unprocessed] == ["Batch 4"]
        assert sf.limits()["DailyBulkApiBatches"] == {"Max": 2, "Remaining": 0}


# ---- permissions and faults ------------------------------------------------------------------


def test_field_security_fails_records_as_collections_does(fresh_sandbox: SalesforceSandbox) -> None:
    admin = fresh_sandbox.client()
    admin.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={
            "FullName": "Opportunity.Margin__c",
            "Metadata": {"label": "Margin", "type": "Number", "precision": 6, "scale": 2},
        },
    )
    read_only = admin.PermissionSet.create({"Name": "Margin_Read", "Label": "Margin Read"})["id"]
    admin.FieldPermissions.create(
        {
            "ParentId": read_only,
            "SobjectType": "Opportunity",
            "Field": "Opportunity.Margin__c",
            "PermissionsRead": True,
            "PermissionsEdit": False,
        }
    )
    alice_id = admin.query(f"SELECT Id FROM User WHERE Username = '{ALICE}'")["records"][0]["Id"]
    admin.PermissionSetAssignment.create({"AssigneeId": alice_id, "PermissionSetId": read_only})
    alice = fresh_sandbox.client_as(ALICE)
    deal = alice.query("SELECT Id FROM Opportunity LIMIT 1")["records"][0]["Id"]
    results = alice.bulk2.Opportunity.update(records=[{"Id": deal, "Margin__c": "3"}], wait=0.01)
    failed = records_of(alice.bulk2.Opportunity.get_failed_records(results[0]["job_id"]))
    assert failed[0]["sf__Error"].startswith("INVALID_FIELD_FOR_INSERT_UPDATE:")
    assert failed[0]["sf__Error"] == _collection_errors(alice, [{"id": deal, "Margin__c": 3}])[0]


def test_write_failure_fault_fails_the_named_record(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    deals = _open_deals(sf, 3)
    fresh_sandbox.faults.add(
        FaultRule(kind="write_failure", path="/jobs/ingest", record_ids=(deals[1]["Id"],))
    )
    results = sf.bulk2.Opportunity.update(
        records=[{"Id": d["Id"], "Probability": "42"} for d in deals], wait=0.01
    )
    failed = records_of(sf.bulk2.Opportunity.get_failed_records(results[0]["job_id"]))
    assert [(f["sf__Id"], f["sf__Error"]) for f in failed] == [
        (
            deals[1]["Id"],
            "UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 1 records:--",
        )
    ]
    assert [sf.Opportunity.get(d["Id"])["Probability"] for d in deals] == [
        42,
        deals[1]["Probability"],
        42,
    ]


def test_job_failure_and_slow_job_faults(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    fresh_sandbox.faults.add(FaultRule(kind="job_failure", path="/jobs/ingest$", method="POST"))
    record = {"Name": "Never", "StageName": "Prospecting", "CloseDate": "2027-01-01"}
    with pytest.raises(SalesforceOperationError, match="Retried more than 10 times"):
        sf.bulk2.Opportunity.insert(records=[record], wait=0.01)
    http = BulkHttp(fresh_sandbox, sf)
    failed = http.get("ingest").json()["records"][0]["id"]
    info = http.get(f"ingest/{failed}").json()
    assert (info["state"], info["retries"], info["numberRecordsProcessed"]) == ("Failed", 10, 0)
    assert records_of(http.get(f"ingest/{failed}/unprocessedrecords").text) == [record]
    fresh_sandbox.faults.add(FaultRule(kind="slow_job", path="/jobs/ingest$", polls=2))
    job = _ingest_job(
        http,
        {"object": "Opportunity", "operation": "insert"},
        "Name,StageName,CloseDate\nSlow,Prospecting,2027-01-01\n",
    )
    states = [http.get(f"ingest/{job}").json()["state"] for _ in range(3)]
    assert states == ["InProgress", "InProgress", "JobComplete"]


def test_cut_download_of_results(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    deals = _open_deals(sf, 5)
    results = sf.bulk2.Opportunity.update(
        records=[{"Id": d["Id"], "Probability": "41"} for d in deals], wait=0.01
    )
    fresh_sandbox.faults.add(
        FaultRule(kind="cut_download", path="/successfulResults$", cut_after=60)
    )
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        sf.bulk2.Opportunity.get_successful_records(results[0]["job_id"])
    whole = sf.bulk2.Opportunity.get_successful_records(results[0]["job_id"])
    assert len(records_of(whole)) == 5


def test_stats_count_ingest_routes(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    record = {"Name": "Counted", "StageName": "Prospecting", "CloseDate": "2027-01-01"}
    job = sf.bulk2.Opportunity.insert(records=[record], wait=0.01)[0]["job_id"]
    sf.bulk2.Opportunity.get_all_ingest_records(job)
    calls = {k: v for k, v in fresh_sandbox.stats.by_route.items() if k.startswith("bulk_")}
    assert calls == {
        "bulk_ingest_create": 1,
        "bulk_ingest_upload": 1,
        "bulk_ingest_state": 1,
        "bulk_ingest_job": 2,  # the client's wait, then its read of the counts
        "bulk_ingest_successful_results": 1,
        "bulk_ingest_failed_results": 1,
        "bulk_ingest_unprocessed_records": 1,
    }
