"""How the engine reads KPIS.md where it is silent, and what every empty-value reason means.

:data:`KPI_NOTES` is Markdown for the README; :data:`EMPTY_REASONS` explains the reason codes
found in ``KpiRow.empty_reasons`` (for the CLI's "explain every empty").
"""

from __future__ import annotations

__all__ = ["EMPTY_REASONS", "KPI_NOTES"]

#: Reason code -> one line for a person.
EMPTY_REASONS: dict[str, str] = {
    "no_closed_deal": "no deal won or lost with a close date in the period (to date)",
    "no_won_deal": "no deal won with a close date in the period (to date)",
    "no_credited_won_deal_with_arr": (
        "deals were won, but none of a quota-credited type with a known ARR"
    ),
    "no_cycle_data": (
        "deals were won, but none with a usable cycle (cycle-start stage never entered, or"
        " closed before it started)"
    ),
    "no_quota": "no quota covers the period for this rep (or for any rep of the team/org)",
    "quota_zero": "the quota for the period is 0 (e.g. a ramp quota before the start date)",
    "nothing_remaining": "the quota is already met: nothing remains to cover",
    "no_closed_entry_deal": (
        "no deal that entered the conversion entry stage in the period is closed yet"
    ),
    "no_activity_mapping": "demo activities are not mapped in the config",
    "not_current_period": (
        "pipeline velocity is a point-in-time value, computed for the periods containing as_of"
        " only; keep the value written while this period was current"
    ),
    "no_trailing_closed_deal": "no deal closed in the trailing window (no win rate)",
    "no_trailing_won_deal": (
        "no quota-credited deal with a known ARR won in the trailing window (no deal size)"
    ),
    "no_trailing_cycle": "no won deal with a usable cycle in the trailing window",
    "cycle_zero": "the trailing sales cycle is 0 days",
    "no_churn_signal": "neither a churn-date field nor renewal deals are mapped",
    "no_eligible_customer": ("no customer won in the period closed at least 90 days before as_of"),
    "period_not_ended": "the period has not ended yet",
    "no_snapshot": "no commit forecast was stored for this period (see snapshot_day)",
    "no_bookings": "bookings at period end are 0",
    "no_variable_target": "no variable pay target for this rep",
    "no_rep_estimate": "no rep of the team/org has a variable pay estimate",
}

