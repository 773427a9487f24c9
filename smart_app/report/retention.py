"""Retention of the program report's events: whole months, past the deployment's audit retention.

Report events hold no patient data (smart_app/report/events.py), so no law sets how long they are kept; they follow
the access audit's retention (tuning.audit_retention_days, 6 years by default), never less than a year, so a
mis-set value never empties this year's report. On PostgreSQL ``report_event`` is partitioned by month (migration
monthly_partitions): ``report_event_purge`` (SECURITY DEFINER: only the table's owner may drop a partition) makes
the months ahead, drops at most PARTITIONS_PER_RUN months past the retention and deletes a bounded batch of older
rows from the default partition. Elsewhere (SQLite, a table made by create_all) the rows are deleted by month.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, event, select, text
from sqlalchemy.orm import Session

from config.current import current_settings
from smart_app.report import memo
from smart_app.store.models import ReportEvent
from smart_app.store.partitions import BOUND, ROWS_PER_RUN, purge_function

MONTHS_AHEAD = 3
REPORT_FLOOR_DAYS = 366


def pg_functions(s: str) -> list[str]:
    """The month partitions' functions and the purge (``s``: the schema as a quoted identifier). A frozen copy lives
    in the migration that made them (smart_app/store/migrations/versions/monthly_partitions.py)."""
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
        purge_function(
            s, "report_event", column="month",
            cutoff="text := to_char(now() - make_interval(days => greatest(retention_days, "
                   f"{REPORT_FLOOR_DAYS})), 'YYYY-MM')",
            make_ahead=f"""FOR i IN 0..{MONTHS_AHEAD} LOOP
    PERFORM {s}.report_event_add_partition((date_trunc('month', now()) + make_interval(months => i))::date);
  END LOOP;""",
            # A LIST partition holds one month ('YYYY-MM'): past when that month is before the cut-off's.
            past_cutoff=f"substring({BOUND} FROM 'IN \\(''([^'']+)''\\)') < cutoff",
        ),
    ]


@event.listens_for(ReportEvent.__table__, "after_create")
def _create_functions(_table: Any, connection: Any, **_kw: Any) -> None:
    """Tests build their databases with create_all: the same functions as the migrations (on one table)."""
    if connection.dialect.name == "postgresql":
        name = connection.execute(text("SELECT current_schema()")).scalar()
        for sql in pg_functions('"' + str(name).replace('"', '""') + '"'):
            connection.execute(text(sql))


def _partition_months(db: Session) -> set[str]:
    """The months of report events' month partitions (none on a table of one piece)."""
    return {m for (m,) in db.execute(text(
        f"SELECT substring({BOUND} FROM 'IN \\(''([^'']+)''\\)') FROM pg_catalog.pg_inherits i "
        "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('report_event')")) if m}


def purge(db: Session, *, now: datetime | None = None) -> dict[str, int]:
    """Housekeeping (smart_app.ops.housekeeping): report events of months past the retention. Commits."""
    days = current_settings().audit_retention_days
    if db.get_bind().dialect.name == "postgresql":
        months = _partition_months(db)
        gone = db.execute(text("SELECT report_event_purge(:days)"), {"days": int(days)}).scalar()
        if memo.active(db):
            if gone:  # months dropped whole: no trigger sees that (rows deleted through the table are noted)
                memo.note_months(db, sorted(months - _partition_months(db)))
            memo.prune(db)
    else:
        cutoff = ((now or datetime.now(UTC)) - timedelta(days=max(days, REPORT_FLOOR_DAYS))).strftime("%Y-%m")
        batch = select(ReportEvent.id).where(ReportEvent.month < cutoff).limit(ROWS_PER_RUN)
        gone = db.execute(delete(ReportEvent).where(ReportEvent.id.in_(batch.scalar_subquery()))
                          .execution_options(synchronize_session=False)).rowcount
    db.commit()
    return {"report_events": int(gone or 0)}
