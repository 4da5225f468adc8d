"""What the check against the portal reads: every property the HubSpot mapping names, on its
object (``crm-kpi config validate --check-crm``, ``setup`` and every run check them first)."""

from __future__ import annotations

from collections.abc import Iterator

from crm_kpi_worker.connectors.hubspot.config import HubSpotMapping
from crm_kpi_worker.connectors.registry import MappedField

__all__ = ["mapped_fields"]

_DEAL_KEYS = (
    "name",
    "amount",
    "amount_in_home_currency",
    "close_date",
    "created_at",
    "stage",
    "pipeline",
    "deal_type",
    "forecast_category",
    "probability",
    "currency",
    "owner_id",
    "last_modified",
    "term_months",
    "company_id",
)
_DEMO_KEYS = ("type_field", "owner_field", "start_field")


def mapped_fields(mapping: HubSpotMapping, conversion: str) -> Iterator[MappedField]:
    """Deal properties, the company churn property, the activity's properties, the owners'
    AE filter field."""
    for key in _DEAL_KEYS:
        name = getattr(mapping, key)
        # The home-currency amount is read only when the portal converts.
        if name is None or (key == "amount_in_home_currency" and conversion != "crm"):
            continue
        default = type(mapping).model_fields[key].default
        yield MappedField((key,), "deals", name, default if default != name else None)
    if mapping.churn_date is not None:
        yield MappedField(("churn_date",), "companies", mapping.churn_date)
    if mapping.demos is not None:
        for key in _DEMO_KEYS:
            name = getattr(mapping.demos, key)
            yield MappedField(("demos", key), mapping.demos.object, name)
    if mapping.ae_filter is not None:
        yield MappedField(("ae_filter", "field"), "owners", mapping.ae_filter.field)
