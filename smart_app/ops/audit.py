"""Access audit (HIPAA 45 CFR 164.312(b), audit controls): who did what, for which patient, when, where.

Call ``record_audit(action, ...)`` from a feature at the moment the access happens::

    from smart_app.ops.audit import record_audit
    record_audit("view_result")                           # in a /l/<lid>/ view: who/patient from g.launch
    record_audit("change_status", object_id=rid, detail="new->contacted", db=db)   # in the caller's transaction
    record_audit("write_resource", launch=launch, detail="DocumentReference", resources=["DocumentReference/7"])

Who: the launch's ``fhirUser`` and ``iss`` (or ``actor=``/``iss=`` given), and the EHR identity of that ``iss``
(``ehr``, config/ehrs.py: several iss values of one EHR are one EHR to the privacy office). Patient: the launch's
patient id and MRN, encrypted (``patient_enc``, smart_app.store.crypto). ``detail`` and ``object_id`` must be
non-PHI (our own ids, resource types, status words); ``resources`` (chart resource ids) are encrypted with the
patient.

The table is append-only: nothing here updates or deletes a row except ``purge_audit`` (tuning.audit_retention_days);
the ORM refuses updates and deletes of AuditEvent objects. On PostgreSQL the app's runtime role may only INSERT
and SELECT there (DEPLOY.md, database roles), and a trigger lets only the table's owner DELETE rows past the
retention floor (through ``audit_event_purge``) or UPDATE ``patient_enc`` alone (rotate-keys, run as the owner);
TRUNCATE never, and no session setting changes that. On SQLite a trigger refuses UPDATE of any other column.

``flask --app smart_app audit`` lists rows for the privacy office (by patient, user, action, date range), as a
table, CSV or JSON; each listing is itself audited ("export").
"""

from __future__ import annotations

import csv
import getpass
import json
import os
import socket
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import click
from flask import Flask, current_app, g, has_request_context
from flask.cli import with_appcontext
from sqlalchemy import delete, event, select, text
from sqlalchemy.orm import Session

from config.current import current_settings, settings_of
from config.ehrs import ehr_id_for
from smart_app.ops.observability import ACCESS, current_request_id, launch_ref
from smart_app.store.crypto import Undecryptable, decrypt_json, encrypt_json
from smart_app.store.db import get_session, session_scope
from smart_app.store.models import AuditEvent
from smart_app.store.partitions import BOUND, purge_function

ACTIONS = {
    "launch": "app launched for a patient (or standalone)",
    "view_result": "screening result viewed",
    "write_resource": "chart resource written",
    "view_worklist": "social-work queue viewed",
    "open_referral": "referral opened (history)",
    "change_status": "referral status changed",
    "export": "data exported (audit listing, report CSV, social-work queue)",
    "log_contact": "social-work contact attempt recorded",
    "assign_referral": "referral taken or handed over (staff references only)",
    "view_report": "program report viewed",
    "followup_response": "response recorded to a positive self-administered screen (the code only)",
}
DEFAULT_RETENTION_DAYS = 2190  # 6 years: HIPAA documentation retention, 45 CFR 164.316(b)(2)(i)

# -- append-only guards ------------------------------------------------------------------------------------
# PostgreSQL: the runtime role has INSERT and SELECT on audit_event and nothing else there (DEPLOY.md, database
# roles); the table belongs to the owner role that runs `db upgrade`. The trigger below holds even for a role
# that was granted more: DELETE and UPDATE pass only for the table's owner (or a member of it, or the purge
# function, which runs as the owner), DELETE only of rows older than the retention floor, UPDATE only of
# patient_enc (rotate-keys); TRUNCATE never. No session setting opens it. The floor is a function only the owner
# can replace (audit_event_retention_floor, 6 years); audit_event_purge(days) removes rows older than
# max(days, floor) (whole month partitions, then a bounded batch of rows), and anyone may call it: it removes
# nothing younger.
PG_RETENTION_FLOOR_DAYS = DEFAULT_RETENTION_DAYS


# Month partitions (PostgreSQL, made by `db upgrade`; a table made by create_all in the tests is one table, and
# the same functions work on it): the purge makes the months ahead, drops whole months past the retention (a few a
# run, so one run stays short whatever was left behind) and deletes a bounded batch of older rows left in the month
# the cut-off falls in or in the default partition.
MONTHS_AHEAD = 3


def pg_partition_functions(s: str) -> list[str]:
    """The month partitions' functions and the purge (``s``: the schema as a quoted identifier). A frozen copy
    lives in the migration that made them (smart_app/store/migrations/versions/monthly_partitions.py)."""
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
        purge_function(
            s, "audit_event", column="at",
            cutoff=f"timestamptz := now() - make_interval(days => greatest(retention_days, "
                   f"{s}.audit_event_retention_floor()))",
            make_ahead=f"PERFORM {s}.audit_event_partitions_ahead({MONTHS_AHEAD});",
            # A RANGE partition is past when its upper bound (TO, exclusive) is at or before the cut-off.
            past_cutoff=(f"substring({BOUND} FROM 'TO \\(''([^'']+)''\\)')\n"
                         "                     ::timestamptz <= cutoff"),
        ),
    ]


