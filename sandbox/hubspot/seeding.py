"""Seeding: the generated data set rendered as the portal's standard objects (owners,
companies, deals with their stage/close-date/amount histories, meetings, goal targets).

Columns are built from the data set's arrays (strings lazily, on first use), so a million deals
start without a Python loop per record.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.hubspot.catalog import (
    ACTIVITY_TYPES,
    DEAL_TYPE_LABELS,
    DEAL_TYPES,
    FORECAST_CATEGORIES,
    GOAL_GROUP_ID_BASE,
    GOAL_NAME,
    HS_STAGES,
    ID_BASES,
    PIPELINE_ID,
    PIPELINE_LABEL,
    STAGE_IDS,
    TEAM_ID_BASE,
    USER_ID_BASE,
)
from crm_kpi_worker.sandbox.hubspot.formats import (
    DAY_MS,
    NULL_DAY,
    NULL_MS,
    format_number,
    slug,
)
from crm_kpi_worker.sandbox.hubspot.objects import (
    AliasColumn,
    CodeColumn,
    DayColumn,
    DerivedColumn,
    History,
    MsColumn,
    NumberColumn,
    ObjectStore,
    Owner,
    RefColumn,
    TextColumn,
)
from crm_kpi_worker.sandbox.hubspot.properties import (
    GroupDef,
    options_of,
)

if TYPE_CHECKING:
    from crm_kpi_worker.sandbox.hubspot.portal import HubSpotPortal


def seed_portal(portal: HubSpotPortal) -> None:
    """The portal's standard objects, in the order their ids and references need."""
    _build_owners(portal)
    _build_companies(portal)
    _build_deals(portal)
    _build_meetings(portal)
    _build_goal_targets(portal)


def _build_owners(portal: HubSpotPortal) -> None:
    users = portal.data.users
    teams = list(dict.fromkeys(t for t in users.team if t is not None))
    portal.teams = {name: str(TEAM_ID_BASE + i + 1) for i, name in enumerate(teams)}
    portal.owners = [
        Owner(
            row=i,
            id=portal.owner_id(i),
            email=users.email[i],
            first_name=users.first_name[i],
            last_name=users.last_name[i],
            user_id=portal.user_id(i),
            team=(portal.teams[users.team[i]], users.team[i]) if users.team[i] else None,  # type: ignore[index]
            created_ms=int(users.created_at[i]),
            archived=not bool(users.is_active[i]),
        )
        for i in range(len(users))
    ]


def _build_companies(portal: HubSpotPortal) -> None:
    acc = portal.data.accounts
    store = ObjectStore(
        "companies",
        "0-2",
        ID_BASES["companies"],
        len(acc),
        "name",
        ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
        singular="Company",
        plural="Companies",
        archived_at=np.full(len(acc), NULL_MS),
    )
    store.groups["companyinformation"] = GroupDef("companyinformation", "Company information", 0)
    portal.add_standard_columns(store, acc.created_at, acc.last_modified, "companyinformation")
    portal.add_property(
        store, "createdate", "Create Date", "datetime", "date",
        AliasColumn(store.columns["hs_createdate"]), read_only=True,
    )  # fmt: skip
    portal.add_property(
        store,
        "name",
        "Company name",
        "string",
        "text",
        TextColumn(factory=lambda: list(acc.name)),
    )
    portal.add_property(
        store, "domain", "Company domain name", "string", "text",
        TextColumn(factory=lambda: [f"{slug(n)}.example" for n in acc.name]),
    )  # fmt: skip
    portal.add_property(
        store,
        "industry",
        "Industry",
        "string",
        "text",
        TextColumn(factory=lambda: list(acc.industry)),
    )
    portal.add_property(
        store,
        "country",
        "Country/Region",
        "string",
        "text",
        TextColumn(factory=lambda: list(acc.country)),
    )
    portal.add_property(
        store, "hubspot_owner_id", "Company owner", "enumeration", "select",
        portal.owner_column(acc.owner), external_options=True, validator=portal.owner_validator,
    )  # fmt: skip
    portal.add_property(
        store, "churn_date", "Churn date", "date", "date",
        DayColumn(acc.churn_day.astype(np.int32)), hubspot_defined=False,
    )  # fmt: skip
    portal.register(store, "company")


