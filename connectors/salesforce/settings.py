"""Salesforce settings: API version, page and batch sizes, the lookback, default field lists.

Everything here is a constant or derived from the source's config; nothing is read from the
environment.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from crm_kpi_worker.connectors.errors import Action, ErrorRule, codes
from crm_kpi_worker.connectors.incremental import DEFAULT_LOOKBACK
from crm_kpi_worker.connectors.salesforce.config import SalesforceSource
from crm_kpi_worker.connectors.stamps import StampFormat

__all__ = [
    "COLLECTION_BATCH_SIZE",
    "CONVERTED_AMOUNT",
    "CONVERTED_QUOTA_AMOUNT",
    "CURRENCY_FIELDS",
    "CURSOR_FIELD",
    "DEFAULT_LOOKBACK",
    "ERROR_RULES",
    "FIELD_HISTORY",
    "FIELD_HISTORY_FIELDS",
    "QUOTA_FIELDS",
    "QUOTA_PERIOD_FIELDS",
    "STAGE_FIELDS",
    "STAGE_HISTORY",
    "STAGE_HISTORY_FIELDS",
    "STAMPS",
    "STANDARD_STAGE_FIELD",
    "USER_FIELDS",
    "SalesforceSettings",
]

#: Salesforce writes instants as 2026-09-30T12:00:00.000+0000 (UTC). The lookback incremental
#: pulls re-read before the stored cursor is the shared DEFAULT_LOOKBACK (connectors.incremental).
STAMPS = StampFormat("Salesforce", "+0000")
#: Salesforce's own rows, ahead of the shared error table (connectors.errors): the daily
#: allowance (403 REQUEST_LIMIT_EXCEEDED naming TotalRequests) stops the run; the same code for
#: a concurrent-request limit is waited out; a 500 naming an error code other than a brief
#: unavailability (a SOAP fault) fails at once instead of being retried as a server error.
ERROR_RULES = (
    ErrorRule(
        Action.STOP_RUN,
        "Salesforce's daily API request limit is used up: every further call would fail",
        statuses=frozenset({403}),
        codes=codes("REQUEST_LIMIT_EXCEEDED"),
        message=r"TotalRequests",
        daily_limit=True,
    ),
    ErrorRule(
        Action.RETRY,
        "a concurrent-request limit (e.g. ConcurrentPerOrgLongTxn): wait and try again",
        statuses=frozenset({403}),
        codes=codes("REQUEST_LIMIT_EXCEEDED"),
    ),
    ErrorRule(
        Action.RETRY,
        "Salesforce is briefly unavailable (a 500 naming SERVER_UNAVAILABLE or UNKNOWN_EXCEPTION)",
        statuses=frozenset({500}),
        codes=codes("SERVER_UNAVAILABLE", "UNKNOWN_EXCEPTION"),
        login=False,
    ),
    ErrorRule(
        Action.FAIL,
        "a SOAP fault naming its error (the Metadata API answers every refusal with a 500):"
        " retrying cannot help",
        statuses=frozenset({500}),
        has_code=True,
        login=False,
    ),
)
#: sObject Collections take at most 200 records per call.
COLLECTION_BATCH_SIZE = 200
#: Every incremental stream is read in SystemModstamp order: it moves on every change,
#: deletions included (LastModifiedDate does not move on deletion).
CURSOR_FIELD = "SystemModstamp"

#: Aliases of ``convertCurrency(...)`` columns (values in the integration user's currency).
CONVERTED_AMOUNT = "ConvertedAmount"
CONVERTED_QUOTA_AMOUNT = "ConvertedQuotaAmount"

#: Child relationships of Opportunity read with each deal.
STAGE_HISTORY = "OpportunityHistories"
STAGE_HISTORY_FIELDS = ("StageName", "CreatedDate")
FIELD_HISTORY = "Histories"
FIELD_HISTORY_FIELDS = ("Field", "OldValue", "NewValue", "CreatedDate")
#: OpportunityHistory tracks this field; a custom stage field's history is field history.
STANDARD_STAGE_FIELD = "StageName"

USER_FIELDS = ("Id", "Name", "Email", "IsActive", "ManagerId", CURSOR_FIELD)
STAGE_FIELDS = (
    "Id",
    "ApiName",
    "MasterLabel",
    "IsActive",
    "IsClosed",
    "IsWon",
    "DefaultProbability",
    "ForecastCategoryName",
    "SortOrder",
)
CURRENCY_FIELDS = ("Id", "IsoCode", "ConversionRate", "IsCorporate", "IsActive", "DecimalPlaces")
QUOTA_FIELDS = ("Id", "QuotaOwnerId", "QuotaAmount", "StartDate", "PeriodId", CURSOR_FIELD)
QUOTA_PERIOD_FIELDS = ("Period.Type", "Period.EndDate")


@dataclass(frozen=True)
class SalesforceSettings:
    """What one connector instance works with (from the source's config plus options)."""

    api_version: str
    page_size: int
    lookback: dt.timedelta = DEFAULT_LOOKBACK
    write_batch_size: int = COLLECTION_BATCH_SIZE
    #: A User date field holding the rep's first selling day (ramp quotas). The config's
    #: mapping has no key for it yet, so it is an option of the connector factory.
    rep_start_date_field: str | None = None
    #: Pulls matching more records than this go by Bulk API 2.0 (None: never).
    bulk_pull_above: int | None = None
    #: Writes of more records than this (in one chunk) go by Bulk ingest (None: never).
    bulk_write_above: int | None = None

    @classmethod
    def from_source(
        cls,
        source: SalesforceSource,
        *,
        lookback: dt.timedelta = DEFAULT_LOOKBACK,
        write_batch_size: int = COLLECTION_BATCH_SIZE,
        rep_start_date_field: str | None = None,
    ) -> SalesforceSettings:
        if not 1 <= write_batch_size <= COLLECTION_BATCH_SIZE:
            raise ValueError(f"write_batch_size must be 1..{COLLECTION_BATCH_SIZE}")
        if lookback < dt.timedelta(0):
            raise ValueError("lookback must not be negative")
        return cls(
            api_version=source.api_version,
            page_size=source.page_size,
            lookback=lookback,
            write_batch_size=write_batch_size,
            rep_start_date_field=rep_start_date_field,
            bulk_pull_above=source.bulk.pull_above,
            bulk_write_above=source.bulk.write_above,
        )
