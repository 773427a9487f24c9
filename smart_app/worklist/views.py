"""Social-work queue: the referrals of the user's EHR and covered sites, for triage, contact and follow-up.

Scope (smart_app/worklist/scope.py): a referral outside the user's EHR or sites does not exist here —
every view that names one answers 404 for it, the list and the export never include it. Roles come from
the deployment's role mapping (smart_app/launch/roles.py): social workers act (status, contact attempts),
program managers read and export. Statuses are FHIR Task statuses with plain labels
(smart_app/store/task_status.py); a status change goes to the chart through the outbox where the EHR profile
allows it (smart_app/outbox/closed_loop.py). Contact attempts are stored encrypted. Screening answers and
scores are never shown. Every read and change is audited.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from smart_app.launch.state import launch_required
from smart_app.ops.audit import record_audit
from smart_app.ops.i18n import gettext as _
from smart_app.outbox import closed_loop
from smart_app.outbox.status import referral_rows, referral_rows_of, row_view
from smart_app.referral.channels import channel_label
from smart_app.report import events
from smart_app.store.crypto import Undecryptable, decrypt_json, encrypt_json
from smart_app.store.db import get_session
from smart_app.store.models import ContactAttempt, OutboxItem, ReferralEvent, ReferralProgram, ReferralRecord
from smart_app.store.task_status import CLOSED, OPEN, STATUSES, TRANSITIONS, action_label, allowed, label, normalise
from smart_app.worklist import retention as worklist_retention
from smart_app.worklist.retention import retention_days
from smart_app.worklist.scope import NO_PROGRAM, Scope, program_rows, scope_for, scoped_query, scoped_referral

log = logging.getLogger("ipv.worklist")

bp = Blueprint("worklist", __name__, template_folder="templates", url_prefix="/l/<lid>/worklist")
# Index is "" so the URL is exactly /l/<lid>/worklist (the launch redirects there).

ROLE = "social_worker"
UNREADABLE = "Unreadable: encrypted with a key this server no longer has (tell IT: key rotation)"
OUTCOMES = ("reached", "no_answer", "not_safe_to_talk", "number_not_working", "patient_reached_out")
INBOUND = "patient_initiated"  # always allowed: the patient called or came to us
NOTE_MAX = 280
AGE_BUCKETS = ("under_1_day", "1_to_7_days", "over_7_days")
FACETS = ("urgency", "site", "program", "status", "age")
QUEUE_LIMIT = 2000  # referrals a queue considers, newest first
PAGE_SIZE = 50  # referrals shown (and decrypted) per page; WORKLIST_PAGE_SIZE overrides


@bp.record_once
def _register_cli(state: Any) -> None:
    worklist_retention.init_app(state.app)


# -- settings and formatting ---------------------------------------------------------------------
def tz() -> ZoneInfo:
    return ZoneInfo(current_app.config.get("WORKLIST_TIME_ZONE") or "America/New_York")


def urgent_hours() -> float:
    return float(current_app.config.get("WORKLIST_URGENT_CONTACT_HOURS", 24))


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


bp.add_app_template_global(label, "status_label")


@bp.app_template_filter("local_time")
def local_time(dt: datetime | str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored UTC time in the deployment's time zone, with its abbreviation (EST/EDT)."""
    if isinstance(dt, str):
        try:
            dt = datetime.fromisoformat(dt.replace("Z", "+00:00"))
        except ValueError:
            return dt
        if dt.tzinfo is None:  # a FHIR date or local dateTime: shown as given
            return dt.strftime("%Y-%m-%d")
    dt = _aware(dt)
    if dt is None:
        return "–"
    local = dt.astimezone(tz())
    return f"{local.strftime(fmt)} {local.tzname()}" if "%H" in fmt else local.strftime(fmt)


def language_name(code: str | None) -> str:
    if not code:
        return _("not recorded")
    try:
        return Locale.parse(code.replace("-", "_")).get_display_name("en") or code
    except (UnknownLocaleError, ValueError):
        return code


def interpreter_text(value: bool | None) -> str:
    if value is True:
        return _("Interpreter needed")
    if value is False:
        return _("No interpreter needed")
    return _("Interpreter need not recorded")


