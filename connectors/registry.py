"""CRM type -> connector factory. Adding a CRM means adding its folder and one entry here.

Every factory takes the source's config and the config's currency settings (plus keyword
options it may ignore, e.g. ``retry_policy`` and ``environ``), logs in, and returns a
:class:`~crm_kpi_worker.connectors.base.Connector`. Factories are imported lazily, so a
HubSpot-only worker never imports simple-salesforce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crm_kpi_worker.connectors.base import Connector
from crm_kpi_worker.sync.config import CurrencySettings

__all__ = ["CONNECTOR_FACTORIES", "ConnectorFactory", "build_connector"]

ConnectorFactory = Callable[..., Connector]


def _salesforce(source: Any, currency: CurrencySettings, **options: Any) -> Connector:
    from crm_kpi_worker.connectors.salesforce import connect_salesforce

    return connect_salesforce(source, currency, **options)


def _hubspot(source: Any, currency: CurrencySettings, **options: Any) -> Connector:
    from crm_kpi_worker.connectors.hubspot import connect_hubspot

    return connect_hubspot(source, currency, **options)


#: ``sources[].type`` -> factory(source, currency, **options).
CONNECTOR_FACTORIES: dict[str, ConnectorFactory] = {"salesforce": _salesforce, "hubspot": _hubspot}


def build_connector(source: Any, currency: CurrencySettings, **options: Any) -> Connector:
    """The connector for one configured source (``source.type`` picks the factory)."""
    crm = getattr(source, "type", None)
    factory = CONNECTOR_FACTORIES.get(str(crm))
    if factory is None:
        known = ", ".join(sorted(CONNECTOR_FACTORIES))
        raise ValueError(f"no connector for CRM type {crm!r} yet; available: {known}")
    return factory(source, currency, **options)
