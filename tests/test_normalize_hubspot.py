"""HubSpot records -> the canonical model: values, histories and every kind of bad data."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.hubspot.normalize import hubspot_metadata, read_hs_date
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.model import DealType, ForecastCategory
from crm_kpi_worker.sync.normalize import NormalizeContext, normalize

CONFIG = load_config(path_of("demo-hubspot.yaml"))
UTC = dt.UTC


def context() -> NormalizeContext:
    return NormalizeContext.for_source(CONFIG, "sandbox")


def deal(**properties: Any) -> dict[str, Any]:
    base = {
        "dealname": "Acme - Platform licence",
        "amount": "15000",
        "amount_in_home_currency": "15000",
        "deal_currency_code": "EUR",
        "closedate": "2026-09-15T00:00:00Z",
        "createdate": "2026-08-01T09:30:00.123Z",
        "hs_lastmodifieddate": "2026-09-16T10:00:00.000Z",
        "dealstage": "closedwon",
        "pipeline": "default",
        "dealtype": "newbusiness",
        "hs_forecast_category": "CLOSED",
        "hubspot_owner_id": "101",
        "hs_primary_associated_company": "501",
        "hs_v2_date_entered_appointmentscheduled": "2026-08-01T09:30:00.123Z",
        "hs_v2_date_entered_presentationscheduled": "2026-08-10T12:00:00.000Z",
        "hs_v2_date_entered_closedwon": "2026-09-15T08:00:00.000Z",
    }
    base.update(properties)
    return {"id": "9001", "properties": base, "archived": False}


def test_a_won_deal_with_its_stage_history() -> None:
    out = normalize(context(), "deals", [deal()])
    (d,) = out.deals
    assert (d.id, d.owner_id, d.account_id) == ("9001", "101", "501")
    assert d.close_date == dt.date(2026, 9, 15)
    assert d.created_at == dt.datetime(2026, 8, 1, 9, 30, 0, 123000, UTC)
    assert (d.stage, d.is_won, d.is_closed) == ("closed_won", True, True)
    assert d.arr == Decimal("15000.00") and d.currency == "EUR"
    assert d.deal_type is DealType.NEW_BUSINESS
    assert d.forecast_category is ForecastCategory.CLOSED
    assert d.probability == Decimal("1.0")  # the stage mapping's, before the CRM's
    assert [c.stage for c in out.stage_changes["9001"]] == ["prospecting", "demo", "closed_won"]
    assert out.field_changes["9001"] == [] and out.exclusions == []


def test_converted_amount_and_the_unconvertible_currency() -> None:
    out = normalize(
        context(),
        "deals",
        [
            deal(amount="10800", deal_currency_code="USD", amount_in_home_currency="10000"),
            {
                **deal(amount="5000", deal_currency_code="CHF", amount_in_home_currency=None),
                "id": "2",
            },
        ],
    )
    usd, chf = out.deals
    assert usd.arr == Decimal("10000.00") and usd.amount == Decimal("10800")
    assert chf.arr is None
    assert [(e.record_id, e.reason) for e in out.exclusions] == [("2", "unconvertible_currency")]


@pytest.mark.parametrize(
    ("properties", "reason", "detail"),
    [
        ({"amount": ""}, "no_amount", "the deal has no amount"),
        ({"amount": None}, "no_amount", "the deal has no amount"),
        ({"closedate": ""}, "no_close_date", "the deal has no close date"),
        ({"dealstage": "108765432"}, "unknown_stage", "stage '108765432' is not in the mapping"),
        ({"amount": "12k"}, "invalid_value", "amount: expected a number, got '12k'"),
        ({"amount": "-5"}, "invalid_value", "amount: a negative amount"),
        ({"closedate": "next week"}, "invalid_value", "closedate: expected a datetime"),
        ({"deal_currency_code": "euro"}, "invalid_value", "not a currency code: 'euro'"),
        (
            {"hs_deal_stage_probability": "40", "dealstage": "108765432"},
            "invalid_value",
            "not a fraction",
        ),
    ],
)
def test_bad_data_is_excluded_with_its_reason(
    properties: dict[str, Any], reason: str, detail: str
) -> None:
    out = normalize(context(), "deals", [deal(**properties)])
    assert len(out.deals) == 1  # stored as far as possible
    assert reason in {e.reason for e in out.exclusions}
    assert any(detail in e.detail for e in out.exclusions if e.reason == reason), out.exclusions


def test_a_deal_without_dates_or_id_cannot_be_stored() -> None:
    no_created = deal(createdate=None)
    no_created.pop("createdAt", None)
    out = normalize(context(), "deals", [no_created, {"properties": {}}, "junk"])
    assert out.deals == []
    assert [(e.record_id, e.reason) for e in out.exclusions] == [
        ("9001", "invalid_value"),
        ("(no id)", "invalid_value"),
        ("(no id)", "invalid_value"),
    ]
    # createdAt stands in for a missing createdate property.
    out = normalize(context(), "deals", [{**no_created, "createdAt": "2026-08-01T00:00:00Z"}])
    assert len(out.deals) == 1


def test_archived_deals_are_stored_deleted_without_exclusions() -> None:
    record = {**deal(amount=None), "archived": True, "archivedAt": "2026-09-20T00:00:00Z"}
    out = normalize(context(), "deals", [record])
    assert out.deals[0].is_deleted and out.deleted == {"deal": ["9001"]}
    assert out.exclusions == []


def test_close_date_history_counts_moves() -> None:
    record = deal()
    record["propertiesWithHistory"] = {
        "closedate": [  # newest first, as HubSpot sends it
            {"value": "2026-09-15T00:00:00Z", "timestamp": "2026-08-20T00:00:00Z"},
            {"value": "2026-08-31T00:00:00Z", "timestamp": "2026-08-05T00:00:00Z"},
            {"value": "2026-08-20T00:00:00Z", "timestamp": "2026-08-01T09:30:00.123Z"},
            {"value": "junk", "timestamp": "2026-08-02T00:00:00Z"},
        ]
    }
    changes = normalize(context(), "deals", [record]).field_changes["9001"]
    assert [(c.old_value, c.new_value) for c in changes] == [
        (dt.date(2026, 8, 20), dt.date(2026, 8, 31)),
        (dt.date(2026, 8, 31), dt.date(2026, 9, 15)),
    ]


def test_dates_midnight_utc_is_the_date_other_instants_in_the_fiscal_zone() -> None:
    assert read_hs_date("2026-09-30T00:00:00Z", "d", "Europe/Paris") == dt.date(2026, 9, 30)
    assert read_hs_date("2026-09-30T23:30:00Z", "d", "Europe/Paris") == dt.date(2026, 10, 1)
    assert read_hs_date("2026-09-30", "d", "UTC") == dt.date(2026, 9, 30)
    assert read_hs_date("1790726400000", "d", "UTC") == dt.date(2026, 9, 30)
    assert read_hs_date("", "d", "UTC") is None


def test_owners_goals_companies_meetings() -> None:
    ctx = context()
    owners = normalize(
        ctx,
        "users",
        [
            {
                "id": "101",
                "email": "Alice.Martin@sandbox.local",
                "firstName": "Alice",
                "lastName": "Martin",
                "teams": [{"id": "1", "name": "Ignored", "primary": True}],
            },
            {
                "id": "102",
                "email": "someone@else.example",
                "firstName": "Some",
                "lastName": "One",
                "archived": True,
                "teams": [{"id": "2", "name": "Other", "primary": False}],
            },
            {"id": "103"},
        ],
    )
    alice, other = owners.reps
    assert (alice.email, alice.team, alice.is_ae, alice.is_active) == (
        "alice.martin@sandbox.local",
        "France Nord",  # the config's teams win
        True,
        True,
    )
    assert (other.team, other.is_ae, other.is_active) == ("Other", False, False)
    assert [(e.record_id, e.reason) for e in owners.exclusions] == [("103", "invalid_value")]

    goals = normalize(
        ctx,
        "quotas",
        [
            {
                "id": "7",
                "properties": {
                    "hubspot_owner_id": "101",
                    "hs_target_amount": "120000",
                    "hs_start_datetime": "2026-07-01T00:00:00Z",
                    "hs_end_datetime": "2026-10-01T00:00:00Z",
                },
            },
            {"id": "8", "properties": {"hubspot_owner_id": "101"}},
        ],
    )
    (quota,) = goals.quotas
    assert (quota.rep_id, quota.period_start, quota.period_end, quota.amount) == (
        "101",
        dt.date(2026, 7, 1),
        dt.date(2026, 9, 30),
        Decimal("120000.00"),
    )
    assert [(e.record_id, e.reason) for e in goals.exclusions] == [("8", "invalid_value")]

    companies = normalize(
        ctx,
        "accounts",
        [
            {"id": "501", "properties": {"name": "Acme", "churn_date": "2026-10-01"}},
            {"id": "502", "properties": {"name": "Bad", "churn_date": "soon"}},
            {"id": "503", "archived": True},
        ],
    )
    assert [(a.id, a.churn_date) for a in companies.accounts] == [
        ("501", dt.date(2026, 10, 1)),
        ("502", None),
    ]
    assert companies.deleted == {"account": ["503"]}

    meetings = normalize(
        ctx,
        "activities",
        [
            {
                "id": "1",
                "properties": {
                    "hs_activity_type": "Demo",
                    "hubspot_owner_id": "101",
                    "hs_timestamp": "2026-09-01T10:00:00.000Z",
                },
            },
            {
                "id": "2",
                "properties": {"hs_activity_type": "Call", "hs_timestamp": "2026-09-01T10:00:00Z"},
            },
            {"id": "3", "properties": {"hs_activity_type": "Demo"}},
        ],
    )
    assert [(a.id, a.kind) for a in meetings.activities] == [("1", "demo"), ("2", "other")]
    assert [(e.record_id, e.reason) for e in meetings.exclusions] == [("3", "invalid_value")]


def test_pipeline_stages_become_metadata() -> None:
    metadata = hubspot_metadata(
        [
            {
                "id": "closedwon",
                "displayOrder": 5,
                "metadata": {"probability": "1.0", "isClosed": "true"},
            },
            {
                "id": "closedlost",
                "displayOrder": 6,
                "metadata": {"probability": "0.0", "isClosed": "true"},
            },
            {"id": "qualifiedtobuy", "displayOrder": 1, "metadata": {"probability": "0.4"}},
            {"id": "broken", "metadata": {"probability": "lots"}},
            "junk",
        ]
    )
    won, lost, qualified, broken = (
        metadata.stages[k] for k in ("closedwon", "closedlost", "qualifiedtobuy", "broken")
    )
    assert (won.is_closed, won.is_won, lost.is_won, lost.is_closed) == (True, True, False, True)
    assert qualified.default_probability == Decimal("0.4") and not qualified.is_closed
    assert broken.default_probability is None