def outcome_label(code: str) -> str:
    return {
        "reached": _("Spoke with the patient"), "no_answer": _("No answer (no message left)"),
        "not_safe_to_talk": _("Patient could not talk safely"), "number_not_working": _("Contact detail not working"),
        "patient_reached_out": _("Patient reached out"),
    }.get(code, code)


def contact_channel_label(code: str) -> str:
    return _("Patient reached out to us") if code == INBOUND else channel_label(code)


def age_bucket(hours: float) -> str:
    return "under_1_day" if hours < 24 else "1_to_7_days" if hours < 24 * 7 else "over_7_days"


def age_label(bucket: str) -> str:
    return {"under_1_day": _("Less than a day"), "1_to_7_days": _("1 to 7 days"),
            "over_7_days": _("Over 7 days")}.get(bucket, bucket)


def _read(blob: bytes | None, where: str) -> Any:
    """A stored encrypted value; one no configured key decrypts reads as None (and is logged by crypto)."""
    try:
        return decrypt_json(blob, where=where)
    except Undecryptable:
        return None


def _summary(record: ReferralRecord) -> dict[str, Any]:
    """The referral's encrypted summary; a summary no configured key decrypts is shown as unreadable."""
    try:
        return decrypt_json(record.summary_enc, where="referral summary") or {}
    except Undecryptable:
        return {"patient_name": UNREADABLE, "unreadable": True}


# -- audit ------------------------------------------------------------------------------------------
# Worklist actions -> access-audit actions (smart_app/ops/audit.py).
AUDIT_ACTIONS = {"list": "view_worklist", "export": "export", "history": "open_referral",
                 "export-one": "export", "status": "change_status", "contact": "log_contact"}


def audit(action: str, scope: Scope | None, referral_id: str | None, outcome: str | None,
          record: ReferralRecord | None = None, db: Any = None) -> None:
    """One access-audit row per worklist read or change, refusals included (``detail`` says which: never PHI).
    The patient is the referral's (the social worker's launch has none of its own)."""
    patient: dict[str, Any] = {}
    if record is not None:
        summary = _summary(record)
        patient = {"id": summary.get("patient_id"), "mrn": summary.get("mrn")}
    record_audit(AUDIT_ACTIONS[action], patient=patient, object_id=referral_id,
                 detail=f"refused: {outcome[1:]}" if outcome and outcome[0] == "!" else outcome, db=db)


# -- scope ------------------------------------------------------------------------------------------
def _scope(action: str, referral_id: str | None = None) -> Scope:
    scope = scope_for(g.launch, current_app.config["DEPLOYMENT"])
    if not scope.is_queue_user:
        audit(action, scope, referral_id, "!refused-role")
        abort(403, description="The social-work queue is only for social workers. "
                               "Ask your administrator if you need access.")
    return scope


def _record(action: str, rid: str, *, act: bool = False) -> tuple[Scope, ReferralRecord]:
    """The referral ``rid`` if the user's scope covers it; 404 otherwise (it does not exist for them)."""
    scope = _scope(action, rid)
    record = scoped_referral(get_session(), scope, rid)
    if record is None:
        audit(action, scope, rid, "!not-found")
        abort(404)
    if act and not scope.can_act:
        audit(action, scope, rid, "!refused-role")
        abort(403, description="Program managers can read the queue; social workers change it.")
    return scope, record


# -- views of one referral --------------------------------------------------------------------------
def _phone_view(phone: Any) -> dict[str, str] | None:
    if phone is None:
        return None
    return {"number": phone.dial(), "label": (phone.label or {}).get("en") or ""}


def _program_view(program: dict[str, Any], services: dict[str, Any]) -> dict[str, Any]:
    service = services.get(program.get("id"))
    if service is None:  # directory changed or an older referral: the number saved with it
        main = {"number": program["phone"], "label": _("Phone")} if program.get("phone") else None
        return {"id": program.get("id") or program.get("name"), "name": program.get("name"), "main": main,
                "after_hours": None}
    return {"id": service.id, "name": program.get("name") or service.program,
            "main": _phone_view(service.main_phone()), "after_hours": _phone_view(service.after_hours_phone())}


