"""Issue 11's acceptance run: the service (``crm-kpi sync``, real processes) on each sandbox CRM
for many short cycles with faults on (rate limits, 5xx, expired sessions, per-record failures),
a hand edit of a scorecard and a deal, a second process started mid-run, SIGKILL then restart,
SIGTERM then restart, and the budget's share reached. It ends with the store's KPI values and
every field the worker writes in the CRM equal to an undisturbed run's (a clean sandbox and
store, one ``sync --once``), the drift repaired, no record written by two processes (the
sandbox's write log, each write traced to the process holding the connection) beyond the one
batch in flight at the SIGKILL, and the org's calls never past the budget's share.

The schedule is ``every_seconds: 1`` (a setting for tests and soak runs); the test waits on
conditions (a parked request, a log line), never on time.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import write_demo_config
from test_unattended import CLI, Worker, _wait_until

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.store import Store

AS_OF = "2026-11-26T12:00:00+00:00"
REFERENCE = dt.date(2026, 9, 30)
SHARE = 0.5
SERVICE = """
schedule:
  every_seconds: 1
budget:
  max_share_of_daily_limit: {share}
"""


@dataclasses.dataclass
class Crm:
    kind: str
    sandbox: Any
    write_path: str  # a write call's path
    query_path: str  # a pull page's path
    batch_size: int

    def org_used(self) -> int:
        """The org's calls of the day as the sandbox counts them against its limit."""
        if self.kind == "salesforce":
            return int(self.sandbox.stats.api_calls)
        return int(self.sandbox.app._daily_used)

    def set_daily_limit(self, limit: int) -> None:
        if self.kind == "salesforce":
            self.sandbox.app.api_limit = limit
        else:
            self.sandbox.app.limits = dataclasses.replace(self.sandbox.app.limits, daily=limit)


@contextmanager
def started(kind: str) -> Iterator[Crm]:
    if kind == "salesforce":
        with SalesforceSandbox.start(seed=11, reference_date=REFERENCE) as sandbox:
            yield Crm(kind, sandbox, "/composite/sobjects", "/query", 25)
    else:
        limits = RateLimits(search_per_second=None, burst_per_10s=None, daily=1_000_000)
        with HubSpotSandbox.start(seed=11, reference_date=REFERENCE, limits=limits) as sandbox:
            yield Crm(kind, sandbox, "/batch/(update|upsert)", "/search", 25)


