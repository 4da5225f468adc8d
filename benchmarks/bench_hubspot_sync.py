"""Benchmark: a full sync of the sandbox HubSpot portal with N deals (default 200,000).

The sandbox runs as its own process (``crm-kpi sandbox hubspot``); the worker runs here. In
the same run it measures:

- a bare hubspot-api-client loop over the same sandbox: every stream's search (same object
  types, properties, filters, 200 a page, windowed past the 10,000 cap the way any client
  must), owners and pipelines, through the client's own ``do_search``/``get_page`` calls (its
  models deserialised), records only counted: the yardstick for the pull;
- one full ``sync`` (the HubSpot demo config with the default close_date_history: false):
  pull, KPIs, write-back (batch update of every deal, scorecards upserted);

and prints wall times, deals/s, the pull phase (seconds, calls, records a second, and which
road each pulled object took: list pages, search pages, counts), API calls against the
minimum (one call per 200 records per searched stream, per 100 records of the type per listed
one; ceil(changed / 100) per written object), the worker's peak memory and the ratio of the
pull phase to the bare loop.

By default the sandbox enforces no rate limit and the worker does not pace itself, so the
figures measure the software; ``--hubspot-limits`` keeps HubSpot's (5 searches a second, 190
calls per 10 s: a Professional or Enterprise portal) on both sides, and the run then takes as
long as those limits make it; the bare loop, a client that does not pace itself, is skipped
then. ``--road`` sets the source's ``full_pull`` (auto, search or list) to measure each road
of the first run's full pull; ``--runs`` repeats the whole measure, each on a fresh sandbox.
Loopback only.

    python benchmarks/bench_hubspot_sync.py                  # 200,000 deals
    python benchmarks/bench_hubspot_sync.py --deals 20000    # a quick run
    python benchmarks/bench_hubspot_sync.py --deals 20000 --hubspot-limits --road list --runs 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import hubspot
from sandbox_process import sandbox_process

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.hubspot.connector import GOAL_PROPERTIES, HubSpotConnector
from crm_kpi_worker.connectors.hubspot.search import SEARCH_CAP, parse_stamp
from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.pipeline import RunOptions, run_once
from crm_kpi_worker.sync.setup import set_up_source
from crm_kpi_worker.sync.store import Store

SEARCH_PAGE = 200
LIST_PAGE = 100
WRITE_BATCH = 100
AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
SEARCHED = {"deals", "accounts", "activities", "quotas"}


#: HubSpot's limits for a Professional or Enterprise portal, as the sandbox keeps them.
HUBSPOT_LIMITS = {"search_per_second": 5, "per_10_seconds": 190}
#: HubSpot's general limit is counted over a rolling window this long (with a margin).
LIMIT_WINDOW_SECONDS = 10.5
#: Objects a full pull may list, by the stream that pulls them (the demo config's).
LISTABLE = {"deals": "deals", "accounts": "companies", "activities": "meetings"}


def config_for(url: str, ca: str, store: Path, limits: bool, road: str) -> AppConfig:
    config = load_config(path_of("demo-hubspot.yaml"))
    source = config.sources[0]
    mapping = {**source.mapping.model_dump(exclude_unset=True), "close_date_history": False}
    changes: dict[str, Any] = {
        "base_url": url,
        "ca_bundle": ca,
        "mapping": mapping,
        "full_pull": road,
        "rate_limits": (
            HUBSPOT_LIMITS if limits else {"search_per_second": 100, "per_10_seconds": 10_000}
        ),
    }
    source = source.with_changes(**changes)
    store_settings = config.store.model_copy(update={"url": f"sqlite:///{store}"})
    return config.replace_source(source).model_copy(update={"store": store_settings})


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_search(
    client: Any, object_type: str, properties: list[str], filters: list[dict[str, Any]]
) -> int:
    """Every record of a search through the client's own do_search (models deserialised),
    restarting at the last stamp when a query reaches the 10,000 cap, ids counted once."""
    api = client.crm.objects.search_api
    properties = list(dict.fromkeys([*properties, "hs_lastmodifieddate", "hs_object_id"]))
    low: str | None = None
    seen_at_low: set[str] = set()
    count = 0
    while True:
        window = list(filters)
        if low is not None:
            window.append({"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": low})
        body: dict[str, Any] = {
            "filterGroups": [{"filters": window}] if window else [],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": properties,
            "limit": SEARCH_PAGE,
        }
        last_stamp = None
        at_last: set[str] = set()
        while True:
            page = api.do_search(object_type, body)
            for record in page.results:
                stamp = record.properties.get("hs_lastmodifieddate") or ""
                if stamp != last_stamp:
                    last_stamp, at_last = stamp, set()
                at_last.add(record.id)
                if (
                    low is not None
                    and stamp
                    and _ms(stamp) == int(low)
                    and record.id in seen_at_low
                ):
                    continue
                count += 1
            following = page.paging.next.after if page.paging and page.paging.next else None
            if following is None:
                return count
            if int(following) + SEARCH_PAGE > SEARCH_CAP:
                break
            body["after"] = following
        low, seen_at_low = str(_ms(last_stamp or "")), at_last


def _ms(stamp: str) -> int:
    return round(parse_stamp(stamp).timestamp() * 1000)


def bare_loop(client: Any, connector: HubSpotConnector) -> tuple[int, float]:
    """The yardstick: what the pull reads, through plain client calls."""
    mapping = connector.mapping
    started = time.perf_counter()
    rows = 0
    stages = client.crm.pipelines.pipelines_api.get_all("deals").results
    rows += sum(len(pipeline.stages) for pipeline in stages)
    for archived in (False, True):
        after = None
        while True:
            owners = client.crm.owners.owners_api.get_page(
                limit=LIST_PAGE, archived=archived, **({"after": after} if after else {})
            )
            rows += len(owners.results)
            if not (owners.paging and owners.paging.next):
                break
            after = owners.paging.next.after
    deal_properties = connector.deal_properties()  # the same properties as the pull
    rows += bare_search(client, "deals", deal_properties, [])
    if mapping.churn_date:
        rows += bare_search(
            client,
            "companies",
            ["name", "createdate", mapping.churn_date],
            [{"propertyName": mapping.churn_date, "operator": "HAS_PROPERTY"}],
        )
    if mapping.demos:
        demos = mapping.demos
        rows += bare_search(
            client,
            demos.object,
            [demos.type_field, demos.owner_field, demos.start_field],
            [{"propertyName": demos.type_field, "operator": "IN", "values": list(demos.values)}],
        )
    rows += bare_search(client, "goal_targets", list(GOAL_PROPERTIES), [])
    return rows, time.perf_counter() - started


def live_records(client: Any, object_type: str) -> int:
    """How many live records of ``object_type`` the portal holds (a search's total)."""
    return int(client.crm.objects.search_api.do_search(object_type, {"limit": 1}).total)


def run(deals: int, limits: bool, road: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="crm-kpi-bench-hs-") as folder:
        work = Path(folder)
        options = ["--deals", str(deals), "--workdir", str(work), "--daily-limit", "0"]
        if not limits:
            options += ["--search-per-second", "0", "--burst-per-10s", "0"]
        with sandbox_process("hubspot", *options) as sandbox:
            url, ca = sandbox.url, sandbox.ca_path
            config = config_for(url, ca, work / "store.sqlite", limits, road)
            source = config.sources[0]
            connector = build_connector(source, config.currency)
            assert isinstance(connector, HubSpotConnector)
            # crm-kpi setup: the fields, the permission sets, the layout section.
            set_up_source(config, source, connector, dry_run=False, say=lambda line: None)

            client = hubspot.Client.create(
                access_token="pat-sandbox-demo",
                host=url,
                ssl_ca_cert=ca,
            )
            bare: tuple[int, float, int] | None = None
            if not limits:  # a client that does not pace itself meets HubSpot's 429s
                before = sandbox.stats()
                bare_rows, bare_seconds = bare_loop(client, connector)
                bare = (bare_rows, bare_seconds, sandbox.stats()["api_calls"] - before["api_calls"])
            else:
                # The setup's calls fill part of the portal's rolling 10 s; a scheduled sync
                # starts with it empty, and so does the measured one.
                time.sleep(LIMIT_WINDOW_SECONDS)
            memory_before_sync = peak_mb()

            stats_before = sandbox.stats()
            started = time.perf_counter()
            with Store.open(config.store.resolve_url()) as store:
                result = run_once(config, store, RunOptions(as_of=AS_OF))
            wall = time.perf_counter() - started
            stats_after = sandbox.stats()
            report = result.report()["sources"][0]
            # Counted after the sync, whose writes change no count, to leave its pace alone.
            population = {stream: live_records(client, name) for stream, name in LISTABLE.items()}
    served = {
        route: stats_after["by_route"].get(route, 0) - stats_before["by_route"].get(route, 0)
        for route in stats_after["by_route"]
    }
    write_calls = sum(
        n for route, n in served.items() if "/batch/update" in route or "/batch/upsert" in route
    )
    total_calls = stats_after["api_calls"] - stats_before["api_calls"]
    pull_calls = total_calls - write_calls
    roads = {
        stream: {
            "list pages": served.get(f"GET /crm/v3/objects/{name}", 0),
            "search pages": served.get(f"POST /crm/v3/objects/{name}/search", 0),
        }
        for stream, name in LISTABLE.items()
    }
    pull_minimum = 0
    for stream, pulled in report["pulled"].items():
        if stream == "stages":
            pull_minimum += 1
        elif stream == "users":
            pull_minimum += 2 * max(1, math.ceil(pulled / 2 / LIST_PAGE))  # active, archived
        elif stream in roads and roads[stream]["list pages"]:
            pull_minimum += max(1, math.ceil(population[stream] / LIST_PAGE))
        elif stream in SEARCHED:
            pull_minimum += max(1, math.ceil(pulled / SEARCH_PAGE))
    written = {w["object"]: w for w in report["written"]}
    write_minimum = sum(math.ceil(w["records_written"] / WRITE_BATCH) for w in written.values())
    return {
        "deals": deals,
        "limits": limits,
        "road": road,
        "roads": roads,
        "bare": bare,
        "report": report,
        "wall": wall,
        "pull_calls": pull_calls,
        "pull_minimum": pull_minimum,
        "write_calls": write_calls,
        "write_minimum": write_minimum,
        "served": served,
        "peak_mb": peak_mb(),
        "peak_mb_before_sync": memory_before_sync,
    }


def print_result(r: dict[str, Any]) -> None:
    report = r["report"]
    seconds = report["seconds"]
    deals = r["deals"]
    phases = ", ".join(f"{name} {seconds[name]:.1f}" for name in ("pull", "compute", "write"))
    pulled = ", ".join(f"{k} {v:,}" for k, v in report["pulled"].items())
    records = sum(report["pulled"].values())
    total = r["pull_calls"] + r["write_calls"]
    minimum = r["pull_minimum"] + r["write_minimum"]
    limits = "HubSpot's rate limits" if r["limits"] else "no rate limit"
    roads = "; ".join(
        f"{stream} {calls['list pages']:,} list + {calls['search pages']:,} search"
        for stream, calls in r["roads"].items()
    )
    if r["bare"] is None:
        bare = ["  bare client loop          skipped (it does not pace itself)"]
    else:
        bare_rows, bare_seconds, bare_calls = r["bare"]
        bare = [
            f"  bare client loop          {bare_seconds:9.1f} s  ({bare_rows:,} records,"
            f" {bare_calls:,} calls)",
            f"  pull phase / bare loop    {seconds['pull'] / bare_seconds:9.2f} x  (target <= 2)",
        ]
    lines = [
        f"full sync of {deals:,} deals (sandbox HubSpot in its own process, {limits}, SQLite,"
        f" full_pull: {r['road']})",
        f"  wall time                 {r['wall']:9.1f} s  ({phases})",
        f"  deals/s (whole sync)      {deals / r['wall']:9,.0f}",
        f"  pull phase                {seconds['pull']:9.1f} s  ({r['pull_calls']:,} calls,"
        f" {records / seconds['pull']:,.0f} records/s)",
        f"  pull calls by road        {roads}",
        *bare,
        f"  pulled                    {pulled}",
        f"  pull API calls            {r['pull_calls']:9,}  (minimum {r['pull_minimum']:,}: one per"
        f" {SEARCH_PAGE} searched records, per {LIST_PAGE} listed owners or records of a listed"
        f" type; deals {report['pages']['deals']:,} pages)",
        f"  write API calls           {r['write_calls']:9,}  (minimum {r['write_minimum']:,}:"
        f" ceil(changed/{WRITE_BATCH}) per object)",
        f"  API calls vs minimum      {total / minimum:9.3f} x  ({total:,} vs {minimum:,};"
        " target within 2%)",
        f"  worker peak memory        {r['peak_mb']:9.0f} MB (target < 1024;"
        f" {r['peak_mb_before_sync']:.0f} MB before the sync)",
        f"  excluded                  {report['excluded']['total']:,}"
        f" ({report['excluded']['by_reason']})",
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=200_000)
    parser.add_argument(
        "--hubspot-limits",
        action="store_true",
        help="keep HubSpot's rate limits in the sandbox and the worker's pacing",
    )
    parser.add_argument(
        "--road",
        choices=("auto", "search", "list"),
        default="auto",
        help="the source's full_pull: the road of the first run's full pull",
    )
    parser.add_argument("--runs", type=int, default=1, help="measure this many times")
    args = parser.parse_args(argv)
    for _ in range(args.runs):
        print_result(run(args.deals, args.hubspot_limits, args.road))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
