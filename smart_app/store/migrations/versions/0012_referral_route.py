"""The route a referral gets at creation: referral.ehr (the EHR identity), route_kind and route_team, and an index
for the queue's unrouted count and scope by EHR

Referrals made before this revision keep NULL routing columns and are scoped by iss and site keys, as before.

Revision ID: 0012_referral_route
Revises: 0011_referral_handoff
Create Date: 2026-12-07 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_referral_route'
down_revision = '0011_referral_handoff'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ehr', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('route_kind', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('route_team', sa.String(length=128), nullable=True))
        batch_op.create_index('ix_referral_ehr_route', ['ehr', 'route_kind', 'route_team'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_ehr_route')
        batch_op.drop_column('route_team')
        batch_op.drop_column('route_kind')
        batch_op.drop_column('ehr')
