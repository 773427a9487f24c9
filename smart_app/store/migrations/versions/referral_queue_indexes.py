"""The queue's indexes at volume (docs/decisions/0012-queue-at-volume.md): ix_referral_open_route, the open
referrals keyed by EHR and route with every column the alert counts (/readyz, /metrics) and the queue's overdue
banner read (partial and covering: those counts scan it instead of the referral table); ix_referral_created, the
referrals in age order, which the queue's page walks and stops once it is full.

Revision ID: referral_queue_indexes
Revises: 0017_event_assignee
Create Date: 2026-12-07 04:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'referral_queue_indexes'
down_revision = '0017_event_assignee'
branch_labels = None
depends_on = None

# The open statuses as stored when this revision was written (the Task codes and the older words that read as them):
# smart_app/store/models.py builds the same list, so a model built from a later list shows up as a difference.
OPEN_STORED_SQL = "status IN ('accepted', 'contacted', 'in-progress', 'new', 'on-hold', 'requested')"


def upgrade() -> None:
    op.create_index('ix_referral_open_route', 'referral', ['ehr', 'route_kind', 'route_team'], unique=False,
                    postgresql_include=['status', 'urgent', 'first_contact_at', 'created_at', 'due_at', 'assignee',
                                        'iss', 'id'],
                    postgresql_where=sa.text(OPEN_STORED_SQL), sqlite_where=sa.text(OPEN_STORED_SQL))


    op.create_index('ix_referral_created', 'referral', ['created_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_referral_created', table_name='referral')
    op.drop_index('ix_referral_open_route', table_name='referral')
