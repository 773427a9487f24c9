"""referral.handoff: the warm hand-off at the bedside, offered and how the call ended (plain code, as ``urgent``)

Existing referrals get NULL: no hand-off was offered through the app before this revision.

Revision ID: 0011_referral_handoff
Revises: 0010_queue_in_sql
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_referral_handoff'
down_revision = '0010_queue_in_sql'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.add_column(sa.Column('handoff', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.drop_column('handoff')
