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
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache, partial
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from flask_babel import ngettext
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from config.current import current_settings, settings_of
from fhir.builders import reference_code
from fhir.text import clean_text
from referrals.store import store_for
from smart_app.followup import items as followup_items
from smart_app.launch.state import launch_required
from smart_app.ops.audit import record_audit
from smart_app.ops.i18n import gettext as _
from smart_app.outbox import closed_loop
from smart_app.outbox.status import referral_rows, referral_states_of, row_view
from smart_app.ranking.memo import clock as app_clock
from smart_app.referral.channels import channel_label
from smart_app.report import events
from smart_app.store import closing
from smart_app.store import handoff as handoff_codes
from smart_app.store.crypto import Undecryptable, decrypt_json, encrypt_json
from smart_app.store.db import get_session
from smart_app.store.models import ContactAttempt, ReferralEvent, ReferralProgram, ReferralRecord
from smart_app.store.task_status import CLOSED, TRANSITIONS, action_label, allowed, label, normalise
from smart_app.worklist import alerts, followups, interpreter
from smart_app.worklist import assign as assignment
from smart_app.worklist import retention as worklist_retention
from smart_app.worklist.due import HOUR, DueRule, Span, due_rule
from smart_app.worklist.queue import (
    FACETS,
    PROGRAM,
    SORTS,
    Clock,
    Queue,
    QueueQuery,
    clock_now,
    facet_names,
    site_not_recorded,
)
from smart_app.worklist.retention import retention_days
from smart_app.worklist.routing import routing_of
from smart_app.worklist.saved import delete_view, save_view, saved_views, user_tag, view_args
from smart_app.worklist.scope import (
    Scope,
    program_keys_of,
    program_rows,
    scope_for,
    scoped_query,
    scoped_referral,
)
from smart_app.worklist.search import Search, mrn_key, normalise_code, normalise_mrn

log = logging.getLogger("ipv.worklist")

bp = Blueprint("worklist", __name__, template_folder="templates", url_prefix="/l/<lid>/worklist")
# Index is "" so the URL is exactly /l/<lid>/worklist (the launch redirects there).

ROLE = "social_worker"
UNREADABLE = "Unreadable: encrypted with a key this server no longer has (tell IT: key rotation)"
OUTCOMES = ("reached", "no_answer", "not_safe_to_talk", "number_not_working", "patient_reached_out")
INBOUND = "patient_initiated"  # always allowed: the patient called or came to us
NOTE_MAX = 280
# A line of the plain-text referral: every event is one line, whatever a note, a name or the EHR's text holds.
EXPORT_LINE_MAX = 2000
UNINDEXED_BATCH = 500  # referrals stored before the program index, indexed per queue request
UNINDEXED_CHECK_SECONDS = 600


@bp.record_once
def _register_cli(state: Any) -> None:
    worklist_retention.init_app(state.app)
    alerts.init_app(state.app)  # open referrals per route on /metrics
    due_rule(settings_of(state.app))  # a due time the app cannot read stops start-up, naming the setting
    routing_of(settings_of(state.app))  # so does a routing block: never first at a consent


# -- settings and formatting ---------------------------------------------------------------------
def tz() -> ZoneInfo:
    return ZoneInfo(current_settings().worklist.time_zone)


def _due_rule() -> DueRule:
    return due_rule(current_settings())


def span_text(span: Span) -> str:
    """A due time's length in the reader's language ("1 business hour", "2 business days", "4 hours")."""
    n = int(span.amount) if span.amount == int(span.amount) else span.amount
    if span.business and span.unit == HOUR:
        return ngettext("%(num)s business hour", "%(num)s business hours", n)
    if span.business:
        return ngettext("%(num)s business day", "%(num)s business days", n)
    if span.unit == HOUR:
        return ngettext("%(num)s hour", "%(num)s hours", n)
    return ngettext("%(num)s day", "%(num)s days", n)


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
    return _english_name(code)


LANGUAGE_NAME_CACHE_MAX = 256


