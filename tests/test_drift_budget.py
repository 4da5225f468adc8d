"""Issue 11, points 4 to 6 on both sandboxes: hand edits of the worker's fields are repaired
(drift), the API budget stops a run cleanly, re-read records whose only change is the worker's
own write are not normalized again, and a change made between the pull and the write is not
missed."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_pipeline import Clock, demo_config, setup_targets
from test_pipeline_hubspot import UNLIMITED, hubspot_config
from test_pipeline_hubspot import setup_targets as setup_hubspot_targets

from crm_kpi_worker.connectors.budget import ApiUsage, CallBudget, parse_limit_info
from crm_kpi_worker.connectors.errors import BudgetExhausted
from crm_kpi_worker.connectors.registry import build_connector
from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.cli_runs import _show_csv
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.pipeline import RunOptions, RunResult, run_once
from crm_kpi_worker.sync.readback import VERIFIED_AT, same_value
from crm_kpi_worker.sync.store import Store, StoredPage

AS_OF = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
REFERENCE = dt.date(2026, 9, 30)


class Crm:
    """One sandbox with the demo config: runs, and hand edits as a person would make them."""

    def __init__(self, kind: str, sandbox: Any, config: AppConfig, clock: Clock) -> None:
        self.kind = kind
        self.sandbox = sandbox
        self.config = config
        self.clock = clock
        self.store = Store.open(config.store.resolve_url())
        self.source = config.sources[0]
        card = config.kpi_fields_for(self.source).scorecard
        assert card is not None
        self.card = card
        deal = config.kpi_fields_for(self.source).deal
        assert deal is not None
        self.deal_field = deal.fields["close_date_slips"]
        self.deal_object = "Opportunity" if kind == "salesforce" else "deals"

    def run(self, **options: Any) -> RunResult:
        return run_once(self.config, self.store, RunOptions(as_of=AS_OF, **options))

    def connector(self) -> Any:
        return build_connector(self.source, self.config.currency)

    def scorecard_ids(self) -> dict[str, str]:
        """external key -> record id, as the CRM holds them."""
        ids: dict[str, str] = {}
        connector = self.connector()
        for page in connector.read_back(self.card.object, [self.card.external_id]):
            for record_id, values in page.items():
                ids[str(values[self.card.external_id])] = record_id
        return ids

    def held(self, object: str, key_field: str | None, fields: list[str]) -> dict[str, Any]:
        held: dict[str, Any] = {}
        for page in self.connector().read_back(object, fields, key_field):
            held.update(page)
        return held

    def edit(self, object: str, record_id: str, values: dict[str, Any]) -> None:
        """A hand edit in the CRM (not through the worker's memory)."""
        connector = self.connector()
        if self.kind == "salesforce":
            getattr(connector.client, object).update(record_id, values)
        else:
            object_type = object if object == "deals" else connector.targets.object_type(object)
            (result,) = connector.writer.update(object_type, {record_id: values})
            assert result.success, result
        self.clock.advance(1)


def _source(result: RunResult) -> dict[str, Any]:
    (source,) = result.report()["sources"]
    return source


@pytest.fixture(params=["salesforce", "hubspot"])
def crm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Crm]:
    clock = Clock()
    if request.param == "salesforce":
        with SalesforceSandbox.start(reference_date=REFERENCE, clock=clock) as sandbox:
            config = demo_config(sandbox, tmp_path / "store.sqlite")
            setup_targets(config)
            env = Crm("salesforce", sandbox, config, clock)
            yield env
            env.store.close()
    else:
        with HubSpotSandbox.start(reference_date=REFERENCE, clock=clock, limits=UNLIMITED) as hs:
            config = hubspot_config(hs, tmp_path / "store.sqlite")
            setup_hubspot_targets(config)
            env = Crm("hubspot", hs, config, clock)
            yield env
            env.store.close()


