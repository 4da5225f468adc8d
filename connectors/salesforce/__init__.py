"""The Salesforce connector (simple-salesforce): :func:`connect_salesforce` builds it from a
``SalesforceSource`` and logs in; it implements ``connectors.base.Connector``.

Modules: ``client`` (login, transport), ``resources`` (what is pulled: one SOQL query per
stream, the pager), ``writes`` (what is written: collections, target fields), ``settings``
(API version, sizes, field lists), ``soql`` (safe query building), ``connector``.
"""

from crm_kpi_worker.connectors.salesforce.connector import SalesforceConnector, connect_salesforce

__all__ = ["SalesforceConnector", "connect_salesforce"]
