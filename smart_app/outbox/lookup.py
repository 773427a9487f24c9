"""Is an earlier send of this write already in the chart? Asked before any re-send whose first send may have
been filed, where the EHR does not honour If-None-Exist: never a blind re-send."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from config.ehr_profile import EhrProfile
from fhir.builders import reference_code
from fhir.client import FhirError, FhirUnavailable
from smart_app.outbox import retry
from smart_app.outbox.state import aware
from smart_app.store.models import OutboxItem

# A note is searched for from this long before its row was stored (the EHR may date it at consent time).
NOTE_DATE_SLACK = timedelta(minutes=10)
NOTES_PER_PAGE = "100"


@dataclass(frozen=True)
class Lookup:
    """``found`` (``resource`` is the chart's copy), ``absent`` (proved), ``retry`` (the search failed for now)
    or ``undecidable`` (it cannot be told); ``why`` says why for the last two, in plain words."""

    verdict: Literal["found", "absent", "retry", "undecidable"]
    resource: dict[str, Any] = field(default_factory=dict)
    why: str = ""


ABSENT = Lookup("absent")


def look_for(row: OutboxItem, resource: dict[str, Any], client: Any, profile: EhrProfile) -> Lookup:
    """Search the EHR for this write. By business identifier where the EHR keeps and searches it (and every hit
    is checked to carry it: an EHR may ignore the parameter); otherwise a note is found by patient + type
    + date + the reference code its text carries."""
    try:
        if profile.search_by_identifier:
            return _by_identifier(row, client)
        if row.kind != "DocumentReference":
            return Lookup("undecidable", why="this EHR cannot be searched for it")
        return _note_by_reference_code(row, resource, client, profile)
    except FhirError as exc:
        if exc.retryable or isinstance(exc, FhirUnavailable):
            return Lookup("retry", why=retry.reason(exc))
        return Lookup("undecidable", why="the EHR did not allow the search (" + retry.reason(exc) + ")")


def _by_identifier(row: OutboxItem, client: Any) -> Lookup:
    ident = f"{row.identifier_system}|{row.identifier_value}"
    for hit in client.search(row.kind, {"identifier": ident}):
        if has_identifier(hit, row.identifier_system, row.identifier_value):
            return Lookup("found", hit)
    return ABSENT


def _note_by_reference_code(row: OutboxItem, resource: dict[str, Any], client: Any, profile: EhrProfile) -> Lookup:
    code = reference_code(row.referral_id)
    # Filed at consent time (DocumentReference.date / context.period.end) or, where the EHR sets the
    # date itself, when it filed it: never before the row was stored.
    since = (aware(row.created_at) - NOTE_DATE_SLACK).isoformat(timespec="seconds")
    params = {"patient": (resource.get("subject") or {}).get("reference", "").split("/")[-1],
              "type": token(resource.get("type")), profile.search_date_param: f"ge{since}",
              "_count": NOTES_PER_PAGE}
    params = {k: v for k, v in params.items() if v}
    if hasattr(client, "search_pages"):
        hits, complete = client.search_pages("DocumentReference", params)
    else:
        hits, complete = client.search("DocumentReference", params), True
    unreadable = 0
    for hit in hits:
        text = note_text(hit, client)
        if text is None:
            unreadable += 1
        elif f"Ref. {code}" in text:
            return Lookup("found", hit)
    if unreadable:
        return Lookup("undecidable", why="a note in the chart could not be read to compare")
    if not complete:
        return Lookup("undecidable", why="too many notes to compare")
    return ABSENT


def has_identifier(resource: dict[str, Any], system: str, value: str) -> bool:
    idents = resource.get("identifier")
    idents = idents if isinstance(idents, list) else [idents] if idents else []
    return any(i.get("system") == system and i.get("value") == value for i in idents)


def token(concept: dict[str, Any] | None) -> str | None:
    """A CodeableConcept as a search token (``system|code``) from its first coding with a code."""
    for coding in (concept or {}).get("coding") or []:
        if coding.get("code"):
            return f"{coding.get('system', '')}|{coding['code']}"
    return None


def note_text(doc: dict[str, Any], client: Any) -> str | None:
    """The note's text from its attachment (inline data, or the Binary its url points at); None if unreadable."""
    texts = []
    for content in doc.get("content") or []:
        att = content.get("attachment") or {}
        data = att.get("data")
        if data is None and att.get("url") and hasattr(client, "read_reference"):
            try:
                binary = client.read_reference(att["url"])
            except FhirError:
                return None
            data = binary.get("data")
        if data is None:
            return None
        try:
            texts.append(base64.b64decode(data).decode("utf-8", errors="replace"))
        except (ValueError, TypeError):
            return None
    return "\n".join(texts) if texts else None
