"""The benchmarks' sandbox CRM: ``crm-kpi sandbox <crm>`` in a process of its own, on a
loopback port, read from its banner."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests


@dataclass(frozen=True)
class SandboxProcess:
    process: subprocess.Popen[str]
    url: str
    ca_path: str
    banner: str  # what it printed up to "ready in"
    pubsub_endpoint: str | None = None  # the Salesforce sandbox's Pub/Sub API (host:port)

    def stats(self) -> dict[str, Any]:
        """What the sandbox served so far (its ``/_sandbox/stats``)."""
        answer = requests.get(f"{self.url}/_sandbox/stats", verify=self.ca_path, timeout=60)
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    def peak_rss_mb(self) -> float:
        """The sandbox process's peak resident memory so far."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else float("nan")


@contextmanager
def sandbox_process(crm: str, *options: str) -> Iterator[SandboxProcess]:
    """Start ``crm-kpi sandbox <crm>`` on a free port with ``options``, wait until it is
    ready, stop it on leaving."""
    process = subprocess.Popen(  # noqa: S603 - the project's own CLI
        [sys.executable, "-m", "crm_kpi_worker", "sandbox", crm, "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "ready in" in line:
                break
        else:
            raise RuntimeError(f"the sandbox exited early with status {process.wait()}")
        banner = "".join(lines)
        url = re.search(r"listening on (https://\S+)", banner)
        ca_path = re.search(r"ca_bundle\): (\S+)", banner)
        if url is None or ca_path is None:
            raise RuntimeError(f"the sandbox's banner names no URL or CA:\n{banner}")
        pubsub = re.search(r"Pub/Sub API \(gRPC, TLS, same CA\): (\S+)", banner)
        yield SandboxProcess(
            process, url.group(1), ca_path.group(1), banner, pubsub.group(1) if pubsub else None
        )
    finally:
        process.terminate()
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()
