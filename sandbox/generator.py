"""Deterministic generator of the sandbox CRMs' data set.

``generate()`` always builds the KPIS.md "Demo scenario" (five AEs, a manager, an integration
user, five quarters of history up to the reference date and the next quarter's open pipeline),
then, when asked for more deals, appends vectorised filler with realistic distributions so the
data set has exactly the requested number of deals (up to a million).

Everything is drawn from ``np.random.default_rng(seed)`` (split into two independent streams:
one for the scenario, one for the filler), never from the global RNG or the clock, so the same
arguments always give identical arrays. The scenario does not depend on ``deals``: its rows are
the first rows of every table (before the activities' global sort by start) whatever the size.

``validate()`` checks the data set's invariants (lengths, dtypes, index ranges, sort orders,
timestamps bounds, NULL conventions, histories consistent with the deals).
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from collections import defaultdict
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np

from crm_kpi_worker.sandbox.dataset import (
    ACTIVITY_KINDS,
    DEAL_TYPES,
    FORECAST_CATEGORIES,
    NULL_DAY,
    STAGE_LEGACY,
    STAGE_LOST,
    STAGE_WON,
    STAGES,
    USER_ROLES,
    AccountTable,
    ActivityTable,
    CloseDateChangeTable,
    Dataset,
    DealTable,
    QuotaTable,
    StageChangeTable,
    UserTable,
    add_months,
    date_to_day,
)

__all__ = [
    "CURRENCIES",
    "DEFAULT_REFERENCE_DATE",
    "FX_RATES",
    "MAX_DEALS",
    "PRODUCTS",
    "REPORTING_CURRENCY",
    "generate",
    "validate",
]

DEFAULT_REFERENCE_DATE = dt.date(2026, 9, 30)
MAX_DEALS = 1_000_000
REPORTING_CURRENCY = "EUR"
CURRENCIES = ("EUR", "USD", "GBP", "CHF")
# Units of currency per 1 EUR. CHF deliberately has no rate: its deals cannot be converted.
FX_RATES = {"EUR": 1.0, "USD": 1.08, "GBP": 0.85}
PRODUCTS = (
    "Platform licence",
    "Analytics add-on",
    "Premium support",
    "Onboarding services",
    "API access",
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
_KEY_SHIFT = np.int64(1) << np.int64(42)  # > any ms timestamp before 2109: (deal, time) keys

PROSPECTING = STAGES.index("prospecting")
QUALIFICATION = STAGES.index("qualification")
DEMO = STAGES.index("demo")
PROPOSAL = STAGES.index("proposal")
NEGOTIATION = STAGES.index("negotiation")
WON, LOST, LEGACY = STAGE_WON, STAGE_LOST, STAGE_LEGACY
_FUNNEL = [PROSPECTING, QUALIFICATION, DEMO, PROPOSAL, NEGOTIATION]

NEW_BUSINESS = DEAL_TYPES.index("new_business")
EXPANSION = DEAL_TYPES.index("expansion")
RENEWAL = DEAL_TYPES.index("renewal")
OTHER = DEAL_TYPES.index("other")

KIND_DEMO = ACTIVITY_KINDS.index("demo")
KIND_CALL = ACTIVITY_KINDS.index("call")
KIND_MEETING = ACTIVITY_KINDS.index("meeting")

ROLE_AE = USER_ROLES.index("ae")
ROLE_MANAGER = USER_ROLES.index("manager")
ROLE_INTEGRATION = USER_ROLES.index("integration")


def _fc(name: str) -> int:
    return FORECAST_CATEGORIES.index(name)


# Per stage (STAGES order): probability in percent and forecast category. "legacy" is a stage
# no mapping knows: the CRM still has to hold something, we give it probability 0 / omitted.
STAGE_PROBABILITY = np.array([10, 20, 40, 60, 80, 100, 0, 0], dtype=np.float64)
STAGE_FORECAST = np.array(
    [_fc(n) for n in ("pipeline",) * 3 + ("best_case", "commit", "closed", "omitted", "omitted")],
    dtype=np.int8,
)
assert len(STAGE_PROBABILITY) == len(STAGE_FORECAST) == len(STAGES)

# ---------------------------------------------------------------------------------------------
# The demo scenario's people. Indexes are fixed: the five AEs first, then the manager and the
# integration user; filler users come after.
ALICE, BRUNO, CHLOE, DAVID, EMMA, SOPHIE, INTEGRATION = range(7)
_DEMO_USERS = (
    # first, last, email local part, title, role, team
    ("Alice", "Martin", "alice.martin", "Account Executive", ROLE_AE, "France Nord"),
    ("Bruno", "Lefèvre", "bruno.lefevre", "Account Executive", ROLE_AE, "France Nord"),
    ("Chloé", "Dubois", "chloe.dubois", "Account Executive", ROLE_AE, "France Nord"),
    ("David", "Moreau", "david.moreau", "Account Executive", ROLE_AE, "France Sud"),
    ("Emma", "Laurent", "emma.laurent", "Account Executive", ROLE_AE, "France Sud"),
    ("Sophie", "Bernard", "sophie.bernard", "Sales Manager France", ROLE_MANAGER, None),
    ("Integration", "User", "integration.user", "API Integration", ROLE_INTEGRATION, None),
)
_DEMO_START_OFFSETS = (1300, 1000, 800, 1500, 700, 2000, 2200)  # days before reference date
EMAIL_DOMAIN = "sandbox.local"

# Per AE and quarter offset (0 = scenario quarter, -1 = the one before, ...):
# (quota EUR or None, won quota-credited amounts in EUR, number of lost deals).
# Alice's scenario quarter is built separately (it is the contract); the amounts here are the
# "clean" deals: the special ones (other currencies, renewals, bad data) are added on top.
_PLAN: dict[int, dict[int, tuple[int | None, tuple[int, ...], int]]] = {
    ALICE: {
        -4: (100_000, (15000, 12000, 18000, 14000, 16000, 13000, 17000), 22),
        -3: (110_000, (14000, 16000, 12500, 15500, 13000, 17000, 11000), 24),
        -2: (110_000, (15000, 14000, 16000, 13000, 15000, 12000, 18000, 18000), 25),
        -1: (120_000, (14000, 15000, 13000, 16000, 12000, 17000, 14000, 11000), 26),
        0: (120_000, (15000,) * 10, 30),
    },
    BRUNO: {
        -4: (100_000, (20000, 15000, 18000, 22000), 15),
        -3: (100_000, (25000, 18000, 21000, 16000), 14),
        -2: (100_000, (19000, 22000, 24000), 16),
        -1: (100_000, (21000, 17000, 20000), 15),
        0: (100_000, (12000, 14000, 16000), 15),
    },
    CHLOE: {
        -4: (None, (11000, 13000, 9000, 14000), 12),
        -3: (None, (12000, 10000, 15000, 8000, 11000), 13),
        -2: (None, (13000, 9500, 12500, 16000), 12),
        -1: (None, (14000, 12000, 10000, 15000, 11000), 14),
        0: (None, (12500, 14000, 9000, 13000, 13000), 12),
    },
    DAVID: {
        -4: (90_000, (20000, 18000, 22000, 16000), 14),
        -3: (90_000, (21000, 19000, 25000, 17000), 13),
        -2: (90_000, (24000, 20000, 18000, 23000, 15000), 15),
        -1: (90_000, (22000, 19000, 21000, 24000), 14),
        0: (90_000, (18000, 16000, 14000), 12),
    },
    EMMA: {
        -4: (110_000, (18000, 22000, 20000, 25000, 19000), 16),
        -3: (110_000, (21000, 24000, 17000, 26000, 20000), 15),
        -2: (110_000, (23000, 19000, 22000, 18000, 24000, 15000), 17),
        -1: (110_000, (20000, 21000, 25000, 19000, 18000), 16),
        0: (110_000, (22000, 18000, 24000, 16000, 19000), 14),
    },
}
_NEXT_QUARTER_QUOTA = {ALICE: 125_000, BRUNO: 100_000, DAVID: 95_000, EMMA: 115_000}
# David's scenario-quarter deals in other currencies: (currency, amount, country). EUR value:
# 21,600 / 1.08 = 20,000 and 10,200 / 0.85 = 12,000.
_DAVID_FOREIGN = (("USD", 21600.0, "US"), ("GBP", 10200.0, "GB"))
# Demo activities per quarter (Alice's scenario quarter: 12 a week over 13 weeks).
_DEMO_TARGETS = {
    ALICE: {-4: 130, -3: 135, -2: 140, -1: 145, 0: 156},
    BRUNO: dict.fromkeys(range(-4, 1), 78),
    CHLOE: dict.fromkeys(range(-4, 1), 91),
    DAVID: dict.fromkeys(range(-4, 1), 78),
    EMMA: dict.fromkeys(range(-4, 1), 104),
}
_ALICE_CYCLES = (30, 35, 40, 45, 45, 45, 50, 50, 55, 55)  # mean exactly 45.0

_INDUSTRIES = (
    "Software",
    "Manufacturing",
    "Retail",
    "Financial services",
    "Healthcare",
    "Logistics",
    "Energy",
    "Media",
    "Education",
    "Public sector",
)
# Scenario accounts: "<Surname> <Sector>" (two words; filler names have three or more).
_SCENARIO_SURNAMES = (
    "Garnier", "Roux", "Fontaine", "Chevalier", "Mercier", "Blanc", "Guerin", "Boyer",
    "Gauthier", "Perrin", "Morel", "Girard", "Andre", "Rousseau", "Vincent", "Faure",
    "Lambert", "Bonnet", "Francois", "Legrand", "Garcia", "Clement", "Fournier", "Renaud",
    "Picard", "Roussel", "Lemaire", "Barbier", "Marchand", "Duval", "Brunet", "Colin",
    "Arnaud", "Gaillard", "Aubert", "Giraud", "Joly", "Rolland", "Caron", "Masson",
    "Lucas", "Meunier", "Dumont", "Huet", "Leclerc", "Noel", "Bertin", "Riviere",
    "Vidal", "Carpentier",
)  # fmt: skip
_SCENARIO_SECTORS = (
    "Conseil", "Industries", "Logistique", "Distribution", "Santé", "Énergie", "Finance",
    "Médias", "Technologies", "Bâtiment", "Transports", "Alimentaire", "Assurances", "Services",
)  # fmt: skip

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


# --------------------------------------------------------------------------------------------
# Calendar helpers


def _quarter_start(day: dt.date) -> dt.date:
    return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def _is_quarter_end(day: dt.date) -> bool:
    return day.month % 3 == 0 and (day + dt.timedelta(days=1)).day == 1


def _weekday(day: int) -> int:
    """0 = Monday for an epoch day (1970-01-01 was a Thursday)."""
    return (day + 3) % 7


def _strictly_increasing(values: list[int]) -> list[int]:
    out = sorted(values)
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + MINUTE_MS
    return out


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _email(first: str, last: str) -> str:
    return f"{_ascii_slug(first)}.{_ascii_slug(last)}@{EMAIL_DOMAIN}"


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


_T = TypeVar("_T")


def _concat(first: _T, second: _T) -> _T:
    """Concatenate two tables column by column, emptying both as it goes (bounded memory)."""
    values: dict[str, Any] = {}
    for f in fields(first):  # type: ignore[arg-type]
        a, b = getattr(first, f.name), getattr(second, f.name)
        setattr(first, f.name, None)
        setattr(second, f.name, None)
        values[f.name] = a + b if isinstance(a, list) else np.concatenate([a, b])
        del a, b
    return type(first)(**values)


def _take(table: _T, order: np.ndarray) -> _T:
    """Reorder a table's rows, emptying it column by column as it goes."""
    values: dict[str, Any] = {}
    for f in fields(table):  # type: ignore[arg-type]
        column = getattr(table, f.name)
        setattr(table, f.name, None)
        values[f.name] = [column[i] for i in order] if isinstance(column, list) else column[order]
        del column
    return type(table)(**values)


