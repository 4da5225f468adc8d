"""What the check against the org reads: every field the Salesforce mapping names, on its object
(``crm-kpi config validate --check-crm``, ``setup`` and every run check them first)."""

from __future__ import annotations

from collections.abc import Iterator

from crm_kpi_worker.connectors.registry import MappedField
from crm_kpi_worker.connectors.salesforce.config import SalesforceMapping

__all__ = ["mapped_fields"]

_DEAL_KEYS = (
    "name",
    "amount",
    "close_date",
    "created_at",
    "stage",
    "deal_type",
    "forecast_category",
    "probability",
    "currency",
    "owner_id",
    "account_id",
    "is_deleted",
    "last_modified",
    "term_months",
    "churn_date",  # a path from the opportunity, e.g. Account.Churn_Date__c
)
_DEMO_KEYS = ("type_field", "owner_field", "deal_field", "start_field")
#: The currency field exists only in multi-currency orgs, where the connector reads it.
_SINGLE_CURRENCY_DEFAULT = "CurrencyIsoCode"


def mapped_fields(mapping: SalesforceMapping, conversion: str) -> Iterator[MappedField]:
    """Opportunity fields, the demo object's fields, the user fields (AE filter, team)."""
    del conversion  # every mapped Opportunity field is read whatever the conversion
    for key in _DEAL_KEYS:
        name = getattr(mapping, key)
        if name is None:
            continue
        default = type(mapping).model_fields[key].default
        absent_ok = key == "currency" and name == _SINGLE_CURRENCY_DEFAULT
        hint = default if default != name else None
        yield MappedField((key,), "Opportunity", name, hint, absent_ok=absent_ok)
    if mapping.demos is not None:
        for key in _DEMO_KEYS:
            name = getattr(mapping.demos, key)
            yield MappedField(("demos", key), mapping.demos.object, name)
    if mapping.ae_filter is not None:
        yield MappedField(("ae_filter", "field"), "User", mapping.ae_filter.field)
    if mapping.team_field is not None:
        yield MappedField(("team_field",), "User", mapping.team_field)