def _hand_edit_scorecard_and_deal(crm: Crm) -> tuple[str, str, Any, Any]:
    """Quota 1 and bookings 999999 on Alice's scenario-quarter scorecard, and a deal's KPI field
    set to 42; returns the scorecard key, the deal id and the values the worker wrote there."""
    quota, bookings = crm.card.fields["quota"], crm.card.fields["bookings_arr"]
    keys = crm.scorecard_ids()
    key = next(k for k in keys if k.endswith(":2026-Q3") and ":rep:" in k and "Unassigned" not in k)
    remembered = crm.store.written(crm.source.name, crm.card.object, keys=[key])
    wrote = (remembered[key, quota], remembered[key, bookings])
    crm.edit(crm.card.object, keys[key], {quota: 1, bookings: 999999})
    deal_memory = crm.store.written(crm.source.name, crm.deal_object)
    deal_id = next(k for (k, name) in deal_memory if name == crm.deal_field)
    wrote_deal = deal_memory[deal_id, crm.deal_field]
    crm.edit(crm.deal_object, deal_id, {crm.deal_field: 42})
    return key, deal_id, wrote, wrote_deal


def _assert_repaired(crm: Crm, key: str, deal_id: str, wrote: Any, wrote_deal: Any) -> None:
    quota, bookings = crm.card.fields["quota"], crm.card.fields["bookings_arr"]
    held = crm.held(crm.card.object, crm.card.external_id, [quota, bookings])[key]
    assert same_value(wrote[0], held[quota]) and same_value(wrote[1], held[bookings]), held
    deal = crm.held(crm.deal_object, None, [crm.deal_field])[deal_id]
    assert same_value(wrote_deal, deal[crm.deal_field])
    # The write memory holds what the CRM holds.
    memory = crm.store.written(crm.source.name, crm.card.object, keys=[key])
    assert memory[key, quota] == wrote[0] and memory[key, bookings] == wrote[1]


def test_hand_edits_are_repaired_by_a_verify_run_and_reported_as_drift(crm: Crm) -> None:
    crm.run()
    crm.clock.advance(10)
    assert _source(crm.run())["drift"] == []  # nothing drifted: nothing reported
    key, deal_id, wrote, wrote_deal = _hand_edit_scorecard_and_deal(crm)

    verified = crm.run(verify=True)
    report = _source(verified)

    drift = {d["object"]: d for d in report["drift"]}
    assert drift[crm.card.object]["keys"] == [key]
    # crm-kpi runs show lists the drifted records with the run's writes (CSV: one row each).
    out = io.StringIO()
    _show_csv(crm.store.run(verified.run_id), crm.store.planned(verified.run_id), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert {(r["object"], r["id"]) for r in rows if r["section"] == "drift"} == {
        (crm.card.object, key),
        (crm.deal_object, deal_id),
    }
    assert {r["id"] for r in rows if r["section"] == "record" and r["outcome"] == "written"} >= {
        deal_id
    }
    assert drift[crm.card.object]["repaired"] == 1
    assert drift[crm.deal_object]["keys"] == [deal_id]
    assert drift[crm.deal_object]["repaired"] == 1
    written = {w["object"]: w for w in report["written"]}
    # Only the drifted records were written, and on the scorecard only the fields the worker
    # owns that differed (the two edited ones, its computation stamp and its name).
    assert written[crm.card.object]["records_written"] == 1
    assert written[crm.card.object]["fields_written"] == 4
    assert written[crm.deal_object]["records_written"] == 1
    assert written[crm.deal_object]["fields_written"] == 1
    _assert_repaired(crm, key, deal_id, wrote, wrote_deal)
    crm.clock.advance(10)
    again = _source(crm.run(verify=True))
    assert again["drift"] == [] and again["written"] == []


def test_the_cadence_verifies_the_scorecards_and_the_pull_reads_deal_fields_along(
    crm: Crm,
) -> None:
    crm.run()
    crm.clock.advance(10)
    crm.run()  # the first verify pass after the first write-back: nothing drifted
    key, deal_id, wrote, wrote_deal = _hand_edit_scorecard_and_deal(crm)

    # Within write.verify_every (1 day): the scorecard is not read back, the deal comes along
    # the incremental pull (its stamp moved) and is repaired at no extra call.
    report = _source(crm.run())
    assert report["verified"] == {}
    assert [d["object"] for d in report["drift"]] == [crm.deal_object]

    # A day later, the cadence reads the scorecards back.
    day_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1, minutes=1)).isoformat()
    crm.store.save_page(
        StoredPage(source=crm.source.name, stream="metadata", metadata={VERIFIED_AT: day_ago})
    )
    report = _source(crm.run())
    assert report["verified"][crm.card.object] > 0
    assert [(d["object"], d["keys"]) for d in report["drift"]] == [(crm.card.object, [key])]
    _assert_repaired(crm, key, deal_id, wrote, wrote_deal)


