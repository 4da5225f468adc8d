"""The store's schema migrations (Alembic, scripts in ``sync/migrations``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.engine import URL, Connection

from crm_kpi_worker.sync.store.errors import StoreError, StoreSchemaTooNewError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["MIGRATIONS_DIR", "alembic_config", "check_revision", "migrate"]

#: Alembic's script folder (env.py, script.py.mako, versions/), shipped as package data.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

_PG_MIGRATION_LOCK = 0x63726D5F6B7069  # pg_advisory_xact_lock key ("crm_kpi")


def alembic_config(url: str | URL | None = None, connection: Connection | None = None) -> Config:
    """An Alembic config for the store's migrations (no alembic.ini needed).

    Give ``connection`` to run inside that connection's transaction, or ``url`` to let
    Alembic connect (e.g. ``alembic.command.history(alembic_config(url))``).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _too_new(unknown: list[str], newest: str | None) -> StoreSchemaTooNewError:
    return StoreSchemaTooNewError(
        f"the state store is at schema revision {', '.join(unknown)}, which this version of"
        f" crm-kpi-worker does not know (newest known: {newest}); it was"
        " migrated by a newer version: upgrade crm-kpi-worker, or point store.url at"
        " another database"
    )


def check_revision(connection: Connection) -> str | None:
    """The store's revision, checked without writing: it must be this version's newest."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    current = MigrationContext.configure(connection).get_current_heads()
    unknown = [rev for rev in current if rev not in known]
    if unknown:
        raise _too_new(unknown, script.get_current_head())
    if tuple(current) != tuple(script.get_heads()):
        at = ", ".join(current) or "none (an empty database)"
        raise StoreError(
            f"the state store is at schema revision {at}, older than this version's"
            f" {script.get_current_head()}, and is opened read-only: run `crm-kpi sync --once`"
            " (which migrates it) with write access first"
        )
    return current[0]


def migrate(connection: Connection, revision: str = "head") -> str | None:
    """Upgrade the database of ``connection`` to ``revision``, in its current transaction.

    Refuses a database at a revision this code does not know (written by a newer version).
    Returns the revision reached.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    if connection.dialect.name == "postgresql":
        # Two workers opening a fresh database at once: one migrates, the other waits.
        connection.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
    config = alembic_config(connection=connection)
    script = ScriptDirectory.from_config(config)
    known = {rev.revision for rev in script.walk_revisions()}
    current = MigrationContext.configure(connection).get_current_heads()
    unknown = [rev for rev in current if rev not in known]
    if unknown:
        raise _too_new(unknown, script.get_current_head())
    if revision == "head" and tuple(current) == tuple(script.get_heads()):
        return current[0]  # up to date: nothing to run (and no Alembic log lines on each open)
    command.upgrade(config, revision)
    reached = MigrationContext.configure(connection).get_current_heads()
    return reached[0] if reached else None
