"""ix_referral_programs_unindexed: the referrals stored before their program index (``referral.program_keys`` NULL),
a partial index that is empty once they are indexed. The queue looks for such referrals every few minutes per scope
and process; without it that look read the whole referral table inside a social worker's request.

Revision ID: referral_programs_unindexed
Revises: launch_patient_key
Create Date: 2026-12-07 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "referral_programs_unindexed"
down_revision = "launch_patient_key"
branch_labels = None
depends_on = None

# As written at this revision (smart_app/store/models.py builds the same text).
UNINDEXED_SQL = "program_keys IS NULL"


def upgrade() -> None:
    op.create_index("ix_referral_programs_unindexed", "referral", ["id"], unique=False,
                    postgresql_where=sa.text(UNINDEXED_SQL), sqlite_where=sa.text(UNINDEXED_SQL))


def downgrade() -> None:
    op.drop_index("ix_referral_programs_unindexed", table_name="referral")