@lru_cache(maxsize=LANGUAGE_NAME_CACHE_MAX)  # Babel parses the locale data anew each time: a queue page names 50
def _english_name(code: str) -> str:
    try:
        return Locale.parse(code.replace("-", "_")).get_display_name("en") or code
    except (UnknownLocaleError, ValueError):
        return code


def interpreter_text(value: bool | None, language: str | None = None) -> str:
    if value is True and language:
        return _("Interpreter needed (%(language)s)", language=interpreter.language_name(language))
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
                 "export-one": "export", "status": "change_status", "contact": "log_contact",
                 "assign": "assign_referral", "followup": "followup_response"}


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
    scope = scope_for(g.launch, current_settings())
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
        return {s.id: s for s in store_for(current_app).index.directory.services}
    except Exception as exc:  # noqa: BLE001 - the queue must render without the directory
        log.warning("worklist: directory unavailable (%s)", type(exc).__name__)
        return {}


class Words(dict[tuple[Any, ...], Any]):
    """Words a page's rows repeat (a status, an outcome, a chart write's state), each worked out once per page."""

    def of(self, make: Callable[..., str], *args: Any) -> str:
        key = (make, *args)
        try:
            if key not in self:
                self[key] = make(*args)
        except TypeError:  # a value no dict can key (a summary's field of an unexpected shape): worked out as is
            return make(*args)
        return self[key]


def _entry(record: ReferralRecord, scope: Scope, services: dict[str, Any], clock: Clock,
           outbox: list[Any] | None = None, words: Words | None = None) -> dict[str, Any]:
    """Everything shown of one referral (its summary decrypted). ``outbox``: its writes, when the caller read
    them for a whole page at once (``referral_states_of``); ``words``: the page's (one referral's page: its own)."""
    words = Words() if words is None else words
    summary = _summary(record)
    outbox_words = words.setdefault((row_view,), {})
    rows = [row_view(r, outbox_words) for r in (referral_rows(record.id) if outbox is None else outbox)]
    states = {r["state"] for r in rows}
    write = ("failed" if "failed" in states else "check" if "check" in states else "queued" if "queued" in states
             else "written" if rows else "none")
    status = normalise(record.status)
    now = clock.now
    created = _aware(record.created_at) or now
    hours = max(0.0, (now - created).total_seconds() / 3600)
    first_contact = _aware(record.first_contact_at)
    due = clock.due(created, bool(record.urgent), _aware(record.due_at))
    overdue = clock.overdue(created, bool(record.urgent), _aware(record.due_at), first_contact is not None, status)
    programs = [_program_view(p, services) for p in summary.get("programs") or []]
    sc = summary.get("safe_contact") or {}
    return {
        "id": record.id, "created_at": created, "status": status, "status_label": words.of(label, status),
        "closed": status in CLOSED, "site": record.site,
        "site_name": record.site_name or words.of(site_not_recorded),
        "urgent": bool(record.urgent), "overdue": overdue, "age_hours": hours, "age": age_bucket(hours),
        "due_at": due, "due_stored": record.due_at is not None,
        "status_by": record.status_by, "status_at": _aware(record.status_at), "first_contact_at": first_contact,
        "patient_name": summary.get("patient_name"), "mrn": summary.get("mrn"),
        "language": language_name(summary.get("language")),
        "interpreter": words.of(interpreter_text, summary.get("interpreter_needed"),
                                summary.get("interpreter_language")),
        "interpreter_needed": summary.get("interpreter_needed"),
        "interpreter_language": interpreter.language_name(summary.get("interpreter_language")),
        "clinician": summary.get("clinician"), "encounter_start": summary.get("encounter_start"),
        "programs": programs, "program_names": [p["name"] for p in programs if p.get("name")],
        "safe_contact": sc, "safe_channels": safe_channels(sc),
        "write": write, "rows": rows,
        # The warm hand-off at the bedside: its outcome (plain code) and who was called when (encrypted summary).
        "handoff": record.handoff,
        "handoff_label": words.of(handoff_codes.label, record.handoff) if record.handoff else "",
        "handoff_short": words.of(handoff_codes.short_label, record.handoff) if record.handoff else "",
        "handoff_detail": summary.get("handoff") or {},
        "closing_outcome": record.closing_outcome,
        "closing_label": words.of(closing.label, record.closing_outcome, record.closing_attempts)
        if record.closing_outcome else "",
        "assignee": record.assignee, "assignee_name": assignment.assignee_name(record),
        "mine": bool(record.assignee) and record.assignee == scope.user_reference,
        "assigned_at": _aware(record.assigned_at),
        "transitions": TRANSITIONS.get(status, ()) if scope.can_act else (),
        "label_warnings": [r for r in rows if r["label_status"] == "flagged"],
    }


