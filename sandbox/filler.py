"""The generated bulk data: filler users, accounts and deals up to a million, with realistic
distributions, appended after the demo scenario.

Vectorised throughout (no Python loop per deal) and drawn from the filler's own random stream.
The steps run in a fixed order, each drawing from that stream in turn: reordering them, or the
draws inside one, changes the data set of every seed. Big intermediate arrays are dropped as
soon as the last step needing them is done, so a million deals stay within bounded memory.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox.catalog import (
    CURRENCIES,
    DAY_MS,
    DEAL_TYPES,
    DEMO,
    EXPANSION,
    FX_RATES,
    HOUR_MS,
    INDUSTRIES,
    KEY_SHIFT,
    KIND_CALL,
    KIND_DEMO,
    KIND_MEETING,
    LOST,
    MINUTE_MS,
    NEW_BUSINESS,
    PRODUCTS,
    ROLE_AE,
    ROLE_MANAGER,
    STAGE_FORECAST,
    STAGE_PROBABILITY,
    WON,
    email_address,
    quarter_start,
)
from crm_kpi_worker.sandbox.dataset import (
    NULL_DAY,
    AccountTable,
    ActivityTable,
    CloseDateChangeTable,
    DealTable,
    QuotaTable,
    StageChangeTable,
    UserTable,
    add_months,
    date_to_day,
)
from crm_kpi_worker.sandbox.demo_scenario import INTEGRATION

# Filler accounts: "<Adjective> <Noun> [<Qualifier>] <legal suffix>", the suffix giving the
# country and the currency group.
_ADJECTIVES = (
    "Agile", "Alpine", "Atlantic", "Blue", "Bold", "Bright", "Central", "Civic", "Clear",
    "Coastal", "Cosmic", "Crimson", "Delta", "Digital", "Dynamic", "Eastern", "Electric",
    "Emerald", "Evergreen", "Falcon", "First", "Fusion", "Global", "Golden", "Grand", "Green",
    "Harbor", "Iron", "Lunar", "Meridian", "Modern", "Noble", "Northern", "Nova", "Open",
    "Orbit", "Pacific", "Pioneer", "Polar", "Prime", "Quantum", "Rapid", "Red", "Royal",
    "Silver", "Smart", "Solid", "Southern", "Sterling", "Stellar", "Summit", "Swift", "True",
    "United", "Urban", "Vertex", "Vivid", "Western", "White", "Wild",
)  # fmt: skip
_NOUNS = (
    "Analytics", "Apparel", "Bakery", "Biotech", "Brewing", "Builders", "Capital", "Cargo",
    "Chemicals", "Clinics", "Cloud", "Consulting", "Dairy", "Data", "Design", "Devices",
    "Dynamics", "Electronics", "Energy", "Engineering", "Foods", "Freight", "Furniture",
    "Games", "Health", "Hotels", "Imaging", "Insurance", "Labs", "Learning", "Leasing",
    "Logistics", "Machines", "Marine", "Media", "Metals", "Mining", "Mobility", "Motors",
    "Networks", "Optics", "Packaging", "Partners", "Payments", "Pharma", "Plastics", "Power",
    "Printing", "Properties", "Publishing", "Railways", "Realty", "Recycling", "Retail",
    "Robotics", "Security", "Semiconductors", "Shipping", "Software", "Solar", "Sports",
    "Steel", "Studios", "Supply", "Systems", "Telecom", "Textiles", "Tools", "Tourism",
    "Trading", "Transport", "Travel", "Ventures", "Vision", "Water", "Wellness", "Wind",
    "Wines", "Works", "Aerospace",
)  # fmt: skip
_QUALIFIERS = (
    "Group", "International", "Europe", "Services", "Solutions", "Holding", "Worldwide",
    "Associates", "Technologies", "Consolidated",
)  # fmt: skip
# Currency group (index into CURRENCIES) -> (legal suffix, ISO country) choices.
_SUFFIXES: tuple[tuple[tuple[str, str], ...], ...] = (
    (
        ("SAS", "FR"), ("SARL", "FR"), ("GmbH", "DE"), ("BV", "NL"), ("SpA", "IT"),
        ("SL", "ES"), ("NV", "BE"), ("Oy", "FI"),
    ),
    (("Inc", "US"), ("LLC", "US"), ("Corp", "US")),
    (("Ltd", "GB"), ("plc", "GB")),
    (("AG", "CH"), ("Sàrl", "CH")),
)  # fmt: skip
_CURRENCY_MIX = (0.75, 0.15, 0.08, 0.02)
_CHF_PER_EUR = 0.95  # only to make CHF amounts look plausible; not a rate the data set knows

# Filler people.
_FIRST_NAMES = (
    "Adam", "Agnes", "Ahmed", "Aisha", "Alexander", "Amelia", "Ana", "Andrea", "Anna",
    "Antoine", "Arthur", "Astrid", "Ben", "Camille", "Carlos", "Clara", "Daniel", "Diego",
    "Elena", "Elias", "Eva", "Felix", "Fiona", "Gabriel", "Hannah", "Hugo", "Inès", "Isabel",
    "Jakob", "James", "Jan", "Julia", "Julien", "Karim", "Laura", "Léa", "Leon", "Lucas",
    "Lucía", "Marco", "Maria", "Marta", "Matteo", "Maya", "Noah", "Nora", "Olivia", "Oscar",
    "Paul", "Pedro", "Priya", "Rafael", "Sara", "Simon", "Sofia", "Thomas", "Tom",
    "Valentina", "Victor", "Zoé",
)  # fmt: skip
_LAST_NAMES = (
    "Andersen", "Bauer", "Becker", "Bianchi", "Brown", "Castro", "Costa", "Da Silva",
    "De Vries", "Dijkstra", "Eriksson", "Esposito", "Fernández", "Fischer", "Ferrari", "Gallo",
    "Gómez", "Hansen", "Hoffmann", "Jansen", "Jensen", "Johansson", "Jones", "Keller", "Klein",
    "Koch", "Kowalski", "Larsen", "López", "Mancini", "Martínez", "Meyer", "Moretti", "Müller",
    "Murphy", "Nielsen", "Nowak", "O'Brien", "Olsen", "Peeters", "Pereira", "Peters", "Ricci",
    "Rodríguez", "Romano", "Rossi", "Sánchez", "Santos", "Schmidt", "Schneider", "Schulz",
    "Smith", "Taylor", "Van Dijk", "Wagner", "Walsh", "Weber", "Williams", "Wilson", "Wójcik",
)  # fmt: skip
_TEAM_REGIONS = (
    "DACH", "Benelux", "Nordics", "UK & Ireland", "Iberia", "Italia", "France Est",
    "France Ouest", "North America", "Switzerland",
)  # fmt: skip
AE_DEALS_PER_YEAR = 800
FILLER_YEARS = 2
TEAM_SIZE = 8


def _grouped_strict(times: np.ndarray, within: np.ndarray) -> None:
    """Make ``times`` strictly increasing inside each group, in place.

    Rows are sorted by group then time; ``within`` is each row's position inside its group
    (small: a deal has at most a handful of rows), so one vectorised pass per position does.
    """
    for position in range(1, int(within.max(initial=0)) + 1):
        rows = np.flatnonzero(within == position)
        times[rows] = np.maximum(times[rows], times[rows - 1] + 1)


# --------------------------------------------------------------------------------------------
# Column buffers


def _snap_weekday(days: np.ndarray, last_day: int) -> np.ndarray:
    """Saturday -> Friday, Sunday -> Monday (or Friday when Monday is after ``last_day``)."""
    dow = (days + 3) % 7
    out = days - (dow == 5)
    sunday = dow == 6
    monday_ok = days + 1 <= last_day
    out = np.where(sunday & monday_ok, days + 1, np.where(sunday, days - 2, out))
    return out


def _unique_account_names(
    rng: np.random.Generator, group: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Unique "<Adjective> <Noun> [<Qualifier>] <Suffix>" names; country from the suffix."""
    n = len(group)
    names = np.empty(n, dtype=object)
    countries = np.empty(n, dtype=object)
    adjectives = np.array(_ADJECTIVES, dtype=object)
    nouns = np.array([" " + x for x in _NOUNS], dtype=object)
    qualifiers = np.array([""] + [" " + x for x in _QUALIFIERS], dtype=object)
    for g, suffixes in enumerate(_SUFFIXES):
        where = np.flatnonzero(group == g)
        if not len(where):
            continue
        n_suffix = len(suffixes)
        base = len(_ADJECTIVES) * len(_NOUNS) * n_suffix
        copies = min(len(qualifiers), max(1, math.ceil(2 * len(where) / base)))
        if len(where) > base * copies:
            raise ValueError("too many accounts for the name lists")  # pragma: no cover
        pick = rng.choice(base * copies, size=len(where), replace=False)
        copy, rest = np.divmod(pick, base)
        pair, suffix = np.divmod(rest, n_suffix)
        adjective, noun = np.divmod(pair, len(_NOUNS))
        suffix_names = np.array([" " + s for s, _ in suffixes], dtype=object)
        suffix_countries = np.array([c for _, c in suffixes], dtype=object)
        names[where] = adjectives[adjective] + nouns[noun] + qualifiers[copy] + suffix_names[suffix]
        countries[where] = suffix_countries[suffix]
    return names, countries


