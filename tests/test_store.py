"""The state store, on SQLite and on PostgreSQL (CRM_KPI_TEST_POSTGRES_URL).

Every PostgreSQL test runs in a schema of its own (created with a per-session prefix and
dropped afterwards), so CI jobs and developers can share one server.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from stored_rows import (
    live_activities,
    live_deal_ids,
    stored_deals,
    stored_history,
    stored_kpi_history,
    stored_metadata,
    stored_runs,
)

from crm_kpi_worker.sync.model import (
    Account,
    Activity,
    Deal,
    DealType,
    FieldChange,
    ForecastCategory,
    Quota,
    QuotaSource,
    Rep,
    StageChange,
)
from crm_kpi_worker.sync.store import (
    Exclusion,
    KpiRow,
    Snapshot,
    Store,
    StoredPage,
    StoreError,
    StoreSchemaTooNewError,
    migrate,
    normalise_url,
)
from crm_kpi_worker.sync.store.pulled import PulledRecords
from crm_kpi_worker.sync.store.schema import deals as deals_table
from crm_kpi_worker.sync.store.schema import metadata as store_metadata
from crm_kpi_worker.sync.store.schema import sync_cursors

T0 = dt.datetime(2024, 6, 1, 9, 0, tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm-kpi.sqlite'}"
    return request.getfixturevalue("pg_url")


class Clock:
    """A clock that ticks one millisecond per reading (deterministic, strictly increasing)."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[Store]:
    with Store.open(store_url, clock=clock) as opened:
        yield opened


# ---------------------------------------------------------------------------------------------
# Builders


def deal(deal_id: str, source: str = "sf", **changes: Any) -> Deal:
    values: dict[str, Any] = {
        "id": deal_id,
        "source": source,
        "name": f"Deal {deal_id}",
        "owner_id": "005A",
        "account_id": "001A",
        "created_at": T0 - dt.timedelta(days=30),
        "close_date": dt.date(2024, 6, 28),
        "stage": "negotiation",
        "is_won": False,
        "is_closed": False,
        "amount": Decimal("15000.00"),
        "currency": "EUR",
        "arr": Decimal("15000.00"),
        "deal_type": DealType.NEW_BUSINESS,
        "forecast_category": ForecastCategory.COMMIT,
        "probability": Decimal("0.6"),
        "term_months": 12,
        "last_modified": T0,
    }
    values.update(changes)
    return Deal(**values)


def stages(deal_id: str, *entries: tuple[str, int]) -> list[StageChange]:
    """Stage changes: (stage, days after T0 - 30)."""
    start = T0 - dt.timedelta(days=30)
    return [
        StageChange(deal_id=deal_id, stage=stage, entered_at=start + dt.timedelta(days=days))
        for stage, days in entries
    ]


def slip(deal_id: str, old: dt.date | None, new: dt.date | None, days: int) -> FieldChange:
    return FieldChange(
        deal_id=deal_id,
        field="close_date",
        old_value=old,
        new_value=new,
        changed_at=T0 - dt.timedelta(days=days),
    )


def page(source: str = "sf", stream: str = "deals", cursor: str | None = None, **parts: Any):
    return StoredPage(source=source, stream=stream, cursor=cursor, **parts)


def live_ids(store: Store, source: str = "sf") -> list[str]:
    return live_deal_ids(store, source)


# ---------------------------------------------------------------------------------------------
# Round trips


