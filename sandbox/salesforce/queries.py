"""The sandbox Salesforce's SOQL resources: ``query`` and ``queryAll``, their pages, and the
cursors (query locators) that ``nextRecordsUrl`` continues."""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.salesforce import engine
from crm_kpi_worker.sandbox.salesforce.routes import OrgRoutes, SalesforceError

DEFAULT_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
CURSOR_IDLE_SECONDS = 15 * 60
MAX_CURSORS_PER_SESSION = 10


@dataclass
class Cursor:
    result: engine.QueryResult
    token: str
    batch_size: int
    used_at: float


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
        result: engine.QueryResult,
        start: int,
        batch_size: int,
        version: str,
        endpoint: str,
        token: str,
        cursor_id: str | None,
    ) -> Response:
        with self.org.lock:
            records = result.page(start, batch_size, version)
        end = start + batch_size
        done = result.plan.aggregates != [] or end >= len(result.rows)
        body: dict[str, Any] = {"totalSize": result.total, "done": done}
        if not done:
            with self._lock:
                if cursor_id is None:
                    self._cursor_seq += 1
                    cursor_id = f"01gSb{self._cursor_seq:010d}"
                    self._cursors[cursor_id] = Cursor(result, token, batch_size, time.monotonic())
                    self._limit_cursors(token)
                else:
                    self._cursors[cursor_id].used_at = time.monotonic()
                    self._cursors.move_to_end(cursor_id)
            body["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{cursor_id}-{end}"
        elif cursor_id is not None:
            with self._lock:
                self._cursors.pop(cursor_id, None)
        body["records"] = records
        self.stats.rows_served += len(records)
        return self._json(body)

    def _expire_cursors(self) -> None:
        now = time.monotonic()
        for key in [k for k, c in self._cursors.items() if now - c.used_at > CURSOR_IDLE_SECONDS]:
            del self._cursors[key]

    def _limit_cursors(self, token: str) -> None:
        mine = [k for k, c in self._cursors.items() if c.token == token]
        for key in mine[: max(0, len(mine) - MAX_CURSORS_PER_SESSION)]:
            del self._cursors[key]


def _batch_size(header: str) -> int:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "batchsize" and value.strip().isdigit():
            return min(max(int(value), MIN_BATCH_SIZE), DEFAULT_BATCH_SIZE)
    return DEFAULT_BATCH_SIZE
