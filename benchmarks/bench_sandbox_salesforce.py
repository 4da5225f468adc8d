"""Benchmark: the sandbox Salesforce serving a full opportunity pull to the real client.

For each size it starts ``crm-kpi sandbox salesforce --deals N --port 0`` as its own process
(so its memory is measured alone), pages through every opportunity with its stage and
close-date histories (the worker's two subqueries) with simple-salesforce's
``query_all_iter`` (``--bulk``: a Bulk API 2.0 queryAll job of the opportunities alone, read
with ``sf.bulk2`` in sets of 50,000) and prints: start-up time, pages, API calls against the
documented minimum, the calls by route, rows per second served, and the server's peak
resident memory.

The documented minimum: child records of a subquery count toward the batch size (Query Options
header), so a REST pull needs at least ceil((opportunities + history rows) / 2000) pages, not
ceil(opportunities / 2000); pages pack whole opportunities, so a few more. A Bulk job: its
creation, one status poll, then one request per result set, ceil(N / 50,000).

    python benchmarks/bench_sandbox_salesforce.py               # 200k and 1M
    python benchmarks/bench_sandbox_salesforce.py --deals 20000  # a quick run
    python benchmarks/bench_sandbox_salesforce.py --bulk        # the same through Bulk API 2.0

Only loopback traffic; the server stops at the end.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import time
from dataclasses import dataclass

from sandbox_process import sandbox_process
from simple_salesforce import Salesforce

from crm_kpi_worker.connectors.http import build_session

FIELDS = (
    "Id, Name, AccountId, OwnerId, StageName, Amount, CurrencyIsoCode, CloseDate, Type,"
    " ForecastCategoryName, Probability, IsClosed, IsWon, CreatedDate, SystemModstamp"
)
HISTORIES = (
    "(SELECT StageName, CreatedDate FROM OpportunityHistories ORDER BY CreatedDate),"
    " (SELECT Field, OldValue, NewValue, CreatedDate FROM Histories WHERE Field = 'CloseDate'"
    " ORDER BY CreatedDate)"
)
PAGE_SIZE = 2000
BULK_SET_SIZE = 50_000


@dataclass
class Result:
    deals: int
    startup_s: float
    rows: int
    child_rows: int
    pages: int
    api_calls: int
    pull_s: float
    server_peak_mb: float
    by_route: dict[str, int]
    bulk: bool = False

    @property
    def minimum_calls(self) -> int:
        if self.bulk:  # create the job, poll it once, then one request per result set
            return 2 + math.ceil(self.deals / BULK_SET_SIZE)
        return math.ceil((self.rows + self.child_rows) / PAGE_SIZE)

    def lines(self) -> list[str]:
        return [
            f"deals {self.deals:,}",
            f"  server ready in        {self.startup_s:8.2f} s (generation + indexing + TLS)",
            f"  rows served            {self.rows:>10,} opportunities + {self.child_rows:,}"
            f" history rows in {self.pages} pages",
            f"  API calls              {self.api_calls:>10,} (minimum {self.minimum_calls:,};"
            f" ratio {self.api_calls / self.minimum_calls:.3f})",
            "  minimum                "
            + (
                f"2 + ceil({self.deals:,} / {BULK_SET_SIZE:,}): create, one poll, result sets"
                if self.bulk
                else f"ceil(({self.rows:,} + {self.child_rows:,}) / {PAGE_SIZE}): child records"
                f" count toward the batch; ceil(opportunities / {PAGE_SIZE}) would be"
                f" {math.ceil(self.rows / PAGE_SIZE):,}"
            ),
            "  calls by route         "
            + ", ".join(f"{route} {n}" for route, n in sorted(self.by_route.items())),
            f"  pull wall time         {self.pull_s:8.2f} s",
            f"  rows/s served          {self.rows / self.pull_s:>10,.0f}",
            f"  server peak memory     {self.server_peak_mb:8.1f} MB"
            f" ({self.server_peak_mb * 1024 * 1024 / self.deals:,.0f} bytes per opportunity)",
        ]


def run(deals: int, *, bulk: bool = False) -> Result:
    started = time.perf_counter()
    with sandbox_process("salesforce", "--deals", str(deals)) as sandbox:
        url, ca_path = sandbox.url, sandbox.ca_path
        startup = time.perf_counter() - started
        session = build_session(
            ca_bundle=ca_path, routes={"login.salesforce.com": url}, timeout=120
        )
        sf = Salesforce(
            username="demo@sandbox.local", password="demo", security_token="", session=session
        )
        before = sandbox.stats()["by_route"]
        pull_started = time.perf_counter()
        rows = child_rows = 0
        if bulk:
            soql = f"SELECT {FIELDS} FROM Opportunity"
            sets = sf.bulk2.Opportunity.query_all(soql, max_records=BULK_SET_SIZE, wait=0.05)
            rows = sum(sum(1 for _ in csv.reader(io.StringIO(text))) - 1 for text in sets)
        else:
            query = f"SELECT {FIELDS}, {HISTORIES} FROM Opportunity"
            for record in sf.query_all_iter(query, include_deleted=True):
                rows += 1
                for name in ("OpportunityHistories", "Histories"):
                    children = record[name]
                    if children is not None:
                        if not children["done"]:  # more than the sandbox inlines
                            raise SystemExit(
                                f"{record['Id']}: {name} has an unfinished child result"
                            )
                        child_rows += len(children["records"])
        pull = time.perf_counter() - pull_started
        by_route = {
            route: n - before.get(route, 0)
            for route, n in sandbox.stats()["by_route"].items()
            if n > before.get(route, 0)
        }
        pages = by_route.get("bulk_query_results", 0) + by_route.get("query_all", 0)
        pages += by_route.get("query_more", 0)
        calls = sum(by_route.values())
        return Result(
            deals,
            startup,
            rows,
            child_rows,
            pages,
            calls,
            pull,
            sandbox.peak_rss_mb(),
            by_route,
            bulk,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, action="append", help="sizes to run (repeatable)")
    parser.add_argument("--bulk", action="store_true", help="pull through Bulk API 2.0")
    args = parser.parse_args(argv)
    sizes = args.deals or [200_000, 1_000_000]
    print(f"sandbox Salesforce benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    for size in sizes:
        result = run(size, bulk=args.bulk)
        for line in result.lines():
            print(line)
        if result.rows != size:
            print(f"  ERROR: expected {size} rows, got {result.rows}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
