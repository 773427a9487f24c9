"""audit_event and report_event partitioned by month on PostgreSQL; retention drops whole months

audit_event becomes a table partitioned by RANGE (at), one partition per calendar month (UTC) plus a DEFAULT
partition for rows no month partition takes; report_event by LIST (month), likewise. The primary keys become
(id, at) and (id, month) (a partitioned table's unique keys must hold the partition key); the ids keep their
sequences. Existing rows are copied over, month partitions made for every month they span and three months ahead.

audit_event keeps its guarantees: the row trigger (cloned onto every partition) lets only the owner delete rows past
the retention floor or re-encrypt patient_enc; each partition has the TRUNCATE trigger too and no right for any
role but the owner (the runtime role reaches rows through the parent alone, where it may INSERT and SELECT).
audit_event_purge(days) now drops the month partitions wholly older than max(days, floor), a few per run, then
deletes a bounded batch of older rows left in the partition the cut-off falls in or in the default one; it also
makes the months ahead (audit_event_partitions_ahead). report_event_purge(days) does the same for report events
(never less than a year). Both are SECURITY DEFINER (they run as the owner, who alone may drop a partition).
SQLite (the demo) is left as it was. See docs/decisions/0013-a-year-of-data.md.

Revision ID: monthly_partitions
Revises: followup_item
Create Date: 2026-12-07 06:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "monthly_partitions"
down_revision = "followup_item"
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3
PARTITIONS_PER_RUN = 2
ROWS_PER_RUN = 20000
REPORT_FLOOR_DAYS = 366


def audit_functions(s: str) -> list[str]:
    """A frozen copy of smart_app/ops/audit.py's partition and purge functions as of this revision (``s``: the
    schema as a quoted identifier)."""
    return [
        f"""CREATE OR REPLACE FUNCTION {s}.audit_event_add_partition(month_start date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
  first date := date_trunc('month', month_start)::date;
  part text := 'audit_event_' || to_char(month_start, '"y"YYYY"m"MM');
  taken boolean;
  holder record;
BEGIN
  IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = '{s}.audit_event'::regclass) <> 'p'
     OR to_regclass('{s}.' || quote_ident(part)) IS NOT NULL THEN
    RETURN false;
  END IF;
  IF to_regclass('{s}.audit_event_default') IS NOT NULL THEN
    SELECT EXISTS (SELECT 1 FROM {s}.audit_event_default
                    WHERE at >= first::timestamptz AND at < (first + interval '1 month')) INTO taken;
    IF taken THEN
      RETURN false;  -- that month's rows stay in the default partition (still guarded, still purged by age)
    END IF;
  END IF;
  EXECUTE format('CREATE TABLE {s}.%I PARTITION OF {s}.audit_event FOR VALUES FROM (%L) TO (%L)', part,
                 first::timestamptz, (first + interval '1 month')::timestamptz);
  EXECUTE format('CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON {s}.%I '
                 'FOR EACH STATEMENT EXECUTE FUNCTION {s}.audit_event_append_only()', part);
  -- Default privileges may have given the runtime role rights on the new table: only the owner keeps any.
  FOR holder IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
                 WHERE c.oid = ('{s}.' || quote_ident(part))::regclass AND a.grantee <> c.relowner LOOP
    EXECUTE format('REVOKE ALL ON {s}.%I FROM %s', part,
                   CASE WHEN holder.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(holder.grantee::regrole::text) END);
  END LOOP;
  RETURN true;
