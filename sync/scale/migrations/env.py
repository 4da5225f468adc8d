"""Alembic environment of a deployment's control schema (``<prefix>control``).

:func:`crm_kpi_worker.sync.scale.control.ControlStore.open` runs the migrations itself, handing
its own connection (whose search path is the control schema) through
``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

config = context.config


def run_migrations() -> None:
    connection = config.attributes["connection"]
    context.configure(connection=connection, version_table="crm_kpi_control_version")
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations()
