"""HubSpot through hubspot-api-client: see :mod:`.connector`.

Modules: ``config`` (the source, auth and mapping models), ``plugin`` (the registry entry),
``client``, ``transport``, ``search``, ``writes``, ``connector``. The connector is loaded when
first named here: the config and the registry entry import this package without loading
hubspot-api-client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm_kpi_worker.connectors.hubspot.connector import HubSpotConnector, connect_hubspot

__all__ = ["HubSpotConnector", "connect_hubspot"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from crm_kpi_worker.connectors.hubspot import connector

        return getattr(connector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
