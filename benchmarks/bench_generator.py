"""Time and peak memory of the sandbox data set generator.

Run: ``.venv/bin/python benchmarks/bench_generator.py [sizes...]`` (default 200000 1000000).

Each size runs in a fresh interpreter. It prints the wall time of ``generate(deals=N)`` (best
of a few runs, without tracing), the process's max RSS after the first run (interpreter and
numpy included), the peak of Python/numpy allocations during one traced run (tracemalloc:
numpy reports its buffers to it), the size of the resulting data set, and ratios: microseconds
and bytes per deal, and time/memory growth against the first size (1.0 = linear).
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc

from crm_kpi_worker.sandbox.generator import generate, validate


def measure(n: int, repeats: int) -> dict[str, float]:
    start = time.perf_counter()
    data = generate(deals=n)
    times = [time.perf_counter() - start]
    del data
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux
    for _ in range(repeats - 1):
        gc.collect()
        start = time.perf_counter()
        data = generate(deals=n)
        times.append(time.perf_counter() - start)
        del data
    gc.collect()
    tracemalloc.start()
    data = generate(deals=n)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    start = time.perf_counter()
    problems = validate(data)
    validate_s = time.perf_counter() - start
    if problems:
        raise SystemExit(f"validate() found problems at {n}: {problems[:5]}")
    rows = {
        "stage_changes": len(data.stage_changes),
        "activities": len(data.activities),
        "accounts": len(data.accounts),
        "users": len(data.users),
    }
    del data
    return {
        "seconds": min(times),
        "rss_mb": rss_mb,
        "peak_mb": peak / 1e6,
        "result_mb": current / 1e6,
        "validate_s": validate_s,
        **rows,
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        n = int(argv[1])
        print(json.dumps(measure(n, repeats=3 if n <= 200_000 else 2)))
        return
    sizes = [int(a) for a in argv] or [200_000, 1_000_000]
    results = {}
    for n in sizes:
        child = subprocess.run(  # noqa: S603 (our own script, sizes parsed as int)
            [sys.executable, __file__, "--one", str(n)], check=True, capture_output=True, text=True
        )
        r = results[n] = json.loads(child.stdout)
        print(
            f"{n:>9,} deals: {r['seconds']:5.2f} s ({r['seconds'] / n * 1e6:4.2f} us/deal)  "
            f"traced peak {r['peak_mb']:6.1f} MB ({r['peak_mb'] * 1e6 / n:4.0f} B/deal, "
            f"{r['peak_mb'] / r['result_mb']:.2f}x the {r['result_mb']:.1f} MB data set)  "
            f"max RSS {r['rss_mb']:6.1f} MB  validate {r['validate_s']:.2f} s"
        )
        print(
            f"{'':>17}{r['stage_changes']:,} stage changes, {r['activities']:,} activities, "
            f"{r['accounts']:,} accounts, {r['users']:,} users"
        )
    base = sizes[0]
    for n in sizes[1:]:
        scale = n / base
        t = results[n]["seconds"] / results[base]["seconds"] / scale
        m = results[n]["peak_mb"] / results[base]["peak_mb"] / scale
        print(f"{n:,} vs {base:,}: time x{t:.2f} of linear, traced peak x{m:.2f} of linear")


if __name__ == "__main__":
    main(sys.argv[1:])