def test_every_record_type_round_trips(store: Store) -> None:
    alice = Rep(
        id="005A",
        name="Alice Martin",
        email="Alice@Example.com",
        team="EMEA",
        manager_id="005M",
        start_date=dt.date(2023, 1, 9),
    )
    manager = Rep(id="005M", name="Mia", email="mia@example.com", is_active=False, is_ae=False)
    account = Account(id="001A", name="Acme", churn_date=dt.date(2024, 5, 31))
    other_account = Account(id="001B", name="Globex")
    won = deal(
        "006W",
        stage="closed_won",
        is_won=True,
        is_closed=True,
        amount=Decimal("12345.67"),
        currency="USD",
        arr=Decimal("11400.1234"),
        probability=Decimal("1"),
        deal_type=DealType.EXPANSION,
        forecast_category=ForecastCategory.CLOSED,
    )
    bare = deal(
        "006B",
        name="",
        owner_id=None,
        account_id=None,
        close_date=None,
        amount=None,
        arr=None,
        probability=None,
        term_months=None,
        deal_type=DealType.OTHER,
        forecast_category=ForecastCategory.PIPELINE,
    )
    won_history = stages("006W", ("demo", 3), ("qualified", 1), ("closed_won", 20))
    won_fields = [
        slip("006W", dt.date(2024, 5, 31), dt.date(2024, 6, 28), 10),
        slip("006W", None, dt.date(2024, 5, 31), 25),
        FieldChange(
            deal_id="006W",
            field="amount",
            old_value=Decimal("10000"),
            new_value=Decimal("12345.67"),
            changed_at=T0 - dt.timedelta(days=5),
        ),
        FieldChange(
            deal_id="006W",
            field="next_step",
            old_value=None,
            new_value="Send contract",
            changed_at=T0 - dt.timedelta(days=4),
        ),
    ]
    demo = Activity(
        id="00TD", owner_id="005A", deal_id="006W", kind="demo", start=T0 - dt.timedelta(hours=3)
    )
    call = Activity(id="00TC", owner_id="005A", kind="call", start=T0)
    ownerless_demo = Activity(id="00TX", owner_id=None, kind="demo", start=T0)
    quota = Quota(
        rep_id="005A",
        period_start=dt.date(2024, 4, 1),
        period_end=dt.date(2024, 6, 30),
        amount=Decimal("120000.00"),
        source=QuotaSource.CRM,
    )
    stage_metadata = {
        "closed_won": {"probability": Decimal("1.0"), "since": dt.date(2020, 1, 1)},
        "labels": ["Demo", "Won"],
        "fetched_at": T0,
        "count": 2,
    }
    excluded = Exclusion("deal", "006X", "unknown_stage", "stage 'Limbo' is not mapped")

    store.save_page(
        page(
            cursor="2024-06-01T09:00:00Z",
            reps=[alice, manager],
            accounts=[account, other_account],
            deals=[won, bare],
            stage_changes={"006W": won_history, "006B": []},
            field_changes={"006W": won_fields},
            activities=[demo, call, ownerless_demo],
            quotas=[quota],
            metadata={"stages": stage_metadata, "empty": None},
            exclusions=[excluded],
        )
    )

    assert store.cursor("sf", "deals") == "2024-06-01T09:00:00Z"
    assert store.cursor("sf", "users") is None
    assert store.reps("sf") == [alice, manager]
    assert store.reps("sf")[0].email == "alice@example.com"
    assert store.accounts("sf") == [account, other_account]
    assert store.quotas("sf") == [quota]
    assert stored_deals(store, "sf") == [bare, won]
    assert stored_deals(store, "sf", ids=["006W", "nope"]) == [won]
    assert str(stored_deals(store, "sf", ids=["006W"])[0].amount) == "12345.67"  # exponent kept
    history, fields = stored_history(store, "sf", "006W")
    assert history == sorted(won_history, key=lambda change: change.entered_at)
    assert fields == sorted(won_fields, key=lambda change: change.changed_at)
    assert stored_history(store, "sf", "006B") == ([], [])
    assert stored_history(store, "sf", "missing") == ([], [])
    assert stored_metadata(store, "sf", "stages") == stage_metadata
    assert stored_metadata(store, "sf", "empty") is None
    assert stored_metadata(store, "sf", "absent") is None
    assert store.exclusions("sf") == [excluded]

    assert live_activities(store, "sf") == sorted(
        [("005A", T0 - dt.timedelta(hours=3)), (None, T0)], key=str
    )
    assert live_activities(store, "sf", kind="call") == [("005A", T0)]


def test_the_bulk_read_holds_every_live_deal_with_flattened_histories(store: Store) -> None:
    won = deal("006W", stage="closed_won", is_won=True, is_closed=True)
    bare = deal("006B", owner_id=None, close_date=None, amount=None, arr=None, probability=None)
    store.save_page(
        page(
            deals=[won, bare, deal("006D")],
            stage_changes={
                "006W": stages("006W", ("qualified", 0), ("demo", 2), ("closed_won", 9)),
                "006B": stages("006B", ("demo", 1)),
            },
            field_changes={
                "006W": [
                    slip("006W", None, dt.date(2024, 6, 1), 20),
                    slip("006W", dt.date(2024, 6, 1), dt.date(2024, 6, 28), 10),
                ]
            },
            deleted={"deal": ["006D"]},
        )
    )

    (chunk,) = store.iter_deal_arrays("sf")
    assert sorted(chunk.id) == ["006B", "006W"]
    w, b = chunk.id.index("006W"), chunk.id.index("006B")

    def utc(when: dt.datetime) -> np.datetime64:
        return np.datetime64(when.astimezone(dt.UTC).replace(tzinfo=None), "us")

    assert chunk.owner_id.decode()[w] == "005A"
    assert chunk.account[w] >= 0  # 001A's number
    assert chunk.stage.decode()[w] == "closed_won"
    assert chunk.deal_type.decode()[w] == "new_business"
    assert chunk.forecast_category.decode()[w] == "commit"
    assert chunk.created_at[w] == utc(won.created_at)
    assert chunk.close_date[w] == np.datetime64(won.close_date, "D")
    assert chunk.is_won.dtype == chunk.is_closed.dtype == np.bool_
    assert chunk.is_won[w] and chunk.is_closed[w]
    assert not chunk.is_won[b] and not chunk.is_closed[b]
    assert chunk.arr[w] == float(won.arr)  # type: ignore[arg-type]
    assert chunk.probability[w] == float(won.probability)  # type: ignore[arg-type]
    assert chunk.owner_id.decode()[b] is None
    assert chunk.account[b] == chunk.account[w]
    assert np.isnat(chunk.account_churn).all()  # 001A is not stored: no churn date
    assert np.isnat(chunk.close_date[b])
    assert np.isnan(chunk.arr[b])
    assert np.isnan(chunk.probability[b])
    # Columns the frames do not read, as stored.
    (stored_bare,) = stored_deals(store, "sf", ids=["006B"])
    assert stored_bare.amount is None
    assert stored_deals(store, "sf", ids=["006W"]) == [won]

    def span(offsets: np.ndarray, index: int) -> slice:
        return slice(offsets[index], offsets[index + 1])

    def stage_entries(index: int) -> list[tuple[Any, ...]]:
        s = span(chunk.stage_history_offsets, index)
        stage_keys = chunk.stage_history_stage.decode()[s]
        return list(zip(stage_keys, chunk.stage_history_entered_at[s].tolist(), strict=True))

    def close_entries(index: int) -> list[tuple[Any, ...]]:
        s = span(chunk.close_date_history_offsets, index)
        old, new = chunk.close_date_history_old[s], chunk.close_date_history_new[s]
        return list(zip(old.tolist(), new.tolist(), strict=True))

    start = (T0 - dt.timedelta(days=30)).replace(tzinfo=None)
    assert stage_entries(w) == [
        ("qualified", start),
        ("demo", start + dt.timedelta(days=2)),
        ("closed_won", start + dt.timedelta(days=9)),
    ]
    assert stage_entries(b) == [("demo", start + dt.timedelta(days=1))]
    assert close_entries(w) == [
        (None, dt.date(2024, 6, 1)),
        (dt.date(2024, 6, 1), dt.date(2024, 6, 28)),
    ]
    assert close_entries(b) == []
    # When each close date changed (stored; the frames count slips without it).
    assert [change.changed_at for change in stored_history(store, "sf", "006W")[1]] == [
        T0 - dt.timedelta(days=20),
        T0 - dt.timedelta(days=10),
    ]
    assert len(chunk.stage_history_offsets) == 3
    assert list(store.iter_deal_arrays("empty")) == []


