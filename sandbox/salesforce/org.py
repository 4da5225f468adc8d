"""The sandbox Salesforce org: the data set rendered as sObjects, and record writes.

Writes behave as Salesforce's do where the worker can tell: audit fields and SystemModstamp are
stamped, a change of stage, amount, probability or close date adds an OpportunityHistory row, a
close-date change adds an OpportunityFieldHistory row (the field is tracked), a new stage brings
its default probability and forecast category unless the write sets them.

Deliberate differences from a real org, to exercise the worker's bad-data paths: one demo deal
has no CloseDate (Salesforce requires one; HubSpot does not), one is in CHF, a currency the org
has no conversion rate for (``convertCurrency`` answers null), and one carries "Legacy Stage",
an inactive stage the demo mapping does not know.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.salesforce.ids import case_safe_suffix, make_id
from crm_kpi_worker.sandbox.salesforce.store import (
    NULL_DAY,
    NULL_MS,
    BoolColumn,
    ChildRelationship,
    Column,
    ComputedColumn,
    DateColumn,
    DateTimeColumn,
    FieldDef,
    FieldValueError,
    NumberColumn,
    PicklistValue,
    PolymorphicReferenceColumn,
    ReferenceColumn,
    SObjectDef,
    StringColumn,
    Table,
    days_to_json,
    id_column,
    ms_to_json,
)

ORG_ID15 = "00DSb0000000001"
ORG_ID = ORG_ID15 + case_safe_suffix(ORG_ID15)
ADMIN_USERNAME = "demo@sandbox.local"

SF_STAGES = {
    # neutral key: (StageName, default probability, ForecastCategoryName, closed, won, active)
    "prospecting": ("Prospecting", 10.0, "Pipeline", False, False, True),
    "qualification": ("Qualification", 20.0, "Pipeline", False, False, True),
    "demo": ("Demo", 40.0, "Pipeline", False, False, True),
    "proposal": ("Proposal", 60.0, "Best Case", False, False, True),
    "negotiation": ("Negotiation", 80.0, "Commit", False, False, True),
    "closed_won": ("Closed Won", 100.0, "Closed", True, True, True),
    "closed_lost": ("Closed Lost", 0.0, "Omitted", True, False, True),
    "legacy": ("Legacy Stage", 0.0, "Pipeline", False, False, False),
}
SF_TYPES = {
    "new_business": "New Customer",
    "expansion": "Existing Customer - Upgrade",
    "renewal": "Renewal",
    "other": "Existing Customer - Replacement",
}
EXTRA_TYPES = ("Existing Customer - Downgrade",)
SF_FORECAST_NAMES = {
    "pipeline": "Pipeline",
    "best_case": "Best Case",
    "commit": "Commit",
    "closed": "Closed",
    "omitted": "Omitted",
}
# ForecastCategoryName (label) -> ForecastCategory (API value)
FORECAST_API_VALUES = {
    "Pipeline": "Pipeline",
    "Best Case": "BestCase",
    "Commit": "Forecast",
    "Closed": "Closed",
    "Omitted": "Omitted",
}
EVENT_TYPES = {"demo": "Demo", "call": "Call", "meeting": "Meeting"}
EXTRA_EVENT_TYPES = ("Email", "Other")
TRACKED_HISTORY_FIELDS = ("stagename", "amount", "probability", "closedate")


class RecordError(Exception):
    """One record's failure, as Salesforce reports it in a per-record result."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or []

    def as_result(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


@dataclass(frozen=True)
class WriteOutcome:
    row: int
    record_id: str
    created: bool


def _picklist(values: list[str]) -> tuple[PicklistValue, ...]:
    return tuple(PicklistValue(v) for v in values)


class SandboxOrg:
    """All tables of one sandbox org, and the operations the REST API performs on them."""

    def __init__(self, data: ds.Dataset, clock: Callable[[], float] = time.time) -> None:
        self.data = data
        self.lock = threading.RLock()
        self.tables: dict[str, Table] = {}
        self._next_custom_prefix = 0
        latest = int(max(data.deals.last_modified.max(initial=0), data.users.created_at.max()))
        # The org's clock never runs behind its own data (a reference date in the future).
        offset = max(0.0, (latest + 1000) / 1000 - clock())
        self.now_ms: Callable[[], int] = lambda: int((clock() + offset) * 1000)
        self._build()

    # ---- lookups ----------------------------------------------------------------------------

    def table(self, name: str) -> Table | None:
        return self.tables.get(name.lower())

    def user_id(self, row: int) -> str:
        return make_id("005", row)

    @property
    def admin_row(self) -> int:
        return len(self.data.users)

    # ---- building ---------------------------------------------------------------------------

    def _new_table(self, sobject: SObjectDef, size: int) -> Table:
        table = Table(sobject, size)
        table.add(id_column(table))
        self.tables[sobject.name.lower()] = table
        return table

    def _reference(
        self,
        table: Table,
        name: str,
        target: str,
        relationship: str | None,
        values: np.ndarray,
        *,
        label: str | None = None,
        nillable: bool = True,
        updateable: bool = True,
    ) -> ReferenceColumn:
        prefix = self.tables[target.lower()].sobject.key_prefix
        definition = FieldDef(
            name,
            "reference",
            label or name.removesuffix("Id") + " ID",
            nillable=nillable,
            updateable=updateable,
            createable=updateable,
            reference_to=(target,),
            relationship_name=relationship,
            length=18,
        )
        column = ReferenceColumn(definition, prefix, values)
        column.target_size = lambda: self.tables[target.lower()].size
        table.add(column)
        return column

    def _audit(
        self,
        table: Table,
        created: np.ndarray,
        modified: np.ndarray | None,
        *,
        by: int | np.ndarray,
        modstamp: np.ndarray | None = None,
    ) -> None:
        """Audit fields. ``modified`` None: a history object (no LastModified* fields);
        ``modstamp`` defaults to ``modified`` (or ``created``) and may be shared with it."""
        size = table.size
        system = dict(createable=False, updateable=False, nillable=False)
        creator = np.array(np.broadcast_to(np.asarray(by, dtype=np.int32), (size,)))
        table.add(
            DateTimeColumn(FieldDef("CreatedDate", "datetime", "Created Date", **system), created)
        )
        self._reference(table, "CreatedById", "User", "CreatedBy", creator, updateable=False)
        if modified is not None:
            table.add(
                DateTimeColumn(
                    FieldDef("LastModifiedDate", "datetime", "Last Modified Date", **system),
                    modified,
                )
            )
            self._reference(
                table,
                "LastModifiedById",
                "User",
                "LastModifiedBy",
                creator.copy(),
                updateable=False,
            )
        stamp = modstamp if modstamp is not None else modified if modified is not None else created
        table.add(
            DateTimeColumn(
                FieldDef("SystemModstamp", "datetime", "System Modstamp", **system), stamp
            )
        )

    def _corporate_currency(self, label: str, n: int) -> StringColumn:
        """CurrencyIsoCode of ``n`` records in the corporate currency, its default on create."""
        definition = FieldDef(
            "CurrencyIsoCode",
            "picklist",
            label,
            nillable=False,
            picklist=_picklist(self.data.currencies),
            default_on_create=self.data.reporting_currency,
        )
        return StringColumn.from_values(definition, [self.data.reporting_currency] * n)

    def _is_deleted(self, table: Table, values: np.ndarray) -> None:
        table.add(
            BoolColumn(
                FieldDef(
                    "IsDeleted",
                    "boolean",
                    "Deleted",
                    nillable=False,
                    createable=False,
                    updateable=False,
                ),
                values,
            )
        )

    def _build(self) -> None:
        self._build_users()
        self._build_currency_types()
        self._build_stages()
        self._build_periods()
        self._build_accounts()
        self._build_opportunities()
        self._build_opportunity_history()
        self._build_field_history()
        self._build_events()
        self._build_quotas()
        opportunity = self.tables["opportunity"].sobject
        for rel in (
            ChildRelationship("OpportunityHistories", "OpportunityHistory", "OpportunityId"),
            ChildRelationship("Histories", "OpportunityFieldHistory", "OpportunityId"),
            ChildRelationship("Events", "Event", "WhatId"),
        ):
            opportunity.children[rel.name.lower()] = rel
        account = self.tables["account"].sobject
        account.children["opportunities"] = ChildRelationship(
            "Opportunities", "Opportunity", "AccountId"
        )
        user = self.tables["user"].sobject
        user.children["forecastingquotas"] = ChildRelationship(
            "ForecastingQuotas", "ForecastingQuota", "QuotaOwnerId"
        )

    def _build_users(self) -> None:
        users = self.data.users
        n = len(users) + 1  # + the API user the sandbox credentials log in as
        sobject = SObjectDef("User", "User", "Users", "005", createable=False)
        table = self._new_table(sobject, n)
        first = [*users.first_name, "Sandbox"]
        last = [*users.last_name, "Admin"]
        emails = [*users.email, ADMIN_USERNAME]
        ro = dict(createable=False, updateable=False)
        table.add(
            StringColumn.from_values(
                FieldDef("Username", "string", "Username", nillable=False, length=80, **ro), emails
            )
        )
        table.add(
            StringColumn.from_values(
                FieldDef("FirstName", "string", "First Name", length=40), first
            )
        )
        table.add(
            StringColumn.from_values(
                FieldDef("LastName", "string", "Last Name", nillable=False, length=80), last
            )
        )
        table.add(
            StringColumn.from_values(
                FieldDef(
                    "Name", "string", "Full Name", nillable=False, length=121, name_field=True, **ro
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
                    picklist=_picklist(self.data.currencies),
                ),
                [self.data.reporting_currency] * n,
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
        self._reference(table, "ManagerId", "User", "Manager", np.append(users.manager, -1))
        created = np.append(users.created_at, users.created_at.min(initial=0))
        self._audit(table, created, created.copy(), by=n - 1)

    def _build_currency_types(self) -> None:
        rates = self.data.fx_rates
        codes = [c for c in self.data.currencies if c in rates]
        table = self._new_table(
            SObjectDef("CurrencyType", "Currency Type", "Currency Types", "02B"), len(codes)
        )
        table.add(
            StringColumn.from_values(
                FieldDef(
                    "IsoCode",
                    "picklist",
                    "Currency ISO Code",
                    nillable=False,
                    picklist=_picklist(codes),
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
        table.add(
            NumberColumn(FieldDef("DecimalPlaces", "int", "Decimal Places"), [2.0] * len(codes))
        )
        table.add(
            BoolColumn(
                FieldDef("IsActive", "boolean", "Active", nillable=False), [True] * len(codes)
            )
        )
        table.add(
            BoolColumn(
                FieldDef("IsCorporate", "boolean", "Corporate", nillable=False),
                [c == self.data.reporting_currency for c in codes],
            )
        )
        stamp = np.full(len(codes), int(self.data.users.created_at.min(initial=0)), dtype=np.int64)
        self._audit(table, stamp, stamp.copy(), by=self.admin_row)

    def _build_stages(self) -> None:
        stages = list(SF_STAGES.values())
        table = self._new_table(
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
        table.add(
            BoolColumn(FieldDef("IsClosed", "boolean", "Closed", **ro), [s[3] for s in stages])
        )
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
        stamp = np.full(len(stages), int(self.data.users.created_at.min(initial=0)), dtype=np.int64)
        self._audit(table, stamp, stamp.copy(), by=self.admin_row)
        self.stage_by_name = {s[0].casefold(): s for s in stages}

    def _build_periods(self) -> None:
        """Fiscal periods (calendar fiscal year) covering every quota and close date."""
        first_days = [
            int(self.data.quotas.period_start.min(initial=ds.date_to_day(self.data.reference_date)))
        ]
        closes = self.data.deals.close_day[self.data.deals.close_day != NULL_DAY]
        if len(closes):
            first_days += [int(closes.min()), int(closes.max())]
        first_year = ds.day_to_date(min(first_days)).year  # type: ignore[union-attr]
        last_year = max(ds.day_to_date(max(first_days)).year, self.data.reference_date.year + 1)  # type: ignore[union-attr]
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
        table = self._new_table(
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
                    picklist=_picklist(["Month", "Quarter", "Year"]),
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
        table.add(
            NumberColumn(FieldDef("Number", "int", "Number", **ro), [float(r[3]) for r in rows])
        )
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
        stamp = np.full(len(rows), int(self.data.users.created_at.min(initial=0)), dtype=np.int64)
        self._audit(table, stamp, stamp.copy(), by=self.admin_row)
        self._quarter_period = {
            ds.date_to_day(r[1]): i for i, r in enumerate(rows) if r[0] == "Quarter"
        }
        self._period_by_start = {(r[0], ds.date_to_day(r[1])): i for i, r in enumerate(rows)}

    def _build_accounts(self) -> None:
        accounts = self.data.accounts
        deals = self.data.deals
        n = len(accounts)
        table = self._new_table(SObjectDef("Account", "Account", "Accounts", "001"), n)
        self._is_deleted(table, np.zeros(n, dtype=bool))
        table.add(
            StringColumn(
                FieldDef(
                    "Name", "string", "Account Name", nillable=False, length=255, name_field=True
                ),
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
                    "Type", "picklist", "Account Type", picklist=_picklist(["Prospect", "Customer"])
                ),
                ["Prospect", "Customer"],
                customer.astype(np.int32),
            )
        )
        table.add(
            StringColumn.from_values(
                FieldDef("Industry", "picklist", "Industry"), accounts.industry
            )
        )
        table.add(
            StringColumn.from_values(
                FieldDef("BillingCountry", "string", "Billing Country", length=80), accounts.country
            )
        )
        table.add(self._corporate_currency("Account Currency", n))
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
        self._reference(table, "OwnerId", "User", "Owner", accounts.owner, nillable=False)
        self._audit(table, accounts.created_at, accounts.last_modified, by=self.admin_row)

    def _build_opportunities(self) -> None:
        deals = self.data.deals
        n = len(deals)
        table = self._new_table(SObjectDef("Opportunity", "Opportunity", "Opportunities", "006"), n)
        self._is_deleted(table, deals.is_deleted)
        self._reference(table, "AccountId", "Account", "Account", deals.account)
        account_names = self.tables["account"].columns["name"]
        products = self.data.products
        product = deals.product

        def default_name(rows: np.ndarray) -> list[str]:
            names = account_names.to_json(
                self.tables["opportunity"].columns["accountid"].data[rows]
            )  # type: ignore[attr-defined]
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
                    picklist=_picklist([s[0] for s in SF_STAGES.values() if s[5]]),
                ),
                stage_names,
                deals.stage.astype(np.int32),
            )
        )
        table.add(
            NumberColumn(
                FieldDef("Amount", "currency", "Amount", precision=18, scale=2), deals.amount
            )
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
                    picklist=_picklist([*type_names, *EXTRA_TYPES]),
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
                    picklist=_picklist(list(FORECAST_API_VALUES)),
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
                    picklist=_picklist(self.data.currencies),
                    default_on_create=self.data.reporting_currency,
                ),
                self.data.currencies,
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
        self._reference(table, "OwnerId", "User", "Owner", deals.owner, nillable=False)
        # Deleting a record bumps its SystemModstamp (not LastModifiedDate): that is how an
        # incremental queryAll on SystemModstamp sees deletions.
        modstamp = np.where(
            deals.is_deleted, np.maximum(deals.last_modified, deals.deleted_at), deals.last_modified
        )
        self._audit(table, deals.created_at, deals.last_modified, by=deals.owner, modstamp=modstamp)
        self._add_opportunity_formulas(table)

    def _add_opportunity_formulas(self, table: Table) -> None:
        stage = table.columns["stagename"]
        forecast = table.columns["forecastcategoryname"]
        assert isinstance(stage, StringColumn) and isinstance(forecast, StringColumn)
        formula = dict(createable=False, updateable=False, calculated=True)

        def stage_flag(index: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
            def compute(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                flags = np.array(
                    [
                        bool(self.stage_by_name.get(c.casefold(), (0, 0, 0, False, False))[index])
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

    def _history_table(self, name: str, label: str, prefix: str, deal: np.ndarray) -> Table:
        """A read-only history object of opportunities: deleted with its opportunity."""
        table = self._new_table(
            SObjectDef(name, label, label, prefix, createable=False, updateable=False), len(deal)
        )
        self._is_deleted(table, self.data.deals.is_deleted[deal])
        self._reference(
            table, "OpportunityId", "Opportunity", "Opportunity", deal, updateable=False
        )
        return table

    def _build_opportunity_history(self) -> None:
        changes = self.data.stage_changes
        deals = self.data.deals
        n = len(changes)
        table = self._history_table(
            "OpportunityHistory", "Opportunity History", "008", changes.deal
        )
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
        api_forecast = [
            FORECAST_API_VALUES[SF_FORECAST_NAMES[key]] for key in ds.FORECAST_CATEGORIES
        ]
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
        previous_close = np.where(same_deal, np.roll(changes.close_day, 1), NULL_DAY).astype(
            np.int32
        )
        table.add(
            NumberColumn(
                FieldDef("PrevAmount", "currency", "Previous Amount", **ro), previous_amount
            )
        )
        table.add(
            DateColumn(
                FieldDef("PrevCloseDate", "date", "Previous Close Date", **ro), previous_close
            )
        )
        # The parent opportunity's currency, read through OpportunityId rather than stored
        # once more per history row.
        parent = table.columns["opportunityid"]
        assert isinstance(parent, ReferenceColumn)

        def currency_json(rows: np.ndarray) -> list[Any]:
            opportunity = self.tables["opportunity"].columns["currencyisocode"]
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
        self._audit(table, changes.changed_at, None, by=deals.owner[changes.deal])

    def _build_field_history(self) -> None:
        changes = self.data.close_date_changes
        deals = self.data.deals
        n = len(changes)
        table = self._history_table(
            "OpportunityFieldHistory", "Opportunity Field History", "017", changes.deal
        )
        ro = dict(createable=False, updateable=False)
        table.add(
            StringColumn.from_values(
                FieldDef("Field", "picklist", "Changed Field", **ro), ["CloseDate"] * n
            )
        )
        table.add(
            StringColumn.from_values(
                FieldDef("DataType", "picklist", "Data Type", **ro), ["Date"] * n
            )
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
        self._audit(table, changes.changed_at, None, by=deals.owner[changes.deal])
        # OpportunityFieldHistory has no SystemModstamp (Object Reference).
        del table.columns["systemmodstamp"], table.sobject.fields["systemmodstamp"]

    def _build_events(self) -> None:
        activities = self.data.activities
        n = len(activities)
        table = self._new_table(SObjectDef("Event", "Event", "Events", "00U"), n)
        self._is_deleted(table, np.zeros(n, dtype=bool))
        kinds = [EVENT_TYPES[key] for key in ds.ACTIVITY_KINDS]
        table.add(
            StringColumn(
                FieldDef(
                    "Type", "picklist", "Type", picklist=_picklist([*kinds, *EXTRA_EVENT_TYPES])
                ),
                kinds,
                activities.kind.astype(np.int32),
            )
        )
        account_names = self.tables["account"].columns["name"]
        kind = activities.kind
        account = activities.account

        def default_subject(rows: np.ndarray) -> list[str]:
            names = (
                account_names.to_json(np.maximum(account[np.minimum(rows, n - 1)], 0)) if n else []
            )
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
            DateTimeColumn(
                FieldDef("StartDateTime", "datetime", "Start Date Time"), activities.start
            )
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
            return np.where(null, NULL_DAY, np.floor_divide(begin, 86_400_000)).astype(
                np.int32
            ), null

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
        self._reference(table, "OwnerId", "User", "Owner", activities.owner, nillable=False)
        self._reference(
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
        self._audit(table, activities.created_at, activities.last_modified, by=activities.owner)

    def _build_quotas(self) -> None:
        quotas = self.data.quotas
        n = len(quotas)
        table = self._new_table(
            SObjectDef("ForecastingQuota", "Forecasting Quota", "Forecasting Quotas", "0J9"), n
        )
        self._reference(table, "QuotaOwnerId", "User", "QuotaOwner", quotas.user, nillable=False)
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
            DateColumn(
                FieldDef("StartDate", "date", "Start Date", nillable=False), quotas.period_start
            )
        )
        periods = np.array(
            [
                self._period_by_start.get(
                    ({1: "Month", 3: "Quarter", 12: "Year"}.get(int(m), "Quarter"), int(s)), -1
                )
                for s, m in zip(
                    quotas.period_start.tolist(), quotas.period_months.tolist(), strict=True
                )
            ],
            dtype=np.int32,
        )
        self._reference(table, "PeriodId", "Period", "Period", periods, updateable=False)
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
        table.add(self._corporate_currency("Currency ISO Code", n))
        self._audit(table, quotas.created_at, quotas.last_modified, by=self.admin_row)

    # ---- writes -----------------------------------------------------------------------------

    def write(
        self,
        sobject: str,
        values: Mapping[str, Any],
        *,
        user_row: int,
        row: int | None = None,
    ) -> WriteOutcome:
        """Insert (row None) or update one record; raise RecordError on a bad record.

        Validates every field first, so a failing record changes nothing.
        """
        with self.lock:
            table = self.table(sobject)
            if table is None:
                raise RecordError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            creating = row is None
            planned: list[tuple[Column, Any]] = []
            for name, value in values.items():
                if name in {"attributes", "Id", "id"}:
                    continue
                column = table.column(name)
                if column is None:
                    raise RecordError(
                        "INVALID_FIELD",
                        f"No such column '{name}' on sobject of type {table.name}",
                        [name],
                    )
                definition = column.definition
                allowed = definition.createable if creating else definition.updateable
                if not allowed:
                    raise RecordError(
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        f"Unable to create/update fields: {definition.name}. Please check the"
                        " security settings of this field and verify that it is read/write for"
                        " your profile or permission set.",
                        [definition.name],
                    )
                if value is None and not definition.nillable:
                    raise RecordError(
                        "REQUIRED_FIELD_MISSING",
                        f"Required fields are missing: [{definition.name}]",
                        [definition.name],
                    )
                planned.append((column, value))
            if creating:
                given = {c.definition.name.lower() for c, _ in planned}
                missing = [
                    d.name
                    for d in table.sobject.fields.values()
                    if not d.nillable
                    and d.createable
                    and d.type != "boolean"
                    and d.default_on_create is None
                    and d.name.lower() not in given
                    and d.name.lower() != "ownerid"
                ]
                defaults = [
                    (table.columns[name], d.default_on_create)
                    for name, d in table.sobject.fields.items()
                    if d.default_on_create is not None and name not in given
                ]
                planned = defaults + planned
                if missing:
                    raise RecordError(
                        "REQUIRED_FIELD_MISSING",
                        f"Required fields are missing: [{', '.join(missing)}]",
                        missing,
                    )
            before = None if creating else self._tracked(table, row)  # type: ignore[arg-type]
            if creating:
                row = table.append_rows(1).start
            assert row is not None
            snapshot = [(column, column.to_json(np.array([row]))[0]) for column, _ in planned]
            try:
                for column, value in planned:
                    column.set(row, value)
            except FieldValueError as exc:
                if creating:
                    table.size -= 1
                else:
                    for column, old in snapshot:
                        column.set(row, old)
                raise RecordError(exc.code, exc.message, [column.definition.name]) from None
            self._stamp(table, row, user_row, creating)
            if table.name == "Opportunity":
                self._track_opportunity(table, row, before, values, user_row)
            return WriteOutcome(row, table.id_of(row), creating)

    def _tracked(self, table: Table, row: int) -> dict[str, Any] | None:
        if table.name != "Opportunity":
            return None
        rows = np.array([row])
        return {name: table.columns[name].to_json(rows)[0] for name in TRACKED_HISTORY_FIELDS}

    def _stamp(self, table: Table, row: int, user_row: int, creating: bool) -> None:
        now = self.now_ms()
        names = ["lastmodifieddate", "systemmodstamp"] + (["createddate"] if creating else [])
        for name in names:
            column = table.columns.get(name)
            if isinstance(column, DateTimeColumn):
                column.data[row] = now
        for name in ["lastmodifiedbyid"] + (["createdbyid"] if creating else []):
            column = table.columns.get(name)
            if isinstance(column, ReferenceColumn):
                column.data[row] = user_row
        owner = table.columns.get("ownerid")
        if creating and isinstance(owner, ReferenceColumn) and owner.data[row] < 0:
            owner.data[row] = user_row
        deleted = table.columns.get("isdeleted")
        if creating and isinstance(deleted, BoolColumn):
            deleted.data[row] = False

    def _track_opportunity(
        self,
        table: Table,
        row: int,
        before: dict[str, Any] | None,
        values: Mapping[str, Any],
        user_row: int,
    ) -> None:
        rows = np.array([row])
        given = {k.lower() for k in values}
        stage = table.columns["stagename"].to_json(rows)[0]
        stage_info = self.stage_by_name.get((stage or "").casefold())
        if stage_info and (before is None or before["stagename"] != stage):
            if "probability" not in given:
                table.columns["probability"].set(row, stage_info[1])
            if "forecastcategoryname" not in given:
                table.columns["forecastcategoryname"].set(row, stage_info[2])
        after = {name: table.columns[name].to_json(rows)[0] for name in TRACKED_HISTORY_FIELDS}
        now = self.now_ms()
        if before is None or any(before[k] != after[k] for k in TRACKED_HISTORY_FIELDS):
            history = self.tables["opportunityhistory"]
            new = history.append_rows(1).start
            copy = {
                "opportunityid": table.id_of(row),
                "stagename": after["stagename"],
                "amount": after["amount"],
                "probability": after["probability"],
                "closedate": after["closedate"],
                "forecastcategory": table.columns["forecastcategory"].to_json(rows)[0],
                "prevamount": before["amount"] if before else None,
                "prevclosedate": before["closedate"] if before else None,
            }
            for name, value in copy.items():
                history.columns[name].set(new, value)
            self._stamp(history, new, user_row, creating=True)
            for name in ("createddate", "systemmodstamp", "lastmodifieddate"):
                column = history.columns.get(name)
                if isinstance(column, DateTimeColumn):
                    column.data[new] = now
        if before is not None and before["closedate"] != after["closedate"]:
            tracking = self.tables["opportunityfieldhistory"]
            new = tracking.append_rows(1).start
            for name, value in (
                ("opportunityid", table.id_of(row)),
                ("field", "CloseDate"),
                ("datatype", "Date"),
                ("oldvalue", before["closedate"]),
                ("newvalue", after["closedate"]),
            ):
                tracking.columns[name].set(new, value)
            self._stamp(tracking, new, user_row, creating=True)

    def delete(self, sobject: str, record_id: str, *, user_row: int) -> None:
        """Move a record to the recycle bin (IsDeleted = true; visible to queryAll)."""
        with self.lock:
            table = self.table(sobject)
            if table is None or not table.sobject.has_is_deleted:
                raise RecordError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            row = self.find_row(table, record_id)
            deleted = table.columns["isdeleted"]
            assert isinstance(deleted, BoolColumn)
            deleted.data[row] = True
            self._stamp(table, row, user_row, creating=False)
            for rel in table.sobject.children.values():
                child = self.tables[rel.child.lower()]
                fk = child.columns[rel.field.lower()]
                child_deleted = child.columns.get("isdeleted")
                if isinstance(fk, ReferenceColumn) and isinstance(child_deleted, BoolColumn):
                    child_deleted.data[: child.size][fk.data[: child.size] == row] = True

    def find_row(self, table: Table, record_id: str, *, include_deleted: bool = False) -> int:
        try:
            row = table.row_of(record_id)
        except ValueError:
            raise RecordError(
                "MALFORMED_ID", f"{table.name} ID: id value of incorrect type: {record_id}", ["Id"]
            ) from None
        if row is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["Id"])
        deleted = table.columns.get("isdeleted")
        if not include_deleted and isinstance(deleted, BoolColumn) and deleted.data[row]:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
        return row

    def find_by_external_id(self, table: Table, field_name: str, value: str) -> list[int]:
        column = table.column(field_name)
        if column is None or not (column.definition.external_id or column.definition.type == "id"):
            raise RecordError(
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        if column.definition.type == "id":
            return [self.find_row(table, value)]
        rows = table.live_rows(include_deleted=False)
        assert isinstance(column, StringColumn)
        wanted = {
            c for c, text in enumerate(column.categories) if text.casefold() == value.casefold()
        }
        codes = column.codes[rows]
        return [int(r) for r in rows[np.isin(codes, list(wanted))]] if wanted else []

    # ---- schema changes (Tooling API) -------------------------------------------------------

    def create_custom_object(
        self, api_name: str, label: str, plural: str, name_label: str
    ) -> Table:
        with self.lock:
            if not api_name.endswith("__c") or api_name.lower() in self.tables:
                raise RecordError(
                    "DUPLICATE_DEVELOPER_NAME"
                    if api_name.lower() in self.tables
                    else "INVALID_FIELD",
                    f"Cannot create custom object {api_name}",
                )
            prefix = f"a{self._next_custom_prefix:02d}"
            self._next_custom_prefix += 1
            table = self._new_table(SObjectDef(api_name, label, plural, prefix, custom=True), 0)
            self._is_deleted(table, np.zeros(0, dtype=bool))
            table.add(
                StringColumn(FieldDef("Name", "string", name_label, length=80, name_field=True))
            )
            self._reference(
                table, "OwnerId", "User", "Owner", np.zeros(0, dtype=np.int32), nillable=False
            )
            empty = np.zeros(0, dtype=np.int64)
            self._audit(table, empty, empty.copy(), by=np.zeros(0, dtype=np.int32))
            table.sobject.fields["ownerid"].createable = True
            return table

    def create_custom_field(
        self,
        sobject: str,
        api_name: str,
        field_type: str,
        label: str,
        *,
        length: int = 0,
        precision: int = 0,
        scale: int = 0,
        help_text: str | None = None,
        external_id: bool = False,
        unique: bool = False,
        reference_to: str | None = None,
    ) -> FieldDef:
        with self.lock:
            table = self.table(sobject)
            if table is None:
                raise RecordError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            if not api_name.endswith("__c") or not api_name[:-3].replace("_", "").isalnum():
                raise RecordError("INVALID_FIELD", f"Invalid custom field name: {api_name}")
            if table.column(api_name) is not None:
                raise RecordError(
                    "DUPLICATE_DEVELOPER_NAME",
                    f"There is already a field named {api_name[:-3]} on {table.name}.",
                )
            definition = FieldDef(
                api_name,
                field_type,
                label,
                custom=True,
                length=length,
                precision=precision,
                scale=scale,
                help_text=help_text,
                external_id=external_id,
                unique=unique,
            )
            column: Column
            if field_type in {"double", "currency", "percent", "int"}:
                column = NumberColumn(definition)
            elif field_type == "boolean":
                column = BoolColumn(definition)
            elif field_type == "date":
                column = DateColumn(definition)
            elif field_type == "datetime":
                column = DateTimeColumn(definition)
            elif field_type == "reference" and reference_to:
                target = self.table(reference_to)
                if target is None:
                    raise RecordError(
                        "INVALID_TYPE", f"sObject type '{reference_to}' is not supported."
                    )
                definition.reference_to = (target.name,)
                definition.relationship_name = api_name[:-3] + "__r"
                column = ReferenceColumn(definition, target.sobject.key_prefix)
                column.target_size = lambda: target.size
            else:
                column = StringColumn(definition)
            table.add(column)
            return definition


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
        self.codes = _grow_codes(self.codes, size)

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


def _grow_codes(codes: np.ndarray, size: int) -> np.ndarray:
    if size <= len(codes):
        return codes
    grown = np.full(max(size, len(codes) * 2, 16), -1, dtype=np.int32)
    grown[: len(codes)] = codes
    return grown