def pg_append_only(schema: str) -> list[str]:
    """The PostgreSQL guards for audit_event in ``schema`` (a quoted identifier). A frozen copy of these lives in
    the migration that made them (smart_app/store/migrations/versions/audit_owner_only.py)."""
    return [
        f"""CREATE OR REPLACE FUNCTION {schema}.audit_event_retention_floor() RETURNS integer LANGUAGE sql IMMUTABLE
AS 'SELECT {PG_RETENTION_FLOOR_DAYS}'""",
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
        *pg_partition_functions(schema),
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


PG_TRIGGERS = [
    "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
    "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
    "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()",
]
SQLITE_APPEND_ONLY = [
    # Every column but patient_enc (which rotate-keys re-encrypts).
    "CREATE TRIGGER audit_event_no_update BEFORE UPDATE OF id, at, action, actor, iss, ehr, instance, launch_ref, "
    "request_id, object_id, detail ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only (UPDATE refused)'); END",
]


def current_schema(connection: Any) -> str:
    """The connection's current schema as a quoted identifier (the guards name it: no search_path lookups)."""
    name = connection.execute(text("SELECT current_schema()")).scalar()
    return '"' + str(name).replace('"', '""') + '"'


@event.listens_for(AuditEvent.__table__, "after_create")
def _create_guards(_table: Any, connection: Any, **_kw: Any) -> None:
    """Tests build their databases with create_all: the same guards as the migrations."""
    if connection.dialect.name == "postgresql":
        schema = current_schema(connection)
        for sql in [*pg_append_only(schema), *PG_TRIGGERS]:
            connection.execute(text(sql))  # text(): the % in the functions reach the server as written
    elif connection.dialect.name == "sqlite":
        for sql in SQLITE_APPEND_ONLY:
            connection.execute(text(sql))


class AppendOnlyError(RuntimeError):
    pass


@event.listens_for(Session, "before_flush")
def _refuse_changes(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditEvent) and (obj in session.deleted or session.is_modified(obj)):
            raise AppendOnlyError("audit_event rows cannot be changed or deleted")


# -- writing ----------------------------------------------------------------------------------------------
def instance_name(app: Flask | None = None) -> str:
    app = app or current_app
    return (settings_of(app).instance_name or socket.gethostname())[:128]


def record_audit(action: str, *, launch: Any = None, actor: str | None = None, iss: str | None = None,
                 patient: dict[str, Any] | None = None, object_id: str | None = None, detail: str | None = None,
                 resources: list[str] | None = None, db: Session | None = None, app: Flask | None = None) -> None:
    """Append one audit row. ``launch`` (a Launch; default ``g.launch`` in a request) gives who and which patient.

    With ``db`` the row joins the caller's transaction (it commits); without, the row is committed at once in
    its own session, so a view is audited even when the page fails later.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if launch is None and has_request_context():
        launch = getattr(g, "launch", None)
    context: dict[str, Any] = (launch.context if launch is not None else {}) or {}
    user = context.get("user") or {}
    pat = patient if patient is not None else context.get("patient") or {}
    secret: dict[str, Any] = {k: pat[k] for k in ("id", "mrn") if pat.get(k)}
    if resources:
        secret["resources"] = list(resources)
    app = app or current_app._get_current_object()
    iss = iss or (launch.iss if launch is not None else None)
    row = {
        "at": datetime.now(UTC), "action": action,
        "actor": _cap(actor or user.get("fhir_user") or user.get("reference"), 512),
        "iss": _cap(iss, 512), "ehr": _cap(_ehr_of(iss, app), 512),
        "instance": instance_name(app), "launch_ref": launch_ref(launch.id if launch is not None else None),
        "request_id": _request_id(), "object_id": _cap(object_id, 64), "detail": _cap(detail, 256),
        "patient_enc": encrypt_json(secret) if secret else None,
    }
    ACCESS.labels(action).inc()
    # A plain INSERT on the session's connection: an append-only row needs none of the unit of work (about a
    # tenth of a millisecond per audited page), and it is in the session's transaction all the same.
    if db is not None:
        db.connection().execute(_INSERT, row)
        return
    with session_scope(app) as own:
        own.connection().execute(_INSERT, row)


_INSERT = AuditEvent.__table__.insert()


def _ehr_of(iss: str | None, app: Flask) -> str | None:
    """The EHR identity of ``iss`` under the app's deployment (config/ehrs.py); None without an iss."""
    return ehr_id_for(iss, settings_of(app)) if iss else None


def _request_id() -> str | None:
    return current_request_id()


def _cap(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value)
    if text.isprintable():  # the usual case: nothing to drop, no step a character
        return text[:limit]
    return "".join(ch for ch in text if ch.isprintable())[:limit]


# -- retention --------------------------------------------------------------------------------------------
def purge_audit(db: Session, *, now: datetime | None = None, days: int | None = None) -> int:
    """Delete audit rows older than the retention (the only deletion the table allows). Commits. On PostgreSQL the
    database's clock and its retention floor decide (``audit_event_purge``; ``now`` is not used there), and one
    run drops at most PARTITIONS_PER_RUN months and deletes at most ROWS_PER_RUN other rows: the worker's next
    rounds take the rest."""
    if days is None:
        days = current_settings().audit_retention_days
    if db.get_bind().dialect.name == "postgresql":
        gone = db.execute(text("SELECT audit_event_purge(:days)"), {"days": int(days)}).scalar()
        db.commit()
        return int(gone or 0)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    n = db.execute(delete(AuditEvent).where(AuditEvent.at < cutoff).execution_options(synchronize_session=False))
    db.commit()
    return n.rowcount or 0


# -- reading (privacy office) -----------------------------------------------------------------------------
def query_audit(db: Session, *, patient: str | None = None, user: str | None = None, action: str | None = None,
                since: date | None = None, until: date | None = None, ehr: str | None = None,
                limit: int = 10000) -> list[dict[str, Any]]:
    """Rows as dicts with the patient decrypted. ``patient`` matches the patient id or MRN exactly (rows are
    decrypted to compare: narrow by date for speed); ``user`` matches the fhirUser (exact, or its ending); ``ehr``
    the EHR identity, whichever of its iss values the row was made on (a row from before the column was kept is
    mapped from its iss under the current deployment)."""
    app = current_app._get_current_object()
    q = select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id)
    if since:
        q = q.where(AuditEvent.at >= datetime.combine(since, datetime.min.time(), UTC))
    if until:
        q = q.where(AuditEvent.at < datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC))
    if action:
        q = q.where(AuditEvent.action == action)
    if user:
        q = q.where((AuditEvent.actor == user) | AuditEvent.actor.endswith("/" + user.lstrip("/")))
    out = []
    for row in db.scalars(q):
        row_ehr = row.ehr or _ehr_of(row.iss, app)
        if ehr and row_ehr != ehr:
            continue
        try:
            secret = decrypt_json(row.patient_enc, where="audit patient") if row.patient_enc else {}
        except Undecryptable:
            secret = {"id": "(unreadable: key missing)", "mrn": "(unreadable: key missing)"}
        if patient and patient not in (secret.get("id"), secret.get("mrn")):
            continue
        out.append({"at": row.at.isoformat(), "action": row.action, "actor": row.actor, "iss": row.iss, "ehr": row_ehr,
                    "instance": row.instance, "launch_ref": row.launch_ref, "request_id": row.request_id,
                    "object_id": row.object_id, "detail": row.detail,
                    "patient_id": secret.get("id"), "mrn": secret.get("mrn"),
                    "resources": " ".join(secret.get("resources") or [])})
        if len(out) >= limit:
            break
    return out


