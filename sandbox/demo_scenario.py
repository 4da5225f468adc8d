"""The KPIS.md "Demo scenario": five AEs, their manager and an integration user, five quarters
of history up to the reference date and the next quarter's open pipeline.

Small (a few hundred deals) and built in plain Python, deal by deal, so every number the demo
promises (Alice's 125 % attainment, Bruno's slips, David's foreign currencies, the bad-data
deals...) is set explicitly. Every draw comes from the scenario's own random stream, so its rows
are the same whatever the filler appends after them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import numpy as np

from crm_kpi_worker.sandbox.catalog import (
    CURRENCIES,
    DAY_MS,
    DEMO,
    EMAIL_DOMAIN,
    EXPANSION,
    FUNNEL,
    HOUR_MS,
    INDUSTRIES,
    KIND_CALL,
    KIND_DEMO,
    LEGACY,
    LOST,
    MINUTE_MS,
    NEGOTIATION,
    NEW_BUSINESS,
    PRODUCTS,
    PROPOSAL,
    PROSPECTING,
    QUALIFICATION,
    RENEWAL,
    ROLE_AE,
    ROLE_INTEGRATION,
    ROLE_MANAGER,
    STAGE_FORECAST,
    STAGE_PROBABILITY,
    WON,
    quarter_start,
    weekday,
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


def _strictly_increasing(values: list[int]) -> list[int]:
    out = sorted(values)
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + MINUTE_MS
    return out


class DemoScenario:
    def __init__(self, rng: np.random.Generator, reference_date: dt.date) -> None:
        self.rng = rng
        self.ref_day = date_to_day(reference_date)
        self.end_ms = (self.ref_day + 1) * DAY_MS - 1
        q0 = quarter_start(reference_date)
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
        days = [d for d in range(lo, hi + 1) if weekday(d) < 5] or list(range(lo, hi + 1))
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
        self.acc["industry"].append(INDUSTRIES[int(self.rng.integers(len(INDUSTRIES)))])
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
        stages = [*FUNNEL, WON] if won else [*FUNNEL[: reach + 1], LOST]
        days = [start, *self.between(start + 1, close - 1, len(stages) - 2), close]
        return self.deal(owner, stages, days, slip or [close], amount=amount, **kwargs)

    def open_deal(
        self, owner: int, stage: int, created: int, close_path: list[int], **kwargs: Any
    ) -> int:
        stages = FUNNEL[: stage + 1]
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
        """The whole story, in the order its draws were first made (reordering changes data)."""
        slips: dict[int, int] = {}  # deal -> expected number of slips (later moves)
        self._history_quarters(slips)
        self._scenario_quarter(slips)
        self._next_quarter_pipeline(slips)
        self.notes["close_date_slips"] = slips
        self._edits_after_creation()
        self._quotas()
        self._activities()

    def _history_quarters(self, slips: dict[int, int]) -> None:
        """Every AE's four history quarters, oldest first (expansions need earlier customers)."""
        history: dict[int, dict[int, tuple[list[int], list[int]]]] = defaultdict(dict)
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
            self._churns(qoff, history)
            if qoff == -2:
                self._lost_renewal(history[DAVID][-2][0][0])

    def _churns(
        self, qoff: int, history: dict[int, dict[int, tuple[list[int], list[int]]]]
    ) -> None:
        """Retention: churn within 90 days of close (and one after 90 days: not churn)."""
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
                self.notes.setdefault("churned_accounts", {})[account] = {
                    "won_deal": deal,
                    "days_after_close": after,
                }

    def _lost_renewal(self, won_deal: int) -> None:
        """One lost renewal on the account of a won new-business deal, within 90 days."""
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
        self.notes["lost_renewal"] = {
            "deal": renewal,
            "account": account,
            "won_deal": won_deal,
        }

    def _scenario_quarter(self, slips: dict[int, int]) -> None:
        q, ref = self.q, self.ref_day
        notes = self.notes
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

    def _next_quarter_pipeline(self, slips: dict[int, int]) -> None:
        q, ref = self.q, self.ref_day
        self.notes["alice_open_deals"] = self._alice_open(slips)
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

    def _edits_after_creation(self) -> None:
        """Some deals edited after their last change (last_modified later than it)."""
        for i in range(len(self.deals["owner"])):
            if i % 9 == 4 and not self.deals["is_deleted"][i]:
                later = self.deals["last_modified"][i] + int(self.rng.integers(1, 240)) * HOUR_MS
                self.deals["last_modified"][i] = min(self.end_ms, later)

    def _quotas(self) -> None:
        """Quotas per AE and quarter (Chloé has none, anywhere)."""
        q = self.q
        for ae, plan in _PLAN.items():
            for qoff, (quota, _, _) in plan.items():
                if quota is not None:
                    self.quotas.append((ae, q[qoff][0], float(quota)))
            if ae in _NEXT_QUARTER_QUOTA:
                self.quotas.append((ae, q[1][0], float(_NEXT_QUARTER_QUOTA[ae])))

    def _alice_quarter(self, slips: dict[int, int]) -> tuple[list[int], list[int]]:
        start, end = self.q[0]
        last = min(end, self.ref_day) - 1
        won = []
        for k, cycle in enumerate(_ALICE_CYCLES):
            close = next(
                c
                for c in range(start + 18 + 7 * k, last + 1)
                if weekday(c) < 5 and weekday(c - cycle) < 5
            )
            created = close - cycle
            demo = self.pick(max(created + 3, start), close - 4)
            qual = self.pick(created + 1, demo - 1)
            proposal = self.pick(demo + 1, close - 2)
            nego = self.pick(proposal, close - 1)
            won.append(
                self.deal(
                    ALICE,
                    [*FUNNEL, WON],
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
            deal = self.deal(ALICE, FUNNEL[: stage + 1], days, close_path, amount=self.amount())
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
        full = [*FUNNEL, WON]

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

    def facts(self, deal_count: int, filler_aes: tuple[int, int]) -> dict[str, Any]:
        """What the scenario promises (quarters, people, plan, Alice's KPIs), for the data
        set's notes; ``deal_count`` and ``filler_aes`` come from the assembled data set."""
        q = self.q
        return {
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
            "scenario_deal_count": deal_count,
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


def _day(day: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(day))
