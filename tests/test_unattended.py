"""Running unattended (issue 11): one run per source at a time, clean stops, exit codes.

The worker runs as the real ``crm-kpi`` command in its own processes, against a sandbox
Salesforce, on SQLite and PostgreSQL stores. A ``slow`` fault parks a run on a chosen request
(a page of the deal pull, a write batch); the test waits for that condition, acts (starts a
second run, sends a signal), then releases the request. No test sleeps for timing.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REST_ONLY, write_demo_config

from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.store import RunInProgress, Store

DEALS = 5000  # three pages of deals, 25+ write batches: room to stop in the middle
AS_OF = "2026-11-26T12:00:00+00:00"
CLI = str(Path(sys.executable).parent / "crm-kpi")
DEAL_PAGE = "/query(All)?/01g"  # a continuation page of the deal pull
WRITE_BATCH = "/composite/sobjects"


class Worker:
    """A ``crm-kpi`` process whose output lines are collected as they come."""

    def __init__(self, *args: str, config: Path) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - the project's own CLI
            [CLI, *args, "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in:\n{self.output}")
            try:
                if self._new.get(timeout=remaining) is None and not any(
                    re.search(pattern, line) for line in self.lines
                ):
                    raise AssertionError(f"ended without a line {pattern!r}:\n{self.output}")
            except queue.Empty:
                continue

    def finish(self, timeout: float = 300) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()
        return code


def _wait_until(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)  # polling a condition, not timing the test


def _ok(*args: str, config: Path) -> str:
    worker = Worker(*args, config=config)
    code = worker.finish()
    assert code == 0, worker.output
    return worker.output


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    options: dict[str, Any] = {"seed": 11, "deals": DEALS, "reference_date": dt.date(2026, 9, 30)}
    with SalesforceSandbox.start(**options) as started:
        yield started


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


def _config(sandbox: SalesforceSandbox, folder: Path, store_url: str, extra: str = "") -> Path:
    # REST roads: the tests park the worker on query pages and Collections batches.
    path = write_demo_config(sandbox, folder, REST_ONLY)
    text = path.read_text(encoding="utf-8")
    text = text.replace(f"url: sqlite:///{folder / 'store.sqlite'}", f"url: '{store_url}'")
    path.write_text(text + extra, encoding="utf-8")
    return path


def _writes(sandbox: SalesforceSandbox) -> int:
    return sum(n for route, n in sandbox.stats.by_route.items() if route.startswith("collections"))


def _runs(store_url: str) -> list[dict[str, Any]]:
    with Store.open(store_url) as store:
        found = []
        run_id = 1
        while (run := store.run(run_id)) is not None:
            found.append(run)
            run_id += 1
    return found


# ---- 1. one run per source at a time --------------------------------------------------------


@pytest.mark.slow
def test_two_concurrent_runs_only_one_writes(
    sandbox: SalesforceSandbox, tmp_path: Path, store_url: str
) -> None:
    config = _config(sandbox, tmp_path, store_url)
    _ok("setup", config=config)
    setup_writes = _writes(sandbox)  # setup's own (permission sets, through collections)
    park = sandbox.faults.add(FaultRule(kind="slow", path=DEAL_PAGE, times=1, delay=120))
    first = Worker("sync", "--once", "--as-of", AS_OF, config=config)
    try:
        _wait_until(lambda: park.fired == 1, "the first run is parked on a deal page")
        calls = sandbox.stats.api_calls
        second = Worker("sync", "--once", "--as-of", AS_OF, config=config)
        assert second.finish(timeout=120) == 7, second.output
        assert re.search(
            r"error: another run of source sandbox is in progress since \d{4}-\d\d-\d\d"
            rf" \d\d:\d\d:\d\d UTC \(pid {first.pid} on host [^)]+\)",
            second.output,
        ), second.output
        assert "Traceback" not in second.output
        assert sandbox.stats.api_calls == calls  # refused before logging in
    finally:
        park.release()
    assert first.finish() == 0, first.output
    written = _writes(sandbox) - setup_writes
    # One run's writes: records / 200 per object, nothing twice (the issue measured 294
    # write calls for two runs instead of about 150 for one).
    records = sum(
        int(n.replace(",", "")) for n in re.findall(r"wrote ([\d,]+) records", first.output)
    )
    assert 0 < written <= -(-records // 200) + 2, (written, records)
    print(f"write calls of two overlapping runs: {written} ({records} records written)")
    # The lock was released: a third run goes ahead, and finds nothing left to write.
    third = _ok("sync", "--once", "--as-of", AS_OF, config=config)
    assert "wrote" not in third
    assert [run["status"] for run in _runs(store_url)] == ["completed", "completed"]


def test_a_lock_is_refused_while_held_and_free_once_released(store_url: str) -> None:
    with Store.open(store_url) as store, Store.open(store_url) as other:
        held = store.lock_sources(["a", "b"])
        with pytest.raises(RunInProgress) as refused:
            other.lock_sources(["b", "c"])
        assert refused.value.source == "b"
        assert refused.value.pid == os.getpid()
        assert str(refused.value).startswith("another run of source b is in progress since ")
        with other.lock_sources(["c"]):  # c was not taken by the refused attempt
            pass
        held.release()
        with other.lock_sources(["a", "b", "c"]) as again:
            assert again.sources == ("a", "b", "c")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_sqlite_lease_of_a_dead_process_or_expired_is_taken_over(tmp_path: Path) -> None:
    import socket

    import sqlalchemy as sa

    from crm_kpi_worker.sync.store.schema import run_locks

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    now = dt.datetime.now(dt.UTC)
    Store.open(url).close()
    engine = sa.create_engine(url)  # the store's own table types encode the instants
    rows = [
        # This host, a process that is gone: taken over at once.
        ("dead", _dead_pid(), socket.gethostname(), now + dt.timedelta(minutes=1)),
        # Another host, lease expired: taken over.
        ("expired", 1, "elsewhere", now - dt.timedelta(seconds=1)),
        # Another host, lease running: refused.
        ("alive", 1, "elsewhere", now + dt.timedelta(minutes=1)),
    ]
    with engine.begin() as connection:
        for source, pid, host, expires in rows:
            connection.execute(
                sa.insert(run_locks).values(
                    source=source,
                    token="old",
                    pid=pid,
                    host=host,
                    started_at=now,
                    expires_at=expires,
                )
            )
    engine.dispose()
    with Store.open(url) as store:
        with store.lock_sources(["dead", "expired"]):
            pass
        with pytest.raises(RunInProgress) as refused:
            store.lock_sources(["alive"])
        assert "(pid 1 on host elsewhere)" in str(refused.value)


def test_a_lost_lock_is_noticed_by_the_heartbeat(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from crm_kpi_worker.sync.store import locks
    from crm_kpi_worker.sync.store.schema import run_locks

    monkeypatch.setattr(locks, "RENEW_EVERY", dt.timedelta(milliseconds=300))
    with Store.open(store_url) as store:
        held = store.lock_sources(["sandbox"])
        try:
            session = (  # the lock's own session (read before the first heartbeat)
                None
                if held.connection is None
                else held.connection.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()
            )
            engine = sa.create_engine(store.url if "sqlite" in store_url else store_url)
            with engine.begin() as connection:
                if store.backend == "sqlite":  # another process took the lease over
                    connection.execute(sa.update(run_locks).values(token="someone else"))
                else:  # the lock's session ended (a server restart, a network cut)
                    connection.execute(sa.select(sa.func.pg_terminate_backend(session)))
            engine.dispose()
            assert held.lost.wait(timeout=10), "the heartbeat did not notice"
        finally:
            held.release()


# ---- 2. stops -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "path", "nth"), [("pull", DEAL_PAGE, 1), ("write", WRITE_BATCH, 6)]
)
def test_sigterm_finishes_the_page_or_batch_and_records_the_run_interrupted(
    sandbox: SalesforceSandbox, tmp_path: Path, where: str, path: str, nth: int
) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    config = _config(sandbox, tmp_path, store_url)
    _ok("setup", config=config)
    park = sandbox.faults.add(FaultRule(kind="slow", path=path, every=nth, times=1, delay=120))
    worker = Worker("sync", "--once", "--as-of", AS_OF, config=config)
    try:
        _wait_until(lambda: park.fired == 1, f"the run is parked in the {where} phase")
        if where == "pull":  # the pages before the parked one are saved
            with Store.open(store_url) as store:
                _wait_until(lambda: store.cursor("sandbox", "deals") is not None, "a page saved")
        worker.process.send_signal(signal.SIGTERM)
        worker.wait_for_line("SIGTERM received")
    finally:
        park.release()
    started = time.monotonic()
    assert worker.finish(timeout=60) == 0, worker.output
    assert time.monotonic() - started < 30  # the documented bound
    assert ": interrupted" in worker.output
    (run,) = _runs(store_url)
    assert run["status"] == "interrupted" and run["finished_at"] is not None
    assert run["report"]["interrupted"] == "stopped by SIGTERM"
    (source,) = run["report"]["sources"]
    if where == "pull":
        assert 0 < source["pulled"]["deals"] < DEALS and source["written"] == []
    else:
        # The parked batch was finished and remembered; the rest was left for the next run.
        written = sum(w["records_written"] for w in source["written"])
        planned = sum(p["records_to_write"] for p in source["planned"])
        assert 0 < written < planned
    # The next run takes it from there and completes.
    _ok("sync", "--once", "--as-of", AS_OF, config=config)
    assert [r["status"] for r in _runs(store_url)] == ["interrupted", "completed"]


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_the_next_run_marks_the_run_interrupted(
    sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    config = _config(sandbox, tmp_path, store_url)
    _ok("setup", config=config)
    park = sandbox.faults.add(FaultRule(kind="slow", path=DEAL_PAGE, times=1, delay=120))
    worker = Worker("sync", "--once", "--as-of", AS_OF, config=config)
    try:
        _wait_until(lambda: park.fired == 1, "the run is parked on a deal page")

        def checkpointed() -> bool:  # the first deal page is saved and in the run's report
            runs = _runs(store_url)
            report = (runs[0]["report"] or {}) if runs else {}
            return any(s["pulled"].get("deals") for s in report.get("sources", ()))

        _wait_until(checkpointed, "the run's report shows a deal page pulled")
        worker.process.send_signal(signal.SIGTERM)
        worker.wait_for_line("SIGTERM received")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.finish(timeout=30) == -signal.SIGTERM, worker.output
    finally:
        park.release()
    assert [r["status"] for r in _runs(store_url)] == ["running"]  # left behind
    rerun = _ok("sync", "--once", "--as-of", AS_OF, config=config)
    assert "had been left running by a process that is gone: marked interrupted" in rerun
    first, second = _runs(store_url)
    assert (first["status"], second["status"]) == ("interrupted", "completed")
    assert f"pid {worker.pid} on host" in first["report"]["interrupted"]
    # What it had done: its last checkpoint (the first deal page at least).
    assert first["report"]["sources"][0]["pulled"]["deals"] > 0


# ---- 3. exit codes and one line per failure -------------------------------------------------


def test_exit_codes_are_one_table_in_the_code_and_the_readme() -> None:
    from crm_kpi_worker.sync.exit_codes import EXIT_CODES, ExitCode

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert [code for code, _ in EXIT_CODES] == list(ExitCode)
    for code, when in EXIT_CODES:
        assert f"| {code.value} | `{code.name.lower()}` | {when} |" in readme


def test_failures_map_to_their_exit_code_and_one_line() -> None:
    from sqlalchemy.exc import OperationalError

    from crm_kpi_worker.connectors import errors
    from crm_kpi_worker.sync.config.base import SecretError
    from crm_kpi_worker.sync.exit_codes import ExitCode, failure, run_exit_code
    from crm_kpi_worker.sync.store import StoreError

    cases = [
        (errors.AuthenticationFailed("INVALID_LOGIN"), ExitCode.CRM_AUTH),
        (errors.SessionExpired("expired"), ExitCode.CRM_AUTH),
        (errors.DailyLimitExceeded("REQUEST_LIMIT_EXCEEDED"), ExitCode.CRM_UNAVAILABLE),
        (errors.ConnectionFailed("connection refused"), ExitCode.CRM_UNAVAILABLE),
        (errors.ServerError("503"), ExitCode.CRM_UNAVAILABLE),
        (errors.RequestRejected("MALFORMED_QUERY"), ExitCode.ERROR),
        (SecretError("environment variable SF_PASSWORD is not set"), ExitCode.CONFIG),
        (StoreError("cannot open the state store"), ExitCode.STORE),
        (
            OperationalError("UPDATE", {}, Exception("attempt to write a readonly database")),
            ExitCode.STORE,
        ),
        (RunInProgress("sandbox"), ExitCode.RUN_IN_PROGRESS),
        (ValueError("boom"), ExitCode.ERROR),
    ]
    for exc, code in cases:
        found = failure(exc)
        assert found.code == code, exc
        assert "\n" not in found.line and "Traceback" not in found.line
    assert run_exit_code("completed") == run_exit_code("interrupted") == ExitCode.OK
    assert run_exit_code("completed_with_failures") == ExitCode.COMPLETED_WITH_FAILURES
    assert run_exit_code("interrupted", lock_lost=True) == ExitCode.RUN_IN_PROGRESS


@pytest.mark.slow
def test_a_run_with_failed_records_exits_3(sandbox: SalesforceSandbox, tmp_path: Path) -> None:
    config = _config(sandbox, tmp_path, f"sqlite:///{tmp_path / 'store.sqlite'}")
    _ok("setup", config=config)
    sandbox.faults.add(FaultRule(kind="write_failure", path=WRITE_BATCH, times=3))
    worker = Worker("sync", "--once", "--as-of", AS_OF, config=config)
    assert worker.finish() == 3, worker.output
    assert "completed_with_failures" in worker.output


def test_an_unreachable_store_is_one_line_for_sync_and_kpis_show(
    sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from crm_kpi_worker.sync.cli import main

    url = "postgresql://postgres@127.0.0.1:1/nowhere"
    config = _config(sandbox, tmp_path, url)
    for args in (["sync", "--once"], ["kpis", "show"]):
        outcome = CliRunner().invoke(main, [*args, "--config", str(config)])
        assert outcome.exit_code == 8, outcome.output
        (line,) = outcome.output.splitlines()
        assert line.startswith("error: cannot open the state store postgresql") and "1" in line
    debug = CliRunner().invoke(main, ["--debug", "kpis", "show", "--config", str(config)])
    assert debug.exit_code == 8 and "Traceback" in debug.output


def _as_other_user() -> list[str]:
    """A command prefix that runs without write access to files it does not own (root
    ignores file modes): util-linux's setpriv to user nobody when running as root."""
    if os.geteuid() != 0:
        return []
    import shutil

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop write access")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.slow
def test_kpis_show_reads_a_read_only_store(sandbox: SalesforceSandbox, tmp_path: Path) -> None:
    import shutil
    import tempfile

    config = _config(sandbox, tmp_path, f"sqlite:///{tmp_path / 'store.sqlite'}")
    _ok("setup", config=config)
    _ok("sync", "--once", "--as-of", AS_OF, config=config)
    # A folder the other user can read but not write, holding a store it cannot write.
    folder = Path(tempfile.mkdtemp(prefix="crm-kpi-ro-"))
    try:
        shutil.copy(tmp_path / "store.sqlite", folder / "store.sqlite")
        text = config.read_text(encoding="utf-8").replace(str(tmp_path), str(folder))
        (folder / "crm-kpi.yaml").write_text(text, encoding="utf-8")
        (folder / "store.sqlite").chmod(0o444)
        (folder / "crm-kpi.yaml").chmod(0o444)
        folder.chmod(0o555)
        before = sorted(p.name for p in folder.iterdir())
        for command, code in (
            (["kpis", "show", "--period", "2026-Q3"], 0),
            (["sync", "--once"], 8),
        ):
            result = subprocess.run(  # noqa: S603
                [*_as_other_user(), CLI, *command, "--config", str(folder / "crm-kpi.yaml")],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == code, result.stderr
            assert "Traceback" not in result.stderr
        shown = subprocess.run(  # noqa: S603
            [*_as_other_user(), CLI, "kpis", "show", "--config", str(folder / "crm-kpi.yaml")],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "Alice Martin" in shown.stdout
        assert result.stderr.startswith("error: cannot open the state store sqlite")
        assert len(result.stderr.strip().splitlines()) == 1
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


# ---- 7. the service -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_service_runs_at_start_says_its_schedule_and_stops_on_sigterm(
    sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    config = _config(
        sandbox,
        tmp_path,
        f"sqlite:///{tmp_path / 'store.sqlite'}",
        "\nschedule:\n  cron: '0 6 * * 1-5'\n",
    )
    _ok("setup", config=config)
    worker = Worker("sync", config=config)
    try:
        start = worker.wait_for_line("crm-kpi: running")
        start = start[start.index("crm-kpi: running") :]  # after the log line's time and level
        assert re.fullmatch(
            r"crm-kpi: running At 06:00, Monday through Friday \(cron '0 6 \* \* 1-5',"
            r" Europe/Paris\); first run now, then at \d{4}-\d\d-\d\d 06:00:00 CES?T;"
            r" SIGTERM or Ctrl-C to stop",
            start,
        ), start
        done = worker.wait_for_line(r"run 1 (completed|failed)")
        assert "run 1 completed; next run at" in done and "06:00:00" in done
        assert "executed successfully" not in worker.output
        worker.process.send_signal(signal.SIGTERM)
        assert worker.finish(timeout=60) == 0, worker.output
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
    assert "crm-kpi: stopped (stopped by SIGTERM)" in worker.output
    assert "None" not in start


def test_the_service_backs_off_refused_logins(caplog: pytest.LogCaptureFixture) -> None:
    from crm_kpi_worker.connectors.errors import AuthenticationFailed
    from crm_kpi_worker.sync.service import AuthBackoff, Service
    from crm_kpi_worker.sync.stops import StopRequest

    now = [dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)]
    attempts: list[dt.datetime] = []

    def refused(_stop: StopRequest) -> Any:
        attempts.append(now[0])
        raise AuthenticationFailed("INVALID_LOGIN: wrong password")

    backoff = AuthBackoff(
        first=dt.timedelta(minutes=5), cap=dt.timedelta(minutes=40), clock=lambda: now[0]
    )
    service = Service(refused, StopRequest(), backoff=backoff)
    for _ in range(180):  # three hours of ticks every minute
        service.tick()
        now[0] += dt.timedelta(minutes=1)
    waits = [(b - a).total_seconds() / 60 for a, b in itertools.pairwise(attempts)]
    assert waits[:4] == [5, 10, 20, 40] and set(waits[4:]) == {40}
    assert service.outcomes == ["crm_auth"] * len(attempts)
    # One line per back-off step, none for the ticks skipped while backing off.
    steps = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(steps) == len(attempts)
    assert "refused 2 time(s) in a row: no new attempt before 2026-12-05 08:15:00 UTC" in steps[1]
    assert steps[1].endswith("(backing off 10 min)") and "wrong password" in steps[1]
