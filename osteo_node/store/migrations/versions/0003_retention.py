"""Retention (issue 14): the index says which spool files retention deleted
(``instances.purged_at``, ``series.purged_at``) and how many bytes of each series are still in
the spool (``series.spool_bytes``, filled from the instances for existing rows); the outbox says
which result files it deleted (``outbox_objects.purged_at``); ``retention_runs`` and
``retention_log`` record each round and each deletion.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("purged_at", sa.Float, nullable=True))
    op.add_column("series", sa.Column("spool_bytes", sa.BigInteger, nullable=False,
                                      server_default="0"))
    op.add_column("series", sa.Column("purged_at", sa.Float, nullable=True))
    op.create_index("ix_series_purged_at", "series", ["purged_at"])
    op.execute("UPDATE series SET spool_bytes = (SELECT COALESCE(SUM(instances.size), 0) "
               "FROM instances WHERE instances.series_id = series.id)")
    op.add_column("outbox_objects", sa.Column("purged_at", sa.DateTime, nullable=True))
    op.create_index("ix_outbox_objects_purged_at", "outbox_objects", ["purged_at"])
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("spool_series", sa.Integer, nullable=False),
        sa.Column("spool_files", sa.Integer, nullable=False),
        sa.Column("spool_bytes", sa.BigInteger, nullable=False),
        sa.Column("outbox_objects", sa.Integer, nullable=False),
        sa.Column("outbox_bytes", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
    )
    op.create_table(
        "retention_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("retention_runs.id"), nullable=True),
        sa.Column("purged_at", sa.Float, nullable=False),
        sa.Column("area", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(8), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=True),
        sa.Column("series_instance_uid", sa.String(64), nullable=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=True),
        sa.Column("files", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_retention_log_purged_at", "retention_log", ["purged_at"])


def downgrade() -> None:
    op.drop_index("ix_retention_log_purged_at", table_name="retention_log")
    op.drop_table("retention_log")
    op.drop_table("retention_runs")
    with op.batch_alter_table("outbox_objects") as batch:
        batch.drop_index("ix_outbox_objects_purged_at")
        batch.drop_column("purged_at")
    with op.batch_alter_table("series") as batch:
        batch.drop_index("ix_series_purged_at")
        batch.drop_column("purged_at")
        batch.drop_column("spool_bytes")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("purged_at")
