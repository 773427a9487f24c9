"""Resume after an accidental quick exit.

Quick exit only stamps the ended launch with ``resumable_until`` (now + RESUME_WINDOW): no slow work there.
A relaunch (``/callback``) by the same EHR user for the same patient and encounter on the same ``iss``
while that window is open is offered to continue: the gate shows one neutral line (no answers, scores or
instrument names on a shared screen). Patient, encounter and user are compared inside the app after
decrypting the context of the few candidates (ended, this ``iss``, window open): no id is stored in clear.
The old launch's encrypted answers are kept only for the window (smart_app/launch/retention.py purges them after).

Not bound to the browser that exited, and the gate's offer says so: quick exit clears every cookie and all storage
this browser holds of the app (``Clear-Site-Data``), so nothing is left in it to recognise; a token kept back for
resuming would be the trace of the visit quick exit removes. A browser binding would also not stop the case that
matters on a shared workstation (the same EHR session relaunching in the same browser), and it would refuse the
clinician who moves the patient to a private room and relaunches at another computer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam
from sqlalchemy.orm import Session

from smart_app.store.crypto import decrypt_json
from smart_app.store.models import LaunchRecord

RESUME_WINDOW = timedelta(minutes=15)
# The working state a continued launch takes over; everything else (locale, offers) is the new launch's.
CARRIED = ("gate", "screening", "danger_check")


def _aware(dt: datetime | None) -> datetime | None:
    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=UTC)


def _who(context: dict[str, Any]) -> tuple[str, str, str] | None:
    """(user reference, patient id, encounter id) of a launch context; None without user or patient."""
    user = (context.get("user") or {}).get("reference")
    patient = (context.get("patient") or {}).get("id")
    encounter = (context.get("encounter") or {}).get("id") or ""
    if not user or not patient:
        return None
    return str(user), str(patient), str(encounter)


def stamp(record: LaunchRecord, now: datetime | None = None) -> None:
    """At quick exit: this launch may be continued for RESUME_WINDOW (only if it holds working state)."""
    if record.data_enc and record.context_enc and record.kind == "ehr":
        record.resumable_until = (now or datetime.now(UTC)) + RESUME_WINDOW


def _open(record: LaunchRecord, now: datetime) -> bool:
    until = _aware(record.resumable_until)
    return record.status == "ended" and until is not None and until > now and bool(record.data_enc)


def _matches(record: LaunchRecord, iss: str, who: tuple[str, str, str]) -> bool:
    return record.iss == iss and _who(decrypt_json(record.context_enc) or {}) == who


# Ended launches of an iss whose resume window is open (bound parameters "iss" and "now"): the callback reads
# them in the same query as the browser's other launches (smart_app/launch/views.py).
OPEN_WINDOW = and_(LaunchRecord.iss == bindparam("iss"), LaunchRecord.status == "ended",
                   LaunchRecord.resumable_until > bindparam("now"))
def find_offer(db: Session, record: LaunchRecord, context: dict[str, Any], candidates: list[str]) -> str | None:
    """The id of an ended launch the new ``record`` (context just read) may continue. ``candidates``: the ids
    OPEN_WINDOW found for ``record``, newest first (the callback reads them with the browser's other launches)."""
    who = _who(context)
    if who is None:
        return None
    now = datetime.now(UTC)
    for old in (db.get(LaunchRecord, lid) for lid in candidates):
        if old is not None and _open(old, now) and _matches(old, record.iss, who):
            data = decrypt_json(old.data_enc) or {}
            if any(data.get(k) for k in CARRIED):
                return old.id
    return None


def take_over(db: Session, old_id: str, iss: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """The old launch's working state (for the new launch), checked again; the old copy is cleared either way.

    None when the window closed or the launch no longer matches (then nothing is carried)."""
    old = db.get(LaunchRecord, old_id) if old_id else None
    who = _who(context)
    if old is None or who is None or not _matches(old, iss, who):
        return None
    carried = None
    if _open(old, datetime.now(UTC)):
        data = decrypt_json(old.data_enc) or {}
        carried = {k: data[k] for k in CARRIED if data.get(k)}
    discard(old)
    return carried


def discard(record: LaunchRecord) -> None:
    """Nothing of this ended launch can be continued any more: its answers go now, not at the purge."""
    record.data_enc = None
    record.resumable_until = None


def start_over(db: Session, old_id: str, iss: str, context: dict[str, Any]) -> None:
    """"Start over": the old launch's answers are deleted (when it is really this user's, patient's launch)."""
    old = db.get(LaunchRecord, old_id) if old_id else None
    who = _who(context)
    if old is not None and who is not None and _matches(old, iss, who):
        discard(old)
