"""Pull state tables.

Cursors, reps, accounts, deals with their histories, activities, quotas, source metadata
and exclusions.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the store's column types (sync/store/schema.py): aware instants as
# timestamptz (SQLite: fixed-width ISO text), exact numbers as numeric (SQLite: text).
INSTANT = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
EXACT = sa.Numeric().with_variant(sa.Text(), "sqlite")


def _key(name: str) -> sa.Column:
    return sa.Column(name, sa.String(), primary_key=True)


def _record_columns() -> list[sa.Column]:
    return [
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("seen_at", INSTANT, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "sync_cursors",
        _key("source"),
        _key("stream"),
        sa.Column("cursor", sa.Text()),
        sa.Column("full_pull_started", INSTANT),
        sa.Column("updated_at", INSTANT, nullable=False),
    )
    op.create_table(
        "reps",
        _key("source"),
        _key("id"),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("team", sa.Text()),
        sa.Column("manager_id", sa.String()),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("start_date", sa.Date()),
        sa.Column("is_ae", sa.Boolean(), nullable=False),
        *_record_columns(),
    )
    op.create_table(
        "accounts",
        _key("source"),
        _key("id"),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("churn_date", sa.Date()),
        *_record_columns(),
    )
    op.create_table(
        "deals",
        _key("source"),
        _key("id"),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.String()),
        sa.Column("account_id", sa.String()),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("close_date", sa.Date()),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("is_won", sa.Boolean(), nullable=False),
        sa.Column("is_closed", sa.Boolean(), nullable=False),
        sa.Column("amount", EXACT),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("arr", EXACT),
        sa.Column("deal_type", sa.String(), nullable=False),
        sa.Column("forecast_category", sa.String(), nullable=False),
        sa.Column("probability", EXACT),
        sa.Column("term_months", sa.Integer()),
        sa.Column("last_modified", INSTANT, nullable=False),
        sa.Column("stage_history", sa.Text()),
        sa.Column("close_date_history", sa.Text()),
        sa.Column("field_history", sa.Text()),
        *_record_columns(),
    )
    op.create_table(
        "activities",
        _key("source"),
        _key("id"),
        sa.Column("owner_id", sa.String()),
        sa.Column("deal_id", sa.String()),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("start", INSTANT, nullable=False),
        *_record_columns(),
    )
    op.create_table(
        "quotas",
        _key("source"),
        _key("rep_id"),
        sa.Column("period_start", sa.Date(), primary_key=True),
        sa.Column("period_end", sa.Date(), primary_key=True),
        sa.Column("amount", EXACT, nullable=False),
        sa.Column("quota_source", sa.String(), nullable=False),
    )
    op.create_table(
        "source_metadata",
        _key("source"),
        _key("key"),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
    )
    op.create_table(
        "exclusions",
        _key("source"),
        _key("record_type"),
        _key("record_id"),
        _key("reason"),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("recorded_at", INSTANT, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "exclusions",
        "source_metadata",
        "quotas",
        "activities",
        "deals",
        "accounts",
        "reps",
        "sync_cursors",
    ):
        op.drop_table(table)
