"""Resources the app writes to the chart (FHIR R4, US Core + SDOH Clinical Care aligned).

``plan_writeback`` turns one consented referral into a list of ``PlannedWrite``: the resource,
its business identifier (for conditional create) and a stable ``urn:uuid`` that other resources
of the same referral use to point at it. In a transaction that urn is the entry's fullUrl and
the server resolves it; with single creates the outbox swaps it for the server's id once the
target is written (or drops an optional link if the target could not be written).

Every resource gets the deployment's security labels (fhir/labels.py) and is validated with the
``fhir.resources`` R4B models before it is stored in the outbox. Nothing here logs content.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from fhir.labels import LabelPolicy, apply_labels
from fhir.resources.R4B import get_fhir_model_class
from fhir.smart.scopes import allows, spell

CODES_FILE = Path(__file__).resolve().parent / "writeback_codes.yaml"
# Namespace for the urn:uuid of each planned write (uuid5 of its business identifier).
WRITEBACK_NS = uuid.UUID("5b0f3c56-8c59-4c1e-9b8e-2f4f7f5d2a11")

ALL_RESOURCES = ("QuestionnaireResponse", "Observation", "ServiceRequest", "DocumentReference", "Task", "Condition")
# Kinds that copy forward or that many people see (a problem list entry or a visit's diagnosis, a score row): the
# caller offers them only where its deployment turns them on.
BROADLY_VISIBLE = ("Observation", "Condition")
# What a screen records: nothing to write without a completed one.
FROM_SCREEN = ("Observation", "QuestionnaireResponse", "Condition")
# Send order for single creates: targets before the resources that point at them.
SEND_ORDER = {name: i for i, name in enumerate(ALL_RESOURCES)}
CHANNEL_WORDS = {
    "phone": "phone", "text": "text message", "email": "email", "portal": "patient portal", "mail": "mail",
    "in_person": "in person at a visit",
}
# Reference codes: no 0/O, 1/I/L, U (Crockford-like), so a code read aloud or typed is not misread.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"


@dataclass(frozen=True)
class WriteRules:
    """What one EHR takes from this app, as the builders need it: plain values, made from the EHR profile
    (config/ehr_profile.py) by the caller. Nothing here reads a profile or a settings file."""

    offered: tuple[str, ...]           # resource kinds the EHR takes from apps
    identifier_system: str             # business identifier system (conditional create, search)
    labels: LabelPolicy                # meta.security on every resource
    document_type: dict[str, str]      # DocumentReference.type (the site's restricted note type where set)
    note_category: dict[str, str]      # DocumentReference.category
    content_type: str = "text/plain; charset=utf-8"
    doc_status: str | None = "final"
    requires_period: bool = False      # context.period start + end (with time)
    requires_encounter: bool = False   # the note needs an existing encounter of the same patient
    requires_author: bool = False      # exactly one author = the signed-in provider
    write_context: str = "patient"     # patient | user: the scope context a create needs
    scope_version: str = "v2"          # v1 (read/write) or v2 (cruds) spelling
    condition_category: str = "problem-list-item"  # or encounter-diagnosis (FHIR condition-category)

    def needed_scope(self, kind: str, letters: str = "c") -> str:
        return spell(self.write_context, kind, letters, self.scope_version)


@dataclass(frozen=True)
class Offer:
    """What this launch may write: the kinds, and why each other kind is not offered."""

    kinds: tuple[str, ...]
    not_offered: dict[str, tuple[str, str]]  # kind -> (reason code, detail such as the missing scope)


def writable(rules: WriteRules, granted_scope: str, *, has_encounter: bool, has_author: bool,
             has_screening: bool = True) -> Offer:
    """Intersect what the EHR takes (its rules) with the token's granted scope and the launch's context.

    Reasons: ``ehr`` (the EHR does not take it from apps), ``scope`` (this token may not create it; detail =
    the scope it would need), ``encounter`` / ``author`` (a required field the launch cannot fill),
    ``screen`` (no completed screen to record), ``referral`` (a Task needs the referral order).
    """
    kinds: list[str] = []
    why: dict[str, tuple[str, str]] = {}
    for kind in ALL_RESOURCES:
        if kind not in rules.offered:
            why[kind] = ("ehr", "")
        elif not allows(granted_scope, kind, "c", contexts=_contexts(rules)):
            why[kind] = ("scope", rules.needed_scope(kind))
        elif kind == "DocumentReference" and rules.requires_encounter and not has_encounter:
            why[kind] = ("encounter", "")
        elif kind == "DocumentReference" and rules.requires_author and not has_author:
            why[kind] = ("author", "")
        elif kind in FROM_SCREEN and not has_screening:
            why[kind] = ("screen", "")
        else:
            kinds.append(kind)
    if "Task" in kinds and "ServiceRequest" not in kinds:
        kinds.remove("Task")
        why["Task"] = ("referral", "")
    return Offer(tuple(kinds), why)


def _contexts(rules: WriteRules) -> tuple[str, ...]:
    # A user-context create (Oracle provider access) needs user/ scopes; patient/ ones do not count.
    return ("user",) if rules.write_context == "user" else ("patient", "user")


def reference_code(referral_key: str) -> str:
    """A short code the note carries so this app can find it again (meaningless to anyone else)."""
    digest = hashlib.sha256(("ref:" + referral_key).encode()).digest()
    n = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(8):
        n, r = divmod(n, len(CODE_ALPHABET))
        chars.append(CODE_ALPHABET[r])
    return "".join(chars[:4]) + "-" + "".join(chars[4:])


@lru_cache(maxsize=1)
def codes() -> dict[str, Any]:
    return yaml.load(CODES_FILE.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506


@dataclass
class WritebackInput:
    """Everything one write-back needs, taken from the launch (context + data) and the consent form."""

    referral_key: str  # our id for this referral; business identifiers derive from it
    patient_id: str
    encounter_id: str | None
    author_reference: str | None
    author_name: str | None
    screening: dict[str, Any]
    referral: dict[str, Any]
    resources: list[str]
    # The note's exact body, worded by the caller (the write-back feature): the wire layer only files it.
    note_text: str = ""
    # The note's description and attachment title (what an EHR lists before anyone opens the note).
    note_title: str = "Confidential referral note"
    safe_contact: dict[str, Any] = field(default_factory=lambda: {"channel": "none", "note": None})
    urgent: bool = False
    patient_asked: bool = False  # referral asked for by the patient after a negative screen
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class PlannedWrite:
    kind: str
    identifier_value: str
    full_url: str  # urn:uuid:... used by other resources of this referral
    resource: dict[str, Any]
    # urn:uuid -> (kind, required?) for references to resolve before a single create.
    depends_on: dict[str, tuple[str, bool]] = field(default_factory=dict)

    @property
    def search(self) -> str:
        """If-None-Exist query: the business identifier."""
        ident = self.resource["identifier"]
        ident = ident[0] if isinstance(ident, list) else ident
        return f"identifier={ident['system']}|{ident['value']}"


def identifier_value(referral_key: str, kind: str) -> str:
    return f"{referral_key}.{kind.lower()}"


def full_url(referral_key: str, kind: str) -> str:
    return f"urn:uuid:{uuid.uuid5(WRITEBACK_NS, identifier_value(referral_key, kind))}"


def plan_writeback(inp: WritebackInput, rules: WriteRules) -> list[PlannedWrite]:
    """The resources to write for one referral, in send order, labelled and validated."""
    wanted = [r for r in ALL_RESOURCES if r in inp.resources and r in rules.offered]
    if not inp.screening:  # nothing screened (e.g. universal education only): no score to record
        wanted = [r for r in wanted if r not in FROM_SCREEN]
    if "Task" in wanted and "ServiceRequest" not in wanted:
        wanted.remove("Task")  # a Task needs the request it manages
    builders = {
        "QuestionnaireResponse": build_questionnaire_response, "Observation": build_observation,
        "ServiceRequest": build_service_request, "DocumentReference": build_document_reference,
        "Task": build_task, "Condition": build_condition,
    }
    plans = []
    for kind in wanted:
        resource, deps = builders[kind](inp, rules, wanted)
        ident = {"system": rules.identifier_system, "value": identifier_value(inp.referral_key, kind)}
        # QuestionnaireResponse.identifier is 0..1 in R4; everything else is a list.
        resource["identifier"] = ident if kind == "QuestionnaireResponse" else [ident]
        apply_labels(resource, rules.labels)
        if kind == "DocumentReference":
            # The document's own label too: EHRs that index documents read securityLabel.
            resource["securityLabel"] = [{"coding": [c]} for c in rules.labels.codings()]
        _validate_once(resource, inp)
        plans.append(PlannedWrite(kind, ident["value"], full_url(inp.referral_key, kind), resource, deps))
    return plans


def validate(resource: dict[str, Any]) -> None:
    """Raise ``ValueError`` if the resource is not valid FHIR R4(B)."""
    model = get_fhir_model_class(resource["resourceType"])
    model.model_validate(resource)


# The consent page plans (and so validates, the costly part of planning) on every GET, preview and POST, so it never
# shows a plan that cannot be written. The same launch asks again with the same inputs; what changes between
# those asks is the clock. Resources validated once are remembered by digest: the referral key (one launch's
# referral, so nothing is shared across launches) and the exact resource JSON, with the two strings made
# from ``inp.now`` written as placeholders (every such string is a well-formed FHIR dateTime / instant,
# whatever the time). Only "this exact content was valid" is stored, never the content; bounded, in-process.
_VALIDATED_MAX = 4096
_validated: OrderedDict[bytes, None] = OrderedDict()
_validated_lock = threading.Lock()


def validation_key(resource: dict[str, Any], inp: WritebackInput) -> bytes:
    """Digest of the referral key and the resource, the values made from ``inp.now`` as placeholders."""
    body = json.dumps(resource, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    for i, spec in enumerate(("seconds", "milliseconds")):
        made = json.dumps(inp.now.astimezone(UTC).isoformat(timespec=spec))
        # Whole JSON strings only (the quotes included; a quote inside a string is escaped). The bare marker
        # cannot occur outside a string in JSON, so two different resources never share a key.
        body = body.replace(made, f"@now{i}")
    return hashlib.sha256(f"{inp.referral_key}\0{body}".encode()).digest()


def _validate_once(resource: dict[str, Any], inp: WritebackInput) -> None:
    key = validation_key(resource, inp)
    with _validated_lock:
        if key in _validated:
            _validated.move_to_end(key)
            return
    validate(resource)  # raises for an invalid resource: nothing is remembered then
    with _validated_lock:
        _validated[key] = None
        while len(_validated) > _VALIDATED_MAX:
            _validated.popitem(last=False)


# -- builders ------------------------------------------------------------------------------
def _ref(kind: str, rid: str | None) -> dict[str, str] | None:
    return {"reference": f"{kind}/{rid}"} if rid else None


def _author(inp: WritebackInput) -> dict[str, str] | None:
    if not inp.author_reference:
        return None
    ref = {"reference": inp.author_reference}
    if inp.author_name:
        ref["display"] = inp.author_name
    return ref


def _set_parties(resource: dict[str, Any], inp: WritebackInput, author_field: str, *, many_authors: bool = False,
                 subject_field: str = "subject", encounter_field: str | None = "encounter") -> None:
    """The patient, the visit and the signed-in provider, under the resource type's own field names: FHIR calls
    the provider ``author``, ``requester``, ``performer`` or ``recorder``, some as a list (``many_authors``),
    and Task's patient ``for``. ``encounter_field=None`` for a resource that holds its encounter elsewhere."""
    resource[subject_field] = _ref("Patient", inp.patient_id)
    if encounter_field and inp.encounter_id:
        resource[encounter_field] = _ref("Encounter", inp.encounter_id)
    author = _author(inp)
    if author:
        resource[author_field] = [author] if many_authors else author


