"""Who works a referral: a social worker takes it, or hands it over to a colleague of the same EHR (and team).

The assignee is stored as the social worker's fhirUser reference as the EHR gave it (staff, never the patient:
``ReferralRecord.assignee``), with their name encrypted beside it. The colleagues offered for "Hand over to…" are
the social workers this app has seen working the queue of that EHR (``worklist_colleague``: reference, name
encrypted, the routing teams they worked), limited for a team's referral to the members of that team, so a referral
is never handed to someone whose queue does not show it; a colleague not seen yet can be typed as a Practitioner
reference. Each change is audited by the caller (no patient detail in the audit's plain text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from smart_app.store.crypto import Undecryptable, decrypt_json, encrypt_json
from smart_app.store.models import ReferralRecord, SocialWorkerSeen
from smart_app.worklist.routing import UNROUTED
from smart_app.worklist.scope import Scope

# A FHIR reference to a person, relative or absolute (https://hl7.org/fhir/R4/references.html): what fhirUser holds.
REFERENCE = re.compile(r"^(?:https?://[^\s/]+(?:/[^\s/]+)*/)?(?:Practitioner|PractitionerRole|Person)/[A-Za-z0-9\-.]{1,64}$")
REFERENCE_MAX = 256
SEEN_REFRESH = timedelta(hours=1)  # the colleague row is rewritten at most this often per user (not every page)
COLLEAGUES_MAX = 200


@dataclass(frozen=True)
class Colleague:
    reference: str
    name: str | None


def valid_reference(text: str | None) -> str | None:
    """A typed practitioner reference, trimmed, if it is one (else None)."""
    value = (text or "").strip()
    return value if len(value) <= REFERENCE_MAX and REFERENCE.match(value) else None


def _teams_text(scope: Scope) -> str:
    return ",".join(sorted(scope.teams))


def seen(db: Session, scope: Scope, name: str | None, now: datetime) -> None:
    """Remember a social worker who works this EHR's queue (at most once an hour, or when their teams change).
    Its own small write: a lost race with another page of the same user changes nothing."""
    if not scope.can_act or not scope.user_reference or len(scope.user_reference) > REFERENCE_MAX:
        return
    row = db.scalar(select(SocialWorkerSeen).where(SocialWorkerSeen.ehr == scope.ehr_id,
                                                   SocialWorkerSeen.reference == scope.user_reference))
    teams = _teams_text(scope)
    if row is None:
        db.add(SocialWorkerSeen(ehr=scope.ehr_id, reference=scope.user_reference, name_enc=encrypt_json(name),
                                teams=teams, seen_at=now))
    elif row.teams != teams or _aware(row.seen_at) < now - SEEN_REFRESH:
        row.teams, row.name_enc, row.seen_at = teams, encrypt_json(name), now
    else:
        return
    try:
        db.commit()
    except IntegrityError:
        db.rollback()


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _name(blob: bytes | None) -> str | None:
    try:
        value = decrypt_json(blob, where="colleague name")
    except Undecryptable:
        return None
    return str(value) if value else None


def colleagues(db: Session, scope: Scope, record: ReferralRecord) -> list[Colleague]:
    """Who this referral can be handed to: social workers seen for its EHR whose queue shows it (for a team's
    referral, that team's members), the user and the current assignee left out, by name."""
    rows = db.scalars(select(SocialWorkerSeen).where(SocialWorkerSeen.ehr == (record.ehr or scope.ehr_id))
                      .order_by(SocialWorkerSeen.seen_at.desc()).limit(COLLEAGUES_MAX))
    out = []
    for row in rows:
        if row.reference in (scope.user_reference, record.assignee):
            continue
        if record.route_team and record.route_kind != UNROUTED and record.route_team not in row.teams.split(","):
            continue
        out.append(Colleague(row.reference, _name(row.name_enc)))
    return sorted(out, key=lambda c: ((c.name or c.reference).lower(), c.reference))


def name_of(db: Session, ehr: str, reference: str) -> str | None:
    row = db.scalar(select(SocialWorkerSeen).where(SocialWorkerSeen.ehr == ehr,
                                                   SocialWorkerSeen.reference == reference))
    return _name(row.name_enc) if row is not None else None


def assign(record: ReferralRecord, reference: str, name: str | None, now: datetime) -> None:
    record.assignee, record.assignee_name_enc, record.assigned_at = reference, encrypt_json(name), now


def assignee_name(record: ReferralRecord) -> str | None:
    """The assignee as the queue shows them: their name, else their reference."""
    if not record.assignee:
        return None
    return _name(record.assignee_name_enc) or record.assignee


def colleague_view(items: list[Colleague]) -> list[dict[str, Any]]:
    return [{"reference": c.reference, "name": c.name or c.reference} for c in items]
