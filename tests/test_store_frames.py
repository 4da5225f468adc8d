"""The store's compact copy of the KPI frames' columns (frame_deals, frame_activities,
frame_accounts, frame_texts): kept equal to the pulled rows through every kind of page, built
for a store of the previous revision when it opens, and its binary rows and KPI value texts,
on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from test_store import T0, deal, page, slip, stages
from test_store_arrays import (
    SOURCE,
    assert_arrays_hold_the_stored_rows,
    concatenated,
    config_for,
    fill,
)

from crm_kpi_worker.sync.frames import build_input
from crm_kpi_worker.sync.model import Account, Activity, Rep
from crm_kpi_worker.sync.store import Store, StoreError, alembic_config, migrate
from crm_kpi_worker.sync.store.frame_codec import (
    ACTIVITY_ROW,
    CLOSE_ENTRY,
    DEAL_HEAD,
    NO_DATE,
    STAGE_ENTRY,
    CorruptRowError,
    day_numbers,
    days,
    decode_activities,
    decode_deals,
    encode_activities,
    encode_deals,
)
from crm_kpi_worker.sync.store.frame_copy import FrameCopy
from crm_kpi_worker.sync.store.kpi_values import _kpi_value, kpi_text
from crm_kpi_worker.sync.store.schema import frame_rebuilds

AS_OF = dt.date(2026, 11, 26)
FRAME_TABLES = {"frame_deals", "frame_activities", "frame_accounts", "frame_texts"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm-kpi.sqlite'}"
    return request.getfixturevalue("pg_url")  # test_store's fixture: a fresh schema


def read_copy(store: Store, source: str) -> str:
    """Everything the frames read of a source, as comparable text."""
    deals = concatenated(list(store.iter_deal_arrays(source)))
    demos = sorted(
        (
            (owner, start)
            for coded, starts in store.iter_activity_arrays(source)
            for owner, start in zip(coded.decode(), starts.tolist(), strict=True)
        ),
        key=str,
    )
    return repr((sorted(deals.items()), demos))


def rebuilt(store: Store, source: str) -> str:
    """What the frames read once the source's copy is built again from the pulled rows."""
    with store._db.write() as connection:  # what a migration that lists the source does
        connection.execute(sa.insert(frame_rebuilds).values(source=source))
        FrameCopy(store._db).rebuild_pending(connection)
    return read_copy(store, source)


def check(store: Store, source: str = "sf") -> None:
    assert_arrays_hold_the_stored_rows(store, source)
    kept_along = read_copy(store, source)
    assert rebuilt(store, source) == kept_along


def demo(activity_id: str, owner: str | None, hours: int) -> Activity:
    return Activity(
        id=activity_id, owner_id=owner, kind="demo", start=T0 + dt.timedelta(hours=hours)
    )


