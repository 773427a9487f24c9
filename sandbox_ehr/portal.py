"""The sandbox EHR's patient-facing side: what a patient, or a proxy linked to the patient, can read.

A portal app signs in with a standalone patient launch (``auth.py``: a client registered with ``audience:
patient``, ``patient/*.rs`` or v1 ``patient/*.read`` scopes); the signed-in user is the patient
(``fhirUser`` = ``Patient/<id>``) or a proxy (``RelatedPerson/<id>``, its ``patient`` the patient). Such a token
sees its patient's compartment like any ``patient/`` token, and then the personality file's ``portal.rules``
decide, resource by resource, what is withheld from a ``patient`` or a ``proxy`` viewer: by security label
(``meta.security`` or ``DocumentReference.securityLabel``), by note type, by document status, by resource type or
category. The first rule that matches and names the viewer decides (``hide_from`` withholds, ``show_to`` shows);
no such rule: shown. A withheld resource is left out
of searches and answers a read with 404, as if it were not there (a portal shows nothing, not a refusal).

``flask leak-check`` (smart_app/leakcheck/) reads through this side to prove that nothing the app writes reaches
a patient's or a proxy's portal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox_ehr.store import _values

VIEWERS = ("patient", "proxy")


def viewer_of(fhir_user: str | None) -> str | None:
    """``patient`` or ``proxy`` for a patient-facing sign-in, None for staff and systems."""
    kind = (fhir_user or "").split("/")[0]
    return {"Patient": "patient", "RelatedPerson": "proxy"}.get(kind)


def _codes(resource: dict[str, Any]) -> set[str]:
    """``system|code`` of every security label the resource carries (meta.security, and a document's own
    securityLabel)."""
    codings = [c for c in _values(resource, "meta.security") if isinstance(c, dict)]
    codings += [c for c in _values(resource, "securityLabel.coding") if isinstance(c, dict)]
    return {f"{c.get('system') or ''}|{c.get('code') or ''}" for c in codings}


def _coding_keys(resource: dict[str, Any], path: str) -> set[str]:
    return {f"{c.get('system') or ''}|{c.get('code') or ''}" for c in _values(resource, path + ".coding")
            if isinstance(c, dict)}


@dataclass(frozen=True)
class Rule:
    """One ``portal.rules`` entry: whom it withholds from (``hide_from``) or shows to whatever later rules say
    (``show_to``), and what it matches (every key given must match)."""

    hide_from: frozenset[str]
    show_to: frozenset[str]
    source: str
    types: frozenset[str] = frozenset()
    security: frozenset[str] = frozenset()
    note_types: frozenset[str] = frozenset()
    doc_status: frozenset[str] = frozenset()
    category: frozenset[str] = frozenset()

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], restricted: set[str]) -> Rule:
        note_types = set(raw.get("note_types") or [])
        if "restricted" in note_types:
            # the personality's own restricted note type (its organisation's list)
            note_types = (note_types - {"restricted"}) | restricted
        hide, show = set(raw.get("hide_from") or []), set(raw.get("show_to") or [])
        if (hide | show) - set(VIEWERS) or not (hide or show) or (hide and show):
            raise ValueError(f"portal rule {raw!r}: needs hide_from or show_to, listing patient and/or proxy")
        return cls(frozenset(hide), frozenset(show), str(raw.get("source") or ""), frozenset(raw.get("types") or []),
                   frozenset(raw.get("security") or []), frozenset(note_types),
                   frozenset(raw.get("doc_status") or []), frozenset(raw.get("category") or []))

    def matches(self, resource: dict[str, Any]) -> bool:
        if self.types and resource.get("resourceType") not in self.types:
            return False
        if self.security and not self.security & _codes(resource):
            return False
        if self.note_types and (resource.get("resourceType") != "DocumentReference"
                                or not self.note_types & _coding_keys(resource, "type")):
            return False
        if self.doc_status and resource.get("docStatus") not in self.doc_status:
            return False
        return not self.category or bool(self.category & _coding_keys(resource, "category"))


class PortalRules:
    """A personality's ``portal`` block, interpreted."""

    def __init__(self, raw: dict[str, Any] | None, restricted_note_type: dict[str, Any] | None):
        raw = raw or {}
        restricted = set()
        if restricted_note_type:
            restricted.add(f"{restricted_note_type.get('system') or ''}|{restricted_note_type.get('code') or ''}")
        self.rules = [Rule.from_mapping(r, restricted) for r in raw.get("rules") or []]

    def withheld_by(self, resource: dict[str, Any], viewer: str) -> Rule | None:
        """The rule that keeps ``resource`` from ``viewer``, or None when the viewer sees it: the first rule that
        names the viewer and matches decides."""
        for rule in self.rules:
            if viewer in rule.hide_from | rule.show_to and rule.matches(resource):
                return rule if viewer in rule.hide_from else None
        return None

    def visible(self, resource: dict[str, Any], viewer: str | None) -> bool:
        return viewer is None or self.withheld_by(resource, viewer) is None