# ---------------------------------------------------------------------------------------------
# Upserts, histories, deletions


def test_a_later_page_updates_records_in_place(store: Store) -> None:
    store.save_page(
        page(
            deals=[deal("006A"), deal("006B")],
            stage_changes={"006A": stages("006A", ("demo", 0))},
            field_changes={"006A": [slip("006A", None, dt.date(2024, 6, 28), 1)]},
        )
    )
    moved = deal(
        "006A",
        stage="closed_won",
        is_won=True,
        is_closed=True,
        amount=Decimal("16000"),
        arr=Decimal("16000"),
        last_modified=T0 + dt.timedelta(hours=1),
    )
    # Page without histories for 006A: the stored ones stay.
    store.save_page(page(deals=[moved, moved]))

    assert stored_deals(store, "sf") == [moved, deal("006B")]
    history, fields = stored_history(store, "sf", "006A")
    assert [change.stage for change in history] == ["demo"]
    assert len(fields) == 1
    assert live_ids(store) == ["006A", "006B"]
    assert stored_deals(store, "sf", ids=["006A"])[0].amount == Decimal("16000")

    # A page whose every value of some columns is empty (sent as arrays of NULLs).
    bare = deal(
        "006C",
        owner_id=None,
        account_id=None,
        close_date=None,
        amount=None,
        arr=None,
        probability=None,
        term_months=None,
    )
    store.save_page(page(deals=[bare], field_changes={"006C": []}))
    assert stored_deals(store, "sf", ids=["006C"]) == [bare]

    store.save_page(page(reps=[Rep(id="005A", name="A", email="a@x.io")]))
    store.save_page(page(reps=[Rep(id="005A", name="Alice", email="alice@x.io", team="Core")]))
    assert store.reps("sf") == [Rep(id="005A", name="Alice", email="alice@x.io", team="Core")]


def test_histories_are_replaced_whole(store: Store) -> None:
    store.save_page(
        page(
            deals=[deal("006A")],
            stage_changes={"006A": stages("006A", ("demo", 0), ("qualified", 2), ("lost", 5))},
            field_changes={
                "006A": [
                    slip("006A", None, dt.date(2024, 6, 1), 9),
                    slip("006A", dt.date(2024, 6, 1), dt.date(2024, 6, 28), 8),
                ]
            },
        )
    )
    # The same deal again with a shorter history: it replaces, never appends.
    store.save_page(
        page(
            deals=[deal("006A")],
            stage_changes={"006A": stages("006A", ("demo", 0), ("negotiation", 3))},
            field_changes={"006A": []},
        )
    )
    history, fields = stored_history(store, "sf", "006A")
    assert [(change.stage, change.entered_at) for change in history] == [
        ("demo", T0 - dt.timedelta(days=30)),
        ("negotiation", T0 - dt.timedelta(days=27)),
    ]
    assert fields == []

    # History arriving without its deal (e.g. a history-only page) replaces the stored one;
    # history of a deal the store does not have is ignored.
    store.save_page(
        page(
            stage_changes={
                "006A": stages("006A", ("closed_won", 7)),
                "006Z": stages("006Z", ("demo", 1)),
            },
            field_changes={"006A": [slip("006A", dt.date(2024, 6, 28), dt.date(2024, 7, 5), 2)]},
        )
    )
    history, fields = stored_history(store, "sf", "006A")
    assert [change.stage for change in history] == ["closed_won"]
    assert [(change.old_value, change.new_value) for change in fields] == [
        (dt.date(2024, 6, 28), dt.date(2024, 7, 5))
    ]
    assert stored_deals(store, "sf", ids=["006Z"], include_deleted=True) == []
    (chunk,) = store.iter_deal_arrays("sf")
    assert chunk.stage_history_stage.decode() == ["closed_won"]
    assert chunk.close_date_history_new.tolist() == [dt.date(2024, 7, 5)]


