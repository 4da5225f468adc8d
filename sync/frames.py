"""From the store's canonical records to the KPI engine's numpy frames, for one source.

Everything CRM- and config-specific is resolved here so the engine stays pure: which users are
reps (AEs) and the "unassigned" pseudo-rep, local dates in the fiscal timezone, stage facts
from the mapping (known, qualified, first entry into the conversion entry stage, entry into the
current stage, cycle start), quota-credited types, close-date slips, quotas from the CRM or the
config. Vectorised: a million deals take seconds, not minutes.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from crm_kpi_worker.kpis import frames as kf
from crm_kpi_worker.sync.config import AppConfig, SourceBase, StageMap
from crm_kpi_worker.sync.config_loader import read_quota_csv
from crm_kpi_worker.sync.model import DealType, Quota, QuotaSource, Rep
from crm_kpi_worker.sync.store import Store
from crm_kpi_worker.sync.store.arrays import Coded, DealArrays, id_keys

UNASSIGNED_ID = "unassigned"
_NAT = np.datetime64("NaT", "D")
_FAR = np.datetime64("9999-12-31", "D")


@dataclass(frozen=True)
class EngineInput:
    deals: kf.Deals
    reps: kf.Reps
    quotas: kf.Quotas
    activities: kf.Activities
    accounts: kf.Accounts
    snapshots: kf.Snapshots
    settings: kf.Settings
    rep_users: list[Rep]  # the Reps frame's rows (without the unassigned pseudo-rep)
    unassigned_deals: int  # live deals whose owner is not a known rep


def local_days(instants: Sequence[dt.datetime | None], tz: ZoneInfo) -> np.ndarray:
    """Calendar dates in ``tz`` of aware datetimes, as datetime64[D] (None -> NaT)."""
    utc = np.array(
        [None if v is None else v.astimezone(dt.UTC).replace(tzinfo=None) for v in instants],
        dtype="datetime64[us]",
    ).reshape(-1)
    return LocalDays(tz)(utc)


class LocalDays:
    """UTC instants (datetime64, NaT allowed) to calendar dates in ``tz``, vectorised.

    The UTC offset is looked up once per distinct UTC hour, and remembered across calls (a
    million deals span a few tens of thousands of hours); threads may share one.
    """

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._hours = np.zeros(0, dtype=np.int64)  # sorted
        self._offsets = np.zeros(0, dtype=np.int64)  # microseconds, per hour above
        self._lock = threading.Lock()

    def __call__(self, instants: np.ndarray) -> np.ndarray:
        micros = instants.astype("datetime64[us]").view(np.int64)
        missing = np.isnat(instants)
        if missing.any():
            micros = np.where(missing, 0, micros)
        if not len(micros):
            return np.zeros(0, dtype="datetime64[D]")
        hours = micros // _HOUR_US
        low, high = int(hours.min()), int(hours.max())
        if high - low <= 2 * len(hours) + 10_000:
            # A dense table over the span: no sort of the values.
            offsets = self._offsets_of(np.arange(low, high + 1, dtype=np.int64))[hours - low]
        else:
            distinct, inverse = np.unique(hours, return_inverse=True)
            offsets = self._offsets_of(distinct)[inverse.reshape(-1)]
        # floor((micros + offset) / day) is the local day of floor(micros / 1 s) + offset.
        days = ((micros + offsets) // _DAY_US).astype("datetime64[D]")
        days[missing] = _NAT
        return days

    def _offsets_of(self, hours: np.ndarray) -> np.ndarray:
        with self._lock:
            position = np.searchsorted(self._hours, hours)
            found = position < len(self._hours)
            found[found] = self._hours[position[found]] == hours[found]
            if not found.all():
                new = hours[~found]
                offsets = [_offset_us(self.tz, hour) for hour in new.tolist()]
                merged = np.concatenate((self._hours, new))
                order = np.argsort(merged, kind="stable")
                self._hours = merged[order]
                self._offsets = np.concatenate((self._offsets, np.array(offsets, np.int64)))[order]
                position = np.searchsorted(self._hours, hours)
            return self._offsets[position]


_HOUR_US = 3_600_000_000
_DAY_US = 24 * _HOUR_US


def _offset_us(tz: ZoneInfo, hour: int) -> int:
    """The UTC offset of ``tz`` at the start of the UTC hour ``hour``, in microseconds."""
    offset = dt.datetime.fromtimestamp(hour * 3600, tz=tz).utcoffset()
    if offset is None:  # an aware datetime always has one
        raise ValueError(f"{tz}: no UTC offset at hour {hour}")
    return offset // dt.timedelta(microseconds=1)


def _dates(values: Sequence[dt.date | None]) -> np.ndarray:
    return np.array(
        [_NAT if v is None else np.datetime64(v, "D") for v in values], dtype="datetime64[D]"
    )


def _codes(values: Sequence[Any], mapping: dict[Any, int], default: int) -> np.ndarray:
    return np.fromiter((mapping.get(v, default) for v in values), dtype=np.int32, count=len(values))


def build_input(store: Store, config: AppConfig, source: SourceBase, as_of: dt.date) -> EngineInput:
    """Frames for one source from what the store holds (live records only)."""
    del as_of  # the engine decides what is "to date"; frames carry every live record
    tz = config.fiscal.tz
    mapping = source.mapping
    name = source.name

    # ---- reps: AEs, plus the unassigned pseudo-rep owning everything else
    users = store.reps(name)
    rep_users = [u for u in users if u.is_ae]
    rep_index = {u.id: i for i, u in enumerate(rep_users)}
    unassigned = len(rep_users)
    reps = kf.Reps(
        id=[u.id for u in rep_users] + [UNASSIGNED_ID],
        email=[u.email for u in rep_users] + [""],
        name=[u.name for u in rep_users] + ["Unassigned"],
        team=[u.team for u in rep_users] + [None],
        is_ae=[True] * len(rep_users) + [False],
        start=_dates([u.start_date for u in rep_users] + [None]),
        is_unassigned=[False] * len(rep_users) + [True],
    )

    # ---- deals, converted to numpy chunk by chunk (a million deals as Python objects would
    # not fit a small container)
    orders = {st.stage: st.order for st in mapping.stages}
    cycle_stage = mapping.cycle_start_stage
    context = _DealContext(
        days=LocalDays(tz),
        rep_index=rep_index,
        unassigned=unassigned,
        orders=orders,
        qualified_order=orders[mapping.qualified_stage],
        reaching_entry=stages_reaching(mapping.stages, mapping.conversion_entry_stage),
        reaching_cycle=stages_reaching(mapping.stages, cycle_stage) if cycle_stage else None,
        credited={str(t) for t in mapping.deal_types.quota_credited},
    )
    arrays = None
    accounts = kf.Accounts.empty()
    # The demos are read in a worker thread while the deals are read and put in order here:
    # both reads mostly run in the database, without the GIL.
    with ThreadPoolExecutor(1, thread_name_prefix="frames-activities") as pool:
        reading = pool.submit(
            _activities, store, name, mapping, rep_index, unassigned, context.days
        )
        parts = [
            _deal_arrays(chunk, context) for chunk in store.iter_deal_arrays(name, rows=50_000)
        ]
        if parts:
            # Deals in id order (the engine adds amounts up in frame order: the same order,
            # the same float sums), accounts numbered in first-seen order along it.
            ids = _joined([part.pop("id") for part in parts], None)
            order = _id_order(ids)
            arrays = {key: _joined([part[key] for part in parts], order) for key in parts[0]}
            arrays["id"] = ids if order is None else ids[order]
            arrays["account"], churn = _accounts(arrays.pop("account"), arrays.pop("account_churn"))
            accounts = kf.Accounts(churn=churn)
        activities = reading.result()
    if arrays is None:
        deals = kf.Deals(id=[], owner=[], created=[], close=[], is_won=[], is_lost=[], arr=[])
        owner = np.zeros(0, dtype=np.int32)
    else:
        owner = arrays.pop("owner")
        deals = kf.Deals(owner=owner, **arrays)

    # ---- quotas
    quota_rows = _quotas(store, config, source, rep_users)
    quotas = kf.Quotas(
        rep=[rep_index[q.rep_id] for q in quota_rows],
        start=_dates([q.period_start for q in quota_rows]),
        end=_dates([q.period_end for q in quota_rows]),
        amount=[float(q.amount) for q in quota_rows],
    )

    # ---- stored snapshots (subject is "scope:subject")
    snapshots = kf.Snapshots.from_rows(
        [
            (*s.subject.split(":", 1), s.period_key, float(s.commit), s.taken_on)  # type: ignore[misc]
            for s in store.snapshots(name)
        ]
    )
    return EngineInput(
        deals=deals,
        reps=reps,
        quotas=quotas,
        activities=activities,
        accounts=accounts,
        snapshots=snapshots,
        settings=settings_for(config, source),
        rep_users=rep_users,
        unassigned_deals=int((owner == unassigned).sum()),
    )


def _activities(
    store: Store,
    name: str,
    mapping: Any,
    rep_index: dict[str, int],
    unassigned: int,
    local_days: LocalDays,
) -> kf.Activities:
    """The Activities frame (demos)."""
    if mapping.demos is None:
        return kf.Activities.unmapped()
    owners, days = [], []
    for owner_ids, starts in store.iter_activity_arrays(name, "demo"):
        owners.append(_lookup(owner_ids, lambda v: rep_index.get(v, unassigned)))
        days.append(local_days(starts))
    return kf.Activities(
        owner=np.concatenate(owners) if owners else np.zeros(0, np.int32),
        day=np.concatenate(days) if days else np.zeros(0, "datetime64[D]"),
    )


@dataclass
class _DealContext:
    days: LocalDays
    rep_index: dict[str, int]
    unassigned: int
    orders: dict[str, int]
    qualified_order: int
    reaching_entry: frozenset[str]  # stages whose entry is an entry into the conversion stage
    reaching_cycle: frozenset[str] | None  # likewise for the cycle-start stage (None: created)
    credited: set[str]
    stage_ids: dict[str, int] = field(default_factory=dict)  # every stage text seen: an id


def stages_reaching(stages: Sequence[StageMap], key: str) -> frozenset[str]:
    """The canonical stages whose entry means a deal reached stage ``key``: ``key`` itself,
    an open stage later in the funnel (the deal skipped ``key``), or a won stage. A lost stage
    never does, wherever it sits in the funnel order (KPIS.md, "Entering the entry stage")."""
    order = next(s.order for s in stages if s.stage == key)
    return frozenset(
        s.stage for s in stages if s.stage == key or s.won or (not s.closed and s.order > order)
    )


_FORECAST_INDEX = {k: i for i, k in enumerate(kf.FORECAST_CATEGORIES)}
_EPOCH_DAY = np.datetime64("0001-01-01", "D")


def _id_order(ids: np.ndarray) -> np.ndarray | None:
    """The permutation sorting ids (an object array of str) in the bytes' order of their
    UTF-8, which is SQLite's (binary) order of text keys and Python's order of str; None
    when they are in that order already (as SQLite reads them)."""
    if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()):
        return None
    keys = id_keys(ids.tolist())
    width = -(-keys.dtype.itemsize // 8) * 8
    words = keys.astype(f"S{width}").view(">u8").reshape(len(keys), -1)
    return np.lexsort(tuple(words[:, k] for k in range(words.shape[1] - 1, -1, -1)))


def _joined(pieces: list[np.ndarray], order: np.ndarray | None) -> np.ndarray:
    """The chunks' pieces of one column, one after the other, then put in ``order``."""
    joined = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    return joined if order is None else joined[order]


