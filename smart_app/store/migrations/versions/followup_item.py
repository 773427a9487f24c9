"""followup_item: the open response item a positive self-administered screen opens until the clinician records a
response (smart_app/followup/items.py)

Revision ID: followup_item
Revises: referral_queue_indexes
Create Date: 2026-12-07 06:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'followup_item'
down_revision = 'referral_queue_indexes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'followup_item',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('launch_id', sa.String(length=64), nullable=False),
        sa.Column('ehr', sa.String(length=128), nullable=False),
        sa.Column('iss', sa.String(length=512), nullable=False),
        sa.Column('patient_key', sa.String(length=64), nullable=False),
        sa.Column('encounter_key', sa.String(length=64), nullable=True),
        sa.Column('site', sa.String(length=64), nullable=False),
        sa.Column('site_name', sa.String(length=256), nullable=True),
        sa.Column('site_keys', sa.Text(), nullable=False),
        sa.Column('summary_enc', sa.LargeBinary(), nullable=True),
        sa.Column('month', sa.String(length=7), nullable=False),
        sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('visit_ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('response', sa.String(length=32), nullable=True),
        sa.Column('responded_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('responder_role', sa.String(length=32), nullable=True),
        sa.Column('response_launch_id', sa.String(length=64), nullable=True),
        sa.Column('first_response_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('launch_id'),
    )
    op.create_index('ix_followup_ehr_status_opened', 'followup_item', ['ehr', 'status', 'opened_at'], unique=False)
    op.create_index('ix_followup_patient_status', 'followup_item', ['patient_key', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_followup_patient_status', table_name='followup_item')
    op.drop_index('ix_followup_ehr_status_opened', table_name='followup_item')
    op.drop_table('followup_item')