def _build_deals(portal: HubSpotPortal) -> None:
    data = portal.data
    deals = data.deals
    n = len(deals)
    store = ObjectStore(
        "deals",
        "0-3",
        ID_BASES["deals"],
        n,
        "dealname",
        (
            "amount", "closedate", "createdate", "dealname", "dealstage",
            "hs_lastmodifieddate", "hs_object_id", "pipeline",
        ),
        singular="Deal",
        plural="Deals",
        archived_at=np.where(deals.is_deleted, deals.deleted_at, NULL_MS).astype(np.int64),
    )  # fmt: skip
    group = "dealinformation"
    store.groups[group] = GroupDef(group, "Deal information", 0)
    portal.add_standard_columns(store, deals.created_at, deals.last_modified, group)
    acc_names, products = data.accounts.name, data.products

    def names() -> list[str]:
        return [
            f"{acc_names[a]} - {products[p]}"
            for a, p in zip(deals.account.tolist(), deals.product.tolist(), strict=True)
        ]

    amount = NumberColumn(deals.amount.astype(np.float64, copy=True))
    currency = CodeColumn(deals.currency, list(data.currencies))

    def home_values() -> np.ndarray:
        # Per currency code (writes may add codes): units per 1 EUR; nan = no known rate.
        rates = np.array([data.fx_rates.get(c, np.nan) for c in currency.labels] + [np.nan])
        return np.round(amount.values / rates[currency.values], 2)

    def home_render(rows: np.ndarray) -> list[str | None]:
        return [format_number(v) for v in home_values()[rows].tolist()]

    stage = CodeColumn(deals.stage, list(STAGE_IDS))
    # The stage's default probability; a write may set another (a new stage resets it).
    prob_by_code = np.array([*(_stage_probability()), np.nan])
    probability = NumberColumn(deals.probability / 100)
    closed_codes = [i for i, v in enumerate(HS_STAGES.values()) if v[3]]
    won_code = ds.STAGE_WON

    def stage_codes() -> np.ndarray:
        codes = stage.values.astype(np.int64)
        return np.where((codes >= 0) & (codes < len(STAGE_IDS)), codes, len(STAGE_IDS))

    def flag(test: Callable[[np.ndarray], np.ndarray]) -> DerivedColumn:
        def render(rows: np.ndarray) -> list[str | None]:
            return ["true" if f else "false" for f in test(stage_codes()[rows]).tolist()]

        def mask(predicate: Callable[[str | None], bool]) -> np.ndarray:
            hit = test(stage_codes())
            return np.where(hit, predicate("true"), predicate("false"))

        return DerivedColumn(render, text_mask=mask)

    portal.add_property(store, "dealname", "Deal Name", "string", "text", TextColumn(factory=names))
    portal.add_property(store, "amount", "Amount", "number", "number", amount)
    portal.add_property(
        store, "deal_currency_code", "Currency", "enumeration", "select", currency,
        options=options_of((c, c) for c in data.currencies),
    )  # fmt: skip
    portal.add_property(
        store, "amount_in_home_currency", "Amount in company currency", "number", "number",
        DerivedColumn(home_render, keys=home_values), read_only=True, calculated=True,
    )  # fmt: skip
    close_ms = np.where(
        deals.close_day == NULL_DAY, NULL_MS, deals.close_day.astype(np.int64) * DAY_MS
    )
    portal.add_property(
        store, "closedate", "Close Date", "datetime", "date", MsColumn(close_ms, seconds=True)
    )
    portal.add_property(
        store, "createdate", "Create Date", "datetime", "date",
        AliasColumn(store.columns["hs_createdate"]), read_only=True,
    )  # fmt: skip
    portal.add_property(
        store, "dealstage", "Deal Stage", "enumeration", "radio", stage,
        options=options_of((v[0], v[1]) for v in HS_STAGES.values()),
    )  # fmt: skip
    portal.add_property(
        store, "pipeline", "Pipeline", "enumeration", "select",
        CodeColumn(np.zeros(n, dtype=np.int16), [PIPELINE_ID]),
        options=options_of([(PIPELINE_ID, PIPELINE_LABEL)]),
    )  # fmt: skip
    type_codes = np.array(
        [list(DEAL_TYPES).index(t) if t in DEAL_TYPES else -1 for t in ds.DEAL_TYPES],
        dtype=np.int16,
    )
    portal.add_property(
        store, "dealtype", "Deal Type", "enumeration", "radio",
        CodeColumn(type_codes[deals.deal_type], list(DEAL_TYPES.values())),
        options=options_of(DEAL_TYPE_LABELS.items()),
    )  # fmt: skip
    fc = list(FORECAST_CATEGORIES.values())
    portal.add_property(
        store, "hs_forecast_category", "Forecast category", "enumeration", "select",
        CodeColumn(deals.forecast_category, fc),
        options=options_of((v, v.replace("_", " ").title()) for v in fc),
    )  # fmt: skip
    portal.add_property(
        store, "hs_deal_stage_probability", "Deal probability", "number", "number",
        probability,
    )  # fmt: skip
    portal.add_property(
        store, "hubspot_owner_id", "Deal owner", "enumeration", "select",
        portal.owner_column(deals.owner), external_options=True, validator=portal.owner_validator,
    )  # fmt: skip
    portal.add_property(
        store, "hs_primary_associated_company", "Primary associated company", "number",
        "number", RefColumn(deals.account, ID_BASES["companies"], portal.company_count),
        read_only=True,
    )  # fmt: skip
    portal.add_property(
        store, "hs_is_closed", "Is deal closed?", "bool", "booleancheckbox",
        flag(lambda codes: np.isin(codes, closed_codes)), read_only=True, calculated=True,
    )  # fmt: skip
    portal.add_property(
        store, "hs_is_closed_won", "Is closed won", "bool", "booleancheckbox",
        flag(lambda codes: codes == won_code), read_only=True, calculated=True,
    )  # fmt: skip
    entered, exited = _stage_times(data)
    for code, (stage_id, label, _, _) in enumerate(HS_STAGES.values()):
        portal.add_property(
            store, f"hs_v2_date_entered_{stage_id}", f"Date entered \"{label}\"", "datetime",
            "date", MsColumn(entered[code]), read_only=True, calculated=True,
        )  # fmt: skip
        portal.add_property(
            store, f"hs_v2_date_exited_{stage_id}", f"Date exited \"{label}\"", "datetime",
            "date", MsColumn(exited[code]), read_only=True, calculated=True,
        )  # fmt: skip

    def on_write(rows: np.ndarray, parsed: dict[str, Any], at_ms: int) -> None:
        if "dealstage" not in parsed or parsed["dealstage"] is None:
            return
        new = stage.code(parsed["dealstage"])
        old = stage.values[rows]
        moving = rows[old != new]
        for old_code in np.unique(stage.values[moving]).tolist():
            if 0 <= old_code < len(STAGE_IDS):
                hit = moving[stage.values[moving] == old_code]
                store.columns[f"hs_v2_date_exited_{STAGE_IDS[old_code]}"].set(hit, at_ms)
        if 0 <= new < len(STAGE_IDS) and len(moving):
            store.columns[f"hs_v2_date_entered_{STAGE_IDS[new]}"].set(moving, at_ms)
            if "hs_deal_stage_probability" not in parsed:
                probability.set(moving, float(prob_by_code[new]))

    store.on_write = on_write
    _deal_histories(portal, store)
    store.associations["companies"] = lambda row: (
        [(portal.company_id(int(deals.account[row])), "deal_to_company")]
        if row < n and deals.account[row] >= 0
        else []
    )
    portal.register(store, "deal")