def test_deleting_marks_records_and_an_upsert_restores_them(store: Store) -> None:
    store.save_page(
        page(
            reps=[
                Rep(id="005A", name="A", email="a@x.io"),
                Rep(id="005B", name="B", email="b@x.io"),
            ],
            accounts=[Account(id="001A", name="Acme")],
            deals=[deal("006A"), deal("006B")],
            stage_changes={"006A": stages("006A", ("demo", 0))},
            activities=[Activity(id="00T1", owner_id="005A", kind="demo", start=T0)],
        )
    )
    store.save_page(
        page(
            cursor="c2",
            deleted={
                "deal": ["006A", "006-never-stored"],
                "rep": ["005B"],
                "account": ["001A"],
                "activity": ["00T1"],
            },
        )
    )
    assert live_ids(store) == ["006B"]
    assert [d.id for d in stored_deals(store, "sf")] == ["006B"]
    (tombstone,) = stored_deals(store, "sf", ids=["006A"], include_deleted=True)
    assert tombstone.is_deleted
    assert tombstone.amount == Decimal("15000.00")  # the row is kept whole
    assert [rep.id for rep in store.reps("sf")] == ["005A"]
    assert store.accounts("sf") == []
    assert live_activities(store, "sf") == []
    assert store.cursor("sf", "deals") == "c2"

    # Restored in the CRM: pulled again, live again, history still there.
    store.save_page(page(deals=[deal("006A")]))
    assert live_ids(store) == ["006A", "006B"]
    assert [change.stage for change in stored_history(store, "sf", "006A")[0]] == ["demo"]

    # A deal pulled with its deleted flag set (Salesforce queryAll) is stored deleted.
    store.save_page(page(deals=[deal("006B", is_deleted=True)]))
    assert live_ids(store) == ["006A"]


def test_exclusions_are_replaced_per_record_carried(store: Store) -> None:
    store.save_page(
        page(
            deals=[deal("006A"), deal("006B")],
            exclusions=[
                Exclusion("deal", "006A", "no_amount", "Amount is empty"),
                Exclusion("deal", "006A", "no_close_date"),
                Exclusion("deal", "006B", "unconvertible_currency", "XYZ"),
                Exclusion("deal", "006C", "unknown_stage", "Limbo"),
                Exclusion("rep", "005Q", "no_email"),
            ],
        )
    )
    assert len(store.exclusions("sf")) == 5

    # 006A fixed in the CRM; 006C still broken with a new reason; 006B not in this page.
    store.save_page(
        page(
            deals=[deal("006A")],
            exclusions=[Exclusion("deal", "006C", "no_owner", "OwnerId is null")],
        )
    )
    assert store.exclusions("sf") == [
        Exclusion("deal", "006B", "unconvertible_currency", "XYZ"),
        Exclusion("deal", "006C", "no_owner", "OwnerId is null"),
        Exclusion("rep", "005Q", "no_email"),
    ]

    # Deleted records lose their exclusions; quotas given replace all quota exclusions.
    store.save_page(
        page(
            deleted={"deal": ["006B"]},
            quotas=[],
            exclusions=[Exclusion("quota", "005A:2024-Q2", "unknown_rep")],
        )
    )
    store.save_page(page(quotas=[], exclusions=[Exclusion("quota", "005B:2024-Q2", "negative")]))
    assert store.exclusions("sf") == [
        Exclusion("deal", "006C", "no_owner", "OwnerId is null"),
        Exclusion("quota", "005B:2024-Q2", "negative"),
        Exclusion("rep", "005Q", "no_email"),
    ]


def test_quotas_given_replace_all_of_the_source(store: Store) -> None:
    def quota(rep: str, month: int, amount: str) -> Quota:
        return Quota(
            rep_id=rep,
            period_start=dt.date(2024, month, 1),
            period_end=dt.date(2024, month, 28),
            amount=Decimal(amount),
            source=QuotaSource.CONFIG,
        )

    store.save_page(page(stream="quotas", quotas=[quota("005A", 1, "10"), quota("005B", 1, "20")]))
    store.save_page(page(stream="quotas", deals=[deal("006A")]))  # no quotas given: kept
    assert len(store.quotas("sf")) == 2
    store.save_page(page(stream="quotas", quotas=[quota("005A", 2, "40000.50")]))
    assert store.quotas("sf") == [quota("005A", 2, "40000.50")]
    with pytest.raises(ValueError, match="two quotas for rep 005A"):
        store.save_page(page(quotas=[quota("005A", 2, "1"), quota("005A", 2, "2")]))
    store.save_page(page(stream="quotas", quotas=[]))
    assert store.quotas("sf") == []


