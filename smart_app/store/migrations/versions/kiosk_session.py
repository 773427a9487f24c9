"""kiosk_session: a patient's self-administered screen on a clinic tablet (smart_app/kiosk/).

Revision ID: kiosk_session
Revises: monthly_partitions
Create Date: 2026-12-07 06:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "kiosk_session"
down_revision = "monthly_partitions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kiosk_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("launch_id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tablet_hash", sa.String(length=64), nullable=True),
        sa.Column("pin_hash", sa.String(length=64), nullable=True),
        sa.Column("pin_tries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("progress_enc", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["launch_id"], ["launch.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
        sa.UniqueConstraint("tablet_hash"),
    )
    op.create_index(op.f("ix_kiosk_session_launch_id"), "kiosk_session", ["launch_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_kiosk_session_launch_id"), table_name="kiosk_session")
    op.drop_table("kiosk_session")