def test_records_whose_only_change_is_the_workers_write_are_not_normalized_again(
    crm: Crm,
) -> None:
    first = _source(crm.run())
    written_deals = next(w for w in first["written"] if w["object"] == crm.deal_object)
    crm.clock.advance(1)  # within the lookback: the written deals are read again
    second = _source(crm.run())
    assert second["pulled"]["deals"] >= written_deals["records_written"]
    assert second["unchanged_on_pull"]["deals"] == second["pulled"]["deals"]
    assert second["written"] == []


def test_a_change_between_the_pull_and_the_write_is_not_missed(crm: Crm) -> None:
    crm.run()
    crm.clock.advance(10)
    crm.run()  # reads the deals the first run wrote
    crm.clock.advance(10)
    memory = crm.store.written(crm.source.name, crm.deal_object)
    deal_id = next(k for (k, name) in memory if name == crm.deal_field)
    # The worker will write this deal in the next run (after the edit below), so it is last
    # modified by the worker, with the edit's change underneath.
    crm.store.record_written(crm.source.name, crm.deal_object, [(deal_id, crm.deal_field, -1)])
    amount = "Amount" if crm.kind == "salesforce" else "amount"
    edited: list[str] = []

    def factory(source: Any, currency: Any) -> Any:
        connector = build_connector(source, currency)
        upsert = connector.upsert

        def upsert_after_an_edit(*args: Any) -> Any:
            if not edited:  # someone edits a deal once the pull is over, before the writes
                crm.edit(crm.deal_object, deal_id, {amount: 123456})
                edited.append(deal_id)
            return upsert(*args)

        connector.upsert = upsert_after_an_edit
        return connector

    # A week later every scorecard's computation changes, so the run writes; the edit lands
    # between its pull and its writes.
    later = RunOptions(as_of=AS_OF + dt.timedelta(days=7))
    result = run_once(crm.config, crm.store, later, connector_factory=factory)
    assert edited, _source(result)["written"]
    written = {w["object"]: w for w in _source(result)["written"]}
    assert written[crm.deal_object]["records_written"] >= 1
    crm.clock.advance(1)
    crm.run()
    deals = {d.id: d for d in _stored_deals(crm)}
    assert float(deals[deal_id].amount or 0) == 123456


def _stored_deals(crm: Crm) -> list[Any]:
    from stored_rows import stored_deals

    return stored_deals(crm.store, crm.source.name)


# ---- the budget -------------------------------------------------------------------------------


def test_limit_info_and_the_call_budget() -> None:
    assert parse_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=x)") == ApiUsage(
        25, 5000
    )
    assert parse_limit_info(None) is None
    budget = CallBudget(0.5, "s")
    budget.before_call()  # no limit known yet: nothing refused
    budget.note(ApiUsage(97, 200))
    budget.before_call()  # 98
    budget.before_call()  # 99
    budget.before_call()  # 100 = half of 200
    assert budget.allowance == 0
    with pytest.raises(BudgetExhausted, match="allows 100"):
        budget.before_call()


