"""Store URLs and engines: the SQLite and PostgreSQL connection settings.

The URL's password never reaches a log line, an error message or ``repr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from crm_kpi_worker.sync.store.errors import StoreError

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


def connect_engine(url: URL) -> Engine:
    """The engine of a normalised URL, with the backend's connection settings."""
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    connect_args: dict[str, Any] = {"application_name": "crm-kpi-worker"}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    event.listen(engine, "connect", _postgresql_on_connect)
    return engine
