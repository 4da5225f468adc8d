"""Explained numbers from the store: ``crm-kpi kpis explain`` and the status page's links.

:func:`explain_kpi` reads what the last run left (the store's records, the config, the run's
``as_of``), builds the same frames the run computed from (:func:`.frames.build_input`) and
hands them to :func:`crm_kpi_worker.kpis.explain.explain`, which lists the engine's own parts:
the sums over the listed deals are the value. It never calls the CRM.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from crm_kpi_worker.kpis import EXCLUSIONS, FORECAST_CATEGORIES, KPI_KEYS
from crm_kpi_worker.kpis.calendar import FiscalCalendar, Period
from crm_kpi_worker.kpis.engine import PART_MEANINGS
from crm_kpi_worker.kpis.explain import DEAL_KPIS, REASONS, Explanation, explain
from crm_kpi_worker.kpis.notes import EMPTY_REASONS
from crm_kpi_worker.sync.config import AppConfig, SourceBase
from crm_kpi_worker.sync.frames import UNASSIGNED_ID, build_input

__all__ = ["ExplainError", "explain_kpi"]

_TOLERANCE = 1e-9


class ExplainError(ValueError):
    """What was asked cannot be explained (unknown rep, period, KPI or source; no run yet);
    the message says what the store holds instead."""


def explain_kpi(
    config: AppConfig,
    store: Any,
    *,
    rep: str,
    period: str,
    kpi: str,
    source: str | None = None,
    every_deal: bool = False,
) -> dict[str, Any]:
    """Explain one stored KPI value of one rep, as plain JSON-able data (for the CLI and the
    status page). Reads the store only (never the CRM); raises :class:`ExplainError`.

    ``rep``: a rep's CRM user id or email (or ``unassigned``); ``period``: a period key
    (``2026-Q3``, ``2026-07``, ``FY2026``); ``kpi``: a KPI key; ``source``: needed only when
    the config has several sources; ``every_deal``: list the rep's deals far from the period
    too (otherwise only counted in ``not_listed``).

    The result::

        {
          "source": "sandbox",
          "kpi": "quota_attainment",
          "explained_by": "deals" | "other inputs",   # DEAL_KPIS or not
          "rep": {"id": "005...", "name": "Alice Martin", "email": "alice@..."},
          "period": {"key": "2026-Q3", "kind": "quarter", "start": "2026-07-01",
                     "end": "2026-09-30"},
          "currency": "EUR",
          "run": {"id": 3, "as_of": "<ISO instant>", "status": "completed"} | None,
          "as_of": "2026-11-26",                # the run's as_of, a date in the fiscal zone
          "value": 1.25 | None,                 # the stored value
          "stored": true,                       # whether the store holds that value
          "computed": 1.25 | None,              # from the store's records now
          "recomputed": 1.25 | None,            # from "parts" and "terms" alone
          "matches_store": true,                # false: records changed since that run
          "empty_reason": None | {"code": "no_quota", "text": "..."},
          "formula": "quota attainment = bookings ARR 150,000 EUR / quota 120,000 EUR = 125%",
          "parts": {"bookings": {"meaning": "...", "total": 150000.0, "deals": 10}},
          "terms": {"quota": 120000.0},         # the formula's other numbers
          "quota_rows": [{"start", "end", "amount", "share"}],
          "deals": [{
              "id", "name", "stage", "deal_type", "forecast_category",
              "amount": 15000.0 | None, "amount_currency": "EUR",   # as in the CRM
              "arr": 15000.0 | None,            # in the reporting currency
              "created": "2026-05-01", "close_date": "2026-08-14" | None,
              "counts": true, "reason": "counts" | "lost" | ..., "why": "a sentence",
              "adds": {"bookings": 15000.0},    # per part, where the deal counts
              "excluded": [{"reason": "no_arr", "detail": "..."}]}],
          "not_listed": {"outside_period": {"deals": 150, "why": "outside 2026-Q3"}}
        }

    The deals that count come first (by close date); the sum of their ``adds`` per part is the
    part's ``total``, and the totals with ``terms`` give ``computed`` by the formula."""
    if kpi not in KPI_KEYS:
        raise ExplainError(f"unknown KPI {kpi!r}; expected one of: {', '.join(KPI_KEYS)}")
    chosen = _source(config, store, source, rep)
    the_period = _period(config, period)
    run = store.last_computed_run(chosen.name)
    if run is None:
        raise ExplainError(
            f"no run has computed the KPIs of source {chosen.name} yet:"
            " run `crm-kpi sync --once` first"
        )
    as_of = as_of_date(run["as_of"], config)
    inputs = build_input(store, config, chosen, as_of)
    ids = inputs.reps.id.tolist()
    rep_id = _rep_id(store, chosen.name, rep, ids)
    found = explain(
        inputs.deals,
        inputs.reps,
        inputs.quotas,
        inputs.activities,
        inputs.accounts,
        inputs.snapshots,
        inputs.settings,
        as_of,
        rep=ids.index(rep_id),
        period=the_period,
        kpi=kpi,
        currency=config.currency.reporting,
        every_deal=every_deal,
    )
    stored = [
        row
        for row in store.kpis(chosen.name, rep=rep_id, period=the_period.key)
        if row.kpi == kpi and row.period_key == the_period.key
    ]
    value = None if not stored or stored[0].value is None else float(stored[0].value)
    user = next((u for u in inputs.rep_users if u.id == rep_id), None)
    mapping = chosen.mapping
    return {
        "source": chosen.name,
        "kpi": kpi,
        "explained_by": "deals" if kpi in DEAL_KPIS else "other inputs",
        "rep": {
            "id": rep_id,
            "name": user.name if user else "Unassigned",
            "email": user.email if user else None,
        },
        "period": {
            "key": the_period.key,
            "kind": the_period.kind,
            "start": the_period.start.isoformat(),
            "end": the_period.end.isoformat(),
        },
        "currency": config.currency.reporting,
        "run": {"id": run["id"], "as_of": run["as_of"].isoformat(), "status": run["status"]},
        "as_of": as_of.isoformat(),
        "value": value,
        "stored": bool(stored),
        "computed": found.value,
        "recomputed": found.recomputed,
        "matches_store": bool(stored) and _same(value, found.value),
        "empty_reason": None
        if found.empty_reason is None
        else {"code": found.empty_reason, "text": EMPTY_REASONS.get(found.empty_reason, "")},
        "formula": found.formula,
        "parts": {
            name: {
                "meaning": PART_MEANINGS[name],
                "total": total,
                "deals": sum(1 for line in found.deals if name in line.contributions),
            }
            for name, total in found.totals.items()
        },
        "terms": {k: v for k, v in found.terms.items() if k not in _FLAGS},
        "quota_rows": [
            {
                "start": q.start.isoformat(),
                "end": q.end.isoformat(),
                "amount": q.amount,
                "share": q.share,
            }
            for q in found.quota_rows
        ],
        "deals": _deals(store, chosen.name, inputs.deals, found, mapping.conversion_entry_stage),
        "not_listed": {
            code: {"deals": count, "why": _why(code, the_period, found, None, "")}
            for code, count in sorted(found.others.items())
        },
    }


