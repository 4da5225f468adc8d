"""Seeding of the deal records: accounts, opportunities with their formulas, their histories,
events and quotas, rendered from the data set's arrays (see ``seeding``).

Columns are built from the data set's arrays without a Python loop per record; names derived
from other columns (an Opportunity's Name) are computed only for the rows asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.columns import grown
from crm_kpi_worker.sandbox.salesforce.catalog import (
    EVENT_TYPES,
    EXTRA_EVENT_TYPES,
    EXTRA_TYPES,
    FORECAST_API_VALUES,
    SF_FORECAST_NAMES,
    SF_STAGES,
    SF_TYPES,
    picklist_of,
)
from crm_kpi_worker.sandbox.salesforce.ids import case_safe_suffix
from crm_kpi_worker.sandbox.salesforce.store import (
    NULL_DAY,
    NULL_MS,
    BoolColumn,
    ComputedColumn,
    DateColumn,
    DateTimeColumn,
    FieldDef,
    NumberColumn,
    PolymorphicReferenceColumn,
    ReferenceColumn,
    SObjectDef,
    StringColumn,
    Table,
    days_to_json,
    ms_to_json,
)

if TYPE_CHECKING:
    from crm_kpi_worker.sandbox.salesforce.org import SandboxOrg

_NO_STAGE = (0, 0, 0, False, False)  # an unknown stage name: neither closed nor won
_PERIOD_TYPES = {1: "Month", 3: "Quarter", 12: "Year"}  # period length in months -> Type


def seed_deal_records(org: SandboxOrg) -> None:
    """Accounts, opportunities, their histories, events and quotas, parents first."""
    _build_accounts(org)
    _build_opportunities(org)
    _build_opportunity_history(org)
    _build_field_history(org)
    _build_events(org)
    _build_quotas(org)


def _build_accounts(org: SandboxOrg) -> None:
    accounts = org.data.accounts
    deals = org.data.deals
    n = len(accounts)
    table = org.new_table(
        SObjectDef("Account", "Account", "Accounts", "001", layoutable=True, mergeable=True), n
    )
    org.add_is_deleted(table, np.zeros(n, dtype=bool))
    table.add(
        StringColumn(
            FieldDef("Name", "string", "Account Name", nillable=False, length=255, name_field=True),
            accounts.name,
            np.arange(n, dtype=np.int32),
        )
    )
    won = deals.stage == ds.STAGE_WON
    customer = np.zeros(n, dtype=bool)
    customer[deals.account[won & ~deals.is_deleted]] = True
    table.add(
        StringColumn(
            FieldDef(
                "Type", "picklist", "Account Type", picklist=picklist_of(["Prospect", "Customer"])
            ),
            ["Prospect", "Customer"],
            customer.astype(np.int32),
        )
    )
    table.add(
        StringColumn.from_values(FieldDef("Industry", "picklist", "Industry"), accounts.industry)
    )
    country = StringColumn.from_values(
        FieldDef(
            "BillingCountry",
            "string",
            "Billing Country",
            length=80,
            compound_field_name="BillingAddress",
        ),
        accounts.country,
    )
    table.add(country)
    table.add(_address_column("BillingAddress", "Billing Address", country))
    table.add(org.corporate_currency("Account Currency", n))
    table.add(
        DateColumn(
            FieldDef(
                "Churn_Date__c",
                "date",
                "Churn Date",
                custom=True,
                help_text="Day the customer stopped paying.",
            ),
            accounts.churn_day,
        )
    )
    org.add_reference(table, "OwnerId", "User", "Owner", accounts.owner, nillable=False)
    org.add_audit_fields(table, accounts.created_at, accounts.last_modified, by=org.admin_row)


def _address_column(name: str, label: str, country: StringColumn) -> ComputedColumn:
    """A compound address read whole (its components are the fields written); the sandbox
    keeps only the country of an address."""

    def json(rows: np.ndarray) -> list[Any]:
        return [
            None
            if value is None
            else {
                "city": None,
                "country": value,
                "geocodeAccuracy": None,
                "latitude": None,
                "longitude": None,
                "postalCode": None,
                "state": None,
                "street": None,
            }
            for value in country.to_json(rows)
        ]

    definition = FieldDef(name, "address", label, createable=False, updateable=False)
    return ComputedColumn(definition, "address", country.vector, json)


def _build_opportunities(org: SandboxOrg) -> None:
    deals = org.data.deals
    n = len(deals)
    table = org.new_table(
        SObjectDef("Opportunity", "Opportunity", "Opportunities", "006", layoutable=True), n
    )
    org.add_is_deleted(table, deals.is_deleted)
    org.add_reference(table, "AccountId", "Account", "Account", deals.account)
    account_names = org.tables["account"].columns["name"]
    products = org.data.products
    product = deals.product

    def default_name(rows: np.ndarray) -> list[str]:
        names = account_names.to_json(org.tables["opportunity"].columns["accountid"].data[rows])  # type: ignore[attr-defined]
        return [
            f"{a} - {products[p]}"
            for a, p in zip(
                names, product[np.minimum(rows, len(product) - 1)].tolist(), strict=True
            )
        ]

    table.add(
        DerivedStringColumn(
            FieldDef("Name", "string", "Name", nillable=False, length=120, name_field=True),
            default_name,
            base_rows=n,
        )
    )
    stage_names = [SF_STAGES[key][0] for key in ds.STAGES]
    table.add(
        StringColumn(
            FieldDef(
                "StageName",
                "picklist",
                "Stage",
                nillable=False,
                picklist=picklist_of([s[0] for s in SF_STAGES.values() if s[5]]),
            ),
            stage_names,
            deals.stage.astype(np.int32),
        )
    )
    table.add(
        NumberColumn(FieldDef("Amount", "currency", "Amount", precision=18, scale=2), deals.amount)
    )
    table.add(
        NumberColumn(
            FieldDef("Probability", "percent", "Probability (%)", precision=3),
            deals.probability,
        )
    )
    table.add(
        DateColumn(FieldDef("CloseDate", "date", "Close Date", nillable=False), deals.close_day)
    )
    type_names = [SF_TYPES[key] for key in ds.DEAL_TYPES]
    table.add(
        StringColumn(
            FieldDef(
                "Type",
                "picklist",
                "Opportunity Type",
                picklist=picklist_of([*type_names, *EXTRA_TYPES]),
            ),
            type_names,
            deals.deal_type.astype(np.int32),
        )
    )
    forecast_names = [SF_FORECAST_NAMES[key] for key in ds.FORECAST_CATEGORIES]
    table.add(
        StringColumn(
            FieldDef(
                "ForecastCategoryName",
                "picklist",
                "Forecast Category",
                picklist=picklist_of(list(FORECAST_API_VALUES)),
            ),
            forecast_names,
            deals.forecast_category.astype(np.int32),
        )
    )
    table.add(
        StringColumn(
            FieldDef(
                "CurrencyIsoCode",
                "picklist",
                "Opportunity Currency",
                nillable=False,
                picklist=picklist_of(org.data.currencies),
                default_on_create=org.data.reporting_currency,
            ),
            org.data.currencies,
            deals.currency.astype(np.int32),
        )
    )
    table.add(
        NumberColumn(
            FieldDef(
                "Contract_Term_Months__c",
                "double",
                "Contract Term (months)",
                custom=True,
                precision=3,
            ),
            deals.term_months.astype(np.float64),
        )
    )
    org.add_reference(table, "OwnerId", "User", "Owner", deals.owner, nillable=False)
    # Deleting a record bumps its SystemModstamp (not LastModifiedDate): that is how an
    # incremental queryAll on SystemModstamp sees deletions.
    modstamp = np.where(
        deals.is_deleted, np.maximum(deals.last_modified, deals.deleted_at), deals.last_modified
    )
    org.add_audit_fields(
        table, deals.created_at, deals.last_modified, by=deals.owner, modstamp=modstamp
    )
    _add_opportunity_formulas(org, table)


def _add_opportunity_formulas(org: SandboxOrg, table: Table) -> None:
    stage = table.columns["stagename"]
    forecast = table.columns["forecastcategoryname"]
    assert isinstance(stage, StringColumn) and isinstance(forecast, StringColumn)
    formula = dict(createable=False, updateable=False, calculated=True)

    def stage_flag(index: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        def compute(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            flags = np.array(
                [
                    bool(org.stage_by_name.get(c.casefold(), _NO_STAGE)[index])
                    for c in stage.categories
                ]
                + [False],
                dtype=bool,
            )
            return flags[stage.codes[rows]], np.zeros(len(rows), dtype=bool)

        return compute

    for name, label, index in (("IsClosed", "Closed", 3), ("IsWon", "Won", 4)):
        compute = stage_flag(index)
        table.add(
            ComputedColumn(
                FieldDef(name, "boolean", label, nillable=False, **formula),
                "bool",
                compute,
                lambda rows, c=compute: c(rows)[0].tolist(),
            )
        )

    def forecast_api(rows: np.ndarray) -> list[Any]:
        return [
            None if v is None else FORECAST_API_VALUES.get(v, v) for v in forecast.to_json(rows)
        ]

    def forecast_vector(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.array(forecast_api(rows), dtype=object)
        return values, np.array([v is None for v in values], dtype=bool)

    table.add(
        ComputedColumn(
            FieldDef("ForecastCategory", "picklist", "Forecast Type", **formula),
            "text",
            forecast_vector,
            forecast_api,
        )
    )
    _add_expected_revenue(table, "Expected Amount")
    close = table.columns["closedate"]
    assert isinstance(close, DateColumn)

    def fiscal(part: str) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        def compute(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            days = close.data[rows]
            null = days == NULL_DAY
            months = (
                np.where(null, 0, days)
                .astype("datetime64[D]")
                .astype("datetime64[M]")
                .astype(np.int64)
            )
            values = months // 12 + 1970 if part == "year" else (months % 12) // 3 + 1
            return np.where(null, np.nan, values).astype(np.float64), null

        return compute

    for name, label, part in (
        ("FiscalYear", "Fiscal Year", "year"),
        ("FiscalQuarter", "Fiscal Quarter", "quarter"),
    ):
        compute = fiscal(part)
        table.add(
            ComputedColumn(
                FieldDef(name, "int", label, **formula),
                "number",
                compute,
                lambda rows, c=compute: [
                    None if np.isnan(v) else int(v) for v in c(rows)[0].tolist()
                ],
            )
        )


def _history_table(org: SandboxOrg, name: str, label: str, prefix: str, deal: np.ndarray) -> Table:
    """A read-only history object of opportunities: deleted with its opportunity."""
    table = org.new_table(
        SObjectDef(name, label, label, prefix, createable=False, updateable=False), len(deal)
    )
    org.add_is_deleted(table, org.data.deals.is_deleted[deal])
    org.add_reference(table, "OpportunityId", "Opportunity", "Opportunity", deal, updateable=False)
    return table


def _build_opportunity_history(org: SandboxOrg) -> None:
    changes = org.data.stage_changes
    deals = org.data.deals
    n = len(changes)
    table = _history_table(org, "OpportunityHistory", "Opportunity History", "008", changes.deal)
    ro = dict(createable=False, updateable=False)
    stage_names = [SF_STAGES[key][0] for key in ds.STAGES]
    table.add(
        StringColumn(
            FieldDef("StageName", "picklist", "Stage", **ro),
            stage_names,
            changes.stage.astype(np.int32),
        )
    )
    table.add(NumberColumn(FieldDef("Amount", "currency", "Amount", **ro), changes.amount))
    table.add(
        NumberColumn(
            FieldDef("Probability", "percent", "Probability (%)", **ro), changes.probability
        )
    )
    table.add(DateColumn(FieldDef("CloseDate", "date", "Close Date", **ro), changes.close_day))
    api_forecast = [FORECAST_API_VALUES[SF_FORECAST_NAMES[key]] for key in ds.FORECAST_CATEGORIES]
    table.add(
        StringColumn(
            FieldDef("ForecastCategory", "picklist", "Forecast Category", **ro),
            api_forecast,
            changes.forecast_category.astype(np.int32),
        )
    )
    same_deal = np.zeros(n, dtype=bool)
    same_deal[1:] = changes.deal[1:] == changes.deal[:-1]
    previous_amount = np.where(same_deal, np.roll(changes.amount, 1), np.nan)
    previous_close = np.where(same_deal, np.roll(changes.close_day, 1), NULL_DAY).astype(np.int32)
    table.add(
        NumberColumn(FieldDef("PrevAmount", "currency", "Previous Amount", **ro), previous_amount)
    )
    table.add(
        DateColumn(FieldDef("PrevCloseDate", "date", "Previous Close Date", **ro), previous_close)
    )
    # The parent opportunity's currency, read through OpportunityId rather than stored
    # once more per history row.
    parent = table.columns["opportunityid"]
    assert isinstance(parent, ReferenceColumn)

    def currency_json(rows: np.ndarray) -> list[Any]:
        opportunity = org.tables["opportunity"].columns["currencyisocode"]
        return opportunity.to_json(np.maximum(parent.data[rows], 0))

    def currency_vector(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.array(currency_json(rows), dtype=object)
        return values, np.array([v is None for v in values.tolist()], dtype=bool)

    table.add(
        ComputedColumn(
            FieldDef("CurrencyIsoCode", "picklist", "Currency ISO Code", **ro),
            "text",
            currency_vector,
            currency_json,
        )
    )
    _add_expected_revenue(table, "Expected Revenue")
    # Rows are never edited: SystemModstamp shares CreatedDate's array.
    org.add_audit_fields(table, changes.changed_at, None, by=deals.owner[changes.deal])


def _build_field_history(org: SandboxOrg) -> None:
    changes = org.data.close_date_changes
    deals = org.data.deals
    n = len(changes)
    table = _history_table(
        org, "OpportunityFieldHistory", "Opportunity Field History", "017", changes.deal
    )
    table.sobject.associate = ("History", "Opportunity")  # the field history of opportunities
    ro = dict(createable=False, updateable=False)
    table.add(
        StringColumn.from_values(
            FieldDef("Field", "picklist", "Changed Field", **ro), ["CloseDate"] * n
        )
    )
    table.add(
        StringColumn.from_values(FieldDef("DataType", "picklist", "Data Type", **ro), ["Date"] * n)
    )
    table.add(
        StringColumn.from_values(
            FieldDef("OldValue", "anyType", "Old Value", **ro), days_to_json(changes.old_day)
        )
    )
    table.add(
        StringColumn.from_values(
            FieldDef("NewValue", "anyType", "New Value", **ro), days_to_json(changes.new_day)
        )
    )
    org.add_audit_fields(table, changes.changed_at, None, by=deals.owner[changes.deal])
    # OpportunityFieldHistory has no SystemModstamp (Object Reference).
    del table.columns["systemmodstamp"], table.sobject.fields["systemmodstamp"]


def _build_events(org: SandboxOrg) -> None:
    activities = org.data.activities
    n = len(activities)
    table = org.new_table(SObjectDef("Event", "Event", "Events", "00U", layoutable=True), n)
    org.add_is_deleted(table, np.zeros(n, dtype=bool))
    kinds = [EVENT_TYPES[key] for key in ds.ACTIVITY_KINDS]
    table.add(
        StringColumn(
            FieldDef(
                "Type", "picklist", "Type", picklist=picklist_of([*kinds, *EXTRA_EVENT_TYPES])
            ),
            kinds,
            activities.kind.astype(np.int32),
        )
    )
    account_names = org.tables["account"].columns["name"]
    kind = activities.kind
    account = activities.account

    def default_subject(rows: np.ndarray) -> list[str]:
        names = account_names.to_json(np.maximum(account[np.minimum(rows, n - 1)], 0)) if n else []
        return [
            f"{kinds[k]} - {a}"
            for k, a in zip(kind[np.minimum(rows, n - 1)].tolist(), names, strict=True)
        ]

    table.add(
        DerivedStringColumn(
            FieldDef("Subject", "combobox", "Subject", length=255), default_subject, base_rows=n
        )
    )
    table.add(
        DateTimeColumn(FieldDef("StartDateTime", "datetime", "Start Date Time"), activities.start)
    )
    table.add(
        DateTimeColumn(
            FieldDef("ActivityDateTime", "datetime", "Due Date Time"), activities.start.copy()
        )
    )
    table.add(
        NumberColumn(
            FieldDef("DurationInMinutes", "int", "Duration"),
            activities.duration_minutes.astype(np.float64),
        )
    )
    start = table.columns["startdatetime"]
    duration = table.columns["durationinminutes"]
    assert isinstance(start, DateTimeColumn) and isinstance(duration, NumberColumn)

    def end_time(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        begin = start.data[rows]
        minutes = duration.data[rows]
        null = (begin == NULL_MS) | np.isnan(minutes)
        return np.where(
            null, NULL_MS, begin + np.nan_to_num(minutes).astype(np.int64) * 60_000
        ), null

    table.add(
        ComputedColumn(
            FieldDef(
                "EndDateTime",
                "datetime",
                "End Date Time",
                calculated=True,
                createable=False,
                updateable=False,
            ),
            "datetime",
            end_time,
            lambda rows: ms_to_json(end_time(rows)[0]),
        )
    )

    def activity_date(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        begin = start.data[rows]
        null = begin == NULL_MS
        return np.where(null, NULL_DAY, np.floor_divide(begin, 86_400_000)).astype(np.int32), null

    table.add(
        ComputedColumn(
            FieldDef(
                "ActivityDate",
                "date",
                "Due Date Only",
                calculated=True,
                createable=False,
                updateable=False,
            ),
            "date",
            activity_date,
            lambda rows: days_to_json(activity_date(rows)[0]),
        )
    )
    org.add_reference(table, "OwnerId", "User", "Owner", activities.owner, nillable=False)
    org.add_reference(
        table, "AccountId", "Account", "Account", activities.account, updateable=False
    )
    is_deal = activities.deal >= 0
    what = FieldDef(
        "WhatId",
        "reference",
        "Related To ID",
        reference_to=("Opportunity", "Account"),
        relationship_name="What",
        length=18,
    )
    table.add(
        PolymorphicReferenceColumn(
            what,
            ["006", "001"],
            np.where(is_deal, 0, np.where(activities.account >= 0, 1, -1)).astype(np.int8),
            np.where(is_deal, activities.deal, activities.account).astype(np.int32),
        )
    )
    org.add_audit_fields(
        table, activities.created_at, activities.last_modified, by=activities.owner
    )


def _build_quotas(org: SandboxOrg) -> None:
    quotas = org.data.quotas
    n = len(quotas)
    table = org.new_table(
        SObjectDef("ForecastingQuota", "Forecasting Quota", "Forecasting Quotas", "0J9"), n
    )
    org.add_reference(table, "QuotaOwnerId", "User", "QuotaOwner", quotas.user, nillable=False)
    table.add(
        NumberColumn(
            FieldDef("QuotaAmount", "currency", "Quota Amount", precision=18, scale=2),
            quotas.amount,
        )
    )
    table.add(
        NumberColumn(FieldDef("QuotaQuantity", "double", "Quota Quantity"), np.full(n, np.nan))
    )
    table.add(
        DateColumn(FieldDef("StartDate", "date", "Start Date", nillable=False), quotas.period_start)
    )
    periods = np.array(
        [
            org.period_by_start.get((_PERIOD_TYPES.get(int(m), "Quarter"), int(s)), -1)
            for s, m in zip(
                quotas.period_start.tolist(), quotas.period_months.tolist(), strict=True
            )
        ],
        dtype=np.int32,
    )
    org.add_reference(table, "PeriodId", "Period", "Period", periods, updateable=False)
    forecasting_type = "0DbSb0000000001" + case_safe_suffix("0DbSb0000000001")
    table.add(
        StringColumn.from_values(
            FieldDef(
                "ForecastingTypeId",
                "reference",
                "Forecasting Type ID",
                reference_to=("ForecastingType",),
                length=18,
            ),
            [forecasting_type] * n,
        )
    )
    table.add(
        BoolColumn(
            FieldDef("IsAmount", "boolean", "Is Amount", nillable=False), np.ones(n, dtype=bool)
        )
    )
    table.add(
        BoolColumn(
            FieldDef("IsQuantity", "boolean", "Is Quantity", nillable=False),
            np.zeros(n, dtype=bool),
        )
    )
    table.add(org.corporate_currency("Currency ISO Code", n))
    org.add_audit_fields(table, quotas.created_at, quotas.last_modified, by=org.admin_row)


def _add_expected_revenue(table: Table, label: str) -> None:
    """ExpectedRevenue = Amount x Probability / 100, a formula field of the table."""
    amount = table.columns["amount"]
    probability = table.columns["probability"]
    assert isinstance(amount, NumberColumn) and isinstance(probability, NumberColumn)

    def expected(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = amount.data[rows] * probability.data[rows] / 100.0
        return values, np.isnan(values)

    def as_json(rows: np.ndarray) -> list[Any]:
        return [None if np.isnan(v) else round(v, 2) for v in expected(rows)[0].tolist()]

    definition = FieldDef(
        "ExpectedRevenue", "currency", label, createable=False, updateable=False, calculated=True
    )
    table.add(ComputedColumn(definition, "number", expected, as_json))


class DerivedStringColumn(StringColumn):
    """A string whose default is derived from other columns (an Opportunity's Name from its
    account and product), stored only once written, so a million rows cost no strings."""

    kind = "text"

    def __init__(
        self, definition: FieldDef, default: Callable[[np.ndarray], list[str]], *, base_rows: int
    ) -> None:
        super().__init__(definition)
        self._default = default
        self._base_rows = base_rows
        self.codes = np.full(base_rows, -2, dtype=np.int32)  # -2: derived, -1: null

    def ensure(self, size: int) -> None:
        self.codes = grown(self.codes, size, -1)

    def to_json(self, rows: np.ndarray) -> list[Any]:
        codes = self.codes[rows]
        derived = codes == -2
        out: list[Any] = [None if c < 0 else self.categories[c] for c in codes.tolist()]
        if derived.any():
            positions = np.flatnonzero(derived)
            for position, value in zip(
                positions.tolist(), self._default(rows[positions]), strict=True
            ):
                out[position] = value
        return out

    def vector(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.array(self.to_json(rows), dtype=object)
        return values, np.array([v is None for v in values.tolist()], dtype=bool)

    def sort_keys(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, null = self.vector(rows)
        folded = np.array(
            [("" if v is None else v.casefold()) for v in values.tolist()], dtype=object
        )
        order = np.argsort(folded, kind="stable")
        keys = np.empty(len(rows), dtype=np.int64)
        keys[order] = np.arange(len(rows))
        return keys, null
