"""HubSpot's stamps, and the search past the 10,000-result cap.

The windowed search itself is the shared paginator layer's
(:func:`crm_kpi_worker.connectors.paging.windowed_search`); stamps are parsed by the one parser
of :mod:`crm_kpi_worker.connectors.stamps`. This module names them where the HubSpot connector,
its tests and benchmarks look for them.
"""

from __future__ import annotations

from crm_kpi_worker.connectors.paging import SEARCH_CAP, stamp_ms, windowed_search
from crm_kpi_worker.connectors.stamps import StampFormat, to_ms

__all__ = [
    "SEARCH_CAP",
    "STAMPS",
    "format_stamp",
    "parse_stamp",
    "stamp_ms",
    "to_ms",
    "windowed_search",
]

#: HubSpot writes instants as 2026-09-30T12:00:00.000Z (and some as epoch milliseconds).
STAMPS = StampFormat("HubSpot", "Z")
parse_stamp = STAMPS.parse
format_stamp = STAMPS.format