def _directory_services() -> dict[str, Any]:
    try:
        from referrals.store import store_for

        return {s.id: s for s in store_for(current_app).index.directory.services}
    except Exception as exc:  # noqa: BLE001 - the queue must render without the directory
        log.warning("worklist: directory unavailable (%s)", type(exc).__name__)
        return {}


def _entry(record: ReferralRecord, scope: Scope, services: dict[str, Any], now: datetime,
           outbox: list[OutboxItem] | None = None) -> dict[str, Any]:
    """Everything shown of one referral (its summary decrypted). ``outbox``: its writes, when the caller read
    them for a whole page at once."""
    summary = _summary(record)
    rows = [row_view(r) for r in (referral_rows(record.id) if outbox is None else outbox)]
    states = {r["state"] for r in rows}
    write = ("failed" if "failed" in states else "check" if "check" in states else "queued" if "queued" in states
             else "written" if rows else "none")
    status = normalise(record.status)
    created = _aware(record.created_at) or now
    hours = max(0.0, (now - created).total_seconds() / 3600)
    first_contact = _aware(record.first_contact_at)
    overdue = bool(record.urgent and first_contact is None and status in OPEN and hours >= urgent_hours())
    programs = [_program_view(p, services) for p in summary.get("programs") or []]
    sc = summary.get("safe_contact") or {}
    return {
        "id": record.id, "created_at": created, "status": status, "status_label": label(status),
        "closed": status in CLOSED, "site": record.site, "site_name": record.site_name or _("Site not recorded"),
        "urgent": bool(record.urgent), "overdue": overdue, "age_hours": hours, "age": age_bucket(hours),
        "status_by": record.status_by, "status_at": _aware(record.status_at), "first_contact_at": first_contact,
        "patient_name": summary.get("patient_name"), "mrn": summary.get("mrn"),
        "language": language_name(summary.get("language")),
        "interpreter": interpreter_text(summary.get("interpreter_needed")),
        "interpreter_needed": summary.get("interpreter_needed"),
        "clinician": summary.get("clinician"), "encounter_start": summary.get("encounter_start"),
        "programs": programs, "program_names": [p["name"] for p in programs if p.get("name")],
        "safe_contact": sc, "safe_channels": safe_channels(sc),
        "write": write, "rows": rows,
        "transitions": TRANSITIONS.get(status, ()) if scope.can_act else (),
        "label_warnings": [r for r in rows if r["label_status"] == "flagged"],
    }


def safe_channels(safe_contact: dict[str, Any]) -> list[str]:
    """Channels a contact attempt may use: the one the patient marked safe (none: only inbound contact)."""
    channel = (safe_contact or {}).get("channel") or "none"
    return ([] if channel == "none" else [channel]) + [INBOUND]


# -- the queue --------------------------------------------------------------------------------------
URGENCY_VALUES = ("urgent", "routine", "overdue")


def _values(entry: dict[str, Any], facet: str) -> tuple[str, ...] | list[str]:
    """The filter values of ``facet`` that show this referral (counted per value; see _matches)."""
    if facet == "urgency":
        return ("urgent", "overdue") if entry["overdue"] else ("urgent",) if entry["urgent"] else ("routine",)
    if facet == "site":
        return (entry["site_name"],)
    if facet == "program":
        return entry["program_names"]
    if facet == "status":
        return (entry["status"], "closed" if entry["closed"] else "open", "all")
    if facet == "age":
        return (entry["age"],)
    return ()


def _matches(entry: dict[str, Any], facet: str, value: str | None) -> bool:
    if not value or facet not in FACETS or (facet == "urgency" and value not in URGENCY_VALUES):
        return True  # no filter, or one the queue does not know: shows everything
    return value in _values(entry, facet)


def _options(entries: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    sites = sorted({e["site_name"] for e in entries})
    programs = sorted({p for e in entries for p in e["program_names"]})
    return {
        "urgency": [("urgent", _("Urgent")), ("overdue", _("Urgent, not contacted in time")),
                    ("routine", _("Not urgent"))],
        "site": [(s, s) for s in sites],
        "program": [(p, p) for p in programs],
        "status": [("open", _("All open")), *[(s, label(s)) for s in STATUSES], ("closed", _("All closed")),
                   ("all", _("Everything"))],
        "age": [(b, age_label(b)) for b in AGE_BUCKETS],
    }


SORTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    # Triage: overdue urgent first, then urgent, then the longest waiting.
    "triage": lambda e: (not e["overdue"], not e["urgent"], e["closed"], e["created_at"]),
    "oldest": lambda e: e["created_at"],
    "newest": lambda e: -e["created_at"].timestamp(),
    "site": lambda e: (e["site_name"], e["created_at"]),
    "status": lambda e: (STATUSES.index(e["status"]) if e["status"] in STATUSES else 99, e["created_at"]),
    "program": lambda e: (",".join(e["program_names"]), e["created_at"]),
}


