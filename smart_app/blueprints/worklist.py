"""Social-work queue: consented referrals with status, site, urgency and chart-write status.

Only a user whose launch context carries the ``social_worker`` role sees it (others get a 403
page). It never shows screening answers or scores. Status changes (new -> contacted -> closed)
are recorded with who and when in ``referral_event``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, g, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from smart_app import events
from smart_app.audit import record_audit
from smart_app.blueprints.writeback import channel_label, referral_rows, row_view
from smart_app.crypto import Undecryptable, decrypt_json, encrypt_json
from smart_app.db import get_session
from smart_app.launch_state import launch_required
from smart_app.models import ReferralEvent, ReferralRecord

bp = Blueprint("worklist", __name__, url_prefix="/l/<lid>/worklist")
# Index is "" so the URL is exactly /l/<lid>/worklist (the launch redirects there).

ROLE = "social_worker"
UNREADABLE = "Unreadable: encrypted with a key this server no longer has (tell IT: key rotation)"
STATUSES = ("new", "contacted", "closed")
# Forward moves only; a closed referral stays closed (reopen = a new referral).
TRANSITIONS = {"new": ("contacted", "closed"), "contacted": ("closed",), "closed": ()}


def _require_social_worker() -> dict[str, Any]:
    user = g.launch.context.get("user") or {}
    if ROLE not in (user.get("roles") or []):
        abort(403, description="The social-work queue is only for social workers. "
                               "Ask your administrator if you need access.")
    return user


def _summary(record: ReferralRecord) -> dict[str, Any]:
    """The referral's encrypted summary; a summary no configured key decrypts is shown as unreadable."""
    try:
        return decrypt_json(record.summary_enc, where="referral summary") or {}
    except Undecryptable:
        return {"patient_name": UNREADABLE, "unreadable": True}


def _entry(record: ReferralRecord) -> dict[str, Any]:
    summary = _summary(record)
    rows = [row_view(r) for r in referral_rows(record.id)]
    states = {r["state"] for r in rows}
    write = ("failed" if "failed" in states else "check" if "check" in states else "queued" if "queued" in states
             else "written" if rows else "none")
    return {"id": record.id, "created_at": record.created_at, "status": record.status, "site": record.site,
            "urgent": record.urgent, "status_by": record.status_by, "status_at": record.status_at,
            "patient_name": summary.get("patient_name"), "mrn": summary.get("mrn"),
            "programs": summary.get("programs") or [], "safe_contact": summary.get("safe_contact") or {},
            "write": write, "rows": rows, "transitions": TRANSITIONS.get(record.status, ()),
            "label_warnings": [r for r in rows if r["label_status"] == "flagged"]}


def _audit_patient(record: ReferralRecord) -> dict[str, Any]:
    """The referral's patient for the audit row (the social worker's launch has no patient of its own)."""
    summary = _summary(record)
    return {"id": summary.get("patient_id"), "mrn": summary.get("mrn")}


@bp.route("", methods=["GET"])
@launch_required
def index() -> str:
    _require_social_worker()
    show = request.args.get("show", "open")
    q = select(ReferralRecord).order_by(ReferralRecord.urgent.desc(), ReferralRecord.created_at.desc())
    if show != "all":
        q = q.where(ReferralRecord.status != "closed")
    entries = [_entry(r) for r in get_session().scalars(q.limit(500))]
    record_audit("view_worklist", patient={}, detail=f"{len(entries)} referrals shown")
    return render_template("worklist/index.html", lid=g.launch.id, entries=entries, show=show,
                           channel_label=channel_label)


@bp.route("/<rid>/status", methods=["POST"])
@launch_required
def set_status(rid: str) -> Response:
    user = _require_social_worker()
    db = get_session()
    record = db.get(ReferralRecord, rid)
    if record is None:
        abort(404)
    to = request.form.get("status")
    if to not in TRANSITIONS.get(record.status, ()):
        abort(400, description="That status change is not allowed.")
    now = datetime.now(UTC)
    record_status_before = record.status
    db.add(ReferralEvent(referral_id=record.id, from_status=record.status, to_status=to,
                         by_reference=user.get("reference"), by_name_enc=encrypt_json(user.get("name")), at=now))
    record.status, record.status_by, record.status_at = to, user.get("name"), now
    record_audit("change_status", patient=_audit_patient(record), object_id=record.id,
                 detail=f"{record_status_before}->{to}", db=db)
    db.commit()
    events.referral_status(record, to, now)
    return redirect(url_for("worklist.index", lid=g.launch.id))


@bp.route("/<rid>/history", methods=["GET"])
@launch_required
def history(rid: str) -> str:
    _require_social_worker()
    db = get_session()
    record = db.get(ReferralRecord, rid)
    if record is None:
        abort(404)
    record_audit("open_referral", patient=_audit_patient(record), object_id=record.id)
    events = [{"from": e.from_status, "to": e.to_status, "by": decrypt_json(e.by_name_enc) or e.by_reference,
               "at": e.at} for e in db.scalars(select(ReferralEvent).where(ReferralEvent.referral_id == rid)
                                                 .order_by(ReferralEvent.id))]
    return render_template("worklist/history.html", lid=g.launch.id, entry=_entry(record), events=events)
