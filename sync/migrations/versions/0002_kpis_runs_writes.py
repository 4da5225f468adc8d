"""Run records, KPI values and history, forecast snapshots, write-back memory.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
EXACT = sa.Numeric().with_variant(sa.Text(), "sqlite")
KPI_KEY = ("source", "scope", "subject", "period_kind", "period_key", "kpi")


def _key(name: str) -> sa.Column:
    return sa.Column(name, sa.String(), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("as_of", INSTANT, nullable=False),
        sa.Column("started_at", INSTANT, nullable=False),
        sa.Column("finished_at", INSTANT),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("report", sa.Text()),
    )
    op.create_table(
        "kpi_values",
        *(_key(name) for name in KPI_KEY),
        sa.Column("value", EXACT),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("changed_at", INSTANT, nullable=False),
    )
    op.create_table(
        "kpi_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        *(sa.Column(name, sa.String(), nullable=False) for name in KPI_KEY),
        sa.Column("value", EXACT),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("recorded_at", INSTANT, nullable=False),
    )
    op.create_index("ix_kpi_history_subject", "kpi_history", ["source", "scope", "subject", "kpi"])
    op.create_table(
        "forecast_snapshots",
        _key("source"),
        _key("subject"),
        _key("period_key"),
        sa.Column("commit_value", EXACT, nullable=False),
        sa.Column("taken_on", sa.Date(), nullable=False),
    )
    op.create_table(
        "written_values",
        _key("source"),
        _key("object"),
        _key("record_key"),
        _key("field"),
        sa.Column("value_kind", sa.String(), nullable=False),
        sa.Column("value_text", sa.Text()),
        sa.Column("written_at", INSTANT, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("written_values")
    op.drop_table("forecast_snapshots")
    op.drop_index("ix_kpi_history_subject", table_name="kpi_history")
    op.drop_table("kpi_history")
    op.drop_table("kpi_values")
    op.drop_table("runs")
