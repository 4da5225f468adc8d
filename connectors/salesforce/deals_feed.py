"""The deals pull with change events: others' changes, never the worker's own writes again.

See :mod:`~crm_kpi_worker.connectors.salesforce.change_events` for why and for the feed. Here
the pull itself, and what its cursor holds (the pull's own cursor, a stamp or a Bulk pull's
position, with the replay position beside it: ``events:`` and base64 JSON):

- a full pull is the plain pull. Its pages are marked ``full``, so a run stopped midway
  resumes it as a plain pull (never with the filter below: the sweep that ends a full pull
  would drop the records the filter left out). It keeps the replay position it found (none
  after ``--full``) and notes when it started (``events_from``, minus the lookback).
- an incremental pull reads the feed (in a thread: its wait for quiet costs nothing) while
  SOQL reads the deals the worker did not modify last; when the feed read completely, the deals
  the events name that SOQL did not return are read by Id (300 a query); otherwise the plain
  pull follows, with one warning. Events after a stored replay position all count; without
  one (after a full pull), the events from the earliest retained on count from
  ``events_from`` (all of them when it is unknown).
- the pages of that incremental pull store the cursor it started from: only its last page,
  empty, moves the pull's cursor and the replay position on, once everything they caused is
  saved. A run stopped midway reads the same deals and events again; moving the pull's cursor
  earlier could let a later run that cannot read the events skip a change the worker's write
  hid. The plain pull's pages move the pull's cursor as usual, the replay position only at
  its end.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from crm_kpi_worker.connectors.base import Page
from crm_kpi_worker.connectors.salesforce.change_events import ChangeBatch, ChangeFeed
from crm_kpi_worker.connectors.salesforce.settings import CURSOR_FIELD
from crm_kpi_worker.connectors.stamps import parse_stamp, to_ms

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
    #: A full pull in progress (resumed as one).
    full: bool = False
    #: From when events count when there is no replay position (ISO instant; see the module).
    events_from: str | None = None

    def encode(self) -> str:
        values = {
            "cursor": self.inner,
            "replay": self.replay.hex() if self.replay else None,
            "full": self.full,
            "events_from": self.events_from,
        }
        text = json.dumps(values, separators=(",", ":"))
        return EVENTS_PREFIX + base64.urlsafe_b64encode(text.encode()).decode()

    @classmethod
    def decode(cls, cursor: str | None) -> ReplayCursor:
        """A stored cursor; one stored before change events were on has no replay."""
        if cursor is None or not cursor.startswith(EVENTS_PREFIX):
            return cls(cursor, None)
        try:
            values = json.loads(base64.urlsafe_b64decode(cursor[len(EVENTS_PREFIX) :]))
            inner, replay = values["cursor"], values["replay"]
            full, events_from = values.get("full", False), values.get("events_from")
            texts = (inner, replay, events_from)
            if not all(v is None or isinstance(v, str) for v in texts):
                raise ValueError("cursor, replay and events_from must be text")
            if not isinstance(full, bool):
                raise ValueError("full must be true or false")
            if events_from is not None:
                dt.datetime.fromisoformat(events_from)
            return cls(inner, bytes.fromhex(replay) if replay else None, full, events_from)
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            raise ValueError(
                f"unreadable change-event position in the stored cursor: {error}"
            ) from None

    @property
    def cutoff(self) -> dt.datetime | None:
        """From when events count: all after a replay position, else from ``events_from``."""
        if self.replay is not None or self.events_from is None:
            return None
        return dt.datetime.fromisoformat(self.events_from)


@dataclass
class DealsByEvents:
    """One deals pull with change events (see the module doc).

    ``pull(cursor, skip_modifier)`` is the plain pull of the deals from a stored cursor;
    ``by_id(ids)`` the pages of one by-Id query; ``window_start(cursor)`` where an
    incremental pull from that cursor starts (None: a full pull); ``me()`` the worker's user
    id; ``started()`` the ``events_from`` of a full pull starting now."""

    source: str
    feed: Callable[[], ChangeFeed | str]
    pull: Callable[[str | None, str | None], Iterator[Page]]
    by_id: Callable[[Sequence[str]], Iterator[Page]]
    window_start: Callable[[str | None], dt.datetime | None]
    me: Callable[[], str]
    #: When a full pull starting now began, less the lookback (``events_from``).
    started: Callable[[], dt.datetime]
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
        if position.full or self.window_start(position.inner) is None:
            yield from self._full(position)
            return
        feed = self.feed()
        if isinstance(feed, str):
            yield from self._everything(position, ChangeBatch(complete=False, reason=feed))
            return
        with ThreadPoolExecutor(1, thread_name_prefix="change-feed") as pool:
            reading = pool.submit(feed.read, position.replay, position.cutoff)
            seen: dict[str, int] = {}  # id -> its stamp as read (epoch ms)
            last_cursor = position.inner
            for page in self.pull(position.inner, self.me()):
                seen.update(_stamps(page.records))
                last_cursor = page.cursor if page.cursor is not None else last_cursor
                yield dataclasses.replace(page, cursor=stored)  # see the module doc
            batch = reading.result()
        self.last = batch
        if not batch.complete:  # what the SOQL read left out must be read after all
            yield from self._everything(position, batch)
            return
        # A deal the SOQL read returned counts as read only if its copy is as new as the
        # change (its SystemModstamp at least the change's stamp: a row's stamp only grows,
        # and a change holds the row from its stamp to its commit): the feed is read
        # meanwhile, so a change may come after that read.
        missing = sorted(i for i, at in batch.changed.items() if seen.get(i, -1) < at)
        self.read_by_id = len(missing)
        for at in range(0, len(missing), IDS_PER_QUERY):
            for page in self.by_id(missing[at : at + IDS_PER_QUERY]):
                yield dataclasses.replace(page, cursor=stored, total=None)
        if batch.events or missing:
            log.info(
                "source %s: %d change events by others; %d opportunities they name that the"
                " worker wrote over since, read by Id",
                self.source,
                batch.events,
                len(missing),
            )
        yield self._last_page(position, last_cursor, batch.replay)

    def _full(self, position: ReplayCursor) -> Iterator[Page]:
        """The plain full pull, or the rest of one a stopped run began."""
        events_from = position.events_from or self.started().isoformat()
        during = dataclasses.replace(position, full=True, events_from=events_from)
        last_cursor = yield from self._plain(during)
        yield self._last_page(during, last_cursor, position.replay)

    def _everything(self, position: ReplayCursor, batch: ChangeBatch) -> Iterator[Page]:
        """The plain pull (every modified deal, the worker's own writes too), said once."""
        self.last = batch
        log.warning(
            "source %s: change events not read completely (%s): reading every opportunity"
            " modified since the last run, the worker's own writes too",
            self.source,
            batch.reason,
        )
        last_cursor = yield from self._plain(position)
        yield self._last_page(position, last_cursor, batch.replay or position.replay)

    def _plain(self, position: ReplayCursor) -> Generator[Page, None, str | None]:
        """The plain pull from ``position``, each page's cursor moved as usual with the rest
        of ``position`` beside it; returns the pull's last cursor."""
        last_cursor = position.inner
        for page in self.pull(position.inner, None):
            last_cursor = page.cursor if page.cursor is not None else last_cursor
            moved = dataclasses.replace(position, inner=last_cursor)
            yield dataclasses.replace(page, cursor=moved.encode())
        return last_cursor

    @staticmethod
    def _last_page(position: ReplayCursor, inner: str | None, replay: bytes | None) -> Page:
        """The empty page that moves the cursor and the replay position on."""
        events_from = position.events_from if replay is None else None
        cursor = ReplayCursor(inner, replay, full=False, events_from=events_from)
        return Page("deals", [], cursor.encode())


def _stamps(records: Sequence[dict[str, Any]]) -> Iterator[tuple[str, int]]:
    """(id, SystemModstamp in epoch ms) of a page's records (-1: no readable stamp)."""
    for record in records:
        stamp = record.get(CURSOR_FIELD)
        try:
            at = to_ms(parse_stamp(stamp)) if isinstance(stamp, str) else -1
        except ValueError:
            at = -1
        yield str(record.get("Id")), at