def _deal_histories(portal: HubSpotPortal, store: ObjectStore) -> None:
    data = portal.data
    deals, sc, cd = data.deals, data.stage_changes, data.close_date_changes
    n = len(deals)
    owner = deals.owner

    def source(row: int) -> tuple[str, str | None, int | None]:
        if row >= n:
            return ("CRM_UI", None, None)
        user = portal.user_id(int(owner[row]))
        return ("CRM_UI", f"userId:{user}", user)

    def stage_history(row: int) -> list[History]:
        if row >= n:
            return []
        lo, hi = np.searchsorted(sc.deal, [row, row + 1])
        src = source(row)
        return [
            (STAGE_IDS[s], t, *src)
            for s, t in zip(sc.stage[lo:hi].tolist(), sc.changed_at[lo:hi].tolist(), strict=True)
        ]

    def close_history(row: int) -> list[History]:
        if row >= n:
            return []
        lo, hi = np.searchsorted(cd.deal, [row, row + 1])
        initial = int(cd.old_day[lo]) if hi > lo else int(deals.close_day[row])
        days = [(initial, int(deals.created_at[row]))]
        days += list(zip(cd.new_day[lo:hi].tolist(), cd.changed_at[lo:hi].tolist(), strict=True))
        src = source(row)
        return [
            (f"{ds.day_to_date(d).isoformat()}T00:00:00Z", t, *src)  # type: ignore[union-attr]
            for d, t in days
            if d != NULL_DAY
        ]

    def amount_history(row: int) -> list[History]:
        if row >= n:
            return []
        lo, hi = np.searchsorted(sc.deal, [row, row + 1])
        out: list[History] = []
        last: float | None = None
        src = source(row)
        for value, t in zip(sc.amount[lo:hi].tolist(), sc.changed_at[lo:hi].tolist(), strict=True):
            if math.isnan(value) or value == last:
                continue
            out.append((format_number(value) or "", t, *src))
            last = value
        return out

    store.base_history.update(
        {"dealstage": stage_history, "closedate": close_history, "amount": amount_history}
    )


