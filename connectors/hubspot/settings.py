"""HubSpot names shared by the connector (what it asks for) and the normalizer (what it reads)."""

from __future__ import annotations

from crm_kpi_worker.connectors.errors import Action, ErrorRule, codes

__all__ = ["BATCH_LIMIT", "DATE_ENTERED_PREFIX", "ERROR_RULES", "STAMP"]

#: How HubSpot says its daily allowance is used up (a 429 of policy DAILY), ahead of the shared
#: error table (connectors.errors), where other 429s are waited out.
ERROR_RULES = (
    ErrorRule(
        Action.STOP_RUN,
        "HubSpot's daily API limit is used up",
        statuses=frozenset({429}),
        codes=codes("DAILY"),
        daily_limit=True,
    ),
)

#: Every incremental stream is searched and ordered on this property.
STAMP = "hs_lastmodifieddate"
#: ``hs_v2_date_entered_<stage id>``: when the deal last entered that stage (search returns it
#: at no extra call: the stage history when propertiesWithHistory is not read).
DATE_ENTERED_PREFIX = "hs_v2_date_entered_"
#: HubSpot's batch endpoints (read, create, update, upsert) take at most 100 records a call.
BATCH_LIMIT = 100
