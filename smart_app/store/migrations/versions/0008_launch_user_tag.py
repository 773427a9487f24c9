"""launch.user_tag: keyed HMAC of the launch's (iss, EHR user), so a new sign-in in the same browser binds the
browser's other launches without decrypting each one's context (launch at the floor)

Revision ID: 0008_launch_user_tag
Revises: 0007_resume
Create Date: 2026-11-29 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_launch_user_tag'
down_revision = '0007_resume'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('launch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user_tag', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('launch', schema=None) as batch_op:
        batch_op.drop_column('user_tag')
