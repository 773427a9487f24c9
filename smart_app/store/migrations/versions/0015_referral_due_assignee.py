"""Working the referral: referral.due_at (first contact due, from the urgency and the program's hours), the
assignee (fhirUser reference, name encrypted, when), the closing outcome (a plain code) and how many contact
attempts it counted; worklist_colleague, the social workers the queue has seen per EHR (for "Hand over to…").

Existing referrals keep NULL due_at: the queue counts their urgency's due time from created_at, around the clock.

Revision ID: 0015_referral_due_assignee
Revises: 0014_referral_backfill
Create Date: 2026-12-07 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015_referral_due_assignee'
down_revision = '0014_referral_backfill'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.add_column(sa.Column('due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('assignee', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('assignee_name_enc', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closing_outcome', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('closing_attempts', sa.Integer(), nullable=True))
        batch_op.create_index('ix_referral_ehr_assignee', ['ehr', 'assignee'], unique=False)
    op.create_table(
        'worklist_colleague',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('ehr', sa.String(length=128), nullable=False),
        sa.Column('reference', sa.String(length=256), nullable=False),
        sa.Column('name_enc', sa.LargeBinary(), nullable=True),
        sa.Column('teams', sa.Text(), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('ehr', 'reference', name='uq_worklist_colleague'),
    )
    with op.batch_alter_table('worklist_colleague', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_worklist_colleague_ehr'), ['ehr'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('worklist_colleague', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_worklist_colleague_ehr'))
    op.drop_table('worklist_colleague')
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_ehr_assignee')
        for column in ('closing_attempts', 'closing_outcome', 'assigned_at', 'assignee_name_enc', 'assignee',
                       'due_at'):
            batch_op.drop_column(column)
