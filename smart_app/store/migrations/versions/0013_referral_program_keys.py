"""referral.program_keys: the keys of a referral's referral_program rows, sorted and joined, so the social-work
queue counts referrals per program from the referral row alone (no join per count); filled here for every
referral that has program rows (the keys are HMACs: nothing to decrypt). A referral without rows keeps NULL and
is indexed from its summary when a queue first finds it.

Revision ID: 0013_referral_program_keys
Revises: 0012_referral_route
Create Date: 2026-12-07 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_referral_program_keys'
down_revision = '0012_referral_route'
branch_labels = None
depends_on = None

BATCH = 1000
NO_PROGRAM = 'NONE'


def upgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.add_column(sa.Column('program_keys', sa.Text(), nullable=True))
    _fill()


def _fill() -> None:
    conn = op.get_bind()
    referral = sa.table('referral', sa.column('id', sa.String), sa.column('program_keys', sa.Text))
    program = sa.table('referral_program', sa.column('referral_id', sa.String), sa.column('key', sa.String))
    update = (sa.update(referral).where(referral.c.id == sa.bindparam('rid'))
              .values(program_keys=sa.bindparam('keys')))
    last = ''
    while True:
        ids = conn.execute(sa.select(program.c.referral_id).where(program.c.referral_id > last)
                           .group_by(program.c.referral_id).order_by(program.c.referral_id)
                           .limit(BATCH)).scalars().all()
        if not ids:
            return
        keys: dict[str, set[str]] = {rid: set() for rid in ids}
        for rid, key in conn.execute(sa.select(program.c.referral_id, program.c.key)
                                     .where(program.c.referral_id.in_(ids))):
            keys[rid].add(key)
        conn.execute(update, [{'rid': rid, 'keys': ','.join(sorted(ks - {NO_PROGRAM}))} for rid, ks in keys.items()])
        last = ids[-1]


def downgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.drop_column('program_keys')
