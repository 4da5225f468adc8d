"""Time and peak memory of the KPI engine on random frames.

Run: ``.venv/bin/python benchmarks/bench_kpis.py [deals...]`` (default 200000 1000000).

Each size runs in a fresh interpreter. Frames are random but seeded (numpy): ~700 reps in ~90
teams plus the unassigned rep, one quarterly quota per rep over two fiscal years, as many demo
activities as deals, 20% of deals on accounts with churn dates, renewals and every kind of bad
data. It prints the wall time of ``compute()`` for the default periods (current and previous
month, quarter and year: best of a few runs, untraced), the peak of Python/numpy allocations
during one traced run (tracemalloc: numpy reports its buffers to it) next to the size of the
input frames, the max RSS, the time to build (validate) the Deals frame from ready columns,
and ratios: microseconds per deal, and time growth against the first
size (1.0 = linear). Target: 1,000,000 deals in under 5 s on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from crm_kpi_worker.kpis.engine import compute
from crm_kpi_worker.kpis.frames import (
    Accounts,
    Activities,
    Deals,
    Quotas,
    Reps,
    Settings,
    Snapshots,
)

AS_OF = dt.date(2026, 9, 30)
REPS = 700
TEAMS = 90


def build(n: int, seed: int = 7) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    as_of = np.datetime64(AS_OF, "D")
    teams = [f"team-{i:02d}" for i in range(TEAMS)]
    rep_team = [teams[i % TEAMS] for i in range(REPS)] + [None]
    reps = Reps(
        id=[f"005{i:012d}" for i in range(REPS + 1)],
        email=[f"rep{i}@example.com" for i in range(REPS)] + [""],
        team=rep_team,
        start=np.where(
            rng.random(REPS + 1) < 0.1,
            as_of - rng.integers(0, 400, REPS + 1).astype("timedelta64[D]"),
            np.datetime64("NaT", "D"),
        ),
        is_unassigned=np.arange(REPS + 1) == REPS,
    )
    accounts = Accounts(
        churn=np.where(
            rng.random(n // 5) < 0.1,
            as_of - rng.integers(0, 700, n // 5).astype("timedelta64[D]"),
            np.datetime64("NaT", "D"),
        )
    )
    created = as_of - rng.integers(0, 900, n).astype("timedelta64[D]")
    cycle = rng.integers(0, 200, n).astype("timedelta64[D]")
    close = created + cycle + rng.integers(-10, 60, n).astype("timedelta64[D]")
    close[rng.random(n) < 0.01] = np.datetime64("NaT")
    state = rng.random(n)
    is_won = state < 0.25
    is_lost = (state >= 0.25) & (state < 0.7)
    arr = np.round(rng.lognormal(9.5, 0.8, n), 2)
    arr[rng.random(n) < 0.02] = np.nan
    deal_type = rng.integers(0, 4, n)
    deals = Deals(
        id=np.array([f"006{i:012d}" for i in range(n)], dtype=object),
        owner=np.where(rng.random(n) < 0.01, REPS, rng.integers(0, REPS, n)).astype(np.int32),
        created=created,
        close=close,
        is_won=is_won,
        is_lost=is_lost,
        arr=arr,
        account=np.where(rng.random(n) < 0.8, rng.integers(0, n // 5, n), -1).astype(np.int32),
        cycle_start=np.where(rng.random(n) < 0.05, np.datetime64("NaT", "D"), created),
        stage_known=rng.random(n) > 0.005,
        credited=deal_type < 2,
        is_renewal=deal_type == 2,
        forecast=rng.integers(0, 5, n).astype(np.int8),
        probability=np.where(rng.random(n) < 0.05, np.nan, rng.random(n)),
        qualified=rng.random(n) < 0.6,
        entered_entry=np.where(
            rng.random(n) < 0.5, created + cycle // 3, np.datetime64("NaT", "D")
        ),
        stage_entered=created + cycle // 2,
        slips=rng.integers(0, 4, n).astype(np.int32),
    )
    quarter_starts = [np.datetime64(f"{y}-{m:02d}-01") for y in (2025, 2026) for m in (1, 4, 7, 10)]
    quotas = Quotas(
        rep=np.repeat(np.arange(REPS), len(quarter_starts)),
        start=np.tile(quarter_starts, REPS),
        end=np.tile(
            [(s.astype("datetime64[M]") + 3).astype("datetime64[D]") - 1 for s in quarter_starts],
            REPS,
        ),
        amount=np.repeat(rng.integers(50, 300, REPS) * 1000.0, len(quarter_starts)),
    )
    activities = Activities(
        owner=rng.integers(0, REPS + 1, n).astype(np.int32),
        day=as_of - rng.integers(0, 800, n).astype("timedelta64[D]"),
        is_demo=rng.random(n) < 0.4,
    )
    settings = Settings(ramp_prorate=True, variable_target=40000.0, churn_signal=True)
    return {
        "deals": deals,
        "reps": reps,
        "quotas": quotas,
        "activities": activities,
        "accounts": accounts,
        "snapshots": Snapshots.empty(),
        "settings": settings,
    }


def frames_mb(frames: dict[str, object]) -> float:
    total = 0
    for frame in frames.values():
        for value in vars(frame).values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
                if value.dtype == object:
                    total += sum(sys.getsizeof(x) for x in value.tolist())
    return total / 1e6


def measure(n: int, repeats: int) -> dict[str, float]:
    frames = build(n)
    size = frames_mb(frames)
    deals = frames["deals"]
    start = time.perf_counter()
    type(deals)(**{name: getattr(deals, name) for name in deals.__dataclass_fields__})
    validate_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        results = compute(**frames, as_of=AS_OF)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
        rows = len(results.rows)
        del results
    gc.collect()
    tracemalloc.start()
    kept = compute(**frames, as_of=AS_OF)  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return {
        "seconds": min(times),
        "peak_mb": peak / 1e6,
        "input_mb": size,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
        "rows": rows,
        "validate_s": validate_s,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]), repeats=3)))
        return
    sizes = [int(a) for a in sys.argv[1:]] or [200_000, 1_000_000]
    print(f"KPI engine: {REPS} reps in {TEAMS} teams, default periods, as_of {AS_OF}")
    print(
        f"{'deals':>10} {'compute s':>10} {'us/deal':>8} {'growth':>7} {'peak MB':>8}"
        f" {'input MB':>9} {'peak/input':>10} {'max RSS MB':>11} {'rows':>6} {'Deals() s':>9}"
    )
    first: tuple[int, float] | None = None
    for n in sizes:
        out = subprocess.run(  # noqa: S603 (our own script, sizes parsed as int)
            [sys.executable, __file__, "--one", str(n)], check=True, capture_output=True, text=True
        )
        m = json.loads(out.stdout)
        per_deal = m["seconds"] / n * 1e6
        if first is None:
            first = (n, per_deal)
        growth = per_deal / first[1]
        print(
            f"{n:>10,} {m['seconds']:>10.2f} {per_deal:>8.2f} {growth:>7.2f}"
            f" {m['peak_mb']:>8.0f} {m['input_mb']:>9.0f} {m['peak_mb'] / m['input_mb']:>10.2f}"
            f" {m['rss_mb']:>11.0f} {m['rows']:>6} {m['validate_s']:>9.2f}"
        )
    print("target: 1,000,000 deals under 5 s on 2 cores")


if __name__ == "__main__":
    main()
