"""The refused logins: the back-off of each tenant's source, shared by every worker.

``auth_backoff``: one row per (tenant, source) whose last run ended with the CRM refusing the
credentials: how many times in a row (``failures``), the last refusal (``refused_at``) and the
first instant a new run may be enqueued (``not_before``, from the embedded service's policy:
5 min, then twice as long each time, at most 6 h). A run that gets past its login deletes the
row.

Revision ID: c0002
Revises: c0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0002"
down_revision = "c0001"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "auth_backoff",
        sa.Column("tenant", sa.String(), primary_key=True),
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("refused_at", INSTANT, nullable=False),
        sa.Column("not_before", INSTANT, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("auth_backoff")
