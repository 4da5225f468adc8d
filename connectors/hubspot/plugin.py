"""HubSpot's registry entry (:class:`~crm_kpi_worker.connectors.registry.CrmPlugin`).

Light: the connector (hubspot-api-client) and the normalizer are imported when first used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crm_kpi_worker.connectors.hubspot.checks import mapped_fields
from crm_kpi_worker.connectors.hubspot.config import TARGET_NAMING, HubSpotMapping, HubSpotSource
from crm_kpi_worker.connectors.hubspot.settings import BATCH_LIMIT
from crm_kpi_worker.connectors.registry import CrmPlugin

if TYPE_CHECKING:
    from crm_kpi_worker.connectors.base import Connector
    from crm_kpi_worker.sync.config.money import CurrencySettings
    from crm_kpi_worker.sync.normalize import CrmMetadata, NormalizeContext, Normalized

__all__ = ["HUBSPOT"]


def _connect(source: HubSpotSource, currency: CurrencySettings, **options: Any) -> Connector:
    from crm_kpi_worker.connectors.hubspot.connector import connect_hubspot

    return connect_hubspot(source, currency, **options)


def _normalize(context: NormalizeContext, stream: str, records: Sequence[Any]) -> Normalized:
    from crm_kpi_worker.connectors.hubspot.normalize import normalize_page

    return normalize_page(context, stream, records)


def _metadata(records: Mapping[str, list[dict[str, Any]]]) -> CrmMetadata:
    from crm_kpi_worker.connectors.hubspot.normalize import hubspot_metadata

    return hubspot_metadata(records.get("stages", []))


HUBSPOT = CrmPlugin(
    type="hubspot",
    label="HubSpot",
    source_model=HubSpotSource,
    mapping_model=HubSpotMapping,
    connect=_connect,
    normalize=_normalize,
    metadata=_metadata,
    target_naming=TARGET_NAMING,
    mapped_fields=mapped_fields,
    field_noun="property",
    deal_object="deals",
    rep_object=None,
    write_batch_limit=BATCH_LIMIT,
    default_mapping_file="hubspot-default-mapping.yaml",
    example_config_file="example-hubspot.yaml",
    scorecard_name_field="kpi_name",
)
