"""directory_import: referral directory imports kept in the database, versioned, so every host serves the same one

Revision ID: directory_import
Revises: outbox_checkin_rows
Create Date: 2026-12-07 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "directory_import"
down_revision = "outbox_checkin_rows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_import",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("services", sa.Integer(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_index("ix_directory_import_name", "directory_import", ["name"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_directory_import_name", table_name="directory_import")
    op.drop_table("directory_import")
