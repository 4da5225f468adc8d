"""Normalization of raw Salesforce records: every mapping branch, every exclusion reason, and a
fuzz test that no value, however odd, makes it raise."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.salesforce.config import SalesforceSource
from crm_kpi_worker.connectors.salesforce.normalize import salesforce_metadata
from crm_kpi_worker.sync.config import CurrencySettings
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.model import DealType, ForecastCategory, QuotaSource
from crm_kpi_worker.sync.normalize import (
    MISSING_ID,
    UNMAPPED_STAGE,
    CrmMetadata,
    Exclusion,
    NormalizeContext,
    Normalized,
    StageInfo,
    normalize,
)

DEMO = load_config(path_of("demo-salesforce.yaml"))
UTC = dt.UTC


def make_context(
    *,
    currency: CurrencySettings | None = None,
    metadata: CrmMetadata | None = None,
    teams: dict[str, list[str]] | None = None,
    **mapping_changes: Any,
) -> NormalizeContext:
    base = DEMO.sources[0]
    assert isinstance(base, SalesforceSource)
    mapping = base.mapping.model_validate({**base.mapping.model_dump(), **mapping_changes})
    return NormalizeContext(
        source=base.with_changes(mapping=mapping),
        currency=currency or DEMO.currency,
        teams=DEMO.teams if teams is None else teams,
        metadata=metadata or CrmMetadata(),
    )


CTX = make_context()
STATIC = CurrencySettings.model_validate(
    {"reporting": "EUR", "conversion": "static", "rates": {"USD": "1.08", "GBP": "0.85"}}
)


def history(*rows: tuple[str, str]) -> dict[str, Any]:
    return {
        "totalSize": len(rows),
        "done": True,
        "records": [{"StageName": stage, "CreatedDate": when} for stage, when in rows],
    }


def opportunity(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "Id": "006A00000000001AAA",
        "IsDeleted": False,
        "SystemModstamp": "2026-09-15T16:00:00.000+0000",
        "Name": "Acme - Platform",
        "Amount": 15000.0,
        "CloseDate": "2026-09-15",
        "CreatedDate": "2026-08-01T09:00:00.000+0000",
        "StageName": "Closed Won",
        "OwnerId": "005A00000000001AAA",
        "Type": "New Customer",
        "ForecastCategoryName": "Closed",
        "Probability": 100.0,
        "CurrencyIsoCode": "EUR",
        "AccountId": "001A00000000001AAA",
        "Account": {"Churn_Date__c": None},
        "ConvertedAmount": 15000.0,
        "OpportunityHistories": history(
            ("Prospecting", "2026-08-01T09:00:00.000+0000"),
            ("Demo", "2026-08-10T09:00:00.000+0000"),
            ("Closed Won", "2026-09-15T16:00:00.000+0000"),
        ),
        "Histories": None,
    }
    record.update(changes)
    return record


def deals(*records: dict[str, Any], context: NormalizeContext = CTX) -> Normalized:
    return normalize(context, "deals", list(records))


def reasons(result: Normalized) -> list[tuple[str, str]]:
    return [(e.reason, e.record_id) for e in result.exclusions]


# ---- deals: the clean path and every mapping branch -------------------------------------------


def test_a_clean_won_deal() -> None:
    result = deals(opportunity())
    (deal,) = result.deals
    assert result.exclusions == []
    assert deal.stage == "closed_won" and deal.is_won and deal.is_closed
    assert deal.amount == Decimal("15000.0") and deal.arr == Decimal("15000.00")
    assert deal.currency == "EUR" and deal.deal_type is DealType.NEW_BUSINESS
    assert deal.forecast_category is ForecastCategory.CLOSED
    assert deal.probability == Decimal("1.0")  # the mapping's stage probability
    assert deal.close_date == dt.date(2026, 9, 15)
    assert deal.created_at == dt.datetime(2026, 8, 1, 9, tzinfo=UTC)
    assert deal.owner_id == "005A00000000001AAA" and deal.account_id == "001A00000000001AAA"
    assert deal.source == "sandbox" and not deal.is_deleted


def test_lost_and_open_stages_come_from_the_mapping() -> None:
    lost, open_ = deals(
        opportunity(Id="006L", StageName="Closed Lost", ForecastCategoryName="Omitted"),
        opportunity(Id="006O", StageName="Negotiation", ForecastCategoryName=None),
    ).deals
    assert lost.is_closed and not lost.is_won and lost.stage == "closed_lost"
    assert not open_.is_closed and open_.stage == "negotiation"
    assert open_.forecast_category is ForecastCategory.COMMIT  # the stage's, none of its own
    assert open_.probability == Decimal("0.80")


def test_stage_history_collapses_repeats_and_keeps_unmapped_stages() -> None:
    record = opportunity(
        StageName="Demo",
        OpportunityHistories=history(
            ("Prospecting", "2026-08-01T09:00:00.000+0000"),
            ("Prospecting", "2026-08-02T09:00:00.000+0000"),  # an amount edit
            ("Legacy Stage", "2026-08-05T09:00:00.000+0000"),
            ("Demo", "2026-08-10T09:00:00.000+0000"),
            ("Demo", "not a date"),  # unreadable: dropped
        ),
    )
    result = deals(record)
    changes = result.stage_changes[record["Id"]]
    assert [(c.stage, c.entered_at.day) for c in changes] == [
        ("prospecting", 1),
        (UNMAPPED_STAGE, 5),
        ("demo", 10),
    ]
    assert result.exclusions == []  # a past unmapped stage does not exclude the deal


def test_close_date_history_becomes_field_changes() -> None:
    record = opportunity(
        Histories={
            "done": True,
            "records": [
                {
                    "Field": "CloseDate",
                    "OldValue": "2026-08-31",
                    "NewValue": "2026-09-15",
                    "CreatedDate": "2026-08-20T10:00:00.000+0000",
                },
                {
                    "Field": "CloseDate",
                    "OldValue": "2026-09-30",
                    "NewValue": "2026-08-31",
                    "CreatedDate": "2026-08-10T10:00:00.000+0000",
                },
                {"Field": "Amount", "OldValue": 1, "NewValue": 2, "CreatedDate": "2026-08-11"},
            ],
        }
    )
    changes = deals(record).field_changes[record["Id"]]
    assert [(c.field, c.old_value, c.new_value, c.is_slip) for c in changes] == [
        ("close_date", dt.date(2026, 9, 30), dt.date(2026, 8, 31), False),
        ("close_date", dt.date(2026, 8, 31), dt.date(2026, 9, 15), True),
    ]


def test_a_custom_stage_field_reads_its_history_from_field_history() -> None:
    context = make_context(stage="Sales_Stage__c")
    record = opportunity(
        Sales_Stage__c="Proposal",
        Histories={
            "records": [
                {
                    "Field": "Sales_Stage__c",
                    "OldValue": "Demo",
                    "NewValue": "Proposal",
                    "CreatedDate": "2026-08-20T10:00:00.000+0000",
                }
            ]
        },
    )
    result = deals(record, context=context)
    assert result.deals[0].stage == "proposal"
    assert [c.stage for c in result.stage_changes[record["Id"]]] == ["proposal"]


@pytest.mark.parametrize(
    ("amount_is", "term", "arr"),
    [
        ("arr", None, "15000.00"),
        ("mrr", None, "180000.00"),
        ("tcv", 24, "7500.00"),
        ("tcv", 36, "5000.00"),
        ("tcv", None, "15000.00"),  # no term: 12 months
    ],
)
def test_arr_per_amount_is(amount_is: str, term: int | None, arr: str) -> None:
    context = make_context(amount_is=amount_is, term_months="Contract_Term_Months__c")
    (deal,) = deals(opportunity(Contract_Term_Months__c=term), context=context).deals
    assert deal.arr == Decimal(arr)
    assert deal.term_months == term


def test_an_unusable_term_excludes_a_tcv_deal_only() -> None:
    tcv = make_context(amount_is="tcv", term_months="Contract_Term_Months__c")
    result = deals(opportunity(Contract_Term_Months__c=0), context=tcv)
    assert result.deals[0].arr is None
    assert [(e.reason, "Contract_Term_Months__c" in e.detail) for e in result.exclusions] == [
        ("invalid_value", True)
    ]
    arr = make_context(term_months="Contract_Term_Months__c")
    result = deals(opportunity(Contract_Term_Months__c="twelve"), context=arr)
    assert result.deals[0].arr == Decimal("15000.00") and result.exclusions == []


def test_crm_conversion_uses_the_converted_amount() -> None:
    (deal,) = deals(
        opportunity(Amount=21600.0, CurrencyIsoCode="USD", ConvertedAmount=20000.0)
    ).deals
    assert deal.amount == Decimal("21600.0") and deal.currency == "USD"
    assert deal.arr == Decimal("20000.00")


def test_crm_conversion_without_a_converted_column_uses_the_crm_rates() -> None:
    metadata = CrmMetadata(
        rates={"EUR": Decimal(1), "GBP": Decimal("0.85")}, corporate_currency="EUR"
    )
    record = opportunity(Amount=10200.0, CurrencyIsoCode="GBP")
    del record["ConvertedAmount"]
    (deal,) = deals(record, context=make_context(metadata=metadata)).deals
    assert deal.arr == Decimal("12000.00")


def test_static_conversion_uses_the_config_rates() -> None:
    context = make_context(currency=STATIC)
    record = opportunity(Amount=21600.0, CurrencyIsoCode="USD")
    del record["ConvertedAmount"]
    (deal,) = deals(record, context=context).deals
    assert deal.arr == Decimal("20000.00")


@pytest.mark.parametrize("static", [False, True])
def test_an_unconvertible_currency_is_excluded_but_stored(static: bool) -> None:
    record = opportunity(Amount=18000.0, CurrencyIsoCode="CHF", ConvertedAmount=None)
    if static:
        del record["ConvertedAmount"]
    result = deals(record, context=make_context(currency=STATIC) if static else CTX)
    assert result.deals[0].arr is None and result.deals[0].amount == Decimal("18000.0")
    assert reasons(result) == [("unconvertible_currency", record["Id"])]
    assert "CHF" in result.exclusions[0].detail


def test_no_amount_no_close_date_and_unknown_stage_are_each_reported() -> None:
    record = opportunity(Amount=None, CloseDate=None, StageName="Legacy Stage", Probability=0.0)
    result = deals(record)
    assert sorted(e.reason for e in result.exclusions) == [
        "no_amount",
        "no_close_date",
        "unknown_stage",
    ]
    (deal,) = result.deals
    assert deal.stage == UNMAPPED_STAGE and not deal.is_closed and not deal.is_won
    assert deal.amount is None and deal.arr is None and deal.close_date is None
    assert deal.probability == Decimal(0)  # the CRM's, as the stage is unknown
    assert "'Legacy Stage'" in next(
        e.detail for e in result.exclusions if e.reason == "unknown_stage"
    )


def test_deal_types_and_forecast_categories_map_with_defaults() -> None:
    a, b, c = deals(
        opportunity(Id="006a", Type="Existing Customer - Upgrade", ForecastCategoryName="Commit"),
        opportunity(Id="006b", Type="Something New", ForecastCategoryName="Weird"),
        opportunity(Id="006c", Type=None, ForecastCategoryName=None, StageName="Closed Lost"),
    ).deals
    assert a.deal_type is DealType.EXPANSION and a.forecast_category is ForecastCategory.COMMIT
    assert b.deal_type is DealType.OTHER and b.forecast_category is ForecastCategory.PIPELINE
    assert c.deal_type is DealType.OTHER and c.forecast_category is ForecastCategory.OMITTED


def test_probability_from_the_crm_and_from_stage_metadata() -> None:
    no_probability = make_context(
        stages=[
            {"crm": "Open", "stage": "open", "order": 1},
            {"crm": "Won", "stage": "won", "order": 2, "won": True},
            {"crm": "Lost", "stage": "lost", "order": 3, "lost": True},
        ],
        qualified_stage="open",
        conversion_entry_stage="open",
        metadata=salesforce_metadata(
            [{"ApiName": "Open", "MasterLabel": "Open", "DefaultProbability": 30.0}]
        ),
    )
    crm, default, bad = deals(
        opportunity(Id="006a", StageName="Open", Probability=45.0),
        opportunity(Id="006b", StageName="Open", Probability=None),
        opportunity(Id="006c", StageName="Open", Probability=250),
        context=no_probability,
    ).deals
    assert crm.probability == Decimal("0.45") and default.probability == Decimal("0.3")
    assert bad.probability is None
    result = deals(
        opportunity(Id="006c", StageName="Open", Probability=250), context=no_probability
    )
    assert reasons(result) == [("invalid_value", "006c")]


def test_bad_values_are_invalid_value_with_the_field() -> None:
    result = deals(
        opportunity(Id="006a", Amount=-5),
        opportunity(Id="006b", Amount="lots"),
        opportunity(Id="006c", CloseDate="31/12/2026"),
        opportunity(Id="006d", CurrencyIsoCode="euro"),
        opportunity(Id="006e", Amount="1200.50", ConvertedAmount="1200.50"),  # text numbers
    )
    details = {e.record_id: e.detail for e in result.exclusions}
    assert set(details) == {"006a", "006b", "006c", "006d"}
    assert all(e.reason == "invalid_value" for e in result.exclusions)
    assert "Amount" in details["006a"] and "CloseDate" in details["006c"]
    assert "CurrencyIsoCode" in details["006d"]
    assert {d.id: d.arr for d in result.deals}["006e"] == Decimal("1200.50")
    assert len(result.deals) == 5  # stored as far as possible


def test_a_record_without_id_or_creation_is_not_stored() -> None:
    result = deals(opportunity(Id=None), opportunity(Id="006b", CreatedDate=None), "junk")  # type: ignore[arg-type]
    assert result.deals == []
    assert [(e.record_id, e.reason) for e in result.exclusions] == [
        (MISSING_ID, "invalid_value"),
        ("006b", "invalid_value"),
        (MISSING_ID, "invalid_value"),
    ]
    assert "CreatedDate" in result.exclusions[1].detail


def test_a_deleted_deal_is_stored_deleted_and_never_reported() -> None:
    result = deals(opportunity(IsDeleted=True, Amount=None, CloseDate=None))
    assert result.deals[0].is_deleted
    assert result.deleted == {"deal": ["006A00000000001AAA"]}
    assert result.exclusions == []


def test_an_unknown_owner_is_not_an_exclusion() -> None:
    result = deals(opportunity(OwnerId=None))
    assert result.deals[0].owner_id is None and result.exclusions == []


# ---- reps, accounts, activities, quotas ------------------------------------------------------


def user(**changes: Any) -> dict[str, Any]:
    record = {
        "Id": "005A",
        "Name": "Alice Martin",
        "Email": "Alice.Martin@Sandbox.Local",
        "IsActive": True,
        "ManagerId": "005M",
        "Department": "Nord",
        "SystemModstamp": "2026-01-01T00:00:00.000+0000",
    }
    record.update(changes)
    return record


def test_reps_email_lower_case_and_team_from_the_config() -> None:
    (rep,) = normalize(CTX, "users", [user()]).reps
    assert rep.email == "alice.martin@sandbox.local"
    assert rep.team == "France Nord" and rep.is_ae and rep.manager_id == "005M"
    (other,) = normalize(CTX, "users", [user(Id="005X", Email="ops@sandbox.local")]).reps
    assert other.team is None and not other.is_ae  # teams are listed: others are not AEs


def test_reps_team_from_a_team_field_and_ae_filter() -> None:
    context = make_context(
        teams={},
        team_field="Department",
        ae_filter={"field": "Title", "values": ["Account Executive"]},
    )
    ae, manager = normalize(
        context,
        "users",
        [user(Title="Account Executive"), user(Id="005M", Title="Manager", Department=None)],
    ).reps
    assert ae.team == "Nord" and ae.is_ae
    assert manager.team is None and not manager.is_ae


def test_reps_start_date_and_bad_emails() -> None:
    context = NormalizeContext(
        source=CTX.source, currency=CTX.currency, rep_start_date_field="Sales_Start_Date__c"
    )
    result = normalize(
        context,
        "users",
        [
            user(Sales_Start_Date__c="2025-01-06"),
            user(Id="005B", Email=None),
            user(Id="005C", Email="not an email"),
        ],
    )
    assert [r.start_date for r in result.reps] == [dt.date(2025, 1, 6)]
    assert [(e.record_type, e.record_id, e.reason) for e in result.exclusions] == [
        ("rep", "005B", "invalid_value"),
        ("rep", "005C", "invalid_value"),
    ]


def test_accounts_with_churn_dates_and_deletions() -> None:
    result = normalize(
        CTX,
        "accounts",
        [
            {"Id": "001A", "Name": "Acme", "Churn_Date__c": "2026-07-01", "IsDeleted": False},
            {"Id": "001B", "Name": "Gone", "Churn_Date__c": "2026-07-01", "IsDeleted": True},
            {"Id": "001C", "Name": "Odd", "Churn_Date__c": "July", "IsDeleted": False},
        ],
    )
    assert [(a.id, a.churn_date) for a in result.accounts] == [
        ("001A", dt.date(2026, 7, 1)),
        ("001C", None),
    ]
    assert result.deleted == {"account": ["001B"]}
    assert [(e.record_id, e.reason) for e in result.exclusions] == [("001C", "invalid_value")]


def test_activities_demos_deals_and_deletions() -> None:
    result = normalize(
        CTX,
        "activities",
        [
            {
                "Id": "00UA",
                "OwnerId": "005A",
                "WhatId": "006A",
                "Type": "Demo",
                "StartDateTime": "2026-09-01T09:00:00.000+0000",
            },
            {
                "Id": "00UB",
                "OwnerId": "005A",
                "WhatId": "001A",  # an account, not a deal
                "Type": "Call",
                "StartDateTime": "2026-09-01T10:00:00.000+0000",
            },
            {"Id": "00UC", "IsDeleted": True},
            {"Id": "00UD", "Type": "Demo", "StartDateTime": None},
        ],
    )
    demo, call = result.activities
    assert (demo.kind, demo.deal_id, demo.owner_id) == ("demo", "006A", "005A")
    assert (call.kind, call.deal_id) == ("other", None)
    assert demo.start == dt.datetime(2026, 9, 1, 9, tzinfo=UTC)
    assert result.deleted == {"activity": ["00UC"]}
    assert [(e.record_id, e.reason) for e in result.exclusions] == [("00UD", "invalid_value")]
    assert normalize(make_context(demos=None), "activities", [{"Id": "00UA"}]).activities == []


def quota(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "Id": "0J9A",
        "QuotaOwnerId": "005A",
        "QuotaAmount": 120000.0,
        "ConvertedQuotaAmount": 120000.0,
        "StartDate": "2026-07-01",
        "Period": {"Type": "Quarter", "EndDate": "2026-09-30"},
        "CurrencyIsoCode": "EUR",
    }
    record.update(changes)
    return record


def test_quotas_period_end_and_amounts() -> None:
    result = normalize(
        CTX,
        "quotas",
        [
            quota(),
            quota(Id="0J9B", Period={"Type": "Month", "EndDate": None}),
            quota(Id="0J9C", Period=None),  # the default quarter
            quota(
                Id="0J9D", QuotaAmount=10800.0, CurrencyIsoCode="USD", ConvertedQuotaAmount=10000.0
            ),
        ],
    )
    assert [(q.period_start, q.period_end, q.amount) for q in result.quotas] == [
        (dt.date(2026, 7, 1), dt.date(2026, 9, 30), Decimal("120000.00")),
        (dt.date(2026, 7, 1), dt.date(2026, 7, 31), Decimal("120000.00")),
        (dt.date(2026, 7, 1), dt.date(2026, 9, 30), Decimal("120000.00")),
        (dt.date(2026, 7, 1), dt.date(2026, 9, 30), Decimal("10000.00")),
    ]
    assert all(q.source is QuotaSource.CRM and q.rep_id == "005A" for q in result.quotas)


def test_quotas_without_amount_or_rate_are_excluded() -> None:
    static = make_context(currency=STATIC)
    records = [
        quota(Id="0J9A", QuotaAmount=None),
        quota(Id="0J9B", CurrencyIsoCode="CHF"),
        quota(Id="0J9C", StartDate=None),
    ]
    for record in records:
        record.pop("ConvertedQuotaAmount")
    result = normalize(static, "quotas", records)
    assert result.quotas == []
    assert [(e.record_type, e.record_id, e.reason) for e in result.exclusions] == [
        ("quota", "0J9A", "no_amount"),
        ("quota", "0J9B", "unconvertible_currency"),
        ("quota", "0J9C", "invalid_value"),
    ]


# ---- metadata -------------------------------------------------------------------------------


def test_salesforce_metadata_and_its_json_round_trip() -> None:
    metadata = salesforce_metadata(
        [
            {
                "ApiName": "Demo",
                "MasterLabel": "Demo",
                "IsActive": True,
                "IsClosed": False,
                "IsWon": False,
                "DefaultProbability": 40.0,
                "ForecastCategoryName": "Pipeline",
                "SortOrder": 3,
            },
            {"ApiName": 5},  # unreadable: skipped
        ],
        [
            {"IsoCode": "EUR", "ConversionRate": 1.0, "IsCorporate": True, "IsActive": True},
            {"IsoCode": "USD", "ConversionRate": 1.08, "IsCorporate": False, "IsActive": True},
            {"IsoCode": "JPY", "ConversionRate": 160.0, "IsCorporate": False, "IsActive": False},
        ],
    )
    assert metadata.stages["Demo"] == StageInfo(
        "Demo", True, False, False, Decimal("0.4"), "Pipeline", 3
    )
    assert metadata.rates == {"EUR": Decimal("1.0"), "USD": Decimal("1.08")}
    assert metadata.corporate_currency == "EUR"
    assert CrmMetadata.from_json(metadata.to_json()) == metadata


def test_stages_and_currencies_pages_carry_no_records() -> None:
    assert normalize(CTX, "stages", [{"Id": "01J"}]) == Normalized()
    assert normalize(CTX, "currencies", [{"Id": "02B"}]) == Normalized()
    with pytest.raises(ValueError, match="unknown stream"):
        normalize(CTX, "opportunities", [])


# ---- fuzz -----------------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "2026-09-15",
            "2026-09-15T10:00:00.000+0000",
            "2026-13-45",
            "0001-01-01T00:00:00-2359",
            "9999-12-31T23:59:59+2359",
            "Closed Won",
            "Legacy Stage",
            "Demo",
            "EUR",
            "CHF",
            "1e400",
            "-0",
            "NaN",
            "006A",
            "a@b",
        ]
    ),
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=8,
)
FIELDS = [
    "Id",
    "IsDeleted",
    "SystemModstamp",
    "Name",
    "Amount",
    "CloseDate",
    "CreatedDate",
    "StageName",
    "OwnerId",
    "Type",
    "ForecastCategoryName",
    "Probability",
    "CurrencyIsoCode",
    "AccountId",
    "Account",
    "ConvertedAmount",
    "OpportunityHistories",
    "Histories",
    "Email",
    "IsActive",
    "ManagerId",
    "Churn_Date__c",
    "WhatId",
    "StartDateTime",
    "QuotaOwnerId",
    "QuotaAmount",
    "ConvertedQuotaAmount",
    "StartDate",
    "Period",
    "Contract_Term_Months__c",
]
RECORDS = st.lists(
    st.one_of(
        st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=len(FIELDS)),
        st.builds(
            lambda base, extra: {**base, **extra},
            st.sampled_from([opportunity(), user(), quota()]),
            st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4),
        ),
        JSON,
    ),
    max_size=4,
)
CONTEXTS = [
    CTX,
    make_context(currency=STATIC, amount_is="tcv", term_months="Contract_Term_Months__c"),
    make_context(amount_is="mrr", teams={}, team_field="Department"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.sampled_from(["deals", "users", "accounts", "activities", "quotas", "stages"]),
    records=RECORDS,
    context=st.sampled_from(CONTEXTS),
)
def test_no_record_makes_normalization_raise(
    stream: str, records: list[Any], context: NormalizeContext
) -> None:
    result = normalize(context, stream, records)
    assert all(isinstance(e, Exclusion) and e.reason and e.record_type for e in result.exclusions)
    stored = (
        len(result.deals)
        + len(result.reps)
        + len(result.accounts)
        + len(result.activities)
        + len(result.quotas)
    )
    assert stored <= len(records)


@settings(max_examples=100, deadline=None)
@given(stages=st.lists(JSON, max_size=4), currencies=st.lists(JSON, max_size=4))
def test_no_metadata_record_makes_the_builder_raise(
    stages: list[Any], currencies: list[Any]
) -> None:
    salesforce_metadata(stages, currencies)


# ---- the compiled fast path equals the plain one ---------------------------------------------


@settings(max_examples=200, deadline=None)
@given(record=st.dictionaries(st.sampled_from([*FIELDS, "id", "ID", "amount"]), JSON, max_size=6))
def test_compiled_field_readers_read_what_lookup_reads(record: dict[str, Any]) -> None:
    from crm_kpi_worker.connectors.salesforce.normalize import (
        field_reader,
        has_key,
        key_tester,
        lookup,
    )

    for path in ("Id", "id", "Amount", "Account.Churn_Date__c", "Period.Type", None):
        assert field_reader(path)(record) == lookup(record, path)
    for name in ("Id", "ConvertedAmount", "amount"):
        assert key_tester(name)(record) == has_key(record, name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.sampled_from(["deals", "activities"]),
    records=RECORDS,
    context=st.sampled_from(CONTEXTS),
)
def test_records_built_without_validation_equal_validated_ones(
    stream: str, records: list[Any], context: NormalizeContext
) -> None:
    from unittest import mock

    from crm_kpi_worker.connectors.salesforce import normalize as sf
    from crm_kpi_worker.sync.model import Activity, Deal, StageChange

    fast = normalize(context, stream, records)
    with (
        mock.patch.object(sf, "_deal", Deal),
        mock.patch.object(sf, "_activity", Activity),
        mock.patch.object(sf, "_stage_change", StageChange.model_construct),
    ):
        slow = normalize(context, stream, records)
    assert fast == slow
    for mine, theirs in zip(
        fast.deals + fast.activities, slow.deals + slow.activities, strict=True
    ):
        assert mine.__dict__ == theirs.__dict__
        assert list(mine.__dict__) == list(theirs.__dict__)
        assert mine.model_fields_set == theirs.model_fields_set


def test_the_patched_fast_constructors_are_the_ones_normalization_uses() -> None:
    """The comparison above patches ``_deal`` and ``_stage_change``: it can only fail if a
    plain record really goes through them."""
    from unittest import mock

    from crm_kpi_worker.connectors.salesforce import normalize as sf
    from crm_kpi_worker.sync.model import Deal, StageChange

    with (
        mock.patch.object(sf, "_deal", side_effect=Deal) as deal,
        mock.patch.object(sf, "_stage_change", side_effect=StageChange) as change,
    ):
        result = deals(opportunity())
    assert [d.id for d in result.deals] == ["006A00000000001AAA"]
    assert deal.call_count == 1 and change.call_count == 3


def test_odd_ids_and_currencies_still_meet_the_model_checks() -> None:
    # Values outside the plain form are validated as ever: kept when the model accepts them,
    # excluded with the model's message when it does not.
    result = deals(
        opportunity(Id="006-odd id", OwnerId="005 Ü"),
        opportunity(Id="006B", OwnerId=" "),
        opportunity(Id="006C", AccountId="001" + "x" * 300),
        opportunity(Id="006D", CurrencyIsoCode="ÉÉÉ", ConvertedAmount=None),
    )
    assert [d.id for d in result.deals] == ["006-odd id"]
    assert result.deals[0].owner_id == "005 Ü"
    assert [(e.record_id, e.reason, e.detail.split(":")[0]) for e in result.exclusions] == [
        ("006B", "invalid_value", "owner_id"),
        ("006C", "invalid_value", "account_id"),
        ("006D", "invalid_value", "currency"),
    ]


def test_api_attributes_left_in_records_change_nothing() -> None:
    plain = opportunity()
    sent = opportunity(
        attributes={"type": "Opportunity", "url": "/services/data/v59.0/sobjects/Opportunity/x"},
        Account={"attributes": {"type": "Account"}, "Churn_Date__c": None},
    )
    for row in sent["OpportunityHistories"]["records"]:
        row["attributes"] = {"type": "OpportunityHistory"}
    assert deals(sent) == deals(plain)


# ---- the fast path cannot skip a validator silently ------------------------------------------

_CONSTRAINTS = (
    "pattern",
    "min_length",
    "max_length",
    "ge",
    "gt",
    "le",
    "lt",
    "multiple_of",
    "max_digits",
    "decimal_places",
    "allow_inf_nan",
)


def _rules(node: Any, where: str, out: set[str]) -> set[str]:
    """Every validator function and constraint of a pydantic core schema, by field."""
    if isinstance(node, list):
        for item in node:
            _rules(item, where, out)
    elif isinstance(node, dict):
        kind = node.get("type")
        if isinstance(kind, str) and kind.startswith("function-"):
            function = node["function"]["function"]
            out.add(f"{where}: {kind} {function.__name__}")
        if isinstance(kind, str):
            out.update(f"{where}: {key}={node[key]!r}" for key in _CONSTRAINTS if key in node)
        for key, value in node.items():
            if key == "fields" and isinstance(value, dict):
                for name, field in value.items():
                    _rules(field, name, out)
            elif key not in ("serialization", "metadata", "ref"):
                _rules(value, where, out)
    return out


#: Every rule of the records the Salesforce normalizer builds without validation, and what
#: makes the fast path honour it: its ``known_valid`` checks (ids, owner and account ids
#: plain, currency, arr, probability, term, won => closed, UTC instants), or values that are
#: valid by construction (the source name and stage keys come from the validated config;
#: amounts pass read_decimal and cents()). A rule added to the model shows up here first:
#: teach the fast path (or its ``known_valid``) about it, then add it to this list.
FAST_PATH_COVERS = {
    "Deal": [
        "Deal: function-after _check_invariants",
        "account_id: max_length=255",
        "account_id: min_length=1",
        "account_id: pattern='\\\\S'",
        "amount: allow_inf_nan=False",
        "amount: ge=0",
        "arr: allow_inf_nan=False",
        "arr: ge=0",
        "created_at: function-after _to_utc",
        "currency: pattern='^[A-Z]{3}$'",
        "id: max_length=255",
        "id: min_length=1",
        "id: pattern='\\\\S'",
        "last_modified: function-after _to_utc",
        "owner_id: max_length=255",
        "owner_id: min_length=1",
        "owner_id: pattern='\\\\S'",
        "probability: allow_inf_nan=False",
        "probability: ge=0",
        "probability: le=1",
        "source: pattern='^[a-z0-9][a-z0-9_-]{0,63}$'",
        "stage: pattern='^[a-z][a-z0-9_]{0,63}$'",
        "term_months: ge=1",
        "term_months: le=1200",
    ],
    "Activity": [
        "deal_id: max_length=255",
        "deal_id: min_length=1",
        "deal_id: pattern='\\\\S'",
        "id: max_length=255",
        "id: min_length=1",
        "id: pattern='\\\\S'",
        "kind: pattern='^[a-z][a-z0-9_]{0,63}$'",
        "owner_id: max_length=255",
        "owner_id: min_length=1",
        "owner_id: pattern='\\\\S'",
        "start: function-after _to_utc",
    ],
    "StageChange": [
        "deal_id: max_length=255",
        "deal_id: min_length=1",
        "deal_id: pattern='\\\\S'",
        "entered_at: function-after _to_utc",
        "stage: pattern='^[a-z][a-z0-9_]{0,63}$'",
    ],
}


def test_every_rule_of_the_fast_built_records_is_one_the_fast_path_covers() -> None:
    from crm_kpi_worker.sync.model import Activity, Deal, StageChange

    for model in (Deal, Activity, StageChange):
        found = sorted(_rules(model.__pydantic_core_schema__, model.__name__, set()))
        assert found == FAST_PATH_COVERS[model.__name__], (
            f"{model.__name__}'s validators changed: the Salesforce normalizer builds it"
            " without validation (connectors/salesforce/normalize.py, known_valid)"
        )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.sampled_from(["deals", "activities"]),
    records=RECORDS,
    context=st.sampled_from(CONTEXTS),
)
def test_records_built_without_validation_pass_every_validator(
    stream: str, records: list[Any], context: NormalizeContext
) -> None:
    """Whatever the model checks (every validator, enumerated by pydantic itself), the
    records the fast path built pass it and come out unchanged."""
    result = normalize(context, stream, records)
    changes = [c for cs in result.stage_changes.values() for c in cs]
    for record in [*result.deals, *result.activities, *changes]:
        assert type(record).model_validate(record.__dict__) == record
