"""The bounded purge of a month-partitioned table on PostgreSQL, shared by the access audit (``audit_event``, RANGE
partitions on ``at``) and the program report (``report_event``, LIST partitions on ``month``).

One run makes the months ahead, drops at most PARTITIONS_PER_RUN whole month partitions past the cut-off (a few a
run, so one run stays short whatever was left behind) and then deletes at most ROWS_PER_RUN older rows left in the
month the cut-off falls in or in the default partition. The tables differ only in how the cut-off is worked out and
how a partition's bound is compared with it; those come in as SQL. The migrations that installed these functions
keep their own frozen copies (a migration never follows later code).
"""

from __future__ import annotations

PARTITIONS_PER_RUN = 2
ROWS_PER_RUN = 20000
# A partition's bound as PostgreSQL prints it: FOR VALUES FROM ('…') TO ('…') for a RANGE partition,
# FOR VALUES IN ('…') for a LIST one. ``past_cutoff`` below tests this text against ``cutoff``.
BOUND = "pg_catalog.pg_get_expr(c.relpartbound, c.oid)"


def purge_function(s: str, table: str, *, column: str, cutoff: str, make_ahead: str, past_cutoff: str) -> str:
    """``CREATE OR REPLACE FUNCTION {s}.{table}_purge(retention_days integer) RETURNS bigint``, run as the table's
    owner (SECURITY DEFINER: only the owner may drop a partition).

    ``s``: the schema as a quoted identifier; ``column``: what a row's age is read from, compared with the
    ``cutoff`` declaration (``type := expression``, may use ``retention_days``); ``make_ahead``: the statements
    that make the months ahead; ``past_cutoff``: the condition, on BOUND, that a whole partition is older than
    ``cutoff``."""
    return f"""CREATE OR REPLACE FUNCTION {s}.{table}_purge(retention_days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
  cutoff {cutoff};
  part record;
  n bigint;
  gone bigint := 0;
BEGIN
  {make_ahead}
  FOR part IN SELECT c.oid::regclass AS rel FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c
                  ON c.oid = i.inhrelid
               WHERE i.inhparent = '{s}.{table}'::regclass
                 AND {BOUND} <> 'DEFAULT'
                 AND {past_cutoff}
               ORDER BY c.relname LIMIT {PARTITIONS_PER_RUN} LOOP
    EXECUTE format('SELECT count(*) FROM %s', part.rel) INTO n;
    EXECUTE format('DROP TABLE %s', part.rel);
    gone := gone + n;
  END LOOP;
  DELETE FROM {s}.{table}
   WHERE {column} < cutoff
     AND id IN (SELECT id FROM {s}.{table} WHERE {column} < cutoff ORDER BY {column} LIMIT {ROWS_PER_RUN});
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN gone + n;
END $$"""
