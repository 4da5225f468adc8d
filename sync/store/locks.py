"""One run per source at a time, across processes and machines: a lock in the store itself.

- **PostgreSQL**: a session advisory lock per source (``pg_try_advisory_lock`` on a 64-bit key
  derived from the database schema and the source name), held on a dedicated connection for
  the whole run. The server releases it when that connection ends, so a dead process (or a
  dead machine, once TCP keepalives give up: about a minute) leaves nothing behind. The
  ``run_locks`` row only says who holds it, for the refusal's message.
- **SQLite**: a lease row per source in ``run_locks`` (token, pid, host, start, expiry), taken
  in an exclusive (``BEGIN IMMEDIATE``) transaction and renewed every :data:`RENEW_EVERY` by a
  heartbeat thread while the run lives. A row is taken over when its lease expired, or when
  its holder ran on this host and its pid is gone (or is this process's own pid without being
  one of its locks: a restarted container reusing pid 1).

Either way a refused run raises :class:`~.errors.RunInProgress`. The heartbeat also checks
that the lock is still held (the PostgreSQL connection alive, the lease row still ours);
:attr:`HeldLocks.lost` is set when it is not, and the run stops at its next page or batch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from crm_kpi_worker.sync.store.database import Database
from crm_kpi_worker.sync.store.errors import RunInProgress
from crm_kpi_worker.sync.store.schema import run_locks

__all__ = ["LEASE", "RENEW_EVERY", "HeldLocks", "RunLocks", "advisory_key", "process_alive"]

log = logging.getLogger(__name__)

#: How long a SQLite lease lasts without renewal, and how often the heartbeat renews it.
LEASE = dt.timedelta(seconds=60)
RENEW_EVERY = dt.timedelta(seconds=15)

#: Tokens of the locks this process holds (a lease row with our pid and another token is a
#: previous process's: a restarted container reuses its pid).
_HELD: set[str] = set()
_HELD_GUARD = threading.Lock()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def advisory_key(namespace: str, source: str) -> int:
    """The signed 64-bit advisory lock key of ``source`` in ``namespace`` (database.schema)."""
    digest = hashlib.sha256(f"crm-kpi-run:{namespace}:{source}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class HeldLocks:
    """The run locks of some sources, held until :meth:`release` (or the process ends)."""

    def __init__(
        self, locks: RunLocks, sources: Sequence[str], token: str, connection: Connection | None
    ) -> None:
        self.sources = tuple(sources)
        self.token = token
        self.lost = threading.Event()
        self._locks = locks
        self._connection = connection  # PostgreSQL: the session holding the advisory locks
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, name="run-lock-heartbeat", daemon=True
        )
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(RENEW_EVERY.total_seconds()):
            try:
                held = self._locks.renew(self)
            except SQLAlchemyError as exc:
                reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0]
                log.warning("cannot renew the run lock: %s", reason)
                held = self._locks.backend == "sqlite"  # a busy SQLite: try again next beat
            if not held:
                log.error("the run lock of %s was lost; the run stops", ", ".join(self.sources))
                self.lost.set()
                return

    @property
    def connection(self) -> Connection | None:
        return self._connection

    def release(self) -> None:
        self._stop.set()
        self._heartbeat.join(timeout=5)
        self._locks.release(self)

    def __enter__(self) -> HeldLocks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class RunLocks:
    """Takes, renews and releases the run locks of sources (see the module's text)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.backend = db.backend
        self.host = socket.gethostname()

    def acquire(self, sources: Sequence[str]) -> HeldLocks:
        """The locks of every source in ``sources``, or :class:`RunInProgress` naming the first
        one held elsewhere (having taken none)."""
        names = sorted(set(sources))
        token = uuid.uuid4().hex
        connection = self._acquire_pg(names) if self.backend == "postgresql" else None
        try:
            self._write_rows(names, token, lease_only=connection is None)
        except BaseException:
            if connection is not None:
                _end_session(connection)
            raise
        with _HELD_GUARD:
            _HELD.add(token)
        return HeldLocks(self, names, token, connection)

    # ---- PostgreSQL

    def _acquire_pg(self, names: list[str]) -> Connection:
        connection = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            namespace: str = connection.execute(
                select(func.current_database() + "." + func.current_schema())
            ).scalar_one()
            for name in names:
                key = advisory_key(str(namespace), name)
                if not connection.execute(select(func.pg_try_advisory_lock(key))).scalar_one():
                    raise self._refusal(name)
        except BaseException:
            _end_session(connection)
            raise
        return connection

    # ---- the rows (SQLite: the leases; PostgreSQL: who holds the advisory locks)

    def _write_rows(self, names: list[str], token: str, *, lease_only: bool) -> None:
        now = _now()
        with self._db.write() as connection:  # SQLite: BEGIN IMMEDIATE, one writer at a time
            if lease_only:
                rows = connection.execute(
                    select(run_locks).where(run_locks.c.source.in_(names))
                ).all()
                for row in rows:
                    if self._alive(row, now):
                        raise RunInProgress(row.source, row.started_at, row.pid, row.host)
                    log.warning(
                        "taking over the run lock of source %s from pid %s on host %s"
                        " (since %s): its process is gone",
                        row.source,
                        row.pid,
                        row.host,
                        row.started_at,
                    )
            values = [
                {
                    "source": name,
                    "token": token,
                    "pid": os.getpid(),
                    "host": self.host,
                    "started_at": now,
                    "expires_at": now + LEASE,
                }
                for name in names
            ]
            statement = self._db.insert(run_locks)
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["source"],
                    set_={c: statement.excluded[c] for c in values[0] if c != "source"},
                ),
                values,
            )

    def _alive(self, row: Any, now: dt.datetime) -> bool:
        """Whether the lease ``row`` still belongs to a live run."""
        if row.expires_at <= now:
            return False
        if row.host != self.host:
            return True  # another machine: only the expiry tells
        if row.pid == os.getpid():
            with _HELD_GUARD:
                return row.token in _HELD
        return process_alive(row.pid)

    def _refusal(self, source: str) -> RunInProgress:
        with self._db.read() as connection:
            row = connection.execute(select(run_locks).where(run_locks.c.source == source)).first()
        if row is None:
            return RunInProgress(source)
        return RunInProgress(source, row.started_at, row.pid, row.host)

    def renew(self, held: HeldLocks) -> bool:
        """Extend the leases (SQLite) or check the lock's session (PostgreSQL); False when the
        locks are no longer held."""
        if held.connection is not None:
            held.connection.execute(text("SELECT 1"))
            return True
        with self._db.write() as connection:
            renewed = connection.execute(
                update(run_locks)
                .where(run_locks.c.source.in_(held.sources), run_locks.c.token == held.token)
                .values(expires_at=_now() + LEASE)
            ).rowcount
        return renewed == len(held.sources)

    def release(self, held: HeldLocks) -> None:
        with _HELD_GUARD:
            _HELD.discard(held.token)
        try:
            with self._db.write() as connection:
                connection.execute(delete(run_locks).where(run_locks.c.token == held.token))
        finally:
            if held.connection is not None:
                _end_session(held.connection)


def _end_session(connection: Connection) -> None:
    """Release the session's advisory locks before its connection goes back to the pool (or
    drop the connection when it cannot: a closed session holds no lock)."""
    try:
        connection.execute(select(func.pg_advisory_unlock_all()))
    except SQLAlchemyError:
        connection.invalidate()
    finally:
        connection.close()
