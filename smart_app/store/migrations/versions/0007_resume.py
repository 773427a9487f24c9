"""launch.resumable_until: resume after an accidental quick exit

Revision ID: 0007_resume
Revises: 0006_worklist
Create Date: 2026-11-29 22:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007_resume'
down_revision = '0006_worklist'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('launch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resumable_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('launch', schema=None) as batch_op:
        batch_op.drop_column('resumable_until')
