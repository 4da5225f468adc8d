"""The service's HTTP port (``runtime.http``): health and readiness probes, Prometheus
metrics and a read-only status page for ops.

The rooms: ``metrics`` (:class:`RunMetrics`, prometheus-client), ``page`` and ``texts`` (what
the status page shows, in English or French), ``templates/`` (its Jinja2 template), ``app``
(the WSGI application and its endpoints), ``server`` (werkzeug's server in a thread).
"""

from crm_kpi_worker.sync.status.app import ServiceProbe, StatusApp, schedule_interval
from crm_kpi_worker.sync.status.metrics import RunMetrics
from crm_kpi_worker.sync.status.server import StatusServer

__all__ = ["RunMetrics", "ServiceProbe", "StatusApp", "StatusServer", "schedule_interval"]