def safe_channels(safe_contact: dict[str, Any]) -> list[str]:
    """Channels a contact attempt may use: the one the patient marked safe (none: only inbound contact)."""
    channel = (safe_contact or {}).get("channel") or "none"
    return ([] if channel == "none" else [channel]) + [INBOUND]


# -- the queue --------------------------------------------------------------------------------------
def _clock(scope: Scope | None = None) -> Clock:
    return clock_now(current_settings(), app_clock(), scope.user_reference if scope is not None else None)


def _page_size() -> int:
    return current_settings().worklist_page_size


def _index_programs(scope: Scope) -> None:
    """Index the programs of referrals stored before ReferralProgram existed (their summaries decrypted once), so
    the program filter, counts and sort see them. Looked for at most every UNINDEXED_CHECK_SECONDS per scope and
    process: the search reads every referral in scope, and only a referral made by an older version of the app
    can lack its rows. Its own transaction: a concurrent queue request that indexed them first wins."""
    checked = current_app.extensions.setdefault("worklist_program_checks", {})
    mark = (scope.ehr_id, scope.keys)  # per EHR, not per iss: a per-launch iss is new at every launch
    if time.monotonic() - checked.get(mark, -UNINDEXED_CHECK_SECONDS) < UNINDEXED_CHECK_SECONDS:
        return
    db = current_app.extensions["db_sessionmaker"]()
    try:
        rows = db.execute(scoped_query(scope).with_only_columns(ReferralRecord.id, ReferralRecord.summary_enc)
                          .where(ReferralRecord.program_keys.is_(None)).limit(UNINDEXED_BATCH)).all()
        if len(rows) < UNINDEXED_BATCH:
            checked[mark] = time.monotonic()  # none left after this batch
        if not rows:
            return
        indexed: dict[str, list[str]] = {}
        for rid, key in db.execute(select(ReferralProgram.referral_id, ReferralProgram.key)
                                   .where(ReferralProgram.referral_id.in_([r.id for r in rows]))):
            indexed.setdefault(rid, []).append(key)
        for rid, blob in rows:
            if rid not in indexed:
                try:
                    summary = decrypt_json(blob, where="referral summary") or {}
                except Undecryptable:
                    summary = {}  # unreadable: indexed as naming no program, listed without programs
                new = program_rows(rid, summary.get("programs") or [])
                db.add_all(new)
                indexed[rid] = [row.key for row in new]
            db.execute(update(ReferralRecord).where(ReferralRecord.id == rid)
                       .values(program_keys=program_keys_of(indexed[rid])))
        try:
            db.commit()
        except IntegrityError:
            db.rollback()
    finally:
        db.close()


def _program_cache() -> dict[str, dict[str, Any]]:
    return current_app.extensions.setdefault("worklist_program_names", {})


def _search() -> Search | None:
    """The search this request shows: a reference code in the URL, or the MRN search kept with the launch."""
    if request.args.get("ref"):
        return Search(code=normalise_code(request.args["ref"]) or "-")
    if request.args.get("patient"):
        kept = (g.launch.data.get("worklist_search") or {}).get("mrn_key")
        return Search(mrn_key=kept or "-")
    return None


def _write_summary(rows: list[dict[str, Any]], write: str, words: Words | None = None) -> dict[str, str]:
    """The row's chart column: an icon and a few words for the worst state of its writes (a failed write says
    which and why)."""
    icon, text = WRITE_STATES[write]
    worst = next((r for r in rows if r["state"] == write), None)
    if write == "failed" and worst is not None:
        why = f" ({worst['reason']})" if worst.get("reason") else ""
        return {"icon": icon, "text": f"{worst['label']}: {worst['text']}{why}"}
    return {"icon": icon, "text": (Words() if words is None else words).of(text)}


