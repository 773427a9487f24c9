"""outbox: a partial index of the rows in flight by claim token (ix_outbox_in_flight)

A claim takes the rows it just stamped (status sending, its token) to find their referrals' other rows; without
an index that read every outbox row ever written (docs/decisions/0013-a-year-of-data.md: a sequential scan of the
table at a year's volume). The index holds only the rows being sent.

Revision ID: outbox_in_flight
Revises: kiosk_session
Create Date: 2026-12-07 06:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "outbox_in_flight"
down_revision = "kiosk_session"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_in_flight", "outbox", ["claimed_by"], unique=False,
                    postgresql_where=sa.text("status = 'sending'"), sqlite_where=sa.text("status = 'sending'"))


def downgrade() -> None:
    op.drop_index("ix_outbox_in_flight", table_name="outbox")
