"""referral_event.assignee: an assignment (a social worker took the referral or handed it over) is a history event
too, naming who has it now (a staff fhirUser reference); status changes keep NULL.

Revision ID: 0017_event_assignee
Revises: audit_owner_only
Create Date: 2026-12-07 03:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017_event_assignee'
down_revision = 'audit_owner_only'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('referral_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assignee', sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('referral_event', schema=None) as batch_op:
        batch_op.drop_column('assignee')
