"""The social-work queue in SQL: referral.reference_code (filled for existing referrals) and referral.mrn_key for
search, indexes for the queue's scope and age order, and worklist_saved_filter (a user's saved queue views)

Referrals made before this revision get their reference code (computed from the id, as the chart note has it);
their mrn_key stays NULL: the MRN is in the encrypted summary only, and the queue says such referrals cannot be
found by MRN.

Revision ID: 0010_queue_in_sql
Revises: 0009_referral_program
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhir.builders import reference_code

revision = '0010_queue_in_sql'
down_revision = '0009_referral_program'
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reference_code', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('mrn_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_referral_reference_code'), ['reference_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_referral_mrn_key'), ['mrn_key'], unique=False)
        batch_op.create_index('ix_referral_iss_created', ['iss', 'created_at'], unique=False)
    with op.batch_alter_table('referral_site', schema=None) as batch_op:
        batch_op.create_index('ix_referral_site_key_referral', ['key', 'referral_id'], unique=False)
        batch_op.drop_index('ix_referral_site_key')
    op.create_table('worklist_saved_filter',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('user_tag', sa.String(length=64), nullable=False),
    sa.Column('query', sa.String(length=1024), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('user_tag', 'query', name='uq_worklist_saved_filter')
    )
    with op.batch_alter_table('worklist_saved_filter', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_worklist_saved_filter_user_tag'), ['user_tag'], unique=False)
    _fill_reference_codes()


def _fill_reference_codes() -> None:
    conn = op.get_bind()
    referral = sa.table('referral', sa.column('id', sa.String), sa.column('reference_code', sa.String))
    update = (sa.update(referral).where(referral.c.id == sa.bindparam('rid'))
              .values(reference_code=sa.bindparam('code')))
    while True:
        ids = conn.execute(sa.select(referral.c.id).where(referral.c.reference_code.is_(None))
                           .limit(BATCH)).scalars().all()
        if not ids:
            return
        conn.execute(update, [{'rid': rid, 'code': reference_code(rid)} for rid in ids])


def downgrade() -> None:
    with op.batch_alter_table('worklist_saved_filter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_worklist_saved_filter_user_tag'))
    op.drop_table('worklist_saved_filter')
    with op.batch_alter_table('referral_site', schema=None) as batch_op:
        batch_op.create_index('ix_referral_site_key', ['key'], unique=False)
        batch_op.drop_index('ix_referral_site_key_referral')
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_iss_created')
        batch_op.drop_index(batch_op.f('ix_referral_mrn_key'))
        batch_op.drop_index(batch_op.f('ix_referral_reference_code'))
        batch_op.drop_column('mrn_key')
        batch_op.drop_column('reference_code')
