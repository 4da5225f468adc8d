"""HubSpot names shared by the connector (what it asks for) and the normalizer (what it reads)."""

from __future__ import annotations

__all__ = ["BATCH_LIMIT", "DATE_ENTERED_PREFIX", "STAMP"]

#: Every incremental stream is searched and ordered on this property.
STAMP = "hs_lastmodifieddate"
#: ``hs_v2_date_entered_<stage id>``: when the deal last entered that stage (search returns it
#: at no extra call: the stage history when propertiesWithHistory is not read).
DATE_ENTERED_PREFIX = "hs_v2_date_entered_"
#: HubSpot's batch endpoints (read, create, update, upsert) take at most 100 records a call.
BATCH_LIMIT = 100
