"""Closed loop: a social worker's status change goes back to the chart, through the outbox.

Where the EHR profile lists ``status_updates`` (config/ehr_profiles/*.yaml: the resource types whose
status this app may update, e.g. ``[Task, ServiceRequest]``) and the referral wrote such a resource, a
status change stores an outbox row (``operation="status"``) naming the resource it changes
(``depends_on``) and the status it wants (Task: the SDOHCC Task status; ServiceRequest: the request status
that matches, smart_app/store/task_status.py). The outbox worker sends it like any chart write (backoff,
Retry-After, one final retry, failures kept and shown) once the referral's own create of that resource is
written, with ``send_status`` (smart_app/outbox/send_status.py): exactly once in effect, and never over an edit
made in the EHR meanwhile.

A closing status carries how the referral ended (smart_app/store/closing.py) to the Task as ``statusReason`` (a
coding in this app's system, the plain words as text). A newer change for the same resource replaces a queued
older one (only the latest status matters).
Where the profile lists nothing, or the social worker's sign-in lacks the write scope, nothing is queued
and the queue says so.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.current import current_settings
from config.ehr_profile import ProfileError
from smart_app.ops.i18n import gettext as _
from smart_app.ops.profiles import profile_for
from smart_app.store import closing
from smart_app.store.crypto import Undecryptable, decrypt_json, encrypt_json
from smart_app.store.db import get_session
from smart_app.store.models import OutboxItem, ReferralRecord
from smart_app.store.task_status import CLOSED, SERVICE_REQUEST_STATUS, label

STATUS_SYSTEM = "urn:ipv-screen:status-update"
KINDS = ("Task", "ServiceRequest")
KIND_LABEL = {"Task": "follow-up task", "ServiceRequest": "referral order"}


def current_profile_name() -> str:
    return current_settings().profile.ref


def status_kinds(profile: str) -> tuple[str, ...]:
    """The resource types whose status the profile lets this app update (empty: none, or no such profile)."""
    try:
        return profile_for(current_app._get_current_object(), profile).status_updates
    except ProfileError:
        return ()


def _scope_allows(scope: str, kind: str) -> bool:
    """Does the granted scope let the user update ``kind``? SMART v2 (``.u``/``cruds``) or v1 (``.write``/``.*``)."""
    for s in scope.split():
        ctx, _sep, rest = s.partition("/")
        rtype, _dot, perms = rest.partition(".")
        if ctx not in ("user", "patient", "system") or rtype not in (kind, "*"):
            continue
        perms = perms.split("?")[0]
        if perms in ("write", "*") or (perms and set(perms) <= set("cruds") and "u" in perms):
            return True
    return False


def loop_notice(profile: str, launch: Any) -> dict[str, Any]:
    kinds = status_kinds(profile)
    granted = str((launch.context or {}).get("scope") or (launch.tokens or {}).get("scope") or "")
    usable = [k for k in kinds if _scope_allows(granted, k)]
    if not kinds:
        text = _("This EHR does not take status updates from this app: status changes and contact attempts "
                 "stay in this queue and nothing is sent to the chart.")
    elif not usable:
        text = _("Your sign-in does not allow updating the chart: status changes stay in this queue and "
                 "nothing is sent to the chart.")
    else:
        text = _("Status changes are sent to the chart (%(what)s) and retried until the EHR has them.",
                 what=", ".join(KIND_LABEL[k] for k in usable))
    return {"profile": profile, "on": bool(usable), "kinds": usable, "text": text}


def loop_notices(profiles: set[str], launch: Any) -> list[dict[str, Any]]:
    return [loop_notice(p, launch) for p in sorted(profiles)]


def _wanted(kind: str, task_status: str) -> str:
    return task_status if kind == "Task" else SERVICE_REQUEST_STATUS[task_status]


def _outcome(record: ReferralRecord, kind: str, task_status: str) -> dict[str, Any]:
    """How a closed referral ended, for the Task's statusReason (smart_app/store/closing.py); nothing otherwise.
    A ServiceRequest has no reason element for it: its status says completed or revoked."""
    if kind != "Task" or task_status not in CLOSED or not record.closing_outcome:
        return {}
    return {"status_reason": {"coding": [{"system": closing.SYSTEM, "code": record.closing_outcome,
                                          "display": closing.english(record.closing_outcome)}],
                              "text": closing.english(record.closing_outcome, record.closing_attempts)},
            "closing_outcome": record.closing_outcome, "closing_attempts": record.closing_attempts}


def enqueue_status(db: Session, record: ReferralRecord, task_status: str, launch: Any) -> str:
    """Queue the chart update for this status change; returns "queued", "off" (profile or scope says no)
    or "nothing" (the referral wrote no resource to update). The caller commits."""
    notice = loop_notice(record.profile, launch)
    if not notice["on"]:
        return "off"
    targets = list(db.scalars(select(OutboxItem).where(
        OutboxItem.referral_id == record.id, OutboxItem.operation == "create",
        OutboxItem.kind.in_(notice["kinds"]), OutboxItem.status != "failed")))
    if not targets:
        return "nothing"
    now = datetime.now(UTC)
    for target in targets:
        # Only the latest status matters: an older change not yet sent is replaced.
        for old in db.scalars(select(OutboxItem).where(
                OutboxItem.referral_id == record.id, OutboxItem.operation == "status",
                OutboxItem.kind == target.kind, OutboxItem.status == "pending")):
            old.status, old.last_error, old.updated_at = "superseded", "replaced by a later status change", now
        seq = db.scalar(select(OutboxItem.id).order_by(OutboxItem.id.desc()).limit(1)) or 0
        db.add(OutboxItem(
            referral_id=record.id, launch_id=launch.id, iss=record.iss, profile=record.profile, mode="single",
            kind=target.kind, operation="status", identifier_system=STATUS_SYSTEM,
            identifier_value=f"{record.id}:{target.kind}:{seq + 1}:{task_status}:{now.timestamp():.6f}",
            full_url=f"status:{target.full_url}",
            depends_on=json.dumps({target.full_url: [target.kind, True]}),
            resource_enc=encrypt_json({"resourceType": target.kind, "status": _wanted(target.kind, task_status),
                                       "task_status": task_status, **_outcome(record, target.kind, task_status)}),
            status="pending", attempts=0, max_attempts=target.max_attempts, next_attempt_at=now,
            created_at=now, updated_at=now))
    return "queued"


def updates_for(referral_id: str) -> list[dict[str, Any]]:
    """History lines for the chart updates of a referral's status changes."""
    items = []
    for row in get_session().scalars(select(OutboxItem).where(OutboxItem.referral_id == referral_id,
                                                              OutboxItem.operation == "status")
                                     .order_by(OutboxItem.id)):
        if row.status == "superseded":
            continue
        try:
            wanted = decrypt_json(row.resource_enc, where="status update") or {}
        except Undecryptable:
            wanted = {}
        what = KIND_LABEL.get(row.kind, row.kind)
        status = label(wanted.get("task_status"))
        if wanted.get("closing_outcome"):
            status += f" ({closing.label(wanted['closing_outcome'], wanted.get('closing_attempts'))})"
        if row.status == "written":
            text = _("Chart updated: %(what)s set to “%(status)s”", what=what, status=status)
        elif row.status == "failed":
            text = _("Chart NOT updated: %(what)s (%(reason)s) — update it by hand", what=what,
                     reason=row.last_error or "")
        else:
            text = _("Chart update queued: %(what)s to “%(status)s”", what=what, status=status)
        at = row.written_at or row.created_at
        items.append({"at": at if at.tzinfo else at.replace(tzinfo=UTC), "kind": "chart", "text": text,
                      "state": row.status})
    return items