def _when(inp: WritebackInput) -> str:
    return inp.now.astimezone(UTC).isoformat(timespec="seconds")


def _cc(coding: dict[str, str], text: str | None = None) -> dict[str, Any]:
    cc: dict[str, Any] = {"coding": [dict(coding)]}
    if text:
        cc["text"] = text
    return cc


def _programs(inp: WritebackInput) -> list[dict[str, Any]]:
    results = {r.get("service_id"): r for r in inp.referral.get("results") or []}
    selected = inp.referral.get("selected") or []
    return [results[s] for s in selected if s in results]


def build_document_reference(inp: WritebackInput, rules: WriteRules, wanted: list[str]):
    if not inp.note_text:
        raise ValueError("a DocumentReference needs its note text (WritebackInput.note_text)")
    text = inp.note_text
    deps: dict[str, tuple[str, bool]] = {}
    context: dict[str, Any] = {}
    if inp.encounter_id:
        context["encounter"] = [_ref("Encounter", inp.encounter_id)]
    if rules.requires_period:
        # Oracle: context.period with end (start optional), every date with a time component.
        start = inp.screening.get("completed_at") or _when(inp)
        context["period"] = {"start": start, "end": _when(inp)}
    if "ServiceRequest" in wanted:
        sr = full_url(inp.referral_key, "ServiceRequest")
        context["related"] = [{"reference": sr}]
        deps[sr] = ("ServiceRequest", False)
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": _cc(rules.document_type, rules.document_type.get("display")),
        "category": [_cc(rules.note_category)],
        "date": _when(inp),
        "description": inp.note_title,
        "content": [{"attachment": {
            "contentType": rules.content_type,
            "language": "en",
            "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
            "title": inp.note_title,
            "creation": _when(inp),
        }}],
    }
    if rules.doc_status:
        resource["docStatus"] = rules.doc_status
    # Exactly one author: the signed-in provider (Oracle refuses any other for provider access). The encounter is
    # in context, with the period.
    _set_parties(resource, inp, "author", many_authors=True, encounter_field=None)
    if context:
        resource["context"] = context
    return resource, deps


