"""Launches without the EHR round trip: the app's configuration for a test or a bench, the launch context as
fhir/context.py builds it, and launch records stored as the callback stores them (context and tokens encrypted),
for clinicians and for social workers with given PractitionerRoles."""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.fernet import Fernet

from smart_app.launch.state import Launch, new_expiry
from smart_app.store.db import get_session
from smart_app.store.models import LaunchRecord

EHR1 = "http://127.0.0.1:9/fhir"        # nothing listens: writes stay queued, at once
EHR2 = "http://127.0.0.1:9/other/fhir"  # a second EHR (another iss)
SNOMED_SW = {"system": "http://snomed.info/sct", "code": "106328005", "display": "Social worker"}


def app_config(db_url: str, **extra: Any) -> dict[str, Any]:
    config = {
        "TESTING": True,
        "DATABASE_URL": db_url,
        "SECRET_KEY": secrets.token_urlsafe(16),
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "WTF_CSRF_ENABLED": False,
        "SESSION_COOKIE_SECURE": False,
    }
    config.update(extra)
    return config


def default_context(**overrides: Any) -> dict[str, Any]:
    """Context as fhir/context.py builds it at launch (see that module for the shape)."""
    context: dict[str, Any] = {
        "patient": {
            "id": "pat-test", "name": "Rosa Test", "birthDate": "1990-04-02", "gender": "female",
            "language": "en", "languages": ["en"], "mrn": "TEST-1",
        },
        "encounter": {
            "id": "enc-test", "class": "AMB",
            "locations": [{"id": "loc-mgh-chelsea", "name": "MGH Chelsea HealthCare Center",
                           "identifiers": [{"system": "urn:ipv-sandbox:site", "value": "mgh-chelsea"}],
                           "postalCode": "02150"}],
            "service_provider": {"id": "org-mgh", "name": "Massachusetts General Hospital",
                                 "identifiers": []},
        },
        "user": {"reference": "Practitioner/prac-test", "name": "Dr. Test Clinician",
                 "roles": ["clinician"]},
        "need_patient_banner": True,
        "smart_style_url": None,
        "intent": None,
        "fhir_context": [],
        "scope": "",
    }
    context.update(overrides)
    return context


def store_launch(app, *, bid: str, context: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                 tokens: dict[str, Any] | None = None, iss: str = "http://ehr.test/fhir", kind: str = "ehr",
                 status: str = "active") -> str:
    """Store a launch record as the callback would (context and tokens encrypted); returns its id."""
    with app.test_request_context():
        record = LaunchRecord(state=secrets.token_urlsafe(24), browser_id=bid, iss=iss,
                              kind=kind, status=status, expires_at=new_expiry())
        launch = Launch(record)
        launch.set_context(context or default_context())
        launch.set_tokens(tokens if tokens is not None else {"access_token": "test-token", "token_type": "Bearer"})
        if data:
            launch.update_data(**data)
        db = get_session()
        db.add(record)
        db.commit()
        return record.id


def launch_for(app, client, context: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
               iss: str = "http://ehr.test/fhir", kind: str = "ehr") -> str:
    """An active launch bound to ``client``'s browser (its session cookie's ``bid``)."""
    with client.session_transaction() as sess:
        bid = sess.setdefault("bid", secrets.token_urlsafe(24))
    return store_launch(app, bid=bid, context=context, data=data, iss=iss, kind=kind)


def add_launch(app, iss: str, access_token: str | None, patient: str = "pat-1", encounter: str | None = None,
               tokens: dict[str, Any] | None = None) -> str:
    """An active launch record (no browser needed: the outbox worker only uses its tokens)."""
    ctx = default_context()
    ctx["patient"]["id"] = patient
    ctx["encounter"] = {**ctx["encounter"], "id": encounter} if encounter else None
    return store_launch(app, bid="worker-test", context=ctx, iss=iss,
                        tokens=tokens if tokens is not None else {"access_token": access_token, "token_type": "Bearer"})


def worker_context(reference: str, name: str, roles: list[dict[str, Any]], scope: str = "") -> dict[str, Any]:
    """A social worker's standalone launch: no patient, no encounter, the user's PractitionerRoles."""
    return default_context(patient=None, encounter=None, scope=scope,
                           user={"reference": reference, "name": name, "roles": [],
                                 "practitioner_roles": roles})


def role(codings: list[dict[str, Any]] | None = None, texts: list[str] | None = None,
         organizations: list[str] = (), locations: list[str] = ()) -> dict[str, Any]:
    """A PractitionerRole as fhir/context.py reads it (codes, texts, the places it is at)."""
    return {"id": "r", "active": True, "codings": codings or [], "texts": texts or [],
            "organizations": [{"reference": o, "display": o} for o in organizations],
            "locations": [{"reference": loc, "display": loc} for loc in locations], "services": []}
