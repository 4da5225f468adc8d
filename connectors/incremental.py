"""The incremental cursor every CRM stream uses, and the de-duplication of keys at one stamp.

An incremental pull asks for the records whose modification stamp is ``>=`` the stored cursor
minus :data:`DEFAULT_LOOKBACK` (``>=``, not ``>``: a strict filter loses the records that share
the last stamp; the lookback brings back records committed late with an earlier stamp, long
transactions and search-index lag). Re-read records are harmless: the store upserts on the
record id.

:class:`IncrementalCursor` gives each page the value to store once the page is persisted: the
largest stamp seen so far, never below the ``since`` it started from, so cursors never go back.
The last page's value is the server's time when the pull started if that is later: every
record committed after that moment carries a stamp no earlier than that time minus the
transaction's length, which the lookback covers, so a quiet stream's next pull re-reads only
the last minutes rather than, forever, the records around its latest change.

:class:`KeysAtStamp` remembers the primary keys read at the latest stamp, so a query restarted
``>=`` that stamp (HubSpot's windowed search) hands none of them out twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable

from crm_kpi_worker.connectors.stamps import StampFormat

__all__ = ["DEFAULT_LOOKBACK", "IncrementalCursor", "KeysAtStamp"]

#: How far before the stored cursor an incremental pull starts reading again (see module doc).
DEFAULT_LOOKBACK = dt.timedelta(minutes=5)


class IncrementalCursor:
    """The cursor of one incremental pull of one stream; see the module doc.

    ``since`` is the stored cursor (None: a full pull); an unreadable one raises ValueError at
    once, before any call. Feed it each page's latest stamp with :meth:`advance`, and the
    server's clock with :meth:`note_server_time` as soon as it is known.
    """

    __slots__ = ("_high", "_server_start", "format", "since", "start")

    def __init__(
        self, since: str | None, format: StampFormat, *, lookback: dt.timedelta = DEFAULT_LOOKBACK
    ) -> None:
        if lookback < dt.timedelta(0):
            raise ValueError("lookback must not be negative")
        self.format = format
        self.since = format.parse(since) if since is not None else None
        #: The lower bound of the pull's filter (``stamp >= start``); None: no time filter.
        self.start = self.since - lookback if self.since is not None else None
        self._high = self.since
        self._server_start: dt.datetime | None = None

    @property
    def high(self) -> dt.datetime | None:
        """The high-water mark: the latest stamp seen (or ``since``), before any server time."""
        return self._high

    def note_server_time(self, when: dt.datetime | None) -> None:
        """The server's clock at the start of the pull: the first time known counts (earlier is
        safer: it can only make the next pull re-read more)."""
        if self._server_start is None:
            self._server_start = when

    def advance(self, latest: dt.datetime | None, *, last: bool) -> str | None:
        """The value to store with a page whose latest stamp is ``latest`` (None: a page
        without stamps); ``last``: no page follows. None while nothing is known."""
        high = self._high
        if latest is not None and (high is None or latest > high):
            high = latest
        self._high = high
        start = self._server_start
        if last and start is not None and (high is None or start > high):
            high = start
        return self.format.format(high) if high is not None else None


class KeysAtStamp:
    """The keys read at the latest stamp of a stream read in stamp order (``start``: the stamp
    a restarted query begins at, whose keys are not known yet)."""

    __slots__ = ("keys", "stamp")

    def __init__(self, start: int | None = None) -> None:
        self.stamp = start
        self.keys: set[Hashable] = set()

    def seen(self, stamp: int, key: Hashable) -> bool:
        """True if ``key`` was read at ``stamp`` already (a duplicate); else remember it."""
        if stamp != self.stamp:
            self.stamp, self.keys = stamp, {key}
            return False
        if key in self.keys:
            return True
        self.keys.add(key)
        return False
