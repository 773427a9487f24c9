"""chart write-back: one referral per launch, profile by path, unknown outcomes, bounded read-back

Revision ID: 0004_writeback_issue8
Revises: 0003_audit_heartbeat
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_writeback_issue8'
down_revision = '0003_audit_heartbeat'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One referral per launch (a unique index decides between concurrent consent POSTs).
    op.drop_index(op.f('ix_referral_launch_id'), table_name='referral')
    op.create_index(op.f('ix_referral_launch_id'), 'referral', ['launch_id'], unique=True)
    # An EHR profile may be a path: room for an absolute file path.
    with op.batch_alter_table('referral') as batch:
        batch.alter_column('profile', existing_type=sa.String(length=64), type_=sa.String(length=512),
                           existing_nullable=False)
    with op.batch_alter_table('outbox') as batch:
        batch.alter_column('profile', existing_type=sa.String(length=64), type_=sa.String(length=512),
                           existing_nullable=False)
        batch.add_column(sa.Column('outcome_unknown', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('label_attempts', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('label_attempts')
        batch.drop_column('outcome_unknown')
        batch.alter_column('profile', existing_type=sa.String(length=512), type_=sa.String(length=64),
                           existing_nullable=False)
    with op.batch_alter_table('referral') as batch:
        batch.alter_column('profile', existing_type=sa.String(length=512), type_=sa.String(length=64),
                           existing_nullable=False)
    op.drop_index(op.f('ix_referral_launch_id'), table_name='referral')
    op.create_index(op.f('ix_referral_launch_id'), 'referral', ['launch_id'], unique=False)