def build_service_request(inp: WritebackInput, rules: WriteRules, wanted: list[str]):
    c = codes()
    deps: dict[str, tuple[str, bool]] = {}
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [_cc(c["us_core_category"]), _cc(c["sdoh_domain"])],
        "code": _cc(c["referral_code"], "Referral to confidential support services"),
        "priority": "urgent" if inp.urgent else "routine",
        "authoredOn": _when(inp),
    }
    _set_parties(resource, inp, "requester")
    programs = _programs(inp)
    if programs:
        resource["performer"] = [{"display": p.get("program") or p.get("name")} for p in programs]
    channel = (inp.safe_contact or {}).get("channel")
    if channel == "none":
        # SDOHCC ServiceRequest orderDetail slice SubjectContactDetail.
        resource["orderDetail"] = [_cc(c["contacting_subject_prohibited"], "Do not contact the patient")]
    elif channel:
        resource["orderDetail"] = [{"text": f"Safe contact channel: {CHANNEL_WORDS.get(channel, channel)}"}]
        if (inp.safe_contact.get("note") or "").strip():
            resource["note"] = [{"text": f"Safe contact: {inp.safe_contact['note'].strip()}"}]
    if "Observation" in wanted:
        obs = full_url(inp.referral_key, "Observation")
        resource["reasonReference"] = [{"reference": obs}]
        deps[obs] = ("Observation", False)
    return resource, deps


