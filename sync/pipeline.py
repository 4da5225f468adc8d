"""One run of the worker: pull, normalize, store, compute, diff, write, report.

1. For each source, each stream is pulled since its stored cursor (everything on the first run
   or with ``full``), page by page; each page is normalized and saved with its cursor in one
   transaction, so a run stopped anywhere resumes without loss or double counting.
2. The KPIs are computed from what the store holds, as of the run's instant.
3. The values the CRM should hold are diffed against what the worker last wrote there; only
   changes are written, in the largest batches the API allows. Per-record failures are
   reported and retried by the next run (the store remembers confirmed writes only).
4. A run report is stored and returned: counts pulled, excluded (with reasons), written,
   failed, API calls, durations.

A run holds the store's run lock of every source of the config from start to end (one run per
source at a time, see ``store.locks``); a run another one holds a lock of is refused with
:class:`~crm_kpi_worker.sync.store.RunInProgress` before anything is pulled. Holding them, it
first marks ``interrupted`` the runs a dead process left ``running``. While it runs, its report
as it stands is kept in the store (checkpoints), and it checks between pages and write batches
whether it was asked to stop (:class:`~crm_kpi_worker.sync.stops.StopRequest`) or lost its
lock: it then records itself ``interrupted`` and returns.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from crm_kpi_worker.connectors.base import STREAMS, Connector
from crm_kpi_worker.connectors.budget import CallBudget
from crm_kpi_worker.connectors.errors import BudgetExhausted
from crm_kpi_worker.connectors.registry import build_connector, plugin_for
from crm_kpi_worker.kpis.engine import compute
from crm_kpi_worker.kpis.results import Results
from crm_kpi_worker.sync import normalize as norm
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.crm_check import require_known_fields, unmatched_emails
from crm_kpi_worker.sync.frames import UNASSIGNED_ID, EngineInput, build_input
from crm_kpi_worker.sync.logs import bind_run, bind_source, log_context
from crm_kpi_worker.sync.object_writer import ObjectWriter
from crm_kpi_worker.sync.prefetch import prefetched
from crm_kpi_worker.sync.progress import RunProgress, as_run_progress
from crm_kpi_worker.sync.readback import (
    DriftFinder,
    context_salt,
    own_objects_by_stream,
    readable_own_fields,
    verify_due,
    verify_written,
)
from crm_kpi_worker.sync.run_budget import (
    budget_report,
    check_room_to_connect,
    prime_budget,
    remember_usage,
)
from crm_kpi_worker.sync.stops import RunStopped, StopRequest
from crm_kpi_worker.sync.store import Exclusion as StoredExclusion
from crm_kpi_worker.sync.store import (
    HeldLocks,
    KpiRow,
    Snapshot,
    Store,
    StoredPage,
)
from crm_kpi_worker.sync.targets import (
    Language,
    ages_as_dates,
    kpi_kind,
    scorecard_name,
    subject_name,
)
from crm_kpi_worker.sync.writeback import (
    Desired,
    Mode,
    WritePlan,
    format_value,
    plan,
)

log = logging.getLogger(__name__)

METADATA_KEY = "crm"
METADATA_STREAMS = ("stages", "currencies")
REPLACED_WHOLE = ("quotas",)  # small streams whose every pull replaces the stored set
Progress = RunProgress


@dataclass(frozen=True)
class RunOptions:
    full: bool = False
    dry_run: bool = False
    as_of: dt.datetime | None = None  # default: now
    #: Read back every record the worker wrote (``--verify``); else the cadence decides.
    verify: bool = False


@dataclass
class SourceReport:
    name: str
    pulled: Counter[str] = field(default_factory=Counter)
    pages: Counter[str] = field(default_factory=Counter)
    deleted: Counter[str] = field(default_factory=Counter)
    swept: Counter[str] = field(default_factory=Counter)
    exclusions: list[Any] = field(default_factory=list)  # in force after the pull (store)
    excluded_this_run: int = 0
    unassigned_deals: int = 0
    writes: list[dict[str, Any]] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)
    api_calls: int = 0
    #: The API calls of each part of the run, as the connector counted them: connecting (and
    #: the describes checking the mapped fields), per pulled stream, the verify pass, per
    #: written object (a dry run: what the writes would take, ``Connector.write_calls``).
    connect_calls: int = 0
    pull_calls: Counter[str] = field(default_factory=Counter)
    verify_calls: int = 0
    write_calls: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    #: Config problems that do not stop a run (rep emails no CRM user has), file:line:key.
    warnings: list[str] = field(default_factory=list)
    #: Records the pull read but did not normalize again: their content (stamps and the
    #: worker's own fields aside) had not changed since the pull that stored them.
    unchanged_on_pull: Counter[str] = field(default_factory=Counter)
    #: Records the verify pass read back, per object (empty when it did not run).
    verified: Counter[str] = field(default_factory=Counter)
    drift: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    #: Why the run stopped early (the API budget), None when it did not.
    stopped: str | None = None
    #: What the pull read from the CRM's change feed (Connector.change_events; empty: none).
    change_events: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, *, brief: bool = False) -> dict[str, Any]:
        """The report; ``brief`` leaves out the per-record lists (checkpoints)."""
        reasons = Counter(e.reason for e in self.exclusions)
        report = {
            "source": self.name,
            "pulled": dict(self.pulled),
            "pages": dict(self.pages),
            "deleted": dict(self.deleted),
            "removed_from_store": dict(self.swept),
            "excluded": {
                "total": len(self.exclusions),
                "by_reason": dict(sorted(reasons.items())),
                "found_this_run": self.excluded_this_run,
            },
            # Every excluded record, however many: printed tables abbreviate, reports do not.
            "exclusions": [
                {"type": e.record_type, "id": e.record_id, "reason": e.reason, "detail": e.detail}
                for e in self.exclusions
            ],
            "unassigned_deals": self.unassigned_deals,
            "planned": self.planned,
            "written": self.writes,
            "failed": sum(w["failed"] for w in self.writes),
            "api_calls": self.api_calls,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "warnings": self.warnings,
            "unchanged_on_pull": dict(self.unchanged_on_pull),
            "verified": dict(self.verified),
            "drift": self.drift,
            "budget": self.budget,
            "stopped": self.stopped,
            "change_events": self.change_events,
        }
        if brief:
            report.pop("exclusions")
            report["written"] = [
                {k: v for k, v in written.items() if k != "failures"}
                for written in report["written"]
            ]
        return report


@dataclass
class RunResult:
    run_id: int
    as_of: dt.datetime
    status: str
    sources: list[SourceReport]
    results: dict[str, Results] = field(default_factory=dict)
    inputs: dict[str, EngineInput] = field(default_factory=dict)
    #: Why an ``interrupted`` run stopped, and whether because it lost its run lock.
    interrupted: str | None = None
    lock_lost: bool = False

    def report(self, *, brief: bool = False) -> dict[str, Any]:
        report: dict[str, Any] = {
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "status": self.status,
            "sources": [s.as_dict(brief=brief) for s in self.sources],
        }
        if self.interrupted is not None:
            report["interrupted"] = self.interrupted
        return report

    def counts(self) -> dict[str, Any]:
        """The run's totals over its sources, as numbers (a log line's fields)."""
        sources = self.sources
        return {
            "status": self.status,
            "sources": [s.name for s in sources],
            "pulled": sum(sum(s.pulled.values()) for s in sources),
            "excluded": sum(len(s.exclusions) for s in sources),
            "planned": sum(p["records_to_write"] for s in sources for p in s.planned),
            "written": sum(w["records_written"] for s in sources for w in s.writes),
            "failed": sum(w["failed"] for s in sources for w in s.writes),
            "api_calls": sum(s.api_calls for s in sources),
            "seconds": round(sum(sum(s.seconds.values()) for s in sources), 2),
        }


class RunGuard:
    """Between pages and batches: stop when asked or when the lock is lost; keep the report
    as it stands in the store."""

    def __init__(
        self, store: Store, result: RunResult, stop: StopRequest | None, locks: HeldLocks | None
    ) -> None:
        self._store = store
        self._result = result
        self._stop = stop
        self._locks = locks

    def should_stop(self) -> bool:
        return bool(
            (self._stop is not None and self._stop.is_set())
            or (self._locks is not None and self._locks.lost.is_set())
        )

    def check(self) -> None:
        """Raise :class:`RunStopped` when the run should stop."""
        if self._locks is not None and self._locks.lost.is_set():
            raise RunStopped("the run lock was lost (another run took it over)", lock_lost=True)
        if self._stop is not None and self._stop.is_set():
            raise RunStopped(self._stop.reason or "asked to stop")

    @property
    def run_id(self) -> int:
        return self._result.run_id

    def checkpoint(self) -> None:
        """Store the report as it stands (brief: one small row update per page or chunk of
        writes, next to the page's own transaction)."""
        self._store.checkpoint_run(self._result.run_id, self._result.report(brief=True))


ConnectorFactory = Callable[..., Connector]
#: ``(config, source) -> CallBudget``: the run's API budget of a source (the workers of a
#: deployment share theirs: ``sync.scale.limits``).
BudgetFactory = Callable[[AppConfig, Any], CallBudget]


def own_budget(config: AppConfig, source: Any) -> CallBudget:
    """A run's own budget, its usage remembered in the store between runs."""
    return CallBudget(config.budget.max_share_of_daily_limit, source.name)


def run_once(
    config: AppConfig,
    store: Store,
    options: RunOptions = RunOptions(),
    *,
    connector_factory: ConnectorFactory = build_connector,
    progress: RunProgress | Callable[[str], None] | None = None,
    stop: StopRequest | None = None,
    budget_factory: BudgetFactory = own_budget,
) -> RunResult:
    """One pipeline run over every source of the config, holding their run locks.

    Raises :class:`~crm_kpi_worker.sync.store.RunInProgress` when another run holds one.
    With ``stop`` set (a signal), the run ends ``interrupted`` at its next page or batch.
    ``progress`` hears the run's notes and counts (``sync.progress``; a callable gets lines)."""
    as_of = options.as_of or dt.datetime.now(dt.UTC)
    say = as_run_progress(progress)
    names = [source.name for source in config.sources]
    with store.lock_sources(names) as locks, log_context():
        stale = store.interrupt_stale_runs(names)
        if stale:
            log.warning(
                "run(s) %s had been left running by a process that is gone: marked interrupted",
                ", ".join(map(str, stale)),
                extra={"event": "stale_runs_interrupted", "runs": stale},
            )
        run_id = store.start_run(
            as_of,
            {"full": options.full, "dry_run": options.dry_run, "verify": options.verify},
            sources=names,
        )
        result = RunResult(run_id, as_of, "running", [])
        guard = RunGuard(store, result, stop, locks)
        bind_run(run_id)
        log.info(
            "run %s started as of %s",
            run_id,
            as_of.isoformat(),
            extra={"event": "run_started", "run_id": run_id, "as_of": as_of, "sources": names},
        )
        try:
            _run_sources(
                config, store, options, connector_factory, result, guard, say, budget_factory
            )
            failed = sum(w["failed"] for s in result.sources for w in s.writes)
            result.status = "completed_with_failures" if failed else "completed"
            if any(s.stopped for s in result.sources):
                result.status = "stopped_for_budget"
        except RunStopped as stopped:
            result.status = "interrupted"
            result.interrupted = stopped.reason
            result.lock_lost = stopped.lock_lost
            say(f"run {run_id} interrupted: {stopped.reason}")
        except BaseException:
            result.status = "failed"
            store.finish_run(run_id, result.status, result.report())
            raise
        store.finish_run(run_id, result.status, result.report())
        store.forget_planned(config.runtime.planned_records_kept)
    return result


def _run_sources(
    config: AppConfig,
    store: Store,
    options: RunOptions,
    connector_factory: ConnectorFactory,
    result: RunResult,
    guard: RunGuard,
    say: Progress,
    budget_factory: BudgetFactory = own_budget,
) -> None:
    bind_source(None)
    for source in config.sources:
        guard.check()
        bind_source(source.name)  # the lines of this source's pull and writes say so
        report = SourceReport(source.name)
        result.sources.append(report)
        budget = budget_factory(config, source)
        prime_budget(store, source.name, budget, dt.datetime.now(dt.UTC))
        drift = DriftFinder(store, source.name)
        connector: Connector | None = None
        try:
            # Logging in and checking the org cost calls the budget cannot see yet: a run
            # that the remembered usage leaves no room for makes none.
            check_room_to_connect(budget)
            connector = connector_factory(source, config.currency)
            connector.use_budget(budget)
            _run_source(config, store, source, connector, options, result, guard, drift, say)
        except BudgetExhausted as stop:
            report.stopped = stop.detail
            say(f"{source.name}: stopped for the API budget: {stop.detail}")
        finally:
            remember_usage(store, source.name, budget, dt.datetime.now(dt.UTC))
            report.api_calls = connector.api_calls if connector is not None else 0
            report.drift = drift.report(report.writes)
            report.budget = budget_report(
                budget, report, config, source, dry_run=options.dry_run or config.write.dry_run
            )


def _run_source(
    config: AppConfig,
    store: Store,
    source: Any,
    connector: Connector,
    options: RunOptions,
    result: RunResult,
    guard: RunGuard,
    drift: DriftFinder,
    say: Progress,
) -> None:
    as_of, run_id = result.as_of, result.run_id
    report = result.sources[-1]
    # Every mapped field and stage value exists, before anything is pulled.
    require_known_fields(config, source.name, connector.describe_fields)
    connector.read_along(readable_own_fields(config, source, store))
    report.connect_calls = connector.api_calls  # logging in, the org's currencies, describes
    _pull(config, store, source, connector, options, report, say, guard, drift)
    report.warnings = _email_warnings(config, store, source.name)
    guard.check()
    started = time.perf_counter()
    inputs, results = _compute(config, store, source, as_of, run_id, report)
    result.inputs[source.name] = inputs
    result.results[source.name] = results
    report.seconds["compute"] = time.perf_counter() - started
    say(f"{source.name}: KPIs computed ({len(results.rows)} rows)")
    guard.checkpoint()
    guard.check()
    now = dt.datetime.now(dt.UTC)
    if verify_due(store, source.name, config.write.verify_every, now, forced=options.verify):
        started, calls = time.perf_counter(), connector.api_calls
        try:
            verify_written(config, store, source, connector, drift, report, every=options.verify)
        finally:
            report.verify_calls = connector.api_calls - calls
        report.seconds["verify"] = time.perf_counter() - started
        guard.check()
    started = time.perf_counter()
    try:
        _write(
            config, store, source, connector, inputs, results, as_of, options, report, say, guard
        )
    finally:
        report.seconds["write"] = time.perf_counter() - started


# ---- pull -----------------------------------------------------------------------------------


def _pull(
    config: AppConfig,
    store: Store,
    source: Any,
    connector: Connector,
    options: RunOptions,
    report: SourceReport,
    say: Progress,
    guard: RunGuard,
    drift: DriftFinder | None = None,
) -> None:
    started = time.perf_counter()
    metadata = _pull_metadata(store, source, connector, report)
    context = norm.NormalizeContext.for_source(config, source.name, metadata)
    # Digests hold only under the same config and CRM metadata (they decide normalization).
    salt = context_salt(config, metadata.to_json())
    own_objects = own_objects_by_stream(source)
    for stream in STREAMS:
        if stream in METADATA_STREAMS:
            continue
        since = None if options.full else store.cursor(source.name, stream)
        # A full pull (first run, --full, or one that stopped midway) ends with a sweep of
        # the records the CRM no longer has at all.
        full_started = store.full_pull_started(source.name, stream) if since is not None else None
        if since is None:
            full_started = store.begin_full_pull(source.name, stream)
        # Quotas are refreshed whole: their pages are saved together, replacing the old set.
        whole = norm.Normalized() if stream in REPLACED_WHOLE else None
        kind = _record_kind(stream)
        # The next page is fetched while this one is normalized and saved (bounded, in order).
        with _calls_counted(connector, report.pull_calls, stream):
            for page in prefetched(connector.pull(stream, since), name=f"pull-{stream}"):
                if drift is not None and page.own_values and stream in own_objects:
                    drift.check(own_objects[stream], page.own_values)
                records, digests, unchanged = _changed_records(
                    store, source.name, page, salt, skip=since is not None
                )
                report.unchanged_on_pull[stream] += len(unchanged)
                normalized = norm.normalize(context, stream, records)
                already = set(normalized.deleted.get(kind, ()))
                for record_id in page.deleted_ids:
                    if record_id not in already:
                        normalized.mark_deleted(kind, record_id)
                report.pulled[stream] += len(page.records)
                report.pages[stream] += 1
                report.excluded_this_run += len(normalized.exclusions)
                for deleted_kind, ids in normalized.deleted.items():
                    report.deleted[deleted_kind] += len(ids)
                if whole is not None:
                    whole.quotas.extend(normalized.quotas)
                    whole.exclusions.extend(normalized.exclusions)
                else:
                    stored = _stored(source.name, stream, page.cursor, normalized)
                    if digests or unchanged:
                        stored = replace(stored, digests=digests, seen_ids={kind: unchanged})
                    store.save_page(stored)
                    guard.checkpoint()
                    guard.check()  # the page is saved with its cursor: a stop here loses nothing
                say.advance(source.name, stream, len(page.records), total=page.total)
        if whole is not None and report.pages[stream]:
            store.save_page(_stored(source.name, stream, None, whole))
        if full_started is not None:
            report.swept[stream] = store.finish_full_pull(source.name, stream, full_started)
        say.finish(source.name, stream)
        report.seconds["pull"] = time.perf_counter() - started
        guard.checkpoint()
        guard.check()
    # Every record excluded now, whichever run found it (a fixed record drops out).
    report.exclusions = sorted(
        store.exclusions(source.name), key=lambda e: (e.record_type, e.reason, e.record_id)
    )
    report.change_events = connector.change_events()
    report.seconds["pull"] = time.perf_counter() - started


@contextmanager
def _calls_counted(connector: Connector, calls: Counter[str], name: str) -> Iterator[None]:
    """Add the API calls made inside the block to ``calls[name]`` (also when it raises)."""
    before = connector.api_calls
    try:
        yield
    finally:
        calls[name] += connector.api_calls - before


def _changed_records(
    store: Store, source: str, page: Any, salt: str, *, skip: bool
) -> tuple[list[dict[str, Any]], dict[str, str], list[str]]:
    """The page's records to normalize, the digests to save with them, and the ids of those
    left out (``skip``: an incremental pull) because their digest is the one stored: nothing
    the worker reads changed since, only stamps or the worker's own fields (its own write, or
    a hand edit, which the drift check has seen)."""
    if not page.digests:
        return page.records, {}, []
    digests = [(record_id, f"{salt}{digest}") for record_id, digest in page.digests]
    stored = store.digests(source, page.stream, [i for i, _ in digests]) if skip else {}
    records: list[dict[str, Any]] = []
    saved: dict[str, str] = {}
    unchanged: list[str] = []
    for record, (record_id, digest) in zip(page.records, digests, strict=True):
        if stored.get(record_id) == digest:
            unchanged.append(record_id)
        else:
            records.append(record)
            saved[record_id] = digest
    return records, saved, unchanged


def _email_warnings(config: AppConfig, store: Store, source_name: str) -> list[str]:
    """The config's rep emails that no pulled user has (see ``crm_check``)."""
    emails = (rep.email for rep in store.reps(source_name))
    return [str(problem) for problem in unmatched_emails(config, source_name, emails)]


def _pull_metadata(
    store: Store, source: Any, connector: Connector, report: SourceReport
) -> norm.CrmMetadata:
    """Stage and currency metadata: small, pulled whole every run, kept in the store."""
    records: dict[str, list[dict[str, Any]]] = {}
    for stream in METADATA_STREAMS:
        records[stream] = []
        with _calls_counted(connector, report.pull_calls, stream):
            for page in connector.pull(stream, None):
                records[stream].extend(page.records)
                report.pulled[stream] += len(page.records)
                report.pages[stream] += 1
    metadata = _metadata(source, records)
    store.save_page(
        StoredPage(
            source=source.name, stream="metadata", metadata={METADATA_KEY: metadata.to_json()}
        )
    )
    return metadata


def _metadata(source: Any, records: dict[str, list[dict[str, Any]]]) -> norm.CrmMetadata:
    return plugin_for(source.type).metadata(records)


def _record_kind(stream: str) -> str:
    return {"deals": "deal", "users": "rep", "accounts": "account", "activities": "activity"}.get(
        stream, stream
    )


def _stored(source: str, stream: str, cursor: str | None, page: norm.Normalized) -> StoredPage:
    return StoredPage(
        source=source,
        stream=stream,
        cursor=cursor,
        reps=page.reps,
        accounts=page.accounts,
        deals=page.deals,
        stage_changes=page.stage_changes,
        field_changes=page.field_changes,
        activities=page.activities,
        deleted=page.deleted,
        quotas=page.quotas if stream == "quotas" else None,
        exclusions=[
            StoredExclusion(e.record_type, e.record_id, e.reason, e.detail) for e in page.exclusions
        ],
    )


# ---- compute --------------------------------------------------------------------------------


def _compute(
    config: AppConfig,
    store: Store,
    source: Any,
    as_of: dt.datetime,
    run_id: int,
    report: SourceReport,
) -> tuple[EngineInput, Results]:
    local_as_of = as_of.astimezone(config.fiscal.tz).date()
    inputs = build_input(store, config, source, local_as_of)
    report.unassigned_deals = inputs.unassigned_deals
    results = compute(
        inputs.deals,
        inputs.reps,
        inputs.quotas,
        inputs.activities,
        inputs.accounts,
        inputs.snapshots,
        inputs.settings,
        local_as_of,
    )
    store.save_kpis(
        run_id,
        (
            KpiRow(source.name, row.scope, row.subject, row.period_kind, row.period_key, key, value)
            for row in results.rows
            for key, value in row.values.items()
        ),
    )
    store.save_snapshots(
        source.name,
        [
            Snapshot(f"{scope}:{subject}", period, commit, taken)
            for scope, subject, period, commit, taken in results.new_snapshots.rows()
        ],
    )
    return inputs, results


# ---- write ----------------------------------------------------------------------------------


def scorecard_key(source: str, scope: str, subject: str, period_key: str) -> str:
    return f"{source}:{scope}:{subject}:{period_key}"


def desired_records(
    config: AppConfig, source: Any, inputs: EngineInput, results: Results
) -> Iterator[tuple[str, Mode, str | None, Iterator[Desired]]]:
    """(object, mode, external id field, desired records) for every target of the config.

    Records are generated lazily: a million deals are diffed and written chunk by chunk."""
    fields = config.kpi_fields_for(source)
    crm = source.type
    if fields.scorecard is not None:
        card = fields.scorecard
        yield (
            card.object,
            "upsert",
            card.external_id,
            _scorecards(source, inputs, results, card, crm, config.write.language),
        )
    if fields.deal is not None or fields.owner is not None:
        yield _deal_object(crm), "update", None, _deal_records(fields, crm, inputs, results)
    rep_object = plugin_for(crm).rep_object
    if fields.rep is not None and rep_object is not None:
        yield rep_object, "update", None, _user_records(fields.rep, results, rep_object)


def _scorecards(
    source: Any, inputs: EngineInput, results: Results, card: Any, crm: str, language: Language
) -> Iterator[Desired]:
    columns = card.columns(crm)
    names = {u.id: u.name for u in inputs.rep_users}
    teams = {u.id: u.team for u in inputs.rep_users}
    owner_field = plugin_for(crm).scorecard_owner_field
    active = {u.id for u in inputs.rep_users if u.is_active}
    for row in results.rows:
        unassigned = row.scope == "rep" and row.subject == UNASSIGNED_ID
        name = names.get(row.subject, row.subject) if row.scope == "rep" else row.subject
        display = subject_name(row.scope, name, language, unassigned=unassigned)
        if row.scope == "rep":
            rep_id = None if unassigned else row.subject
            team = teams.get(row.subject)
        elif row.scope == "team":
            rep_id, team = None, row.subject
        else:
            rep_id, team = None, None
        values: dict[str, Any] = {
            "Name": scorecard_name(display, row.period_key, language),
            columns["rep_field"]: rep_id,
            columns["team_field"]: team,
            columns["period_type_field"]: row.period_kind,
            columns["period_start_field"]: row.start.isoformat(),
            columns["period_end_field"]: row.end.isoformat(),
        }
        if owner_field is not None and rep_id is not None and rep_id in active:
            values[owner_field] = rep_id  # the rep owns their scorecards: "My scorecards"
        for key, field_name in card.fields.items():
            values[field_name] = format_value(kpi_kind(key), row.values.get(key))
        key = scorecard_key(source.name, row.scope, row.subject, row.period_key)
        yield Desired(card.object, key, values)


def _owner_values(target: Any, inputs: EngineInput, results: Results) -> list[dict[str, Any]]:
    """Per row of the Reps frame, the owner fields' values for its current period."""
    by_rep: dict[str, dict[str, Any]] = {}
    for row in results.rows:
        if row.scope == "rep" and row.is_current and row.period_kind == target.period:
            by_rep[row.subject] = {
                name: format_value(kpi_kind(key), row.values.get(key))
                for key, name in target.fields.items()
            }
    empty = dict.fromkeys(target.fields.values())
    return [by_rep.get(rep_id, empty) for rep_id in inputs.reps.id]


def _deal_records(
    fields: Any, crm: str, inputs: EngineInput, results: Results
) -> Iterator[Desired]:
    as_dates = ages_as_dates(fields)
    deal_kpis = results.deals
    # The dates the ages count from (None exactly where the age is empty).
    dates = {
        "deal_age_days": deal_kpis.created.tolist(),
        "days_in_stage": deal_kpis.stage_entered.tolist(),
    }
    targets = list(fields.deal.fields.items()) if fields.deal is not None else []
    obj = _deal_object(crm)
    owner_values: list[dict[str, Any]] | None = None
    if fields.owner is not None:
        owner_values = _owner_values(fields.owner, inputs, results)
        # Closed deals and deals of an unknown stage carry no owner values (KPIS.md).
        bare = (inputs.deals.is_won | inputs.deals.is_lost | ~deal_kpis.stage_known).tolist()
        owners = inputs.deals.owner.tolist()
        cleared = dict.fromkeys(fields.owner.fields.values())
    for index, (deal_id, values_by_key) in enumerate(deal_kpis):
        values = {}
        for key, field_name in targets:
            if as_dates and key in dates:
                values[field_name] = format_value("date", dates[key][index])
            else:
                values[field_name] = format_value(kpi_kind(key), values_by_key[key])
        if owner_values is not None:
            # The owner's current values on open deals; emptied once a deal closes.
            values.update(cleared if bare[index] else owner_values[owners[index]])
        yield Desired(obj, deal_id, values)


def _user_records(target: Any, results: Results, rep_object: str) -> Iterator[Desired]:
    for row in results.rows:
        if row.scope != "rep" or not row.is_current or row.period_kind != target.period:
            continue
        if row.subject == UNASSIGNED_ID:
            continue
        values = {
            name: format_value(kpi_kind(key), row.values.get(key))
            for key, name in target.fields.items()
        }
        yield Desired(rep_object, row.subject, values)


def _deal_object(crm: str) -> str:
    return plugin_for(crm).deal_object


WRITE_CHUNK = 10_000  # records diffed and written at a time: memory stays flat


def _write(
    config: AppConfig,
    store: Store,
    source: Any,
    connector: Connector,
    inputs: EngineInput,
    results: Results,
    as_of: dt.datetime,
    options: RunOptions,
    report: SourceReport,
    say: Progress,
    guard: RunGuard,
) -> None:
    fields = config.kpi_fields_for(source)
    if fields.writes_nothing:  # compute-only: the KPIs are stored, the CRM is left alone
        say(f"{source.name}: no kpi_fields configured: nothing written to the CRM")
        return
    computed_at_field = (
        fields.scorecard.columns(source.type)["computed_at_field"] if fields.scorecard else None
    )
    batch = config.write.batch_size_for(source.type)
    dry_run = options.dry_run or config.write.dry_run
    for object_name, mode, external_id, desired in desired_records(config, source, inputs, results):
        stamp = (computed_at_field, as_of) if computed_at_field and mode == "upsert" else None
        plans = _plans(store, source.name, object_name, mode, external_id, desired, stamp)
        writer = ObjectWriter(
            store,
            source.name,
            object_name,
            connector,
            guard,
            say,
            batch=batch,
            dry_run=dry_run,
            expected=_expected_records(config, source, object_name, results),
        )
        with _calls_counted(connector, report.write_calls, object_name):
            writer.write(plans)
        report.write_calls[object_name] += writer.calls_estimated
        report.planned.append(writer.planned.as_report())
        if writer.outcome.records_written or writer.outcome.failed:
            report.writes.append(writer.outcome.as_report())
        guard.checkpoint()
        guard.check()  # every batch sent so far is remembered: a stop here loses nothing


def _plans(
    store: Store,
    source_name: str,
    object_name: str,
    mode: Mode,
    external_id: str | None,
    desired: Iterable[Desired],
    stamp: tuple[str, dt.datetime] | None,
) -> Iterator[tuple[list[Desired], WritePlan]]:
    """Per chunk of ``desired`` records, the chunk and its write plan: what differs from the
    last confirmed writes (``stamp``: the scorecards' computed-at field and the run's instant,
    set on every changed record)."""
    for chunk in _chunks(desired, WRITE_CHUNK):
        written = store.written(source_name, object_name, keys=[d.key for d in chunk])
        write_plan = plan(
            chunk,
            written,
            object=object_name,
            mode=mode,
            external_id=external_id,
            always=("Name",) if mode == "upsert" else (),
        )
        del written
        if stamp is not None:
            field_name, value = stamp[0], format_value("datetime", stamp[1])
            for values in write_plan.changes.values():
                values[field_name] = value
        yield chunk, write_plan


def _expected_records(
    config: AppConfig, source: Any, object_name: str, results: Results
) -> int | None:
    """How many records of ``object_name`` the write compares (a progress bar's total)."""
    fields = config.kpi_fields_for(source)
    if fields.scorecard is not None and object_name == fields.scorecard.object:
        return len(results.rows)
    if object_name == _deal_object(source.type):
        return len(results.deals)
    return None


def _chunks(items: Iterable[Desired], size: int) -> Iterator[list[Desired]]:
    chunk: list[Desired] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
