"""The KPI frames' compact copy: per live deal and activity, the columns the frames read as
fixed-width binary, with their texts numbered per source, and the churn dates of accounts.
Every source already stored is listed in frame_rebuilds: the store builds its copy from the
pulled rows when it opens.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "frame_texts",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("family", sa.String(), primary_key=True),
        sa.Column("code", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("text", sa.String(), nullable=False),
    )
    op.create_index("ux_frame_texts_text", "frame_texts", ["source", "family", "text"], unique=True)
    op.create_table(
        "frame_deals",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("row", sa.LargeBinary(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "frame_accounts",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("code", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("churn_date", sa.Integer(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "frame_activities",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("row", sa.LargeBinary(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table("frame_rebuilds", sa.Column("source", sa.String(), primary_key=True))
    op.execute(
        "INSERT INTO frame_rebuilds (source) SELECT source FROM deals"
        " UNION SELECT source FROM activities UNION SELECT source FROM accounts"
    )


def downgrade() -> None:
    for table in ("frame_rebuilds", "frame_activities", "frame_accounts", "frame_deals"):
        op.drop_table(table)
    op.drop_index("ux_frame_texts_text", table_name="frame_texts")
    op.drop_table("frame_texts")
