"""launch.patient_key and launch.encounter_key: the keyed HMACs referrals, screen marks and follow-ups already
carry, so a launch page reads its patient's open follow-ups (and the visit's referral) with the launch itself

Launches made before stay NULL: their pages read those separately, as before, until the launch expires.

Revision ID: launch_patient_key
Revises: report_month
Create Date: 2026-12-07 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "launch_patient_key"
down_revision = "report_month"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("launch", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("encounter_key", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("launch", schema=None) as batch_op:
        batch_op.drop_column("encounter_key")
        batch_op.drop_column("patient_key")
