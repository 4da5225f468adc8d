"""``validate()``: the data set's invariants (lengths, dtypes, index ranges, sort orders,
timestamps bounds, NULL conventions, histories consistent with the deals).

Every check reports rather than raises, so one call lists every broken invariant; a check that
depends on a valid index (e.g. deals.stage) is skipped once that index is found broken.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from crm_kpi_worker.sandbox.catalog import (
    DAY_MS,
    KEY_SHIFT,
    LOST,
    ROLE_AE,
    STAGE_FORECAST,
    STAGE_PROBABILITY,
    WON,
    is_quarter_end,
)
from crm_kpi_worker.sandbox.dataset import (
    ACTIVITY_KINDS,
    DEAL_TYPES,
    FORECAST_CATEGORIES,
    NULL_DAY,
    STAGES,
    USER_ROLES,
    Dataset,
    date_to_day,
)

_DTYPES: dict[str, dict[str, type]] = {
    "users": {
        "role": np.int8,
        "manager": np.int32,
        "is_active": np.bool_,
        "start_day": np.int32,
        "created_at": np.int64,
    },
    "accounts": {
        "churn_day": np.int32,
        "owner": np.int32,
        "created_at": np.int64,
        "last_modified": np.int64,
    },
    "deals": {
        "owner": np.int32,
        "account": np.int32,
        "product": np.int8,
        "created_at": np.int64,
        "close_day": np.int32,
        "stage": np.int8,
        "amount": np.float64,
        "currency": np.int8,
        "deal_type": np.int8,
        "forecast_category": np.int8,
        "probability": np.float64,
        "term_months": np.int16,
        "is_deleted": np.bool_,
        "deleted_at": np.int64,
        "last_modified": np.int64,
    },
    "stage_changes": {
        "deal": np.int32,
        "stage": np.int8,
        "changed_at": np.int64,
        "amount": np.float64,
        "close_day": np.int32,
        "probability": np.float64,
        "forecast_category": np.int8,
    },
    "close_date_changes": {
        "deal": np.int32,
        "old_day": np.int32,
        "new_day": np.int32,
        "changed_at": np.int64,
    },
    "activities": {
        "owner": np.int32,
        "deal": np.int32,
        "account": np.int32,
        "kind": np.int8,
        "start": np.int64,
        "duration_minutes": np.int16,
        "created_at": np.int64,
        "last_modified": np.int64,
    },
    "quotas": {
        "user": np.int32,
        "period_start": np.int32,
        "period_months": np.int8,
        "amount": np.float64,
        "created_at": np.int64,
        "last_modified": np.int64,
    },
}


def validate(dataset: Dataset) -> list[str]:
    """Problems found in ``dataset`` (empty when every invariant holds)."""
    problems = _shape_problems(dataset)
    if problems:  # everything below assumes the shapes and dtypes
        return problems
    checks = _Checks(dataset)
    checks.dataset_level()
    checks.users()
    checks.accounts()
    checks.deals()
    checks.histories()
    checks.activities()
    checks.quotas()
    return checks.problems


def _shape_problems(dataset: Dataset) -> list[str]:
    problems: list[str] = []
    for name, dtypes in _DTYPES.items():
        table = getattr(dataset, name)
        lengths = {f.name: len(getattr(table, f.name)) for f in fields(table)}
        if len(set(lengths.values())) > 1:
            problems.append(f"{name}: columns of different lengths {lengths}")
        for column, dtype in dtypes.items():
            values = getattr(table, column)
            if not isinstance(values, np.ndarray) or values.dtype != dtype:
                got = getattr(values, "dtype", type(values).__name__)
                problems.append(f"{name}.{column}: expected {np.dtype(dtype)}, got {got}")
    return problems


class _Checks:
    """The invariants of one well-shaped data set, table by table, collecting problems."""

    def __init__(self, dataset: Dataset) -> None:
        self.ds = dataset
        self.problems: list[str] = []
        self.n_users = len(dataset.users)
        self.n_accounts = len(dataset.accounts)
        self.n_deals = len(dataset.deals)
        self.ref_end = (date_to_day(dataset.reference_date) + 1) * DAY_MS - 1
        # Set by deals(): later checks index with these columns only when they are in range.
        self.deal_account_ok = False
        self.stage_ok = False

    def check(self, condition: np.ndarray | bool, message: str) -> None:
        bad = np.asarray(condition)
        if bad.ndim == 0:
            if not bool(bad):
                self.problems.append(message)
        elif not bad.all():
            self.problems.append(
                f"{message} ({int((~bad).sum())} rows, first at {int(np.argmin(bad))})"
            )

    def index(self, values: np.ndarray, size: int, message: str, allow_none: bool = False) -> bool:
        before = len(self.problems)
        low = -1 if allow_none else 0
        self.check((values >= low) & (values < size), message)
        return len(self.problems) == before

    def dataset_level(self) -> None:
        ds, check = self.ds, self.check
        check(
            ds.currencies[:1] == [ds.reporting_currency], "currencies[0] is not the reporting one"
        )
        check(ds.fx_rates.get(ds.reporting_currency) == 1.0, "reporting currency rate is not 1.0")
        check(set(ds.fx_rates) <= set(ds.currencies), "fx_rates has a code outside currencies")
        check(0 < len(ds.products) <= 127, "products: 1..127 expected")
        check(is_quarter_end(ds.reference_date), "reference_date is not a quarter end")

    def users(self) -> None:
        users, n_users, check = self.ds.users, self.n_users, self.check
        self.index(users.role, len(USER_ROLES), "users.role out of range")
        self.index(users.manager, n_users, "users.manager out of range", allow_none=True)
        check(users.manager != np.arange(n_users), "a user manages themself")
        check(len(set(users.email)) == n_users, "users.email not unique")
        is_ae = users.role == ROLE_AE
        has_team = np.array([t is not None for t in users.team], dtype=bool)
        check(has_team == is_ae, "users.team must be set for AEs and None otherwise")

    def accounts(self) -> None:
        accounts, check = self.ds.accounts, self.check
        self.index(accounts.owner, self.n_users, "accounts.owner out of range")
        check(len(set(accounts.name)) == self.n_accounts, "accounts.name not unique")
        check(accounts.last_modified >= accounts.created_at, "accounts.last_modified < created_at")
        check(
            (accounts.churn_day == NULL_DAY)
            | (accounts.churn_day.astype(np.int64) * DAY_MS <= self.ref_end),
            "accounts.churn_day after the reference date",
        )

    def deals(self) -> None:
        ds, deals, check, index, ref_end = (
            self.ds,
            self.ds.deals,
            self.check,
            self.index,
            self.ref_end,
        )
        index(deals.owner, self.n_users, "deals.owner out of range")
        self.deal_account_ok = index(deals.account, self.n_accounts, "deals.account out of range")
        index(deals.product, len(ds.products), "deals.product out of range")
        self.stage_ok = index(deals.stage, len(STAGES), "deals.stage out of range")
        index(deals.currency, len(ds.currencies), "deals.currency out of range")
        index(deals.deal_type, len(DEAL_TYPES), "deals.deal_type out of range")
        index(
            deals.forecast_category,
            len(FORECAST_CATEGORIES),
            "deals.forecast_category out of range",
        )
        check(deals.last_modified >= deals.created_at, "deals.last_modified < created_at")
        check(deals.last_modified <= ref_end, "deals.last_modified after the reference date")
        check((deals.deleted_at != 0) == deals.is_deleted, "deals.deleted_at set iff is_deleted")
        check(
            ~deals.is_deleted | (deals.deleted_at >= deals.last_modified),
            "deals.deleted_at before last_modified",
        )
        check(deals.deleted_at <= ref_end, "deals.deleted_at after the reference date")
        check(np.isnan(deals.amount) | (deals.amount >= 0), "deals.amount negative")
        check(~np.isinf(deals.amount), "deals.amount infinite (use nan for none)")
        check((deals.probability >= 0) & (deals.probability <= 100), "deals.probability not 0..100")
        check(deals.term_months > 0, "deals.term_months not positive")
        if self.stage_ok:
            check(deals.probability == STAGE_PROBABILITY[deals.stage], "deals.probability vs stage")
            check(deals.forecast_category == STAGE_FORECAST[deals.stage], "deals.forecast vs stage")
        created_day = deals.created_at // DAY_MS
        check(
            ~self._closed() | (deals.close_day == NULL_DAY) | (deals.close_day >= created_day),
            "closed deal closes before it was created",
        )

    def _closed(self) -> np.ndarray:
        return np.isin(self.ds.deals.stage, (WON, LOST))

    def histories(self) -> None:
        """Stage and close-date histories (skipped past a broken index)."""
        if self._stage_changes():
            self._close_date_changes()

    def _stage_changes(self) -> bool:
        """Stage changes; False when their indexes are broken (the rest cannot be checked)."""
        deals, sc, check, n_deals = self.ds.deals, self.ds.stage_changes, self.check, self.n_deals
        sc_ok = self.index(sc.deal, n_deals, "stage_changes.deal out of range")
        sc_ok &= self.index(sc.stage, len(STAGES), "stage_changes.stage out of range")
        if not (sc_ok and self.stage_ok):
            return False
        key_ok = (np.diff(sc.deal) > 0) | ((np.diff(sc.deal) == 0) & (np.diff(sc.changed_at) > 0))
        check(key_ok, "stage_changes not sorted by (deal, changed_at) strictly")
        counts = np.bincount(sc.deal, minlength=n_deals)
        before = len(self.problems)
        check(counts > 0, "deal without a stage change (creation row)")
        if len(self.problems) == before:
            first = np.cumsum(counts) - counts
            last = first + counts - 1
            check(sc.changed_at[first] == deals.created_at, "first stage change != deal created_at")
            check(sc.stage[last] == deals.stage, "last stage change != deal stage")
            check(deals.last_modified >= sc.changed_at[last], "deals.last_modified < a change")
            check(
                ~self._closed()
                | (sc.changed_at[last] // DAY_MS == deals.close_day)
                | (deals.close_day == NULL_DAY),
                "closing stage change not on the close date",
            )
        check(sc.probability == STAGE_PROBABILITY[sc.stage], "stage_changes.probability vs stage")
        check(sc.forecast_category == STAGE_FORECAST[sc.stage], "stage_changes.forecast vs stage")
        check(sc.changed_at <= self.ref_end, "stage change after the reference date")
        return True

    def _close_date_changes(self) -> None:
        deals, sc, cd = self.ds.deals, self.ds.stage_changes, self.ds.close_date_changes
        check = self.check
        if not self.index(cd.deal, self.n_deals, "close_date_changes.deal out of range"):
            return
        same = np.diff(cd.deal) == 0
        ordered = (np.diff(cd.deal) > 0) | (same & (np.diff(cd.changed_at) > 0))
        check(ordered, "close_date_changes not sorted by (deal, changed_at) strictly")
        check(~same | (cd.old_day[1:] == cd.new_day[:-1]), "close date edits do not chain")
        check(cd.changed_at >= deals.created_at[cd.deal], "close date edit before deal creation")
        check(cd.changed_at <= deals.last_modified[cd.deal], "deals.last_modified < a close edit")
        if len(cd):
            last_edit = np.flatnonzero(np.append(cd.deal[1:] != cd.deal[:-1], True))
            check(
                deals.close_day[cd.deal[last_edit]] == cd.new_day[last_edit],
                "deal close_day != its last close-date edit",
            )
        # Each stage row carries the close date in effect at its time.
        initial = deals.close_day.copy()
        if len(cd):
            first_edit = np.flatnonzero(np.insert(cd.deal[1:] != cd.deal[:-1], 0, True))
            initial[cd.deal[first_edit]] = cd.old_day[first_edit]
            edit_key = cd.deal.astype(np.int64) * KEY_SHIFT + cd.changed_at
            row_key = sc.deal.astype(np.int64) * KEY_SHIFT + sc.changed_at
            pos = np.searchsorted(edit_key, row_key, side="right") - 1
            pos_c = np.maximum(pos, 0)
            applies = (pos >= 0) & (cd.deal[pos_c] == sc.deal)
            expected = np.where(applies, cd.new_day[pos_c], initial[sc.deal])
        else:
            expected = initial[sc.deal]
        check(sc.close_day == expected, "stage_changes.close_day != close date in effect")

    def activities(self) -> None:
        act, deals, check, index = self.ds.activities, self.ds.deals, self.check, self.index
        index(act.owner, self.n_users, "activities.owner out of range")
        act_ok = index(act.deal, self.n_deals, "activities.deal out of range", allow_none=True)
        act_ok &= index(
            act.account, self.n_accounts, "activities.account out of range", allow_none=True
        )
        index(act.kind, len(ACTIVITY_KINDS), "activities.kind out of range")
        check(np.diff(act.start) >= 0, "activities not sorted by start")
        check(act.duration_minutes > 0, "activities.duration_minutes not positive")
        check(act.last_modified >= act.created_at, "activities.last_modified < created_at")
        check(
            act.last_modified <= self.ref_end, "activities.last_modified after the reference date"
        )
        if act_ok and self.deal_account_ok:
            linked = act.deal >= 0
            check(
                act.account[linked] == deals.account[act.deal[linked]],
                "activity account != its deal's account",
            )

    def quotas(self) -> None:
        qt, check = self.ds.quotas, self.check
        self.index(qt.user, self.n_users, "quotas.user out of range")
        starts = qt.period_start.astype("datetime64[D]")
        check(
            starts == starts.astype("datetime64[M]").astype("datetime64[D]"),
            "quota period not 1st",
        )
        check((qt.period_months >= 1) & (qt.period_months <= 12), "quotas.period_months not 1..12")
        check(np.isfinite(qt.amount) & (qt.amount >= 0), "quotas.amount not a finite amount >= 0")
        check(qt.last_modified >= qt.created_at, "quotas.last_modified < created_at")
        keys = set(
            zip(qt.user.tolist(), qt.period_start.tolist(), qt.period_months.tolist(), strict=True)
        )
        check(len(keys) == len(qt), "duplicate quota (user, period_start, period_months)")
