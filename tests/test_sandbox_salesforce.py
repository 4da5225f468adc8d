"""The sandbox Salesforce driven by the real simple-salesforce client, end to end over TLS."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import requests
from conftest import grant_fields
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

# ---- logins ---------------------------------------------------------------------------------


def test_soap_login_with_username_password_and_empty_token(sf_sandbox: SalesforceSandbox) -> None:
    sf = Salesforce(
        username="demo@sandbox.local",
        password="demo",
        security_token="",
        session=sf_sandbox.session(),
    )
    assert sf.sf_instance == f"127.0.0.1:{sf_sandbox.port}"
    assert sf.query("SELECT COUNT() FROM User")["totalSize"] == len(sf_sandbox.org.data.users) + 1


def test_soap_login_rejects_other_credentials_as_salesforce_does(
    sf_sandbox: SalesforceSandbox,
) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as failure:
        Salesforce(
            username="demo@sandbox.local",
            password="wrong",
            security_token="",
            session=sf_sandbox.session(),
        )
    assert failure.value.code == "INVALID_LOGIN"
    assert "Invalid username, password, security token" in failure.value.auth_message


def test_soap_login_with_a_security_token_appended_is_refused(
    sf_sandbox: SalesforceSandbox,
) -> None:
    # Salesforce checks password + token as one string: a token the org did not issue fails.
    with pytest.raises(SalesforceAuthenticationFailed):
        Salesforce(
            username="demo@sandbox.local",
            password="demo",
            security_token="TOKEN",
            session=sf_sandbox.session(),
        )


def test_oauth_password_flow(sf_sandbox: SalesforceSandbox) -> None:
    sf = Salesforce(
        username="demo@sandbox.local",
        password="demo",
        consumer_key="sandbox",
        consumer_secret="sandbox",
        session=sf_sandbox.session(),
    )
    assert sf.query("SELECT Id FROM Opportunity LIMIT 1")["totalSize"] == 1


def test_oauth_password_flow_with_a_bad_client_secret(sf_sandbox: SalesforceSandbox) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as failure:
        Salesforce(
            username="demo@sandbox.local",
            password="demo",
            consumer_key="sandbox",
            consumer_secret="nope",
            session=sf_sandbox.session(),
        )
    assert failure.value.code == "invalid_client_id"


def test_jwt_bearer_flow_with_the_sandbox_key(sf_sandbox: SalesforceSandbox) -> None:
    sf = Salesforce(
        username="demo@sandbox.local",
        consumer_key="sandbox",
        privatekey_file=str(sf_sandbox.jwt_key_path),
        session=sf_sandbox.session(),
    )
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == len(sf_sandbox.org.data.accounts)


def test_jwt_bearer_flow_rejects_a_key_the_app_does_not_know(
    sf_sandbox: SalesforceSandbox, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "other.pem"
    key_file.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SalesforceAuthenticationFailed) as failure:
        Salesforce(
            username="demo@sandbox.local",
            consumer_key="sandbox",
            privatekey_file=str(key_file),
            session=sf_sandbox.session(),
        )
    assert failure.value.code == "invalid_grant"


def test_client_credentials_flow_on_a_my_domain(sf_sandbox: SalesforceSandbox) -> None:
    sf = Salesforce(
        consumer_key="sandbox",
        consumer_secret="sandbox",
        domain="acme.my",
        session=sf_sandbox.session(domain="acme.my"),
    )
    assert sf.query("SELECT Id FROM User LIMIT 1")["totalSize"] == 1


def test_existing_session_id_and_instance_url(sf_sandbox: SalesforceSandbox) -> None:
    token = sf_sandbox.app.new_session(sf_sandbox.org.admin_row)
    sf = Salesforce(session_id=token, instance_url=sf_sandbox.url, session=sf_sandbox.session())
    assert sf.query("SELECT Id FROM Opportunity LIMIT 2")["totalSize"] == 2


def test_an_unknown_session_id_gets_invalid_session_id(sf_sandbox: SalesforceSandbox) -> None:
    sf = Salesforce(
        session_id="00Dxx!nope", instance_url=sf_sandbox.url, session=sf_sandbox.session()
    )
    with pytest.raises(SalesforceExpiredSession) as failure:
        sf.query("SELECT Id FROM User")
    assert failure.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_expired_session_is_renewed_by_the_client(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    fresh_sandbox.app.expire_sessions()
    assert sf.query("SELECT COUNT() FROM User")["totalSize"] > 0
    assert fresh_sandbox.stats.login_calls == 2


# ---- TLS ------------------------------------------------------------------------------------


def test_tls_trust_survives_requests_ca_bundle_environment(
    sf_sandbox: SalesforceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_bundle = requests.certs.where()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", system_bundle)
    monkeypatch.setenv("CURL_CA_BUNDLE", system_bundle)
    # The trap: session.verify is overridden by the environment's bundle...
    naive = requests.Session()
    naive.verify = str(sf_sandbox.ca_path)
    with pytest.raises(requests.exceptions.SSLError):
        naive.get(f"{sf_sandbox.url}/services/data/")
    # ...while the project's transport trusts the sandbox CA through its own SSL context.
    answer = sf_sandbox.session().get(f"{sf_sandbox.url}/services/data/")
    assert answer.status_code == 200
    assert {"label": "v59.0", "url": "/services/data/v59.0", "version": "59.0"} in answer.json()


def test_a_session_without_the_sandbox_ca_refuses_the_certificate(
    sf_sandbox: SalesforceSandbox,
) -> None:
    from crm_kpi_worker.connectors.http import build_session

    with pytest.raises(requests.exceptions.SSLError):
        build_session().get(f"{sf_sandbox.url}/services/data/")


# ---- query ----------------------------------------------------------------------------------


def _live_deals(sandbox: SalesforceSandbox) -> int:
    return int((~sandbox.org.data.deals.is_deleted).sum())


def test_query_all_iter_pages_at_2000_rows(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    before = sf_sandbox.stats.by_route.get("query_more", 0)
    ids = [r["Id"] for r in sf.query_all_iter("SELECT Id FROM Opportunity")]
    expected = _live_deals(sf_sandbox)
    assert len(ids) == expected == len(set(ids))
    pages = -(-expected // 2000)
    assert sf_sandbox.stats.by_route["query_more"] - before == pages - 1


def test_first_page_shape_and_next_records_url_is_a_path(sf: Salesforce) -> None:
    page = sf.query("SELECT Id, Amount FROM Opportunity")
    assert page["done"] is False
    assert len(page["records"]) == 2000
    assert page["nextRecordsUrl"].startswith("/services/data/v59.0/query/")
    assert page["nextRecordsUrl"].endswith("-2000")
    record = page["records"][0]
    assert list(record) == ["attributes", "Id", "Amount"]
    assert record["attributes"] == {
        "type": "Opportunity",
        "url": f"/services/data/v59.0/sobjects/Opportunity/{record['Id']}",
    }


def test_batch_size_header_is_honoured_within_salesforce_bounds(sf: Salesforce) -> None:
    page = sf.query("SELECT Id FROM Opportunity", headers={"Sforce-Query-Options": "batchSize=500"})
    assert len(page["records"]) == 500
    assert page["nextRecordsUrl"].endswith("-500")
    nxt = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
    assert len(nxt["records"]) == 500
    tiny = sf.query("SELECT Id FROM Opportunity", headers={"Sforce-Query-Options": "batchSize=10"})
    assert len(tiny["records"]) == 200  # Salesforce's minimum batch size


def test_query_all_includes_deleted_rows_with_is_deleted(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    deals = sf_sandbox.org.data.deals
    deleted = int(deals.is_deleted.sum())
    assert deleted > 0
    visible = sf.query_all("SELECT Id FROM Opportunity WHERE IsDeleted = true")
    assert visible["totalSize"] == 0
    everything = sf.query_all(
        "SELECT Id, IsDeleted FROM Opportunity WHERE IsDeleted = true", include_deleted=True
    )
    assert everything["totalSize"] == deleted
    assert all(r["IsDeleted"] is True for r in everything["records"])
    # Deleting bumps SystemModstamp, not LastModifiedDate: an incremental queryAll on
    # SystemModstamp sees the deletion.
    row = int(np.flatnonzero(deals.is_deleted)[0])
    (record,) = sf.query_all(
        "SELECT SystemModstamp, LastModifiedDate FROM Opportunity "
        f"WHERE Id = '{make_id('006', row)}'",
        include_deleted=True,
    )["records"]
    deleted_at = dt.datetime.fromtimestamp(int(deals.deleted_at[row]) / 1000, tz=dt.UTC)
    assert record["SystemModstamp"] == deleted_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
    assert record["LastModifiedDate"] < record["SystemModstamp"]
    # COUNT() answers in totalSize (query_all would count the empty records list instead).
    assert sf.query("SELECT COUNT() FROM Opportunity", include_deleted=True)["totalSize"] == len(
        deals
    )


def test_count_answers_total_size_and_no_records(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    answer = sf.query("SELECT COUNT() FROM Opportunity")
    assert answer["totalSize"] == _live_deals(sf_sandbox)
    assert answer["records"] == []
    assert answer["done"] is True


def test_aggregate_count_of_a_field(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    deals = sf_sandbox.org.data.deals
    expected = int((~deals.is_deleted & ~np.isnan(deals.amount)).sum())
    answer = sf.query("SELECT COUNT(Amount) n, MAX(Amount) FROM Opportunity")
    record = answer["records"][0]
    assert record["n"] == expected
    assert record["expr0"] == float(np.nanmax(deals.amount[~deals.is_deleted]))


def test_where_with_and_or_not_in_like_and_order(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    data = sf_sandbox.org.data
    deals = data.deals
    won, lost = ds.STAGES.index("closed_won"), ds.STAGES.index("closed_lost")
    mask = (
        ~deals.is_deleted & (deals.amount >= 20000) & ((deals.stage == won) | (deals.stage == lost))
    )
    mask &= deals.currency != data.currencies.index("USD")
    answer = sf.query_all(
        "SELECT Id, Amount, StageName FROM Opportunity WHERE Amount >= 20000 AND "
        "(StageName = 'closed won' OR StageName IN ('Closed Lost')) "
        "AND NOT CurrencyIsoCode = 'USD' "
        "ORDER BY Amount DESC, Id"
    )
    assert answer["totalSize"] == int(mask.sum())
    amounts = [r["Amount"] for r in answer["records"]]
    assert amounts == sorted(amounts, reverse=True)
    assert {r["StageName"] for r in answer["records"]} <= {"Closed Won", "Closed Lost"}
    like = sf.query_all("SELECT Id, Name FROM User WHERE Email LIKE 'alice%' ")
    assert [r["Name"] for r in like["records"]] == ["Alice Martin"]


def test_relationship_fields_nest_and_null_parents_are_null(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    answer = sf.query(
        "SELECT Id, Owner.Email, Owner.Manager.Name FROM Opportunity ORDER BY Id LIMIT 5"
    )
    for record in answer["records"]:
        owner = record["Owner"]
        assert owner["attributes"]["type"] == "User"
        assert owner["Email"].endswith("@sandbox.local")
        assert owner["Manager"] is None or set(owner["Manager"]) == {"attributes", "Name"}
    alice = sf.query("SELECT Id, Manager.Name FROM User WHERE Email = 'alice.martin@sandbox.local'")
    assert alice["records"][0]["Manager"]["Name"] == "Sophie Bernard"


def test_filter_by_relationship_field(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    data = sf_sandbox.org.data
    alice = data.users.email.index("alice.martin@sandbox.local")
    expected = int(((data.deals.owner == alice) & ~data.deals.is_deleted).sum())
    answer = sf.query_all(
        "SELECT Id FROM Opportunity WHERE Owner.Email = 'alice.martin@sandbox.local'"
    )
    assert answer["totalSize"] == expected > 40


def test_date_and_datetime_literals(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    data = sf_sandbox.org.data
    deals = data.deals
    quarter_start = ds.date_to_day(dt.date(2026, 7, 1))
    quarter_end = ds.date_to_day(dt.date(2026, 9, 30))
    expected = int(
        (
            ~deals.is_deleted
            & (deals.close_day >= quarter_start)
            & (deals.close_day <= quarter_end)
        ).sum()
    )
    answer = sf.query(
        "SELECT COUNT() FROM Opportunity WHERE CloseDate >= 2026-07-01 AND CloseDate <= 2026-09-30"
    )
    assert answer["totalSize"] == expected
    stamp = int(np.median(deals.last_modified))
    iso = (
        dt.datetime.fromtimestamp(stamp / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        + "Z"
    )
    expected_modified = int((~deals.is_deleted & (deals.last_modified >= stamp)).sum())
    modified = sf.query(f"SELECT COUNT() FROM Opportunity WHERE SystemModstamp >= {iso}")
    assert modified["totalSize"] == expected_modified


def test_relative_date_literal_last_n_days(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    opportunity = sf.query("SELECT Id FROM Opportunity ORDER BY Id LIMIT 1")["records"][0]
    sf.Opportunity.update(
        opportunity["Id"], {"Description__c": None} if False else {"Probability": 55}
    )
    recent = sf.query_all("SELECT Id FROM Opportunity WHERE SystemModstamp = LAST_N_DAYS:1")
    assert [r["Id"] for r in recent["records"]] == [opportunity["Id"]]


def test_child_subqueries_return_history_in_order(
    sf_sandbox: SalesforceSandbox, sf: Salesforce
) -> None:
    data = sf_sandbox.org.data
    changes = data.stage_changes
    deal = int(changes.deal[np.argmax(np.bincount(changes.deal))])  # the deal with most stages
    record_id = make_id("006", deal)
    answer = sf.query(
        "SELECT Id, (SELECT StageName, CreatedDate FROM OpportunityHistories ORDER BY CreatedDate) "
        f"FROM Opportunity WHERE Id = '{record_id}'"
    )
    history = answer["records"][0]["OpportunityHistories"]
    rows = np.flatnonzero(changes.deal == deal)
    assert history["totalSize"] == len(rows)
    from crm_kpi_worker.sandbox.salesforce.catalog import SF_STAGES

    assert [h["StageName"] for h in history["records"]] == [
        SF_STAGES[ds.STAGES[s]][0] for s in changes.stage[rows]
    ]


def test_empty_child_subquery_is_null(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    data = sf_sandbox.org.data
    without = np.setdiff1d(np.arange(len(data.deals)), data.close_date_changes.deal)
    without = without[~data.deals.is_deleted[without]]
    record_id = make_id("006", int(without[0]))
    answer = sf.query(
        f"SELECT Id, (SELECT Id FROM Histories) FROM Opportunity WHERE Id = '{record_id}'"
    )
    assert answer["records"][0]["Histories"] is None


def test_convert_currency_uses_the_org_rates(sf_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    data = sf_sandbox.org.data
    answer = sf.query_all(
        "SELECT Amount, CurrencyIsoCode, convertCurrency(Amount) converted FROM Opportunity "
        "WHERE CurrencyIsoCode IN ('USD', 'CHF') AND Amount != null"
    )
    assert answer["totalSize"] > 0
    for record in answer["records"]:
        rate = data.fx_rates.get(record["CurrencyIsoCode"])
        if rate is None:
            assert record["converted"] is None  # no rate in the org: cannot be converted
        else:
            assert record["converted"] == pytest.approx(record["Amount"] / rate, abs=0.01)


def test_malformed_query_error_body(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.query("SELECT Id FORM Opportunity")
    (error,) = failure.value.content
    assert error["errorCode"] == "MALFORMED_QUERY"
    assert "ERROR at Row:1:Column:" in error["message"]


def test_unknown_field_and_object_errors(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.query("SELECT Id, Amout FROM Opportunity")
    (error,) = failure.value.content
    assert error["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Amout' on entity 'Opportunity'" in error["message"]
    assert "ERROR at Row:1:Column:12" in error["message"]
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.query("SELECT Id FROM Opportunityy")
    assert failure.value.content[0]["errorCode"] == "INVALID_TYPE"


def test_wrong_literal_type_is_refused(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.query("SELECT Id FROM Opportunity WHERE Amount = '100'")
    assert failure.value.content[0]["errorCode"] == "INVALID_QUERY_FILTER_OPERATOR"
    assert "must be of type currency" in failure.value.content[0]["message"]


def test_invalid_query_locator(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.query_more("01gSb9999999999-2000")
    assert failure.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


# ---- describe and limits --------------------------------------------------------------------


def test_describe_lists_standard_and_custom_fields(sf: Salesforce) -> None:
    describe = sf.Opportunity.describe()
    fields = {f["name"]: f for f in describe["fields"]}
    assert describe["keyPrefix"] == "006"
    for name, kind in [
        ("Amount", "currency"),
        ("CloseDate", "date"),
        ("StageName", "picklist"),
        ("IsWon", "boolean"),
        ("SystemModstamp", "datetime"),
        ("OwnerId", "reference"),
        ("ForecastCategoryName", "picklist"),
        ("CurrencyIsoCode", "picklist"),
        ("Probability", "percent"),
        ("IsDeleted", "boolean"),
        ("Type", "picklist"),
    ]:
        assert fields[name]["type"] == kind, name
    assert fields["OwnerId"]["referenceTo"] == ["User"]
    assert fields["OwnerId"]["relationshipName"] == "Owner"
    assert fields["IsWon"]["updateable"] is False
    assert "Closed Won" in [p["value"] for p in fields["StageName"]["picklistValues"]]
    children = {c["relationshipName"]: c["childSObject"] for c in describe["childRelationships"]}
    assert children["OpportunityHistories"] == "OpportunityHistory"
    names = {s["name"] for s in sf.describe()["sobjects"]}
    assert {
        "Opportunity",
        "User",
        "Account",
        "OpportunityHistory",
        "OpportunityFieldHistory",
        "Event",
        "ForecastingQuota",
        "Period",
        "CurrencyType",
        "OpportunityStage",
    } <= names


def test_limits_and_limit_info_header_count_calls(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    sf.query("SELECT Id FROM User LIMIT 1")
    used = fresh_sandbox.stats.api_calls
    assert sf.api_usage["api-usage"].used == used
    assert sf.api_usage["api-usage"].total == 100_000
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 100_000, "Remaining": 100_000 - used - 1}


def test_daily_limit_exhaustion_is_request_limit_exceeded() -> None:
    with SalesforceSandbox.start(seed=1, api_limit=2) as sandbox:
        sf = sandbox.client()
        sf.query("SELECT Id FROM User LIMIT 1")
        sf.query("SELECT Id FROM User LIMIT 1")
        with pytest.raises(SalesforceRefusedRequest) as failure:
            sf.query("SELECT Id FROM User LIMIT 1")
        assert failure.value.content == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]


# ---- writes ---------------------------------------------------------------------------------


def _open_opportunities(sf: Salesforce, n: int) -> list[dict]:
    return sf.query(
        "SELECT Id, StageName, CloseDate, SystemModstamp FROM Opportunity "
        f"WHERE IsClosed = false ORDER BY Id LIMIT {n}"
    )["records"]


def test_collection_update_reports_each_record_and_bumps_modstamp(
    fresh_sandbox: SalesforceSandbox,
) -> None:
    sf = fresh_sandbox.client()
    records = _open_opportunities(sf, 3)
    body = {
        "allOrNone": False,
        "records": [
            {"attributes": {"type": "Opportunity"}, "id": records[0]["Id"], "Probability": 35},
            {"attributes": {"type": "Opportunity"}, "id": "006xx000BAD", "Probability": 35},
            {"attributes": {"type": "Opportunity"}, "id": records[2]["Id"], "Amout": 1},
        ],
    }
    results = sf.restful("composite/sobjects", method="PATCH", data=json.dumps(body))
    assert results[0] == {"id": records[0]["Id"], "success": True, "errors": []}
    assert results[1]["success"] is False
    assert results[1]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert results[2]["errors"][0]["statusCode"] == "INVALID_FIELD"
    after = sf.Opportunity.get(records[0]["Id"])
    assert after["Probability"] == 35
    assert after["SystemModstamp"] > records[0]["SystemModstamp"]
    untouched = sf.Opportunity.get(records[2]["Id"])
    assert untouched["SystemModstamp"] == records[2]["SystemModstamp"]


def test_all_or_none_rolls_back_every_record(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    records = _open_opportunities(sf, 2)
    before = [sf.Opportunity.get(r["Id"]) for r in records]
    body = {
        "allOrNone": True,
        "records": [
            {
                "attributes": {"type": "Opportunity"},
                "id": records[0]["Id"],
                "StageName": "Negotiation",
                "Amount": 99,
            },
            {
                "attributes": {"type": "Opportunity"},
                "id": records[1]["Id"],
                "CloseDate": "not a date",
            },
        ],
    }
    history_before = sf.query("SELECT COUNT() FROM OpportunityHistory")["totalSize"]
    results = sf.restful("composite/sobjects", method="PATCH", data=json.dumps(body))
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "INVALID_TYPE_ON_FIELD_IN_RECORD"
    assert [sf.Opportunity.get(r["Id"]) for r in records] == before
    assert sf.query("SELECT COUNT() FROM OpportunityHistory")["totalSize"] == history_before


def test_more_than_200_records_is_refused_whole(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    body = {
        "records": [
            {"attributes": {"type": "Opportunity"}, "id": make_id("006", i), "Probability": 1}
            for i in range(201)
        ]
    }
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.restful("composite/sobjects", method="PATCH", data=json.dumps(body))
    assert failure.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_stage_and_close_date_changes_write_history(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    record = _open_opportunities(sf, 1)[0]
    later = (dt.date.fromisoformat(record["CloseDate"]) + dt.timedelta(days=30)).isoformat()
    sf.Opportunity.update(record["Id"], {"StageName": "Negotiation", "CloseDate": later})
    updated = sf.Opportunity.get(record["Id"])
    assert updated["Probability"] == 80.0 and updated["ForecastCategoryName"] == "Commit"
    history = sf.query(
        "SELECT StageName, CloseDate, PrevCloseDate FROM OpportunityHistory "
        f"WHERE OpportunityId = '{record['Id']}' ORDER BY CreatedDate DESC LIMIT 1"
    )["records"][0]
    assert history["StageName"] == "Negotiation"
    assert history["CloseDate"] == later and history["PrevCloseDate"] == record["CloseDate"]
    tracked = sf.query(
        "SELECT OldValue, NewValue FROM OpportunityFieldHistory "
        f"WHERE OpportunityId = '{record['Id']}' ORDER BY CreatedDate DESC LIMIT 1"
    )["records"][0]
    assert tracked == {**tracked, "OldValue": record["CloseDate"], "NewValue": later}


def test_custom_field_and_object_created_through_the_tooling_api(
    fresh_sandbox: SalesforceSandbox,
) -> None:
    sf = fresh_sandbox.client()
    created = sf.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={
            "FullName": "Opportunity.KPI_Days_In_Stage__c",
            "Metadata": {
                "label": "Days in stage",
                "type": "Number",
                "precision": 6,
                "scale": 0,
                "inlineHelpText": "Days since the stage changed",
            },
        },
    )
    assert created["success"] is True
    # As on Salesforce, a field created through the Tooling API has no field-level security:
    # even the admin's describe lacks it until a permission set grants it.
    assert "KPI_Days_In_Stage__c" not in {f["name"] for f in sf.Opportunity.describe()["fields"]}
    grant_fields(sf, ["Opportunity.KPI_Days_In_Stage__c"])
    field = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}["KPI_Days_In_Stage__c"]
    assert field["custom"] is True and field["type"] == "double"
    assert field["inlineHelpText"] == "Days since the stage changed"
    record = _open_opportunities(sf, 1)[0]
    sf.Opportunity.update(record["Id"], {"KPI_Days_In_Stage__c": 12})
    assert sf.Opportunity.get(record["Id"])["KPI_Days_In_Stage__c"] == 12
    with pytest.raises(SalesforceMalformedRequest) as duplicate:
        sf.toolingexecute(
            "sobjects/CustomField",
            method="POST",
            data={
                "FullName": "Opportunity.KPI_Days_In_Stage__c",
                "Metadata": {"label": "x", "type": "Number"},
            },
        )
    assert duplicate.value.content[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"

    sf.toolingexecute(
        "sobjects/CustomObject",
        method="POST",
        data={
            "FullName": "KPI_Scorecard__c",
            "Metadata": {
                "label": "KPI Scorecard",
                "pluralLabel": "KPI Scorecards",
                "nameField": {"type": "Text", "label": "Scorecard"},
                "deploymentStatus": "Deployed",
                "sharingModel": "ReadWrite",
            },
        },
    )
    sf.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={
            "FullName": "KPI_Scorecard__c.Scorecard_Key__c",
            "Metadata": {
                "label": "Key",
                "type": "Text",
                "length": 80,
                "externalId": True,
                "unique": True,
            },
        },
    )
    sf.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={
            "FullName": "KPI_Scorecard__c.Win_Rate__c",
            "Metadata": {"label": "Win rate", "type": "Percent", "precision": 5, "scale": 2},
        },
    )
    grant_fields(
        sf,
        ["KPI_Scorecard__c.Scorecard_Key__c", "KPI_Scorecard__c.Win_Rate__c"],
        name="Scorecard_Access",
    )
    # Single upsert by external id: 201 created, then 200 updated.
    assert (
        sf.KPI_Scorecard__c.upsert(
            "Scorecard_Key__c/alice-2026-Q3", {"Name": "Alice Q3", "Win_Rate__c": 25}
        )
        == 201
    )
    assert sf.KPI_Scorecard__c.upsert("Scorecard_Key__c/alice-2026-Q3", {"Win_Rate__c": 26}) == 200
    rows = sf.query("SELECT Name, Scorecard_Key__c, Win_Rate__c FROM KPI_Scorecard__c")["records"]
    assert [(r["Name"], r["Scorecard_Key__c"], r["Win_Rate__c"]) for r in rows] == [
        ("Alice Q3", "alice-2026-Q3", 26.0)
    ]
    # Collection upsert keyed by the external id: created flags per record.
    body = {
        "allOrNone": False,
        "records": [
            {
                "attributes": {"type": "KPI_Scorecard__c"},
                "Scorecard_Key__c": "alice-2026-Q3",
                "Win_Rate__c": 27,
            },
            {
                "attributes": {"type": "KPI_Scorecard__c"},
                "Scorecard_Key__c": "bruno-2026-Q3",
                "Name": "Bruno Q3",
                "Win_Rate__c": 10,
            },
        ],
    }
    results = sf.restful(
        "composite/sobjects/KPI_Scorecard__c/Scorecard_Key__c",
        method="PATCH",
        data=json.dumps(body),
    )
    assert [(r["success"], r["created"]) for r in results] == [(True, False), (True, True)]
    assert sf.query("SELECT COUNT() FROM KPI_Scorecard__c")["totalSize"] == 2


def test_read_only_fields_are_refused_per_record(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    record = _open_opportunities(sf, 1)[0]
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.Opportunity.update(record["Id"], {"IsWon": True})
    assert failure.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_delete_moves_a_record_to_the_recycle_bin(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    record = _open_opportunities(sf, 1)[0]
    sf.Opportunity.delete(record["Id"])
    assert (
        sf.query(f"SELECT COUNT() FROM Opportunity WHERE Id = '{record['Id']}'")["totalSize"] == 0
    )
    deleted = sf.query_all(
        f"SELECT Id, IsDeleted, SystemModstamp FROM Opportunity WHERE Id = '{record['Id']}'",
        include_deleted=True,
    )
    assert deleted["records"][0]["IsDeleted"] is True
    assert deleted["records"][0]["SystemModstamp"] > record["SystemModstamp"]
    with pytest.raises(SalesforceResourceNotFound):
        sf.Opportunity.get(record["Id"])


# ---- faults ---------------------------------------------------------------------------------


def test_rate_limit_fault_answers_429_with_retry_after(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    fresh_sandbox.faults.add(FaultRule(kind="rate_limit", path="/query", retry_after=7, times=1))
    with pytest.raises(SalesforceGeneralError) as failure:
        sf.query("SELECT Id FROM User LIMIT 1")
    assert failure.value.status == 429
    assert failure.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    raw = fresh_sandbox.session().get(
        f"{fresh_sandbox.url}/services/data/v59.0/limits/",
        headers={"Authorization": f"Bearer {sf.session_id}"},
    )
    assert raw.status_code == 200  # the rule fired once and only on /query
    fresh_sandbox.faults.add(FaultRule(kind="rate_limit", retry_after=7, times=1))
    limited = fresh_sandbox.session().get(
        f"{fresh_sandbox.url}/services/data/v59.0/limits/",
        headers={"Authorization": f"Bearer {sf.session_id}"},
    )
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"


def test_server_error_and_slow_faults(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    fresh_sandbox.faults.add(FaultRule(kind="server_error", status=503, times=2))
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError) as failure:
            sf.query("SELECT Id FROM User LIMIT 1")
        assert failure.value.status == 503
        assert failure.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert sf.query("SELECT Id FROM User LIMIT 1")["totalSize"] == 1
    rule = fresh_sandbox.faults.add(FaultRule(kind="slow", delay=0.05, times=1))
    assert sf.query("SELECT Id FROM User LIMIT 1")["totalSize"] == 1
    assert rule.fired == 1


def test_every_nth_request_fault(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    fresh_sandbox.faults.add(FaultRule(kind="server_error", status=500, every=3, times=None))
    outcomes = []
    for _ in range(6):
        try:
            sf.query("SELECT Id FROM User LIMIT 1")
            outcomes.append("ok")
        except SalesforceGeneralError as exc:
            outcomes.append(exc.status)
    assert outcomes == ["ok", "ok", 500, "ok", "ok", 500]


def test_write_failure_fault_fails_only_the_named_record(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    records = _open_opportunities(sf, 3)
    fresh_sandbox.faults.add(
        FaultRule(kind="write_failure", record_ids=(records[1]["Id"],), times=None)
    )
    body = {
        "records": [
            {"attributes": {"type": "Opportunity"}, "id": r["Id"], "Probability": 42}
            for r in records
        ]
    }
    results = sf.restful("composite/sobjects", method="PATCH", data=json.dumps(body))
    assert [r["success"] for r in results] == [True, False, True]
    assert results[1]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert sf.Opportunity.get(records[1]["Id"])["Probability"] != 42


def test_expire_session_fault_is_survived_by_relogin(fresh_sandbox: SalesforceSandbox) -> None:
    sf = fresh_sandbox.client()
    fresh_sandbox.faults.add(FaultRule(kind="expire_session", times=1))
    assert sf.query("SELECT COUNT() FROM User")["totalSize"] > 0
    assert fresh_sandbox.stats.login_calls == 2


def test_faults_are_controlled_over_http(fresh_sandbox: SalesforceSandbox) -> None:
    session = fresh_sandbox.session()
    created = session.post(
        f"{fresh_sandbox.url}/_sandbox/faults",
        json={"kind": "server_error", "status": 502, "times": 1},
    )
    assert created.status_code == 201
    bad = session.post(f"{fresh_sandbox.url}/_sandbox/faults", json={"kind": "meteor"})
    assert bad.status_code == 400 and "unknown fault kind" in bad.json()["error"]
    sf = fresh_sandbox.client()
    with pytest.raises(SalesforceGeneralError):
        sf.query("SELECT Id FROM User LIMIT 1")
    assert session.get(f"{fresh_sandbox.url}/_sandbox/faults").json()[0]["fired"] == 1
    assert session.delete(f"{fresh_sandbox.url}/_sandbox/faults").status_code == 204
