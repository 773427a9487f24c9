"""referral_program: the programs each referral names, keyed HMAC + encrypted id and name, so the social-work
queue filters, counts and sorts by program without decrypting every referral's summary (queue page)

Referrals stored before this revision have no rows; the queue indexes them from their summary the first
time it lists them (smart_app/worklist/views.py), as it needs the app's keys to read them.

Revision ID: 0009_referral_program
Revises: 0008_launch_user_tag
Create Date: 2026-11-30 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_referral_program'
down_revision = '0008_launch_user_tag'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('referral_program',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('referral_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('program_enc', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['referral_id'], ['referral.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('referral_id', 'key', name='uq_referral_program')
    )
    with op.batch_alter_table('referral_program', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_program_referral_id'), ['referral_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('referral_program', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_program_referral_id'))
    op.drop_table('referral_program')
