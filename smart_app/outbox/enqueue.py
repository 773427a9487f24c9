"""Store a referral's planned chart writes as pending outbox rows, encrypted, in the consent request."""

from __future__ import annotations

import json

from sqlalchemy.orm import Session

from config.ehr_profile import EhrProfile
from fhir.builders import PlannedWrite
from smart_app.outbox.settings import OutboxSettings
from smart_app.outbox.state import PENDING, utcnow
from smart_app.store.crypto import encrypt_json
from smart_app.store.models import OutboxItem


def enqueue(db: Session, *, referral_id: str, launch_id: str | None, iss: str, profile: EhrProfile,
            plans: list[PlannedWrite], settings: OutboxSettings | None = None) -> list[OutboxItem]:
    """Store the planned writes (encrypted) as pending rows; the caller commits.
    Needs an app context (encryption key)."""

    settings = settings or OutboxSettings()
    rows = []
    now = utcnow()
    for plan in plans:
        ident = plan.resource["identifier"]
        ident = ident[0] if isinstance(ident, list) else ident
        row = OutboxItem(
            referral_id=referral_id, launch_id=launch_id, iss=iss, profile=profile.ref or profile.name,
            mode=profile.mode,
            kind=plan.kind, identifier_system=ident["system"], identifier_value=ident["value"],
            full_url=plan.full_url, depends_on=json.dumps({k: list(v) for k, v in plan.depends_on.items()}),
            resource_enc=encrypt_json(plan.resource), status=PENDING, attempts=0,
            max_attempts=settings.max_attempts, next_attempt_at=now, created_at=now, updated_at=now,
        )
        db.add(row)
        rows.append(row)
    return rows