def _config(crm: Crm, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    store = folder / "store.sqlite"
    if crm.kind == "salesforce":
        path = write_demo_config(crm.sandbox, folder)
        text = path.read_text(encoding="utf-8").replace("batch_size: 200", "batch_size: 25")
    else:
        text = path_of("demo-hubspot.yaml").read_text(encoding="utf-8")
        text = text.replace(
            "base_url: https://127.0.0.1:0",
            f"base_url: {crm.sandbox.url}\n    ca_bundle: {crm.sandbox.ca_path}\n"
            "    rate_limits: {search_per_second: 100, per_10_seconds: 10000}",
        )
        text = text.replace("url: sqlite:///crm-kpi-demo-hubspot.sqlite", f"url: sqlite:///{store}")
        text = text.replace("batch_size: 100", "batch_size: 25")
        path = folder / "crm-kpi.yaml"
    text = text.replace("language: fr", "language: fr\n  verify_every: 2s")
    path.write_text(text + SERVICE.format(share=SHARE), encoding="utf-8")
    return path


def _ok(*args: str, config: Path) -> str:
    worker = Worker(*args, config=config)
    assert worker.finish() == 0, worker.output
    return worker.output


# ---- who wrote what: a peer port -> the process holding that connection ----------------------


def _socket_inodes(local_port: int, remote_port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == local_port and (
                int(remote.rsplit(":", 1)[1], 16) == remote_port
            ):
                found.add(inode)
    return found


def _links(pid: int) -> set[str]:
    """What the process's file descriptors point at (one may close while it is listed)."""
    links = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return links
    for fd in fds:
        try:
            links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return links


def _client_identifier(server_port: int, pids: list[int]) -> Any:
    """For the sandbox's write log: the pid (among ``pids``) holding the client end."""

    def identify(_host: str, port: int) -> int | None:
        wanted = {f"socket:[{inode}]" for inode in _socket_inodes(port, server_port)}
        for pid in [*pids, os.getpid()]:
            if wanted & _links(pid):
                return pid
        return None

    return identify


# ---- the CRM's fields and the store's values, for the comparison ----------------------------


def _crm_fields(config_path: Path) -> dict[str, dict[str, Any]]:
    """Every field the worker writes, as the CRM holds it: object -> record key -> values."""
    config = load_config(config_path)
    source = config.sources[0]
    targets = config.kpi_fields_for(source)
    card, deal = targets.scorecard, targets.deal
    assert card is not None and deal is not None
    deal_object = "Opportunity" if source.type == "salesforce" else "deals"
    with Store.open(config.store.resolve_url()) as store:
        objects = {
            card.object: (card.external_id, store.written_fields(source.name, card.object)),
            deal_object: (None, store.written_fields(source.name, deal_object)),
        }
    connector = build_connector(source, config.currency)
    held: dict[str, dict[str, Any]] = {}
    for object, (key_field, names) in objects.items():
        assert names, object
        held[object] = {}
        for page in connector.read_back(object, sorted(names), key_field):
            held[object].update(page)
    return held


def _kpi_values(config_path: Path) -> Any:
    shown = subprocess.run(  # noqa: S603 - the project's own CLI
        [CLI, "kpis", "show", "--format", "json", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(shown.stdout)


def _undisturbed(kind: str, folder: Path) -> tuple[Any, dict[str, dict[str, Any]]]:
    with started(kind) as crm:
        config = _config(crm, folder)
        _ok("setup", config=config)
        _ok("sync", "--once", "--as-of", AS_OF, config=config)
        return _kpi_values(config), _crm_fields(config)


# ---- hand edits -----------------------------------------------------------------------------


def _hand_edit(config_path: Path) -> dict[str, str]:
    """Quota 1 and bookings 999999 on a rep's scenario-quarter scorecard, 42 on a deal's KPI
    field, as a person would (through the API, not the worker's memory): object -> the
    edited record's id."""
    config = load_config(config_path)
    source = config.sources[0]
    targets = config.kpi_fields_for(source)
    card, deal = targets.scorecard, targets.deal
    assert card is not None and deal is not None
    connector = build_connector(source, config.currency)
    ids: dict[str, str] = {}
    for page in connector.read_back(card.object, [card.external_id]):
        ids.update({str(values[card.external_id]): record_id for record_id, values in page.items()})
    key = next(k for k in sorted(ids) if k.endswith(":2026-Q3") and ":rep:" in k)
    deal_field = deal.fields["close_date_slips"]
    deal_object = "Opportunity" if source.type == "salesforce" else "deals"
    with Store.open(config.store.resolve_url()) as store:
        deal_id = sorted(
            k for k, name in store.written(source.name, deal_object) if name == deal_field
        )[0]
    edits = [
        (card.object, ids[key], {card.fields["quota"]: 1, card.fields["bookings_arr"]: 999999}),
        (deal_object, deal_id, {deal_field: 42}),
    ]
    for object, record_id, values in edits:
        if source.type == "salesforce":
            getattr(connector.client, object).update(record_id, values)  # type: ignore[attr-defined]
        else:
            kind = object if object == "deals" else connector.targets.object_type(object)  # type: ignore[attr-defined]
            (result,) = connector.writer.update(kind, {record_id: values})  # type: ignore[attr-defined]
            assert result.success, result
    return {card.object: ids[key], deal_object: deal_id}


# ---- the run --------------------------------------------------------------------------------


def _lines_after(worker: Worker, start: int, pattern: str) -> list[str]:
    return [line for line in worker.lines[start:] if re.search(pattern, line)]


def _wait_for_lines(worker: Worker, start: int, pattern: str, count: int = 1) -> None:
    _wait_until(
        lambda: (
            len(_lines_after(worker, start, pattern)) >= count or worker.process.poll() is not None
        ),
        f"{count} line(s) {pattern!r}",
        timeout=240,
    )
    assert len(_lines_after(worker, start, pattern)) >= count, worker.output


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["salesforce", "hubspot"])
def test_the_service_survives_chaos_and_ends_as_an_undisturbed_run(
    kind: str, tmp_path: Path
) -> None:
    clean_kpis, clean_fields = _undisturbed(kind, tmp_path / "clean")
    workers: list[Worker] = []
    with started(kind) as crm:
        config = _config(crm, tmp_path / "chaos")
        _ok("setup", config=config)
        pids: list[int] = []
        crm.sandbox.app.write_log.identify_client = _client_identifier(
            int(crm.sandbox.url.rsplit(":", 1)[1]), pids
        )
        crm.sandbox.app.write_log.clear()  # setup's own writes (permission sets) aside

        def service(*extra: str) -> Worker:
            worker = Worker("sync", "--as-of", AS_OF, *extra, config=config)
            pids.append(worker.pid)
            workers.append(worker)
            return worker

        faults = crm.sandbox.faults
        faults.add(FaultRule(kind="rate_limit", path=crm.query_path, every=5, times=4))
        faults.add(
            FaultRule(kind="server_error", path=crm.query_path, every=7, times=3, status=503)
        )
        faults.add(
            FaultRule(kind="server_error", path=crm.write_path, every=4, times=3, status=502)
        )
        faults.add(FaultRule(kind="write_failure", path=crm.write_path, times=5))
        if kind == "salesforce":  # a private app's token does not expire (see README)
            faults.add(FaultRule(kind="expire_session", every=11, times=3))
        try:
            # 1. The service, parked on its 4th write call; a second process started mid-run
            # is refused without a call; SIGKILL while the write is in flight.
            park = faults.add(
                FaultRule(kind="slow", path=crm.write_path, every=4, times=1, delay=120)
            )
            first = service()
            _wait_until(lambda: park.fired == 1, "the first service is parked on a write")
            calls = crm.org_used()
            second = Worker("sync", "--once", "--as-of", AS_OF, config=config)
            pids.append(second.pid)
            assert second.finish(timeout=120) == 7, second.output
            assert "another run of source sandbox is in progress" in second.output
            assert crm.org_used() == calls
            first.process.send_signal(signal.SIGKILL)
            assert first.finish(timeout=60) == -signal.SIGKILL
            in_flight_from = len(crm.sandbox.app.write_log.entries)
            park.release()  # the batch in flight is applied, never confirmed
            _wait_until(
                lambda: crm.sandbox.app.write_log.entries[in_flight_from:],
                "the batch in flight is applied",
            )
            in_flight = {
                (e.object, e.record_id) for e in crm.sandbox.app.write_log.entries[in_flight_from:]
            }

            # 2. Restart; SIGTERM while parked on a write: the batch is finished, the run
            # recorded interrupted, exit 0.
            park = faults.add(
                FaultRule(kind="slow", path=crm.write_path, every=2, times=1, delay=120)
            )
            restarted = service()
            _wait_until(lambda: park.fired == 1, "the restarted service is parked on a write")
            restarted.process.send_signal(signal.SIGTERM)
            restarted.wait_for_line("SIGTERM received")
            park.release()
            assert restarted.finish(timeout=60) == 0, restarted.output
            assert re.search(r"run \d+ interrupted \(stopped by SIGTERM\)", restarted.output)
            assert "had been left running by a process that is gone" in restarted.output

            # 3. Restart; many cycles until a run completes with nothing failed and nothing to
            # write, then a hand edit, repaired by the verify pass and the pull.
            last = service()
            _wait_for_lines(last, 0, r"run \d+ completed; next run")
            _wait_until(
                lambda: any(
                    "wrote" not in block and "completed;" in block
                    for block in "\n".join(last.lines).split("\nrun ")
                ),
                "a quiet run",
                timeout=240,
            )
            mark = len(last.lines)
            edited = _hand_edit(config)
            for object in edited:
                _wait_for_lines(last, mark, rf"drift: {object}: 1 records .*; 1 repaired")
            _wait_for_lines(last, mark, r"run \d+ completed; next run", 3)

            # 4. The budget: the share is reached a few calls from now, and kept while the
            # service goes on ticking (each run after it makes no call at all).
            ceiling = crm.org_used() + 40
            crm.set_daily_limit(math.ceil(ceiling / SHARE))
            assert math.floor(SHARE * math.ceil(ceiling / SHARE)) == ceiling
            mark = len(last.lines)
            _wait_for_lines(last, mark, r"stopped for budget")
            _wait_for_lines(last, mark, r"the run makes no call", 3)
            assert crm.org_used() <= ceiling, (crm.org_used(), ceiling)
            used = crm.org_used()
            _wait_for_lines(last, mark, r"the run makes no call", 6)
            assert crm.org_used() == used
            last.process.send_signal(signal.SIGTERM)
            assert last.finish(timeout=60) == 0, last.output
            assert crm.org_used() <= ceiling
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.finish(timeout=30)
        cycles = sum(len(_lines_after(w, 0, r"^run \d+ as of")) for w in workers)
        fired = {f"{r.kind} {r.path}": r.fired for r in faults.rules()}
        print(f"{kind}: {cycles} cycles by {len(workers)} service processes; faults fired {fired}")
        assert all(n > 0 for n in fired.values()), fired

        # No record written by two processes, but for the batch in flight at the SIGKILL.
        writers: dict[tuple[str, str], set[Any]] = collections.defaultdict(set)
        for entry in crm.sandbox.app.write_log.entries:
            if entry.client != os.getpid():  # the hand edits
                writers[entry.object, entry.record_id].add(entry.client)
        unknown = [
            (i, e) for i, e in enumerate(crm.sandbox.app.write_log.entries) if e.client is None
        ]
        assert not unknown, (unknown[:5], len(unknown), in_flight_from)
        twice = {record for record, who in writers.items() if len(who) > 1}
        # The records edited by hand are written again by whichever process repairs them.
        # (Record ids, unique across objects: the sandbox HubSpot logs a custom object by its
        # name, the config names its type.)
        allowed = {record_id for _, record_id in in_flight} | set(edited.values())
        assert {record_id for _, record_id in twice} <= allowed, sorted(twice)[:10]
        assert len(in_flight) <= crm.batch_size
        assert not any(second.pid in who for who in writers.values())

        crm.set_daily_limit(10_000_000)  # the comparison's own reads
        assert _kpi_values(config) == clean_kpis
        fields = _crm_fields(config)
    assert fields.keys() == clean_fields.keys()
    for object, records in clean_fields.items():
        assert fields[object].keys() == records.keys(), object
        differ = [key for key, values in records.items() if fields[object][key] != values]
        assert not differ, (object, differ[:5], [fields[object][k] for k in differ[:2]])