#: Terms that only steer the formula (not numbers to show).
_FLAGS = frozenset({"ended", "current", "quota_rows"})


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=_TOLERANCE, abs_tol=1e-6)


def _source(config: AppConfig, store: Any, name: str | None, rep: str) -> SourceBase:
    names = [s.name for s in config.sources]
    if name is not None:
        for candidate in config.sources:
            if candidate.name == name:
                return candidate
        raise ExplainError(f"no source {name!r} in the config; its sources: {', '.join(names)}")
    if len(config.sources) == 1:
        return config.sources[0]
    wanted = rep.strip().lower()
    holding = [
        s
        for s in config.sources
        if any(wanted in (u.id.lower(), u.email.lower()) for u in store.reps(s.name))
    ]
    if len(holding) == 1:
        return holding[0]
    raise ExplainError(
        f"the config has several sources: pick one with --source ({', '.join(names)})"
    )


def _period(config: AppConfig, key: str) -> Period:
    calendar = FiscalCalendar(config.fiscal.year_start_month, config.fiscal.year_named_by)
    try:
        return calendar.period(key)
    except ValueError:
        raise ExplainError(
            f"{key!r} is not a period key; expected e.g. 2026-Q3, 2026-07, FY2026"
            " (as `crm-kpi kpis show` prints them)"
        ) from None


