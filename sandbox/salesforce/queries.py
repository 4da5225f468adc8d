"""The sandbox Salesforce's SOQL resources: ``query`` and ``queryAll``, their pages, and the
cursors (query locators) that ``nextRecordsUrl`` continues.

How many records a page holds is :class:`engine.QueryResult`'s rule (child records count
toward the batch size). A child result holding more than ``CHILD_BATCH_SIZE`` records
is cut there: ``done: false``, its ``totalSize`` all of that parent's children, and a
``nextRecordsUrl`` of its own (a ``/query/`` locator, as Salesforce's) that serves the rest in
batches. The cursors of child results do not count toward the open cursors a session may keep
(they belong to the query that made them) and go when read to the end or idle.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.salesforce import engine
from crm_kpi_worker.sandbox.salesforce.routes import OrgRoutes, SalesforceError
from crm_kpi_worker.sandbox.salesforce.subqueries import CHILD_BATCH_SIZE

DEFAULT_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
CURSOR_IDLE_SECONDS = 15 * 60
MAX_CURSORS_PER_SESSION = 10


@dataclass
class ChildRecords:
    """One parent's child result, for the cursor that serves what the parent did not inline."""

    records: list[dict[str, Any]]

    @property
    def total(self) -> int:
        return len(self.records)

    def page(self, start: int, size: int, version: str) -> tuple[list[dict[str, Any]], int]:
        end = min(start + size, len(self.records))
        return self.records[start:end], end

    def child_keys(self) -> list[str]:
        return []


@dataclass
class Cursor:
    result: engine.QueryResult | ChildRecords
    token: str
    batch_size: int
    used_at: float

    @property
    def is_child(self) -> bool:
        return isinstance(self.result, ChildRecords)


class QueryRoutes(OrgRoutes):
    """SOQL queries and their cursors (each session keeps its latest ones)."""

    _cursors: OrderedDict[str, Cursor]
    _cursor_seq: int

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.org.now_ms() / 1000, tz=dt.UTC).date()

    def on_query(self, request: Request, user_row: int, version: str) -> Response:
        return self._run_query(request, user_row, version, include_deleted=False, endpoint="query")

    def on_query_all(self, request: Request, user_row: int, version: str) -> Response:
        return self._run_query(
            request, user_row, version, include_deleted=True, endpoint="queryAll"
        )

    def _run_query(
        self,
        request: Request,
        user_row: int,
        version: str,
        *,
        include_deleted: bool,
        endpoint: str,
    ) -> Response:
        text = request.args.get("q")
        if not text:
            raise SalesforceError(400, "MALFORMED_QUERY", "A query string has to be specified")
        batch_size = _batch_size(request.headers.get("Sforce-Query-Options", ""))
        result = engine.execute(
            self.org,
            text,
            include_deleted=include_deleted,
            today=self._today(),
            access=self.org.access_for(user_row),
        )
        return self._page(
            result, 0, batch_size, version, endpoint, request.environ["sandbox.token"], None
        )

    def on_query_more(
        self, request: Request, user_row: int, version: str, locator: str
    ) -> Response:
        cursor_id, _, start_text = locator.rpartition("-")
        with self._lock:
            self._expire_cursors()
            cursor = self._cursors.get(cursor_id)
        if (
            cursor is None
            or not start_text.isdigit()
            or cursor.token != request.environ["sandbox.token"]
        ):
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        endpoint = "queryAll" if "/queryAll/" in request.path else "query"
        return self._page(
            cursor.result,
            int(start_text),
            cursor.batch_size,
            version,
            endpoint,
            cursor.token,
            cursor_id,
        )

    def _page(
        self,
        result: engine.QueryResult | ChildRecords,
        start: int,
        batch_size: int,
        version: str,
        endpoint: str,
        token: str,
        cursor_id: str | None,
    ) -> Response:
        with self.org.lock:
            records, end = result.page(start, batch_size, version)
        rows = result.rows if isinstance(result, engine.QueryResult) else result.records
        done = end >= len(rows)
        body: dict[str, Any] = {"totalSize": result.total, "done": done}
        if not done:
            if cursor_id is None:
                cursor_id = self._open_cursor(result, token, batch_size)
            else:
                with self._lock:
                    self._cursors[cursor_id].used_at = time.monotonic()
                    self._cursors.move_to_end(cursor_id)
            body["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{cursor_id}-{end}"
        elif cursor_id is not None:
            with self._lock:
                self._cursors.pop(cursor_id, None)
        for key in result.child_keys():
            for record in records:
                self._cut_children(record, key, token, batch_size, version, endpoint)
        body["records"] = records
        self.stats.rows_served += len(records)
        return self._json(body)

    def _open_cursor(
        self, result: engine.QueryResult | ChildRecords, token: str, batch_size: int
    ) -> str:
        with self._lock:
            self._cursor_seq += 1
            cursor_id = f"01gSb{self._cursor_seq:010d}"
            self._cursors[cursor_id] = Cursor(result, token, batch_size, time.monotonic())
            self._limit_cursors(token)
        return cursor_id

    def _cut_children(
        self,
        record: dict[str, Any],
        key: str,
        token: str,
        batch_size: int,
        version: str,
        endpoint: str,
    ) -> None:
        """Cut ``record``'s child result ``key`` after ``CHILD_BATCH_SIZE`` records; the rest
        wait behind a cursor of their own."""
        children = record.get(key)
        if children is None or len(children["records"]) <= CHILD_BATCH_SIZE:
            return
        every = children["records"]
        cursor_id = self._open_cursor(ChildRecords(every), token, batch_size)
        record[key] = {
            "totalSize": len(every),
            "done": False,
            "nextRecordsUrl": (
                f"/services/data/v{version}/{endpoint}/{cursor_id}-{CHILD_BATCH_SIZE}"
            ),
            "records": every[:CHILD_BATCH_SIZE],
        }

    def _expire_cursors(self) -> None:
        now = time.monotonic()
        for key in [k for k, c in self._cursors.items() if now - c.used_at > CURSOR_IDLE_SECONDS]:
            del self._cursors[key]

    def _limit_cursors(self, token: str) -> None:
        mine = [k for k, c in self._cursors.items() if c.token == token and not c.is_child]
        for key in mine[: max(0, len(mine) - MAX_CURSORS_PER_SESSION)]:
            del self._cursors[key]


def _batch_size(header: str) -> int:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "batchsize" and value.strip().isdigit():
            return min(max(int(value), MIN_BATCH_SIZE), DEFAULT_BATCH_SIZE)
    return DEFAULT_BATCH_SIZE
