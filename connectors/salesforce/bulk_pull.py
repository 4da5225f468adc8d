"""The Bulk road of a pull: a stream read by Bulk API 2.0 query jobs.

A stream's pull takes this road when it is big (the connector decides: ``connector.py``). Its
jobs (the main query, and for deals one per history relationship) are created together, so
Salesforce works on them at the same time; the children's results are read first into a
:class:`~.bulk_records.ChildSpool`, then the main results page by page (``maxRecords`` rows a
call), each cut into pages of :data:`PAGES_PER_PAGE` times the source's page size for the
pipeline, joined to their children and shaped as the REST API answers (``bulk_records``).

Cursors. Bulk results come in no particular order, so no page's records say how far the pull
has come in stamp order. Until the last page, every page's cursor is a *position* (the
:class:`BulkPosition` token): where the pull started from, its jobs and the locator of the
results page to read next. A run that stops midway resumes from there: the finished jobs'
results are read again from that locator (not queried again); if the jobs are gone, or the
query changed (another config), new jobs start from the same ``since``. The last page's cursor
is the server's time when the first job was created (or the stored cursor, if later): every
record changed since then is read again by the next pull (the lookback covers commits in
flight), and a change that one job's snapshot saw and another's missed is read again too.

The verify pass reads a big object back by one query job too (:func:`job_records`): no
children, no position (a verify pass stopped midway starts again).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from crm_kpi_worker.connectors.base import Page
from crm_kpi_worker.connectors.errors import ConnectorError
from crm_kpi_worker.connectors.incremental import IncrementalCursor
from crm_kpi_worker.connectors.salesforce.bulk import BulkApi, ResultPage
from crm_kpi_worker.connectors.salesforce.bulk_records import (
    Children,
    ChildRows,
    ChildSpool,
    Convert,
    RecordMaker,
    child_records,
)
from crm_kpi_worker.connectors.salesforce.resources import (
    BulkQueries,
    digest_left_out,
    own_values,
)
from crm_kpi_worker.connectors.salesforce.settings import (
    CONVERTED_AMOUNT,
    CONVERTED_QUOTA_AMOUNT,
    STAMPS,
)
from crm_kpi_worker.sync.bulk import gc_paused

__all__ = [
    "BULK_PREFIX",
    "PAGES_PER_PAGE",
    "BulkPosition",
    "BulkPuller",
    "job_records",
    "since_of",
]

log = logging.getLogger(__name__)

#: Stored cursors that are a Bulk pull's position start with this.
BULK_PREFIX = "bulk:"
#: Records per page handed to the pipeline, in REST pages (a results page of up to 40,000
#: rows is cut into pages of ``PAGES_PER_PAGE * page_size`` records: 10,000 by default).
PAGES_PER_PAGE = 5

Describe = Callable[[str], list[dict[str, Any]] | None]
#: A child relationship's field names and their converters (its CSV columns but the parent's).
Columns = tuple[list[str], list[Convert]]
#: Columns that are no field of the object: ``convertCurrency(...)`` aliases.
CONVERTED_TYPES = {CONVERTED_AMOUNT: "currency", CONVERTED_QUOTA_AMOUNT: "currency"}


@dataclass
class BulkPosition:
    """Where a Bulk pull in progress is (see the module doc); stored as the stream's cursor."""

    since: str | None
    started: str
    query: str
    jobs: dict[str, str] = field(default_factory=dict)
    locator: str | None = None

    def encode(self) -> str:
        text = json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)
        return BULK_PREFIX + base64.urlsafe_b64encode(text.encode()).decode()

    @classmethod
    def decode(cls, cursor: str | None) -> BulkPosition | None:
        if cursor is None or not cursor.startswith(BULK_PREFIX):
            return None
        try:
            values = json.loads(base64.urlsafe_b64decode(cursor[len(BULK_PREFIX) :]))
            position = cls(**values)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"unreadable Bulk pull position in the stored cursor: {error}"
            ) from None
        if position.since is not None:
            STAMPS.parse(position.since)  # a clear ValueError now, not a bad query later
        STAMPS.parse(position.started)
        return position