def build_filler(
    rng: np.random.Generator,
    n: int,
    reference_date: dt.date,
    user_offset: int,
    account_offset: int,
    deal_offset: int,
) -> dict[str, Any]:
    """``n`` filler deals with their users, accounts, histories, activities and quotas.

    The offsets are the scenario's table sizes: filler rows refer to each other by their
    final (global) indexes. ``filler_aes`` in the answer is the range of the filler's AEs.
    """
    draft = _FillerDraft(rng, n, reference_date, user_offset)
    users = draft.draw_users()
    draft.draw_accounts()
    draft.draw_deals()
    draft.draw_stage_history()
    draft.draw_close_date_edits()
    draft.draw_last_modified_and_deletions()
    activities = draft.draw_activities(account_offset, deal_offset)
    stage_changes, close_date_changes = draft.history_tables(deal_offset)
    accounts = draft.draw_churn_and_accounts()
    quotas = draft.draw_quotas()
    deals = draft.deal_table(account_offset)
    return {
        "users": users,
        "accounts": accounts,
        "deals": deals,
        "stage_changes": stage_changes,
        "close_date_changes": close_date_changes,
        "activities": activities,
        "quotas": quotas,
        "filler_aes": (user_offset, user_offset + draft.n_ae),
    }


class _FillerDraft:
    """The filler's columns while they are drawn; each step adds some, drops what it used last."""

    def __init__(
        self, rng: np.random.Generator, n: int, reference_date: dt.date, user_offset: int
    ) -> None:
        self.rng = rng
        self.n = n
        self.reference_date = reference_date
        self.user_offset = user_offset
        self.ref_day = date_to_day(reference_date)
        self.end_ms = (self.ref_day + 1) * DAY_MS - 1
        # Deals are created over the 8 quarters ending on the reference date (2 years).
        self.first_q = add_months(quarter_start(reference_date), -3 * (4 * FILLER_YEARS - 1))
        self.window_start = date_to_day(self.first_q)

    def draw_users(self) -> UserTable:
        """AEs in teams of ~8, one manager per team."""
        rng, n, user_offset, window_start = self.rng, self.n, self.user_offset, self.window_start
        n_ae = max(1, round(n / (AE_DEALS_PER_YEAR * FILLER_YEARS)))
        n_teams = math.ceil(n_ae / TEAM_SIZE)
        n_users = n_ae + n_teams
        n_combos = len(_FIRST_NAMES) * len(_LAST_NAMES)
        if n_users > n_combos:
            raise ValueError("too many users for the name lists")  # pragma: no cover
        combo = rng.choice(n_combos, size=n_users, replace=False)
        first = [_FIRST_NAMES[i] for i in combo // len(_LAST_NAMES)]
        last = [_LAST_NAMES[i] for i in combo % len(_LAST_NAMES)]
        ae_team = np.arange(n_ae) % n_teams
        team_names = [
            f"{_TEAM_REGIONS[k % len(_TEAM_REGIONS)]} {k // len(_TEAM_REGIONS) + 1}"
            for k in range(n_teams)
        ]
        senior = rng.random(n_ae) < 0.2
        start_day = np.concatenate(
            [
                window_start - rng.integers(30, 1200, n_ae),
                window_start - rng.integers(400, 2500, n_teams),
            ]
        ).astype(np.int32)
        self.n_ae = n_ae
        return UserTable(
            first_name=first,
            last_name=last,
            email=[email_address(f, s) for f, s in zip(first, last, strict=True)],
            title=["Senior Account Executive" if s else "Account Executive" for s in senior]
            + ["Sales Manager"] * n_teams,
            role=np.array([ROLE_AE] * n_ae + [ROLE_MANAGER] * n_teams, dtype=np.int8),
            team=[team_names[t] for t in ae_team] + [None] * n_teams,
            manager=np.concatenate([user_offset + n_ae + ae_team, np.full(n_teams, -1)]).astype(
                np.int32
            ),
            is_active=np.ones(n_users, dtype=bool),
            start_day=start_day,
            created_at=start_day.astype(np.int64) * DAY_MS + 8 * HOUR_MS,
        )

    def draw_accounts(self) -> None:
        """Accounts (~1 per 4 deals), each owned by an AE; volume per AE varies."""
        rng, n, n_ae, window_start = self.rng, self.n, self.n_ae, self.window_start
        n_acc = max(1, math.ceil(n / 4))
        ae_weight = rng.gamma(4.0, 1.0, n_ae)
        ae_weight /= ae_weight.sum()
        acc_group = rng.choice(len(CURRENCIES), size=n_acc, p=_CURRENCY_MIX).astype(np.int8)
        self.acc_names, self.acc_country = _unique_account_names(rng, acc_group)
        self.acc_owner_local = rng.choice(n_ae, size=n_acc, p=ae_weight).astype(np.int32)
        self.acc_created = (window_start - rng.integers(10, 1500, n_acc)) * DAY_MS + rng.integers(
            7 * 60, 17 * 60, n_acc
        ) * MINUTE_MS
        self.n_acc, self.ae_weight, self.acc_group = n_acc, ae_weight, acc_group

    def draw_deals(self) -> None:
        """Each deal's creation, account, owner, outcome, amount, currency, type and product."""
        rng, n, n_ae, ref_day = self.rng, self.n, self.n_ae, self.ref_day
        created_day = np.sort(rng.integers(self.window_start, ref_day + 1, n))
        created_day = _snap_weekday(created_day, ref_day)
        self.created_day = created_day
        self.created_ms = created_day * DAY_MS + rng.integers(7 * 60, 17 * 60, n) * MINUTE_MS
        account = rng.integers(0, self.n_acc, n).astype(np.int32)
        owner_local = self.acc_owner_local[account]
        moved = np.flatnonzero(rng.random(n) < 0.1)
        owner_local[moved] = rng.choice(n_ae, size=len(moved), p=self.ae_weight)
        del moved
        owner = (owner_local + self.user_offset).astype(np.int32)
        unassigned = rng.random(n) < 0.002
        owner[unassigned] = INTEGRATION
        self.account, self.owner_local, self.owner, self.unassigned = (
            account,
            owner_local,
            owner,
            unassigned,
        )

        close_day = created_day + np.clip(np.rint(rng.gamma(2.0, 24.0, n)), 1, 540).astype(np.int64)
        dow = (close_day + 3) % 7
        close_day += (dow == 5) * 2 + (dow == 6)  # closes on weekdays
        del dow
        due = close_day <= ref_day
        win_p = np.clip(rng.normal(0.27, 0.05, n_ae), 0.12, 0.45)
        u = rng.random(n)
        won = due & (u < win_p[owner_local])
        lost = due & ~won & (u < 0.95)
        closed = won | lost
        del u, due
        open_stage = rng.choice(5, size=n, p=(0.2, 0.3, 0.25, 0.15, 0.1)).astype(np.int8)
        lost_reach = rng.choice(5, size=n, p=(0.15, 0.25, 0.3, 0.2, 0.1)).astype(np.int8)
        self.stage = np.where(won, np.int8(WON), np.where(lost, np.int8(LOST), open_stage)).astype(
            np.int8
        )
        self.n_rows = np.where(won, 6, np.where(lost, lost_reach + 2, open_stage + 1)).astype(
            np.int64
        )
        del open_stage, lost_reach
        self.close_day, self.won, self.closed = close_day, won, closed

        currency = self.acc_group[account]
        self.rate = np.array([FX_RATES.get(c, _CHF_PER_EUR) for c in CURRENCIES])
        amount = rng.lognormal(math.log(12000), 0.85, n)
        amount *= self.rate[currency]
        amount = np.maximum(500.0, np.rint(amount / 100) * 100)
        amount[rng.random(n) < 0.002] = np.nan
        self.currency, self.amount = currency, amount
        self.deal_type = rng.choice(len(DEAL_TYPES), size=n, p=(0.6, 0.25, 0.12, 0.03)).astype(
            np.int8
        )
        self.product = rng.choice(len(PRODUCTS), size=n, p=(0.4, 0.2, 0.15, 0.15, 0.1)).astype(
            np.int8
        )
        self.term = rng.choice(np.array([12, 24, 36], dtype=np.int16), size=n, p=(0.92, 0.05, 0.03))

    def draw_stage_history(self) -> None:
        """Row j of a deal is funnel stage j, except a closed deal's last row (its outcome)."""
        rng, n, n_rows, closed = self.rng, self.n, self.n_rows, self.closed
        total = int(n_rows.sum())
        row_start = np.cumsum(n_rows) - n_rows
        row_deal = np.repeat(np.arange(n, dtype=np.int32), n_rows)
        within = (np.arange(total, dtype=np.int64) - np.repeat(row_start, n_rows)).astype(np.int8)
        last_row = row_start + n_rows - 1
        row_stage = within.copy()
        row_stage[last_row[closed]] = self.stage[closed]
        close_ms = self.close_day * DAY_MS + rng.integers(15 * 60, 17 * 60, n) * MINUTE_MS
        # Times: cumulated exponential gaps, scaled to [created, end]; a closed deal's last row
        # is exactly its closing; an open deal keeps a trailing gap (time in its current stage).
        frac = rng.exponential(1.0, total)
        frac[row_start] = 0.0
        np.cumsum(frac, out=frac)
        frac -= np.repeat(frac[row_start], n_rows)
        span_units = frac[last_row] + np.where(closed, 0.0, rng.exponential(1.0, n))
        span_units[span_units == 0] = 1.0
        frac /= np.repeat(span_units, n_rows)
        del span_units
        frac *= np.repeat(
            (np.where(closed, close_ms, self.end_ms) - self.created_ms).astype(np.float64), n_rows
        )
        changed_at = frac.astype(np.int64)
        del frac
        changed_at += np.repeat(self.created_ms, n_rows)
        changed_at[last_row[closed]] = close_ms[closed]
        _grouped_strict(changed_at, within)
        del row_start, within
        del self.n_rows
        self.total, self.row_deal, self.row_stage = total, row_deal, row_stage
        self.last_row, self.close_ms, self.changed_at = last_row, close_ms, changed_at

    def draw_close_date_edits(self) -> None:
        """Close-date edits for ~10% of the deals (1-3 each, mostly later = slips), and the
        close date each stage row carries (the one in effect when it was written)."""
        rng, n, close_day, created_day = self.rng, self.n, self.close_day, self.created_day
        row_deal, changed_at = self.row_deal, self.changed_at
        edited = np.flatnonzero((rng.random(n) < 0.10) & (close_day - created_day >= 10))
        n_edits = rng.choice(np.array([1, 2, 3]), size=len(edited), p=(0.6, 0.3, 0.1))
        edit_deal = np.repeat(edited, n_edits).astype(np.int32)
        n_e = len(edit_deal)
        edit_start = np.cumsum(n_edits) - n_edits
        edit_within = np.arange(n_e) - np.repeat(edit_start, n_edits)
        limit_ms = np.where(self.closed[edited], changed_at[self.last_row[edited]], self.end_ms)
        first_ms = self.created_ms[edited]
        u = np.sort(edit_deal + rng.uniform(0.02, 0.92, n_e)) - edit_deal  # sorted inside a deal
        edit_ms = np.repeat(first_ms, n_edits) + (
            u * np.repeat(limit_ms - first_ms, n_edits).astype(np.float64)
        ).astype(np.int64)
        _grouped_strict(edit_ms, edit_within)
        max_delta = np.maximum(
            1, np.minimum(30, (close_day[edited] - created_day[edited] - 1) // 3)
        )
        delta = 1 + np.floor(rng.random(n_e) * np.repeat(max_delta, n_edits)).astype(np.int64)
        delta = np.where(rng.random(n_e) < 0.85, delta, -delta)  # some moved earlier
        cs = np.cumsum(delta)
        group_total = np.add.reduceat(delta, edit_start) if n_e else delta
        prefix_excl = cs - delta - np.repeat(cs[edit_start] - delta[edit_start], n_edits)
        suffix_incl = np.repeat(group_total, n_edits) - prefix_excl
        old_day = (np.repeat(close_day[edited], n_edits) - suffix_incl).astype(np.int32)
        new_day = (old_day + delta).astype(np.int32)
        del cs, prefix_excl, suffix_incl, u, limit_ms, first_ms, max_delta, delta, edit_within
        del self.created_day, created_day
        # Each stage row carries the close date in effect when it was written. Only the rows of
        # edited deals need a look-up; the others carry the final close date.
        row_close = close_day.astype(np.int32)[row_deal]
        if n_e:
            initial_close = close_day.astype(np.int32)
            initial_close[edited] = old_day[edit_start]
            has_edits = np.zeros(n, dtype=bool)
            has_edits[edited] = True
            rows = np.flatnonzero(has_edits[row_deal])
            edit_key = edit_deal.astype(np.int64) * KEY_SHIFT + edit_ms
            row_key = row_deal[rows].astype(np.int64) * KEY_SHIFT + changed_at[rows]
            pos = np.searchsorted(edit_key, row_key, side="right") - 1
            pos_c = np.maximum(pos, 0)
            applies = (pos >= 0) & (edit_deal[pos_c] == row_deal[rows])
            row_close[rows] = np.where(applies, new_day[pos_c], initial_close[row_deal[rows]])
            del initial_close, has_edits, rows, edit_key, row_key, pos, pos_c, applies
        del edited, n_edits, edit_start
        self.edit_deal, self.edit_ms, self.old_day, self.new_day = (
            edit_deal,
            edit_ms,
            old_day,
            new_day,
        )
        self.n_e, self.row_close = n_e, row_close

    def draw_last_modified_and_deletions(self) -> None:
        rng, n, end_ms = self.rng, self.n, self.end_ms
        last_modified = self.changed_at[self.last_row]
        del self.last_row
        if self.n_e:
            np.maximum.at(last_modified, self.edit_deal, self.edit_ms)
        bumped = np.flatnonzero(rng.random(n) < 0.15)
        last_modified[bumped] += (
            rng.random(len(bumped)) * (end_ms - last_modified[bumped])
        ).astype(np.int64)
        del bumped
        deleted = rng.random(n) < 0.01
        deleted_at = np.zeros(n, dtype=np.int64)
        deleted_at[deleted] = last_modified[deleted] + (
            rng.random(int(deleted.sum())) * (end_ms - last_modified[deleted])
        ).astype(np.int64)
        self.last_modified, self.deleted, self.deleted_at = last_modified, deleted, deleted_at

    def draw_activities(self, account_offset: int, deal_offset: int) -> ActivityTable:
        """Demos for deals that reached demo (the first when the stage was entered, follow-ups
        until the next stage), a discovery call for a quarter of the deals, a signature meeting
        for half of the won ones."""
        rng, n, total, end_ms = self.rng, self.n, self.total, self.end_ms
        row_deal, changed_at = self.row_deal, self.changed_at
        demo_rows = np.flatnonzero(self.row_stage == DEMO)
        nxt = np.minimum(demo_rows + 1, total - 1)
        has_next = (demo_rows + 1 < total) & (row_deal[nxt] == row_deal[demo_rows])
        demo_from = changed_at[demo_rows]
        demo_to = np.where(has_next, changed_at[nxt], end_ms)
        del nxt, has_next
        repeats = 1 + np.minimum(rng.poisson(0.6, len(demo_rows)), 3)
        demo_deal = np.repeat(row_deal[demo_rows], repeats)
        first_of = np.cumsum(repeats) - repeats
        frac = rng.random(len(demo_deal))
        frac[first_of] = 0.0
        demo_at = np.repeat(demo_from, repeats) + (
            frac * np.repeat(demo_to - demo_from, repeats).astype(np.float64)
        ).astype(np.int64)
        del frac, demo_from, demo_to, demo_rows, first_of, repeats
        calls = np.flatnonzero(rng.random(n) < 0.25)
        meetings = np.flatnonzero(self.won & (rng.random(n) < 0.5))
        act_deal = np.concatenate([demo_deal, calls, meetings]).astype(np.int32)
        act_kind = np.concatenate(
            [
                np.full(len(demo_deal), KIND_DEMO, dtype=np.int8),
                np.full(len(calls), KIND_CALL, dtype=np.int8),
                np.full(len(meetings), KIND_MEETING, dtype=np.int8),
            ]
        )
        act_start = np.concatenate([demo_at, self.created_ms[calls], self.close_ms[meetings]])
        del demo_deal, demo_at, calls, meetings, self.close_ms
        act_start //= DAY_MS
        act_start = _snap_weekday(act_start, self.ref_day)
        n_act = len(act_deal)
        act_start *= DAY_MS
        act_start += rng.integers(8 * 4, 16 * 4 + 1, n_act) * 15 * MINUTE_MS
        duration = np.where(
            act_kind == KIND_DEMO,
            rng.choice(np.array([45, 60], dtype=np.int16), size=n_act),
            np.where(act_kind == KIND_CALL, np.int16(30), np.int16(60)),
        ).astype(np.int16)
        act_created = act_start - rng.integers(1, 10 * 24, n_act) * HOUR_MS
        act_modified = act_start + duration.astype(np.int64) * MINUTE_MS
        act_modified += rng.integers(0, 120, n_act) * MINUTE_MS
        np.minimum(act_modified, end_ms, out=act_modified)
        act_owner = self.owner[act_deal]
        act_account = self.account[act_deal]
        act_account += np.int32(account_offset)
        act_deal += np.int32(deal_offset)
        return ActivityTable(
            owner=act_owner,
            deal=act_deal,
            account=act_account,
            kind=act_kind,
            start=act_start,
            duration_minutes=duration,
            created_at=act_created,
            last_modified=act_modified,
        )

    def history_tables(self, deal_offset: int) -> tuple[StageChangeTable, CloseDateChangeTable]:
        """Stage changes and close-date changes, with global deal indexes."""
        row_deal, row_stage = self.row_deal, self.row_stage
        stage_changes = StageChangeTable(
            deal=row_deal,
            stage=row_stage,
            changed_at=self.changed_at,
            amount=self.amount[row_deal],
            close_day=self.row_close,
            probability=STAGE_PROBABILITY[row_stage],
            forecast_category=STAGE_FORECAST[row_stage],
        )
        row_deal += np.int32(deal_offset)  # in place: the table holds this array
        del self.row_deal, self.row_stage, self.changed_at, self.row_close
        self.edit_deal += np.int32(deal_offset)
        close_date_changes = CloseDateChangeTable(
            deal=self.edit_deal, old_day=self.old_day, new_day=self.new_day, changed_at=self.edit_ms
        )
        del self.edit_deal, self.old_day, self.new_day, self.edit_ms
        return stage_changes, close_date_changes

    def draw_churn_and_accounts(self) -> AccountTable:
        """Churn: ~6% of customers (won new business) churn 20-400 days after the first win."""
        rng, n_acc, account = self.rng, self.n_acc, self.account
        first_win = np.full(n_acc, np.iinfo(np.int32).max, dtype=np.int64)
        new_won = self.won & (self.deal_type == NEW_BUSINESS) & ~self.deleted
        np.minimum.at(first_win, account[new_won], self.close_day[new_won])
        del new_won
        churn = first_win + rng.integers(20, 400, n_acc)
        churns = (
            (first_win < np.iinfo(np.int32).max)
            & (rng.random(n_acc) < 0.06)
            & (churn <= self.ref_day)
        )
        churn_day = np.where(churns, churn, NULL_DAY).astype(np.int32)
        acc_created = self.acc_created
        acc_modified = np.where(churns, churn * DAY_MS + 10 * HOUR_MS, acc_created)
        accounts = AccountTable(
            name=self.acc_names.tolist(),
            industry=np.array(INDUSTRIES, dtype=object)[
                rng.integers(0, len(INDUSTRIES), n_acc)
            ].tolist(),
            country=self.acc_country.tolist(),
            churn_day=churn_day,
            owner=(self.acc_owner_local + self.user_offset).astype(np.int32),
            created_at=acc_created.astype(np.int64),
            last_modified=np.maximum(acc_created, acc_modified).astype(np.int64),
        )
        del self.acc_names, self.acc_country
        return accounts

    def draw_quotas(self) -> QuotaTable:
        """Every filler AE, every quarter from the window's first to the next one, around the
        AE's expected bookings / 0.9 (share of the org's bookings that quarter)."""
        n_ae, currency, amount = self.n_ae, self.currency, self.amount
        starts = []
        current = self.first_q
        while current <= self.reference_date + dt.timedelta(days=1):
            starts.append(date_to_day(current))
            current = add_months(current, 3)
        starts_arr = np.array(starts, dtype=np.int64)
        nq = len(starts)
        credited = (
            self.won
            & ~self.deleted
            & ~self.unassigned
            & np.isin(self.deal_type, (NEW_BUSINESS, EXPANSION))
            & ~np.isnan(amount)
            & (currency != CURRENCIES.index("CHF"))
        )
        q_index = np.searchsorted(starts_arr, self.close_day[credited], side="right") - 1
        bookings = np.bincount(
            self.owner_local[credited].astype(np.int64) * nq + q_index,
            weights=amount[credited] / self.rate[currency[credited]],
            minlength=n_ae * nq,
        ).reshape(n_ae, nq)
        per_quarter = bookings.sum(axis=0)
        per_quarter[-1] = per_quarter[-5:-1].mean() if nq >= 5 else per_quarter.mean()
        total_bookings = bookings.sum()
        share = bookings.sum(axis=1) / total_bookings if total_bookings else np.full(n_ae, 1 / n_ae)
        expected = share[:, None] * per_quarter[None, :]
        noise = self.rng.lognormal(0.0, 0.08, (n_ae, nq))
        quota = np.maximum(1000.0, np.rint(expected * noise / 0.9 / 1000) * 1000).ravel()
        q_user = np.repeat(np.arange(n_ae) + self.user_offset, nq).astype(np.int32)
        q_start = np.tile(starts_arr, n_ae).astype(np.int32)
        q_created = (q_start.astype(np.int64) - 15) * DAY_MS + 9 * HOUR_MS
        return QuotaTable(
            user=q_user,
            period_start=q_start,
            period_months=np.full(len(q_user), 3, dtype=np.int8),
            amount=quota,
            created_at=q_created,
            last_modified=q_created.copy(),
        )

    def deal_table(self, account_offset: int) -> DealTable:
        account = self.account
        account += np.int32(account_offset)
        stage = self.stage
        return DealTable(
            owner=self.owner,
            account=account,
            product=self.product,
            created_at=self.created_ms,
            close_day=self.close_day.astype(np.int32),
            stage=stage,
            amount=self.amount,
            currency=self.currency,
            deal_type=self.deal_type,
            forecast_category=STAGE_FORECAST[stage],
            probability=STAGE_PROBABILITY[stage],
            term_months=self.term,
            is_deleted=self.deleted,
            deleted_at=self.deleted_at,
            last_modified=self.last_modified,
        )
