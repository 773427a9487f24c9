"""The queue's counts kept on write (docs/decisions/0015-queue-counts-kept-per-cell.md): ``referral.site_keyset``
and ``site_keyset`` (a referral's site keys as one value, so the scope is a test on the row), ``referral_cell``
(closed referrals counted per cell, per month and per day), the PostgreSQL triggers that keep both in the writing
transaction (smart_app/store/queue_cells.py), ix_referral_queue_open (the referrals not closed, in age order, with
what the queue counts and filters by) and ix_referral_assignee_created. On PostgreSQL the rows present are filled in
(set-based, the referral tables locked against writes meanwhile); SQLite gets the tables and indexes only.

Revision ID: queue_cells
Revises: report_memo
Create Date: 2026-12-07 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from smart_app.store import queue_cells

revision = "queue_cells"
down_revision = "report_memo"
branch_labels = None
depends_on = None

# The closed statuses as stored when this revision was written: smart_app/store/models.py builds the same list, so
# a model built from a later list shows up as a difference.
NOT_CLOSED_SQL = "status NOT IN ('cancelled', 'closed', 'completed', 'rejected')"
QUEUE_COLUMNS = ["ehr", "iss", "route_kind", "route_team", "site_keyset", "status", "urgent", "due_at",
                 "first_contact_at", "assignee", "site_name", "profile", "program_keys", "created_at"]
OPEN_URGENT_SQL = ("status IN ('accepted', 'contacted', 'in-progress', 'new', 'on-hold', 'requested') "
                   "AND urgent IS TRUE AND first_contact_at IS NULL")


def upgrade() -> None:
    op.add_column("referral", sa.Column("site_keyset", sa.String(length=32), nullable=True))
    op.create_table(
        "site_keyset",
        sa.Column("keyset", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("keyset", "key"))
    op.create_index("ix_site_keyset_key", "site_keyset", ["key"], unique=False)
    op.create_table(
        "referral_cell",
        sa.Column("grain", sa.String(length=1), nullable=False),
        sa.Column("bucket", sa.Date(), nullable=False),
        sa.Column("ehr", sa.String(length=128), nullable=False),
        sa.Column("iss", sa.String(length=512), nullable=False),
        sa.Column("route_kind", sa.String(length=16), nullable=False),
        sa.Column("route_team", sa.String(length=128), nullable=False),
        sa.Column("site_keyset", sa.String(length=32), nullable=False),
        sa.Column("assigned", sa.Boolean(), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("site_name", sa.String(length=256), nullable=False),
        sa.Column("profile", sa.String(length=512), nullable=False),
        sa.Column("program_keys", sa.Text(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("grain", "bucket", "ehr", "iss", "route_kind", "route_team", "site_keyset",
                                "assigned", "urgent", "status", "site_name", "profile", "program_keys"))
    op.create_index("ix_referral_cell_keyset", "referral_cell", ["site_keyset", "grain", "bucket"], unique=False)
    op.create_index("ix_referral_cell_route", "referral_cell", ["route_kind", "route_team", "grain", "bucket"],
                    unique=False)
    if op.get_bind().dialect.name == "postgresql":
        for sql in [*queue_cells.backfill(), *queue_cells.pg_functions()]:
            op.execute(sa.text(sql))
    op.create_index("ix_referral_queue_open", "referral", ["created_at", "id"], unique=False,
                    postgresql_include=QUEUE_COLUMNS, postgresql_where=sa.text(NOT_CLOSED_SQL),
                    sqlite_where=sa.text(NOT_CLOSED_SQL))
    op.create_index("ix_referral_open_keyset", "referral", ["site_keyset"], unique=False,
                    postgresql_include=QUEUE_COLUMNS, postgresql_where=sa.text(NOT_CLOSED_SQL),
                    sqlite_where=sa.text(NOT_CLOSED_SQL))
    op.create_index("ix_referral_open_reach", "referral", ["route_kind", "route_team"], unique=False,
                    postgresql_include=QUEUE_COLUMNS, postgresql_where=sa.text(NOT_CLOSED_SQL),
                    sqlite_where=sa.text(NOT_CLOSED_SQL))
    op.create_index("ix_referral_open_urgent", "referral", ["ehr"], unique=False,
                    postgresql_include=["iss", "route_kind", "route_team", "site_keyset", "due_at", "created_at",
                                        "status", "id"],
                    postgresql_where=sa.text(OPEN_URGENT_SQL), sqlite_where=sa.text(OPEN_URGENT_SQL))
    op.create_index("ix_referral_assignee_created", "referral", ["assignee", "created_at"], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for op_name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS referral_cell_{op_name} ON referral")
            op.execute(f"DROP TRIGGER IF EXISTS referral_site_keyset_{op_name} ON referral_site")
            op.execute(f"DROP FUNCTION IF EXISTS referral_cell_{op_name}()")
            op.execute(f"DROP FUNCTION IF EXISTS referral_site_keyset_{op_name}()")
    op.drop_index("ix_referral_assignee_created", table_name="referral")
    op.drop_index("ix_referral_open_urgent", table_name="referral")
    op.drop_index("ix_referral_open_reach", table_name="referral")
    op.drop_index("ix_referral_open_keyset", table_name="referral")
    op.drop_index("ix_referral_queue_open", table_name="referral")
    op.drop_index("ix_referral_cell_route", table_name="referral_cell")
    op.drop_index("ix_referral_cell_keyset", table_name="referral_cell")
    op.drop_table("referral_cell")
    op.drop_index("ix_site_keyset_key", table_name="site_keyset")
    op.drop_table("site_keyset")
    with op.batch_alter_table("referral") as batch:
        batch.drop_column("site_keyset")