def _filters() -> dict[str, str]:
    f = {k: (request.args.get(k) or "").strip()[:256] for k in FACETS}
    f["status"] = f["status"] or "open"
    return f


# What a queue line needs for filters, counts and sort: plain columns, no summary (nothing decrypted).
LINE_COLUMNS = (ReferralRecord.id, ReferralRecord.status, ReferralRecord.urgent, ReferralRecord.created_at,
                ReferralRecord.first_contact_at, ReferralRecord.site_name, ReferralRecord.profile)


def _program_names(scope: Scope, ids: set[str], services: dict[str, Any]) -> dict[str, list[str]]:
    """Program names per referral in scope, from the ReferralProgram index: one query, one decrypt per distinct
    program. Referrals not indexed yet (stored before the index) are indexed from their summary once."""
    db = get_session()
    in_scope = scoped_query(scope).with_only_columns(ReferralRecord.id)
    keys: dict[str, list[str]] = {}
    blobs: dict[str, bytes | None] = {}
    for rid, key, blob in db.execute(select(ReferralProgram.referral_id, ReferralProgram.key,
                                            ReferralProgram.program_enc)
                                     .where(ReferralProgram.referral_id.in_(in_scope))
                                     .order_by(ReferralProgram.id)):
        keys.setdefault(rid, []).append(key)
        blobs.setdefault(key, blob)
    missing = ids - keys.keys()
    if missing:
        for rid, programs in _index_programs(scope, missing).items():
            for row in programs:
                keys.setdefault(rid, []).append(row.key)
                blobs.setdefault(row.key, row.program_enc)
    names: dict[str, str | None] = {}
    for key, blob in blobs.items():
        program = None if key == NO_PROGRAM else _read(blob, "referral program")
        names[key] = _program_name(program, services) if program else None
    return {rid: [n for n in dict.fromkeys(names[k] for k in ks) if n] for rid, ks in keys.items()}


def _program_name(program: dict[str, Any], services: dict[str, Any]) -> str | None:
    # As _program_view names it: the name saved with the referral, else the directory's.
    service = services.get(program.get("id"))
    return program.get("name") or (service.program if service is not None else None)


def _index_programs(scope: Scope, ids: set[str]) -> dict[str, list[ReferralProgram]]:
    """Index the programs of referrals stored before ReferralProgram existed (their summaries decrypted once).
    Its own transaction: a concurrent queue request that indexed them first wins, and nothing is lost."""
    out: dict[str, list[ReferralProgram]] = {}
    db = current_app.extensions["db_sessionmaker"]()
    try:
        chunk = sorted(ids)
        for start in range(0, len(chunk), 500):
            q = scoped_query(scope).with_only_columns(ReferralRecord.id, ReferralRecord.summary_enc)
            for rid, blob in db.execute(q.where(ReferralRecord.id.in_(chunk[start:start + 500]))):
                try:
                    summary = decrypt_json(blob, where="referral summary") or {}
                except Undecryptable:
                    continue  # unreadable: not indexed, listed without programs
                out[rid] = program_rows(rid, summary.get("programs") or [])
        db.add_all([row for rows in out.values() for row in rows])
        try:
            db.commit()
        except IntegrityError:
            db.rollback()
    finally:
        db.close()
    return out


def _line(row: Any, programs: list[str], now: datetime) -> dict[str, Any]:
    """One referral as the queue's filters, counts, sort and CSV export see it (no patient details)."""
    status = normalise(row.status)
    created = _aware(row.created_at) or now
    hours = max(0.0, (now - created).total_seconds() / 3600)
    first_contact = _aware(row.first_contact_at)
    return {"id": row.id, "created_at": created, "status": status,
            "closed": status in CLOSED, "site_name": row.site_name or _("Site not recorded"),
            "urgent": bool(row.urgent), "first_contact_at": first_contact, "age": age_bucket(hours),
            "overdue": bool(row.urgent and first_contact is None and status in OPEN and hours >= urgent_hours()),
            "program_names": programs, "profile": row.profile}


