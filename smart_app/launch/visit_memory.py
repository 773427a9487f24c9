"""Memory across launches: "this patient was screened / referred here recently" — and nothing more.

A later launch for the same patient (same EHR) within ``WORKLIST_MEMORY_DAYS`` (30 by default) shows the
clinician one line at the gate: the date, and for a referral its plain status and whether social work
has made contact. Never answers, never a score, never which instrument. Patients and encounters are
known only by keyed HMACs of (iss, id), so the tables hold no chart id. Screens leave a ``patient_mark``
(deleted after the window, smart_app/worklist/retention.py); referrals are found by their own keys.

A second referral for the same visit (same encounter) needs an explicit choice on the consent form.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, literal, null, select, union_all
from sqlalchemy.orm import Session

from smart_app.store.crypto import keyed_hash
from smart_app.store.models import PatientMark, ReferralRecord
from smart_app.store.task_status import CLOSED, normalise

DEFAULT_MEMORY_DAYS = 30


def _key(kind: str, iss: str, value: str | None) -> str | None:
    if not value:
        return None
    return keyed_hash(f"{kind}|{iss.rstrip('/')}|{value}")


def patient_key(iss: str, context: dict[str, Any]) -> str | None:
    return _key("patient", iss, ((context or {}).get("patient") or {}).get("id"))


def encounter_key(iss: str, context: dict[str, Any]) -> str | None:
    return _key("encounter", iss, ((context or {}).get("encounter") or {}).get("id"))


def memory_days() -> int:
    return int(current_app.config.get("WORKLIST_MEMORY_DAYS", DEFAULT_MEMORY_DAYS))


def record_screen(db: Session, iss: str, context: dict[str, Any]) -> None:
    """Leave the minimal mark of a completed screen (the caller commits)."""
    pk = patient_key(iss, context)
    if pk:
        db.add(PatientMark(patient_key=pk, encounter_key=encounter_key(iss, context), kind="screen",
                           at=datetime.now(UTC)))


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@cache
def _latest_statement() -> Any:
    """Built once: constructing the union costs more CPU than running it (its cache key is still per call)."""
    pk, since, exclude = bindparam("pk"), bindparam("since"), bindparam("exclude")
    referral = (select(literal("referral").label("kind"), ReferralRecord.created_at.label("at"),
                       ReferralRecord.status.label("status"), ReferralRecord.first_contact_at.label("contact"),
                       ReferralRecord.encounter_key.label("ek"))
                .where(ReferralRecord.patient_key == pk, ReferralRecord.created_at >= since,
                       ReferralRecord.launch_id != exclude))
    mark = (select(literal("screen").label("kind"), PatientMark.at.label("at"),
                   null().cast(ReferralRecord.status.type).label("status"),
                   null().cast(ReferralRecord.first_contact_at.type).label("contact"),
                   PatientMark.encounter_key.label("ek"))
            .where(PatientMark.patient_key == pk, PatientMark.at >= since))
    return union_all(*(select(q.order_by(q.selected_columns.at.desc()).limit(1).subquery()) for q in (referral, mark)))


def recent(db: Session, iss: str, context: dict[str, Any], *, exclude_launch: str | None = None,
           now: datetime | None = None) -> dict[str, Any] | None:
    """The latest referral or screen of this patient within the window: {"at", "kind", "status",
    "contacted", "same_visit"}; None when there is none."""
    pk = patient_key(iss, context)
    if not pk:
        return None
    since = (now or datetime.now(UTC)) - timedelta(days=memory_days())
    ek = encounter_key(iss, context)
    # One round trip: the latest referral and the latest screen mark (a referral is preferred when both exist).
    rows = {row.kind: row for row in db.execute(_latest_statement(), {
        "pk": pk, "since": since, "exclude": exclude_launch or ""})}  # "": launch ids are never empty
    if "referral" in rows:
        row = rows["referral"]
        return {"at": _aware(row.at), "kind": "referral", "status": normalise(row.status),
                "open": normalise(row.status) not in CLOSED, "contacted": row.contact is not None,
                "same_visit": bool(ek) and row.ek == ek}
    if "screen" in rows:
        row = rows["screen"]
        return {"at": _aware(row.at), "kind": "screen", "same_visit": bool(ek) and row.ek == ek}
    return None


def visit_referral(db: Session, iss: str, context: dict[str, Any], *, exclude_launch: str | None = None) \
        -> ReferralRecord | None:
    """An existing referral for this very visit (same patient and encounter) from another launch."""
    pk, ek = patient_key(iss, context), encounter_key(iss, context)
    if not pk or not ek:
        return None
    q = select(ReferralRecord).where(ReferralRecord.patient_key == pk, ReferralRecord.encounter_key == ek)
    if exclude_launch:
        q = q.where(ReferralRecord.launch_id != exclude_launch)
    return db.scalars(q.order_by(ReferralRecord.created_at.desc()).limit(1)).first()
