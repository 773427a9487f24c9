"""Launch context reader: the patient, the visit, its site and the user, read once at launch from the
token response's launch parameters, returned as a typed ``LaunchContext`` (fhir/launch_context.py).

Reads go in one round where the server allows: one FHIR batch holding the Patient, the user, and an
Encounter search by ``_id`` with ``_include`` of its Locations and serviceProvider (FHIR R4 search
3.1.1.5.5), so the launch waits on the EHR twice in all (token, then this). A server that ignores
``_include`` gets a second round for just what is missing; a server without batch gets the same reads
sent in parallel, so each round still waits once. A site that is part of another (``Location.partOf``,
``Organization.partOf``: a clinic of a hospital) costs one more round per level walked, at most PART_OF_LEVELS.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fhir.client import FhirClient, FhirError
from fhir.errors import FhirWireError
from fhir.launch_context import (
    Coding,
    EncounterSummary,
    Identifier,
    LaunchContext,
    LocationSummary,
    OrganizationSummary,
    PatientSummary,
    Reference,
    RoleSummary,
    UserSummary,
)
from fhir.text import clean_text
from fhir.url_policy import safe_relative, under_base

log = logging.getLogger(__name__)

SNOMED = "http://snomed.info/sct"
NUCC = "http://nucc.org/provider-taxonomy"
SOCIAL_WORKER_SNOMED = {"106328005"}  # Social worker (occupation)
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# US Core Interpreter Needed extension (US Core 7+, on Patient and Encounter; LOINC 54588-9 meaning),
# valueCoding from the LOINC answer list Yes LA33-6 / No LA32-8 / Unknown LA4489-6.
# https://hl7.org/fhir/us/core/StructureDefinition-us-core-interpreter-needed.html
INTERPRETER_NEEDED = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-interpreter-needed"
_INTERPRETER_ANSWERS = {"LA33-6": True, "LA32-8": False, "yes": True, "no": False, "y": True, "n": False}

# ISO 639-2/3 codes and English names some EHRs send instead of BCP-47. Cantonese stays "yue" (an interpreter is
# booked for the spoken language; its written text is Traditional Chinese), Mandarin is written Chinese ("zh").
_LANG_ALIASES = {
    "eng": "en", "spa": "es", "por": "pt", "fra": "fr", "fre": "fr", "hat": "ht", "zho": "zh", "chi": "zh",
    "vie": "vi", "ara": "ar", "rus": "ru", "kor": "ko", "cmn": "zh", "som": "so", "cpp": "pt",
    "english": "en", "spanish": "es", "portuguese": "pt", "french": "fr", "haitian creole": "ht", "haitian": "ht",
    "kreyol": "ht", "kreyòl": "ht", "chinese": "zh", "mandarin": "zh", "cantonese": "yue", "vietnamese": "vi",
    "arabic": "ar", "russian": "ru", "korean": "ko", "somali": "so", "cape verdean creole": "kea",
    "chinese (simplified)": "zh-Hans", "simplified chinese": "zh-Hans", "chinese (traditional)": "zh-Hant",
    "traditional chinese": "zh-Hant",
}
# Languages whose region says which script the patient reads (zh-TW and zh-HK: Traditional, zh-CN: Simplified).
_REGION_TELLS_SCRIPT = {"zh", "yue"}


# FHIR id datatype: what a launch parameter may contain before it goes into a URL path.
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class ContextError(FhirWireError):
    """The launch context could not be read (message safe to show)."""


# Servers that refused a batch: remember, so later launches go straight to single reads.
_no_batch: set[str] = set()
_no_batch_lock = threading.Lock()


def _ok(status: str | None) -> bool:
    return bool(status) and str(status).strip()[:1] == "2"


def fetch_many(client: FhirClient, urls: list[str]) -> list[dict[str, Any] | None]:
    """GET each relative URL; one batch when the server allows. None where a read failed."""
    if not urls:
        return []
    if len(urls) > 1 and client.base_url not in _no_batch:
        got = _batch_read(client, urls)
        if got is not None:
            return got
        with _no_batch_lock:
            _no_batch.add(client.base_url)
        log.info("FHIR server does not accept batch reads; reading one by one")
    if len(urls) == 1:
        return [_read_one(client, urls[0])]
    # No batch: the reads go in parallel (a round waits once), each on its own connection of the pool, each in a
    # copy of this thread's context (the page's deadline and bulkhead slot, fhir/http.py, go with it).
    contexts = [contextvars.copy_context() for _ in urls]
    with ThreadPoolExecutor(max_workers=min(len(urls), PARALLEL_READS)) as pool:
        return list(pool.map(lambda ctx, u: ctx.run(_read_one, client, u), contexts, urls))


def _batch_read(client: FhirClient, urls: list[str]) -> list[dict[str, Any] | None] | None:
    """The reads as one batch; None when the server does not answer a batch with a batch-response."""
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": u}} for u in urls]}
    try:
        result = client.bundle(bundle)
    except FhirError as exc:
        if exc.status in (0, 429) or (exc.status >= 500 and exc.status != 501):
            raise  # the server is struggling: do not multiply the load with single reads
        return None
    entries = result.get("entry") if isinstance(result, dict) else None
    if not (isinstance(result, dict) and result.get("type") == "batch-response"
            and isinstance(entries, list) and len(entries) == len(urls)):
        return None
    out: list[dict[str, Any] | None] = []
    for e in entries:
        ok = _ok((e.get("response") or {}).get("status")) if isinstance(e, dict) else False
        out.append(e.get("resource") if ok and isinstance(e.get("resource"), dict) else None)
    return out


PARALLEL_READS = 4


def _read_one(client: FhirClient, url: str) -> dict[str, Any] | None:
    try:
        return client.request("GET", url).resource
    except FhirError as exc:
        if exc.status in (0,) or exc.status >= 500:
            raise
        return None


def _search_entries(bundle: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not bundle or bundle.get("resourceType") != "Bundle":
        return []
    return [e["resource"] for e in bundle.get("entry", []) or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            and (e.get("search") or {}).get("mode", "match") == "match"]


_SEARCH_SCOPE = re.compile(r"^(patient|user|system)/(?P<type>[A-Za-z*]+)\.(?P<perm>read|write|\*|[cruds]+)"
                           r"(\?.*)?$")


def _may_search(scope: Any, resource_type: str) -> bool:
    """Whether the granted scope lets this token search ``resource_type`` (v1 ``.read``/``.*``, v2 ``s``)."""
    for item in str(scope or "").split():
        m = _SEARCH_SCOPE.match(item)
        if m and m["type"] in (resource_type, "*") and (m["perm"] in ("read", "*") or "s" in m["perm"]):
            return True
    return False


def _included_entries(bundle: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not bundle or bundle.get("resourceType") != "Bundle":
        return []
    return [e["resource"] for e in bundle.get("entry", []) or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            and (e.get("search") or {}).get("mode") == "include"]


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a FHIR array as an EHR sent it: nothing when it is not an array (``"name": 12345``)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    """A FHIR complex element as an EHR sent it: empty when it is not an object (``"period": "2026-11-20"``)."""
    return value if isinstance(value, dict) else {}


def _strs(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def human_name(names: Any, *, with_prefix: bool = False) -> str | None:
    """Display name: the 'official' (else 'usual', else first) HumanName; None when the EHR sent none usable."""
    names = _dicts(names)
    if not names:
        return None
    by_use = {n.get("use") if isinstance(n.get("use"), str) else None: n for n in reversed(names)}
    name = by_use.get("official") or by_use.get("usual") or names[0]
    if isinstance(name.get("text"), str) and name["text"]:
        return clean_text(name["text"], 120) or None
    parts = _strs(name.get("prefix")) if with_prefix else []
    family = name.get("family") if isinstance(name.get("family"), str) else ""
    text = clean_text(" ".join(p for p in [*parts, *_strs(name.get("given")), family] if p), 120)
    return text or None


def language_tag(communication: dict[str, Any]) -> str | None:
    """One Patient.communication entry as a BCP-47 tag cut to what tells written languages apart: the language
    ("es-MX" -> "es"), its script when given ("zh-Hant-TW" keeps "Hant": another written text), and for Chinese the
    region, which says the script ("zh-TW", "zh-HK", "yue-HK")."""
    concept = _dict(communication.get("language"))
    for coding in _dicts(concept.get("coding")):
        code = coding.get("code").strip() if isinstance(coding.get("code"), str) else ""
        if code:
            return _shorten(code)
    text = concept.get("text").strip().lower() if isinstance(concept.get("text"), str) else ""
    return _LANG_ALIASES.get(text) if text else None


def _shorten(code: str) -> str | None:
    first, *rest = code.replace("_", "-").split("-")
    primary = _LANG_ALIASES.get(first.lower(), first.lower() if 2 <= len(first) <= 3 and first.isalpha() else None)
    if primary is None:
        return None
    if primary == "zh" and rest and len(rest[0]) == 3 and rest[0].isalpha():  # extended language: "zh-yue"
        primary = _LANG_ALIASES.get(rest[0].lower(), rest[0].lower())
    script = next((p.title() for p in rest if len(p) == 4 and p.isalpha()), None)
    region = next((p.upper() for p in rest if len(p) == 2 and p.isalpha()), None)
    keep = [primary, script, region if primary in _REGION_TELLS_SCRIPT else None]
    return "-".join(p for p in keep if p)


def patient_languages(patient: dict[str, Any]) -> list[str]:
    comms = _dicts(patient.get("communication"))
    comms.sort(key=lambda c: 0 if c.get("preferred") else 1)  # stable: preferred first, then as listed
    seen: list[str] = []
    for c in comms:
        tag = language_tag(c)
        if tag and tag not in seen:
            seen.append(tag)
    return seen


def _mrn(patient: dict[str, Any]) -> str | None:
    for ident in _dicts(patient.get("identifier")):
        for coding in _dicts(_dict(ident.get("type")).get("coding")):
            if coding.get("code") == "MR" and (coding.get("system") in (None, V2_0203)):
                return clean_text(ident.get("value"), 64) or None
    return None


def _identifiers(resource: dict[str, Any]) -> tuple[Identifier, ...]:
    return tuple(Identifier(system=clean_text(i.get("system"), 200) or None, value=clean_text(i.get("value"), 100))
                 for i in _dicts(resource.get("identifier")) if i.get("value"))


def interpreter_needed(resource: dict[str, Any] | None) -> bool | None:
    """True/False from the US Core interpreter-needed extension; None when absent or unknown."""
    extensions = (resource or {}).get("extension")
    for ext in extensions if isinstance(extensions, list) else []:
        if isinstance(ext, dict) and ext.get("url") == INTERPRETER_NEEDED:
            coding = ext.get("valueCoding") if isinstance(ext.get("valueCoding"), dict) else {}
            for key in (coding.get("code"), str(coding.get("display") or "").lower()):
                if key in _INTERPRETER_ANSWERS:
                    return _INTERPRETER_ANSWERS[key]
            if isinstance(ext.get("valueBoolean"), bool):  # pre-US Core 7 local variants
                return ext["valueBoolean"]
    return None


def _id(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    return rid if isinstance(rid, str) else None


def patient_summary(patient: dict[str, Any]) -> PatientSummary:
    langs = patient_languages(patient)
    return PatientSummary(
        id=_id(patient),
        name=human_name(patient.get("name")) or "",
        birth_date=clean_text(patient.get("birthDate"), 10) or None,
        gender=clean_text(patient.get("gender"), 20) or None,
        language=langs[0] if langs else "en",
        languages=tuple(langs) or ("en",),
        mrn=_mrn(patient),
        interpreter_needed=interpreter_needed(patient),
    )


def location_summary(location: dict[str, Any]) -> LocationSummary:
    return LocationSummary(id=_id(location), name=clean_text(location.get("name"), 120) or None,
                           identifiers=_identifiers(location),
                           postal_code=clean_text(_dict(location.get("address")).get("postalCode"), 10) or None)


def organization_summary(org: dict[str, Any]) -> OrganizationSummary:
    return OrganizationSummary(id=_id(org), name=clean_text(org.get("name"), 120) or None,
                               identifiers=_identifiers(org))


def _refs(items: Any, base_url: str, rtype: str) -> tuple[Reference, ...]:
    out = []
    for item in items if isinstance(items, list) else [items] if isinstance(items, dict) else []:
        raw = item.get("reference") if isinstance(item, dict) else None
        ref = _relative(raw, base_url) if isinstance(raw, str) else None
        if ref and ref.startswith(rtype + "/"):
            display = item.get("display")
            out.append(Reference(ref, display if isinstance(display, str) else None))
    return tuple(out)


def _concepts(role: dict[str, Any]) -> list[dict[str, Any]]:
    """PractitionerRole.code and .specialty, the CodeableConcepts a role mapping reads."""
    return [c for key in ("code", "specialty") for c in (role.get(key) if isinstance(role.get(key), list) else [])
            if isinstance(c, dict)]


def _service_refs(role: dict[str, Any], base_url: str) -> tuple[Reference, ...]:
    return _refs(role.get("healthcareService"), base_url, "HealthcareService")


def role_summary(role: dict[str, Any], base_url: str,
                 services: dict[str, dict[str, Any] | None] | None = None) -> RoleSummary:
    """What the app needs of one PractitionerRole: its codes and texts (the deployment's role mapping) and the
    places it covers (the social-work queue's scope), with the Locations and Organizations of its
    HealthcareServices, as ``services`` (reference -> resource, None where unread) holds them."""
    concepts = _concepts(role)
    locations = _refs(role.get("location"), base_url, "Location")
    organizations = _refs(role.get("organization"), base_url, "Organization")
    service_refs = []
    for ref in _service_refs(role, base_url):
        svc = (services or {}).get(ref.reference)
        if svc and svc.get("resourceType") == "HealthcareService":
            name = svc.get("name")
            ref = Reference(ref.reference, ref.display or (name if isinstance(name, str) else None))
            locations += _refs(svc.get("location"), base_url, "Location")
            organizations += _refs(svc.get("providedBy"), base_url, "Organization")
        service_refs.append(ref)
    return RoleSummary(
        id=_id(role),
        active=role.get("active", True) is not False,
        codings=tuple(Coding.from_dict(c) for concept in concepts
                      for c in (concept.get("coding") if isinstance(concept.get("coding"), list) else [])
                      if isinstance(c, dict)),
        texts=tuple(str(concept["text"]) for concept in concepts if isinstance(concept.get("text"), str)),
        locations=locations, organizations=organizations, services=tuple(service_refs),
    )


def role_names(roles: list[dict[str, Any]]) -> list[str]:
    """'social_worker' for SNOMED 106328005 or NUCC 1041* codes; any other role is 'clinician'."""
    out: list[str] = []
    for role in roles:
        codings = [c for concept in (role.get("code") or []) + (role.get("specialty") or [])
                   for c in (concept.get("coding") or [])]
        is_sw = any((c.get("system") == SNOMED and c.get("code") in SOCIAL_WORKER_SNOMED)
                    or (c.get("system") == NUCC and str(c.get("code", "")).startswith("1041"))
                    for c in codings)
        name = "social_worker" if is_sw else "clinician"
        if name not in out:
            out.append(name)
    return out


def _relative(reference: str | None, base_url: str) -> str | None:
    """``Type/id`` for a reference on this server; None for contained/other-server references
    (we never send our token to another host)."""
    if not isinstance(reference, str) or not reference or reference.startswith("#"):
        return None
    if reference.startswith(("http://", "https://")):
        # Under the iss base after normalisation: same origin, no dot segments.
        if not under_base(reference, base_url) or not reference.startswith(base_url.rstrip("/") + "/"):
            return None
        reference = reference[len(base_url.rstrip("/")) + 1:]
    if not safe_relative(reference):
        return None
    parts = reference.split("/")
    if not all(FHIR_ID.match(p) or p == "_history" for p in parts[1:]) or not re.fullmatch(r"[A-Z][A-Za-z]{1,63}",
                                                                                           parts[0]):
        return None
    if len(parts) == 2 and all(parts):
        return reference
    if len(parts) == 4 and parts[2] == "_history":
        return "/".join(parts[:2])
    return None


def _encounter_from_fhir_context(token_response: dict[str, Any]) -> str | None:
    """SMART 2.x EHRs may name the encounter only in ``fhirContext`` ([{"reference": "Encounter/x"}])."""
    items = token_response.get("fhirContext")
    for item in items if isinstance(items, list) else []:
        ref = item.get("reference") if isinstance(item, dict) else None
        if isinstance(ref, str) and ref.startswith("Encounter/") and ref.count("/") == 1:
            return ref.split("/", 1)[1]
    return None


@dataclass(frozen=True)
class _LaunchIds:
    """What the token response and the id_token name, checked before any of it goes into a request path."""

    patient_id: str | None
    encounter_id: str | None
    user_ref: str | None  # ``Type/id`` on this server; None for another server's user or none at all

    @property
    def user_type(self) -> str | None:
        return self.user_ref.split("/")[0] if self.user_ref else None


def _launch_ids(token_response: dict[str, Any], fhir_user: str | None, base_url: str) -> _LaunchIds:
    patient_id = token_response.get("patient")
    encounter_id = token_response.get("encounter") or _encounter_from_fhir_context(token_response)
    # Ids go into request paths: anything that is not a FHIR id is refused, never sent.
    if patient_id is not None and not (isinstance(patient_id, str) and FHIR_ID.match(patient_id)):
        raise ContextError("The EHR sent a patient id this app cannot use.")
    if encounter_id is not None and not (isinstance(encounter_id, str) and FHIR_ID.match(encounter_id)):
        encounter_id = None
    return _LaunchIds(patient_id or None, encounter_id or None, _relative(fhir_user, base_url))


@dataclass
class _FirstRound:
    """Round 1: what the token response names (raw resources)."""

    patient: dict[str, Any] | None
    encounter: dict[str, Any] | None
    included: dict[str, dict[str, Any]]  # ``Type/id`` -> what the Encounter search's _include brought
    user: dict[str, Any] | None
    roles: list[dict[str, Any]]  # the signed-in Practitioner's active PractitionerRoles


def _first_round_urls(ids: _LaunchIds, scope: Any) -> dict[str, str]:
    urls: dict[str, str] = {}
    if ids.patient_id:
        urls["patient"] = f"Patient/{ids.patient_id}"
    if ids.encounter_id and _may_search(scope, "Encounter"):
        urls["encounter"] = (f"Encounter?_id={ids.encounter_id}&_include=Encounter:location"
                             "&_include=Encounter:service-provider")
    elif ids.encounter_id:
        urls["encounter"] = f"Encounter/{ids.encounter_id}"  # read-only scope: the Locations wait for round 2
    if ids.user_ref:
        urls["user"] = ids.user_ref
        if ids.user_type == "Practitioner":
            urls["roles"] = f"PractitionerRole?practitioner={ids.user_ref}"
    return urls


def _encounter_of(client: FhirClient, encounter_id: str | None,
                  answer: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """The Encounter (a plain read, or the match of the search) and what the search included."""
    if isinstance(answer, dict) and answer.get("resourceType") == "Encounter":
        return answer, {}  # the plain read
    matches = [r for r in _search_entries(answer) if r.get("resourceType") == "Encounter"
               and r.get("id") == encounter_id]
    encounter = matches[0] if matches else None
    included = {f"{r.get('resourceType')}/{r.get('id')}": r for r in _included_entries(answer)}
    if encounter_id and encounter is None and not isinstance(answer, dict):
        # The search itself failed (a server without _id search on Encounter): a plain read, one more round.
        encounter = fetch_many(client, [f"Encounter/{encounter_id}"])[0]
        if encounter is not None and encounter.get("resourceType") != "Encounter":
            encounter = None
    return encounter, included


def _own_roles(bundle: dict[str, Any] | None, user_ref: str | None, base_url: str) -> list[dict[str, Any]]:
    """Only roles of the signed-in user count: FHIR search is lenient by default, so an EHR that ignores the
    practitioner parameter returns everyone's roles."""
    return [r for r in _search_entries(bundle)
            if r.get("resourceType") == "PractitionerRole" and r.get("active") is not False
            and _relative((r.get("practitioner") or {}).get("reference"), base_url) == user_ref]


def _read_first_round(client: FhirClient, ids: _LaunchIds, scope: Any) -> _FirstRound:
    urls = _first_round_urls(ids, scope)
    got = dict(zip(urls, fetch_many(client, list(urls.values())), strict=True))
    patient = got.get("patient")
    if ids.patient_id and (not patient or patient.get("resourceType") != "Patient"):
        raise ContextError("The patient's record could not be read from the EHR.")
    encounter, included = _encounter_of(client, ids.encounter_id, got.get("encounter"))
    return _FirstRound(patient=patient, encounter=encounter, included=included, user=got.get("user"),
                       roles=_own_roles(got.get("roles"), ids.user_ref, client.base_url))


def _encounter_places(encounter: dict[str, Any] | None, base_url: str) -> tuple[list[str], str | None]:
    """The Encounter's Location references (in order, once each) and its serviceProvider's."""
    if not encounter:
        return [], None
    loc_refs: list[str] = []
    for entry in encounter.get("location") or []:
        ref = _relative((entry.get("location") or {}).get("reference"), base_url)
        if ref and ref.startswith("Location/") and ref not in loc_refs:
            loc_refs.append(ref)
    org_ref = _relative((encounter.get("serviceProvider") or {}).get("reference"), base_url)
    return loc_refs, org_ref if org_ref and org_ref.startswith("Organization/") else None


def _role_user(first: _FirstRound, ids: _LaunchIds, base_url: str) -> tuple[list[dict[str, Any]], str | None]:
    """The roles that count and the Practitioner to read. fhirUser may itself be a PractitionerRole: that role
    (only if it is the resource we asked for) and its Practitioner."""
    user = first.user
    if not (user and user.get("resourceType") == "PractitionerRole"):
        return first.roles, None
    roles = [user] if ids.user_ref == f"PractitionerRole/{user.get('id')}" and user.get("active") is not False \
        else []
    return roles, _relative((user.get("practitioner") or {}).get("reference"), base_url)


def _fetch_missing(client: FhirClient, urls: list[str],
                   included: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Each of ``urls``: from what _include brought, else read (one round for all that is missing)."""
    missing = [u for u in urls if u not in included]
    fetched = dict(zip(missing, fetch_many(client, missing), strict=True))
    return {u: included.get(u) or fetched.get(u) for u in urls}


@dataclass
class _SecondRound:
    """Round 2: the Encounter's Locations and serviceProvider, the user's Practitioner, the roles'
    HealthcareServices (raw resources; None where a read failed)."""

    locations: list[dict[str, Any]]
    organization: dict[str, Any] | None
    practitioner: dict[str, Any] | None
    practitioner_ref: str | None  # a PractitionerRole user's Practitioner
    roles: list[dict[str, Any]]
    services: dict[str, dict[str, Any] | None]
    parent_locations: list[dict[str, Any]] = field(default_factory=list)
    parent_organizations: list[dict[str, Any]] = field(default_factory=list)


# How far up Location.partOf / Organization.partOf the site is walked: a unit, its department, its hospital,
# its system. Each level is one round (a batch of reads), and only when a level names a parent.
PART_OF_LEVELS = 3


def _part_of(resource: dict[str, Any] | None, rtype: str, base_url: str) -> str | None:
    ref = _relative(((resource or {}).get("partOf") or {}).get("reference"), base_url)
    return ref if ref and ref.startswith(rtype + "/") else None


def _ancestors(client: FhirClient, start: list[dict[str, Any]], included: dict[str, dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Locations and Organizations ``start`` is part of, nearest first, at most PART_OF_LEVELS up; one
    batch of reads per level (what the first round's search already brought is not read again). A parent that
    cannot be read ends that branch: the site keys the launch has are kept, never the launch failed."""
    base_url = client.base_url
    seen = {f"{r.get('resourceType')}/{r.get('id')}" for r in start}
    found: list[dict[str, Any]] = []
    level = start
    for _ in range(PART_OF_LEVELS):
        refs = [ref for r in level for ref in [_part_of(r, str(r.get("resourceType")), base_url)]
                if ref and ref not in seen]
        refs = list(dict.fromkeys(refs))
        if not refs:
            break
        seen.update(refs)
        try:
            got = _fetch_missing(client, refs, included)
        except FhirError:
            break
        level = [r for ref in refs for r in [got.get(ref)]
                 if r and f"{r.get('resourceType')}/{r.get('id')}" == ref]
        found += level
    return ([r for r in found if r.get("resourceType") == "Location"],
            [r for r in found if r.get("resourceType") == "Organization"])


def _read_second_round(client: FhirClient, first: _FirstRound, ids: _LaunchIds) -> _SecondRound:
    base_url = client.base_url
    loc_refs, org_ref = _encounter_places(first.encounter, base_url)
    roles, prac_ref = _role_user(first, ids, base_url)
    urls = loc_refs + [r for r in (org_ref, prac_ref) if r]
    # A role's HealthcareServices say where they are given (location, providedBy): queue coverage. Read in
    # round 2 only when a role names one.
    service_refs = list(dict.fromkeys(ref.reference for role in roles for ref in _service_refs(role, base_url)))
    try:
        got = _fetch_missing(client, urls + service_refs, first.included)
    except FhirError:
        if not service_refs:
            raise
        # The services are a nicety (coverage falls back to the deployment file): never fail the launch on them.
        service_refs = []
        got = _fetch_missing(client, urls, first.included)
    user = first.user
    own_practitioner = user if user and user.get("resourceType") == "Practitioner" else None
    locations = [r for r in (got[u] for u in loc_refs) if r and r.get("resourceType") == "Location"]
    organization = got[org_ref] if org_ref else None
    site = locations + ([organization] if organization and organization.get("resourceType") == "Organization"
                        else [])
    parent_locations, parent_organizations = _ancestors(client, site, first.included)
    return _SecondRound(
        locations=locations,
        organization=organization,
        parent_locations=parent_locations,
        parent_organizations=parent_organizations,
        practitioner=got[prac_ref] if prac_ref else own_practitioner,
        practitioner_ref=prac_ref,
        roles=roles,
        services={ref: got[ref] for ref in service_refs},
    )


def _encounter_summary(encounter: dict[str, Any] | None, second: _SecondRound) -> EncounterSummary | None:
    if not encounter:
        return None
    cls = encounter.get("class")
    start = _dict(encounter.get("period")).get("start")
    org = second.organization
    return EncounterSummary(
        id=_id(encounter),
        class_code=cls.get("code") if isinstance(cls, dict) and isinstance(cls.get("code"), str) else None,
        start=start if isinstance(start, str) else None,
        interpreter_needed=interpreter_needed(encounter),
        locations=tuple(location_summary(r) for r in second.locations),
        service_provider=organization_summary(org) if org and org.get("resourceType") == "Organization" else None,
        parent_locations=tuple(location_summary(r) for r in second.parent_locations),
        parent_organizations=tuple(organization_summary(r) for r in second.parent_organizations),
    )


def _user_summary(ids: _LaunchIds, fhir_user: str | None, first: _FirstRound, second: _SecondRound,
                  base_url: str) -> UserSummary:
    if ids.user_type in ("Practitioner", "PractitionerRole"):
        app_roles = role_names(second.roles) or ["clinician"]
    else:
        app_roles = []
    name = None
    if second.practitioner:
        name = human_name(second.practitioner.get("name"), with_prefix=True)
    elif first.user:
        name = human_name(first.user.get("name"))
    return UserSummary(
        reference=second.practitioner_ref or ids.user_ref or fhir_user, name=name, roles=tuple(app_roles),
        practitioner_roles=tuple(role_summary(r, base_url, second.services) for r in second.roles),
    )


def _launch_flags(token_response: dict[str, Any]) -> dict[str, Any]:
    """The launch parameters the app honours as they are (SMART App Launch 2.2, "Launch context")."""
    style_url = token_response.get("smart_style_url")
    fhir_context = token_response.get("fhirContext")
    return {
        "need_patient_banner": bool(token_response.get("need_patient_banner", True)),
        "smart_style_url": style_url if isinstance(style_url, str) else None,
        "intent": clean_text(token_response.get("intent"), 64) or None,
        "fhir_context": tuple(c for c in (fhir_context if isinstance(fhir_context, list) else [])
                              if isinstance(c, dict)),
        "scope": str(token_response.get("scope") or ""),
    }


def read_launch_context(client: FhirClient, token_response: dict[str, Any], *,
                        fhir_user: str | None = None) -> LaunchContext:
    """Build the launch context from the token response's launch parameters (at most two rounds, see above)."""
    ids = _launch_ids(token_response, fhir_user, client.base_url)
    first = _read_first_round(client, ids, token_response.get("scope"))
    second = _read_second_round(client, first, ids)
    try:
        return LaunchContext(
            patient=patient_summary(first.patient) if first.patient else None,
            encounter=_encounter_summary(first.encounter, second),
            user=_user_summary(ids, fhir_user, first, second, client.base_url),
            **_launch_flags(token_response),
        )
    except (TypeError, AttributeError, KeyError, ValueError):
        # An element of a shape the readers above do not expect (each takes the wrong JSON type as absent where
        # it can): the launch stops on a plain page, never a 500.
        raise ContextError("The EHR's answer about this visit could not be read.") from None