def since_of(cursor: str | None) -> str | None:
    """The stamp a stored cursor reads from (a Bulk position's own ``since``)."""
    position = BulkPosition.decode(cursor)
    return position.since if position is not None else cursor


def query_digest(queries: BulkQueries) -> str:
    text = "\n".join([queries.main, *(c.soql for c in queries.children)])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class BulkPuller:
    """One stream's pull by Bulk query jobs; iterate it for its pages."""

    def __init__(
        self,
        api: BulkApi,
        queries: BulkQueries,
        sobject: str,
        describe: Describe,
        since: str | None,
        *,
        position: BulkPosition | None = None,
        lookback: dt.timedelta,
        page_records: int = 10_000,
    ) -> None:
        self.api = api
        self.queries = queries
        self.sobject = sobject
        self.describe = describe
        self.since = since
        self.lookback = lookback
        self.page_records = page_records
        digest = query_digest(queries)
        self.position = position if position is not None and position.query == digest else None
        self._digest = digest
        #: Jobs this pull created or resumed.
        self.jobs: dict[str, str] = {}

    def __iter__(self) -> Iterator[Page]:
        position = self._resume() or self._start()
        self.jobs = dict(position.jobs)
        with ChildSpool() as spool:
            columns = self._spool_children(position, spool)
            yield from self._main_pages(position, spool, columns)
        # The finished jobs are not deleted: that would cost a call each, and Salesforce
        # drops query results by itself (they count toward DailyBulkV2QueryFileStorageMB).

    # ---- jobs ----------------------------------------------------------------------------------

    def _start(self) -> BulkPosition:
        queries = self.queries
        rest = queries.rest
        main = self.api.create_query(queries.main, include_deleted=rest.include_deleted)
        jobs = {"main": str(main["id"])}
        for child in queries.children:
            job = self.api.create_query(child.soql, include_deleted=rest.include_deleted)
            jobs[child.relationship] = str(job["id"])
        started = _created(main)
        log.info(
            "%s: pulling by Bulk API 2.0 (%d query job%s)",
            rest.stream,
            len(jobs),
            "s" if len(jobs) > 1 else "",
        )
        return BulkPosition(self.since, started, self._digest, jobs)

    def _resume(self) -> BulkPosition | None:
        position = self.position
        if position is None:
            return None
        try:
            for job_id in position.jobs.values():
                info = self.api.job("query", job_id)
                if info.get("state") in ("Failed", "Aborted"):
                    raise ConnectorError(f"job {job_id} is {info.get('state')}")
        except ConnectorError as error:
            log.info(
                "%s: the Bulk jobs of the stopped pull are gone (%s): new jobs",
                self.queries.rest.stream,
                error.detail,
            )
            return None
        log.info(
            "%s: resuming the Bulk pull of jobs %s",
            self.queries.rest.stream,
            ", ".join(position.jobs.values()),
        )
        return position

    # ---- children ------------------------------------------------------------------------------

    def _spool_children(self, position: BulkPosition, spool: ChildSpool) -> dict[str, Columns]:
        """Each relationship's rows into the spool; its column names and converters."""
        columns: dict[str, Columns] = {}
        for child in self.queries.children:
            job_id = position.jobs[child.relationship]
            self.api.wait("query", job_id)
            for page in self.api.result_pages(job_id):
                spool.add(child.relationship, page.header, page.rows)
                if child.relationship not in columns:
                    maker = RecordMaker(child.sobject, page.header, self.describe)
                    converts = {name: convert for (name, *_), convert in maker.plan}
                    names = spool.fields(child.relationship)
                    columns[child.relationship] = (names, [converts[n] for n in names])
        return columns

    # ---- main ----------------------------------------------------------------------------------

    def _main_pages(
        self, position: BulkPosition, spool: ChildSpool, columns: dict[str, Columns]
    ) -> Iterator[Page]:
        job_id = position.jobs["main"]
        info = self.api.wait("query", job_id)
        processed = info.get("numberRecordsProcessed")
        total = processed if isinstance(processed, int) else None
        locator = position.locator
        maker: RecordMaker | None = None
        while True:
            page: ResultPage = self.api.result_page(job_id, locator)
            if maker is None:
                maker = RecordMaker(self.sobject, page.header, self.describe, types=CONVERTED_TYPES)
            here = BulkPosition(
                position.since, position.started, position.query, position.jobs, locator
            ).encode()
            after = BulkPosition(
                position.since, position.started, position.query, position.jobs, page.locator
            ).encode()
            rows = page.rows
            size = self.page_records
            for start in range(0, max(len(rows), 1), size):
                ends_page = start + size >= len(rows)
                last = ends_page and page.locator is None
                cursor = self._final_cursor(position) if last else (after if ends_page else here)
                with gc_paused():  # tens of thousands of new records: no cycle among them
                    part = rows[start : start + size]
                    made = self._page(maker, part, spool, columns, cursor, total)
                yield made
            if page.locator is None:
                return
            locator = page.locator

    def _page(
        self,
        maker: RecordMaker,
        rows: list[list[str]],
        spool: ChildSpool,
        columns: dict[str, Columns],
        cursor: str | None,
        total: int | None,
    ) -> Page:
        """Some rows of the main results as a page of REST-shaped records, their children
        joined."""
        rest = self.queries.rest
        records = maker.records(rows)
        ids = [str(r.get("Id")) for r in records]
        children: ChildRows = spool.children(ids) if self.queries.children else {}
        if self.queries.children:
            self._join(records, ids, children, columns)
        deleted = [i for i, r in zip(ids, records, strict=True) if r.get("IsDeleted") is True]
        digests = (
            maker.digests(ids, rows, children, digest_left_out(rest))
            if rest.volatile is not None
            else []
        )
        own = own_values(rest, records)
        return Page(rest.stream, records, cursor, deleted, own, digests, total=total)

    def _join(
        self,
        records: list[dict[str, Any]],
        ids: list[str],
        children: ChildRows,
        columns: dict[str, Columns],
    ) -> None:
        """Each record's children under their relationship, as REST nests a subquery's."""
        relationships = [c.relationship for c in self.queries.children]
        none: dict[str, Children] = {}
        for record, record_id in zip(records, ids, strict=True):
            mine = children.get(record_id, none)
            for relationship in relationships:
                found = mine.get(relationship)
                if found is None:
                    record[relationship] = None  # REST's answer for a subquery without rows
                    continue
                names, converts = columns[relationship]
                record[relationship] = child_records(found.rows, names, converts)

    def _final_cursor(self, position: BulkPosition) -> str | None:
        cursor = IncrementalCursor(position.since, STAMPS, lookback=self.lookback)
        cursor.note_server_time(STAMPS.parse(position.started))
        return cursor.advance(None, last=True)


def job_records(
    api: BulkApi, job_id: str, sobject: str, describe: Describe, *, page_records: int
) -> Iterator[list[dict[str, Any]]]:
    """The records of query job ``job_id`` (created already) as the REST API answers them
    (typed by describe, null for an empty cell), in lists of at most ``page_records``: one
    results page (``maxRecords`` rows) is in memory at a time, the next read when it is used."""
    api.wait("query", job_id)
    maker: RecordMaker | None = None
    for page in api.result_pages(job_id):
        if maker is None:
            maker = RecordMaker(sobject, page.header, describe)
        for start in range(0, len(page.rows), page_records):
            with gc_paused():  # thousands of new records: no cycle among them
                records = maker.records(page.rows[start : start + page_records])
            yield records


def _created(job: dict[str, Any]) -> str:
    """The job's creation time as a stored stamp (Salesforce's createdDate)."""
    value = job.get("createdDate")
    if isinstance(value, str):
        try:
            return STAMPS.format(STAMPS.parse(value))
        except ValueError:
            pass
    raise ConnectorError(
        "Salesforce created a Bulk query job without a readable createdDate",
        code="UNEXPECTED_RESPONSE",
    )
