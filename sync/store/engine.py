"""Store URLs and engines: the SQLite and PostgreSQL connection settings.

The URL's password never reaches a log line, an error message or ``repr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import QueuePool

from crm_kpi_worker.sync.store.errors import StoreError, StoreMissing

__all__ = ["WRITE_OPTION", "connect_engine", "driver_reason", "normalise_url", "redact"]

#: Execution option of write connections: SQLite takes the write lock at BEGIN.
WRITE_OPTION = "crm_kpi_write"


def normalise_url(url: str | SecretStr | URL) -> URL:
    """An SQLAlchemy URL for the store: ``postgresql://`` gets the psycopg (v3) driver."""
    if isinstance(url, SecretStr):
        url = url.get_secret_value()
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message repeats the whole string, password included.
        raise StoreError(
            "the store URL is not an SQLAlchemy URL (sqlite:///path/to/file.sqlite or"
            " postgresql://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported store backend {backend!r} in {redact(parsed)}: use sqlite or postgresql"
        )
    return parsed


def redact(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def driver_reason(exc: DBAPIError) -> str:
    """The driver's own message, first line (it names host and port, never a password)."""
    text = str(exc.orig).strip() if exc.orig is not None else type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling skips DDL and cannot take the write lock early;
    # the "begin" hook below issues BEGIN itself (SQLAlchemy's documented pysqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",  # readers never block the writer
        "PRAGMA synchronous=NORMAL",  # WAL + NORMAL: consistent after a crash, fsync per checkpoint
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=30000",
    ):
        cursor.execute(pragma).fetchall()
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # Writers take the lock at BEGIN: a deferred transaction upgraded later can fail with
    # SQLITE_BUSY without waiting for busy_timeout.
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _postgresql_on_connect(dbapi_connection: Any, _record: Any) -> None:
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.autocommit = autocommit


def _sqlite_reader_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA busy_timeout=30000").fetchall()


def _read_only_sqlite(path: str) -> Any:
    """A read-only connection to an existing SQLite file that never writes to it, not even to
    create the WAL's index: ``mode=ro``, else (a read-only folder, where a WAL store's ``-shm``
    file cannot be created) ``immutable=1``, which reads the file as it stands."""
    import sqlite3

    uri = f"file:{quote(path)}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.OperationalError:
        connection.close()
        connection = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
    return connection


def connect_engine(url: URL, *, read_only: bool = False) -> Engine:
    """The engine of a normalised URL, with the backend's connection settings.

    ``read_only``: SQLite opens the file without ever writing (it must exist)."""
    if url.get_backend_name() == "sqlite" and read_only:
        database = url.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise StoreError(f"{redact(url)}: a read-only store must be a SQLite file")
        path = str(Path(database).expanduser())
        if not Path(path).is_file():
            raise StoreMissing(
                f"no state store at {path}: run `crm-kpi sync --once` first to create it"
            )
        # A pool of connections to the file (not the one-per-thread pool SQLAlchemy gives a
        # "sqlite://" URL, which closes connections of other threads): the frames read deals
        # and activities from two threads at once.
        engine = create_engine(
            "sqlite://", creator=lambda: _read_only_sqlite(path), poolclass=QueuePool
        )
        event.listen(engine, "connect", _sqlite_reader_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    connect_args: dict[str, Any] = {
        "application_name": "crm-kpi-worker",
        # A dead peer (a worker's machine gone) is noticed within about a minute, and the
        # server then ends its session, releasing the run locks it held.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    event.listen(engine, "connect", _postgresql_on_connect)
    return engine
