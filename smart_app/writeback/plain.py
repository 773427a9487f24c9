"""Each planned chart resource in plain words, read from the payload itself (what the consent page lists).

The clinician and the patient agree to what the chart will show, so every field a reader of the chart sees is
named: for the referral order its programs, priority and category codings (the category words are what an EHR
shows wherever orders are listed), its safe-contact detail and the contact note exactly as typed; for the score
its categories; for the note its type and category; for the task its owner and priority. The words are built from
the planned resources, never from the page's choices, so the list and the payload cannot drift apart (the page's
digest covers these words).
"""

from __future__ import annotations

from typing import Any

from smart_app.ops.i18n import gettext as _


def _displays(codeable: list[dict[str, Any]] | None) -> str:
    """“SDOH”, “Intimate Partner Violence”: each CodeableConcept's text or first display, quoted as stored."""
    words = []
    for cc in codeable or []:
        coding = (cc.get("coding") or [{}])[0]
        word = cc.get("text") or coding.get("display") or coding.get("code")
        if word:
            words.append(f"“{word}”")
    return ", ".join(words) or _("none")


def _priority(resource: dict[str, Any]) -> str:
    return _("urgent") if resource.get("priority") == "urgent" else _("routine")


def _service_request(res: dict[str, Any]) -> str:
    programs = ", ".join(p.get("display") or "" for p in res.get("performer") or []) or _("no program chosen")
    parts = [_("A referral order to: %(programs)s (priority: %(priority)s).", programs=programs,
               priority=_priority(res)),
             _("Order: “%(code)s”; category: %(categories)s — these words show wherever the chart lists orders.",
               code=(res.get("code") or {}).get("text") or _displays([res.get("code") or {}]),
               categories=_displays(res.get("category")))]
    detail = _displays(res.get("orderDetail")) if res.get("orderDetail") else None
    if detail:
        parts.append(_("Contact: %(detail)s.", detail=detail))
    for note in res.get("note") or []:
        parts.append(_("Note, exactly as typed: “%(text)s”.", text=note.get("text") or ""))
    return " ".join(parts)


def _observation(res: dict[str, Any], screening: dict[str, Any]) -> str:
    value = (res.get("valueQuantity") or {}).get("value")
    interp = screening.get("interpretation")
    words = _("The screening score: %(instrument)s total %(value)s, %(result)s.",
              instrument=str(screening.get("instrument") or "").upper(),
              value=value if value is not None else _("not recorded"),
              result=_("positive") if interp == "positive" else _("negative") if interp == "negative"
              else _("no result"))
    return words + " " + _("Category: %(categories)s.", categories=_displays(res.get("category")))


def _task(res: dict[str, Any]) -> str:
    owner = (res.get("owner") or {}).get("display") or _("no program chosen")
    return _("A follow-up task for social work on the referral (owner: %(owner)s; priority: %(priority)s).",
             owner=owner, priority=_priority(res))


def words_for(kind: str, resource: dict[str, Any], screening: dict[str, Any]) -> str:
    """One planned resource in plain words."""
    if kind == "DocumentReference":
        note_type = (resource.get("type") or {}).get("text") or resource["type"]["coding"][0].get("code")
        return _("A note in the chart (note type: %(type)s; category: %(categories)s) with exactly the text below.",
                 type=note_type, categories=_displays(resource.get("category")))
    if kind == "ServiceRequest":
        return _service_request(resource)
    if kind == "Observation":
        return _observation(resource, screening)
    if kind == "QuestionnaireResponse":
        return _("The patient's answer to each screening question (%(count)s answers).",
                 count=len(resource.get("item") or []))
    if kind == "Condition":
        return _("A health problem on the chart: %(code)s (category: %(categories)s) — it copies into visit "
                 "summaries and other records.", code=_displays([resource.get("code") or {}]),
                 categories=_displays(resource.get("category")))
    return _task(resource)