KPI_NOTES = """\
### How the KPI engine reads the definitions

Where KPIS.md is silent, the engine (`crm_kpi_worker.kpis`) does the following; tests pin each
rule.

**Periods and as_of**

- Periods: for each configured kind (month, quarter, year), the one containing `as_of` and
  the previous one. Keys: `2026-07` (calendar month), `2026-Q3` (fiscal quarter of fiscal
  year 2026), `FY2026` (the config's quota periods write it `2026`; both parse). A fiscal
  year is named by the calendar year it starts in, or ends in with `year_named_by: end`.
- "To date": a won or lost deal counts in a period when its close date is in the period and
  on or before `as_of`; an entry into the demo stage, a demo activity likewise. Deals created
  after `as_of` are ignored (backfills).
- The engine sees each deal's current state (stage, amount, forecast category); `as_of` cuts by
  dates only. A backfill to an old `as_of` is therefore approximate for open pipeline.

**Deals, bookings and rates**

- `deals_won`, `deals_lost`, `win_rate`, `sales_cycle_days`, `conversion_rate` count every
  deal type; `bookings_arr` and `avg_deal_size` count quota-credited types only.
  `avg_deal_size` = bookings / number of quota-credited won deals with a known ARR (a won deal
  without ARR would otherwise dilute the average).
- Sales cycle: days from the cycle start (created date, or first entry into the cycle-start
  stage) to the close date. A won deal that never entered the cycle-start stage, or closed
  before its cycle start, is left out of the cycle (it still counts as won). A cycle of 0 days
  (created and won the same day) is valid. The median of an even count is the mean of the two
  middle values.
- Open pipeline, weighted pipeline and the open part of the forecasts count an open deal in
  the period containing its close date; an overdue open deal (close date before `as_of`)
  counts in the period containing `as_of` instead, so a past period has no open pipeline (0)
  and each open deal is in exactly one period of each kind. They count every deal type, as
  KPIS.md says (setting `pipeline_credited_only` restricts them to quota-credited types,
  making coverage and forecasts like-for-like with quota and bookings).
- Weighted pipeline: a deal whose probability is unknown (no stage default, none in the CRM)
  adds 0; it stays in `open_pipeline_arr`.
- `forecast_commit_arr` adds open deals whose forecast category is Commit;
  `forecast_best_case_arr` adds those in Best Case on top. Pipeline and Omitted never count.
- `conversion_rate`: deals whose first entry into the entry stage falls in the period, that
  are won or lost (and not closed after `as_of`); a closed deal without close date still
  counts here. A deal enters the entry stage on the first day its stage history shows it in
  that stage, in an open stage later in the funnel (it skipped the entry stage), or won.
  Moving into a lost stage is never an entry: a deal lost at Prospecting never entered Demo,
  even though "Closed Lost" comes after Demo in the stage order. Without any stage history, a
  won deal entered on its created date and a lost one did not enter. The cycle-start stage
  (`cycle_start_stage`) is entered by the same rule.
- `demos_per_week`: demos in the period up to `as_of` / (days elapsed in the period, both
  ends included, / 7), at least 1 week; a closed period uses its whole length.

**Velocity, retention, forecast accuracy**

- `pipeline_velocity_per_day` is a point-in-time value: open qualified deals at `as_of` (any
  close date, or none) x win rate x average deal size / mean sales cycle, the three rates
  over deals closed in the `trailing_window_days` ending at `as_of` (both ends included), with
  the same rules as the period KPIs. It is computed for the periods containing `as_of` only;
  other periods are empty (`not_current_period`). 0 open qualified deals gives 0.
- `retention_90d`: each won deal that is not a renewal and has an account is one customer
  won (a team's numbers are then the sums of its reps'). Eligible when its close date is in
  the period and at least 90 days before `as_of`. Churned when its account's churn date, or
  the close date of a lost renewal on the same account (any owner), falls within 0..90 days
  after its close date. A won deal without account is left out (churn cannot be seen).
- `forecast_accuracy`: a period has ended when `as_of` is after its last day. Snapshots are
  per subject (rep, team, org) and period: on the first run on or after the period's snapshot
  day (day `snapshot_day` counted from the period's first day: the 15th of a quarter's first
  month by default) and before the period ends, each subject without a stored snapshot gets
  its current `forecast_commit_arr` as snapshot (returned as `new_snapshots`, to be stored by
  the sync layer). A period whose snapshot day was missed entirely has none. The value is
  floored at 0 (and is at most 1).

**Quotas and variable pay**

- A quota row covers a span of days. Asked for a shorter period it is split evenly over its
  months and by days within a month: each day weighs 1/(days of its month), so a quarter
  quota of 120,000 gives 40,000 to each of its months, and a row starting mid-month (Jul 16 -
  Sep 30, 80,000) gives July 16/31 of a month's share (80,000 x 0.516 / 2.516 = 16,410).
  Month quotas of a quarter always add up to the quarter's.
- Ramp (`ramp_prorate`): the part of a quota row before the rep's start date is dropped,
  measured the same way. For one month this is days from start to month end / days in the
  month; for a quarter it is counted in months (Q3 quota 120,000, start Aug 16: 120,000 x (16/31
  + 1) / 3 = 60,645), so the ramped months add up to the ramped quarter. A rep starting after
  a period has quota 0 for it (attainment empty, reason `quota_zero`).
- A rep has a quota for a period when at least one quota row overlaps it; a period only partly
  covered by quota rows gets the covered part. Overlapping rows of one rep add up (the sync
  layer keeps one source per rep and period).
- Variable pay: the target is per rep and year; a period's target is its share in months
  (month 1/12, quarter 1/4). payout(a) = a up to `accelerator_from`, then
  `accelerator_from + accelerator x (a - accelerator_from)`, at most `cap` (defaults 1.0, 1.5,
  2.0): attainment 1.25 pays 1.375 x target. Empty with no quota, quota 0 or no target.

**Teams, org and unassigned**

- A team row holds the sums of its reps (bookings, counts, quota, pipeline, forecasts,
  demos, variable pay...) and every ratio on it is computed from the sums on that same row:
  team `quota_attainment` = team bookings / team quota, `quota_remaining` = max(team quota -
  team bookings, 0) (one rep's surplus offsets another's shortfall, as for the manager's
  number), `pipeline_coverage` = team pipeline / that remaining. Team quota = the sum of the
  quotas of its reps who have one; empty when none has. A rep without quota still adds their
  bookings to the team's (they sell for the team); give them a quota or leave them out of
  the team to change that. Team `variable_pay_estimate` = sum of its reps' estimates.
- Medians (sales cycle) are taken over the team's or org's deals, never of medians.
- The org is every rep the engine is given, including the "unassigned" rep and reps in no
  team. The unassigned rep is in no team and has no quota or variable target.
- The engine treats every rep alike; whether non-AE users are passed (and written) is the sync
  layer's choice (`is_ae` is carried through).

**Bad data** (each excluded deal is listed in the run report with its reason)

- No ARR (no amount or unconvertible currency): out of every ARR sum; still in counts, win
  rate, cycle, conversion and retention.
- No close date: out of every KPI tied to a close date (bookings, won/lost, win rate, average
  deal size, cycle, pipeline, forecasts, retention, velocity rates); still in conversion and in
  the open qualified deal count.
- Unknown stage: out of every rep/team/org KPI; no per-deal value at all.
- Closed before its created/cycle-start date: out of the cycle; `deal_age_days` empty.

**Per deal**

- A deal whose stage the mapping does not know has no per-deal value at all: every per-deal
  field is empty, including the owner's values stamped on deals (`kpi_fields.owner`).
- `deal_age_days`: created date to close date (won or lost) or to `as_of` (open); empty for an
  unknown stage, a closed deal without close date, a deal created after `as_of`, or a
  negative age.
- `days_in_stage`: `as_of` - entry into the current stage (created date when unknown), for
  closed deals too (days since closing); empty for an unknown stage, a deal created after
  `as_of`, or a stage entered after `as_of`.
- Where the worker writes a date instead of a daily-changing age (the default,
  `daily_ages: false`), it writes the date exactly when the age itself would have a value:
  the two modes never disagree on which deals carry one, and a date written earlier is
  cleared once its age would be empty.
- `close_date_slips`: moves of the close date to a later date (field history; 0 where none
  is kept); empty for an unknown stage.
- `owner_quota_attainment`: the owner's `quota_attainment` for the current period of the
  configured kind (default quarter); empty when the owner has none, and for an unknown
  stage.

**Empty values** are null, each with a reason code (`no_quota`, `quota_zero`,
`no_closed_deal`, `no_activity_mapping`, `period_not_ended`, `no_snapshot`...).
"""
