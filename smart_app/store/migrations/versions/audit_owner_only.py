"""audit_event append-only against the app's own role: no session setting opens the trigger any more

The trigger lets only the table's owner (the role that runs `db upgrade`, or a member of it) DELETE rows older
than the retention floor (audit_event_retention_floor(), 6 years, replaceable by the owner only) and UPDATE
patient_enc alone (rotate-keys); TRUNCATE never. audit_event_purge(days) runs as the owner (SECURITY DEFINER)
and deletes rows older than max(days, floor) only, so the runtime role's worker can still purge by age. Every
role but the owner loses UPDATE, DELETE, TRUNCATE, TRIGGER and REFERENCES on the table. The ipv.audit_purge and
ipv.audit_rekey settings no longer mean anything.

Revision ID: audit_owner_only
Revises: 0016_event_ehr
Create Date: 2026-12-07 03:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_owner_only"
down_revision = "0016_event_ehr"
branch_labels = None
depends_on = None

# 0005's function (the session-setting guard), for the downgrade.
PG_FUNCTION_0005 = """CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
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


def pg_append_only(schema: str) -> list[str]:
    """A frozen copy of smart_app/ops/audit.py's guards as of this revision."""
    return [
        f"""CREATE OR REPLACE FUNCTION {schema}.audit_event_retention_floor() RETURNS integer LANGUAGE sql IMMUTABLE
AS 'SELECT 2190'""",
        f"""CREATE OR REPLACE FUNCTION {schema}.audit_event_append_only() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  owner_oid oid;
BEGIN
  SELECT relowner INTO owner_oid FROM pg_catalog.pg_class WHERE oid = TG_RELID;
  IF TG_OP IN ('DELETE', 'UPDATE') AND pg_catalog.pg_has_role(current_user, owner_oid, 'USAGE') THEN
    IF TG_OP = 'DELETE'
       AND OLD.at < now() - make_interval(days => {schema}.audit_event_retention_floor()) THEN
      RETURN OLD;  -- past the retention floor, deleted by the owner (the purge)
    END IF;
    IF TG_OP = 'UPDATE' AND (to_jsonb(NEW) - 'patient_enc') = (to_jsonb(OLD) - 'patient_enc') THEN
      RETURN NEW;  -- rotate-keys re-encrypting patient_enc, nothing else
    END IF;
  END IF;
  RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP;
END $$""",
        f"""CREATE OR REPLACE FUNCTION {schema}.audit_event_purge(retention_days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  gone bigint;
BEGIN
  DELETE FROM {schema}.audit_event
   WHERE at < now() - make_interval(days => greatest(retention_days, {schema}.audit_event_retention_floor()));
  GET DIAGNOSTICS gone = ROW_COUNT;
  RETURN gone;
END $$""",
        # Whatever was granted before (a runtime role that owned the database, GRANT ALL ON ALL TABLES): only
        # the owner keeps UPDATE, DELETE or TRUNCATE on the audit table.
        f"""DO $$
DECLARE
  holder record;
BEGIN
  FOR holder IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
                 WHERE c.oid = '{schema}.audit_event'::regclass AND a.grantee <> c.relowner
                   AND a.privilege_type IN ('UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'REFERENCES') LOOP
    IF holder.grantee = 0 THEN
      EXECUTE 'REVOKE UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON {schema}.audit_event FROM PUBLIC';
    ELSE
      EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON {schema}.audit_event FROM %I',
                     holder.grantee::regrole::text);
    END IF;
  END LOOP;
END $$""",
    ]




def _schema() -> str:
    name = op.get_bind().execute(sa.text("SELECT current_schema()")).scalar()
    return '"' + str(name).replace('"', '""') + '"'


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite's trigger (0005) is unchanged: one process, no roles
    for sql in pg_append_only(_schema()):
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = _schema()
    op.execute(PG_FUNCTION_0005)
    op.execute(f"DROP FUNCTION IF EXISTS {schema}.audit_event_purge(integer)")
    op.execute(f"DROP FUNCTION IF EXISTS {schema}.audit_event_retention_floor()")
