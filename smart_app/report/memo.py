"""The program report kept while the months it shows do not change (PostgreSQL).

Counting a year of a health system and deciding its suppression takes seconds; the months a report shows are closed
and change only when a late event arrives (a first contact, a closing outcome or a hand-off outcome recorded
later, a referral deleted at the end of its retention, report events purged). So the numbers shown (every cell,
rate and median of one period's view, with the periods offered) are kept in ``report_memo``, with the snapshot
(``pg_current_snapshot()``) taken before their counts were read. Statement triggers on ``referral``,
``referral_dims`` and ``report_event`` note in ``report_change`` each transaction that changes them and the months
it touches (migration report_memo). A kept report is shown again only while no transaction its snapshot did not
see has changed a month before the one it was read in; else it is counted again. The check is exact whatever the
order transactions commit in: it asks about transaction ids, not times or ids handed out in order.

A kept report is used for ``MAX_AGE`` at most, the months kept for ``MONTHS_MAX_AGE``; change notes are pruned
after ``NOTES_KEPT`` (the worker's housekeeping) once every kept snapshot has seen them, so a note is gone only
once no kept report or month could need it. Counting every month from scratch is then for an EHR's first report,
months unread for ``MONTHS_MAX_AGE``, and a change noted for every month. Keys hold the EHR, the due times, the period,
the month the report was read in and ``FORMAT``: bump it when what is counted or how it is suppressed changes.

When a report must be counted again, its months are not all read again: each closed month's counts (per site,
team and kind) and hours to first contact (per site and team) are kept in ``report_month`` under a key of the
EHR and due times, valid as of the snapshot kept beside them in ``report_memo``. The months a transaction that
snapshot did not see has changed, and the months closed since, are counted again (one month's referrals through
``ix_referral_dims_month``); the others are read as kept, merged into periods in Python, and a period's median is
the median of its months' hours (the same numbers: the hours are the database's). A change noted for every month
counts every month again.

SQLite (the demo) and databases without the triggers count every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from flask import Flask, current_app, has_app_context
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from smart_app.report.periods import Period, month_key, month_number
from smart_app.store.models import Base

log = logging.getLogger(__name__)

FORMAT = 1
EVERY_MONTH = "0000-00"  # the month a change to any month is noted with (TRUNCATE)
MAX_AGE = timedelta(hours=12)
# Months kept are counted again only where changed: kept while read, with the notes since their snapshot.
MONTHS_MAX_AGE = timedelta(days=7)
NOTES_KEPT = timedelta(days=1)
TABLES = (("referral", "report_change_by_referral"), ("referral_dims", "report_change_by_dims"),
          ("report_event", "report_change_by_month"))


def pg_triggers(s: str) -> list[str]:
    """The change notes' functions and triggers (``s``: the schema as a quoted identifier; the functions name
    every table with it, as the purge's writes run them with an empty search path). Report dimensions note their
    referral's month made too: a referral without them is counted in that month, so adding or removing them moves
    it between two months, each counted again alone. Frozen copies live in the migrations that made them
    (smart_app/store/migrations/versions/report_memo.py, smart_app/store/migrations/versions/report_month.py)."""
    note = (f"INSERT INTO {s}.report_change (xid, month) SELECT DISTINCT pg_current_xact_id()::text::bigint, m "
            "FROM ({}) x WHERE m IS NOT NULL ON CONFLICT DO NOTHING")
    by_month = "SELECT month AS m FROM {rows}"
    by_referral = ("SELECT to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS m FROM {rows} r UNION ALL "
                   f"SELECT d.month FROM {{rows}} r JOIN {s}.referral_dims d ON d.referral_id = r.id")
    by_dims = ("SELECT month AS m FROM {rows} UNION ALL SELECT to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM') "
               f"FROM {{rows}} d JOIN {s}.referral r ON r.id = d.referral_id")
    out = []
    for function, rows_sql in (("report_change_by_month", by_month), ("report_change_by_referral", by_referral),
                               ("report_change_by_dims", by_dims)):
        out.append(f"""CREATE OR REPLACE FUNCTION {s}.{function}() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    {note.format(rows_sql.format(rows='new_rows'))};
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {note.format(rows_sql.format(rows='old_rows'))};
  END IF;
  RETURN NULL;
