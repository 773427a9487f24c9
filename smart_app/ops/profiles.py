"""The deployment's EHR profile, by name or path, with the site's settings applied (restricted note type).

One place for the web pages and the outbox worker: the outbox stores ``profile.ref`` (the bundled name,
or the file's absolute path) and reloads through here, so a profile given as a path works everywhere.
Start-up refuses a profile whose EHR does not keep security labels unless a restricted note type is set.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app

from fhir.builders import EhrProfile, resolve_profile_ref


def _restricted_note_type(app: Flask) -> dict[str, str] | None:
    """Deployment ``restricted_note_type: {system, code, display}`` or env RESTRICTED_NOTE_TYPE=system|code|display."""
    raw = app.config.get("RESTRICTED_NOTE_TYPE") or os.environ.get("RESTRICTED_NOTE_TYPE")
    if isinstance(raw, str) and raw.strip():
        parts = [p.strip() for p in raw.split("|")]
        if len(parts) < 2 or not parts[1]:
            raise ValueError("RESTRICTED_NOTE_TYPE must be system|code|display")
        return {"system": parts[0], "code": parts[1], **({"display": parts[2]} if len(parts) > 2 else {})}
    if isinstance(raw, dict):
        return dict(raw)
    deployment = app.config.get("DEPLOYMENT")
    found = (getattr(deployment, "extra", None) or {}).get("restricted_note_type")
    return dict(found) if found else None


def deployment_ref(app: Flask) -> str:
    """The configured profile as the outbox stores it (a relative path resolves next to the deployment file)."""
    name = app.config.get("EHR_PROFILE") or app.config["DEPLOYMENT"].ehr_profile
    return resolve_profile_ref(name)


def profile_for(app: Flask, ref: str | None = None) -> EhrProfile:
    """The profile ``ref`` (default: the deployment's), with the site's overrides; cached per app."""
    cache: dict[str, EhrProfile] = app.extensions.setdefault("ehr_profiles", {})
    ref = ref or deployment_ref(app)
    key = f"{ref}|{app.config.get('EHR_PROFILE')}|{app.config.get('RESTRICTED_NOTE_TYPE')}"
    if key not in cache:
        overrides: dict[str, Any] = {}
        restricted = _restricted_note_type(app)
        if restricted:
            overrides["restricted_note_type"] = restricted
        cache[key] = EhrProfile.load(ref, overrides)
    return cache[key]


def current_profile() -> EhrProfile:
    return profile_for(current_app._get_current_object())


def init_app(app: Flask) -> None:
    """Fail start-up (RestrictedNoteTypeMissing, a ProfileError) when the profile cannot protect the note."""
    profile_for(app).check_startup()
