"""The run's compute phase on a store of N generated deals, without a sync.

Run: ``.venv/bin/python benchmarks/bench_compute.py [sizes...]`` (default 200000 1000000);
``--backend postgresql`` uses CRM_KPI_TEST_POSTGRES_URL (in a schema of its own, dropped at
the end); ``--store-dir DIR`` keeps the SQLite stores there and reuses them on the next run
(filling 1M deals takes a few minutes).

A store is filled through ``Store.save_page`` (pages of 2,000 deals, as a pull saves them)
with what a Salesforce pull of the demo org stores: deals in the demo config's stages with
about 3.3 stage changes and 1 close-date change each, one AE per 1,600 deals in teams of 8
with a manager each (the sandbox's proportions), one account per 4 deals (a tenth churned),
one demo event per deal, quarterly quotas. Then, in a fresh interpreter (so max RSS is the
compute phase's own):

- the compute phase as the run does it (``pipeline._compute``: frames from the store, the
  engine, storing the KPI values), split into frames / engine / save; the first run, then
  the best of two more;
- the yardstick: a bare read of the same columns (deals and demo activities of the source)
  with the DB driver's own cursor, rows fetched and dropped;
- the process's max RSS after the first compute phase (interpreter and imports included), and
  its growth over the RSS before it; the peak of Python and numpy allocations during one more
  compute phase, traced (tracemalloc; numpy reports its buffers to it).

Ratios printed: the compute phase and the frames against the bare read, and microseconds per
deal. Target: the compute phase under 2 s at 1,000,000 deals on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from crm_kpi_worker.config import path_of

PAGE = 2_000
SOURCE = "sandbox"  # the demo config's source
AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
T0 = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
DEALS_PER_AE = 1_600  # as the sandbox's filler: 800 deals a year per AE over two years
TEAM_SIZE = 8
FUNNEL = ("prospecting", "qualification", "demo", "proposal", "negotiation")


def _user_count(total: int) -> tuple[int, int]:
    """AEs and users (AEs plus one manager per team), as the sandbox's filler has them."""
    aes = max(1, round(total / DEALS_PER_AE))
    return aes, aes + -(-aes // TEAM_SIZE)


def _users(total: int) -> list[Any]:
    from crm_kpi_worker.sync.model import Rep

    aes, users = _user_count(total)
    return [
        Rep.model_construct(
            id=f"005{u:015d}",
            name=f"Rep {u}",
            email=f"rep{u}@example.com",
            team=f"Team {u % -(-aes // TEAM_SIZE)}" if u < aes else None,
            manager_id=None,
            is_active=True,
            start_date=dt.date(2024, 1, 1) + dt.timedelta(days=u),
            is_ae=u < aes,
        )
        for u in range(users)
    ]


def pages(total: int) -> Iterator[Any]:
    """The pages a full pull of ``total`` deals would save (deals with their histories and
    demos first, then users, accounts and quotas)."""
    from crm_kpi_worker.sync.model import (
        Account,
        Activity,
        Deal,
        DealType,
        FieldChange,
        ForecastCategory,
        Quota,
        QuotaSource,
        StageChange,
    )
    from crm_kpi_worker.sync.store import StoredPage

    types = list(DealType)
    forecasts = list(ForecastCategory)
    accounts = max(1, total // 4)
    _, users = _user_count(total)
    for start in range(0, total, PAGE):
        deals, stage_changes, field_changes, demos = [], {}, {}, []
        for n in range(start, min(start + PAGE, total)):
            deal_id = f"006{n:015d}"
            created = T0 + dt.timedelta(seconds=(n * 86_400 * 1_400) // total, microseconds=n)
            outcome = n % 7  # 0-1 won, 2-3 lost, else open
            reached = 1 + n % 5  # funnel stages passed
            won, closed = outcome < 2, outcome < 4
            stage = "closed_won" if won else "closed_lost" if closed else FUNNEL[reached - 1]
            if n % 997 == 0:
                stage = "legacy_stage"  # not in the mapping: the bad-data branch
            close = (created + dt.timedelta(days=20 + n % 150)).date()
            amount = Decimal(5_000 + (n % 400) * 125) if n % 53 else None
            history = [
                StageChange.model_construct(
                    deal_id=deal_id, stage=FUNNEL[k], entered_at=created + dt.timedelta(days=6 * k)
                )
                for k in range(reached)
            ]
            if closed:
                history.append(
                    StageChange.model_construct(
                        deal_id=deal_id, stage=stage, entered_at=created + dt.timedelta(days=40)
                    )
                )
            stage_changes[deal_id] = history
            field_changes[deal_id] = [
                FieldChange.model_construct(
                    deal_id=deal_id,
                    field="close_date",
                    old_value=close - dt.timedelta(days=14 * (n % 3 - 1)),
                    new_value=close,
                    changed_at=created + dt.timedelta(days=10),
                )
            ]
            deals.append(
                Deal.model_construct(
                    id=deal_id,
                    source=SOURCE,
                    name=f"Deal {n}",
                    owner_id=f"005{n % users:015d}" if n % 101 else None,
                    account_id=f"001{n % accounts:015d}" if n % 9 else None,
                    created_at=created,
                    close_date=close if n % 211 else None,
                    stage=stage,
                    is_won=won,
                    is_closed=closed,
                    amount=amount,
                    currency="EUR",
                    arr=amount,
                    deal_type=types[n % len(types)],
                    forecast_category=forecasts[n % len(forecasts)],
                    probability=Decimal("0.6") if n % 3 else None,
                    term_months=12,
                    is_deleted=False,
                    last_modified=created + dt.timedelta(days=45),
                )
            )
            demos.append(
                Activity.model_construct(
                    id=f"00U{n:015d}",
                    owner_id=f"005{(n * 7) % users:015d}",
                    deal_id=deal_id,
                    kind="demo",
                    start=created + dt.timedelta(days=12, hours=n % 9),
                )
            )
        yield StoredPage(
            source=SOURCE,
            stream="deals",
            cursor=deals[-1].last_modified.isoformat(),
            deals=deals,
            stage_changes=stage_changes,
            field_changes=field_changes,
            activities=demos,
        )
    reps = _users(total)
    quarters = [dt.date(year, month, 1) for year in (2025, 2026) for month in (1, 4, 7, 10)]
    yield StoredPage(
        source=SOURCE,
        stream="users",
        reps=reps,
        accounts=[
            Account.model_construct(
                id=f"001{a:015d}",
                name=f"Account {a}",
                churn_date=dt.date(2025, 1, 1) + dt.timedelta(days=a % 600)
                if a % 10 == 0
                else None,
            )
            for a in range(accounts)
        ],
        quotas=[
            Quota.model_construct(
                rep_id=rep.id,
                period_start=start,
                period_end=(start + dt.timedelta(days=95)).replace(day=1) - dt.timedelta(days=1),
                amount=Decimal(150_000),
                source=QuotaSource.CRM,
            )
            for rep in reps
            if rep.is_ae
            for start in quarters
        ],
    )


def fill(url: str, total: int) -> float:
    from crm_kpi_worker.sync.store import Store

    started = time.perf_counter()
    with Store.open(url) as store:
        for page in pages(total):
            store.save_page(page)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Measuring (in a fresh interpreter)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compute_phase(store: Any, config: Any) -> dict[str, float]:
    """The run's compute phase (pipeline._compute), its parts timed."""
    from crm_kpi_worker.kpis import engine
    from crm_kpi_worker.sync import frames, pipeline
    from crm_kpi_worker.sync.store import Store

    times = {"frames": 0.0, "engine": 0.0}

    def timed(name: str, function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times[name] += time.perf_counter() - started

        return call

    source = config.sources[0]
    run_id = store.start_run(AS_OF, {})
    report = pipeline.SourceReport(source.name)
    build_input, compute = pipeline.build_input, pipeline.compute
    pipeline.build_input = timed("frames", frames.build_input)  # type: ignore[attr-defined]
    pipeline.compute = timed("engine", engine.compute)  # type: ignore[attr-defined]
    cpu = time.process_time()
    started = time.perf_counter()
    try:
        inputs, results = pipeline._compute(config, store, source, AS_OF, run_id, report)
    finally:
        pipeline.build_input, pipeline.compute = build_input, compute  # type: ignore[attr-defined]
    total = time.perf_counter() - started
    assert isinstance(store, Store)
    store.finish_run(run_id, "completed", {})
    return {
        "phase": total,
        "cpu": time.process_time() - cpu,
        "frames": times["frames"],
        "engine": times["engine"],
        "save": total - times["frames"] - times["engine"],
        "deals": len(inputs.deals),
        "rows": len(results.rows),
    }


def bare_read(store: Any) -> float:
    """The same columns of the same rows, read with the driver's own cursor and dropped."""
    from sqlalchemy import and_, select

    from crm_kpi_worker.sync.store.schema import activities, deals

    d, a = deals.c, activities.c
    statements = [
        select(
            d.id,
            d.owner_id,
            d.account_id,
            d.stage,
            d.deal_type,
            d.forecast_category,
            d.created_at,
            d.close_date,
            d.is_won,
            d.is_closed,
            d.arr,
            d.probability,
            d.stage_history,
            d.close_date_history,
        ).where(d.source == SOURCE, ~d.is_deleted),
        select(a.owner_id, a.start).where(
            and_(a.source == SOURCE, a.kind == "demo", ~a.is_deleted)
        ),
    ]
    db = store._db
    started = time.perf_counter()
    with db.read() as connection:
        for statement in statements:
            for _ in db.fetch_rows(connection, statement):
                pass
    return time.perf_counter() - started


def measure(url: str) -> dict[str, Any]:
    from crm_kpi_worker.sync.config_loader import load_config
    from crm_kpi_worker.sync.store import Store
    from crm_kpi_worker.sync.store.schema import forecast_snapshots, kpi_history, kpi_values

    config = load_config(path_of("demo-salesforce.yaml"))
    with Store.open(url) as store:
        with store._db.write() as connection:  # the first compute phase is a first run's
            for table in (kpi_history, kpi_values, forecast_snapshots):
                connection.execute(table.delete())
        rss_before = _rss_mb()
        first = compute_phase(store, config)
        max_rss = _max_rss_mb()
        bare = min(bare_read(store) for _ in range(2))
        again = [compute_phase(store, config) for _ in range(2)]
        tracemalloc.start()
        compute_phase(store, config)
        traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    best = min(again, key=lambda m: m["phase"])
    return {
        "first": first,
        "best": best,
        "bare": bare,
        "rss_before_mb": rss_before,
        "max_rss_mb": max_rss,
        "traced_peak_mb": traced_peak,
    }


# ---------------------------------------------------------------------------------------------


def _run_self(*args: str) -> dict[str, Any]:
    out = subprocess.run(  # noqa: S603 (this script, by path)
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def _sqlite_store(size: int, folder: Path) -> str:
    path = folder / f"compute-{size}.sqlite"
    if not path.exists():
        partial = path.with_suffix(".partial")
        for leftover in folder.glob(f"{partial.name}*"):
            leftover.unlink()
        seconds = _run_self("--fill", f"sqlite:///{partial}", str(size))["seconds"]
        print(f"  filled {size:,} deals in {seconds:.0f} s", flush=True)
        partial.rename(path)
    return f"sqlite:///{path}"


def _report(size: int, m: dict[str, Any], first_size: dict[str, Any] | None) -> None:
    bare = m["bare"]
    for label in ("first", "best"):
        r = m[label]
        print(
            f"  {size:>9,} deals {label:5}: compute phase {r['phase']:5.2f} s"
            f" ({r['cpu']:.2f} s of CPU): frames {r['frames']:5.2f} s, engine"
            f" {r['engine']:4.2f} s, save {r['save']:4.2f} s | vs the bare read:"
            f" {r['phase'] / bare:4.2f}x (frames {r['frames'] / bare:4.2f}x);"
            f" {r['phase'] / size * 1e6:.2f} us/deal",
            flush=True,
        )
    grown = m["max_rss_mb"] - m["rss_before_mb"]
    line = (
        f"  {'':>9}        bare read {bare:5.2f} s; max RSS {m['max_rss_mb']:5.0f} MB"
        f" ({grown:.0f} MB over the {m['rss_before_mb']:.0f} MB before the compute phase,"
        f" {grown / size * 1e3:.2f} MB per 1,000 deals); traced peak"
        f" {m['traced_peak_mb']:.0f} MB"
    )
    if first_size is not None:
        scale = size / first_size["size"]
        time_growth = m["best"]["phase"] / first_size["phase"] / scale
        memory_growth = grown / first_size["rss"] / scale
        line += (
            f"; growth per deal vs {first_size['size']:,}: time x{time_growth:.2f},"
            f" RSS x{memory_growth:.2f}"
        )
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[200_000, 1_000_000])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--store-dir", type=Path, help="keep and reuse the SQLite stores here")
    parser.add_argument("--fill", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        print(json.dumps({"seconds": fill(args.fill[0], int(args.fill[1]))}))
        return
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    print(f"compute phase on {args.backend}, demo config, as of {AS_OF:%Y-%m-%d}", flush=True)
    first_size: dict[str, Any] | None = None
    for size in args.sizes:
        if args.backend == "sqlite":
            if args.store_dir is not None:
                args.store_dir.mkdir(parents=True, exist_ok=True)
                m = _run_self("--measure", _sqlite_store(size, args.store_dir))
            else:
                with tempfile.TemporaryDirectory() as folder:
                    m = _run_self("--measure", _sqlite_store(size, Path(folder)))
        else:
            m = _postgresql(size)
        _report(size, m, first_size)
        if first_size is None:
            first_size = {
                "size": size,
                "phase": m["best"]["phase"],
                "rss": m["max_rss_mb"] - m["rss_before_mb"],
            }
    print("target: the compute phase under 2 s at 1,000,000 deals")


def _postgresql(size: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from crm_kpi_worker.sync.store import normalise_url

    admin = sa.create_engine(normalise_url(os.environ["CRM_KPI_TEST_POSTGRES_URL"]))
    schema = f"crm_kpi_bench_{uuid.uuid4().hex[:8]}"
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = admin.url.update_query_dict({"options": f"-csearch_path={schema}"})
        rendered = url.render_as_string(hide_password=False)
        seconds = _run_self("--fill", rendered, str(size))["seconds"]
        print(f"  filled {size:,} deals in {seconds:.0f} s", flush=True)
        return _run_self("--measure", rendered)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