def _queue(scope: Scope, services: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                            dict[str, str]]:
    """Every referral in scope as a line (a constant number of queries, nothing decrypted but one name per
    program), and the filtered lines in the chosen order."""
    now = datetime.now(UTC)
    rows = get_session().execute(scoped_query(scope).with_only_columns(*LINE_COLUMNS)
                                 .order_by(ReferralRecord.created_at.desc()).limit(QUEUE_LIMIT)).all()
    programs = _program_names(scope, {r.id for r in rows}, services) if rows else {}
    everything = [_line(r, programs.get(r.id, []), now) for r in rows]
    filters = _filters()
    shown = [e for e in everything if all(_matches(e, k, v) for k, v in filters.items())]
    shown.sort(key=SORTS.get(request.args.get("sort") or "triage", SORTS["triage"]))
    return everything, shown, filters


def _counts(everything: list[dict[str, Any]], filters: dict[str, str],
            options: dict[str, list[tuple[str, str]]]) -> dict[str, dict[str, int]]:
    """Counts per filter value: how many referrals it would show with the other filters kept."""
    passes = [{k: _matches(e, k, v) for k, v in filters.items()} for e in everything]
    counts = {}
    for facet, opts in options.items():
        tally: Counter[str] = Counter()
        for e, ok in zip(everything, passes, strict=True):
            if all(v for k, v in ok.items() if k != facet):
                tally.update(_values(e, facet))
        counts[facet] = {value: tally[value] for value, _label in opts}
    return counts


def _page_entries(scope: Scope, lines: list[dict[str, Any]], services: dict[str, Any]) -> list[dict[str, Any]]:
    """The shown referrals in full: one query for their records, one for their writes; only these decrypted."""
    ids = [e["id"] for e in lines]
    if not ids:
        return []
    db = get_session()
    records = {r.id: r for r in db.scalars(scoped_query(scope).where(ReferralRecord.id.in_(ids)))}
    outbox = referral_rows_of(ids)
    now = datetime.now(UTC)
    return [_entry(records[i], scope, services, now, outbox.get(i, [])) for i in ids if i in records]


def _page_size() -> int:
    return max(1, int(current_app.config.get("WORKLIST_PAGE_SIZE") or PAGE_SIZE))