def test_the_copy_follows_every_kind_of_page(url: str) -> None:
    with Store.open(url) as store:
        store.save_page(
            page(
                reps=[Rep(id="005A", name="Alice", email="alice@example.com")],
                accounts=[
                    Account(id="001A", name="Acme", churn_date=dt.date(2024, 5, 31)),
                    Account(id="001B", name="Globex"),
                ],
                deals=[
                    deal("006A", stage="closed_won", is_won=True, is_closed=True),
                    deal("006B", account_id="001B"),
                    deal("006C", owner_id=None, account_id=None, arr=None),
                ],
                # 006B's histories are not given: NULL, "none known yet".
                stage_changes={"006A": stages("006A", ("demo", 1), ("closed_won", 9))},
                field_changes={"006A": [slip("006A", None, dt.date(2024, 6, 28), 3)]},
                activities=[
                    demo("00T1", "005A", 1),
                    demo("00T2", None, 2),
                    Activity(id="00T3", owner_id="005A", kind="call", start=T0),
                ],
            )
        )
        check(store)
        # Histories of deals the page does not carry.
        store.save_page(
            page(
                stage_changes={"006B": stages("006B", ("qualification", 2), ("demo", 4))},
                field_changes={"006A": [slip("006A", dt.date(2024, 6, 1), None, 1)]},
            )
        )
        check(store)
        # A deal again without its histories keeps them; a deal pulled as deleted.
        store.save_page(
            page(
                deals=[
                    deal("006B", account_id="001A", stage="demo"),
                    deal("006D", is_deleted=True),
                ],
                stage_changes={"006D": stages("006D", ("demo", 1))},
            )
        )
        check(store)
        assert "006D" not in concatenated(list(store.iter_deal_arrays("sf")))
        # Deletions of each kind, then the deal and the account back (a restore).
        store.save_page(page(deleted={"deal": ["006B"], "activity": ["00T1"], "account": ["001A"]}))
        check(store)
        store.save_page(
            page(
                deals=[deal("006B", account_id="001A")],
                accounts=[Account(id="001A", name="Acme", churn_date=dt.date(2024, 7, 1))],
            )
        )
        check(store)
        got = concatenated(list(store.iter_deal_arrays("sf")))
        assert got["006B"]["stages"]  # restored with its stored history
        assert got["006B"]["account_churn"] == np.datetime64("2024-07-01")
        # A full pull that sees only 006A, 00T3 and 001A: the rest is swept (005A, 006B-D,
        # 00T1-2, 001B), with its copy.
        started = store.begin_full_pull("sf", "deals")
        store.save_page(page(deals=[deal("006A", stage="closed_won", is_won=True, is_closed=True)]))
        store.save_page(page(seen_ids={"activity": ["00T3"], "account": ["001A"]}))
        assert store.finish_full_pull("sf", "deals", started) == 7
        check(store)
        assert sorted(concatenated(list(store.iter_deal_arrays("sf")))) == ["006A"]


def test_a_store_of_the_previous_revision_gets_its_copy_when_opened(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_for(url, None)
    source = config.sources[0]
    with Store.open(url) as store:
        fill(store)
        before = build_input(store, config, source, AS_OF)
        with store._engine.begin() as connection:
            # Back to what the previous version left: the same pulled rows, no copy.
            from alembic import command

            command.downgrade(alembic_config(connection=connection), "0005")
            assert not FRAME_TABLES & set(sa.inspect(connection).get_table_names())
    caplog.set_level(logging.INFO)
    with Store.open(url) as store:
        assert store.revision == "0006"
        after = build_input(store, config, source, AS_OF)
        assert_arrays_hold_the_stored_rows(store, SOURCE)
        assert_arrays_hold_the_stored_rows(store, "other")
    built = [r for r in caplog.records if getattr(r, "event", None) == "frame_copy_rebuild"]
    assert sorted(r.source for r in built) == ["other", SOURCE]  # type: ignore[attr-defined]
    for name in before.deals.__dataclass_fields__:
        old, new = getattr(before.deals, name), getattr(after.deals, name)
        assert old.dtype == new.dtype, name
        assert np.array_equal(old, new, equal_nan=old.dtype.kind in "fmM"), name
    assert np.array_equal(before.accounts.churn, after.accounts.churn, equal_nan=True)
    assert np.array_equal(before.activities.owner, after.activities.owner)
    assert np.array_equal(before.activities.day, after.activities.day)


def test_a_read_only_open_refuses_a_copy_not_built_yet(url: str) -> None:
    with Store.open(url) as store:
        fill(store)
        with store._engine.begin() as connection:
            from alembic import command

            command.downgrade(alembic_config(connection=connection), "0005")
            migrate(connection)  # the schema only (alembic by hand): the copy is pending
    if url.startswith("sqlite"):
        with pytest.raises(StoreError, match="KPI frames copy has not been built"):
            Store.open(url, read_only=True)
    with Store.open(url) as store:  # a writable open builds it
        assert_arrays_hold_the_stored_rows(store, SOURCE)
    if url.startswith("sqlite"):
        with Store.open(url, read_only=True) as store:
            assert_arrays_hold_the_stored_rows(store, SOURCE)


# ---------------------------------------------------------------------------------------------
# The binary rows


def _heads(counts: list[tuple[int, int]]) -> np.ndarray:
    head = np.zeros(len(counts), dtype=DEAL_HEAD)
    head["created_at"] = np.arange(len(counts)) * 86_400_000_000 - 5
    head["arr"] = [np.nan if i % 3 == 0 else i / 7 for i in range(len(counts))]
    head["probability"] = -0.0
    head["close_date"] = [NO_DATE if i % 2 else i for i in range(len(counts))]
    head["owner"] = [i % 4 - 1 for i in range(len(counts))]
    head["stages"] = [s for s, _ in counts]
    head["close_dates"] = [c for _, c in counts]
    return head


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=40))
def test_deal_rows_decode_to_what_was_encoded(counts: list[tuple[int, int]]) -> None:
    head = _heads(counts)
    stages = np.zeros(sum(s for s, _ in counts), dtype=STAGE_ENTRY)
    stages["entered_at"] = np.arange(len(stages)) * 1_000_003 - 7
    stages["stage"] = np.arange(len(stages)) % 5
    closes = np.zeros(sum(c for _, c in counts), dtype=CLOSE_ENTRY)
    closes["old"] = NO_DATE
    closes["new"] = np.arange(len(closes)) - 3
    rows = encode_deals(head, stages, closes)
    assert [len(row) for row in rows] == [
        DEAL_HEAD.itemsize + STAGE_ENTRY.itemsize * s + CLOSE_ENTRY.itemsize * c for s, c in counts
    ]
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    got = decode_deals(b"".join(rows), lengths)
    for decoded, original in zip(got, (head, stages, closes), strict=True):
        assert decoded.tobytes() == original.tobytes()  # NaN, -0.0 and all, bit for bit


