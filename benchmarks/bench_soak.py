"""Benchmark: a bounded soak of the service. Is it flat over many cycles?

The sandbox CRM runs as its own process (loopback only) with a few thousand deals and light
faults (rate limits and server errors at random, seeded); the service (``crm-kpi sync``, a
real process, SQLite store) runs on ``schedule.every_seconds`` with a verify pass every 10 s,
as of one fixed instant, for a few minutes. Its memory (RSS), open file descriptors and threads
are read from ``/proc`` as each run ends (the service idle, so samples compare like with
like): the start is the end of its first run (the first write-back and the imports behind it),
the end is the last run's end; the ratios end/start are the result: flat is about 1.00. The
ratio over the second half (end/middle) tells a warm-up (caches filling in the first minutes,
then a plateau) from a leak (growing all along).

    python benchmarks/bench_soak.py                       # 3 minutes on Salesforce
    python benchmarks/bench_soak.py --minutes 10 --crm hubspot
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sandbox_process import SandboxProcess, sandbox_process

from crm_kpi_worker.config import path_of

AS_OF = "2026-11-26T12:00:00+00:00"
CLI = str(Path(sys.executable).parent / "crm-kpi")
FAULTS = (
    '{"kind": "rate_limit", "probability": 0.01, "times": null, "retry_after": 1}',
    '{"kind": "server_error", "status": 503, "probability": 0.01, "times": null}',
)


def write_config(crm: str, sandbox: SandboxProcess, work: Path, every: int) -> Path:
    store = work / "store.sqlite"
    if crm == "salesforce":
        text = path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
        text = text.replace("login_url: https://127.0.0.1:0", f"login_url: {sandbox.url}")
        text = text.replace(
            "instance_url: https://127.0.0.1:0",
            f"instance_url: {sandbox.url}\n    ca_bundle: {sandbox.ca_path}",
        )
        text = text.replace("url: sqlite:///crm-kpi-demo.sqlite", f"url: sqlite:///{store}")
    else:
        text = path_of("demo-hubspot.yaml").read_text(encoding="utf-8")
        text = text.replace(
            "base_url: https://127.0.0.1:0",
            f"base_url: {sandbox.url}\n    ca_bundle: {sandbox.ca_path}\n"
            "    rate_limits: {search_per_second: 100, per_10_seconds: 10000}",
        )
        text = text.replace("url: sqlite:///crm-kpi-demo-hubspot.sqlite", f"url: sqlite:///{store}")
    text = text.replace("language: fr", "language: fr\n  verify_every: 10s")
    text += f"\nschedule:\n  every_seconds: {every}\n"
    path = work / "crm-kpi.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def sample(pid: int) -> dict[str, float]:
    """RSS (MB), open file descriptors and threads of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = re.search(r"VmRSS:\s+(\d+) kB", status)
    threads = re.search(r"Threads:\s+(\d+)", status)
    return {
        "rss_mb": int(rss.group(1)) / 1024 if rss else float("nan"),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(threads.group(1)) if threads else float("nan"),
    }


class Service:
    """``crm-kpi sync`` in its own process; counts the runs it ends."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - the project's own CLI
            [CLI, "sync", "--as-of", AS_OF, "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.outcomes: list[str] = []
        #: (monotonic time, sample) as each run ended: the service is idle then, so samples
        #: compare like with like (a run in progress holds connections and a thread).
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.lines = 0
        self.first_done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines += 1
            found = re.search(r"\brun (\d+ (completed with failures|completed|\w+)|failed)", line)
            if found and ("next run at" in line or "failed" in line):
                self.outcomes.append(found.group(2) or "failed")
                self.samples.append((time.monotonic(), sample(self.process.pid)))
                self.first_done.set()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        self._reader.join(timeout=10)
        return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--deals", type=int, default=3000)
    parser.add_argument("--every-seconds", type=int, default=1)
    parser.add_argument("--crm", choices=["salesforce", "hubspot"], default="salesforce")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crm-kpi-soak-") as folder:
        work = Path(folder)
        options = ["--deals", str(args.deals), "--workdir", str(work)]
        for fault in FAULTS:
            options += ["--fault", fault]
        if args.crm == "salesforce":
            options += ["--api-limit", "100000000"]
        else:
            options += ["--search-per-second", "0", "--burst-per-10s", "0"]
        with sandbox_process(args.crm, *options) as sandbox:
            config = write_config(args.crm, sandbox, work, args.every_seconds)
            subprocess.run(  # noqa: S603
                [CLI, "setup", "--config", str(config)], check=True, capture_output=True
            )
            calls_before = sandbox.stats()["api_calls"]
            service = Service(config)
            try:
                if not service.first_done.wait(timeout=600):
                    raise RuntimeError("the service's first run did not end within 10 minutes")
                started, start = service.samples[0]
                runs_at_start, calls_at_start = len(service.outcomes), sandbox.stats()["api_calls"]
                deadline = started + args.minutes * 60
                while time.monotonic() < deadline and service.process.poll() is None:
                    time.sleep(1.0)  # a benchmark's wall-clock bound, not a test's timing
                runs = len(service.outcomes) - runs_at_start
                calls = sandbox.stats()["api_calls"] - calls_at_start
                taken = [(at - started, values) for at, values in service.samples]
                end = taken[-1][1]
                every = max(1, len(taken) // 6)
                samples = taken[::every] + ([taken[-1]] if (len(taken) - 1) % every else [])
            finally:
                code = service.stop()
            first_calls = calls_at_start - calls_before
    print_result(args, samples, start, end, runs, calls, first_calls, service.outcomes, code)


def print_result(
    args: Any,
    samples: list[tuple[float, dict[str, float]]],
    start: dict[str, float],
    end: dict[str, float],
    runs: int,
    calls: int,
    first_calls: int,
    outcomes: list[str],
    code: int,
) -> None:
    print(
        f"soak: {args.crm}, {args.deals:,} deals, every {args.every_seconds} s,"
        f" {args.minutes:g} min after the first run"
    )
    print(f"  first run: {first_calls} API calls")
    counts = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    print(f"  cycles after it: {runs} ({calls} API calls, {calls / max(runs, 1):.1f} a cycle)")
    print(f"  outcomes of every run: {counts}; exit code on SIGTERM: {code}")
    print("  t (s)    RSS (MB)   fds   threads")
    for at, values in samples:
        rss, fds, threads = values["rss_mb"], values["fds"], values["threads"]
        print(f"  {at:6.0f}   {rss:8.1f}   {fds:3.0f}   {threads:5.0f}")
    middle = samples[len(samples) // 2][1]
    for key, label in (("rss_mb", "RSS"), ("fds", "open fds"), ("threads", "threads")):
        ratio, second_half = end[key] / start[key], end[key] / middle[key]
        print(
            f"  {label}: start {start[key]:.1f}, end {end[key]:.1f}, end/start {ratio:.3f}"
            f" (second half: end/middle {second_half:.3f})"
        )


if __name__ == "__main__":
    main()
