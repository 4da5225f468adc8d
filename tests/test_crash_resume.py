"""A run killed at any point and started again ends with the same store and CRM state as an
uninterrupted run.

The worker runs as the real ``crm-kpi sync --once`` in its own process. A ``slow`` fault parks
it on a chosen request (a page of the deal pull, a write batch); the test waits until it is
parked there and kills it with SIGKILL (no clean-up of any kind), then runs it again to the
end. A second, identical sandbox gets one uninterrupted run. Store and CRM must then agree.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REST_ONLY, write_demo_config
from stored_rows import live_deal_ids, stored_deals

from crm_kpi_worker.sandbox.faults import FaultRule
from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.store import Store

DEALS = 5000  # three pages of deals, 25+ write batches: room to stop in the middle
AS_OF = "2026-11-26T12:00:00+00:00"
CLI = str(Path(sys.executable).parent / "crm-kpi")


def _cli(*args: str, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - the project's own CLI
        [CLI, *args, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def _wait_until(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


@pytest.fixture
def sandboxes() -> Iterator[tuple[SalesforceSandbox, SalesforceSandbox]]:
    options: dict[str, Any] = {"seed": 11, "deals": DEALS, "reference_date": dt.date(2026, 9, 30)}
    with SalesforceSandbox.start(**options) as crashed, SalesforceSandbox.start(**options) as clean:
        yield crashed, clean


def _state(store_path: Path, sandbox: SalesforceSandbox) -> dict[str, Any]:
    with Store.open(f"sqlite:///{store_path}") as store:
        deals = stored_deals(store, "sandbox")
        kpis = {row.key: row.value for row in store.kpis("sandbox")}
        written = {
            obj: store.written("sandbox", obj) for obj in ("KPI_Scorecard__c", "Opportunity")
        }
        exclusions = sorted((e.record_id, e.reason) for e in store.exclusions("sandbox"))
    rows = sorted((d.id, d.stage, d.arr, d.close_date) for d in deals)
    sf = sandbox.client()
    opportunities = sorted(
        tuple(r.values())[1:]
        for r in sf.query_all_iter(
            "SELECT Id, KPI_Deal_Created_On__c, KPI_Stage_Entered_On__c, KPI_Close_Date_Slips__c,"
            " KPI_Owner_Quota_Attainment__c FROM Opportunity"
        )
    )
    cards = sorted(
        tuple(v for k, v in r.items() if k not in {"attributes", "Id", "Computed_At__c"})
        for r in sf.query_all_iter(
            "SELECT Id, Scorecard_Key__c, Name, Bookings_ARR__c, Quota_Attainment__c, Win_Rate__c,"
            " Deals_Won__c, Open_Pipeline_ARR__c, Demos_Per_Week__c, Computed_At__c"
            " FROM KPI_Scorecard__c"
        )
    )
    return {
        "deals": rows,
        "kpis": kpis,
        "written": written,
        "exclusions": exclusions,
        "opportunities": opportunities,
        "scorecards": cards,
    }


#: The Bulk road for pulls and writes of more than 1,000 records; pages of 5 x 200 records,
#: results pages of 20 x 200 rows (the 5,000 deals take two).
BULK = "    page_size: 200\n    bulk: {pull_above: 1000, write_above: 1000}\n"
ROADS = {True: BULK, False: REST_ONLY}
#: The first Bulk job of a fresh sandbox: the deals' (users and accounts are one REST page).
DEALS_JOB = make_id("750", 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "path", "nth", "bulk"),
    [
        # parked on the 3rd deals page
        ("in the middle of the deal pull", "/query(All)?/01g", 2, False),
        ("in the middle of the write-back", "/composite/sobjects", 6, False),  # on the 6th batch
        # the Bulk road: parked on the 2nd results page of the deals job (pages saved before)
        ("in the middle of the Bulk deal pull", f"/jobs/query/{DEALS_JOB}/results", 2, True),
        # parked on the upload of the deals' ingest job
        ("in the middle of the Bulk write-back", "/jobs/ingest/[^/]+/batches", 1, True),
    ],
)
def test_killed_run_resumes_to_the_same_state(
    sandboxes: tuple[SalesforceSandbox, SalesforceSandbox],
    tmp_path: Path,
    where: str,
    path: str,
    nth: int,
    bulk: bool,
) -> None:
    crashed, clean = sandboxes
    (tmp_path / "crashed").mkdir()
    (tmp_path / "clean").mkdir()
    # The crashed run takes the road under test; the clean one REST: both end the same.
    crashed_config = write_demo_config(crashed, tmp_path / "crashed", ROADS[bulk])
    clean_config = write_demo_config(clean, tmp_path / "clean", REST_ONLY)
    for config in (crashed_config, clean_config):
        _finish(_cli("setup", config=config))

    # Park the worker on the nth matching request, then kill it there.
    park = crashed.faults.add(FaultRule(kind="slow", path=path, every=nth, times=1, delay=60))
    process = _cli("sync", "--once", "--as-of", AS_OF, config=crashed_config)
    try:
        store_url = f"sqlite:///{tmp_path / 'crashed' / 'store.sqlite'}"

        def parked() -> bool:
            if park.fired != 1:
                return False
            if "pull" not in where:
                return True
            # The page read ahead is parked; wait until the pages before it are saved.
            with Store.open(store_url) as store:
                return store.cursor("sandbox", "deals") is not None

        _wait_until(parked, f"the worker is parked {where}")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    crashed.faults.clear()
    live = DEALS - int(crashed.org.data.deals.is_deleted.sum())
    with Store.open(f"sqlite:///{tmp_path / 'crashed' / 'store.sqlite'}") as store:
        stored = len(live_deal_ids(store, "sandbox"))
        written = len(store.written("sandbox", "Opportunity"))
        cards = len(store.written("sandbox", "KPI_Scorecard__c"))
    if "pull" in where:  # the first page is saved, the rest is not
        assert 0 < stored < live and written == 0
    elif bulk:  # everything pulled, the scorecards written, the deals' job in flight
        assert stored == live and written == 0 and cards > 0
    else:  # everything pulled, some batches written
        assert stored == live and 0 < written < 4 * live

    _finish(_cli("sync", "--once", "--as-of", AS_OF, config=crashed_config))
    _finish(_cli("sync", "--once", "--as-of", AS_OF, config=clean_config))

    resumed = _state(tmp_path / "crashed" / "store.sqlite", crashed)
    uninterrupted = _state(tmp_path / "clean" / "store.sqlite", clean)
    assert len(resumed["deals"]) == DEALS - sum(crashed.org.data.deals.is_deleted)
    assert len(resumed["scorecards"]) > 0
    for part in uninterrupted:
        assert resumed[part] == uninterrupted[part], part
