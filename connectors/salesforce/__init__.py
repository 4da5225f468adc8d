"""The Salesforce connector (simple-salesforce): :func:`connect_salesforce` builds it from a
``SalesforceSource`` and logs in; it implements ``connectors.base.Connector``.

Modules: ``config`` (the source, auth and mapping models), ``plugin`` (the registry entry),
``client`` (login, transport), ``resources`` (what is pulled: one SOQL query per stream, the
pager), ``writes`` (what is written: collections, target fields), ``settings`` (API version,
sizes, field lists), ``soql`` (safe query building), ``connector``.

The connector is loaded when first named here: the config and the registry entry import this
package without loading simple-salesforce.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm_kpi_worker.connectors.salesforce.connector import (
        SalesforceConnector,
        connect_salesforce,
    )

__all__ = ["SalesforceConnector", "connect_salesforce"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from crm_kpi_worker.connectors.salesforce import connector

        return getattr(connector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
