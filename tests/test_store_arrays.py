"""The bulk array read of deals (Store.iter_deal_arrays) and the KPI frames built from it,
against straightforward references, on SQLite and PostgreSQL, with the awkward cases: NULLs,
time zones and DST boundaries, deleted deals, unmapped stages, separators inside values,
non-ASCII ids, many chunks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import sqlalchemy as sa
from stored_rows import stored_activities, stored_deals, stored_history
from test_store import T0, deal, page, slip

from crm_kpi_worker.config import path_of
from crm_kpi_worker.kpis import frames as kf
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.frames import UNASSIGNED_ID, build_input
from crm_kpi_worker.sync.model import (
    Account,
    Activity,
    DealType,
    ForecastCategory,
    Rep,
    StageChange,
)
from crm_kpi_worker.sync.store import Store
from crm_kpi_worker.sync.store.arrays import RS, DealArrays, IrregularChunkError, _floats
from crm_kpi_worker.sync.store.schema import deals as deals_table
from crm_kpi_worker.sync.store.schema import frame_rebuilds

SOURCE = "sandbox"  # the demo config's source
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC


def at(text: str, tz: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz)


def history(deal_id: str, *entries: tuple[str, dt.datetime]) -> list[StageChange]:
    return [StageChange(deal_id=deal_id, stage=s, entered_at=when) for s, when in entries]


def fill(store: Store) -> list[str]:
    """Deals covering the edge cases; returns the ids that must NOT be read (deleted)."""
    reps = [
        Rep(id="005A", name="Alice", email="alice@sandbox.local"),
        Rep(id="005B", name="Bruno", email="bruno@sandbox.local"),
        Rep(id="005N", name="Not an AE", email="n@sandbox.local", is_ae=False),
    ]
    accounts = [
        Account(id="001A", name="Acme", churn_date=dt.date(2026, 5, 1)),
        Account(id="001É", name="Élan"),
    ]
    d = [
        # DST: Paris moves to summer time at 2026-03-29 01:00 UTC, back at 2026-10-25 01:00 UTC.
        deal("006A", SOURCE, created_at=at("2026-03-28T23:30:00"), owner_id="005A"),
        deal("006B", SOURCE, created_at=at("2026-03-29T22:30:00.000001"), owner_id="005B"),
        deal("006C", SOURCE, created_at=at("2026-10-24T22:30:00"), account_id="001É"),
        deal("006D", SOURCE, created_at=at("2026-10-25T00:59:59.999999")),
        # Given in another zone: stored in UTC, dated in Paris.
        deal("006E", SOURCE, created_at=at("2026-01-31T18:30:00", NEW_YORK), owner_id="005N"),
        # NULLs everywhere they are allowed.
        deal(
            "006F",
            SOURCE,
            owner_id=None,
            account_id=None,
            close_date=None,
            amount=None,
            arr=None,
            probability=None,
            term_months=None,
        ),
        # Won, lost, unmapped stages, renewal, other forecast categories.
        deal(
            "006G",
            SOURCE,
            stage="closed_won",
            is_won=True,
            is_closed=True,
            deal_type=DealType.RENEWAL,
            forecast_category=ForecastCategory.CLOSED,
            arr=Decimal("0.10"),
        ),
        deal("006H", SOURCE, stage="closed_lost", is_closed=True, arr=Decimal("1234567.89")),
        deal("006I", SOURCE, stage="legacy_stage", is_won=True, is_closed=True),
        deal("006J", SOURCE, stage="legacy_stage", deal_type=DealType.EXPANSION),
        deal("006K", SOURCE, stage="qualification", owner_id="005Z", account_id="001Z"),
        # Awkward ids: separators and non-ASCII text inside values (read value by value).
        deal("006L\x1eodd", SOURCE, owner_id="005\x1eX", account_id="001\x1e"),
        deal("006Ñ", SOURCE, account_id="001É", created_at=at("1969-12-31T23:00:00.5")),
        # Deleted: never read.
        deal("006X", SOURCE, stage="closed_won", is_won=True, is_closed=True),
        # Another source: never read.
    ]
    store.save_page(
        page(
            SOURCE,
            reps=reps,
            accounts=accounts,
            deals=d,
            stage_changes={
                "006A": history(
                    "006A",
                    ("prospecting", at("2026-03-28T23:30:00")),
                    ("demo", at("2026-03-29T00:59:59")),
                    ("negotiation", at("2026-03-29T01:00:00")),
                ),
                "006B": history("006B", ("qualification", at("2026-03-30T22:00:00")), ("demo", T0)),
                "006C": history("006C", ("negotiation", at("2026-10-24T22:30:00"))),
                "006G": history(
                    "006G",
                    ("legacy_stage", at("2025-12-31T22:59:59")),
                    ("proposal", at("2025-12-31T23:00:00")),
                    ("closed_won", at("2026-02-01T10:00:00")),
                ),
                # Lost at prospecting: never entered demo, though "closed_lost" comes later.
                "006H": history(
                    "006H",
                    ("prospecting", at("2026-02-01T10:00:00")),
                    ("closed_lost", at("2026-02-03T10:00:00")),
                ),
                "006I": history(
                    "006I",
                    ("legacy_stage", at("2026-01-05T10:00:00")),
                    ("demo", at("2026-01-06T10:00:00")),
                    ("legacy_stage", at("2026-01-07T10:00:00")),
                ),
                "006K": history(
                    "006K",
                    ("negotiation", at("2026-01-05T10:00:00")),
                    ("qualification", at("2026-02-05T10:00:00")),
                ),
                "006L\x1eodd": history("006L\x1eodd", ("demo", at("2026-02-05T10:00:00"))),
                "006X": history("006X", ("demo", at("2026-02-05T10:00:00"))),
            },
            field_changes={
                "006A": [
                    slip("006A", None, dt.date(2026, 6, 1), 20),
                    slip("006A", dt.date(2026, 6, 1), dt.date(2026, 6, 28), 10),
                    slip("006A", dt.date(2026, 6, 28), dt.date(2026, 6, 2), 5),
                ],
                "006F": [slip("006F", dt.date(2026, 6, 1), None, 3)],
                "006L\x1eodd": [slip("006L\x1eodd", dt.date(2026, 6, 1), dt.date(2026, 7, 1), 2)],
            },
            activities=[
                Activity(id="00T1", owner_id="005A", kind="demo", start=at("2026-03-29T00:30:00")),
                Activity(id="00T2", owner_id=None, kind="demo", start=at("2026-10-25T00:30:00")),
                Activity(id="00T3", owner_id="005Q", kind="demo", start=T0),
                Activity(id="00T4", owner_id="005A", kind="call", start=T0),
            ],
        )
    )
    store.save_page(page(SOURCE, deleted={"deal": ["006X"]}))
    store.save_page(page("other", deals=[deal("006Y", "other")]))
    # Many more ordinary deals, so the reads span several chunks.
    more = [
        deal(
            f"006M{i:04d}",
            SOURCE,
            created_at=T0 + dt.timedelta(hours=7 * i, microseconds=i),
            owner_id=("005A", "005B", None, "005Q")[i % 4],
            account_id=f"001M{i % 37:03d}" if i % 5 else None,
            stage=("prospecting", "demo", "closed_won", "closed_lost", "legacy_stage")[i % 5],
            is_won=i % 5 == 2,
            is_closed=i % 5 in (2, 3),
            close_date=None if i % 11 == 0 else dt.date(2026, 1, 1) + dt.timedelta(days=i),
            arr=None if i % 13 == 0 else Decimal(i * 37) / 100,
        )
        for i in range(150)
    ]
    store.save_page(
        page(
            SOURCE,
            deals=more,
            stage_changes={
                m.id: history(
                    m.id,
                    *(
                        (
                            ("prospecting", "demo", "legacy_stage", "proposal")[(i + k) % 4],
                            m.created_at + dt.timedelta(days=k, hours=i),
                        )
                        for k in range(i % 4)
                    ),
                )
                for i, m in enumerate(more)
            },
        )
    )
    return ["006X"]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm-kpi.sqlite'}"
    return request.getfixturevalue("pg_url")  # test_store's fixture: a fresh schema


@pytest.fixture
def store(url: str) -> Any:
    with Store.open(url) as opened:
        fill(opened)
        yield opened


def concatenated(chunks: list[DealArrays]) -> dict[str, list[Any]]:
    """Per deal id: every value, histories as lists of entries."""
    out: dict[str, Any] = {}
    for c in chunks:
        owner, stage = c.owner_id.decode(), c.stage.decode()
        dtype, forecast = c.deal_type.decode(), c.forecast_category.decode()
        entry_stage = c.stage_history_stage.decode()
        for i, deal_id in enumerate(c.id):
            s = slice(c.stage_history_offsets[i], c.stage_history_offsets[i + 1])
            h = slice(c.close_date_history_offsets[i], c.close_date_history_offsets[i + 1])
            out[deal_id] = {
                "owner_id": owner[i],
                "account": int(c.account[i]),
                "account_churn": c.account_churn[i],
                "stage": stage[i],
                "deal_type": dtype[i],
                "forecast_category": forecast[i],
                "created_at": c.created_at[i],
                "close_date": c.close_date[i],
                "is_won": bool(c.is_won[i]),
                "is_closed": bool(c.is_closed[i]),
                "arr": c.arr[i],
                "probability": c.probability[i],
                "stages": list(
                    zip(entry_stage[s], c.stage_history_entered_at[s].tolist(), strict=True)
                ),
                "slips": list(
                    zip(
                        c.close_date_history_old[h].tolist(),
                        c.close_date_history_new[h].tolist(),
                        strict=True,
                    )
                ),
            }
    return out


def naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def assert_arrays_hold_the_stored_rows(
    store: Store, source: str = SOURCE, chunk_rows: tuple[int, ...] = (20_000,)
) -> None:
    """The frames' reads (the store's compact copy) hold exactly the live deals and demo
    activities the pulled rows hold, read in chunks of each of ``chunk_rows``."""
    reference = stored_deals(store, source)
    churn = {a.id: a.churn_date for a in store.accounts(source)}
    for rows in chunk_rows:
        got = concatenated(list(store.iter_deal_arrays(source, rows=rows)))
        assert sorted(got) == sorted(d.id for d in reference)
        accounts: dict[int, str | None] = {-1: None}  # number -> account id
        for d in reference:
            row = got[d.id]
            assert row["owner_id"] == d.owner_id
            # One number per account id (-1: none), and that account's churn date.
            assert accounts.setdefault(row["account"], d.account_id) == d.account_id
            expected_churn = churn.get(d.account_id) if d.account_id else None
            assert row["account_churn"].tolist() == expected_churn, d.id
            for name in ("stage", "is_won", "is_closed"):
                assert row[name] == getattr(d, name), name
            assert row["deal_type"] == d.deal_type.value
            assert row["forecast_category"] == d.forecast_category.value
            assert row["created_at"] == np.datetime64(naive_utc(d.created_at))
            close = d.close_date
            assert (np.isnat(row["close_date"]) and close is None) or row["close_date"] == close
            for name in ("arr", "probability"):
                value = getattr(d, name)
                expected = np.nan if value is None else float(value)
                assert np.array_equal(row[name], expected, equal_nan=True), name
            changes, fields = stored_history(store, source, d.id)
            assert row["stages"] == [(c.stage, naive_utc(c.entered_at)) for c in changes]
            assert row["slips"] == [
                (f.old_value, f.new_value) for f in fields if f.field == "close_date"
            ]
        owners, starts = [], []
        for coded, start in store.iter_activity_arrays(source, "demo", rows=rows):
            owners += coded.decode()
            starts += start.tolist()
        assert sorted(zip(owners, starts, strict=True), key=str) == sorted(
            ((owner, naive_utc(start)) for owner, start in stored_activities(store, source)),
            key=str,
        )


def test_deal_arrays_hold_what_the_stored_rows_hold(store: Store) -> None:
    assert_arrays_hold_the_stored_rows(store, SOURCE, chunk_rows=(2, 7, 20_000))
    assert list(store.iter_deal_arrays("nowhere")) == []
    assert list(store.iter_activity_arrays("nowhere")) == []


def test_an_instant_in_another_text_format_is_read_value_by_value(tmp_path: Any) -> None:
    # Written by hand (or by an older version) without the fixed width: when the copy is
    # built from such rows (here after a migration listed the source), parsed one by one.
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    with Store.open(url) as store:
        fill(store)
        with store._engine.begin() as connection:  # a test's backdoor
            connection.execute(
                sa.update(deals_table)
                .where(deals_table.c.id == "006A")
                .values(stage_history="demo\t2026-03-29T02:00:00+01:00")
            )
            connection.exec_driver_sql(
                "UPDATE deals SET created_at = '2026-03-28T23:30:00Z' WHERE id = '006B'"
            )
            connection.execute(sa.insert(frame_rebuilds).values(source=SOURCE))
    with Store.open(url) as store:
        got = concatenated(list(store.iter_deal_arrays(SOURCE)))
    assert got["006A"]["stages"] == [("demo", dt.datetime(2026, 3, 29, 1, 0))]
    assert got["006B"]["created_at"] == np.datetime64("2026-03-28T23:30:00")
    assert got["006C"]["stages"] == [("negotiation", dt.datetime(2026, 10, 24, 22, 30))]


@pytest.mark.parametrize(
    "values",
    [
        ["1.5", "nan", "0.1", "1E+3", "-0", "12345678901234567.123456789", "0.30000000000000004"],
        ["2.675", "1e-320", "Infinity", "5e-324", "1.7976931348623157e308"],
        ["1_0", "2"],  # numpy does not read it, float does: value by value
    ],
)
def test_amounts_parse_to_the_same_doubles_as_float(values: list[str]) -> None:
    got = _floats(RS.join(values), len(values), "arr")
    want = np.array([float(v) for v in values])
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))  # -0 stays -0


def test_amounts_with_a_separator_inside_are_an_irregular_chunk() -> None:
    with pytest.raises(IrregularChunkError):
        _floats(RS.join(["1", "2"]), 3, "arr")


# ---------------------------------------------------------------------------------------------
# The frames against a reference written plainly from the canonical records


def config_for(url: str, cycle_start_stage: str | None) -> Any:
    config = load_config(path_of("demo-salesforce.yaml"))
    source = config.sources[0]
    mapping = source.mapping.model_copy(update={"cycle_start_stage": cycle_start_stage})
    source = source.with_changes(mapping=mapping)
    store = config.store.model_copy(update={"url": url})
    return config.replace_source(source).model_copy(update={"store": store})


NAT = np.datetime64("NaT", "D")


def reference_deals(store: Store, config: Any) -> dict[str, list[Any]]:
    source = config.sources[0]
    mapping = source.mapping
    tz = config.fiscal.tz
    orders = {st.stage: st.order for st in mapping.stages}
    qualified_order = orders[mapping.qualified_stage]
    by_key = {st.stage: st for st in mapping.stages}

    def reached(stage: str, key: str | None) -> bool:
        """KPIS.md: the stage itself, an open stage later in the funnel, or won; never lost."""
        mapped = by_key.get(stage)
        if key is None or mapped is None:
            return False
        return (
            stage == key
            or mapped.won
            or (not mapped.won and not mapped.lost and mapped.order > orders[key])
        )

    entry = mapping.conversion_entry_stage
    cycle = mapping.cycle_start_stage
    credited = {str(t) for t in mapping.deal_types.quota_credited}
    reps = [r for r in store.reps(SOURCE) if r.is_ae]
    rep_index = {r.id: i for i, r in enumerate(reps)}

    def day(when: dt.datetime | None) -> Any:
        return NAT if when is None else np.datetime64(when.astimezone(tz).date(), "D")

    columns: dict[str, list[Any]] = {}
    accounts: list[str] = []
    for d in sorted(stored_deals(store, SOURCE), key=lambda d: d.id.encode()):
        changes, fields = stored_history(store, SOURCE, d.id)
        known = d.stage in orders
        won = d.is_won and known
        lost = d.is_closed and not won and known
        created = day(d.created_at)
        entries = [(orders.get(c.stage, -1), c.stage, day(c.entered_at)) for c in changes]
        entered = [when for _, stage, when in entries if reached(stage, entry)]
        # First entry into demo; no history at all: a won deal passed it when created.
        entered_entry = min(entered) if entered else (created if won and not changes else NAT)
        if cycle is None or not changes:
            cycle_start = created
        else:
            cycle_days = [when for _, stage, when in entries if reached(stage, cycle)]
            cycle_start = min(cycle_days) if cycle_days else NAT
        same = [when for _, stage, when in entries if stage == d.stage]
        if d.account_id is not None and d.account_id not in accounts:
            accounts.append(d.account_id)
        row = {
            "id": d.id,
            "owner": rep_index.get(d.owner_id, len(reps)),  # type: ignore[arg-type]
            "created": created,
            "close": NAT if d.close_date is None else np.datetime64(d.close_date, "D"),
            "is_won": won,
            "is_lost": lost,
            "arr": np.nan if d.arr is None else float(d.arr),
            "account": -1 if d.account_id is None else accounts.index(d.account_id),
            "cycle_start": cycle_start,
            "stage_known": known,
            "credited": d.deal_type.value in credited,
            "is_renewal": d.deal_type is DealType.RENEWAL,
            "forecast": kf.FORECAST_CATEGORIES.index(d.forecast_category.value),
            "probability": np.nan if d.probability is None else float(d.probability),
            "qualified": known and not won and not lost and orders[d.stage] >= qualified_order,
            "entered_entry": entered_entry,
            "stage_entered": max(same) if same else created,
            "slips": sum(
                1
                for f in fields
                if f.old_value is not None and f.new_value is not None and f.new_value > f.old_value
            ),
        }
        for name, value in row.items():
            columns.setdefault(name, []).append(value)
    columns["accounts"] = accounts
    return columns


@pytest.mark.parametrize("cycle_start_stage", [None, "qualification"])
def test_frames_equal_a_plain_reference(
    store: Store, url: str, cycle_start_stage: str | None, monkeypatch: Any
) -> None:
    config = config_for(url, cycle_start_stage)
    source = config.sources[0]
    expected = reference_deals(store, config)
    inputs = [build_input(store, config, source, dt.date(2026, 11, 26))]
    original = Store.iter_deal_arrays
    monkeypatch.setattr(
        Store, "iter_deal_arrays", lambda self, src, rows=3: original(self, src, rows=3)
    )
    inputs.append(build_input(store, config, source, dt.date(2026, 11, 26)))
    for got in inputs:
        deals = got.deals
        assert deals.id.tolist() == expected["id"]
        for name, values in expected.items():
            if name in ("id", "accounts"):
                continue
            column = getattr(deals, name)
            want = np.array(values, dtype=column.dtype)
            if column.dtype.kind == "M":
                assert np.array_equal(column.astype(np.int64), want.astype(np.int64)), name
            else:
                assert np.array_equal(column, want, equal_nan=column.dtype.kind == "f"), name
        churn = got.accounts.churn.tolist()
        assert churn == [dt.date(2026, 5, 1) if a == "001A" else None for a in expected["accounts"]]
        assert got.reps.id.tolist() == ["005A", "005B", UNASSIGNED_ID]
        assert got.unassigned_deals == int((deals.owner == 2).sum()) > 0
        demos = sorted(zip(got.activities.owner.tolist(), got.activities.day.tolist(), strict=True))
        assert demos == [
            (0, dt.date(2026, 3, 29)),  # 01:30 in Paris, still winter time
            (2, dt.date(2024, 6, 1)),
            (2, dt.date(2026, 10, 25)),  # 02:30 in Paris, still summer time
        ]
