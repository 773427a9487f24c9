"""access audit (append-only) and outbox worker heartbeat

Revision ID: 0003_audit_heartbeat
Revises: 0002_cds_report
Create Date: 2026-11-29 20:18:52.534180
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003_audit_heartbeat'
down_revision = '0002_cds_report'
branch_labels = None
depends_on = None

PG_APPEND_ONLY = [
    """CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('ipv.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP;
END $$""",
    "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
    "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
    "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()",
]
SQLITE_APPEND_ONLY = [
    "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only (UPDATE refused)'); END",
]


def upgrade() -> None:
    op.create_table('audit_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=512), nullable=True),
    sa.Column('iss', sa.String(length=512), nullable=True),
    sa.Column('instance', sa.String(length=128), nullable=False),
    sa.Column('launch_ref', sa.String(length=16), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('object_id', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.String(length=256), nullable=True),
    sa.Column('patient_enc', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_event_actor_at', 'audit_event', ['actor', 'at'], unique=False)
    op.create_index('ix_audit_event_at', 'audit_event', ['at'], unique=False)
    op.create_table('worker_heartbeat',
    sa.Column('worker_id', sa.String(length=64), nullable=False),
    sa.Column('instance', sa.String(length=128), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('beat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('worker_id')
    )
    op.create_index(op.f('ix_worker_heartbeat_beat_at'), 'worker_heartbeat', ['beat_at'], unique=False)
    # Append-only (a frozen copy of smart_app/ops/audit.py's guards as of this revision).
    dialect = op.get_bind().dialect.name
    for sql in PG_APPEND_ONLY if dialect == "postgresql" else SQLITE_APPEND_ONLY if dialect == "sqlite" else []:
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    op.drop_index(op.f('ix_worker_heartbeat_beat_at'), table_name='worker_heartbeat')
    op.drop_table('worker_heartbeat')
    op.drop_index('ix_audit_event_at', table_name='audit_event')
    op.drop_index('ix_audit_event_actor_at', table_name='audit_event')
    op.drop_table('audit_event')