# ---------------------------------------------------------------------------------------------
# Transactions


def test_a_failed_page_changes_nothing_and_keeps_the_cursor(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save_page(
        page(
            cursor="c1",
            deals=[deal("006A")],
            stage_changes={"006A": stages("006A", ("demo", 0))},
            metadata={"rates": {"USD": Decimal("0.9")}},
        )
    )
    calls = []

    def fail_midway(*args: Any) -> None:
        # Runs after the page's records were written, before its cursor.
        calls.append(args)
        raise RuntimeError("connection lost")

    monkeypatch.setattr(PulledRecords, "_replace_exclusions", fail_midway)
    with pytest.raises(RuntimeError, match="connection lost"):
        store.save_page(
            page(
                cursor="c2",
                deals=[deal("006A", stage="closed_won", is_won=True, is_closed=True), deal("006N")],
                stage_changes={"006A": stages("006A", ("closed_won", 5))},
                deleted={"rep": ["005A"]},
                quotas=[],
                metadata={"rates": {"USD": Decimal("0.5")}},
            )
        )
    monkeypatch.undo()

    assert calls, "the failure was injected after the writes began"
    assert store.cursor("sf", "deals") == "c1"
    assert stored_deals(store, "sf") == [deal("006A")]
    assert [change.stage for change in stored_history(store, "sf", "006A")[0]] == ["demo"]
    assert stored_metadata(store, "sf", "rates") == {"USD": Decimal("0.9")}

    # Bad input fails before anything is written too.
    with pytest.raises(TypeError, match="not JSON-able"):
        store.save_page(page(cursor="c3", deals=[deal("006N")], metadata={"bad": object()}))
    with pytest.raises(ValueError, match="is from source 'hs'"):
        store.save_page(page(cursor="c3", deals=[deal("006N", source="hs")]))
    with pytest.raises(ValueError, match="unknown record kind 'opportunity'"):
        store.save_page(page(cursor="c3", deleted={"opportunity": ["006A"]}))
    with pytest.raises(ValueError, match="of deal '006B' given for deal '006A'"):
        store.save_page(page(cursor="c3", stage_changes={"006A": stages("006B", ("demo", 0))}))
    assert store.cursor("sf", "deals") == "c1"
    assert [d.id for d in stored_deals(store, "sf")] == ["006A"]


def test_a_page_without_cursor_leaves_the_stored_cursor(store: Store) -> None:
    store.save_page(page(stream="stages", cursor="s1", metadata={"stages": []}))
    store.save_page(page(stream="stages", metadata={"stages": ["demo"]}))
    assert store.cursor("sf", "stages") == "s1"
    assert stored_metadata(store, "sf", "stages") == ["demo"]


# ---------------------------------------------------------------------------------------------
# Full pulls, sources


def test_full_pull_sweep_removes_only_unseen_records_of_that_source_and_stream(
    store: Store,
) -> None:
    store.save_page(
        page(
            cursor="old",
            deals=[deal("006A"), deal("006B"), deal("006C"), deal("006D")],
            exclusions=[Exclusion("deal", "006C", "no_amount")],
        )
    )
    store.save_page(page(stream="users", reps=[Rep(id="005A", name="A", email="a@x.io")]))
    store.save_page(page(source="hs", deals=[deal("006C", source="hs")]))

    started = store.begin_full_pull("sf", "deals")
    assert store.cursor("sf", "deals") is None  # a crash now restarts the full pull
    assert store.full_pull_started("sf", "deals") == started
    store.save_page(page(cursor="p1", deals=[deal("006A")]))
    store.save_page(page(cursor="p2", seen_ids={"deal": ["006B"]}, deleted={"deal": ["006D"]}))

    assert store.finish_full_pull("sf", "deals", started) == 1
    remaining = stored_deals(store, "sf", include_deleted=True)
    assert [(d.id, d.is_deleted) for d in remaining] == [
        ("006A", False),
        ("006B", False),
        ("006D", True),
    ]
    assert store.exclusions("sf") == []
    assert [rep.id for rep in store.reps("sf")] == ["005A"]  # another stream
    assert live_ids(store, "hs") == ["006C"]  # another source
    assert store.cursor("sf", "deals") == "p2"
    assert store.full_pull_started("sf", "deals") is None
    # Nothing left to sweep.
    assert store.finish_full_pull("sf", "deals", started) == 0


def test_a_full_pull_stamp_never_precedes_its_start(store_url: str) -> None:
    # A clock that steps back after begin_full_pull (NTP) must not make fresh rows "unseen".
    readings = iter([T0 + dt.timedelta(hours=1), T0, T0, T0, T0, T0])
    with Store.open(store_url, clock=lambda: next(readings)) as store:
        started = store.begin_full_pull("sf", "deals")
        store.save_page(page(deals=[deal("006A")]))
        assert store.finish_full_pull("sf", "deals", started) == 0
        assert live_ids(store) == ["006A"]


def test_two_sources_never_mix(store: Store) -> None:
    for source, amount in (("sf", "1"), ("hs", "2")):
        store.save_page(
            page(
                source=source,
                cursor=f"{source}-cursor",
                reps=[Rep(id="U1", name=source, email=f"{source}@x.io")],
                accounts=[Account(id="A1", name=source)],
                deals=[deal("D1", source=source, amount=Decimal(amount), arr=Decimal(amount))],
                stage_changes={"D1": stages("D1", (f"stage_{source}", 0))},
                activities=[Activity(id="T1", owner_id="U1", kind="demo", start=T0)],
                quotas=[
                    Quota(
                        rep_id="U1",
                        period_start=dt.date(2024, 1, 1),
                        period_end=dt.date(2024, 3, 31),
                        amount=Decimal(amount),
                        source=QuotaSource.CRM,
                    )
                ],
                metadata={"rates": source},
                exclusions=[Exclusion("deal", "D9", source)],
            )
        )
    store.save_page(page(source="hs", deleted={"deal": ["D1"], "activity": ["T1"]}, quotas=[]))

    assert store.cursor("sf", "deals") == "sf-cursor"
    assert store.cursor("hs", "deals") == "hs-cursor"
    assert [rep.name for rep in store.reps("sf")] == ["sf"]
    assert [account.name for account in store.accounts("hs")] == ["hs"]
    assert [d.amount for d in stored_deals(store, "sf")] == [Decimal("1")]
    assert [c.stage_history_stage.decode() for c in store.iter_deal_arrays("sf")] == [["stage_sf"]]
    assert live_ids(store, "hs") == []
    assert [owner for owner, _ in live_activities(store, "sf")] == ["U1"]
    assert live_activities(store, "hs") == []
    assert [quota.amount for quota in store.quotas("sf")] == [Decimal("1")]
    assert store.quotas("hs") == []
    assert stored_metadata(store, "sf", "rates") == "sf"
    assert store.exclusions("hs") == [Exclusion("deal", "D9", "hs")]


# ---------------------------------------------------------------------------------------------
# KPIs, snapshots, write-back memory, runs


def kpi(subject: str, name: str, value: Any, period: str = "2024-Q2", **key: str) -> KpiRow:
    return KpiRow(
        source=key.get("source", "sf"),
        scope=key.get("scope", "rep"),
        subject=subject,
        period_kind="quarter" if period else "",
        period_key=period,
        kpi=name,
        value=value,
    )


def test_kpis_keep_the_latest_value_and_a_history_row_per_change(
    store: Store, clock: Clock
) -> None:
    first = store.start_run(T0, {})
    store.save_kpis(
        first,
        [
            kpi("005A", "bookings_arr", Decimal("150000.00")),
            kpi("005A", "win_rate", Decimal("0.250")),
            kpi("005A", "quota_attainment", None),
            kpi("005B", "deals_won", 3),
            kpi("006A", "deal_age_days", 30, period="", scope="deal"),
            kpi("org", "win_rate", 0.1, scope="org", source="hs"),
        ],
    )
    second = store.start_run(T0 + dt.timedelta(days=1), {})
    store.save_kpis(
        second,
        iter(
            [
                kpi("005A", "bookings_arr", Decimal("150000")),  # same value, other scale
                kpi("005A", "win_rate", Decimal("0.3")),  # changed
                kpi("005A", "quota_attainment", Decimal("1.25")),  # empty -> value
                kpi("005B", "deals_won", None),  # value -> empty
                kpi("005B", "deals_won", 4),  # given twice: the last one counts
                kpi("006A", "deal_age_days", 30, period="", scope="deal"),
                kpi("005C", "deals_won", 0),  # new
            ]
        ),
    )

    latest = {row.key: row for row in store.kpis()}
    assert {key: row.value for key, row in latest.items()} == {
        ("hs", "org", "org", "quarter", "2024-Q2", "win_rate"): Decimal("0.1"),
        ("sf", "deal", "006A", "", "", "deal_age_days"): Decimal("30"),
        ("sf", "rep", "005A", "quarter", "2024-Q2", "bookings_arr"): Decimal("150000"),
        ("sf", "rep", "005A", "quarter", "2024-Q2", "quota_attainment"): Decimal("1.25"),
        ("sf", "rep", "005A", "quarter", "2024-Q2", "win_rate"): Decimal("0.3"),
        ("sf", "rep", "005B", "quarter", "2024-Q2", "deals_won"): Decimal("4"),
        ("sf", "rep", "005C", "quarter", "2024-Q2", "deals_won"): Decimal("0"),
    }
    assert latest["sf", "rep", "005A", "quarter", "2024-Q2", "bookings_arr"].run_id == first
    assert latest["sf", "rep", "005A", "quarter", "2024-Q2", "win_rate"].run_id == second
    assert [row.kpi for row in store.kpis("sf", rep="005A")] == [
        "bookings_arr",
        "quota_attainment",
        "win_rate",
    ]
    assert [row.subject for row in store.kpis(period="")] == ["006A"]
    assert len(store.kpis("sf", period="quarter")) == 5
    assert len(store.kpis("sf", period="2024-Q2")) == 5
    assert store.kpis("nope") == []

    history = stored_kpi_history(store, "sf", "rep", "005A")
    assert [(row.run_id, row.kpi, row.value) for row, _ in history] == [
        (first, "bookings_arr", Decimal("150000")),
        (first, "quota_attainment", None),
        (first, "win_rate", Decimal("0.25")),
        (second, "quota_attainment", Decimal("1.25")),
        (second, "win_rate", Decimal("0.3")),
    ]
    assert history[0][1] < history[-1][1]
    assert [
        row.value for row, _ in stored_kpi_history(store, "sf", "rep", "005B", "deals_won")
    ] == [
        Decimal("3"),
        Decimal("4"),
    ]
    assert len(stored_kpi_history(store, "sf", "deal", "006A")) == 1

    # A third run with nothing changed adds no history.
    third = store.start_run(T0 + dt.timedelta(days=2), {})
    store.save_kpis(third, [kpi("005A", "win_rate", Decimal("0.30"))])
    assert len(stored_kpi_history(store, "sf", "rep", "005A")) == 5

    with pytest.raises(StoreError, match="no run 999"):
        store.save_kpis(999, [kpi("005A", "win_rate", 1)])


def test_forecast_snapshots(store: Store) -> None:
    store.save_snapshots(
        "sf",
        [
            Snapshot("005A", "2024-Q2", Decimal("90000.00"), dt.date(2024, 5, 15)),
            Snapshot("EMEA", "2024-Q2", Decimal("300000"), dt.date(2024, 5, 15)),
        ],
    )
    store.save_snapshots(
        "sf", [Snapshot("005A", "2024-Q2", Decimal("95000"), dt.date(2024, 5, 16))]
    )
    store.save_snapshots("sf", [])
    assert store.snapshots("sf") == [
        Snapshot("005A", "2024-Q2", Decimal("95000"), dt.date(2024, 5, 16)),
        Snapshot("EMEA", "2024-Q2", Decimal("300000"), dt.date(2024, 5, 15)),
    ]
    assert store.snapshots("hs") == []


def test_written_values_come_back_as_written(store: Store) -> None:
    values = [
        ("006A", "KPI_Days_In_Stage__c", 12),
        ("006A", "KPI_Attainment__c", Decimal("1.2500")),
        ("006A", "KPI_Rate__c", 0.1),
        ("006A", "KPI_Empty__c", None),
        ("006A", "KPI_Label__c", "On track"),
        ("006A", "KPI_Flag__c", True),
        ("006A", "KPI_Date__c", dt.date(2024, 6, 30)),
        ("006A", "KPI_At__c", T0),
        ("005A-2024-Q2", "Period__c", {"kind": "quarter", "key": "2024-Q2"}),
    ]
    store.record_written("sf", "Opportunity", values)
    store.record_written("sf", "Opportunity", [("006A", "KPI_Days_In_Stage__c", 13)])
    store.record_written("sf", "User", [("005A", "KPI_Win_Rate__c", Decimal("0.25"))])

    written = store.written("sf", "Opportunity")
    expected = {(key, name): value for key, name, value in values}
    expected["006A", "KPI_Days_In_Stage__c"] = 13
    assert written == expected
    assert {key: type(value) for key, value in written.items()} == {
        key: type(value) for key, value in expected.items()
    }
    assert str(written["006A", "KPI_Attainment__c"]) == "1.2500"
    assert store.written("sf", "User") == {("005A", "KPI_Win_Rate__c"): Decimal("0.25")}
    assert store.written("hs", "Opportunity") == {}


def test_written_values_of_some_records_only(store: Store) -> None:
    rows = [(f"006{i:05d}", f"F{j}__c", i * 10 + j) for i in range(3000) for j in range(2)]
    store.record_written("sf", "Opportunity", rows)
    keys = [f"006{i:05d}" for i in range(0, 3000, 7)] + ["006missing"]
    some = store.written("sf", "Opportunity", keys=keys)
    assert some == {(k, n): v for k, n, v in rows if k in set(keys)}
    assert len(some) == 2 * len(range(0, 3000, 7))
    assert store.written("sf", "Opportunity", keys=[]) == {}


def test_run_records(store: Store, clock: Clock) -> None:
    first = store.start_run(T0, {"full": True, "sources": ["sf"]})
    second = store.start_run(T0 + dt.timedelta(hours=1), {"dry_run": True})
    store.finish_run(
        first,
        "succeeded",
        {"pulled": {"deals": 2000}, "excluded": [["006X", "no_amount"]], "arr": Decimal("1.5")},
    )

    newest, oldest = stored_runs(store)
    assert second > first
    assert newest["id"] == second
    assert newest["status"] == "running"
    assert newest["finished_at"] is None
    assert newest["report"] is None
    assert newest["as_of"] == T0 + dt.timedelta(hours=1)
    assert oldest["options"] == {"full": True, "sources": ["sf"]}
    assert oldest["report"] == {
        "pulled": {"deals": 2000},
        "excluded": [["006X", "no_amount"]],
        "arr": Decimal("1.5"),
    }
    assert oldest["status"] == "succeeded"
    assert oldest["started_at"] < oldest["finished_at"] <= clock.now
    assert [run["id"] for run in stored_runs(store, limit=1)] == [second]
    with pytest.raises(StoreError, match="no run 12345"):
        store.finish_run(12345, "failed", {})


# ---------------------------------------------------------------------------------------------
# Migrations


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(normalise_url(url))


def test_an_upgrade_keeps_the_data_of_the_first_revision(store_url: str) -> None:
    engine = _engine(store_url)
    with engine.begin() as connection:
        assert migrate(connection, "0001") == "0001"
        # Rows as the first revision's code wrote them (these tables did not change since).
        connection.execute(
            sa.insert(deals_table),
            [
                {
                    **deal("006A").model_dump(exclude={"deal_type", "forecast_category"}),
                    "deal_type": "new_business",
                    "forecast_category": "commit",
                    "stage_history": "demo\t2024-05-02T09:00:00.000000+00:00",
                    "close_date_history": None,
                    "field_history": None,
                    "stream": "deals",
                    "seen_at": T0,
                }
            ],
        )
        connection.execute(
            sa.insert(sync_cursors),
            [{"source": "sf", "stream": "deals", "cursor": "kept", "updated_at": T0}],
        )
        tables = set(sa.inspect(connection).get_table_names())
    engine.dispose()
    assert "deals" in tables
    assert "kpi_values" not in tables

    with Store.open(store_url) as store:
        assert store.revision == "0006"
        assert stored_deals(store, "sf") == [deal("006A")]
        assert store.cursor("sf", "deals") == "kept"
        assert [c.stage_history_stage.decode() for c in store.iter_deal_arrays("sf")] == [["demo"]]
        run = store.start_run(T0, {})  # the later revisions' tables work
        store.save_kpis(run, [kpi("005A", "win_rate", 1)])
    with Store.open(store_url) as store:  # opening again: nothing to do, data still there
        assert store.revision == "0006"
        assert [row.value for row in store.kpis()] == [Decimal("1")]


def test_a_database_from_a_newer_version_is_refused(store_url: str) -> None:
    Store.open(store_url).close()
    engine = _engine(store_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0099_future'"))
    engine.dispose()
    with pytest.raises(StoreSchemaTooNewError) as raised:
        Store.open(store_url)
    message = str(raised.value)
    assert "revision 0099_future" in message
    assert "newer version" in message
    assert "upgrade crm-kpi-worker" in message


def test_migrations_build_exactly_the_tables_the_code_uses(store_url: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from crm_kpi_worker.sync.store import alembic_config

    Store.open(store_url).close()
    engine = _engine(store_url)
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), store_metadata
        )
    assert differences == []
    # Down and up again: every revision's downgrade works.
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection=connection), "base")
        assert set(sa.inspect(connection).get_table_names()) <= {"alembic_version"}
        assert migrate(connection) == "0006"
    engine.dispose()


