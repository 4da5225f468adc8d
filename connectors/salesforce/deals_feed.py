"""The deals pull with change events: others' changes, never the worker's own writes again.

See :mod:`~crm_kpi_worker.connectors.salesforce.change_events` for why and for the feed. Here
the pull itself:

- a full pull (no stored cursor) is the plain pull; its last page stores no replay position,
  so the next run reads the events from the earliest retained on (only those at or after its
  window's start matter);
- an incremental pull reads the feed (in a thread) while SOQL reads the deals the worker did
  not modify last; when the feed read completely, the deals the events name that SOQL did not
  return are read by Id (300 a query); otherwise the plain pull follows, with one warning;
- every page carries the stored replay position along; one last empty page moves it past the
  events read, once the pages they caused are saved. A run stopped midway reads the same
  events again and resumes its pull where it stopped.

The stream's cursor is the pull's own (a stamp, or a Bulk pull's position) with the replay
position beside it: ``events:`` and base64 JSON.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from crm_kpi_worker.connectors.base import Page
from crm_kpi_worker.connectors.salesforce.change_events import ChangeBatch, ChangeFeed

__all__ = ["EVENTS_PREFIX", "IDS_PER_QUERY", "DealsByEvents", "ReplayCursor"]

log = logging.getLogger(__name__)

EVENTS_PREFIX = "events:"

#: Ids in one ``Id IN (...)`` query: 300 quoted ids keep the query URL near 6,500 characters,
#: well under the 16,384 a REST query's URL may have.
IDS_PER_QUERY = 300


@dataclass(frozen=True)
class ReplayCursor:
    """A deals cursor with the change feed's replay position beside the pull's own."""

    inner: str | None
    replay: bytes | None

    def encode(self) -> str:
        text = json.dumps(
            {"cursor": self.inner, "replay": self.replay.hex() if self.replay else None},
            separators=(",", ":"),
        )
        return EVENTS_PREFIX + base64.urlsafe_b64encode(text.encode()).decode()

    @classmethod
    def decode(cls, cursor: str | None) -> ReplayCursor:
        """A stored cursor; one stored before change events were on has no replay."""
        if cursor is None or not cursor.startswith(EVENTS_PREFIX):
            return cls(cursor, None)
        try:
            values = json.loads(base64.urlsafe_b64decode(cursor[len(EVENTS_PREFIX) :]))
            inner, replay = values["cursor"], values["replay"]
            if not (inner is None or isinstance(inner, str)) or not (
                replay is None or isinstance(replay, str)
            ):
                raise ValueError("cursor and replay must be text")
            return cls(inner, bytes.fromhex(replay) if replay else None)
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            raise ValueError(
                f"unreadable change-event position in the stored cursor: {error}"
            ) from None


def inner_cursor(cursor: str | None) -> str | None:
    """The pull's own cursor in a stored one (which may carry a replay position)."""
    return ReplayCursor.decode(cursor).inner


@dataclass
class DealsByEvents:
    """One deals pull with change events (see the module doc).

    ``pull(cursor, skip_modifier)`` is the plain pull of the deals from a stored cursor;
    ``by_id(ids)`` the pages of one by-Id query; ``window_start(cursor)`` where an
    incremental pull from that cursor starts; ``me()`` the worker's user id."""

    source: str
    feed: Callable[[], ChangeFeed | str]
    pull: Callable[[str | None, str | None], Iterator[Page]]
    by_id: Callable[[Sequence[str]], Iterator[Page]]
    window_start: Callable[[str | None], dt.datetime | None]
    me: Callable[[], str]
    #: What the last pull read from the feed, and how many deals it read by Id.
    last: ChangeBatch | None = None
    read_by_id: int = 0

    def report(self) -> dict[str, Any]:
        """The run report's ``change_events`` (empty: no incremental pull read the feed)."""
        if self.last is None:
            return {}
        return {
            "events": self.last.events,
            "read_by_id": self.read_by_id,
            "complete": self.last.complete,
            "reason": self.last.reason,
        }

    def __call__(self, stored: str | None) -> Iterator[Page]:
        position = ReplayCursor.decode(stored)
        start = self.window_start(position.inner)
        if start is None:  # a full pull: no events needed
            yield from self._carry(self.pull(position.inner, None), position.replay, None)
            return
        feed = self.feed()
        if isinstance(feed, str):
            yield from self._everything(position, ChangeBatch(complete=False, reason=feed))
            return
        # The events are read while the SOQL read runs (their wait for quiet costs nothing).
        with ThreadPoolExecutor(1, thread_name_prefix="change-feed") as pool:
            reading = pool.submit(feed.read, position.replay, start)
            seen: set[str] = set()
            last_cursor = position.inner
            for page in self.pull(position.inner, self.me()):
                seen.update(str(record.get("Id")) for record in page.records)
                last_cursor = page.cursor if page.cursor is not None else last_cursor
                yield _with_cursor(page, last_cursor, position.replay)
            batch = reading.result()
        self.last = batch
        if not batch.complete:  # what the SOQL read left out must be read after all
            yield from self._everything(position, batch)
            return
        missing = sorted(batch.record_ids - seen)
        self.read_by_id = len(missing)
        for at in range(0, len(missing), IDS_PER_QUERY):
            for page in self.by_id(missing[at : at + IDS_PER_QUERY]):
                yield dataclasses.replace(
                    _with_cursor(page, last_cursor, position.replay), total=None
                )
        if batch.events or missing:
            log.info(
                "source %s: %d change events by others; %d opportunities they name that the"
                " worker wrote over since, read by Id",
                self.source,
                batch.events,
                len(missing),
            )
        yield Page("deals", [], ReplayCursor(last_cursor, batch.replay).encode())

    def _everything(self, position: ReplayCursor, batch: ChangeBatch) -> Iterator[Page]:
        """The plain pull (every modified deal, the worker's own writes too), said once."""
        self.last = batch
        log.warning(
            "source %s: change events not read completely (%s): reading every opportunity"
            " modified since the last run, the worker's own writes too",
            self.source,
            batch.reason,
        )
        pages = self.pull(position.inner, None)
        yield from self._carry(pages, position.replay, batch.replay or position.replay)

    @staticmethod
    def _carry(pages: Iterator[Page], replay: bytes | None, end: bytes | None) -> Iterator[Page]:
        """The plain pull's pages with ``replay`` beside their cursors, then ``end``."""
        last_cursor = None
        for page in pages:
            last_cursor = page.cursor if page.cursor is not None else last_cursor
            yield _with_cursor(page, last_cursor, replay)
        yield Page("deals", [], ReplayCursor(last_cursor, end).encode())


def _with_cursor(page: Page, inner: str | None, replay: bytes | None) -> Page:
    return dataclasses.replace(page, cursor=ReplayCursor(inner, replay).encode())