END $$""",
        f"REVOKE EXECUTE ON FUNCTION {s}.audit_event_add_partition(date) FROM PUBLIC",
        f"""CREATE OR REPLACE FUNCTION {s}.audit_event_partitions_ahead(months integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
  made integer := 0;
BEGIN
  FOR i IN 0..least(greatest(months, 0), 12) LOOP
    IF {s}.audit_event_add_partition((date_trunc('month', now()) + make_interval(months => i))::date) THEN
      made := made + 1;
    END IF;
  END LOOP;
  RETURN made;
END $$""",
        f"""CREATE OR REPLACE FUNCTION {s}.audit_event_purge(retention_days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
  cutoff timestamptz := now() - make_interval(days => greatest(retention_days, {s}.audit_event_retention_floor()));
  part record;
  n bigint;
  gone bigint := 0;
BEGIN
  PERFORM {s}.audit_event_partitions_ahead({MONTHS_AHEAD});
  FOR part IN SELECT c.oid::regclass AS rel FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c
                  ON c.oid = i.inhrelid
               WHERE i.inhparent = '{s}.audit_event'::regclass
                 AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
                 AND substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'TO \\(''([^'']+)''\\)')
                     ::timestamptz <= cutoff
               ORDER BY c.relname LIMIT {PARTITIONS_PER_RUN} LOOP
    EXECUTE format('SELECT count(*) FROM %s', part.rel) INTO n;
    EXECUTE format('DROP TABLE %s', part.rel);
    gone := gone + n;
  END LOOP;
  DELETE FROM {s}.audit_event
   WHERE at < cutoff
     AND id IN (SELECT id FROM {s}.audit_event WHERE at < cutoff ORDER BY at LIMIT {ROWS_PER_RUN});
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN gone + n;
END $$""",
    ]


def report_functions(s: str) -> list[str]:
    """A frozen copy of smart_app/report/retention.py's functions as of this revision."""
    return [
        f"""CREATE OR REPLACE FUNCTION {s}.report_event_add_partition(month_start date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
  key text := to_char(month_start, 'YYYY-MM');
  part text := 'report_event_' || to_char(month_start, '"y"YYYY"m"MM');
  taken boolean;
BEGIN
  IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = '{s}.report_event'::regclass) <> 'p'
     OR to_regclass('{s}.' || quote_ident(part)) IS NOT NULL THEN
    RETURN false;
  END IF;
  IF to_regclass('{s}.report_event_default') IS NOT NULL THEN
    SELECT EXISTS (SELECT 1 FROM {s}.report_event_default WHERE month = key) INTO taken;
    IF taken THEN
      RETURN false;
    END IF;
  END IF;
  EXECUTE format('CREATE TABLE {s}.%I PARTITION OF {s}.report_event FOR VALUES IN (%L)', part, key);
  RETURN true;
END $$""",
        f"REVOKE EXECUTE ON FUNCTION {s}.report_event_add_partition(date) FROM PUBLIC",
        f"""CREATE OR REPLACE FUNCTION {s}.report_event_purge(retention_days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
  cutoff text := to_char(now() - make_interval(days => greatest(retention_days, {REPORT_FLOOR_DAYS})), 'YYYY-MM');
  part record;
  n bigint;
  gone bigint := 0;
BEGIN
  FOR i IN 0..{MONTHS_AHEAD} LOOP
    PERFORM {s}.report_event_add_partition((date_trunc('month', now()) + make_interval(months => i))::date);
  END LOOP;
  FOR part IN SELECT c.oid::regclass AS rel FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c
                  ON c.oid = i.inhrelid
               WHERE i.inhparent = '{s}.report_event'::regclass
                 AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
                 AND substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'IN \\(''([^'']+)''\\)') < cutoff
               ORDER BY c.relname LIMIT {PARTITIONS_PER_RUN} LOOP
    EXECUTE format('SELECT count(*) FROM %s', part.rel) INTO n;
    EXECUTE format('DROP TABLE %s', part.rel);
    gone := gone + n;
  END LOOP;
  DELETE FROM {s}.report_event
   WHERE month < cutoff
     AND id IN (SELECT id FROM {s}.report_event WHERE month < cutoff ORDER BY month LIMIT {ROWS_PER_RUN});
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN gone + n;
END $$""",
    ]


def _schema() -> str:
    name = op.get_bind().execute(sa.text("SELECT current_schema()")).scalar()
    return '"' + str(name).replace('"', '""') + '"'


def _swap(s: str, table: str, partition_by: str, key: str, indexes: dict[str, str]) -> None:
    """Rename ``table`` aside, make the partitioned table with its columns, defaults, rights and indexes, move the
    id sequence over; the caller copies the rows and drops the old one."""
    op.execute(f"ALTER TABLE {s}.{table} RENAME TO {table}_unpartitioned")
    op.execute(f"ALTER TABLE {s}.{table}_unpartitioned RENAME CONSTRAINT {table}_pkey TO {table}_unpartitioned_pkey")
    for name in indexes:
        op.execute(f"ALTER INDEX {s}.{name} RENAME TO {name}_unpartitioned")
    op.execute(f"CREATE TABLE {s}.{table} (LIKE {s}.{table}_unpartitioned INCLUDING DEFAULTS) "
               f"PARTITION BY {partition_by}")
    op.execute(f"ALTER TABLE {s}.{table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id, {key})")
    op.execute(f"ALTER SEQUENCE {s}.{table}_id_seq OWNED BY {s}.{table}.id")
    for name, columns in indexes.items():
        op.execute(f"CREATE INDEX {name} ON {s}.{table} ({columns})")
    # The rights the old table had (a runtime role granted them by name rather than by default privileges).
    op.execute(f"""DO $$
DECLARE
  g record;
BEGIN
  FOR g IN SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = '{s}.{table}_unpartitioned'::regclass AND a.grantee <> c.relowner LOOP
    EXECUTE format('GRANT %s ON {s}.{table} TO %s', g.privilege_type,
                   CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
  END LOOP;
END $$""")


AUDIT_INDEXES = {"ix_audit_event_at": "at", "ix_audit_event_actor_at": "actor, at"}
REPORT_INDEXES = {"ix_report_event_month": "month, site"}
AUDIT_TRIGGERS = [
    "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON {s}.audit_event "
    "FOR EACH ROW EXECUTE FUNCTION {s}.audit_event_append_only()",
    "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON {s}.audit_event "
    "FOR EACH STATEMENT EXECUTE FUNCTION {s}.audit_event_append_only()",
]


def _partition_audit(s: str) -> None:
    _swap(s, "audit_event", "RANGE (at)", "at", AUDIT_INDEXES)
    for sql in audit_functions(s):
        op.execute(sql)
    op.execute(f"CREATE TABLE {s}.audit_event_default PARTITION OF {s}.audit_event DEFAULT")
    op.execute(f"CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON {s}.audit_event_default "
               f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.audit_event_append_only()")
    op.execute(f"REVOKE ALL ON {s}.audit_event_default FROM PUBLIC")
    # Months the rows span, and the months ahead; a copy before the guards (the rows are the old table's).
    op.execute(f"""SELECT {s}.audit_event_add_partition(m::date) FROM generate_series(
        date_trunc('month', coalesce((SELECT min(at) FROM {s}.audit_event_unpartitioned), now()) AT TIME ZONE 'UTC'),
        date_trunc('month', now() AT TIME ZONE 'UTC') + interval '{MONTHS_AHEAD} months', interval '1 month') m""")
    op.execute(f"""DO $$
DECLARE
  holder record;
BEGIN
  FOR holder IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
                 WHERE c.oid = '{s}.audit_event_default'::regclass AND a.grantee <> c.relowner LOOP
    EXECUTE format('REVOKE ALL ON {s}.audit_event_default FROM %s',
                   CASE WHEN holder.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(holder.grantee::regrole::text) END);
  END LOOP;
END $$""")
    op.execute(f"INSERT INTO {s}.audit_event SELECT * FROM {s}.audit_event_unpartitioned")
    op.execute(f"DROP TABLE {s}.audit_event_unpartitioned")
    for sql in AUDIT_TRIGGERS:
        op.execute(sql.format(s=s))
    # Only the owner keeps UPDATE, DELETE, TRUNCATE on the parent, whatever the copied rights were.
    op.execute(f"""DO $$
DECLARE
  holder record;
BEGIN
  FOR holder IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
                 WHERE c.oid = '{s}.audit_event'::regclass AND a.grantee <> c.relowner
                   AND a.privilege_type IN ('UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'REFERENCES') LOOP
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON {s}.audit_event FROM %s',
                   CASE WHEN holder.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(holder.grantee::regrole::text) END);
  END LOOP;
END $$""")


def _partition_report(s: str) -> None:
    _swap(s, "report_event", "LIST (month)", "month", REPORT_INDEXES)
    for sql in report_functions(s):
        op.execute(sql)
    op.execute(f"CREATE TABLE {s}.report_event_default PARTITION OF {s}.report_event DEFAULT")
    op.execute(f"""SELECT {s}.report_event_add_partition(m::date) FROM generate_series(
        coalesce((SELECT to_date(min(month), 'YYYY-MM') FROM {s}.report_event_unpartitioned
                   WHERE month ~ '^[0-9]{{4}}-[0-9]{{2}}$'), date_trunc('month', now() AT TIME ZONE 'UTC')),
        date_trunc('month', now() AT TIME ZONE 'UTC') + interval '{MONTHS_AHEAD} months', interval '1 month') m""")
    op.execute(f"INSERT INTO {s}.report_event SELECT * FROM {s}.report_event_unpartitioned")
    op.execute(f"DROP TABLE {s}.report_event_unpartitioned")


def _unpartition(s: str, table: str, indexes: dict[str, str]) -> None:
    op.execute(f"ALTER TABLE {s}.{table} RENAME TO {table}_partitioned")
    op.execute(f"ALTER TABLE {s}.{table}_partitioned RENAME CONSTRAINT {table}_pkey TO {table}_partitioned_pkey")
    for name in indexes:
        op.execute(f"ALTER INDEX {s}.{name} RENAME TO {name}_partitioned")
    op.execute(f"CREATE TABLE {s}.{table} (LIKE {s}.{table}_partitioned INCLUDING DEFAULTS)")
    op.execute(f"ALTER TABLE {s}.{table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id)")
    op.execute(f"ALTER SEQUENCE {s}.{table}_id_seq OWNED BY {s}.{table}.id")
    for name, columns in indexes.items():
        op.execute(f"CREATE INDEX {name} ON {s}.{table} ({columns})")
    op.execute(f"""DO $$
DECLARE
  g record;
BEGIN
  FOR g IN SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = '{s}.{table}_partitioned'::regclass AND a.grantee <> c.relowner LOOP
    EXECUTE format('GRANT %s ON {s}.{table} TO %s', g.privilege_type,
                   CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
  END LOOP;
END $$""")
    op.execute(f"INSERT INTO {s}.{table} SELECT * FROM {s}.{table}_partitioned")
    op.execute(f"DROP TABLE {s}.{table}_partitioned")  # its partitions go with it


# audit_owner_only's purge (row by row, no partitions), for the downgrade.
PURGE_BEFORE = """CREATE OR REPLACE FUNCTION {s}.audit_event_purge(retention_days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  gone bigint;
BEGIN
  DELETE FROM {s}.audit_event
   WHERE at < now() - make_interval(days => greatest(retention_days, {s}.audit_event_retention_floor()));
  GET DIAGNOSTICS gone = ROW_COUNT;
  RETURN gone;
END $$"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite (the demo): one file, nothing to partition
    s = _schema()
    _partition_audit(s)
    _partition_report(s)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    s = _schema()
    _unpartition(s, "audit_event", AUDIT_INDEXES)
    for sql in AUDIT_TRIGGERS:
        op.execute(sql.format(s=s))
    op.execute(PURGE_BEFORE.format(s=s))
    op.execute(f"DROP FUNCTION {s}.audit_event_partitions_ahead(integer)")
    op.execute(f"DROP FUNCTION {s}.audit_event_add_partition(date)")
    _unpartition(s, "report_event", REPORT_INDEXES)
    op.execute(f"DROP FUNCTION {s}.report_event_purge(integer)")
    op.execute(f"DROP FUNCTION {s}.report_event_add_partition(date)")
