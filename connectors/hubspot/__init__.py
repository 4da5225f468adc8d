"""HubSpot through hubspot-api-client: see :mod:`.connector`."""

from crm_kpi_worker.connectors.hubspot.connector import HubSpotConnector, connect_hubspot

__all__ = ["HubSpotConnector", "connect_hubspot"]