def build_observation(inp: WritebackInput, rules: WriteRules, wanted: list[str]):
    c = codes()
    s = inp.screening
    instrument = s.get("instrument") or "unknown"
    code = c["score_codes"].get(instrument)
    if code is None:
        # No LOINC total for this instrument: the Questionnaire's own canonical code.
        code = {"system": s.get("questionnaire") or f"urn:ipv-screen:instrument:{instrument}",
                "code": "total", "display": f"Total score [{instrument.upper()}]"}
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [_cc(c["survey_category"]), _cc(c["us_core_category"]), _cc(c["sdoh_domain"])],
        "code": _cc(code, code.get("display")),
        "effectiveDateTime": s.get("completed_at") or _when(inp),
        "issued": inp.now.astimezone(UTC).isoformat(timespec="milliseconds"),
    }
    _set_parties(resource, inp, "performer", many_authors=True)
    score = s.get("score")
    if score is None:
        resource["dataAbsentReason"] = _cc(c["data_absent_declined"])
    else:
        resource["valueQuantity"] = {"value": int(score), "unit": "{score}",
                                     "system": "http://unitsofmeasure.org", "code": "{score}"}
    interp = s.get("interpretation")
    if interp in ("positive", "negative"):
        i = c["interpretation"]
        resource["interpretation"] = [{"coding": [{"system": i["system"], **i[interp]}]}]
    deps: dict[str, tuple[str, bool]] = {}
    if "QuestionnaireResponse" in wanted:
        qr = full_url(inp.referral_key, "QuestionnaireResponse")
        resource["derivedFrom"] = [{"reference": qr}]
        deps[qr] = ("QuestionnaireResponse", False)
    return resource, deps


