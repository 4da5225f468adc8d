"""The engine's frames built from the store: chunking never changes them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_pipeline import AS_OF, demo_config

from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.frames import UNASSIGNED_ID, _id_order, build_input, local_days
from crm_kpi_worker.sync.pipeline import RunOptions, run_once
from crm_kpi_worker.sync.store import Store


def test_frames_do_not_depend_on_the_chunk_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SalesforceSandbox.start(deals=1500) as sandbox:
        config = demo_config(sandbox, tmp_path / "store.sqlite")
        source = config.sources[0]
        with Store.open(config.store.resolve_url()) as store:
            run_once(config, store, RunOptions(as_of=AS_OF, dry_run=True))
            whole = build_input(store, config, source, AS_OF.date())
            original = Store.iter_deal_arrays
            chunk_sizes: list[int] = []

            def seven_at_a_time(self: Store, src: str, rows: int = 0) -> Any:
                for chunk in original(self, src, rows=7):
                    chunk_sizes.append(len(chunk))
                    yield chunk

            monkeypatch.setattr(Store, "iter_deal_arrays", seven_at_a_time)
            chunked = build_input(store, config, source, AS_OF.date())
    # The chunked build really read the deals 7 at a time (the path build_input takes).
    assert len(chunk_sizes) > 200 and max(chunk_sizes) == 7
    assert sum(chunk_sizes) == len(whole.deals)
    assert len(whole.deals) == 1500 - int(sandbox.org.data.deals.is_deleted.sum())
    for name in (
        "id",
        "owner",
        "created",
        "close",
        "is_won",
        "is_lost",
        "arr",
        "cycle_start",
        "stage_known",
        "credited",
        "is_renewal",
        "forecast",
        "probability",
        "qualified",
        "entered_entry",
        "stage_entered",
        "slips",
    ):
        a, b = getattr(whole.deals, name), getattr(chunked.deals, name)
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), name
        elif a.dtype.kind == "M":  # NaT never equals NaT: compare the integer form
            assert np.array_equal(a.astype(np.int64), b.astype(np.int64)), name
        else:
            assert np.array_equal(a, b), name
    # Accounts are numbered in first-seen order: the same deals point at the same churn dates.
    churn_whole = whole.accounts.churn[whole.deals.account].astype(np.int64)
    churn_chunked = chunked.accounts.churn[chunked.deals.account].astype(np.int64)
    assert np.array_equal(churn_whole, churn_chunked)
    assert (
        whole.reps.id[-1] == UNASSIGNED_ID
        and whole.unassigned_deals == chunked.unassigned_deals > 0
    )


def test_local_days_follow_the_fiscal_time_zone() -> None:
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    instants = [
        dt.datetime(2026, 3, 31, 22, 30, tzinfo=dt.UTC),  # 00:30 on Apr 1 in Paris (summer time)
        dt.datetime(2026, 1, 31, 22, 30, tzinfo=dt.UTC),  # 23:30 on Jan 31 in Paris (winter)
        None,
    ]
    days = local_days(instants, paris)
    assert days[0] == np.datetime64("2026-04-01") and days[1] == np.datetime64("2026-01-31")
    assert np.isnat(days[2])


def test_deals_are_put_in_the_bytes_order_of_their_ids() -> None:
    # SQLite hands the ids over in that order already; PostgreSQL in its collation's.
    ids = np.array(["006b", "006B", "006É", "006a", "006Z", "006\x1e"], dtype=object)
    order = _id_order(ids)
    assert order is not None
    assert [ids[i] for i in order] == sorted(ids, key=lambda i: i.encode())
    assert _id_order(ids[order]) is None
    assert _id_order(ids[:1]) is None