def _build_meetings(portal: HubSpotPortal) -> None:
    data = portal.data
    act = data.activities
    store = ObjectStore(
        "meetings",
        "0-47",
        ID_BASES["meetings"],
        len(act),
        "hs_meeting_title",
        ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
        singular="Meeting",
        plural="Meetings",
        archived_at=np.full(len(act), NULL_MS),
    )
    group = "meetinginformation"
    store.groups[group] = GroupDef(group, "Meeting information", 0)
    portal.add_standard_columns(store, act.created_at, act.last_modified, group)
    kinds = [ACTIVITY_TYPES[k] for k in ds.ACTIVITY_KINDS]
    acc_names = data.accounts.name

    def titles() -> list[str]:
        return [
            f"{kinds[k]} - {acc_names[a]}" if a >= 0 else kinds[k]
            for k, a in zip(act.kind.tolist(), act.account.tolist(), strict=True)
        ]

    end = act.start + act.duration_minutes.astype(np.int64) * 60_000
    portal.add_property(
        store, "hs_meeting_title", "Meeting name", "string", "text", TextColumn(factory=titles)
    )
    portal.add_property(
        store, "hs_timestamp", "Activity date", "datetime", "date", MsColumn(act.start.copy())
    )
    portal.add_property(
        store, "hs_meeting_start_time", "Start Time", "datetime", "date",
        MsColumn(act.start.copy()),
    )  # fmt: skip
    portal.add_property(store, "hs_meeting_end_time", "End Time", "datetime", "date", MsColumn(end))
    portal.add_property(
        store, "hs_activity_type", "Call and meeting type", "enumeration", "select",
        CodeColumn(act.kind, kinds), options=options_of((k, k) for k in kinds),
    )  # fmt: skip
    portal.add_property(
        store, "hubspot_owner_id", "Activity assigned to", "enumeration", "select",
        portal.owner_column(act.owner), external_options=True, validator=portal.owner_validator,
    )  # fmt: skip
    size = len(act)
    store.associations["deals"] = lambda row: (
        [(portal.deal_id(int(act.deal[row])), "meeting_event_to_deal")]
        if row < size and act.deal[row] >= 0
        else []
    )
    store.associations["companies"] = lambda row: (
        [(portal.company_id(int(act.account[row])), "meeting_event_to_company")]
        if row < size and act.account[row] >= 0
        else []
    )
    portal.register(store, "meeting")


