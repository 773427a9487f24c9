"""audit_event: let rotate-keys re-encrypt patient_enc (and nothing else); everything else stays append-only

Revision ID: 0005_audit_rekey
Revises: 0004_writeback_issue8
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0005_audit_rekey"
down_revision = "0004_writeback_issue8"
branch_labels = None
depends_on = None

PG_FUNCTION = """CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('ipv.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  IF TG_OP = 'UPDATE' AND current_setting('ipv.audit_rekey', true) = 'on'
     AND (to_jsonb(NEW) - 'patient_enc') = (to_jsonb(OLD) - 'patient_enc') THEN
    RETURN NEW;  -- rotate-keys re-encrypting patient_enc, nothing else
  END IF;
  RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP;
END $$"""
PG_FUNCTION_0003 = """CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('ipv.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP;
END $$"""
SQLITE_TRIGGER = ("CREATE TRIGGER audit_event_no_update BEFORE UPDATE OF id, at, action, actor, iss, instance, "
                  "launch_ref, request_id, object_id, detail ON audit_event "
                  "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only (UPDATE refused)'); END")
SQLITE_TRIGGER_0003 = ("CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
                       "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only (UPDATE refused)'); END")


def _apply(pg: str, sqlite: str) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(pg)
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        op.execute(sqlite)


def upgrade() -> None:
    _apply(PG_FUNCTION, SQLITE_TRIGGER)


def downgrade() -> None:
    _apply(PG_FUNCTION_0003, SQLITE_TRIGGER_0003)