FIELDS = ("at", "action", "actor", "iss", "ehr", "patient_id", "mrn", "object_id", "detail", "resources", "instance",
          "launch_ref", "request_id")


@click.command("audit")
@with_appcontext
@click.option("--patient", help="Patient id or MRN (exact).")
@click.option("--user", help="fhirUser (e.g. Practitioner/123 or its full URL).")
@click.option("--action", type=click.Choice(sorted(ACTIONS)))
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="From this date (UTC), inclusive.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="To this date (UTC), inclusive.")
@click.option("--ehr", help="EHR identity (an id in the deployment's ehrs block; without one, the iss).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def audit_command(patient: str | None, user: str | None, action: str | None, since: datetime | None,
                  until: datetime | None, ehr: str | None, fmt: str) -> None:
    """List access-audit rows for the privacy office (by patient, by user, by date, by EHR). The listing is
    audited."""
    rows = query_audit(get_session(), patient=patient, user=user, action=action, ehr=ehr,
                       since=since.date() if since else None, until=until.date() if until else None)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        for r in rows:
            click.echo(f"{r['at'][:19]}  {r['action']:<14} {r['actor'] or '-':<40} patient={r['patient_id'] or '-'}"
                       f" mrn={r['mrn'] or '-'} {r['detail'] or ''} {r['object_id'] or ''} @{r['instance']}")
        click.echo(f"{len(rows)} rows")
    filters = ",".join(f"{k}" for k, v in (("patient", patient), ("user", user), ("action", action),
                                           ("since", since), ("until", until), ("ehr", ehr)) if v)
    record_audit("export", actor=f"cli:{_os_user()}", detail=f"audit listing ({filters or 'all'}): {len(rows)} rows",
                 patient={"id": patient} if patient else {})


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name (container without passwd entry)
        return str(os.getuid())


def init_app(app: Flask) -> None:
    app.cli.add_command(audit_command)