def _build_goal_targets(portal: HubSpotPortal) -> None:
    data = portal.data
    qt = data.quotas
    store = ObjectStore(
        "goal_targets",
        "0-68",
        ID_BASES["goal_targets"],
        len(qt),
        "hs_goal_name",
        ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
        singular="Goal",
        plural="Goals",
        archived_at=np.full(len(qt), NULL_MS),
    )
    group = "goal_target_information"
    store.groups[group] = GroupDef(group, "Goal information", 0)
    portal.add_standard_columns(store, qt.created_at, qt.last_modified, group)
    start_day = qt.period_start.astype(np.int64)
    months = start_day.astype("datetime64[D]").astype("datetime64[M]")
    end_day = (months + qt.period_months.astype(np.int64)).astype("datetime64[D]").astype(np.int64)
    keys = list(zip(start_day.tolist(), qt.period_months.tolist(), strict=True))
    groups = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    group_ids = [str(GOAL_GROUP_ID_BASE + groups[k] + 1) for k in keys]
    uuids = [
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"crm-kpi-sandbox/goal-group/{g}")) for g in group_ids
    ]
    users = qt.user.astype(np.int64)
    portal.add_property(
        store, "hs_goal_name", "Goal name", "string", "text",
        TextColumn(np.full(len(qt), GOAL_NAME, dtype=object)),
    )  # fmt: skip
    portal.add_property(
        store,
        "hs_target_amount",
        "Target amount",
        "number",
        "number",
        NumberColumn(qt.amount.astype(np.float64)),
    )
    portal.add_property(
        store,
        "hs_start_datetime",
        "Start date",
        "datetime",
        "date",
        MsColumn(start_day * DAY_MS),
    )
    portal.add_property(
        store, "hs_end_datetime", "End date", "datetime", "date", MsColumn(end_day * DAY_MS)
    )
    portal.add_property(
        store, "hubspot_owner_id", "Assignee", "enumeration", "select",
        portal.owner_column(qt.user), external_options=True, validator=portal.owner_validator,
    )  # fmt: skip
    portal.add_property(
        store, "hs_assignee_user_id", "Assignee user id", "number", "number",
        NumberColumn((users + USER_ID_BASE + 1).astype(np.float64)),
    )  # fmt: skip
    portal.add_property(
        store, "hs_goal_target_group_id", "Goal group id", "number", "number",
        NumberColumn(np.array(group_ids, dtype=np.float64)), read_only=True,
    )  # fmt: skip
    portal.add_property(
        store, "hs_group_correlation_uuid", "Goal group uuid", "string", "text",
        TextColumn(np.array([*uuids, None], dtype=object)[:-1]), read_only=True,
    )  # fmt: skip
    portal.add_property(
        store, "hs_kpi_display_unit", "KPI display unit", "enumeration", "select",
        CodeColumn(np.zeros(len(qt), dtype=np.int16), ["currency"]),
        options=options_of(
            [("currency", "Currency"), ("number", "Number"), ("percent", "Percent")]
        ),
    )  # fmt: skip
    portal.register(store, "goal_target", "goals")


def _stage_probability() -> list[float]:
    from crm_kpi_worker.sandbox.generator import STAGE_PROBABILITY

    return (STAGE_PROBABILITY / 100).tolist()


def _stage_times(data: ds.Dataset) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per stage code: each deal's last entry into / exit from it (epoch ms, NULL_MS: never)."""
    sc = data.stage_changes
    n = len(data.deals)
    same_deal_next = np.append(sc.deal[1:] == sc.deal[:-1], False)
    next_time = np.append(sc.changed_at[1:], NULL_MS)
    entered, exited = [], []
    for code in range(len(ds.STAGES)):
        rows = np.flatnonzero(sc.stage == code)
        enter = np.full(n, NULL_MS, dtype=np.int64)
        # Rows are sorted by (deal, time): the last row per deal wins.
        last = _last_of_each(sc.deal[rows])
        enter[sc.deal[rows][last]] = sc.changed_at[rows][last]
        entered.append(enter)
        left = rows[same_deal_next[rows]]
        leave = np.full(n, NULL_MS, dtype=np.int64)
        last = _last_of_each(sc.deal[left])
        leave[sc.deal[left][last]] = next_time[left][last]
        exited.append(leave)
    return entered, exited


def _last_of_each(keys: np.ndarray) -> np.ndarray:
    """Mask of the last row of each run of equal keys (keys sorted)."""
    if not len(keys):
        return np.zeros(0, dtype=bool)
    return np.append(keys[1:] != keys[:-1], True)
