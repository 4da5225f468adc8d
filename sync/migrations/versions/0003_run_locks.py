"""One run per source at a time: the run lock's holders, and who ran each run.

``run_locks`` holds one row per source while a run holds it: on SQLite it is the lease itself
(taken in an exclusive transaction, renewed while the run lives, expiring otherwise); on
PostgreSQL the lock is an advisory lock and the row only says who holds it. ``runs`` gains the
process (pid, host) and the sources of each run, so a run left ``running`` by a dead process
can be recognised and marked ``interrupted``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")


def upgrade() -> None:
    op.create_table(
        "run_locks",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("token", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("started_at", INSTANT, nullable=False),
        sa.Column("expires_at", INSTANT, nullable=False),
    )
    op.add_column("runs", sa.Column("pid", sa.Integer()))
    op.add_column("runs", sa.Column("host", sa.String()))
    op.add_column("runs", sa.Column("sources", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("sources")
        batch.drop_column("host")
        batch.drop_column("pid")
    op.drop_table("run_locks")
