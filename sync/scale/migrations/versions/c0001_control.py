"""The control schema: the scheduled runs, the shared API usage, the shared rate pacing.

``scheduled_runs``: one row per (tenant, source, due time) the scheduler enqueued (or skipped,
while the source's previous run was not done); its primary key is what makes each due run
enqueued once, and the workers keep its state (running, requeued after a time slice,
finished with the run's status). ``org_usage``: each CRM org's (or HubSpot app's) daily API
usage as last said by the CRM, with the calls made since, shared by every worker.
``rate_pacing``: the next free call slot of each rate-limited bucket (HubSpot's per-token
limits), shared by every worker.

Revision ID: c0001
Revises:
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0001"
down_revision = None
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scheduled_runs",
        sa.Column("tenant", sa.String(), primary_key=True),
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("due_at", INSTANT, primary_key=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("enqueued_at", INSTANT, nullable=False),
        sa.Column("started_at", INSTANT),
        sa.Column("finished_at", INSTANT),
        sa.Column("worker", sa.String()),
        sa.Column("deliveries", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("slices", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("status", sa.String()),
        sa.Column("run_id", sa.Integer()),
        sa.Column("detail", sa.Text()),
    )
    op.create_index("scheduled_runs_by_state", "scheduled_runs", ["state", "enqueued_at"])
    op.create_table(
        "org_usage",
        sa.Column("org", sa.String(), primary_key=True),
        sa.Column("used", sa.BigInteger()),
        sa.Column("daily_limit", sa.BigInteger()),
        sa.Column("noted_at", INSTANT),
        sa.Column("calls_since", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "rate_pacing",
        sa.Column("bucket", sa.String(), primary_key=True),
        sa.Column("next_at", INSTANT, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_pacing")
    op.drop_table("org_usage")
    op.drop_index("scheduled_runs_by_state", "scheduled_runs")
    op.drop_table("scheduled_runs")