END $$""")
    out.append(f"""CREATE OR REPLACE FUNCTION {s}.report_change_any() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO {s}.report_change (xid, month) VALUES (pg_current_xact_id()::text::bigint, '0000-00')
  ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$""")
    for table, function in TABLES:
        out += [
            f"CREATE TRIGGER {table}_report_insert AFTER INSERT ON {s}.{table} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.{function}()",
            f"CREATE TRIGGER {table}_report_update AFTER UPDATE ON {s}.{table} REFERENCING OLD TABLE AS old_rows "
            f"NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {s}.{function}()",
            f"CREATE TRIGGER {table}_report_delete AFTER DELETE ON {s}.{table} REFERENCING OLD TABLE AS old_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.{function}()",
            f"CREATE TRIGGER {table}_report_truncate AFTER TRUNCATE ON {s}.{table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.report_change_any()",
        ]
    return out


@event.listens_for(Base.metadata, "after_create")
def _create_triggers(_metadata: Any, connection: Any, **_kw: Any) -> None:
    """Tests build their databases with create_all: the same triggers as the migrations, once every table is there."""
    if connection.dialect.name == "postgresql" and connection.execute(text(
            "SELECT to_regclass('report_change') IS NOT NULL AND to_regclass('referral_dims') IS NOT NULL "
            "AND to_regclass('report_event') IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE "
            "tgname = 'referral_report_update' AND tgrelid = to_regclass('referral'))")).scalar():
        name = connection.execute(text("SELECT current_schema()")).scalar()
        for sql in pg_triggers('"' + str(name).replace('"', '""') + '"'):
            connection.execute(text(sql))


def active(db: Session) -> bool:
    """PostgreSQL with the change notes' triggers (asked once per engine of the app; outside an app, every time)."""
    bind = db.get_bind()
    if bind.dialect.name != "postgresql" or not isinstance(bind, Engine):
        return False
    known = _known(current_app) if has_app_context() else WeakKeyDictionary()
    if bind not in known:
        known[bind] = bool(db.execute(text(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'referral_report_update' "
            "AND tgrelid = to_regclass('referral')) AND to_regclass('report_memo') IS NOT NULL "
            "AND to_regclass('report_month') IS NOT NULL")).scalar())
    return known[bind]


def _known(app: Flask) -> WeakKeyDictionary[Engine, bool]:
    """What this app asked its engines: kept per app (its database), never shared between apps."""
    return app.extensions.setdefault("report_memo_active", WeakKeyDictionary())


def forget(app: Flask) -> None:
    """As a new process starts: the app asks its database again (the kept reports in it stay)."""
    app.extensions.pop("report_memo_active", None)


def key_of(ehr: Any, due: Any, before_month: int, period: Period) -> str:
    """The kept report's key: what, besides the counted rows, decides its numbers."""
    parts = [FORMAT, None if ehr is None else [ehr.id, sorted(ehr.iss)], due.urgent_hours, due.routine_hours,
             before_month, period.id]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def read(db: Session, key: str, before_month: int) -> dict[str, Any] | None:
    """The kept report, while no transaction its snapshot did not see has changed a month before ``before_month``
    (and it is younger than MAX_AGE); else None."""
    found = db.execute(text("SELECT snapshot, body FROM report_memo WHERE key = :key AND made_at > :since"),
                       {"key": key, "since": _now(db) - MAX_AGE}).first()
    if found is None:
        return None
    changed = db.execute(text(
        "SELECT EXISTS (SELECT 1 FROM report_change WHERE month < :before AND xid >= pg_snapshot_xmin(CAST(:snap AS "
        "pg_snapshot))::text::bigint AND NOT pg_visible_in_snapshot(xid::text::xid8, CAST(:snap AS pg_snapshot)))"),
        {"snap": found.snapshot, "before": month_key(before_month)}).scalar()
    return None if changed else json.loads(found.body)


def snapshot(db: Session) -> tuple[str, datetime]:
    """The snapshot to keep with counts read from now on (taken before them: a change it does not see is a change
    the counts may have missed), and when."""
    row = db.execute(text("SELECT pg_current_snapshot()::text, statement_timestamp()")).one()
    return row[0], row[1]


def write(db: Session, key: str, taken: tuple[str, datetime], body: dict[str, Any]) -> None:
    """Keep a report, in a transaction of its own (the request's may be read-only or roll back). A failure is
    logged and the report shown all the same."""
    try:
        with db.get_bind().begin() as conn:
            conn.execute(text("INSERT INTO report_memo (key, snapshot, made_at, body) VALUES (:key, :snap, :at, :body) "
                              "ON CONFLICT (key) DO UPDATE SET snapshot = excluded.snapshot, "
                              "made_at = excluded.made_at, body = excluded.body"),
                         {"key": key, "snap": taken[0], "at": taken[1], "body": json.dumps(body)})
    except SQLAlchemyError:
        log.warning("report_memo_write_failed", exc_info=True)


def months_key(ehr: Any, due: Any) -> str:
    """The key of the months kept for an EHR and due times (any period, any month it is read in)."""
    parts = [FORMAT, "months", None if ehr is None else [ehr.id, sorted(ehr.iss)], due.urgent_hours,
             due.routine_hours]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@dataclass(frozen=True)
class KeptMonths:
    """The months kept under a key: every month before ``through`` was counted, and is right but for ``changed``
    (the months transactions its snapshot did not see have changed since; None: every month)."""

    through: int
    changed: set[int] | None


