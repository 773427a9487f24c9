"""The chart note's wording: what the note filed with a consented referral says.

This is product policy, not wire format: minimal by default (that a confidential referral was made, how (not) to
contact the patient, who holds the details, never details of abuse); the patient's own words only when the patient
asked for them and the clinician chose that option. ``fhir/builders.py`` files the text exactly as given here, so the
consent page's preview and the chart hold the same bytes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir.builders import CHANNEL_WORDS, WritebackInput, reference_code


def program_names(referral: dict[str, Any]) -> list[str]:
    """The chosen programs' names, in the order the clinician chose them."""
    results = {r.get("service_id"): r for r in referral.get("results") or []}
    return [results[s].get("program") or results[s].get("name") or "" for s in referral.get("selected") or []
            if s in results]


def contact_sentence(safe_contact: dict[str, Any] | None) -> str:
    """Only what the patient answered; an unanswered question is shown as such (never a default)."""
    channel = (safe_contact or {}).get("channel")
    note = ((safe_contact or {}).get("note") or "").strip()
    if not channel:
        return "Safe contact: not answered yet."
    if channel == "none":
        return ("Do not contact the patient about this referral: no contact channel is safe. "
                "The patient will make contact.")
    sentence = f"The patient says contact by {CHANNEL_WORDS.get(channel, channel)} is safe"
    return f"{sentence} ({note})." if note else f"{sentence}."


def note_text(referral_key: str, referral: dict[str, Any], safe_contact: dict[str, Any] | None,
              detail_text: str | None = None) -> str:
    """The note body; ``detail_text`` only when the patient asked for a detailed note and the clinician chose it."""
    lines = [
        "Confidential referral to support services, made with the patient's consent.",
        contact_sentence(safe_contact),
        "Details are held by social work. Do not discuss in the presence of others.",
    ]
    programs = program_names(referral)
    if programs:
        lines.insert(1, "Referred to: " + "; ".join(programs) + ".")
    if (detail_text or "").strip():
        lines.append("")
        lines.append("Documented at the patient's request:")
        lines.append((detail_text or "").strip())
    lines.append("")
    lines.append(f"Ref. {reference_code(referral_key)}")
    return "\n".join(lines)


def with_note(inp: WritebackInput, detail_text: str | None = None) -> WritebackInput:
    """``inp`` with its note worded from its own referral and safe contact."""
    return replace(inp, note_text=note_text(inp.referral_key, inp.referral, inp.safe_contact, detail_text))
