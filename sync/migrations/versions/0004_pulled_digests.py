"""Pulled digests: per record the digest of what the pull read last, so a record whose only
change is the worker's own write is not normalized again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pulled_digests",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("stream", sa.String(), primary_key=True),
        sa.Column("record_id", sa.String(), primary_key=True),
        sa.Column("digest", sa.String(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pulled_digests")
