"""The store's errors."""

from __future__ import annotations

import datetime as dt

__all__ = ["RunInProgress", "StoreError", "StoreMissing", "StoreSchemaTooNewError"]


class StoreError(Exception):
    """The store cannot be opened or used. Messages never contain the URL's password."""


class StoreMissing(StoreError):
    """A store opened read-only does not exist (no run has created it yet)."""


class StoreSchemaTooNewError(StoreError):
    """The database was migrated by a newer crm-kpi-worker than this one."""


class RunInProgress(Exception):
    """Another run holds the run lock of ``source`` (since ``since``, process ``pid`` on
    ``host``, as far as the store knows)."""

    def __init__(
        self,
        source: str,
        since: dt.datetime | None = None,
        pid: int | None = None,
        host: str | None = None,
    ) -> None:
        self.source, self.since, self.pid, self.host = source, since, pid, host
        when = since.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if since else "an unknown time"
        who = f" (pid {pid} on host {host})" if pid is not None else ""
        super().__init__(f"another run of source {source} is in progress since {when}{who}")
