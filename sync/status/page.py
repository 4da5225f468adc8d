"""What the status page shows, read from the store: each source's last runs, the API calls
over time, and one period's quota attainment per rep and team with pipeline coverage.

The numbers are laid out here (bars' lengths, the 100% line, texts in the page's language);
the Jinja2 template (``templates/status.html``) only places them, as inline SVG: no script,
no CDN, nothing fetched by the browser but the page itself.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.status.texts import Texts
from crm_kpi_worker.sync.store import KpiRow, Store

__all__ = ["AttainmentBar", "RunRow", "SourceStatus", "StatusPage", "build_status"]

RUNS_LISTED = 10  # runs in each source's table
RUNS_CHARTED = 30  # runs in each source's API calls chart
CHART_WIDTH = 640  # the charts' SVG width in user units
LABEL_WIDTH = 170  # room for the names left of the attainment bars
BAR_HEIGHT = 22
BAR_GAP = 8
SCALE_MIN = 1.5  # the attainment axis runs to 150% at least...
SCALE_MAX = 3.0  # ...and 300% at most (longer bars are cut and say so)
CALLS_BAR_MAX = 40.0  # a bar of the API calls chart is never wider than this
UNASSIGNED = "unassigned"  # the subject deals of owners who are not reps count under


@dataclass(frozen=True)
class RunRow:
    id: int
    started: str
    status: str
    status_text: str
    duration: str
    pulled: int
    written: int
    calls: int
    failed: int
    excluded: int


@dataclass(frozen=True)
class CallsBar:
    run_id: int
    calls: int
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class AttainmentBar:
    scope: str  # "rep" or "team"
    subject: str  # rep id or team name
    label: str
    attainment: float | None
    percent: str
    bookings: str
    quota: str
    pipeline: str
    coverage: str
    y: float
    width: float
    cut: bool  # longer than the axis


@dataclass
class SourceStatus:
    name: str
    crm: str
    last_success: str
    runs: list[RunRow] = field(default_factory=list)
    calls: list[CallsBar] = field(default_factory=list)
    calls_max: int = 0
    remaining_calls: str | None = None
    budget_share: str | None = None
    period: str | None = None
    periods: list[str] = field(default_factory=list)
    bars: list[AttainmentBar] = field(default_factory=list)
    chart_height: float = 0
    line_x: float = 0  # where the 100% line stands
    scale_percent: int = 150


@dataclass
class StatusPage:
    language: str
    texts: Texts
    generated: str
    currency: str
    sources: list[SourceStatus]
    label_width: int = LABEL_WIDTH
    chart_width: int = CHART_WIDTH
    bar_height: int = BAR_HEIGHT


# ---- formatting in the page's language


def _local(instant: dt.datetime | None, tz: ZoneInfo) -> str:
    if instant is None:
        return "-"
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return instant.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _grouped(value: float, texts: Texts) -> str:
    return f"{round(value):,}".replace(",", texts.thousands)


def _percent(value: float | None, texts: Texts) -> str:
    return "-" if value is None else f"{round(value * 100)}{texts.percent_sign}"


def _money(value: float | None, currency: str, texts: Texts) -> str:
    return "-" if value is None else f"{_grouped(value, texts)} {currency}"


def _ratio(value: float | None, texts: Texts) -> str:
    return "-" if value is None else f"{value:.2f}".replace(".", texts.decimal) + " x"


def _seconds(span: float | None) -> str:
    if span is None:
        return "-"
    minutes, seconds = divmod(round(span), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{span:.1f} s"


# ---- runs


def _sum_of(report: Mapping[str, Any], key: str, inner: str | None = None) -> int:
    total = 0
    for item in report.get(key) or ():
        value = item.get(inner) if inner else item
        if isinstance(value, int | float) and not isinstance(value, bool):
            total += int(value)
    return total


def _source_report(run: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    for item in (run.get("report") or {}).get("sources") or ():
        if item.get("source") == source:
            return dict(item)
    return {}


def _run_row(run: Mapping[str, Any], source: str, texts: Texts, tz: ZoneInfo) -> RunRow:
    report = _source_report(run, source)
    started, finished = run.get("started_at"), run.get("finished_at")
    span = (finished - started).total_seconds() if started and finished else None
    pulled = report.get("pulled") or {}
    return RunRow(
        id=int(run["id"]),
        started=_local(started, tz),
        status=str(run["status"]),
        status_text=texts.status.get(str(run["status"]), str(run["status"])),
        duration=_seconds(span),
        pulled=sum(int(v) for v in pulled.values() if isinstance(v, int)),
        written=_sum_of(report, "written", "records_written"),
        calls=int(report.get("api_calls") or 0),
        failed=_sum_of(report, "written", "failed"),
        excluded=int((report.get("excluded") or {}).get("total") or 0),
    )


def _calls_chart(status: SourceStatus, runs: Sequence[Mapping[str, Any]], texts: Texts) -> None:
    """Bars of the API calls of each run, oldest on the left."""
    points = [
        (int(run["id"]), int(_source_report(run, status.name).get("api_calls") or 0), run)
        for run in reversed(runs)
    ]
    status.calls_max = max((calls for _, calls, _ in points), default=0)
    if not points:
        return
    height, slot = 120.0, CHART_WIDTH / max(len(points), 1)
    top = max(status.calls_max, 1)
    for index, (run_id, calls, run) in enumerate(points):
        bar = height * calls / top
        status.calls.append(
            CallsBar(
                run_id=run_id,
                calls=calls,
                x=round(index * slot + slot * 0.15, 1),
                y=round(height - bar, 1),
                width=round(min(slot * 0.7, CALLS_BAR_MAX), 1),
                height=round(bar, 1),
                title=texts.calls_title.format(run=run_id, calls=calls, started=run["started_at"]),
            )
        )


def _budget(status: SourceStatus, latest: Mapping[str, Any], texts: Texts) -> None:
    """The CRM's remaining daily calls and the worker's share, when the run reported them."""
    budget = latest.get("budget") or {}
    limit, used, share = budget.get("daily_limit"), budget.get("org_used"), budget.get("share")
    if isinstance(limit, int | float) and isinstance(used, int | float):
        status.remaining_calls = texts.remaining.format(
            left=_grouped(max(limit - used, 0), texts), limit=_grouped(limit, texts)
        )
    if isinstance(share, int | float):
        status.budget_share = _percent(float(share), texts)


# ---- attainment


def _period_of(
    config: AppConfig, keys: Iterable[str], as_of: dt.datetime | None, wanted: str | None
) -> str | None:
    """The period shown: the one asked for, else the quarter holding the last run's instant,
    else the latest quarter with values."""
    ordered = sorted(set(keys))
    if wanted in ordered:
        return wanted
    if as_of is not None:
        day = as_of.astimezone(config.fiscal.tz).date()
        for key in ordered:
            start, end = config.fiscal.period_bounds(key)
            if start <= day <= end:
                return key
    return ordered[-1] if ordered else None


def _float(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def _bars(
    rows: Iterable[KpiRow], names: Mapping[str, str], currency: str, texts: Texts
) -> list[AttainmentBar]:
    values: dict[tuple[str, str], dict[str, float | None]] = defaultdict(dict)
    for row in rows:
        if row.scope in ("rep", "team"):
            values[(row.scope, row.subject)][row.kpi] = _float(row.value)
    subjects = sorted(
        (key for key, kpis in values.items() if "quota_attainment" in kpis),
        key=lambda key: (key[0] != "rep", names.get(key[1], key[1]).lower()),
    )
    scale = _scale([values[key]["quota_attainment"] for key in subjects])
    bars = []
    for index, (scope, subject) in enumerate(subjects):
        kpis = values[(scope, subject)]
        attainment = kpis.get("quota_attainment")
        width = (CHART_WIDTH - LABEL_WIDTH - 60) * min(attainment or 0.0, scale) / scale
        label = _label(scope, subject, names, texts)
        bars.append(
            AttainmentBar(
                scope=scope,
                subject=subject,
                label=label,
                attainment=attainment,
                percent=_percent(attainment, texts),
                bookings=_money(kpis.get("bookings_arr"), currency, texts),
                quota=_money(kpis.get("quota"), currency, texts),
                pipeline=_money(kpis.get("open_pipeline_arr"), currency, texts),
                coverage=_ratio(kpis.get("pipeline_coverage"), texts),
                y=index * (BAR_HEIGHT + BAR_GAP),
                width=round(max(width, 0.0), 1),
                cut=(attainment or 0.0) > scale,
            )
        )
    return bars


def _label(scope: str, subject: str, names: Mapping[str, str], texts: Texts) -> str:
    if scope == "team":
        return f"{texts.team} {subject}"
    if subject == UNASSIGNED:
        return texts.unassigned
    return names.get(subject, subject)


def _scale(attainments: Iterable[float | None]) -> float:
    """The axis' end: 150%, or past the longest bar (by 25% steps), at most 300%."""
    top = max((a for a in attainments if a is not None), default=0.0)
    steps = -(-top * 1.1 // 0.25) * 0.25
    return float(min(max(SCALE_MIN, steps), SCALE_MAX))


def _attainment(
    status: SourceStatus,
    config: AppConfig,
    store: Store,
    as_of: dt.datetime | None,
    wanted: str | None,
    texts: Texts,
) -> None:
    rows = store.kpis(status.name, period="quarter")
    status.periods = sorted({row.period_key for row in rows}, reverse=True)
    status.period = _period_of(config, status.periods, as_of, wanted)
    if status.period is None:
        return
    names = {rep.id: rep.name for rep in store.reps(status.name)}
    chosen = [row for row in rows if row.period_key == status.period]
    status.bars = _bars(chosen, names, config.currency.reporting, texts)
    scale = _scale(bar.attainment for bar in status.bars)
    status.scale_percent = round(scale * 100)
    status.line_x = LABEL_WIDTH + (CHART_WIDTH - LABEL_WIDTH - 60) / scale
    status.chart_height = len(status.bars) * (BAR_HEIGHT + BAR_GAP) + 24


# ---- the page


def build_status(
    config: AppConfig,
    store: Store,
    *,
    period: str | None = None,
    now: dt.datetime | None = None,
) -> StatusPage:
    """The status page of every source of ``config``; ``period`` picks the quarter charted."""
    texts = Texts.of(config.write.language)
    tz = config.fiscal.tz
    sources = []
    for source in config.sources:
        runs = store.recent_runs(RUNS_CHARTED, source=source.name)
        status = SourceStatus(
            name=source.name,
            crm=source.type,
            last_success=_local(store.last_success(source.name), tz),
            runs=[_run_row(run, source.name, texts, tz) for run in runs[:RUNS_LISTED]],
        )
        _calls_chart(status, runs, texts)
        if runs:
            _budget(status, _source_report(runs[0], source.name), texts)
        as_of = runs[0]["as_of"] if runs else None
        _attainment(status, config, store, as_of, period, texts)
        sources.append(status)
    return StatusPage(
        language=config.write.language,
        texts=texts,
        generated=_local(now or dt.datetime.now(dt.UTC), tz),
        currency=config.currency.reporting,
        sources=sources,
    )