def build_questionnaire_response(inp: WritebackInput, rules: WriteRules, wanted: list[str]):
    s = inp.screening
    items = []
    # answers holds bare codes; answer_codings (screening state) the full Coding of each answer.
    for link_id, answer in (s.get("answer_codings") or {}).items():
        coding = {k: answer[k] for k in ("system", "code", "display") if answer.get(k)}
        if coding.get("code"):
            items.append({"linkId": link_id, "answer": [{"valueCoding": coding}]})
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "authored": s.get("completed_at") or _when(inp),
    }
    if s.get("questionnaire"):
        q = s["questionnaire"]
        resource["questionnaire"] = f"{q}|{s['version']}" if s.get("version") and "|" not in q else q
    _set_parties(resource, inp, "author")
    if items:
        resource["item"] = items
    return resource, {}


def build_task(inp: WritebackInput, rules: WriteRules, wanted: list[str]):
    c = codes()
    sr = full_url(inp.referral_key, "ServiceRequest")
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "urgent" if inp.urgent else "routine",
        "code": _cc(c["task_code"]),
        "focus": {"reference": sr},
        "authoredOn": _when(inp),
    }
    _set_parties(resource, inp, "requester", subject_field="for")
    programs = _programs(inp)
    if programs:
        resource["owner"] = {"display": programs[0].get("program") or programs[0].get("name")}
    return resource, {sr: ("ServiceRequest", True)}


def build_condition(inp: WritebackInput, rules: WriteRules, wanted: list[str]):
    """A problem list entry or the visit's diagnosis: both copy forward (health summaries, after-visit summaries,
    a newborn's chart) and many see them, so the caller plans one only where its deployment turns it on."""
    c = codes()
    category = {"system": c["condition_category_system"], "code": rules.condition_category}
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": _cc(c["condition_active"]),
        "category": [_cc(category), _cc(c["sdoh_domain"])],
        "code": _cc(c["ipv_condition"], c["ipv_condition"]["display"]),
        "recordedDate": _when(inp),
    }
    _set_parties(resource, inp, "recorder")
    return resource, {}
