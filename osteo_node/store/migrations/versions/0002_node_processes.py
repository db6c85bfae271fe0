"""Heart-beats of the node's processes on every host (``node_processes``): what runs where,
shown by ``osteo-node status``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_processes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("process", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("last_beat", sa.Float, nullable=False),
        sa.UniqueConstraint("host", "pid", name="uq_node_processes_host_pid"),
    )


def downgrade() -> None:
    op.drop_table("node_processes")
