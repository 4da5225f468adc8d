"""Limits shared by every worker (sync/scale/limits.py), counted in the control schema: the
org's API budget and HubSpot's per-token rate limits, whichever process makes the calls."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_fleet import REFERENCE, tenant_config

from crm_kpi_worker.connectors.budget import ApiUsage
from crm_kpi_worker.connectors.errors import BudgetExhausted
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits
from crm_kpi_worker.sync.scale.control import ControlStore, RunKey
from crm_kpi_worker.sync.scale.limits import SharedCallBudget, SharedPacer, org_key
from crm_kpi_worker.sync.scale.runner import SourceRunner
from crm_kpi_worker.sync.scale.stores import Deployment
from crm_kpi_worker.sync.scale.tenants import TenantFiles

ORG = "hubspot:https://127.0.0.1:1:0123456789abcdef"


@pytest.fixture
def control(deployment: Deployment) -> Iterator[ControlStore]:
    with ControlStore.open(deployment) as store:
        yield store


def _calls(budget: SharedCallBudget, attempts: int, made: list[int]) -> None:
    for _ in range(attempts):
        try:
            budget.before_call()
        except BudgetExhausted:
            continue
        made.append(1)


def test_two_workers_budgets_of_one_org_never_pass_its_share_together(
    control: ControlStore,
) -> None:
    # Two runs (as on two workers: two objects, no memory in common but the store).
    first = SharedCallBudget(0.5, "a", ORG, control)
    second = SharedCallBudget(0.5, "b", ORG, control)
    first.note(ApiUsage(90, 200))  # the CRM said 90 of 200: the share allows 100
    made: list[int] = []

    threads = [threading.Thread(target=_calls, args=(b, 25, made)) for b in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(made) == 10
    with pytest.raises(BudgetExhausted, match="the org has used 100 of its 200 daily calls"):
        second.before_call()
    assert control.usage(ORG)["calls_since"] == 10  # type: ignore[index]


def test_the_crms_usage_takes_off_the_calls_it_already_counts(control: ControlStore) -> None:
    budget = SharedCallBudget(1.0, "a", ORG, control)
    budget.note(ApiUsage(100, 1000))
    for _ in range(5):
        budget.before_call()

    budget.note(ApiUsage(103, 1000))  # 3 of the 5 calls answered since

    assert budget.calls_since_noted == 2
    assert budget.allowance == 1000 - 103 - 2
    # A usage remembered by an older run does not replace a newer one...
    budget.remembered(ApiUsage(10, 1000), dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30))
    assert control.usage(ORG)["used"] == 103  # type: ignore[index]
    # ...and a new run of another worker starts from the shared one.
    assert SharedCallBudget(1.0, "b", ORG, control).allowance == 1000 - 103 - 2


def test_a_stale_usage_refuses_nothing_until_the_crm_says_it_again(control: ControlStore) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    control.note_usage(ORG, 200, 200, at=long_ago)  # all used, two hours ago

    budget = SharedCallBudget(0.5, "a", ORG, control)
    assert budget.usage is None  # not trusted: Salesforce's window rolls, HubSpot's resets
    budget.before_call()  # goes out; its answer will say the usage
    budget.note(ApiUsage(150, 200))
    with pytest.raises(BudgetExhausted):
        budget.before_call()


def test_two_workers_slots_of_one_bucket_are_spaced_as_one(control: ControlStore) -> None:
    slots: list[dt.datetime] = []
    guard = threading.Lock()

    def calls() -> None:  # as fast as they come: faster than 1 a second
        for _ in range(10):
            slot, _wait = control.next_slot(f"{ORG}:search", 1.0)
            with guard:
                slots.append(slot)

    threads = [threading.Thread(target=calls) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # 20 calls, 1 a second: each slot exactly 1 s after the one before, whoever took it.
    gaps = {b - a for a, b in itertools.pairwise(sorted(slots))}
    assert gaps == {dt.timedelta(seconds=1)}


def test_a_pacer_waits_for_its_slot(control: ControlStore) -> None:
    waited: list[float] = []
    pacer = SharedPacer(control, f"{ORG}:api", 1, 2.0, sleep=waited.append)

    for _ in range(3):
        pacer.acquire()

    assert len(waited) == 2  # the first slot is now; the next ones 2 s apart
    assert 0 < waited[0] <= 2 and waited[0] < waited[1] <= 4
    assert pacer.waited == sum(waited)
    pacer.lower_to(1, 4.0)  # the portal said: 1 in 4 s
    assert (pacer.limit, pacer.period) == (1, 4.0)
    pacer.lower_to(100, 1.0)  # a looser limit is not followed
    assert (pacer.limit, pacer.period) == (1, 4.0)


def test_orgs_are_told_apart_without_a_secret(tmp_path: Path) -> None:
    folder = tmp_path / "tenants"
    folder.mkdir()
    for name in ("acme", "globex"):
        tenant_config("hubspot", _FakeSandbox(), folder / f"{name}.yaml")
    environ = {"CRM_KPI_ACME__CRM_KPI_HUBSPOT_TOKEN": "acme-token"}
    found = TenantFiles(folder, environ=environ).scan()
    keys = {t.name: org_key(t.config.sources[0], t.environ) for t in found.tenants}

    assert keys["acme"] != keys["globex"]  # acme's token, globex's sandbox default
    assert all(key.startswith("hubspot:https://127.0.0.1:1:") for key in keys.values())
    assert "acme-token" not in keys["acme"] and "pat-sandbox-demo" not in keys["globex"]


@dataclasses.dataclass
class _FakeSandbox:
    url: str = "https://127.0.0.1:1"
    ca_path: str = "/nonexistent/ca.pem"


@pytest.mark.slow
def test_two_tenants_runs_on_one_portal_share_its_budget_and_rate_limits(
    tmp_path: Path, deployment: Deployment, control: ControlStore
) -> None:
    """Two tenants' sources on one HubSpot portal (one app token), run at once by a worker's
    two threads: together they never pass the share of the portal's daily limit."""
    from sandbox_fleet import set_up

    limits = RateLimits(search_per_second=None, burst_per_10s=None, daily=120)
    with HubSpotSandbox.start(seed=3, reference_date=REFERENCE, limits=limits) as sandbox:
        folder = tmp_path / "tenants"
        folder.mkdir()
        for name in ("acme", "globex"):
            tenant_config("hubspot", sandbox, folder / f"{name}.yaml")
        set_up(folder / "acme.yaml")
        sandbox.app._daily_used = 0  # the day starts now: only the runs count
        runner = SourceRunner(deployment, TenantFiles(folder), control)
        due = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        outcomes = []
        threads = [
            threading.Thread(
                target=lambda name=name: outcomes.append(runner.run(RunKey(name, "sandbox", due)))
            )
            for name in ("acme", "globex")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        used = int(sandbox.app._daily_used)
    # The share (0.5) of 120 calls: 60; each run alone needs more than 40.
    assert used <= 60, used
    assert sorted(o.detail for o in outcomes).count("stopped_for_budget") >= 1
    row = control.usage(org_key(TenantFiles(folder).scan().tenants[0].config.sources[0]))
    assert row is not None and row["daily_limit"] == 120
