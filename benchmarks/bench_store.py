"""State store throughput: save_page (deals/s) and iter_deal_arrays (s) for N synthetic deals.

Run: ``.venv/bin/python benchmarks/bench_store.py [sizes...]`` (default 200000 1000000).
SQLite always; PostgreSQL too when CRM_KPI_TEST_POSTGRES_URL is set (in a schema of its own,
dropped at the end). ``--layouts N`` instead compares, on SQLite at N deals, the two ways of
storing histories that were considered: text columns on the deal row (what the store does) and
child tables written with executemany.

Each size runs in a fresh interpreter so max RSS means something. Pages hold 2,000 deals, each
with 4 stage changes and 1 close-date change, as a Salesforce pull delivers them. Only store
calls are timed (building the pydantic records is the normalizer's cost, not the store's).
Ratios printed: microseconds per deal, and growth against the first size (1.0 = linear).
Also timed at the same size: save_kpis with one value per deal (a first run, then a run that
changes a tenth of them), record_written of one value per deal, and reading it back.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from itertools import accumulate
from pathlib import Path

from crm_kpi_worker.sync.store import DEAL_COLUMNS  # the store's own column list

PAGE = 2_000
T0 = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
STAGES = ("qualified", "demo", "negotiation", "closed_won", "closed_lost")


def pages(total: int, source: str = "sf") -> Iterator[object]:
    from crm_kpi_worker.sync.model import (
        Deal,
        DealType,
        FieldChange,
        ForecastCategory,
        StageChange,
    )
    from crm_kpi_worker.sync.store import StoredPage

    construct_deal = Deal.model_construct
    construct_stage = StageChange.model_construct
    construct_field = FieldChange.model_construct
    for start in range(0, total, PAGE):
        deals, stage_changes, field_changes = [], {}, {}
        for n in range(start, min(start + PAGE, total)):
            deal_id = f"006{n:015d}"
            created = T0 + dt.timedelta(seconds=37 * n)
            won = n % 4 == 0
            closed = won or n % 4 == 1
            close = (created + dt.timedelta(days=30 + n % 90)).date()
            amount = Decimal(5_000 + (n % 400) * 50)
            deals.append(
                construct_deal(
                    id=deal_id,
                    source=source,
                    name=f"Deal {n}",
                    owner_id=f"005{n % 300:015d}",
                    account_id=f"001{n % 90_000:015d}",
                    created_at=created,
                    close_date=close,
                    stage="closed_won" if won else "closed_lost" if closed else "negotiation",
                    is_won=won,
                    is_closed=closed,
                    amount=amount,
                    currency="EUR" if n % 10 else "USD",
                    arr=amount,
                    deal_type=DealType.NEW_BUSINESS,
                    forecast_category=ForecastCategory.CLOSED
                    if closed
                    else ForecastCategory.COMMIT,
                    probability=Decimal("1") if won else Decimal("0.6"),
                    term_months=12,
                    is_deleted=False,
                    last_modified=created + dt.timedelta(days=40),
                )
            )
            stage_changes[deal_id] = [
                construct_stage(
                    deal_id=deal_id, stage=stage, entered_at=created + dt.timedelta(days=7 * k)
                )
                for k, stage in enumerate((*STAGES[:3], deals[-1].stage))
            ]
            field_changes[deal_id] = [
                construct_field(
                    deal_id=deal_id,
                    field="close_date",
                    old_value=close - dt.timedelta(days=14),
                    new_value=close,
                    changed_at=created + dt.timedelta(days=10),
                )
            ]
        yield StoredPage(
            source=source,
            stream="deals",
            cursor=deals[-1].last_modified.isoformat(),
            deals=deals,
            stage_changes=stage_changes,
            field_changes=field_changes,
        )


def measure_store(url: str, total: int) -> dict[str, float]:
    from crm_kpi_worker.sync.store import Store

    store = Store.open(url)
    saving = 0.0
    for page in pages(total):
        start = time.perf_counter()
        store.save_page(page)
        saving += time.perf_counter() - start
    # A second pass over the first pages: updates instead of inserts.
    updating, updated = 0.0, 0
    for page in pages(min(total, 20 * PAGE)):
        start = time.perf_counter()
        store.save_page(page)
        updating += time.perf_counter() - start
        updated += len(page.deals)  # type: ignore[attr-defined]
    gc.collect()
    # The bulk read the KPI frames use: numpy arrays, chunk by chunk.
    array_reads = []
    for _ in range(2):
        start = time.perf_counter()
        count = entries = 0
        for chunk in store.iter_deal_arrays("sf"):
            count += len(chunk)
            entries += len(chunk.stage_history_entered_at)
        array_reads.append(time.perf_counter() - start)
        gc.collect()
    # KPI values: one per deal (as deal fields are), then a second run changing a tenth.
    from crm_kpi_worker.sync.store import KpiRow

    def kpi_rows(run: int) -> Iterator[KpiRow]:
        for n in range(total):
            value = n % 97 + (run if n % 10 == 0 else 0)
            yield KpiRow("sf", "deal", f"006{n:015d}", "", "", "deal_age_days", Decimal(value))

    kpi_times = []
    for run in (1, 2):
        run_id = store.start_run(T0, {})
        start = time.perf_counter()
        store.save_kpis(run_id, kpi_rows(run))
        kpi_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    store.record_written(
        "sf", "Opportunity", ((f"006{n:015d}", "KPI_Age__c", n % 97) for n in range(total))
    )
    record_s = time.perf_counter() - start
    start = time.perf_counter()
    written = store.written("sf", "Opportunity")
    written_s = time.perf_counter() - start
    assert len(written) == total
    del written
    store.close()
    assert count == total, (count, total)
    assert entries == 4 * total
    return {
        "insert_per_s": total / saving,
        "update_per_s": updated / updating,
        "arrays_s": min(array_reads),
        "kpis_first_per_s": total / kpi_times[0],
        "kpis_next_per_s": total / kpi_times[1],
        "record_written_per_s": total / record_s,
        "written_read_s": written_s,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
    }


def one(backend: str, total: int) -> dict[str, float]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            return measure_store(f"sqlite:///{Path(folder) / 'bench.sqlite'}", total)
    import sqlalchemy as sa

    from crm_kpi_worker.sync.store import normalise_url

    admin = sa.create_engine(normalise_url(os.environ["CRM_KPI_TEST_POSTGRES_URL"]))
    schema = f"crm_kpi_bench_{uuid.uuid4().hex[:8]}"
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = admin.url.update_query_dict({"options": f"-csearch_path={schema}"})
        return measure_store(url.render_as_string(hide_password=False), total)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# ---------------------------------------------------------------------------------------------
# History layouts, on plain sqlite3 so that only the layout differs.


def _deal_row(deal: object) -> tuple[object, ...]:
    d = deal  # a model.Deal
    return (
        "sf",
        d.id,  # type: ignore[attr-defined]
        d.owner_id,  # type: ignore[attr-defined]
        d.account_id,  # type: ignore[attr-defined]
        d.created_at.isoformat(timespec="microseconds"),  # type: ignore[attr-defined]
        d.close_date.isoformat(),  # type: ignore[attr-defined]
        d.stage,  # type: ignore[attr-defined]
        d.is_won,  # type: ignore[attr-defined]
        d.is_closed,  # type: ignore[attr-defined]
        str(d.amount),  # type: ignore[attr-defined]
        d.currency,  # type: ignore[attr-defined]
        str(d.arr),  # type: ignore[attr-defined]
        d.deal_type.value,  # type: ignore[attr-defined]
        d.forecast_category.value,  # type: ignore[attr-defined]
        str(d.probability),  # type: ignore[attr-defined]
        d.term_months,  # type: ignore[attr-defined]
        d.last_modified.isoformat(timespec="microseconds"),  # type: ignore[attr-defined]
    )


def compare_layouts(total: int) -> None:
    from crm_kpi_worker.sync.store.schema import (
        encode_close_date_history,
        encode_stage_history,
        split_history,
    )

    deal_ddl = ", ".join(f"{name} TEXT" for name in ["source", *DEAL_COLUMNS])
    marks = ", ".join("?" * (len(DEAL_COLUMNS) + 1))
    results = {}
    for layout in ("text column", "child tables"):
        with tempfile.TemporaryDirectory() as folder:
            db = sqlite3.connect(Path(folder) / "layout.sqlite", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if layout == "text column":
                db.execute(
                    f"CREATE TABLE deals ({deal_ddl}, stage_history TEXT, close_date_history TEXT,"
                    " PRIMARY KEY (source, id))"
                )
                upsert = (
                    f"INSERT INTO deals VALUES ({marks}, ?, ?) ON CONFLICT (source, id) DO UPDATE"
                    " SET stage_history = excluded.stage_history,"
                    " close_date_history = excluded.close_date_history"
                )
            else:
                db.execute(f"CREATE TABLE deals ({deal_ddl}, PRIMARY KEY (source, id))")
                db.execute(
                    "CREATE TABLE stage_changes (source TEXT, deal_id TEXT, seq INTEGER,"
                    " stage TEXT, entered_at TEXT, PRIMARY KEY (source, deal_id, seq))"
                )
                db.execute(
                    "CREATE TABLE close_date_changes (source TEXT, deal_id TEXT, seq INTEGER,"
                    " old TEXT, new TEXT, changed_at TEXT, PRIMARY KEY (source, deal_id, seq))"
                )
                upsert = (
                    f"INSERT INTO deals VALUES ({marks}) ON CONFLICT (source, id) DO UPDATE"
                    " SET stage = excluded.stage"
                )
            writing = 0.0
            for page in pages(total):
                start = time.perf_counter()
                stage_changes = page.stage_changes  # type: ignore[attr-defined]
                field_changes = page.field_changes  # type: ignore[attr-defined]
                db.execute("BEGIN IMMEDIATE")
                if layout == "text column":
                    db.executemany(
                        upsert,
                        [
                            (
                                *_deal_row(d),
                                encode_stage_history(d.id, stage_changes[d.id]),
                                encode_close_date_history(d.id, field_changes[d.id]),
                            )
                            for d in page.deals  # type: ignore[attr-defined]
                        ],
                    )
                else:
                    ids = json.dumps(list(stage_changes))
                    db.executemany(upsert, [_deal_row(d) for d in page.deals])  # type: ignore[attr-defined]
                    for table in ("stage_changes", "close_date_changes"):
                        db.execute(
                            f"DELETE FROM {table} WHERE source = 'sf'"
                            " AND deal_id IN (SELECT value FROM json_each(?))",
                            (ids,),
                        )
                    db.executemany(
                        "INSERT INTO stage_changes VALUES ('sf', ?, ?, ?, ?)",
                        [
                            (deal_id, k, c.stage, c.entered_at.isoformat(timespec="microseconds"))
                            for deal_id, changes in stage_changes.items()
                            for k, c in enumerate(changes)
                        ],
                    )
                    db.executemany(
                        "INSERT INTO close_date_changes VALUES ('sf', ?, ?, ?, ?, ?)",
                        [
                            (
                                deal_id,
                                k,
                                c.old_value.isoformat(),
                                c.new_value.isoformat(),
                                c.changed_at.isoformat(timespec="microseconds"),
                            )
                            for deal_id, changes in field_changes.items()
                            for k, c in enumerate(changes)
                        ],
                    )
                db.execute("COMMIT")
                writing += time.perf_counter() - start

            gc.collect()
            gc.disable()
            start = time.perf_counter()
            db.execute("BEGIN")
            if layout == "text column":
                rows = db.execute(
                    f"SELECT {', '.join(DEAL_COLUMNS)}, stage_history, close_date_history"
                    " FROM deals WHERE source = 'sf'"
                ).fetchall()
                columns = list(zip(*rows, strict=True))
                counts, parts = split_history(columns[-2], 2)
                stage_offsets = list(accumulate(counts, initial=0))
                entered = list(map(dt.datetime.fromisoformat, parts[1::2]))
                counts, parts = split_history(columns[-1], 3)
                changed = list(map(dt.datetime.fromisoformat, parts[2::3]))
            else:
                rows = db.execute(
                    f"SELECT {', '.join(DEAL_COLUMNS)} FROM deals WHERE source = 'sf'"
                ).fetchall()
                columns = list(zip(*rows, strict=True))
                index = {deal_id: i for i, deal_id in enumerate(columns[0])}
                counts = [0] * len(index)
                history = db.execute(
                    "SELECT deal_id, stage, entered_at FROM stage_changes WHERE source = 'sf'"
                    " ORDER BY deal_id, seq"
                ).fetchall()
                for deal_id, _, _ in history:
                    counts[index[deal_id]] += 1
                stage_offsets = list(accumulate(counts, initial=0))
                entered = [dt.datetime.fromisoformat(row[2]) for row in history]
                history = db.execute(
                    "SELECT deal_id, old, new, changed_at FROM close_date_changes"
                    " WHERE source = 'sf' ORDER BY deal_id, seq"
                ).fetchall()
                changed = [dt.datetime.fromisoformat(row[3]) for row in history]
            db.execute("COMMIT")
            reading = time.perf_counter() - start
            gc.enable()
            assert stage_offsets[-1] == len(entered) == 4 * total and len(changed) == total
            size = os.path.getsize(Path(folder) / "layout.sqlite")
            db.close()
        results[layout] = (total / writing, reading, size)
        print(
            f"  {layout:13} write {total / writing:9,.0f} deals/s   read {reading:6.2f} s"
            f"   file {size / 1e6:6.1f} MB"
        )
    text, child = results["text column"], results["child tables"]
    print(
        f"  text column vs child tables: writes x{text[0] / child[0]:.2f},"
        f" reads x{child[1] / text[1]:.2f} faster, file x{child[2] / text[2]:.2f} smaller"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[200_000, 1_000_000])
    parser.add_argument("--layouts", type=int, metavar="N", help="compare history layouts")
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    if args.layouts:
        print(f"history layouts on SQLite, {args.layouts:,} deals:")
        compare_layouts(args.layouts)
        return
    backends = ["sqlite"]
    if os.environ.get("CRM_KPI_TEST_POSTGRES_URL"):
        backends.append("postgresql")
    else:
        print("(CRM_KPI_TEST_POSTGRES_URL not set: SQLite only)")
    for backend in backends:
        print(f"{backend}: pages of {PAGE:,} deals, 4 stage changes + 1 close-date change each")
        first: dict[str, float] | None = None
        for size in args.sizes:
            result = json.loads(
                subprocess.run(  # noqa: S603 (this script, by path)
                    [sys.executable, __file__, "--one", backend, str(size)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            line = (
                f"  {size:>9,} deals  save_page {result['insert_per_s']:8,.0f} deals/s"
                f" (updates {result['update_per_s']:7,.0f}/s)"
                f"  iter_deal_arrays {result['arrays_s']:5.2f} s"
                f" ({result['arrays_s'] / size * 1e6:.2f} us/deal)"
                f"  max RSS {result['rss_mb']:6.0f} MB"
            )
            if first is None:
                first = {**result, "size": size}
            else:
                growth = size / first["size"]
                save_growth = first["insert_per_s"] / result["insert_per_s"]
                read_growth = result["arrays_s"] / first["arrays_s"] / growth
                line += (
                    f"  growth vs {first['size']:,.0f}: save x{save_growth:.2f},"
                    f" read x{read_growth:.2f}"
                )
            print(line, flush=True)
            print(
                f"  {'':>9}        save_kpis {result['kpis_first_per_s']:8,.0f} rows/s first run,"
                f" {result['kpis_next_per_s']:8,.0f} rows/s next (10% changed);"
                f" record_written {result['record_written_per_s']:8,.0f}/s;"
                f" written() {result['written_read_s']:5.2f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
