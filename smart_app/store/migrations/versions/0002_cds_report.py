"""cds hooks jti, cards and de-identified report events

Revision ID: 0002_cds_report
Revises: 0001_baseline
Create Date: 2026-11-29 20:16:23.303032
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002_cds_report'
down_revision = '0001_baseline'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cds_card',
    sa.Column('uuid', sa.String(length=64), nullable=False),
    sa.Column('service', sa.String(length=64), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('uuid')
    )
    op.create_index(op.f('ix_cds_card_created_at'), 'cds_card', ['created_at'], unique=False)
    op.create_table('cds_jti',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_index(op.f('ix_cds_jti_expires_at'), 'cds_jti', ['expires_at'], unique=False)
    op.create_table('report_event',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_report_event_month', 'report_event', ['month', 'site'], unique=False)
    op.create_table('referral_dims',
    sa.Column('referral_id', sa.String(length=64), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('instrument', sa.String(length=32), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('contacted', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referral.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('referral_id')
    )


def downgrade() -> None:
    op.drop_table('referral_dims')
    op.drop_index('ix_report_event_month', table_name='report_event')
    op.drop_table('report_event')
    op.drop_index(op.f('ix_cds_jti_expires_at'), table_name='cds_jti')
    op.drop_table('cds_jti')
    op.drop_index(op.f('ix_cds_card_created_at'), table_name='cds_card')
    op.drop_table('cds_card')