WRITE_STATES: dict[str, tuple[str, Callable[[], str]]] = {
    "written": ("✓", lambda: _("In the chart")), "queued": ("…", lambda: _("Being written")),
    "check": ("?", lambda: _("Check the chart")), "failed": ("✕", lambda: _("Not written")),
    "none": ("–", lambda: _("Nothing to write")),
}


def _waiting(hours: float) -> str:
    return _("%(n)d h", n=int(hours)) if hours < 48 else _("%(n)d d", n=int(hours // 24))


def _row(record: ReferralRecord, scope: Scope, services: dict[str, Any], clock: Clock,
         outbox: list[Any], programs: list[str], words: Words | None = None) -> dict[str, Any]:
    """One queue line: the referral's entry plus what the line shows in a few words; its programs as the
    program filter names them (the program index). ``words``: the page's (``Words``)."""
    words = Words() if words is None else words
    entry = {**_entry(record, scope, services, clock, outbox, words), "program_names": programs}
    return {**entry, "reference": reference_code(record.id), "waiting": _waiting(entry["age_hours"]),
            "due": due_text(entry, clock.now), "chart": _write_summary(entry["rows"], entry["write"], words)}


def due_text(entry: dict[str, Any], now: datetime) -> str | None:
    """When the first contact is due, in a few words ("in 45 min", "Mon 09:30", "3 h late"): None once contacted or
    closed. The exact time is the cell's title."""
    if entry["closed"] or entry["first_contact_at"] is not None:
        return None
    due = entry["due_at"]
    if entry["overdue"]:
        return _("%(time)s late", time=_span(now - due))
    if due - now < timedelta(hours=12):
        return _("in %(time)s", time=_span(due - now))
    # The queue's times are all in the deployment's time zone (said once on the page): no zone on each row.
    return due.astimezone(tz()).strftime("%a %H:%M" if due - now < WEEK - DAY else "%d %b %H:%M")


def _span(length: timedelta) -> str:
    minutes = int(length.total_seconds() // 60)
    return _("%(n)d min", n=max(1, minutes)) if minutes < 60 else _waiting(minutes / 60)


WEEK, DAY = timedelta(days=7), timedelta(days=1)


# The characters Werkzeug's URL building leaves unescaped in a query string (``werkzeug.urls._urlencode``) and in a
# path segment (its default converter): the queue's links are built with the same encoding, so they are what
# ``url_for`` makes (`tests/worklist/test_queue_links.py`).
QUERY_SAFE = "!$'()*,/:;?@"
PATH_SAFE = "!$&'()*+,/:;=@"


def _facet_urls(query: QueueQuery, search_args: dict[str, str],
                base: str) -> tuple[dict[str, str], Callable[..., str]]:
    args = {**view_args(query.filters, query.sort), **search_args}
    if query.filters.get("status") == "open":
        args.pop("status", None)
    pairs: dict[tuple[str, Any], str] = {}  # the page's ~170 links share a few dozen name=value pairs

    def url(**changes: Any) -> str:
        return query_url(base, {**args, **changes}, pairs)

    return args, url


def query_url(base: str, values: dict[str, Any], pairs: dict[tuple[str, Any], str] | None = None) -> str:
    """``base`` with ``values`` as its query string, as ``url_for`` would append them: empty values left out, the
    rest in the order given. ``pairs``: each name=value pair as already encoded (a query string is its pairs
    encoded one by one, joined by "&")."""
    pairs = {} if pairs is None else pairs
    parts = []
    for name, value in values.items():
        if value in (None, ""):
            continue
        if type(value) not in (str, int):  # kept by value: strings and whole numbers only (True is not 1 here)
            parts.append(urlencode([(name, value)], safe=QUERY_SAFE))
            continue
        part = pairs.get((name, value))
        if part is None:
            part = pairs[(name, value)] = urlencode([(name, value)], safe=QUERY_SAFE)
        parts.append(part)
    return f"{base}?{'&'.join(parts)}" if parts else base


def row_url(base: str, rid: str) -> str:
    """A referral's page (``worklist.history``) under the queue's URL ``base``, as ``url_for`` would build it."""
    return f"{base}/{quote(str(rid), safe=PATH_SAFE)}/history"


@bp.route("", methods=["GET"])
@launch_required
def index() -> str:
    scope = _scope("list")
    services = _directory_services()
    db = get_session()
    search = _search()
    query = QueueQuery.from_args(request.args, search)
    clock = _clock(scope)
    assignment.seen(db, scope, ((g.launch.context or {}).get("user") or {}).get("name"), clock.now)
    queue = Queue(db, scope, clock, query, services, _program_cache())
    # The overdue notice and the EHR's open unrouted referrals (every one's and nobody's yet), in one statement.
    banners = alerts.queue_banners(db, scope, clock, current_settings(), queue.keysets)
    overdue_alert, unrouted = banners.overdue, banners.untaken
    reaches = bool(scope.keys or scope.teams or banners.unrouted)
    if reaches:
        _index_programs(scope)
    view = queue.view(_page_size())
    ids = [r.id for r in view.records]
    outbox, programs = referral_states_of(ids), queue.program_names_of(ids)
    words = Words()
    entries = [_row(r, scope, services, clock, outbox.get(r.id, []), programs[r.id], words) for r in view.records]
    what = f"{len(entries)} referrals shown" + (f" (page {view.page} of {view.pages})" if view.pages > 1 else "")
    audit("list", scope, None, what + (f", search by {search.kind}" if search else ""))
    notices = closed_loop.loop_notices(view.profiles or {closed_loop.current_profile_name()}, g.launch)
    search_args = {"ref": search.code} if search and search.code else {"patient": "1"} if search else {}
    # One route build for the page: each filter, sort, page and row link only adds its query string or the
    # referral's id to it, a fraction of what a ``url_for`` per link costs.
    base = url_for("worklist.index", lid=g.launch.id)
    args, url = _facet_urls(query, search_args, base)
    tag = user_tag(scope)
    saved = [(v, _describe(v.args)) for v in saved_views(db, tag)]
    unsearchable = (db.scalar(select(func.count()).select_from(ReferralRecord)
                              .where(scoped_query(scope).whereclause, ReferralRecord.mrn_key.is_(None)))
                    if search and search.mrn_key else 0)
    chosen_labels = {name: dict(view.options[name]).get(query.filters.get(name) or "") for name in facet_names()}
    open_followups = followups.rows(followups.open_for(db, scope, current_settings(), clock.now))
    return render_template(
        "worklist/index.html", lid=g.launch.id, view=view, entries=entries, filters=query.filters,
        chosen_labels=chosen_labels, channel_label=cache(channel_label), row_url=partial(row_url, base),
        sort=query.sort, facets=_facets(), sorts=SORTS, url=url, args=args, search=search,
        search_error=request.args.get("search_error"), unsearchable=unsearchable,
        saved=saved, can_save=tag is not None, current_view=view_args(query.filters, query.sort),
        scope=scope, reaches=reaches, unrouted=unrouted, overdue_alert=overdue_alert,
        launch_patient=bool(((g.launch.context or {}).get("patient") or {}).get("mrn")) and not search,
        due_urgent=span_text(_due_rule().urgent), due_routine=span_text(_due_rule().routine),
        loop_notices=notices, retention=retention_text(),
        tz_name=str(tz()), first=view.first + 1, last=view.first + len(entries), followups=open_followups,
        followup_responses=followup_items.RESPONSES)


def _facets() -> list[tuple[str, str]]:
    titles = {f.name: f.title for f in FACETS}
    return [(name, titles[name]() if name in titles else _("Program")) for name in facet_names()]


def _describe(args: dict[str, str]) -> str:
    """A saved view's name, from its filters and sort (nothing typed by the user)."""
    parts = []
    for facet in FACETS:
        value = args.get(facet.name)
        if value:
            texts = dict(facet.options([value]))
            parts.append(str(texts.get(value, value)))
    if args.get(PROGRAM):
        parts.append(args[PROGRAM])
    if args.get("sort") in SORTS:
        parts.append(SORTS[args["sort"]].title())
    return " · ".join(parts) or _("All open, urgent first")


@bp.route("/followup/<fid>", methods=["POST"])
@launch_required
def followup_response(fid: str) -> Response:
    """A social worker records the response to a positive self-screen left open past the visit (reached the patient
    and discussed, or not safe to discuss yet: the item then stays in the queue)."""
    scope = _scope("followup")
    if not scope.can_act:
        abort(403, description="Only social workers record a response here; program managers read the queue.")
    db = get_session()
    item = followups.scoped_item(db, scope, current_settings(), fid)
    if item is None:
        abort(404)
    code = request.form.get("response") or ""
    if not followup_items.record_response(db, item, code, role=ROLE, launch_id=g.launch.id):
        abort(400, description="Choose one of the three responses.")
    patient = followup_items.patient_summary(item)
    record_audit("followup_response", patient={"mrn": patient.get("mrn")}, detail=code, object_id=item.id, db=db)
    db.commit()
    return redirect(url_for("worklist.index", lid=g.launch.id) + "#followups")


@bp.route("/search", methods=["POST"])
@launch_required
def search() -> Response:
    """Find referrals by reference code (shown in the URL) or by MRN (never in a URL, a log or the database:
    its keyed HMAC is kept with the launch, server-side, for the queue to match)."""
    scope = _scope("list")
    by, typed = request.form.get("by"), request.form.get("q") or ""
    if by == "launch-patient":  # "Open this patient's referrals": the patient the EHR gave this launch
        typed = ((g.launch.context or {}).get("patient") or {}).get("mrn") or ""
        by = "mrn"
    if by == "mrn":
        if normalise_mrn(typed) is None:
            return redirect(url_for("worklist.index", lid=g.launch.id, search_error="mrn"))
        g.launch.update_data(worklist_search={"mrn_key": mrn_key(typed)})
        audit("list", scope, None, "search by mrn")
        g.launch.save()
        return redirect(url_for("worklist.index", lid=g.launch.id, patient="1"))
    code = normalise_code(typed)
    if code is None:
        return redirect(url_for("worklist.index", lid=g.launch.id, search_error="code"))
    return redirect(url_for("worklist.index", lid=g.launch.id, ref=code))


@bp.route("/saved", methods=["POST"])
@launch_required
def save_filter() -> Response:
    scope = _scope("list")
    tag = user_tag(scope)
    if tag is None:
        abort(400, description="Saved views need a signed-in user.")
    save_view(get_session(), tag, {k: v for k, v in request.form.items() if k != "csrf_token"})
    return redirect(url_for("worklist.index", lid=g.launch.id, **{k: v for k, v in request.form.items()
                                                                  if k != "csrf_token"}))


@bp.route("/saved/<int:view_id>/delete", methods=["POST"])
@launch_required
def delete_filter(view_id: int) -> Response:
    scope = _scope("list")
    tag = user_tag(scope)
    if tag is not None:
        delete_view(get_session(), tag, view_id)
    return redirect(url_for("worklist.index", lid=g.launch.id))


@bp.route("/export.csv", methods=["GET"])
@launch_required
def export() -> Response:
    """The filtered queue as CSV, for the program's own follow-up lists: no names, MRNs or notes."""
    scope = _scope("export")
    queue = Queue(get_session(), scope, _clock(scope), QueueQuery.from_args(request.args, _search()),
                  _directory_services(), _program_cache())
    lines = queue.lines()  # plain columns only: nothing decrypted but one name per program
    programs = queue.program_names_of([line.id for line in lines])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["reference", "received", "site", "programs", "urgent", "due", "overdue", "status", "first_contact",
                "warm_handoff", "closing_outcome"])
    for line in lines:
        status = normalise(line.status)
        created, first_contact = _aware(line.created_at), _aware(line.first_contact_at)
        overdue = queue.clock.overdue(created, bool(line.urgent), _aware(line.due_at), first_contact is not None,
                                      status)
        w.writerow([reference_code(line.id), local_time(created), line.site_name or _("Site not recorded"),
                    "; ".join(programs.get(line.id, [])), "yes" if line.urgent else "no",
                    local_time(queue.clock.due(created, bool(line.urgent), _aware(line.due_at))),
                    "yes" if overdue else "no",
                    label(status), local_time(first_contact) if first_contact else "", line.handoff or "",
                    closing.english(line.closing_outcome, line.closing_attempts) if line.closing_outcome else ""])
    audit("export", scope, None, f"queue csv, {len(lines)} referrals")
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="queue.csv"'})


def _assignment_text(db: Any, record: ReferralRecord, event: ReferralEvent) -> str:
    if event.assignee == event.by_reference:
        return _("Taken")
    name = assignment.name_of(db, record.ehr or "", event.assignee or "") or event.assignee
    return _("Handed over to %(name)s", name=clean_text(name))


def _history(record: ReferralRecord) -> list[dict[str, Any]]:
    db = get_session()
    items: list[dict[str, Any]] = [{"at": _aware(record.created_at), "kind": "created",
                                    "text": _("Referral received (%(status)s)", status=label("requested"))}]
    for e in db.scalars(select(ReferralEvent).where(ReferralEvent.referral_id == record.id).order_by(ReferralEvent.id)):
        by = clean_text(_read(e.by_name_enc, "referral event") or e.by_reference)
        if e.assignee:  # taken or handed over (status unchanged)
            items.append({"at": _aware(e.at), "kind": "assign", "by": by, "text": _assignment_text(db, record, e)})
            continue
        items.append({"at": _aware(e.at), "kind": "status", "by": by,
                      "text": f"{label(e.from_status)} → {label(e.to_status)}", "to": normalise(e.to_status)})
    for c in db.scalars(select(ContactAttempt).where(ContactAttempt.referral_id == record.id)
                        .order_by(ContactAttempt.id)):
        d = _read(c.detail_enc, "contact attempt") or {"outcome": "unreadable"}
        # Notes (and names) are shown and exported as one line without control or bidi characters, also those
        # stored before notes were cleaned on the way in: a note cannot forge a line of the timeline.
        items.append({"at": _aware(c.at), "kind": "contact", "by": clean_text(d.get("by_name") or c.by_reference),
                      "text": f"{contact_channel_label(d.get('channel', ''))}: {outcome_label(d.get('outcome', ''))}",
                      "note": clean_text(d.get("note"), NOTE_MAX) or None})
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
    entry = _entry(record, scope, _directory_services(), _clock(scope))
    audit("history", scope, rid, None, record)
    handover = assignment.colleague_view(assignment.colleagues(get_session(), scope, record)) if scope.can_act else []
    now_local = datetime.now(UTC).astimezone(tz()).strftime("%Y-%m-%dT%H:%M")
    return render_template("worklist/history.html", lid=g.launch.id, entry=entry, events=_history(record),
                           reference=reference_code(record.id),
                           scope=scope, outcomes=OUTCOMES, outcome_label=outcome_label,
                           contact_channel_label=contact_channel_label, note_max=NOTE_MAX, now_local=now_local,
                           channel_label=channel_label, action_label=action_label,
                           closing_outcomes=[(c, closing.label(c)) for c in closing.OUTCOMES], closed_states=CLOSED,
                           chart_loop=closed_loop.loop_notice(record.profile, g.launch), handover=handover,
                           error=request.args.get("error"))


@bp.route("/<rid>/export.txt", methods=["GET"])
@launch_required
def export_one(rid: str) -> Response:
    """One referral as plain text, for documenting by hand when the chart could not take it."""
    scope, record = _record("export-one", rid)
    entry = _entry(record, scope, _directory_services(), _clock())
    lines = [_("Confidential referral"), f"{entry['patient_name'] or '–'} · MRN {entry['mrn'] or '–'}",
             f"{entry['site_name']} · {local_time(entry['created_at'])}",
             f"{_('Programs')}: {'; '.join(entry['program_names']) or '–'}",
             f"{_('Safe contact')}: {channel_label(entry['safe_contact'].get('channel') or 'none')}",
             f"{_('Status')}: {entry['status_label']}"
             + (f" · {entry['closing_label']}" if entry["closing_label"] else ""), ""]
    for item in _history(record):
        by = f" ({item['by']})" if item.get("by") else ""
        note = f" — {item['note']}" if item.get("note") else ""
        lines.append(f"{local_time(item['at'])}: {item['text']}{by}{note}")
    audit("export-one", scope, rid, "referral text", record)
    lines = [clean_text(line, EXPORT_LINE_MAX) for line in lines]  # one line each, no control or bidi characters
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
    outcome = request.form.get("outcome") or ""
    if to in CLOSED and outcome not in closing.OUTCOMES:  # closing says how it ended, from the short list
        audit("status", scope, rid, "!no-closing-outcome")
        return redirect(url_for("worklist.history", lid=g.launch.id, rid=rid, error="outcome"))
    db = get_session()
    now = datetime.now(UTC)
    db.add(ReferralEvent(referral_id=record.id, from_status=current, to_status=to,
                         by_reference=user.get("reference"), by_name_enc=encrypt_json(user.get("name")), at=now))
    record.status, record.status_by, record.status_at = to, user.get("name"), now
    if to in CLOSED:
        record.closed_at, record.closing_outcome = now, outcome
        record.closing_attempts = _attempts(db, record.id) if outcome == closing.UNREACHABLE else None
    closed_loop.enqueue_status(db, record, to, g.launch)
    audit("status", scope, rid, f"{current}->{to}" + (f" ({outcome})" if to in CLOSED else ""), record, db=db)
    db.commit()
    # A queued chart update is sent by the outbox worker (no EHR call in this request).
    return redirect(request.form.get("next") == "queue" and url_for("worklist.index", lid=g.launch.id)
                    or url_for("worklist.history", lid=g.launch.id, rid=rid))


@bp.route("/<rid>/assign", methods=["POST"])
@launch_required
def assign(rid: str) -> Response:
    """Take the referral, or hand it over to a colleague (one seen for this EHR, or a typed Practitioner
    reference). Audited with who did it and to whom (staff references only, never the patient's)."""
    scope, record = _record("assign", rid, act=True)
    user = (g.launch.context.get("user") or {})
    db = get_session()
    if request.form.get("action") == "take":
        if not scope.user_reference:
            audit("assign", scope, rid, "!no-user")
            abort(400, description="Taking a referral needs a signed-in user.")
        to, name, detail = scope.user_reference, user.get("name"), "take"
    else:
        to = assignment.valid_reference(request.form.get("to") or request.form.get("to_typed"))
        if to is None:
            audit("assign", scope, rid, "!invalid-reference")
            return redirect(url_for("worklist.history", lid=g.launch.id, rid=rid, error="handover"))
        name = assignment.name_of(db, record.ehr or scope.ehr_id, to)
        detail = f"hand over to {to}"
    if record.assignee == to:
        return redirect(url_for("worklist.history", lid=g.launch.id, rid=rid))
    before, now = record.assignee or "nobody", app_clock()
    assignment.assign(record, to, name, now)
    status = normalise(record.status)
    db.add(ReferralEvent(referral_id=record.id, from_status=status, to_status=status, assignee=to,
                         by_reference=scope.user_reference, by_name_enc=encrypt_json(user.get("name")), at=now))
    audit("assign", scope, rid, f"{detail} (was {before})"[:256], record, db=db)  # same transaction
    db.commit()
    return redirect(url_for("worklist.history", lid=g.launch.id, rid=rid))


@bp.route("/<rid>/contact", methods=["POST"])
@launch_required
def log_contact(rid: str) -> Response | tuple[str, int]:
    scope, record = _record("contact", rid, act=True)
    summary = _summary(record)
    channel = request.form.get("channel") or ""
    outcome = request.form.get("outcome") or ""
    note = clean_text(request.form.get("note"), NOTE_MAX * 2)  # one line: no CR/LF, control or bidi characters
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


def _attempts(db: Any, referral_id: str) -> int:
    """Contact attempts logged for the referral (what "unable to reach safely after N attempts" counts)."""
    return int(db.scalar(select(func.count()).select_from(ContactAttempt)
                         .where(ContactAttempt.referral_id == referral_id)) or 0)


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