def _accounts(numbers: np.ndarray, churn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per deal, its account's row (-1 = none), accounts numbered in first-seen order; and
    the churn date of each row's account (from the deals' account numbers and churn dates)."""
    present = np.flatnonzero(numbers >= 0)
    rows = np.full(len(numbers), -1, dtype=np.int32)
    if not len(present):
        return rows, np.zeros(0, dtype="datetime64[D]")
    _, first, inverse = np.unique(numbers[present], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    rows[present] = rank[inverse.reshape(-1)]
    return rows, churn[present[first[order]]]


def _lookup(column: Coded, convert: Any, dtype: Any = np.int32) -> np.ndarray:
    """``convert`` of each row's value, called once per distinct value."""
    table = np.array([convert(value) for value in column.values], dtype=dtype)
    return table[column.codes] if len(table) else np.zeros(len(column.codes), dtype=dtype)


def _deal_arrays(chunk: DealArrays, ctx: _DealContext) -> dict[str, np.ndarray]:
    """The Deals frame's columns for one chunk of the store's deal arrays."""
    n = len(chunk)
    orders = ctx.orders
    owner = _lookup(chunk.owner_id, lambda v: ctx.rep_index.get(v, ctx.unassigned))
    stage_ids = ctx.stage_ids

    def stage_id(stage: str) -> int:
        return stage_ids.setdefault(stage, len(stage_ids))

    stage = chunk.stage
    stage_known = _lookup(stage, lambda s: s in orders, bool)
    stage_order = _lookup(stage, lambda s: orders.get(s, -1))
    is_won = chunk.is_won & stage_known
    is_lost = chunk.is_closed & ~is_won & stage_known
    qualified = stage_known & ~is_won & ~is_lost & (stage_order >= ctx.qualified_order)
    created = ctx.days(chunk.created_at)

    # Histories (compressed rows: deal i owns entries offsets[i]..offsets[i+1]-1).
    offsets = chunk.stage_history_offsets
    counts = np.diff(offsets)
    deal_of = np.repeat(np.arange(n), counts)
    entry_stage = chunk.stage_history_stage
    entry_day = ctx.days(chunk.stage_history_entered_at)
    # Per-deal reductions over each deal's contiguous run of entries (reduceat: one pass, far
    # cheaper than ufunc.at); deals without entries are left at the fill value.
    with_entries = counts > 0
    run_starts = offsets[:-1][with_entries]

    def per_deal(reduce: Any, values: np.ndarray, fill: np.datetime64) -> np.ndarray:
        out = np.full(n, fill)
        if len(run_starts):
            out[with_entries] = reduce.reduceat(values, run_starts)
        return out

    def first_day(mask: np.ndarray) -> np.ndarray:
        first = per_deal(np.minimum, np.where(mask, entry_day, _FAR), _FAR)
        first[first == _FAR] = _NAT
        return first

    # Entering the conversion entry stage (KPIS.md): the first day the history shows the deal
    # in that stage, in an open stage later in the funnel (it skipped the entry stage), or
    # won; a lost stage is never an entry. No history at all: a won deal passed every earlier
    # stage, dated from its creation; a lost one never entered.
    entered_entry = first_day(_lookup(entry_stage, ctx.reaching_entry.__contains__, bool))
    no_history = counts == 0
    entered_entry[no_history & is_won] = created[no_history & is_won]
    if ctx.reaching_cycle is not None:
        cycle_start = first_day(_lookup(entry_stage, ctx.reaching_cycle.__contains__, bool))
        cycle_start[no_history] = created[no_history]
    else:
        cycle_start = created

    # Entry into the current stage: the last entry of the deal's current stage.
    same = _lookup(entry_stage, stage_id) == _lookup(stage, stage_id)[deal_of]
    last = per_deal(np.maximum, np.where(same, entry_day, _EPOCH_DAY), _EPOCH_DAY)
    stage_entered = np.where(last == _EPOCH_DAY, created, last)

    # Close-date slips: moves to a later date.
    slip_deal = np.repeat(np.arange(n), np.diff(chunk.close_date_history_offsets))
    old, new = chunk.close_date_history_old, chunk.close_date_history_new
    later = ~np.isnat(old) & ~np.isnat(new) & (new > old)
    slips = np.bincount(slip_deal[later], minlength=n).astype(np.int32)

    deal_types = chunk.deal_type
    ids = np.empty(n, dtype=object)
    ids[:] = chunk.id
    return {
        "id": ids,
        "owner": owner,
        "created": created,
        "close": chunk.close_date,
        "is_won": is_won,
        "is_lost": is_lost,
        "arr": chunk.arr,
        "account": chunk.account,
        "account_churn": chunk.account_churn,
        "cycle_start": cycle_start,
        "stage_known": stage_known,
        "credited": _lookup(deal_types, lambda t: str(t) in ctx.credited, bool),
        "is_renewal": _lookup(deal_types, lambda t: str(t) == DealType.RENEWAL.value, bool),
        "forecast": _lookup(
            chunk.forecast_category, lambda f: _FORECAST_INDEX.get(str(f), 0), np.int8
        ),
        "probability": chunk.probability,
        "qualified": qualified,
        "entered_entry": entered_entry,
        "stage_entered": stage_entered,
        "slips": slips,
    }