# --------------------------------------------------------------------------------------------
# The demo scenario (small: plain Python, a few hundred deals)


class _Scenario:
    def __init__(self, rng: np.random.Generator, reference_date: dt.date) -> None:
        self.rng = rng
        self.ref_day = date_to_day(reference_date)
        self.end_ms = (self.ref_day + 1) * DAY_MS - 1
        q0 = _quarter_start(reference_date)
        self.q: dict[int, tuple[int, int]] = {}
        for k in range(-4, 2):
            start = add_months(q0, 3 * k)
            self.q[k] = (date_to_day(start), date_to_day(add_months(start, 3)) - 1)
        names = [f"{a} {b}" for a in _SCENARIO_SURNAMES for b in _SCENARIO_SECTORS]
        self._names = [names[i] for i in rng.permutation(len(names))]
        self.acc: dict[str, list[Any]] = defaultdict(list)
        self.deals: dict[str, list[Any]] = defaultdict(list)
        self.rows: list[tuple[int, int, int, float, int]] = []  # deal, stage, ms, amount, close
        self.edits: list[tuple[int, int, int, int]] = []  # deal, old, new, ms
        self.demo_row: dict[int, int] = {}  # deal -> ms of its demo-stage entry
        self.deal_end: list[int] = []  # last day the deal was being worked (close or ref day)
        self.customers: dict[int, list[tuple[int, int]]] = defaultdict(list)  # (account, since)
        self.prospects: dict[int, list[int]] = defaultdict(list)
        self.churned: set[int] = set()
        self.activities: list[tuple[int, int, int, int, int, int]] = []
        self.quotas: list[tuple[int, int, float]] = []  # user, period start day, amount
        self.notes: dict[str, Any] = {}

    # -- small random helpers
    def pick(self, lo: int, hi: int) -> int:
        """A random weekday in [lo, hi] (any day if the range holds no weekday)."""
        if hi < lo:
            raise AssertionError(f"empty day range {lo}..{hi}")
        days = [d for d in range(lo, hi + 1) if _weekday(d) < 5] or list(range(lo, hi + 1))
        return days[int(self.rng.integers(len(days)))]

    def between(self, lo: int, hi: int, count: int) -> list[int]:
        return sorted(self.pick(lo, hi) for _ in range(count))

    def spread(self, qoff: int, i: int, n: int, margin: int = 2) -> int:
        """The i-th of n close dates spread over a quarter (weekdays, never after ref day)."""
        start, end = self.q[qoff]
        end = min(end, self.ref_day)
        target = start + int((i + 0.5) * (end - start + 1) / n)
        target = min(max(target, start + margin), end)
        return self.pick(max(start + margin, target - 2), min(end, target + 2))

    def amount(self, lo: int = 8000, hi: int = 30000) -> float:
        return float(self.rng.integers(lo // 500, hi // 500 + 1) * 500)

    def product(self) -> int:
        return int(self.rng.choice(len(PRODUCTS), p=(0.45, 0.2, 0.15, 0.1, 0.1)))

    # -- records
    def new_account(self, owner: int, first_day: int, country: str = "FR") -> int:
        index = len(self.acc["name"])
        self.acc["name"].append(self._names[index])
        self.acc["industry"].append(_INDUSTRIES[int(self.rng.integers(len(_INDUSTRIES)))])
        self.acc["country"].append(country)
        self.acc["churn_day"].append(int(NULL_DAY))
        self.acc["owner"].append(owner)
        self.acc["created_day"].append(first_day - int(self.rng.integers(5, 120)))
        return index

    def churn(self, account: int, day: int) -> None:
        assert day <= self.ref_day
        self.acc["churn_day"][account] = day
        self.churned.add(account)

    def account_for(
        self, owner: int, deal_type: int, start: int, country: str, won: bool
    ) -> tuple[int, int]:
        if deal_type in (EXPANSION, RENEWAL):
            candidates = [
                a for a, since in self.customers[owner] if since < start and a not in self.churned
            ]
            if candidates:
                return candidates[int(self.rng.integers(len(candidates)))], deal_type
            deal_type = NEW_BUSINESS
        if not won and country == "FR" and self.rng.random() < 0.3:
            candidates = [a for a in self.prospects[owner] if self.acc["created_day"][a] <= start]
            if candidates:
                return candidates[int(self.rng.integers(len(candidates)))], deal_type
        account = self.new_account(owner, start, country)
        if not won:
            self.prospects[owner].append(account)
        return account, deal_type

    def deal(
        self,
        owner: int,
        stages: list[int],
        days: list[int],
        close_path: list[int] | None,
        *,
        amount: float,
        currency: str = "EUR",
        country: str = "FR",
        deal_type: int = NEW_BUSINESS,
        account: int | None = None,
        term: int = 12,
        deleted_after_days: int | None = None,
        bump: bool = False,
    ) -> int:
        """One deal with its stage history (one row per entry in ``stages``, on ``days``) and
        its close-date edits (``close_path``: initial close date, then each edit's new date;
        None for a deal with no close date)."""
        rng = self.rng
        closed = stages[-1] in (WON, LOST)
        won = stages[-1] == WON
        if account is None:
            account, deal_type = self.account_for(owner, deal_type, days[0], country, won)
        close_path_or_none = close_path
        ms = [days[0] * DAY_MS + 9 * HOUR_MS]
        for i in range(1, len(days)):
            if closed and i == len(days) - 1:
                offset = 15 * HOUR_MS + int(rng.integers(0, 120)) * MINUTE_MS
            else:
                offset = 10 * HOUR_MS + int(rng.integers(0, 300)) * MINUTE_MS
            ms.append(days[i] * DAY_MS + offset)
        ms = _strictly_increasing(ms)
        assert ms[-1] <= self.end_ms
        index = len(self.deals["owner"])
        edit_ms: list[int] = []
        if close_path_or_none is not None and len(close_path_or_none) > 1:
            path = close_path_or_none
            limit = days[-1] - 1 if closed else self.ref_day
            previous = days[0]
            for k in range(1, len(path)):
                hi = min(path[k - 1] - 1, limit)
                day = self.pick(previous, hi) if hi >= previous else min(previous, limit)
                assert days[0] <= day <= limit
                edit_ms.append(day * DAY_MS + 17 * HOUR_MS + int(rng.integers(0, 60)) * MINUTE_MS)
                previous = day
            edit_ms = _strictly_increasing(edit_ms)
            for k, t in enumerate(edit_ms):
                self.edits.append((index, path[k], path[k + 1], t))
        for stage, t in zip(stages, ms, strict=True):
            if close_path_or_none is None:
                close = int(NULL_DAY)
            else:
                close = close_path_or_none[sum(1 for e in edit_ms if e <= t)]
            self.rows.append((index, stage, t, amount, close))
            if stage == DEMO:
                self.demo_row[index] = t
        last = max([ms[-1], *edit_ms])
        if bump:
            last = min(self.end_ms, last + int(rng.integers(2, 20 * 24)) * HOUR_MS)
        deleted_at = 0
        if deleted_after_days is not None:
            deleted_at = last + deleted_after_days * DAY_MS
            assert deleted_at <= self.end_ms
        final_close = int(NULL_DAY) if close_path_or_none is None else close_path_or_none[-1]
        stage = stages[-1]
        d = self.deals
        d["owner"].append(owner)
        d["account"].append(account)
        d["product"].append(self.product())
        d["created_at"].append(ms[0])
        d["close_day"].append(final_close)
        d["stage"].append(stage)
        d["amount"].append(amount)
        d["currency"].append(CURRENCIES.index(currency))
        d["deal_type"].append(deal_type)
        d["forecast_category"].append(int(STAGE_FORECAST[stage]))
        d["probability"].append(float(STAGE_PROBABILITY[stage]))
        d["term_months"].append(term)
        d["is_deleted"].append(deleted_after_days is not None)
        d["deleted_at"].append(deleted_at)
        d["last_modified"].append(last)
        self.deal_end.append(days[-1] if closed else self.ref_day)
        if won and deal_type == NEW_BUSINESS:
            self.customers[owner].append((account, days[-1]))
        return index

    def closed(
        self,
        owner: int,
        close: int,
        cycle: int,
        *,
        won: bool,
        amount: float,
        reach: int = NEGOTIATION,
        slip: list[int] | None = None,
        **kwargs: Any,
    ) -> int:
        start = close - cycle
        stages = [*_FUNNEL, WON] if won else [*_FUNNEL[: reach + 1], LOST]
        days = [start, *self.between(start + 1, close - 1, len(stages) - 2), close]
        return self.deal(owner, stages, days, slip or [close], amount=amount, **kwargs)

    def open_deal(
        self, owner: int, stage: int, created: int, close_path: list[int], **kwargs: Any
    ) -> int:
        stages = _FUNNEL[: stage + 1]
        days = [created, *self.between(created + 1, self.ref_day - 1, len(stages) - 1)]
        return self.deal(owner, stages, days, close_path, amount=self.amount(), **kwargs)

    def quarter(
        self,
        owner: int,
        qoff: int,
        won_amounts: tuple[int, ...],
        lost: int,
        won_options: dict[int, dict[str, Any]] | None = None,
        lost_options: dict[int, dict[str, Any]] | None = None,
    ) -> tuple[list[int], list[int]]:
        """A quarter of closed deals: won ones (one expansion after the first quarter)."""
        won_options = won_options or {}
        lost_options = lost_options or {}
        won_ids = []
        for i, amount in enumerate(won_amounts):
            options = dict(won_options.get(i, {}))
            close = self.spread(qoff, i, len(won_amounts))
            cycle = int(self.rng.integers(25, 81))
            deal_type = EXPANSION if i == 1 and qoff > -4 else NEW_BUSINESS
            slip = options.pop("slip", None)
            won_ids.append(
                self.closed(
                    owner,
                    close,
                    max(cycle, 30) if slip else cycle,
                    won=True,
                    amount=float(amount),
                    deal_type=deal_type,
                    slip=slip(close) if slip else None,
                    **options,
                )
            )
        lost_ids = []
        for i in range(lost):
            options = dict(lost_options.get(i, {}))
            close = self.spread(qoff, i, lost)
            cycle = int(self.rng.integers(15, 71))
            reach = int(self.rng.choice(4, p=(0.2, 0.4, 0.25, 0.15))) + QUALIFICATION
            deal_type = EXPANSION if self.rng.random() < 0.1 else NEW_BUSINESS
            slip = options.pop("slip", None)
            lost_ids.append(
                self.closed(
                    owner,
                    close,
                    max(cycle, 30) if slip else cycle,
                    won=False,
                    amount=self.amount(),
                    reach=reach,
                    deal_type=deal_type,
                    slip=slip(close) if slip else None,
                    **options,
                )
            )
        return won_ids, lost_ids

    # -- the story
    def build(self) -> None:
        q, ref = self.q, self.ref_day
        notes = self.notes
        slips: dict[int, int] = {}  # deal -> expected number of slips (later moves)
        history: dict[int, dict[int, tuple[list[int], list[int]]]] = defaultdict(dict)

        # ---- History quarters for every AE, oldest first (expansions need earlier customers).
        for qoff in (-4, -3, -2, -1):
            for ae in (ALICE, BRUNO, CHLOE, DAVID, EMMA):
                _, won_amounts, lost = _PLAN[ae][qoff]
                won_options: dict[int, dict[str, Any]] = {}
                if (ae, qoff) == (DAVID, -3):
                    won_options[0] = {"term": 36}
                if (ae, qoff) == (EMMA, -2):
                    won_options[2] = {"term": 24}
                if (ae, qoff) == (EMMA, -1):
                    won_options[0] = {"slip": lambda c: [c - 12, c]}
                history[ae][qoff] = self.quarter(ae, qoff, won_amounts, lost, won_options)
                if (ae, qoff) == (EMMA, -1):
                    slips[history[ae][qoff][0][0]] = 1
            # Retention: churn within 90 days of close (and one after 90 days: not churn).
            for ae, when, after in (
                (BRUNO, -4, 75),
                (EMMA, -3, 60),
                (ALICE, -2, 150),
                (DAVID, -2, 30),
                (ALICE, -1, 45),
            ):
                if when == qoff:
                    deal = history[ae][qoff][0][0 if ae != DAVID else 2]
                    account = self.deals["account"][deal]
                    self.churn(account, self.deals["close_day"][deal] + after)
                    notes.setdefault("churned_accounts", {})[account] = {
                        "won_deal": deal,
                        "days_after_close": after,
                    }
            if qoff == -2:
                # One lost renewal on the account of a won new-business deal, within 90 days.
                won_deal = history[DAVID][-2][0][0]
                account = self.deals["account"][won_deal]
                won_close = self.deals["close_day"][won_deal]
                close = self.pick(won_close + 76, won_close + 82)
                start = won_close + 30
                qual = self.pick(start + 1, start + 15)
                nego = self.pick(qual + 1, close - 3)
                renewal = self.deal(
                    DAVID,
                    [PROSPECTING, QUALIFICATION, NEGOTIATION, LOST],
                    [start, qual, nego, close],
                    [close],
                    amount=24000.0,
                    deal_type=RENEWAL,
                    account=account,
                )
                self.churned.add(account)
                notes["lost_renewal"] = {"deal": renewal, "account": account, "won_deal": won_deal}

        # ---- The scenario quarter.
        alice_won, alice_lost = self._alice_quarter(slips)
        notes["alice_won_deals"] = alice_won
        notes["alice_lost_deals"] = alice_lost
        notes["alice_scenario_deals"] = sorted(alice_won + alice_lost)

        bruno_won, bruno_lost = self.quarter(
            BRUNO,
            0,
            _PLAN[BRUNO][0][1],
            _PLAN[BRUNO][0][2],
            won_options={0: {"slip": lambda c: [c + 14, c]}},
            lost_options={0: {"slip": lambda c: [c - 15, c]}},
        )
        notes["moved_earlier_deal"] = bruno_won[0]
        slips[bruno_won[0]] = 0
        slips[bruno_lost[0]] = 1
        close = self.spread(0, 1, 3)
        start = close - 30
        qual = self.pick(start + 1, start + 10)
        renewal = self.deal(
            BRUNO,
            [PROSPECTING, QUALIFICATION, NEGOTIATION, WON],
            [start, qual, self.pick(qual + 1, close - 2), close],
            [close],
            amount=30000.0,
            deal_type=RENEWAL,
        )
        assert self.deals["deal_type"][renewal] == RENEWAL
        notes["won_renewal"] = renewal

        self.quarter(CHLOE, 0, _PLAN[CHLOE][0][1], _PLAN[CHLOE][0][2])
        overdue = [
            self.open_deal(CHLOE, PROPOSAL, q[0][0] + 5, [ref - 20]),
            self.open_deal(CHLOE, NEGOTIATION, q[-1][0] + 40, [ref - 8]),
        ]
        notes["overdue_open_deals"] = overdue

        self.quarter(DAVID, 0, _PLAN[DAVID][0][1], _PLAN[DAVID][0][2])
        foreign = {}
        for i, (currency, amount, country) in enumerate(_DAVID_FOREIGN):
            close = self.spread(0, i, 2, margin=15)
            foreign[currency] = self.closed(
                DAVID,
                close,
                int(self.rng.integers(30, 60)),
                won=True,
                amount=amount,
                currency=currency,
                country=country,
            )
        notes["foreign_currency_deals"] = foreign

        self.quarter(EMMA, 0, _PLAN[EMMA][0][1], _PLAN[EMMA][0][2])
        notes["bad_deals"] = self._bad_deals()

        unassigned = [
            self.closed(INTEGRATION, self.spread(0, 0, 2), 35, won=True, amount=13000.0),
            self.closed(INTEGRATION, self.spread(0, 1, 2), 28, won=False, amount=9000.0, reach=2),
        ]
        notes["unassigned_deals"] = unassigned

        # ---- Next quarter's open pipeline.
        notes["alice_open_deals"] = self._alice_open(slips)
        nq_start, nq_end = q[1]
        for ae in (BRUNO, CHLOE, DAVID, EMMA):
            for _ in range(5):
                stage = int(self.rng.integers(QUALIFICATION, NEGOTIATION + 1))
                created = self.pick(q[0][0] - 40, ref - 30)
                self.open_deal(ae, stage, created, [self.pick(nq_start + 5, nq_end - 5)])
        three = self.open_deal(
            DAVID, NEGOTIATION, self.pick(q[-1][0], q[-1][0] + 30), [ref - 30, ref - 10, ref + 15]
        )
        slips[three] = 2
        three = self.open_deal(
            DAVID,
            PROPOSAL,
            self.pick(q[-1][0], q[-1][0] + 30),
            [ref - 35, ref - 12, ref + 5, ref + 40],
        )
        slips[three] = 3
        notes["close_date_slips"] = slips

        # ---- Edited after creation (last_modified later than the last change).
        for i in range(len(self.deals["owner"])):
            if i % 9 == 4 and not self.deals["is_deleted"][i]:
                later = self.deals["last_modified"][i] + int(self.rng.integers(1, 240)) * HOUR_MS
                self.deals["last_modified"][i] = min(self.end_ms, later)

        # ---- Quotas (Chloé has none, anywhere).
        for ae, plan in _PLAN.items():
            for qoff, (quota, _, _) in plan.items():
                if quota is not None:
                    self.quotas.append((ae, q[qoff][0], float(quota)))
            if ae in _NEXT_QUARTER_QUOTA:
                self.quotas.append((ae, q[1][0], float(_NEXT_QUARTER_QUOTA[ae])))

        self._activities()

    def _alice_quarter(self, slips: dict[int, int]) -> tuple[list[int], list[int]]:
        start, end = self.q[0]
        last = min(end, self.ref_day) - 1
        won = []
        for k, cycle in enumerate(_ALICE_CYCLES):
            close = next(
                c
                for c in range(start + 18 + 7 * k, last + 1)
                if _weekday(c) < 5 and _weekday(c - cycle) < 5
            )
            created = close - cycle
            demo = self.pick(max(created + 3, start), close - 4)
            qual = self.pick(created + 1, demo - 1)
            proposal = self.pick(demo + 1, close - 2)
            nego = self.pick(proposal, close - 1)
            won.append(
                self.deal(
                    ALICE,
                    [*_FUNNEL, WON],
                    [created, qual, demo, proposal, nego, close],
                    [close - 21, close - 10, close] if k == 2 else [close],
                    amount=15000.0,
                    deal_type=EXPANSION if k in (3, 7) else NEW_BUSINESS,
                )
            )
        slips[won[2]] = 2
        lost = []
        for i in range(30):
            close = self.spread(0, i, 30, margin=10)
            created = close - int(self.rng.integers(20, 61))
            demo = self.pick(max(created + 2, start), close - 1)
            qual = self.pick(created + 1, demo - 1)
            lost.append(
                self.deal(
                    ALICE,
                    [PROSPECTING, QUALIFICATION, DEMO, LOST],
                    [created, qual, demo, close],
                    [close],
                    amount=self.amount(),
                    deal_type=EXPANSION if i % 10 == 9 else NEW_BUSINESS,
                )
            )
        for deal in won + lost:
            assert self.deals["deal_type"][deal] in (NEW_BUSINESS, EXPANSION)
        return won, lost

    def _alice_open(self, slips: dict[int, int]) -> list[int]:
        """Open deals closing next quarter; any demo entry is before the scenario quarter."""
        ref = self.ref_day
        prev_start, prev_end = self.q[-1]
        start = self.q[0][0]
        next_start, next_end = self.q[1]
        out = []
        specs = [
            (NEGOTIATION, [ref - 20, ref + 10, ref + 25]),
            (NEGOTIATION, None),
            (PROPOSAL, [ref + 5, ref + 30]),
            (PROPOSAL, None),
            (DEMO, None),
        ]
        for stage, path in specs:
            created = self.pick(prev_start + 5, prev_start + 40)
            demo = self.pick(created + 7, prev_end - 5)
            days = [created, self.pick(created + 1, demo - 1), demo]
            if stage >= PROPOSAL:
                days.append(self.pick(start, ref - 30))
            if stage == NEGOTIATION:
                days.append(self.pick(days[-1] + 1, ref - 3))
            close_path = path or [self.pick(next_start + 10, next_end - 5)]
            deal = self.deal(ALICE, _FUNNEL[: stage + 1], days, close_path, amount=self.amount())
            if path:
                slips[deal] = len(path) - 1
            out.append(deal)
        for _ in range(3):
            created = self.pick(start + 20, ref - 20)
            days = [created, self.pick(created + 1, ref - 2)]
            close = [self.pick(next_start + 20, next_end)]
            out.append(
                self.deal(ALICE, [PROSPECTING, QUALIFICATION], days, close, amount=self.amount())
            )
        return out

    def _bad_deals(self) -> dict[str, int]:
        start = self.q[0][0]
        ref = self.ref_day
        full = [*_FUNNEL, WON]

        def won_days(close: int, cycle: int) -> list[int]:
            created = close - cycle
            return [created, *self.between(created + 1, close - 1, 4), close]

        bad = {}
        close = self.pick(start + 20, start + 30)
        bad["no_amount"] = self.deal(EMMA, full, won_days(close, 40), [close], amount=float("nan"))
        close = self.pick(start + 35, start + 45)
        bad["no_close_date"] = self.deal(EMMA, full, won_days(close, 35), None, amount=17000.0)
        created = self.pick(start + 5, start + 15)
        qual = self.pick(created + 1, created + 10)
        bad["unknown_stage"] = self.deal(
            EMMA,
            [PROSPECTING, QUALIFICATION, LEGACY],
            [created, qual, self.pick(qual + 1, ref - 20)],
            [self.pick(start + 50, ref - 10)],
            amount=14000.0,
        )
        close = self.pick(start + 50, start + 60)
        bad["unconvertible_currency"] = self.deal(
            EMMA, full, won_days(close, 45), [close], amount=18000.0, currency="CHF", country="CH"
        )
        close = self.pick(start + 60, ref - 10)
        bad["deleted"] = self.deal(
            EMMA, full, won_days(close, 30), [close], amount=20000.0, deleted_after_days=3
        )
        return bad

    def _activities(self) -> None:
        rng = self.rng
        owner = self.deals["owner"]
        account = self.deals["account"]
        # One demo per deal that reached the demo stage, held just before the stage moved.
        for deal, t in self.demo_row.items():
            day = t // DAY_MS
            minutes = max(9 * 60, (t - day * DAY_MS) // MINUTE_MS - 60) // 15 * 15
            self._activity(owner[deal], deal, account[deal], KIND_DEMO, day, minutes, 60)
        # Extra demos (follow-ups, deal -1 when none of the rep's deals is in play that day).
        for ae, targets in _DEMO_TARGETS.items():
            deals = [i for i in self.demo_row if owner[i] == ae and not self.deals["is_deleted"][i]]
            for qoff, target in targets.items():
                start, end = self.q[qoff]
                end = min(end, self.ref_day)
                held = sum(
                    1
                    for a in self.activities
                    if a[0] == ae and a[3] == KIND_DEMO and start <= a[4] // DAY_MS <= end
                )
                for _ in range(max(0, target - held)):
                    day = self.pick(start, end)
                    live = [
                        i for i in deals if self.demo_row[i] // DAY_MS <= day <= self.deal_end[i]
                    ]
                    deal = live[int(rng.integers(len(live)))] if live else -1
                    minutes = int(rng.integers(8 * 4, 16 * 4 + 1)) * 15
                    acc = account[deal] if deal >= 0 else -1
                    self._activity(ae, deal, acc, KIND_DEMO, day, minutes, 45)
        # A discovery call the day each deal was created.
        for deal, created in enumerate(self.deals["created_at"]):
            day = created // DAY_MS
            self._activity(owner[deal], deal, account[deal], KIND_CALL, day, 9 * 60 + 15, 30)

    def _activity(
        self, owner: int, deal: int, account: int, kind: int, day: int, minutes: int, length: int
    ) -> None:
        start = day * DAY_MS + minutes * MINUTE_MS
        assert start + length * MINUTE_MS <= self.end_ms
        self.activities.append((owner, deal, account, kind, start, length))

    # -- tables
    def tables(self) -> dict[str, Any]:
        rng = self.rng
        ref_day = self.ref_day
        users = UserTable(
            first_name=[u[0] for u in _DEMO_USERS],
            last_name=[u[1] for u in _DEMO_USERS],
            email=[f"{u[2]}@{EMAIL_DOMAIN}" for u in _DEMO_USERS],
            title=[u[3] for u in _DEMO_USERS],
            role=np.array([u[4] for u in _DEMO_USERS], dtype=np.int8),
            team=[u[5] for u in _DEMO_USERS],
            manager=np.array([SOPHIE] * 5 + [-1, -1], dtype=np.int32),
            is_active=np.ones(len(_DEMO_USERS), dtype=bool),
            start_day=np.array([ref_day - d for d in _DEMO_START_OFFSETS], dtype=np.int32),
            created_at=np.array(
                [(ref_day - d) * DAY_MS + 8 * HOUR_MS for d in _DEMO_START_OFFSETS],
                dtype=np.int64,
            ),
        )
        acc = self.acc
        created = np.array(acc["created_day"], dtype=np.int64) * DAY_MS + 8 * HOUR_MS
        churn = np.array(acc["churn_day"], dtype=np.int32)
        modified = np.where(churn != NULL_DAY, churn.astype(np.int64) * DAY_MS + 10 * HOUR_MS, 0)
        accounts = AccountTable(
            name=list(acc["name"]),
            industry=list(acc["industry"]),
            country=list(acc["country"]),
            churn_day=churn,
            owner=np.array(acc["owner"], dtype=np.int32),
            created_at=created,
            last_modified=np.maximum(created, modified),
        )
        d = self.deals
        deals = DealTable(
            owner=np.array(d["owner"], dtype=np.int32),
            account=np.array(d["account"], dtype=np.int32),
            product=np.array(d["product"], dtype=np.int8),
            created_at=np.array(d["created_at"], dtype=np.int64),
            close_day=np.array(d["close_day"], dtype=np.int32),
            stage=np.array(d["stage"], dtype=np.int8),
            amount=np.array(d["amount"], dtype=np.float64),
            currency=np.array(d["currency"], dtype=np.int8),
            deal_type=np.array(d["deal_type"], dtype=np.int8),
            forecast_category=np.array(d["forecast_category"], dtype=np.int8),
            probability=np.array(d["probability"], dtype=np.float64),
            term_months=np.array(d["term_months"], dtype=np.int16),
            is_deleted=np.array(d["is_deleted"], dtype=bool),
            deleted_at=np.array(d["deleted_at"], dtype=np.int64),
            last_modified=np.array(d["last_modified"], dtype=np.int64),
        )
        rows = self.rows  # built deal by deal, times increasing: already sorted
        row_stage = np.array([r[1] for r in rows], dtype=np.int8)
        stage_changes = StageChangeTable(
            deal=np.array([r[0] for r in rows], dtype=np.int32),
            stage=row_stage,
            changed_at=np.array([r[2] for r in rows], dtype=np.int64),
            amount=np.array([r[3] for r in rows], dtype=np.float64),
            close_day=np.array([r[4] for r in rows], dtype=np.int32),
            probability=STAGE_PROBABILITY[row_stage],
            forecast_category=STAGE_FORECAST[row_stage],
        )
        edits = self.edits
        close_date_changes = CloseDateChangeTable(
            deal=np.array([e[0] for e in edits], dtype=np.int32),
            old_day=np.array([e[1] for e in edits], dtype=np.int32),
            new_day=np.array([e[2] for e in edits], dtype=np.int32),
            changed_at=np.array([e[3] for e in edits], dtype=np.int64),
        )
        acts = self.activities
        start = np.array([a[4] for a in acts], dtype=np.int64)
        length = np.array([a[5] for a in acts], dtype=np.int16)
        act_created = start - rng.integers(1, 10 * 24, len(acts)) * HOUR_MS
        act_modified = np.minimum(
            start
            + length.astype(np.int64) * MINUTE_MS
            + rng.integers(0, 120, len(acts)) * MINUTE_MS,
            self.end_ms,
        )
        activities = ActivityTable(
            owner=np.array([a[0] for a in acts], dtype=np.int32),
            deal=np.array([a[1] for a in acts], dtype=np.int32),
            account=np.array([a[2] for a in acts], dtype=np.int32),
            kind=np.array([a[3] for a in acts], dtype=np.int8),
            start=start,
            duration_minutes=length,
            created_at=act_created,
            last_modified=act_modified,
        )
        qs = self.quotas
        q_created = np.array([(p - 15) * DAY_MS + 9 * HOUR_MS for _, p, _ in qs], dtype=np.int64)
        quotas = QuotaTable(
            user=np.array([u for u, _, _ in qs], dtype=np.int32),
            period_start=np.array([p for _, p, _ in qs], dtype=np.int32),
            period_months=np.full(len(qs), 3, dtype=np.int8),
            amount=np.array([a for _, _, a in qs], dtype=np.float64),
            created_at=q_created,
            last_modified=q_created.copy(),
        )
        return {
            "users": users,
            "accounts": accounts,
            "deals": deals,
            "stage_changes": stage_changes,
            "close_date_changes": close_date_changes,
            "activities": activities,
            "quotas": quotas,
        }


# --------------------------------------------------------------------------------------------
# Filler (vectorised)


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


def _filler(
    rng: np.random.Generator,
    n: int,
    reference_date: dt.date,
    user_offset: int,
    account_offset: int,
    deal_offset: int,
) -> dict[str, Any]:
    ref_day = date_to_day(reference_date)
    end_ms = (ref_day + 1) * DAY_MS - 1
    # Deals are created over the 8 quarters ending on the reference date (2 years).
    first_q = add_months(_quarter_start(reference_date), -3 * (4 * FILLER_YEARS - 1))
    window_start = date_to_day(first_q)

    # ---- Users: AEs in teams of ~8, one manager per team.
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
    users = UserTable(
        first_name=first,
        last_name=last,
        email=[_email(f, s) for f, s in zip(first, last, strict=True)],
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

    # ---- Accounts (~1 per 4 deals), each owned by an AE; volume per AE varies.
    n_acc = max(1, math.ceil(n / 4))
    ae_weight = rng.gamma(4.0, 1.0, n_ae)
    ae_weight /= ae_weight.sum()
    acc_group = rng.choice(len(CURRENCIES), size=n_acc, p=_CURRENCY_MIX).astype(np.int8)
    acc_names, acc_country = _unique_account_names(rng, acc_group)
    acc_owner_local = rng.choice(n_ae, size=n_acc, p=ae_weight).astype(np.int32)
    acc_created = (window_start - rng.integers(10, 1500, n_acc)) * DAY_MS + rng.integers(
        7 * 60, 17 * 60, n_acc
    ) * MINUTE_MS

    # ---- Deals.
    created_day = np.sort(rng.integers(window_start, ref_day + 1, n))
    created_day = _snap_weekday(created_day, ref_day)
    created_ms = created_day * DAY_MS + rng.integers(7 * 60, 17 * 60, n) * MINUTE_MS
    account = rng.integers(0, n_acc, n).astype(np.int32)
    owner_local = acc_owner_local[account]
    moved = np.flatnonzero(rng.random(n) < 0.1)
    owner_local[moved] = rng.choice(n_ae, size=len(moved), p=ae_weight)
    del moved
    owner = (owner_local + user_offset).astype(np.int32)
    unassigned = rng.random(n) < 0.002
    owner[unassigned] = INTEGRATION

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
    stage = np.where(won, np.int8(WON), np.where(lost, np.int8(LOST), open_stage)).astype(np.int8)
    n_rows = np.where(won, 6, np.where(lost, lost_reach + 2, open_stage + 1)).astype(np.int64)
    del open_stage, lost_reach

    currency = acc_group[account]
    rate = np.array([FX_RATES.get(c, _CHF_PER_EUR) for c in CURRENCIES])
    amount = rng.lognormal(math.log(12000), 0.85, n)
    amount *= rate[currency]
    amount = np.maximum(500.0, np.rint(amount / 100) * 100)
    amount[rng.random(n) < 0.002] = np.nan
    deal_type = rng.choice(len(DEAL_TYPES), size=n, p=(0.6, 0.25, 0.12, 0.03)).astype(np.int8)
    product = rng.choice(len(PRODUCTS), size=n, p=(0.4, 0.2, 0.15, 0.15, 0.1)).astype(np.int8)
    term = rng.choice(np.array([12, 24, 36], dtype=np.int16), size=n, p=(0.92, 0.05, 0.03))

    # ---- Stage history: row j of a deal is funnel stage j, except a closed deal's last row.
    total = int(n_rows.sum())
    row_start = np.cumsum(n_rows) - n_rows
    row_deal = np.repeat(np.arange(n, dtype=np.int32), n_rows)
    within = (np.arange(total, dtype=np.int64) - np.repeat(row_start, n_rows)).astype(np.int8)
    last_row = row_start + n_rows - 1
    row_stage = within.copy()
    row_stage[last_row[closed]] = stage[closed]
    close_ms = close_day * DAY_MS + rng.integers(15 * 60, 17 * 60, n) * MINUTE_MS
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
    frac *= np.repeat((np.where(closed, close_ms, end_ms) - created_ms).astype(np.float64), n_rows)
    changed_at = frac.astype(np.int64)
    del frac
    changed_at += np.repeat(created_ms, n_rows)
    changed_at[last_row[closed]] = close_ms[closed]
    _grouped_strict(changed_at, within)
    del row_start, within, n_rows

    # ---- Close-date edits for ~10% of the deals (1-3 each, mostly later = slips).
    edited = np.flatnonzero((rng.random(n) < 0.10) & (close_day - created_day >= 10))
    n_edits = rng.choice(np.array([1, 2, 3]), size=len(edited), p=(0.6, 0.3, 0.1))
    edit_deal = np.repeat(edited, n_edits).astype(np.int32)
    n_e = len(edit_deal)
    edit_start = np.cumsum(n_edits) - n_edits
    edit_within = np.arange(n_e) - np.repeat(edit_start, n_edits)
    limit_ms = np.where(closed[edited], changed_at[last_row[edited]], end_ms)
    first_ms = created_ms[edited]
    u = np.sort(edit_deal + rng.uniform(0.02, 0.92, n_e)) - edit_deal  # sorted inside a deal
    edit_ms = np.repeat(first_ms, n_edits) + (
        u * np.repeat(limit_ms - first_ms, n_edits).astype(np.float64)
    ).astype(np.int64)
    _grouped_strict(edit_ms, edit_within)
    max_delta = np.maximum(1, np.minimum(30, (close_day[edited] - created_day[edited] - 1) // 3))
    delta = 1 + np.floor(rng.random(n_e) * np.repeat(max_delta, n_edits)).astype(np.int64)
    delta = np.where(rng.random(n_e) < 0.85, delta, -delta)  # some moved earlier
    cs = np.cumsum(delta)
    group_total = np.add.reduceat(delta, edit_start) if n_e else delta
    prefix_excl = cs - delta - np.repeat(cs[edit_start] - delta[edit_start], n_edits)
    suffix_incl = np.repeat(group_total, n_edits) - prefix_excl
    old_day = (np.repeat(close_day[edited], n_edits) - suffix_incl).astype(np.int32)
    new_day = (old_day + delta).astype(np.int32)
    del cs, prefix_excl, suffix_incl, u, limit_ms, first_ms, max_delta, delta, edit_within
    del created_day
    # Each stage row carries the close date in effect when it was written. Only the rows of
    # edited deals need a look-up; the others carry the final close date.
    row_close = close_day.astype(np.int32)[row_deal]
    if n_e:
        initial_close = close_day.astype(np.int32)
        initial_close[edited] = old_day[edit_start]
        has_edits = np.zeros(n, dtype=bool)
        has_edits[edited] = True
        rows = np.flatnonzero(has_edits[row_deal])
        edit_key = edit_deal.astype(np.int64) * _KEY_SHIFT + edit_ms
        row_key = row_deal[rows].astype(np.int64) * _KEY_SHIFT + changed_at[rows]
        pos = np.searchsorted(edit_key, row_key, side="right") - 1
        pos_c = np.maximum(pos, 0)
        applies = (pos >= 0) & (edit_deal[pos_c] == row_deal[rows])
        row_close[rows] = np.where(applies, new_day[pos_c], initial_close[row_deal[rows]])
        del initial_close, has_edits, rows, edit_key, row_key, pos, pos_c, applies
    del edited, n_edits, edit_start

    # ---- last_modified, deletions.
    last_modified = changed_at[last_row]
    del last_row
    if n_e:
        np.maximum.at(last_modified, edit_deal, edit_ms)
    bumped = np.flatnonzero(rng.random(n) < 0.15)
    last_modified[bumped] += (rng.random(len(bumped)) * (end_ms - last_modified[bumped])).astype(
        np.int64
    )
    del bumped
    deleted = rng.random(n) < 0.01
    deleted_at = np.zeros(n, dtype=np.int64)
    deleted_at[deleted] = last_modified[deleted] + (
        rng.random(int(deleted.sum())) * (end_ms - last_modified[deleted])
    ).astype(np.int64)

    # ---- Activities: demos for deals that reached demo (the first when the stage was
    # entered, follow-ups until the next stage), a discovery call for a quarter of the deals,
    # a signature meeting for half of the won ones.
    demo_rows = np.flatnonzero(row_stage == DEMO)
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
    meetings = np.flatnonzero(won & (rng.random(n) < 0.5))
    act_deal = np.concatenate([demo_deal, calls, meetings]).astype(np.int32)
    act_kind = np.concatenate(
        [
            np.full(len(demo_deal), KIND_DEMO, dtype=np.int8),
            np.full(len(calls), KIND_CALL, dtype=np.int8),
            np.full(len(meetings), KIND_MEETING, dtype=np.int8),
        ]
    )
    act_start = np.concatenate([demo_at, created_ms[calls], close_ms[meetings]])
    del demo_deal, demo_at, calls, meetings, close_ms
    act_start //= DAY_MS
    act_start = _snap_weekday(act_start, ref_day)
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
    act_owner = owner[act_deal]
    act_account = account[act_deal]
    act_account += np.int32(account_offset)
    act_deal += np.int32(deal_offset)
    activities = ActivityTable(
        owner=act_owner,
        deal=act_deal,
        account=act_account,
        kind=act_kind,
        start=act_start,
        duration_minutes=duration,
        created_at=act_created,
        last_modified=act_modified,
    )
    del act_owner, act_deal, act_account, act_kind, act_start, duration, act_created
    del act_modified

    # ---- Stage changes and close-date changes (global deal indexes).
    stage_changes = StageChangeTable(
        deal=row_deal,
        stage=row_stage,
        changed_at=changed_at,
        amount=amount[row_deal],
        close_day=row_close,
        probability=STAGE_PROBABILITY[row_stage],
        forecast_category=STAGE_FORECAST[row_stage],
    )
    row_deal += np.int32(deal_offset)
    del row_deal, row_stage, changed_at, row_close
    edit_deal += np.int32(deal_offset)
    close_date_changes = CloseDateChangeTable(
        deal=edit_deal, old_day=old_day, new_day=new_day, changed_at=edit_ms
    )
    del edit_deal, old_day, new_day, edit_ms

    # ---- Churn: ~6% of customers (won new business) churn 20-400 days after the first win.
    first_win = np.full(n_acc, np.iinfo(np.int32).max, dtype=np.int64)
    new_won = won & (deal_type == NEW_BUSINESS) & ~deleted
    np.minimum.at(first_win, account[new_won], close_day[new_won])
    del new_won
    churn = first_win + rng.integers(20, 400, n_acc)
    churns = (first_win < np.iinfo(np.int32).max) & (rng.random(n_acc) < 0.06) & (churn <= ref_day)
    churn_day = np.where(churns, churn, NULL_DAY).astype(np.int32)
    acc_modified = np.where(churns, churn * DAY_MS + 10 * HOUR_MS, acc_created)
    accounts = AccountTable(
        name=acc_names.tolist(),
        industry=np.array(_INDUSTRIES, dtype=object)[
            rng.integers(0, len(_INDUSTRIES), n_acc)
        ].tolist(),
        country=acc_country.tolist(),
        churn_day=churn_day,
        owner=(acc_owner_local + user_offset).astype(np.int32),
        created_at=acc_created.astype(np.int64),
        last_modified=np.maximum(acc_created, acc_modified).astype(np.int64),
    )
    del acc_names, acc_country, first_win, churn, churns, acc_modified

    # ---- Quotas: every filler AE, every quarter from the window's first to the next one,
    # around the AE's expected bookings / 0.9 (share of the org's bookings that quarter).
    starts = []
    current = first_q
    while current <= reference_date + dt.timedelta(days=1):
        starts.append(date_to_day(current))
        current = add_months(current, 3)
    starts_arr = np.array(starts, dtype=np.int64)
    nq = len(starts)
    credited = (
        won
        & ~deleted
        & ~unassigned
        & np.isin(deal_type, (NEW_BUSINESS, EXPANSION))
        & ~np.isnan(amount)
        & (currency != CURRENCIES.index("CHF"))
    )
    q_index = np.searchsorted(starts_arr, close_day[credited], side="right") - 1
    bookings = np.bincount(
        owner_local[credited].astype(np.int64) * nq + q_index,
        weights=amount[credited] / rate[currency[credited]],
        minlength=n_ae * nq,
    ).reshape(n_ae, nq)
    per_quarter = bookings.sum(axis=0)
    per_quarter[-1] = per_quarter[-5:-1].mean() if nq >= 5 else per_quarter.mean()
    total_bookings = bookings.sum()
    share = bookings.sum(axis=1) / total_bookings if total_bookings else np.full(n_ae, 1 / n_ae)
    expected = share[:, None] * per_quarter[None, :]
    noise = rng.lognormal(0.0, 0.08, (n_ae, nq))
    quota = np.maximum(1000.0, np.rint(expected * noise / 0.9 / 1000) * 1000).ravel()
    q_user = np.repeat(np.arange(n_ae) + user_offset, nq).astype(np.int32)
    q_start = np.tile(starts_arr, n_ae).astype(np.int32)
    q_created = (q_start.astype(np.int64) - 15) * DAY_MS + 9 * HOUR_MS
    quotas = QuotaTable(
        user=q_user,
        period_start=q_start,
        period_months=np.full(len(q_user), 3, dtype=np.int8),
        amount=quota,
        created_at=q_created,
        last_modified=q_created.copy(),
    )
    account += np.int32(account_offset)
    deals = DealTable(
        owner=owner,
        account=account,
        product=product,
        created_at=created_ms,
        close_day=close_day.astype(np.int32),
        stage=stage,
        amount=amount,
        currency=currency,
        deal_type=deal_type,
        forecast_category=STAGE_FORECAST[stage],
        probability=STAGE_PROBABILITY[stage],
        term_months=term,
        is_deleted=deleted,
        deleted_at=deleted_at,
        last_modified=last_modified,
    )
    return {
        "users": users,
        "accounts": accounts,
        "deals": deals,
        "stage_changes": stage_changes,
        "close_date_changes": close_date_changes,
        "activities": activities,
        "quotas": quotas,
        "filler_aes": (user_offset, user_offset + n_ae),
    }


# --------------------------------------------------------------------------------------------
# Public API


def generate(
    seed: int = 42, deals: int | None = None, reference_date: dt.date | None = None
) -> Dataset:
    """The sandbox data set: the KPIS.md demo scenario, plus filler up to ``deals`` deals.

    ``reference_date`` (default 2026-09-30) must be the last day of a calendar quarter: the
    scenario quarter is the quarter ending on it. ``deals=None`` gives the scenario alone;
    otherwise ``deals`` must be between the scenario's own deal count and ``MAX_DEALS``.
    """
    if reference_date is None:
        reference_date = DEFAULT_REFERENCE_DATE
    if isinstance(reference_date, dt.datetime) or not isinstance(reference_date, dt.date):
        raise TypeError(f"reference_date must be a datetime.date, got {reference_date!r}")
    if not _is_quarter_end(reference_date):
        raise ValueError(
            "reference_date must be the last day of a calendar quarter "
            f"(31 March, 30 June, 30 September or 31 December), got {reference_date.isoformat()}"
        )
    if deals is not None and (isinstance(deals, bool) or not isinstance(deals, int | np.integer)):
        raise TypeError(f"deals must be an integer or None, got {deals!r}")

    root = np.random.default_rng(seed)
    scenario_rng, filler_rng = root.spawn(2)
    scenario = _Scenario(scenario_rng, reference_date)
    scenario.build()
    tables = scenario.tables()
    minimum = len(tables["deals"])
    if deals is not None and not minimum <= deals <= MAX_DEALS:
        raise ValueError(
            f"deals must be between {minimum} (the demo scenario's own deal count) and "
            f"{MAX_DEALS:,}, got {deals}"
        )
    n_filler = 0 if deals is None else int(deals) - minimum
    notes = scenario.notes
    filler_aes = (len(tables["users"]), len(tables["users"]))
    if n_filler:
        filler = _filler(
            filler_rng,
            n_filler,
            reference_date,
            user_offset=len(tables["users"]),
            account_offset=len(tables["accounts"]),
            deal_offset=minimum,
        )
        filler_aes = filler.pop("filler_aes")
        for name, table in filler.items():
            tables[name] = _concat(tables[name], table)
    activities = tables["activities"]
    tables["activities"] = _take(activities, np.argsort(activities.start, kind="stable"))

    q = scenario.q
    notes.update(
        {
            "scenario_quarter": (_day(q[0][0]), _day(q[0][1])),
            "next_quarter": (_day(q[1][0]), _day(q[1][1])),
            "history_quarters": [(_day(q[k][0]), _day(q[k][1])) for k in (-4, -3, -2, -1)],
            "alice": ALICE,
            "bruno": BRUNO,
            "chloe": CHLOE,
            "david": DAVID,
            "emma": EMMA,
            "manager": SOPHIE,
            "integration_user": INTEGRATION,
            "scenario_deal_count": minimum,
            "filler_aes": filler_aes,
            "plan": {
                key: {
                    qoff: {"quota": quota, "won_amounts": list(amounts), "lost": lost}
                    for qoff, (quota, amounts, lost) in _PLAN[ae].items()
                }
                for key, ae in (
                    ("alice", ALICE),
                    ("bruno", BRUNO),
                    ("chloe", CHLOE),
                    ("david", DAVID),
                    ("emma", EMMA),
                )
            },
            "alice_scenario_quarter": {
                "quota": 120_000.0,
                "bookings_arr": 150_000.0,
                "quota_attainment": 1.25,
                "deals_won": 10,
                "deals_lost": 30,
                "win_rate": 0.25,
                "conversion_rate": 0.25,
                "avg_deal_size": 15_000.0,
                "sales_cycle_days": 45.0,
                "demo_activities": _DEMO_TARGETS[ALICE][0],
            },
        }
    )
    return Dataset(
        seed=seed,
        reference_date=reference_date,
        reporting_currency=REPORTING_CURRENCY,
        currencies=list(CURRENCIES),
        fx_rates=dict(FX_RATES),
        products=list(PRODUCTS),
        notes=notes,
        **tables,
    )


def _day(day: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(day))


# --------------------------------------------------------------------------------------------
# Validation

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
    problems: list[str] = []
    add = problems.append

    # Shapes and dtypes first: everything below assumes them.
    for name, dtypes in _DTYPES.items():
        table = getattr(dataset, name)
        lengths = {f.name: len(getattr(table, f.name)) for f in fields(table)}
        if len(set(lengths.values())) > 1:
            add(f"{name}: columns of different lengths {lengths}")
        for column, dtype in dtypes.items():
            values = getattr(table, column)
            if not isinstance(values, np.ndarray) or values.dtype != dtype:
                got = getattr(values, "dtype", type(values).__name__)
                add(f"{name}.{column}: expected {np.dtype(dtype)}, got {got}")
    if problems:
        return problems

    ds = dataset
    users, accounts, deals = ds.users, ds.accounts, ds.deals
    n_users, n_accounts, n_deals = len(users), len(accounts), len(deals)
    ref_end = (date_to_day(ds.reference_date) + 1) * DAY_MS - 1

    def check(condition: np.ndarray | bool, message: str) -> None:
        bad = np.asarray(condition)
        if bad.ndim == 0:
            if not bool(bad):
                add(message)
        elif not bad.all():
            add(f"{message} ({int((~bad).sum())} rows, first at {int(np.argmin(bad))})")

    def index(values: np.ndarray, size: int, message: str, allow_none: bool = False) -> bool:
        before = len(problems)
        low = -1 if allow_none else 0
        check((values >= low) & (values < size), message)
        return len(problems) == before

    # Data set level.
    check(ds.currencies[:1] == [ds.reporting_currency], "currencies[0] is not the reporting one")
    check(ds.fx_rates.get(ds.reporting_currency) == 1.0, "reporting currency rate is not 1.0")
    check(set(ds.fx_rates) <= set(ds.currencies), "fx_rates has a code outside currencies")
    check(0 < len(ds.products) <= 127, "products: 1..127 expected")
    check(_is_quarter_end(ds.reference_date), "reference_date is not a quarter end")

    # Users.
    index(users.role, len(USER_ROLES), "users.role out of range")
    index(users.manager, n_users, "users.manager out of range", allow_none=True)
    check(users.manager != np.arange(n_users), "a user manages themself")
    check(len(set(users.email)) == n_users, "users.email not unique")
    is_ae = users.role == ROLE_AE
    has_team = np.array([t is not None for t in users.team], dtype=bool)
    check(has_team == is_ae, "users.team must be set for AEs and None otherwise")

    # Accounts.
    index(accounts.owner, n_users, "accounts.owner out of range")
    check(len(set(accounts.name)) == n_accounts, "accounts.name not unique")
    check(accounts.last_modified >= accounts.created_at, "accounts.last_modified < created_at")
    check(
        (accounts.churn_day == NULL_DAY)
        | (accounts.churn_day.astype(np.int64) * DAY_MS <= ref_end),
        "accounts.churn_day after the reference date",
    )

    # Deals.
    index(deals.owner, n_users, "deals.owner out of range")
    deal_account_ok = index(deals.account, n_accounts, "deals.account out of range")
    index(deals.product, len(ds.products), "deals.product out of range")
    stage_ok = index(deals.stage, len(STAGES), "deals.stage out of range")
    index(deals.currency, len(ds.currencies), "deals.currency out of range")
    index(deals.deal_type, len(DEAL_TYPES), "deals.deal_type out of range")
    index(deals.forecast_category, len(FORECAST_CATEGORIES), "deals.forecast_category out of range")
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
    if stage_ok:
        check(deals.probability == STAGE_PROBABILITY[deals.stage], "deals.probability vs stage")
        check(deals.forecast_category == STAGE_FORECAST[deals.stage], "deals.forecast vs stage")
    created_day = deals.created_at // DAY_MS
    closed = np.isin(deals.stage, (WON, LOST))
    check(
        ~closed | (deals.close_day == NULL_DAY) | (deals.close_day >= created_day),
        "closed deal closes before it was created",
    )

    def histories() -> None:
        """Stage and close-date histories (skipped past a broken index)."""
        # Stage changes.
        sc = ds.stage_changes
        sc_ok = index(sc.deal, n_deals, "stage_changes.deal out of range")
        sc_ok &= index(sc.stage, len(STAGES), "stage_changes.stage out of range")
        if not (sc_ok and stage_ok):
            return
        key_ok = (np.diff(sc.deal) > 0) | ((np.diff(sc.deal) == 0) & (np.diff(sc.changed_at) > 0))
        check(key_ok, "stage_changes not sorted by (deal, changed_at) strictly")
        counts = np.bincount(sc.deal, minlength=n_deals)
        before = len(problems)
        check(counts > 0, "deal without a stage change (creation row)")
        if len(problems) == before:
            first = np.cumsum(counts) - counts
            last = first + counts - 1
            check(sc.changed_at[first] == deals.created_at, "first stage change != deal created_at")
            check(sc.stage[last] == deals.stage, "last stage change != deal stage")
            check(deals.last_modified >= sc.changed_at[last], "deals.last_modified < a change")
            check(
                ~closed
                | (sc.changed_at[last] // DAY_MS == deals.close_day)
                | (deals.close_day == NULL_DAY),
                "closing stage change not on the close date",
            )
        check(sc.probability == STAGE_PROBABILITY[sc.stage], "stage_changes.probability vs stage")
        check(sc.forecast_category == STAGE_FORECAST[sc.stage], "stage_changes.forecast vs stage")
        check(sc.changed_at <= ref_end, "stage change after the reference date")

        # Close-date changes.
        cd = ds.close_date_changes
        if not index(cd.deal, n_deals, "close_date_changes.deal out of range"):
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
            edit_key = cd.deal.astype(np.int64) * _KEY_SHIFT + cd.changed_at
            row_key = sc.deal.astype(np.int64) * _KEY_SHIFT + sc.changed_at
            pos = np.searchsorted(edit_key, row_key, side="right") - 1
            pos_c = np.maximum(pos, 0)
            applies = (pos >= 0) & (cd.deal[pos_c] == sc.deal)
            expected = np.where(applies, cd.new_day[pos_c], initial[sc.deal])
        else:
            expected = initial[sc.deal]
        check(sc.close_day == expected, "stage_changes.close_day != close date in effect")

    histories()

    # Activities.
    act = ds.activities
    index(act.owner, n_users, "activities.owner out of range")
    act_ok = index(act.deal, n_deals, "activities.deal out of range", allow_none=True)
    act_ok &= index(act.account, n_accounts, "activities.account out of range", allow_none=True)
    index(act.kind, len(ACTIVITY_KINDS), "activities.kind out of range")
    check(np.diff(act.start) >= 0, "activities not sorted by start")
    check(act.duration_minutes > 0, "activities.duration_minutes not positive")
    check(act.last_modified >= act.created_at, "activities.last_modified < created_at")
    check(act.last_modified <= ref_end, "activities.last_modified after the reference date")
    if act_ok and deal_account_ok:
        linked = act.deal >= 0
        check(
            act.account[linked] == deals.account[act.deal[linked]],
            "activity account != its deal's account",
        )

    # Quotas.
    qt = ds.quotas
    index(qt.user, n_users, "quotas.user out of range")
    starts = qt.period_start.astype("datetime64[D]")
    check(starts == starts.astype("datetime64[M]").astype("datetime64[D]"), "quota period not 1st")
    check((qt.period_months >= 1) & (qt.period_months <= 12), "quotas.period_months not 1..12")
    check(np.isfinite(qt.amount) & (qt.amount >= 0), "quotas.amount not a finite amount >= 0")
    check(qt.last_modified >= qt.created_at, "quotas.last_modified < created_at")
    keys = set(
        zip(qt.user.tolist(), qt.period_start.tolist(), qt.period_months.tolist(), strict=True)
    )
    check(len(keys) == len(qt), "duplicate quota (user, period_start, period_months)")
    return problems