def kept_months(db: Session, key: str) -> KeptMonths | None:
    """What is kept under ``key`` (younger than MONTHS_MAX_AGE; no note its snapshot needs is pruned), or None."""
    found = db.execute(text("SELECT snapshot, body FROM report_memo WHERE key = :key AND made_at > :since"),
                       {"key": key, "since": _now(db) - MONTHS_MAX_AGE}).first()
    if found is None:
        return None
    noted = {m for (m,) in db.execute(text(
        "SELECT DISTINCT month FROM report_change WHERE xid >= pg_snapshot_xmin(CAST(:snap AS pg_snapshot))::text"
        "::bigint AND NOT pg_visible_in_snapshot(xid::text::xid8, CAST(:snap AS pg_snapshot))"),
        {"snap": found.snapshot})}
    through = int(json.loads(found.body)["through"])
    return KeptMonths(through, None if EVERY_MONTH in noted else {month_number(m) for m in noted})


def read_months(db: Session, key: str, months: range) -> dict[int, dict[str, Any]]:
    """The counts kept for ``months`` (those with any)."""
    rows = db.execute(text("SELECT month, counts FROM report_month WHERE key = :key AND month >= :first "
                           "AND month <= :last"),
                      {"key": key, "first": month_key(months.start), "last": month_key(months.stop - 1)})
    return {month_number(m): json.loads(body) for m, body in rows}


def read_hours(db: Session, key: str, months: range) -> dict[int, list[Any]]:
    """The hours to first contact kept for ``months`` (those with any): per month, [site, team, [hours]]."""
    rows = db.execute(text("SELECT month, hours FROM report_month WHERE key = :key AND month >= :first "
                           "AND month <= :last"),
                      {"key": key, "first": month_key(months.start), "last": month_key(months.stop - 1)})
    return {month_number(m): json.loads(body) for m, body in rows}


def write_months(db: Session, key: str, taken: tuple[str, datetime], through: int, recounted: set[int] | None,
                 counted: dict[int, tuple[dict[str, Any], list[Any]]]) -> None:
    """Keep months counted after ``taken`` (the snapshot taken before they were read): ``recounted`` the months
    counted again (None: all), ``counted`` those of them with data. In a transaction of its own; a failure is
    logged (the next report counts again)."""
    try:
        with db.get_bind().begin() as conn:
            if recounted is None:
                conn.execute(text("DELETE FROM report_month WHERE key = :key"), {"key": key})
            elif recounted:
                conn.execute(text("DELETE FROM report_month WHERE key = :key AND month = ANY(:months)"),
                             {"key": key, "months": [month_key(m) for m in sorted(recounted)]})
            if counted:
                conn.execute(text("INSERT INTO report_month (key, month, counts, hours) VALUES (:key, :month, "
                                  ":counts, :hours) ON CONFLICT (key, month) DO UPDATE SET counts = "
                                  "excluded.counts, hours = excluded.hours"),
                             [{"key": key, "month": month_key(m), "counts": json.dumps(c), "hours": json.dumps(h)}
                              for m, (c, h) in sorted(counted.items())])
            conn.execute(text("INSERT INTO report_memo (key, snapshot, made_at, body) VALUES (:key, :snap, :at, "
                              ":body) ON CONFLICT (key) DO UPDATE SET snapshot = excluded.snapshot, "
                              "made_at = excluded.made_at, body = excluded.body"),
                         {"key": key, "snap": taken[0], "at": taken[1], "body": json.dumps({"through": through})})
    except SQLAlchemyError:
        log.warning("report_month_write_failed", exc_info=True)


def prune(db: Session) -> int:
    """Housekeeping: kept reports past MAX_AGE, months past MONTHS_MAX_AGE, and change notes past NOTES_KEPT
    that every snapshot still kept has seen. No commit."""
    now = _now(db)
    db.execute(text("DELETE FROM report_memo k WHERE made_at < :months OR (made_at < :reports AND NOT EXISTS "
                    "(SELECT 1 FROM report_month m WHERE m.key = k.key))"),
               {"months": now - MONTHS_MAX_AGE, "reports": now - MAX_AGE})
    db.execute(text("DELETE FROM report_month m WHERE NOT EXISTS (SELECT 1 FROM report_memo k WHERE k.key = m.key)"))
    return int(db.execute(text(
        "DELETE FROM report_change c WHERE at < :since AND NOT EXISTS (SELECT 1 FROM report_memo k WHERE "
        "NOT pg_visible_in_snapshot(c.xid::text::xid8, CAST(k.snapshot AS pg_snapshot)))"),
        {"since": now - NOTES_KEPT}).rowcount or 0)


def note_months(db: Session, months: list[str]) -> None:
    """A change the triggers do not see (report events' month partitions dropped by the purge): those months
    are counted again. No commit."""
    if months:
        db.execute(text("INSERT INTO report_change (xid, month) SELECT pg_current_xact_id()::text::bigint, m "
                        "FROM unnest(CAST(:months AS text[])) m ON CONFLICT DO NOTHING"), {"months": sorted(months)})


def _now(db: Session) -> datetime:
    return db.execute(text("SELECT statement_timestamp()")).scalar()
