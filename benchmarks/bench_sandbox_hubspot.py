"""Benchmark: the sandbox HubSpot portal serving a full deal pull to the real client.

For each size it starts ``crm-kpi sandbox hubspot --deals N --port 0`` (search rate limit off)
as its own process, so its memory is measured alone, then reads every live deal through the
search endpoint with hubspot-api-client: 200 a page, sorted by hs_lastmodifieddate, in windows
of at most 10,000 results (HubSpot's cap per query). A window restarts after the last record
read: ``hs_lastmodifieddate > t`` OR (``= t`` AND ``hs_object_id > id``), so records sharing a
millisecond are neither lost nor read twice. It prints start-up time, pages, search calls
against the minimum (ceil(live / 200)), rows per second, and the server's peak memory.

    python benchmarks/bench_sandbox_hubspot.py                # 200k
    python benchmarks/bench_sandbox_hubspot.py --deals 20000  # a quick run

Only loopback traffic; the server stops at the end. No assertion on times.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import hubspot
from sandbox_process import sandbox_process

PAGE_SIZE = 200
CAP = 10_000
PROPERTIES = [
    "dealname", "amount", "deal_currency_code", "amount_in_home_currency", "closedate",
    "dealstage", "pipeline", "dealtype", "hubspot_owner_id", "hs_lastmodifieddate",
    "createdate", "hs_forecast_category", "hs_deal_stage_probability",
]  # fmt: skip


@dataclass
class Result:
    deals: int
    startup_s: float
    rows: int
    live: int
    pages: int
    windows: int
    search_calls: int
    pull_s: float
    server_peak_mb: float

    @property
    def minimum_calls(self) -> int:
        return max(1, math.ceil(self.live / PAGE_SIZE))

    def lines(self) -> list[str]:
        return [
            f"deals {self.deals:,} ({self.live:,} live; search never returns archived ones)",
            f"  server ready in        {self.startup_s:8.2f} s (generation + indexing + TLS)",
            f"  rows served            {self.rows:>10,} in {self.pages} pages,"
            f" {self.windows} windows of <= {CAP:,}",
            f"  search calls           {self.search_calls:>10,} (minimum {self.minimum_calls:,};"
            f" ratio {self.search_calls / self.minimum_calls:.3f})",
            f"  pull wall time         {self.pull_s:8.2f} s",
            f"  rows/s served          {self.rows / self.pull_s:>10,.0f}",
            f"  server peak memory     {self.server_peak_mb:8.1f} MB"
            f" ({self.server_peak_mb * 1024 * 1024 / self.deals:,.0f} bytes per deal)",
        ]


def _window(cursor: tuple[str, str] | None) -> list[dict[str, Any]]:
    if cursor is None:
        return []
    stamp, last_id = cursor
    return [
        {"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GT", "value": stamp}]},
        {
            "filters": [
                {"propertyName": "hs_lastmodifieddate", "operator": "EQ", "value": stamp},
                {"propertyName": "hs_object_id", "operator": "GT", "value": last_id},
            ]
        },
    ]


def pull_all(client: Any) -> tuple[int, int, int, int]:
    """Every live deal through search; (rows, pages, windows, total of the first query)."""
    api = client.crm.deals.search_api
    rows = pages = windows = 0
    cursor: tuple[str, str] | None = None
    seen: set[str] = set()
    first_total = -1
    while True:
        windows += 1
        after = 0
        last = None
        while True:
            body = {
                "filterGroups": _window(cursor),
                "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
                "properties": PROPERTIES,
                "limit": PAGE_SIZE,
                "after": str(after),
            }
            page = api.do_search(body)
            pages += 1
            if first_total < 0:
                first_total = page.total
            for record in page.results:
                if record.id not in seen:
                    seen.add(record.id)
                    rows += 1
                last = record
            after += PAGE_SIZE
            if page.paging is None or after + PAGE_SIZE > CAP:
                break
        if page.paging is None or last is None:
            return rows, pages, windows, first_total
        modified = last.properties["hs_lastmodifieddate"]
        cursor = (modified, last.id)


def run(deals: int) -> Result:
    started = time.perf_counter()
    with sandbox_process("hubspot", "--deals", str(deals), "--search-per-second", "0") as sandbox:
        url, ca_path = sandbox.url, sandbox.ca_path
        token = re.search(r"private-app token \(Bearer\): (\S+)", sandbox.banner)
        assert token is not None, sandbox.banner
        startup = time.perf_counter() - started
        client = hubspot.Client.create(access_token=token.group(1), host=url, ssl_ca_cert=ca_path)
        pull_started = time.perf_counter()
        rows, pages, windows, live = pull_all(client)
        pull = time.perf_counter() - pull_started
        stats = sandbox.stats()
        return Result(
            deals,
            startup,
            rows,
            live,
            pages,
            windows,
            stats["search_calls"],
            pull,
            sandbox.peak_rss_mb(),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, action="append", help="sizes to run (repeatable)")
    args = parser.parse_args(argv)
    sizes = args.deals or [200_000]
    print(f"sandbox HubSpot benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    for size in sizes:
        result = run(size)
        for line in result.lines():
            print(line)
        if result.rows != result.live:
            print(f"  ERROR: expected {result.live} live deals, got {result.rows}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
