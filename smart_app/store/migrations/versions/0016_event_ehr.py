"""audit_event.ehr, report_event.ehr, cds_card.ehr: the EHR identity (config/ehrs.py) a row belongs to, beside the
raw iss, so one EHR answering on several iss values is one EHR in the audit and the program report

No backfill: audit rows are append-only, so rows from before keep NULL and the audit listing maps their iss to the
EHR when it reads them (smart_app/ops/audit.py); counted report events and cards never kept an iss, and NULL says
they were counted before the identity was kept. The SQLite guard against UPDATE lists every column but patient_enc
(as migration 0005 made it), now ehr too; PostgreSQL's trigger compares whole rows and needs no change.

Revision ID: 0016_event_ehr
Revises: 0015_referral_due_assignee
Create Date: 2026-12-07 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016_event_ehr'
down_revision = '0015_referral_due_assignee'
branch_labels = None
depends_on = None

SQLITE_TRIGGER = ("CREATE TRIGGER audit_event_no_update BEFORE UPDATE OF id, at, action, actor, iss, ehr, instance, "
                  "launch_ref, request_id, object_id, detail ON audit_event "
                  "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only (UPDATE refused)'); END")
SQLITE_TRIGGER_0005 = ("CREATE TRIGGER audit_event_no_update BEFORE UPDATE OF id, at, action, actor, iss, instance, "
                       "launch_ref, request_id, object_id, detail ON audit_event "
                       "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only (UPDATE refused)'); END")
TABLES = ('audit_event', 'report_event', 'cds_card')


def _sqlite_trigger(sql: str) -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('DROP TRIGGER IF EXISTS audit_event_no_update')
        op.execute(sql)


def upgrade() -> None:
    for table in TABLES:
        # A plain ADD COLUMN (no table copy): the audit table's triggers and rows stay as they are.
        op.add_column(table, sa.Column('ehr', sa.String(length=512), nullable=True))
    _sqlite_trigger(SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('DROP TRIGGER IF EXISTS audit_event_no_update')  # it names ehr: dropped before the column
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('ehr')
    _sqlite_trigger(SQLITE_TRIGGER_0005)