@bp.route("", methods=["GET"])
@launch_required
def index() -> str:
    scope = _scope("list")
    services = _directory_services()
    everything, shown, filters = _queue(scope, services)
    options = _options(everything)
    counts = _counts(everything, filters, options)
    size = _page_size()
    pages = max(1, -(-len(shown) // size))
    try:
        page = min(max(1, int(request.args.get("page") or 1)), pages)
    except ValueError:
        page = 1
    first = (page - 1) * size
    entries = _page_entries(scope, shown[first:first + size], services)
    audit("list", scope, None, f"{len(entries)} referrals shown" + (f" (page {page} of {pages})" if pages > 1
                                                                     else ""))
    profiles = closed_loop.loop_notices({e["profile"] for e in everything} or {closed_loop.current_profile_name()},
                                        g.launch)
    args = {k: v for k, v in filters.items() if v}
    sort = request.args.get("sort") or "triage"

    def facet_url(facet: str, value: str) -> str:
        return url_for("worklist.index", lid=g.launch.id, **{**args, facet: value, "sort": sort})

    def sort_url(key: str) -> str:
        return url_for("worklist.index", lid=g.launch.id, **{**args, "sort": key})

    def page_url(number: int) -> str:
        return url_for("worklist.index", lid=g.launch.id, **{**args, "sort": sort, "page": number})

    return render_template("worklist/index.html", lid=g.launch.id, facet_url=facet_url, sort_url=sort_url,
                           page_url=page_url, entries=entries, shown=len(shown), total=len(everything),
                           page=page, pages=pages, first=first + 1, last=first + len(entries),
                           filters=filters, options=options, counts=counts, sort=sort,
                           scope=scope, channel_label=channel_label, urgent_hours=urgent_hours(),
                           loop_notices=profiles, retention=retention_text(), tz_name=str(tz()),
                           args=args)


@bp.route("/export.csv", methods=["GET"])
@launch_required
def export() -> Response:
    """The filtered queue as CSV, for the program's own follow-up lists: no names, MRNs or notes."""
    scope = _scope("export")
    _everything, shown, _filters_ = _queue(scope, _directory_services())  # lines only: nothing decrypted
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["reference", "received", "site", "programs", "urgent", "overdue", "status", "first_contact"])
    for e in shown:
        w.writerow([e["id"][:8], local_time(e["created_at"]), e["site_name"], "; ".join(e["program_names"]),
                    "yes" if e["urgent"] else "no", "yes" if e["overdue"] else "no", label(e["status"]),
                    local_time(e["first_contact_at"]) if e["first_contact_at"] else ""])
    audit("export", scope, None, f"queue csv, {len(shown)} referrals")
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="queue.csv"'})


def _history(record: ReferralRecord) -> list[dict[str, Any]]:
    db = get_session()
    items: list[dict[str, Any]] = [{"at": _aware(record.created_at), "kind": "created",
                                    "text": _("Referral received (%(status)s)", status=label("requested"))}]
    for e in db.scalars(select(ReferralEvent).where(ReferralEvent.referral_id == record.id).order_by(ReferralEvent.id)):
        items.append({"at": _aware(e.at), "kind": "status",
                      "by": _read(e.by_name_enc, "referral event") or e.by_reference,
                      "text": f"{label(e.from_status)} → {label(e.to_status)}", "to": normalise(e.to_status)})
    for c in db.scalars(select(ContactAttempt).where(ContactAttempt.referral_id == record.id)
                        .order_by(ContactAttempt.id)):
        d = _read(c.detail_enc, "contact attempt") or {"outcome": "unreadable"}
        items.append({"at": _aware(c.at), "kind": "contact", "by": d.get("by_name") or c.by_reference,
                      "text": f"{contact_channel_label(d.get('channel', ''))}: {outcome_label(d.get('outcome', ''))}",
                      "note": d.get("note")})
    for u in closed_loop.updates_for(record.id):
        items.append(u)
    items.sort(key=lambda i: (i["at"] or datetime.min.replace(tzinfo=UTC)))
    return items


@bp.route("/<rid>", methods=["GET"])
@bp.route("/<rid>/history", methods=["GET"])
@launch_required
def history(rid: str) -> str:
    """One referral: details, status actions, the contact log form and the whole history."""
    scope, record = _record("history", rid)
    entry = _entry(record, scope, _directory_services(), datetime.now(UTC))
    audit("history", scope, rid, None, record)
    now_local = datetime.now(UTC).astimezone(tz()).strftime("%Y-%m-%dT%H:%M")
    return render_template("worklist/history.html", lid=g.launch.id, entry=entry, events=_history(record),
                           scope=scope, outcomes=OUTCOMES, outcome_label=outcome_label,
                           contact_channel_label=contact_channel_label, note_max=NOTE_MAX, now_local=now_local,
                           channel_label=channel_label, action_label=action_label,
                           chart_loop=closed_loop.loop_notice(record.profile, g.launch),
                           error=request.args.get("error"))


@bp.route("/<rid>/export.txt", methods=["GET"])
@launch_required
def export_one(rid: str) -> Response:
    """One referral as plain text, for documenting by hand when the chart could not take it."""
    scope, record = _record("export-one", rid)
    entry = _entry(record, scope, _directory_services(), datetime.now(UTC))
    lines = [_("Confidential referral"), f"{entry['patient_name'] or '–'} · MRN {entry['mrn'] or '–'}",
             f"{entry['site_name']} · {local_time(entry['created_at'])}",
             f"{_('Programs')}: {'; '.join(entry['program_names']) or '–'}",
             f"{_('Safe contact')}: {channel_label(entry['safe_contact'].get('channel') or 'none')}",
             f"{_('Status')}: {entry['status_label']}", ""]
    for item in _history(record):
        by = f" ({item['by']})" if item.get("by") else ""
        note = f" — {item['note']}" if item.get("note") else ""
        lines.append(f"{local_time(item['at'])}: {item['text']}{by}{note}")
    audit("export-one", scope, rid, "referral text", record)
    return Response("\n".join(lines) + "\n", mimetype="text/plain",
                    headers={"Content-Disposition": 'attachment; filename="referral.txt"'})


@bp.route("/<rid>/status", methods=["POST"])
@launch_required
def set_status(rid: str) -> Response:
    scope, record = _record("status", rid, act=True)
    user = (g.launch.context.get("user") or {})
    to = request.form.get("status")
    current = normalise(record.status)
    if not allowed(current, to):
        audit("status", scope, rid, "!invalid-transition")
        abort(400, description="That status change is not allowed.")
    db = get_session()
    now = datetime.now(UTC)
    db.add(ReferralEvent(referral_id=record.id, from_status=current, to_status=to,
                         by_reference=user.get("reference"), by_name_enc=encrypt_json(user.get("name")), at=now))
    record.status, record.status_by, record.status_at = to, user.get("name"), now
    if to in CLOSED:
        record.closed_at = now
    closed_loop.enqueue_status(db, record, to, g.launch)
    audit("status", scope, rid, f"{current}->{to}", record, db=db)  # same transaction
    db.commit()
    # A queued chart update is sent by the outbox worker (no EHR call in this request).
    return redirect(request.form.get("next") == "queue" and url_for("worklist.index", lid=g.launch.id)
                    or url_for("worklist.history", lid=g.launch.id, rid=rid))


@bp.route("/<rid>/contact", methods=["POST"])
@launch_required
def log_contact(rid: str) -> Response | tuple[str, int]:
    scope, record = _record("contact", rid, act=True)
    summary = _summary(record)
    channel = request.form.get("channel") or ""
    outcome = request.form.get("outcome") or ""
    note = (request.form.get("note") or "").strip()
    when = _parse_local(request.form.get("at"))
    if channel not in safe_channels(summary.get("safe_contact") or {}):
        audit("contact", scope, rid, "!refused-unsafe-channel")
        return redirect(url_for("worklist.history", lid=g.launch.id, rid=rid, error="channel"))
    if outcome not in OUTCOMES or len(note) > NOTE_MAX or when is None:
        audit("contact", scope, rid, "!invalid")
        return redirect(url_for("worklist.history", lid=g.launch.id, rid=rid, error="form"))
    user = (g.launch.context.get("user") or {})
    db = get_session()
    first_reached = outcome in REACHED and not _reached_before(db, record.id)
    db.add(ContactAttempt(referral_id=record.id, at=when, by_reference=user.get("reference"),
                          detail_enc=encrypt_json({"channel": channel, "outcome": outcome, "note": note or None,
                                                   "by_name": user.get("name")})))
    if record.first_contact_at is None or _aware(record.first_contact_at) > when:
        record.first_contact_at = when
    audit("contact", scope, rid, "ok", record, db=db)
    db.commit()
    if first_reached:  # the program report's "contacted within 24 h / 72 h" (smart_app/report/events.py)
        events.referral_status(record, "contacted", when)
    return redirect(url_for("worklist.history", lid=g.launch.id, rid=rid))


REACHED = ("reached", "patient_reached_out")


def _reached_before(db: Any, referral_id: str) -> bool:
    for c in db.scalars(select(ContactAttempt).where(ContactAttempt.referral_id == referral_id)):
        if (_read(c.detail_enc, "contact attempt") or {}).get("outcome") in REACHED:
            return True
    return False


def _parse_local(value: str | None) -> datetime | None:
    """The attempt's time as typed (deployment time zone); empty = now; never in the future."""
    now = datetime.now(UTC)
    if not value:
        return now
    try:
        local = datetime.fromisoformat(value)
    except ValueError:
        return None
    when = (local if local.tzinfo else local.replace(tzinfo=tz())).astimezone(UTC)
    if when > now + timedelta(minutes=5) or when < now - timedelta(days=365):
        return None
    return when


def retention_text() -> str:
    return _("Closed referrals, their contact logs and history are deleted %(days)d days after they close. "
             "Open referrals are kept until they are closed. Screening answers and scores are never kept here.",
             days=retention_days())