# ---------------------------------------------------------------------------------------------
# Opening, URLs, secrets


def test_sqlite_store_settings(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "state.sqlite"
    with Store.open(f"sqlite:///{path}") as store:
        assert path.exists()  # missing folders are created
        assert store.backend == "sqlite"
        with store._engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 30000


def test_url_normalisation() -> None:
    url = normalise_url("postgresql://u@db.example.com/crm")
    assert url.drivername == "postgresql+psycopg"
    assert normalise_url(SecretStr("postgresql+psycopg://u@h/d")).drivername == "postgresql+psycopg"
    assert normalise_url("sqlite:///crm-kpi.sqlite").database == "crm-kpi.sqlite"
    with pytest.raises(StoreError, match="unsupported store backend 'mysql'"):
        normalise_url("mysql://u@h/d")


SECRET = "s3cr3t-Pa55"


def _assert_no_secret(text: str) -> None:
    assert SECRET not in text


def test_the_password_never_reaches_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    messages = []
    for bad in (
        f"postgresql://crm:{SECRET}@127.0.0.1:9/crm",  # nothing listens on port 9
        f"mysql://crm:{SECRET}@db/crm",
        f"postgresql://crm:{SECRET}@db:notaport/crm",
        f"not a url {SECRET}",
    ):
        with pytest.raises(StoreError) as raised:
            Store.open(bad)
        chain: list[BaseException] = []
        error: BaseException | None = raised.value
        while error is not None:
            chain.append(error)
            error = error.__cause__ or error.__context__
        for error in chain:
            _assert_no_secret(str(error))
            _assert_no_secret(repr(error))
        messages.append(str(raised.value))
    assert "postgresql+psycopg://crm:***@127.0.0.1:9/crm" in messages[0]
    assert "mysql://crm:***@db/crm" in messages[1]
    for record in caplog.records:
        _assert_no_secret(record.getMessage())


def test_the_password_is_hidden_once_open(
    pg_admin: sa.Engine, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The test server trusts local connections, so any password opens it.
    url = sa.make_url(pg_url).set(password=SECRET).render_as_string(hide_password=False)
    with Store.open(SecretStr(url)) as store:
        assert "***" in store.url
        _assert_no_secret(store.url)
        _assert_no_secret(repr(store))
    assert any("state store" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        _assert_no_secret(record.getMessage())


def test_unreachable_postgresql_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match=r"cannot open the state store postgresql\+psycopg://crm@"):
        Store.open("postgresql://crm@127.0.0.1:9/crm?connect_timeout=2")
