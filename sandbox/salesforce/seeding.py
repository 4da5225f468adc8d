"""Seeding: the generated data set rendered as the org's sObjects: here users, currencies,
stages and periods; the deal records (accounts, opportunities with their formulas, histories,
events, quotas) in ``deal_records``.

Columns are built from the data set's arrays without a Python loop per record; names derived
from other columns (an Opportunity's Name) are computed only for the rows asked for.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import numpy as np

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.salesforce.catalog import (
    ADMIN_USERNAME,
    FORECAST_API_VALUES,
    SF_STAGES,
    picklist_of,
)
from crm_kpi_worker.sandbox.salesforce.deal_records import seed_deal_records
from crm_kpi_worker.sandbox.salesforce.permissions import seed_permissions
from crm_kpi_worker.sandbox.salesforce.store import (
    NULL_DAY,
    BoolColumn,
    ChildRelationship,
    DateColumn,
    FieldDef,
    NumberColumn,
    SObjectDef,
    StringColumn,
)

if TYPE_CHECKING:
    from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg


def seed_org(org: SandboxOrg) -> None:
    """Every table of the org from its data set, parents before the children referring to them."""
    _build_users(org)
    _build_currency_types(org)
    _build_stages(org)
    _build_periods(org)
    seed_deal_records(org)
    opportunity = org.tables["opportunity"].sobject
    for rel in (
        ChildRelationship("OpportunityHistories", "OpportunityHistory", "OpportunityId"),
        ChildRelationship("Histories", "OpportunityFieldHistory", "OpportunityId"),
        ChildRelationship("Events", "Event", "WhatId"),
    ):
        opportunity.children[rel.name.lower()] = rel
    account = org.tables["account"].sobject
    account.children["opportunities"] = ChildRelationship(
        "Opportunities", "Opportunity", "AccountId"
    )
    user = org.tables["user"].sobject
    user.children["forecastingquotas"] = ChildRelationship(
        "ForecastingQuotas", "ForecastingQuota", "QuotaOwnerId"
    )
    seed_permissions(org)


def _build_users(org: SandboxOrg) -> None:
    users = org.data.users
    n = len(users) + 1  # + the API user the sandbox credentials log in as
    sobject = SObjectDef("User", "User", "Users", "005", createable=False, layoutable=True)
    table = org.new_table(sobject, n)
    first = [*users.first_name, "Sandbox"]
    last = [*users.last_name, "Admin"]
    emails = [*users.email, ADMIN_USERNAME]
    ro: dict[str, Any] = dict(createable=False, updateable=False)
    # FirstName and LastName are the components of the compound Name.
    name: dict[str, Any] = dict(compound_field_name="Name", extra_type_info="personname")
    table.add(
        StringColumn.from_values(
            FieldDef("Username", "string", "Username", nillable=False, length=80, **ro), emails
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("FirstName", "string", "First Name", length=40, **name), first
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("LastName", "string", "Last Name", nillable=False, length=80, **name), last
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef(
                "Name",
                "string",
                "Full Name",
                nillable=False,
                length=121,
                name_field=True,
                extra_type_info="personname",
                **ro,
            ),
            [f"{f} {la}" for f, la in zip(first, last, strict=True)],
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("Email", "email", "Email", nillable=False, length=128), emails
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("Title", "string", "Title", length=80),
            [*users.title, "System Administrator"],
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("Department", "string", "Department", length=80), [*users.team, None]
        )
    )
    table.add(
        BoolColumn(
            FieldDef("IsActive", "boolean", "Active", nillable=False),
            np.append(users.is_active, True),
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("UserType", "picklist", "User Type", **ro), ["Standard"] * n
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("TimeZoneSidKey", "picklist", "Time Zone", nillable=False),
            ["Europe/Paris"] * n,
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("LanguageLocaleKey", "picklist", "Language", nillable=False), ["fr"] * n
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef(
                "DefaultCurrencyIsoCode",
                "picklist",
                "User Currency",
                nillable=False,
                picklist=picklist_of(org.data.currencies),
            ),
            [org.data.reporting_currency] * n,
        )
    )
    table.add(
        DateColumn(
            FieldDef(
                "Sales_Start_Date__c",
                "date",
                "Sales Start Date",
                custom=True,
                help_text="First day the user carried a quota (ramp proration).",
            ),
            np.append(users.start_day, NULL_DAY).astype(np.int32),
        )
    )
    org.add_reference(table, "ManagerId", "User", "Manager", np.append(users.manager, -1))
    created = np.append(users.created_at, users.created_at.min(initial=0))
    org.add_audit_fields(table, created, created.copy(), by=n - 1)


def _build_currency_types(org: SandboxOrg) -> None:
    rates = org.data.fx_rates
    codes = [c for c in org.data.currencies if c in rates]
    table = org.new_table(
        SObjectDef("CurrencyType", "Currency Type", "Currency Types", "02B"), len(codes)
    )
    table.add(
        StringColumn.from_values(
            FieldDef(
                "IsoCode",
                "picklist",
                "Currency ISO Code",
                nillable=False,
                picklist=picklist_of(codes),
            ),
            codes,
        )
    )
    table.add(
        NumberColumn(
            FieldDef("ConversionRate", "double", "Conversion Rate", precision=18, scale=6),
            [rates[c] for c in codes],
        )
    )
    table.add(NumberColumn(FieldDef("DecimalPlaces", "int", "Decimal Places"), [2.0] * len(codes)))
    table.add(
        BoolColumn(FieldDef("IsActive", "boolean", "Active", nillable=False), [True] * len(codes))
    )
    table.add(
        BoolColumn(
            FieldDef("IsCorporate", "boolean", "Corporate", nillable=False),
            [c == org.data.reporting_currency for c in codes],
        )
    )
    stamp = np.full(len(codes), int(org.data.users.created_at.min(initial=0)), dtype=np.int64)
    org.add_audit_fields(table, stamp, stamp.copy(), by=org.admin_row)


def _build_stages(org: SandboxOrg) -> None:
    stages = list(SF_STAGES.values())
    table = org.new_table(
        SObjectDef(
            "OpportunityStage",
            "Opportunity Stage",
            "Opportunity Stages",
            "01J",
            createable=False,
            updateable=False,
        ),
        len(stages),
    )
    ro = dict(createable=False, updateable=False)
    table.add(
        StringColumn.from_values(
            FieldDef("MasterLabel", "string", "Master Label", **ro), [s[0] for s in stages]
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("ApiName", "string", "API Name", **ro), [s[0] for s in stages]
        )
    )
    table.add(
        BoolColumn(FieldDef("IsActive", "boolean", "Is Active", **ro), [s[5] for s in stages])
    )
    table.add(BoolColumn(FieldDef("IsClosed", "boolean", "Closed", **ro), [s[3] for s in stages]))
    table.add(BoolColumn(FieldDef("IsWon", "boolean", "Won", **ro), [s[4] for s in stages]))
    table.add(
        NumberColumn(
            FieldDef("DefaultProbability", "percent", "Probability (%)", **ro),
            [s[1] for s in stages],
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("ForecastCategoryName", "picklist", "Forecast Category", **ro),
            [s[2] for s in stages],
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("ForecastCategory", "picklist", "Forecast Type", **ro),
            [FORECAST_API_VALUES[s[2]] for s in stages],
        )
    )
    table.add(
        NumberColumn(
            FieldDef("SortOrder", "int", "Sort Order", **ro),
            np.arange(len(stages), dtype=float) + 1,
        )
    )
    stamp = np.full(len(stages), int(org.data.users.created_at.min(initial=0)), dtype=np.int64)
    org.add_audit_fields(table, stamp, stamp.copy(), by=org.admin_row)
    org.stage_by_name = {s[0].casefold(): s for s in stages}


def _build_periods(org: SandboxOrg) -> None:
    """Fiscal periods (calendar fiscal year) covering every quota and close date."""
    first_days = [
        int(org.data.quotas.period_start.min(initial=ds.date_to_day(org.data.reference_date)))
    ]
    closes = org.data.deals.close_day[org.data.deals.close_day != NULL_DAY]
    if len(closes):
        first_days += [int(closes.min()), int(closes.max())]
    first_year = ds.day_to_date(min(first_days)).year  # type: ignore[union-attr]
    last_year = max(ds.day_to_date(max(first_days)).year, org.data.reference_date.year + 1)  # type: ignore[union-attr]
    rows: list[tuple[str, dt.date, dt.date, int, str]] = []
    for year in range(first_year, last_year + 1):
        rows.append(("Year", dt.date(year, 1, 1), dt.date(year, 12, 31), 1, f"FY{year}"))
        for quarter in range(4):
            start = dt.date(year, quarter * 3 + 1, 1)
            end = ds.add_months(start, 3) - dt.timedelta(days=1)
            rows.append(("Quarter", start, end, quarter + 1, f"Q{quarter + 1} FY{year}"))
        for month in range(12):
            start = dt.date(year, month + 1, 1)
            end = ds.add_months(start, 1) - dt.timedelta(days=1)
            rows.append(("Month", start, end, month + 1, f"{start:%B} FY{year}"))
    table = org.new_table(
        SObjectDef("Period", "Period", "Periods", "026", createable=False, updateable=False),
        len(rows),
    )
    ro = dict(createable=False, updateable=False)
    table.add(
        StringColumn.from_values(
            FieldDef(
                "Type",
                "picklist",
                "Type",
                picklist=picklist_of(["Month", "Quarter", "Year"]),
                **ro,
            ),
            [r[0] for r in rows],
        )
    )
    table.add(
        DateColumn(
            FieldDef("StartDate", "date", "Start Date", **ro),
            [ds.date_to_day(r[1]) for r in rows],
        )
    )
    table.add(
        DateColumn(
            FieldDef("EndDate", "date", "End Date", **ro), [ds.date_to_day(r[2]) for r in rows]
        )
    )
    table.add(NumberColumn(FieldDef("Number", "int", "Number", **ro), [float(r[3]) for r in rows]))
    table.add(
        StringColumn.from_values(
            FieldDef("FullyQualifiedLabel", "string", "Label", **ro), [r[4] for r in rows]
        )
    )
    table.add(
        BoolColumn(
            FieldDef("IsForecastPeriod", "boolean", "Forecast Period", **ro),
            [r[0] == "Quarter" for r in rows],
        )
    )
    stamp = np.full(len(rows), int(org.data.users.created_at.min(initial=0)), dtype=np.int64)
    org.add_audit_fields(table, stamp, stamp.copy(), by=org.admin_row)
    org.quarter_period = {ds.date_to_day(r[1]): i for i, r in enumerate(rows) if r[0] == "Quarter"}
    org.period_by_start = {(r[0], ds.date_to_day(r[1])): i for i, r in enumerate(rows)}
