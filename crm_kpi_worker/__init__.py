"""crm-kpi-worker: AE KPIs computed from CRM deals and written back into the CRM."""

__version__ = "0.1.0"