def test_a_run_stops_cleanly_at_its_share_of_the_daily_limit_and_the_next_resumes(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with SalesforceSandbox.start(reference_date=REFERENCE, clock=clock, api_limit=200) as sandbox:
        config = demo_config(sandbox, tmp_path / "store.sqlite")
        setup_targets(config)
        used_by_setup = sandbox.app.stats.api_calls
        share = (used_by_setup + 12) / 200  # room for a dozen calls: the pull, not the writes
        budget = config.budget.model_copy(update={"max_share_of_daily_limit": share})
        config = config.model_copy(update={"budget": budget})
        with Store.open(config.store.resolve_url()) as store:
            result = run_once(config, store, RunOptions(as_of=AS_OF))
            assert result.status == "stopped_for_budget"
            report = _source(result)
            assert report["stopped"] and "max_share_of_daily_limit" in report["stopped"]
            assert sandbox.app.stats.api_calls <= share * 200  # the sandbox counts
            assert report["budget"]["ceiling"] == int(share * 200)
            # At once, a run makes no call at all: the usage the last run saw is remembered
            # (without it, each run's first calls would go out before the CRM says its usage).
            calls = sandbox.app.stats.api_calls
            refused = run_once(config, store, RunOptions(as_of=AS_OF))
            assert refused.status == "stopped_for_budget"
            assert sandbox.app.stats.api_calls == calls
            assert "makes no call" in _source(refused)["stopped"]
            # The next day (a new limit; the remembered usage is old), the next run resumes
            # from the stored cursors and writes the rest.
            sandbox.app.api_limit = 100_000
            clock.advance(2)
            _age_remembered_usage(store, config.sources[0].name)
            again = run_once(config, store, RunOptions(as_of=AS_OF))
            assert again.status == "completed"
            pulled_again = _source(again)["pulled"].get("deals", 0)
            assert pulled_again < len(sandbox.org.data.deals)


def _age_remembered_usage(store: Store, source: str) -> None:
    from crm_kpi_worker.sync.run_budget import API_USAGE, USAGE_TRUSTED_FOR

    saved = dict(store.metadata(source, API_USAGE))
    saved["at"] = (dt.datetime.now(dt.UTC) - USAGE_TRUSTED_FOR).isoformat()
    store.save_page(StoredPage(source=source, stream="metadata", metadata={API_USAGE: saved}))


def test_the_hubspot_budget_reads_the_daily_headers(tmp_path: Path) -> None:
    clock = Clock()
    limits = RateLimits(search_per_second=None, burst_per_10s=None, daily=400)
    with HubSpotSandbox.start(reference_date=REFERENCE, clock=clock, limits=limits) as sandbox:
        config = hubspot_config(sandbox, tmp_path / "store.sqlite")
        setup_hubspot_targets(config)
        budget = config.budget.model_copy(update={"max_share_of_daily_limit": 0.1})
        config = config.model_copy(update={"budget": budget})
        with Store.open(config.store.resolve_url()) as store:
            result = run_once(config, store, RunOptions(as_of=AS_OF))
        report = _source(result)
        assert result.status == "stopped_for_budget", report["budget"]
        assert report["budget"]["daily_limit"] == 400
        assert report["budget"]["ceiling"] == 40
        assert report["budget"]["org_used"] <= 40


def test_dry_run_prints_the_calls_and_the_budget(crm: Crm) -> None:
    from crm_kpi_worker.sync.run_budget import describe_budget

    report = _source(crm.run(dry_run=True))
    lines = describe_budget(report["budget"])
    assert lines[0].startswith("API calls the run would make")
    calls = report["budget"]["calls"]
    # Connecting and the pull are counted as made; the writes are what they would cost.
    assert calls["connect"] + sum(calls["pull"].values()) + calls["verify"] == report["api_calls"]
    assert calls["pull"]["deals"] >= 1
    assert calls["write"][crm.card.object] >= 1
    assert report["budget"]["calls_total"] == report["api_calls"] + sum(calls["write"].values())
    assert f"writes {sum(calls['write'].values())} (" in lines[0]
    assert "a dry run sends none" in lines[0]


def test_the_budget_counts_every_call_the_run_made(crm: Crm) -> None:
    report = _source(crm.run())
    calls = report["budget"]["calls"]
    assert sum(calls["write"].values()) >= 1
    assert report["budget"]["calls_total"] == report["api_calls"]