def _quotas(store: Store, config: AppConfig, source: Any, reps: list[Rep]) -> list[Quota]:
    """Quotas of known reps: from the CRM (stored by the pull) or from the config/CSV."""
    known = {r.id for r in reps}
    setting = source.mapping.quota_source
    if setting.kind == "crm":
        return [q for q in store.quotas(source.name) if q.rep_id in known]
    by_email = {r.email: r.id for r in reps}
    if setting.kind == "csv":
        entries = list(read_quota_csv(setting.csv, config.fiscal))
    else:
        entries = list(config.quotas.entries)
        if config.quotas.csv is not None:
            entries += read_quota_csv(config.quotas.csv, config.fiscal)
    rows: list[Quota] = []
    for entry in entries:
        rep_id = by_email.get(entry.rep)
        if rep_id is None:
            continue
        start, end = entry.bounds(config.fiscal)
        rows.append(
            Quota(
                rep_id=rep_id,
                period_start=start,
                period_end=end,
                amount=entry.amount,
                source=QuotaSource.CONFIG,
            )
        )
    return rows


def settings_for(config: AppConfig, source: Any) -> kf.Settings:
    mapping = source.mapping
    pay = config.variable_pay
    deal_target = config.kpi_fields_for(source).deal
    renewal_mapped = any(
        str(v) == DealType.RENEWAL.value for v in mapping.deal_types.values.values()
    )
    return kf.Settings(
        year_start_month=config.fiscal.year_start_month,
        year_named_by=config.fiscal.year_named_by,
        periods=tuple(config.fiscal.periods),
        snapshot_day=config.fiscal.snapshot_day,
        trailing_window_days=config.fiscal.trailing_window_days,
        ramp_prorate=config.quotas.ramp.prorate,
        variable_target=float(pay.target) if pay is not None and pay.target is not None else None,
        variable_targets={k: float(v) for k, v in pay.targets.items()} if pay is not None else {},
        payout=kf.PayoutCurve(
            float(pay.curve.accelerator_from), float(pay.curve.accelerator), float(pay.curve.cap)
        )
        if pay is not None
        else kf.PayoutCurve(),
        churn_signal=mapping.churn_date is not None or renewal_mapped,
        deal_period=deal_target.period if deal_target is not None else "quarter",
    )
