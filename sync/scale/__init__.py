"""Beyond one machine: many tenants' runs on Celery workers sharing PostgreSQL.

The embedded default (``crm-kpi sync``: one process, SQLite, APScheduler) is untouched; past
it, a deployment serves many tenants (one config each) with:

- :mod:`.tenants`: the tenants of a folder of configs, each validated on its own, each with
  its own secrets; :mod:`.stores`: one PostgreSQL schema and role per tenant (or one SQLite
  file each);
- :mod:`.tasks` (the Celery application) and :mod:`.runner`: one task is one run of one
  tenant's source, acknowledged late, in time slices; :mod:`.scheduler`: the runs enqueued
  on each tenant's schedule, by one active scheduler, each due run once;
- :mod:`.control`: the deployment's own tables (scheduled runs, shared API usage, shared rate
  pacing, the back-off of refused logins); :mod:`.limits`: the API budget and HubSpot's rate
  limits shared by every worker;
- :mod:`.status`: every tenant's runs on one status page and ``/metrics``;
- :mod:`.cli`: ``crm-kpi worker``, ``scheduler``, ``status-page``, ``tenants check``, and
  ``sync --once --configs``.
"""
