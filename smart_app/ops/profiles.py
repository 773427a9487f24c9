"""The EHR profile of a chart write, by name or path, with the site's restricted note type applied.

One place for the web pages and the outbox worker: the outbox stores ``profile.ref`` (the bundled name, or the
file's absolute path) and reloads through here, so a profile given as a path works everywhere. Start-up refuses
a profile whose EHR does not keep security labels unless a restricted note type is set.
"""

from __future__ import annotations

from flask import Flask, current_app

from config.current import settings_of
from config.ehr_profile import EhrProfile


def profile_for(app: Flask, ref: str | None = None) -> EhrProfile:
    """The profile ``ref`` (default: the deployment's), with the site's restricted note type; cached per app."""
    settings = settings_of(app)
    if ref is None or ref == settings.profile.ref:
        return settings.profile
    cache: dict[tuple[str, object], EhrProfile] = app.extensions.setdefault("ehr_profiles", {})
    key = (ref, settings.restricted_note_type)
    if key not in cache:
        cache[key] = EhrProfile.load(ref).with_restricted_note_type(settings.restricted_note_type)
    return cache[key]


def current_profile() -> EhrProfile:
    return profile_for(current_app._get_current_object())


def init_app(app: Flask) -> None:
    """Fail start-up (RestrictedNoteTypeMissing) when the profile cannot protect the note, in every mode."""
    settings_of(app).profile.check_startup()
