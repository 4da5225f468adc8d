"""Salesforce's registry entry (:class:`~crm_kpi_worker.connectors.registry.CrmPlugin`).

Light: the connector (simple-salesforce) and the normalizer are imported when first used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crm_kpi_worker.connectors.registry import CrmPlugin
from crm_kpi_worker.connectors.salesforce.checks import mapped_fields
from crm_kpi_worker.connectors.salesforce.config import (
    TARGET_NAMING,
    SalesforceMapping,
    SalesforceSource,
)
from crm_kpi_worker.connectors.salesforce.settings import COLLECTION_BATCH_SIZE

if TYPE_CHECKING:
    from crm_kpi_worker.connectors.base import Connector
    from crm_kpi_worker.sync.config.money import CurrencySettings
    from crm_kpi_worker.sync.normalize import CrmMetadata, NormalizeContext, Normalized

__all__ = ["SALESFORCE"]


def _connect(source: SalesforceSource, currency: CurrencySettings, **options: Any) -> Connector:
    from crm_kpi_worker.connectors.salesforce.connector import connect_salesforce

    return connect_salesforce(source, currency, **options)


def _normalize(context: NormalizeContext, stream: str, records: Sequence[Any]) -> Normalized:
    from crm_kpi_worker.connectors.salesforce.normalize import normalize_page

    return normalize_page(context, stream, records)


def _metadata(records: Mapping[str, list[dict[str, Any]]]) -> CrmMetadata:
    from crm_kpi_worker.connectors.salesforce.normalize import salesforce_metadata

    return salesforce_metadata(records.get("stages", []), records.get("currencies", []))


SALESFORCE = CrmPlugin(
    type="salesforce",
    label="Salesforce",
    source_model=SalesforceSource,
    mapping_model=SalesforceMapping,
    connect=_connect,
    normalize=_normalize,
    metadata=_metadata,
    target_naming=TARGET_NAMING,
    mapped_fields=mapped_fields,
    field_noun="field",
    deal_object="Opportunity",
    rep_object="User",
    write_batch_limit=COLLECTION_BATCH_SIZE,
    default_mapping_file="salesforce-default-mapping.yaml",
    example_config_file="example-salesforce.yaml",
    rep_column_is_lookup=True,
    scorecard_owner_field="OwnerId",
)
