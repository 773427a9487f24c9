"""The deployment's EHR profile, by name or path, with the site's settings applied (restricted note type).

One place for the web pages and the outbox worker: the outbox stores ``profile.ref`` (the bundled name,
or the file's absolute path) and reloads through here, so a profile given as a path works everywhere.
Start-up refuses a profile whose EHR does not keep security labels unless a restricted note type is set.
"""

from __future__ import annotations

import os

from flask import Flask, current_app

from config.ehr_profile import EhrProfile, NoteCoding, resolve_profile_ref


def _restricted_note_type(app: Flask) -> NoteCoding | None:
    """Deployment ``restricted_note_type: {system, code, display}`` or env RESTRICTED_NOTE_TYPE=system|code|display."""
    raw = app.config.get("RESTRICTED_NOTE_TYPE") or os.environ.get("RESTRICTED_NOTE_TYPE")
    if not raw:
        deployment = app.config.get("DEPLOYMENT")
        raw = (getattr(deployment, "extra", None) or {}).get("restricted_note_type")
    return NoteCoding.model_validate(raw) if raw else None


def deployment_ref(app: Flask) -> str:
    """The configured profile as the outbox stores it (a relative path resolves next to the deployment file)."""
    name = app.config.get("EHR_PROFILE") or app.config["DEPLOYMENT"].ehr_profile
    return resolve_profile_ref(name)


def profile_for(app: Flask, ref: str | None = None) -> EhrProfile:
    """The profile ``ref`` (default: the deployment's), with the site's restricted note type; cached per app."""
    cache: dict[str, EhrProfile] = app.extensions.setdefault("ehr_profiles", {})
    ref = ref or deployment_ref(app)
    key = f"{ref}|{app.config.get('EHR_PROFILE')}|{app.config.get('RESTRICTED_NOTE_TYPE')}"
    if key not in cache:
        cache[key] = EhrProfile.load(ref).with_restricted_note_type(_restricted_note_type(app))
    return cache[key]


def current_profile() -> EhrProfile:
    return profile_for(current_app._get_current_object())


def init_app(app: Flask) -> None:
    """Fail start-up (RestrictedNoteTypeMissing, a ProfileError) when the profile cannot protect the note."""
    profile_for(app).check_startup()