def _rep_id(store: Any, source: str, rep: str, ids: list[str]) -> str:
    wanted = rep.strip()
    if wanted in ids:
        return wanted
    by_email = {u.email.lower(): u.id for u in store.reps(source) if u.email}
    found = by_email.get(wanted.lower())
    if found in ids:
        return str(found)
    known = [u.email or u.id for u in store.reps(source) if u.id in ids]
    shown = ", ".join(sorted(known)[:10]) + (" ..." if len(known) > 10 else "")
    raise ExplainError(
        f"no rep matches {rep!r} in source {source}; reps: {shown or 'none'} (or {UNASSIGNED_ID})"
    )


def _why(code: str, period: Period, found: Explanation, forecast: str | None, entry: str) -> str:
    if code == "outside_period":
        return f"outside {period.key}"
    if code == "outside_window":
        days = int(found.terms.get("window_days") or 0)
        return f"closed outside the trailing {days}-day window"
    if code == "forecast_category" and forecast is not None:
        return f"forecast category {forecast}, not counted here"
    if code == "never_entered_entry_stage" and entry:
        return f"never reached the {entry} stage"
    if code == "entered_after_as_of" and entry:
        return f"entered the {entry} stage after as_of"
    return REASONS.get(code, code)


def _date(value: Any) -> str | None:
    text = str(value)
    return None if text == "NaT" else text


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _deals(
    store: Any, source: str, deals: Any, found: Explanation, entry_stage: str
) -> list[dict[str, Any]]:
    rows = [line.row for line in found.deals]
    ids = [str(deals.id[row]) for row in rows]
    details = store.deal_details(source, ids)
    excluded: dict[str, list[dict[str, str]]] = {}
    wanted = set(ids)
    for item in store.exclusions(source):
        if item.record_type == "deal" and item.record_id in wanted:
            excluded.setdefault(item.record_id, []).append(
                {"reason": item.reason, "detail": item.detail}
            )
    out = []
    for line, deal_id in zip(found.deals, ids, strict=True):
        row = line.row
        detail = details.get(deal_id, {})
        forecast = FORECAST_CATEGORIES[int(deals.forecast[row])]
        # The engine's own bad-data codes, where the pull recorded none for the deal.
        reasons = excluded.get(deal_id) or [
            {"reason": code, "detail": text}
            for code, text in (EXCLUSIONS[bit] for bit in EXCLUSIONS)
            if code in line.exclusions
        ]
        out.append(
            {
                "id": deal_id,
                "name": detail.get("name"),
                "stage": detail.get("stage"),
                "deal_type": detail.get("deal_type"),
                "forecast_category": detail.get("forecast_category", forecast),
                "amount": _number(detail.get("amount")),
                "amount_currency": detail.get("currency"),
                "arr": _number(deals.arr[row]),
                "created": _date(deals.created[row]),
                "close_date": _date(deals.close[row]),
                "counts": line.counts,
                "reason": line.reason,
                "why": _why(line.reason, found.period, found, forecast, entry_stage),
                "adds": dict(line.contributions),
                "excluded": reasons,
            }
        )
    return out


def as_of_date(instant: dt.datetime, config: AppConfig) -> dt.date:
    """The calendar date of ``instant`` in the fiscal timezone (the engine's as_of)."""
    return instant.astimezone(config.fiscal.tz).date()
