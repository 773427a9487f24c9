"""worklist scope, contact log, closed loop, memory

referral_site (site keys for scope), referral_contact (encrypted contact attempts), patient_mark (memory
across launches), outbox.operation (closed-loop status rows), referral site name / patient and encounter
HMAC keys / first contact / closed at. Statuses written before (new, contacted, closed) stay as they are
and read as their FHIR Task equivalents (smart_app/store/task_status.py LEGACY).

Revision ID: 0006_worklist
Revises: 0005_audit_rekey
Create Date: 2026-11-29 20:22:39.170784
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_worklist'
down_revision = '0005_audit_rekey'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('patient_mark',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('patient_key', sa.String(length=64), nullable=False),
    sa.Column('encounter_key', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('patient_mark', schema=None) as batch_op:
        batch_op.create_index('ix_patient_mark_key_at', ['patient_key', 'at'], unique=False)

    op.create_table('referral_contact',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('referral_id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('by_reference', sa.String(length=256), nullable=True),
    sa.Column('detail_enc', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referral.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('referral_contact', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_contact_referral_id'), ['referral_id'], unique=False)

    op.create_table('referral_site',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('referral_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referral.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('referral_id', 'key', name='uq_referral_site')
    )
    with op.batch_alter_table('referral_site', schema=None) as batch_op:
        batch_op.create_index('ix_referral_site_key', ['key'], unique=False)
        batch_op.create_index(batch_op.f('ix_referral_site_referral_id'), ['referral_id'], unique=False)

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('operation', sa.String(length=16), nullable=False, server_default='create'))

    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.add_column(sa.Column('site_name', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('patient_key', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('encounter_key', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('first_contact_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_referral_patient_key'), ['patient_key'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_patient_key'))
        batch_op.drop_column('closed_at')
        batch_op.drop_column('first_contact_at')
        batch_op.drop_column('encounter_key')
        batch_op.drop_column('patient_key')
        batch_op.drop_column('site_name')

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('operation')

    with op.batch_alter_table('referral_site', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_site_referral_id'))
        batch_op.drop_index('ix_referral_site_key')

    op.drop_table('referral_site')
    with op.batch_alter_table('referral_contact', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_contact_referral_id'))

    op.drop_table('referral_contact')
    with op.batch_alter_table('patient_mark', schema=None) as batch_op:
        batch_op.drop_index('ix_patient_mark_key_at')

    op.drop_table('patient_mark')