def test_rows_of_another_shape_are_refused() -> None:
    rows = encode_deals(_heads([(2, 1)]), np.zeros(2, STAGE_ENTRY), np.zeros(1, CLOSE_ENTRY))
    blob = rows[0]
    for bad_blob, lengths in (
        (blob, [len(blob) - 4]),  # lengths that do not add up
        (blob[:-8], [len(blob) - 8]),  # an entry missing
        (blob + bytes(12), [len(blob) + 12]),  # an entry too many
        (blob[:40], [40]),  # not even a head
    ):
        with pytest.raises(CorruptRowError):
            decode_deals(bad_blob, np.array(lengths))
    with pytest.raises(ValueError, match="entry counts"):
        encode_deals(_heads([(2, 0)]), np.zeros(1, STAGE_ENTRY), np.zeros(0, CLOSE_ENTRY))
    with pytest.raises(CorruptRowError):
        decode_activities(bytes(ACTIVITY_ROW.itemsize + 1))


def test_activity_rows_and_day_numbers_round_trip() -> None:
    rows = np.zeros(3, dtype=ACTIVITY_ROW)
    rows["start"] = [-1, 0, 2**62]
    rows["owner"] = [-1, 0, 7]
    encoded = encode_activities(rows)
    assert [len(row) for row in encoded] == [ACTIVITY_ROW.itemsize] * 3
    assert decode_activities(b"".join(encoded)).tobytes() == rows.tobytes()
    dates = np.array(["0001-01-01", "NaT", "1969-12-31", "9999-12-31"], dtype="datetime64[D]")
    numbers = day_numbers(dates)
    assert numbers.dtype == np.dtype("<i4") and numbers[1] == NO_DATE
    assert np.array_equal(days(numbers), dates, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# KPI values: the text SQLite keeps, made without Decimal for floats and ints


@given(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=-1e6, max_value=1e6).map(lambda x: round(x, 2)),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.decimals(allow_nan=False, allow_infinity=False, places=4),
        st.none(),
    )
)
def test_kpi_text_is_the_canonical_decimal(value: Any) -> None:
    canonical = _kpi_value(value)
    assert kpi_text(value) == (None if canonical is None else str(canonical))


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (-0.0, "0"), (150000.0, "150000"), (0.25, "0.25"), (1e-7, "1E-7"), (3, "3")],
)
def test_kpi_text_examples(value: Any, text: str) -> None:
    assert kpi_text(value) == text
    assert kpi_text(Decimal(text)) == text
