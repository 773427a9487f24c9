"""Route the referrals stored before routing: site keys, program index, MRN key and route for every referral
without a route, through the app's own code (smart_app/worklist/backfill.py), so none is in no queue

This is a data migration that needs the app: the summaries are encrypted with its TOKEN_ENCRYPTION_KEY, the program
and MRN keys are HMACs under its SECRET_KEY, and the routes come from its deployment file. It runs inside
``flask --app smart_app db upgrade`` (an app context: the same transaction and advisory lock as every migration).
Without an app (the bare ``alembic`` command) it refuses when a referral waits, and the transaction leaves the
schema where it was; with nothing to route it needs nothing. docs/decisions/0008-referral-backfill.md says why.

Downgrade keeps the filled values: they are what a referral made at this revision has.

Revision ID: 0014_referral_backfill
Revises: 0013_referral_program_keys
Create Date: 2026-12-07 03:30:00
"""

from __future__ import annotations

from alembic import op

from smart_app.worklist import backfill

revision = '0014_referral_backfill'
down_revision = '0013_referral_program_keys'
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if backfill.pending(conn):
        backfill.backfill(conn, backfill.deployment_for_backfill())


def downgrade() -> None:
    pass
