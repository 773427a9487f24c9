"""Launch context: what the app needs to know about the patient, the visit, the site
and the user, read once at launch and kept (encrypted) with the launch record.

Shape (the contract other features rely on)::

    {"patient": {"id","name","birthDate","gender","language","languages","mrn","interpreter_needed"} | None,
     "encounter": {"id","class","start","interpreter_needed","locations": [{"id","name","identifiers","postalCode"}],
                   "service_provider": {"id","name","identifiers"} | None} | None,
     "user": {"reference","name","roles": ["clinician"|"social_worker"],
              "practitioner_roles": [{"id","codings","texts","locations","organizations","services"}]},
     "need_patient_banner": bool, "smart_style_url", "intent", "fhir_context": [...], "scope": str}

Reads go in one round where the server allows: one FHIR batch holding the Patient, the user, and an
Encounter search by ``_id`` with ``_include`` of its Locations and serviceProvider (FHIR R4 search
3.1.1.5.5), so the launch waits on the EHR twice in all (token, then this). A server that ignores
``_include`` gets a second round for just what is missing; a server without batch gets the same reads
sent in parallel, so each round still waits once.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fhir.client import FhirClient, FhirError
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

# ISO 639-2/3 codes and English names some EHRs send instead of BCP-47.
_LANG_ALIASES = {
    "eng": "en", "spa": "es", "por": "pt", "fra": "fr", "fre": "fr", "hat": "ht", "zho": "zh", "chi": "zh",
    "vie": "vi", "ara": "ar", "rus": "ru", "kor": "ko", "cmn": "zh", "yue": "zh", "som": "so", "cpp": "pt",
    "english": "en", "spanish": "es", "portuguese": "pt", "french": "fr", "haitian creole": "ht",
    "chinese": "zh", "mandarin": "zh", "cantonese": "zh", "vietnamese": "vi", "arabic": "ar",
    "russian": "ru", "korean": "ko", "somali": "so", "cape verdean creole": "kea",
}


# FHIR id datatype: what a launch parameter may contain before it goes into a URL path.
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class ContextError(Exception):
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
        bundle = {"resourceType": "Bundle", "type": "batch",
                  "entry": [{"request": {"method": "GET", "url": u}} for u in urls]}
        try:
            result = client.bundle(bundle)
        except FhirError as exc:
            if exc.status in (0, 429) or (exc.status >= 500 and exc.status != 501):
                raise  # the server is struggling: do not multiply the load with single reads
            result = None
        entries = (result or {}).get("entry") if isinstance(result, dict) else None
        if (isinstance(result, dict) and result.get("type") == "batch-response"
                and isinstance(entries, list) and len(entries) == len(urls)):
            out: list[dict[str, Any] | None] = []
            for e in entries:
                ok = _ok((e.get("response") or {}).get("status")) if isinstance(e, dict) else False
                out.append(e.get("resource") if ok and isinstance(e.get("resource"), dict) else None)
            return out
        with _no_batch_lock:
            _no_batch.add(client.base_url)
        log.info("FHIR server does not accept batch reads; reading one by one")
    if len(urls) == 1:
        return [_read_one(client, urls[0])]
    # No batch: the reads go in parallel (a round waits once), each on its own connection of the pool.
    with ThreadPoolExecutor(max_workers=min(len(urls), PARALLEL_READS)) as pool:
        return list(pool.map(lambda u: _read_one(client, u), urls))


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


def human_name(names: list[dict[str, Any]] | None, *, with_prefix: bool = False) -> str | None:
    """Display name: the 'official' (else 'usual', else first) HumanName."""
    if not names:
        return None
    by_use = {n.get("use"): n for n in reversed(names) if isinstance(n, dict)}
    name = by_use.get("official") or by_use.get("usual") or names[0]
    if name.get("text"):
        return clean_text(name["text"], 120) or None
    parts = (name.get("prefix") or []) if with_prefix else []
    parts = [*parts, *(name.get("given") or []), name.get("family") or ""]
    text = clean_text(" ".join(str(p) for p in parts if p), 120)
    return text or None


def language_tag(communication: dict[str, Any]) -> str | None:
    """Primary BCP-47 subtag of one Patient.communication entry ("es-MX" -> "es")."""
    concept = communication.get("language") or {}
    for coding in concept.get("coding") or []:
        code = str(coding.get("code") or "").strip()
        if code:
            primary = code.replace("_", "-").split("-")[0].lower()
            return _LANG_ALIASES.get(primary, primary if 2 <= len(primary) <= 3 else None)
    text = str(concept.get("text") or "").strip().lower()
    return _LANG_ALIASES.get(text) if text else None


def patient_languages(patient: dict[str, Any]) -> list[str]:
    comms = [c for c in patient.get("communication") or [] if isinstance(c, dict)]
    comms.sort(key=lambda c: 0 if c.get("preferred") else 1)  # stable: preferred first, then as listed
    seen: list[str] = []
    for c in comms:
        tag = language_tag(c)
        if tag and tag not in seen:
            seen.append(tag)
    return seen


def _mrn(patient: dict[str, Any]) -> str | None:
    for ident in patient.get("identifier") or []:
        for coding in (ident.get("type") or {}).get("coding") or []:
            if coding.get("code") == "MR" and (coding.get("system") in (None, V2_0203)):
                return clean_text(ident.get("value"), 64) or None
    return None


def _identifiers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"system": clean_text(i.get("system"), 200) or None, "value": clean_text(i.get("value"), 100)}
            for i in resource.get("identifier") or [] if isinstance(i, dict) and i.get("value")]


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


def patient_summary(patient: dict[str, Any]) -> dict[str, Any]:
    langs = patient_languages(patient)
    return {
        "interpreter_needed": interpreter_needed(patient),
        "id": patient.get("id"),
        "name": human_name(patient.get("name")) or "",
        "birthDate": clean_text(patient.get("birthDate"), 10) or None,
        "gender": clean_text(patient.get("gender"), 20) or None,
        "language": langs[0] if langs else "en",
        "languages": langs or ["en"],
        "mrn": _mrn(patient),
    }


def location_summary(location: dict[str, Any]) -> dict[str, Any]:
    return {"id": location.get("id"), "name": clean_text(location.get("name"), 120) or None,
            "identifiers": _identifiers(location),
            "postalCode": clean_text((location.get("address") or {}).get("postalCode"), 10) or None}


def organization_summary(org: dict[str, Any]) -> dict[str, Any]:
    return {"id": org.get("id"), "name": clean_text(org.get("name"), 120) or None, "identifiers": _identifiers(org)}


def _refs(items: Any, base_url: str, rtype: str) -> list[dict[str, str | None]]:
    out = []
    for item in items if isinstance(items, list) else [items] if isinstance(items, dict) else []:
        raw = item.get("reference") if isinstance(item, dict) else None
        ref = _relative(raw, base_url) if isinstance(raw, str) else None
        if ref and ref.startswith(rtype + "/"):
            display = item.get("display")
            out.append({"reference": ref, "display": display if isinstance(display, str) else None})
    return out


def role_summary(role: dict[str, Any], base_url: str) -> dict[str, Any]:
    """What the app needs of one PractitionerRole: its codes and texts (role mapping, smart_app/launch/roles.py)
    and the places it covers (the social-work queue's scope)."""
    concepts = [c for key in ("code", "specialty") for c in (role.get(key) if isinstance(role.get(key), list) else [])
                if isinstance(c, dict)]
    return {
        "id": role.get("id"),
        "active": role.get("active", True) is not False,
        "codings": [{"system": c.get("system"), "code": c.get("code"), "display": c.get("display")}
                    for concept in concepts
                    for c in (concept.get("coding") if isinstance(concept.get("coding"), list) else [])
                    if isinstance(c, dict)],
        "texts": [str(concept["text"]) for concept in concepts if isinstance(concept.get("text"), str)],
        "locations": _refs(role.get("location"), base_url, "Location"),
        "organizations": _refs(role.get("organization"), base_url, "Organization"),
        "services": _refs(role.get("healthcareService"), base_url, "HealthcareService"),
    }


def _with_service_places(summary: dict[str, Any], services: dict[str, dict[str, Any] | None],
                         base_url: str) -> dict[str, Any]:
    """Add the Locations and Organizations of the role's HealthcareServices (what they were read as)."""
    for ref in summary["services"]:
        svc = services.get(ref["reference"])
        if svc and svc.get("resourceType") == "HealthcareService":
            ref["display"] = ref.get("display") or svc.get("name")
            summary["locations"] += _refs(svc.get("location"), base_url, "Location")
            summary["organizations"] += _refs(svc.get("providedBy"), base_url, "Organization")
    return summary


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


def _ref_id(reference: str | None) -> str | None:
    return reference.split("/")[1] if reference else None


def _encounter_from_fhir_context(token_response: dict[str, Any]) -> str | None:
    """SMART 2.x EHRs may name the encounter only in ``fhirContext`` ([{"reference": "Encounter/x"}])."""
    items = token_response.get("fhirContext")
    for item in items if isinstance(items, list) else []:
        ref = item.get("reference") if isinstance(item, dict) else None
        if isinstance(ref, str) and ref.startswith("Encounter/") and ref.count("/") == 1:
            return ref.split("/", 1)[1]
    return None


def read_launch_context(client: FhirClient, token_response: dict[str, Any], *,
                        fhir_user: str | None = None) -> dict[str, Any]:
    """Build the launch context from the token response's launch parameters."""
    patient_id = token_response.get("patient")
    encounter_id = token_response.get("encounter") or _encounter_from_fhir_context(token_response)
    # Ids go into request paths: anything that is not a FHIR id is refused, never sent.
    if patient_id is not None and not (isinstance(patient_id, str) and FHIR_ID.match(patient_id)):
        raise ContextError("The EHR sent a patient id this app cannot use.")
    if encounter_id is not None and not (isinstance(encounter_id, str) and FHIR_ID.match(encounter_id)):
        encounter_id = None
    user_ref = _relative(fhir_user, client.base_url)
    user_type = user_ref.split("/")[0] if user_ref else None

    # Round 1: what the token response names.
    urls: list[str] = []
    slots: dict[str, int] = {}

    def want(slot: str, url: str) -> None:
        slots[slot] = len(urls)
        urls.append(url)

    if patient_id:
        want("patient", f"Patient/{patient_id}")
    if encounter_id and _may_search(token_response.get("scope"), "Encounter"):
        want("encounter", f"Encounter?_id={encounter_id}&_include=Encounter:location"
                          "&_include=Encounter:service-provider")
    elif encounter_id:
        want("encounter", f"Encounter/{encounter_id}")  # read-only scope: the Locations wait for round 2
    if user_ref:
        want("user", user_ref)
        if user_type == "Practitioner":
            want("roles", f"PractitionerRole?practitioner={user_ref}")
    got = fetch_many(client, urls)

    def res(slot: str) -> dict[str, Any] | None:
        return got[slots[slot]] if slot in slots else None

    patient = res("patient")
    if patient_id and (not patient or patient.get("resourceType") != "Patient"):
        raise ContextError("The patient's record could not be read from the EHR.")
    encounter_bundle = res("encounter")
    if isinstance(encounter_bundle, dict) and encounter_bundle.get("resourceType") == "Encounter":
        encounter, encounter_bundle = encounter_bundle, None  # the plain read
    else:
        matches = [r for r in _search_entries(encounter_bundle) if r.get("resourceType") == "Encounter"
                   and r.get("id") == encounter_id]
        encounter = matches[0] if matches else None
    included = {f"{r.get('resourceType')}/{r.get('id')}": r for r in _included_entries(encounter_bundle)}
    if encounter_id and encounter is None and not isinstance(encounter_bundle, dict):
        # The search itself failed (a server without _id search on Encounter): a plain read, one more round.
        encounter = fetch_many(client, [f"Encounter/{encounter_id}"])[0]
        if encounter is not None and encounter.get("resourceType") != "Encounter":
            encounter = None
    user = res("user")
    # Only roles of the signed-in user count: FHIR search is lenient by default, so an EHR
    # that ignores the practitioner parameter returns everyone's roles.
    roles = [r for r in _search_entries(res("roles"))
             if r.get("resourceType") == "PractitionerRole" and r.get("active") is not False
             and _relative((r.get("practitioner") or {}).get("reference"), client.base_url) == user_ref]

    # Round 2: the Encounter's Locations and serviceProvider, a PractitionerRole's Practitioner.
    urls2: list[str] = []
    loc_refs: list[str] = []
    org_ref = None
    if encounter:
        for entry in encounter.get("location") or []:
            ref = _relative((entry.get("location") or {}).get("reference"), client.base_url)
            if ref and ref.startswith("Location/") and ref not in loc_refs:
                loc_refs.append(ref)
        org_ref = _relative((encounter.get("serviceProvider") or {}).get("reference"), client.base_url)
        if org_ref and not org_ref.startswith("Organization/"):
            org_ref = None
    urls2.extend(loc_refs)
    if org_ref:
        urls2.append(org_ref)
    prac_ref = None
    if user and user.get("resourceType") == "PractitionerRole":
        # fhirUser is itself the PractitionerRole: that role, and only if it is the resource we asked for.
        roles = [user] if user_ref == f"PractitionerRole/{user.get('id')}" and user.get("active") is not False \
            else []
        prac_ref = _relative((user.get("practitioner") or {}).get("reference"), client.base_url)
        if prac_ref:
            urls2.append(prac_ref)
    # A role's HealthcareServices say where they are given (location, providedBy): queue coverage. Read in
    # round 2 only when a role names one.
    summaries = [role_summary(r, client.base_url) for r in roles]  # once per role: services now, places below
    service_refs = [s["reference"] for summary in summaries for s in summary["services"]]
    service_refs = list(dict.fromkeys(service_refs))
    start_services = len(urls2)
    urls2.extend(service_refs)
    # Round 2 only for what _include did not bring (a server that ignores it, or a reference it skipped).
    missing = [u for u in urls2 if u not in included]
    try:
        fetched = dict(zip(missing, fetch_many(client, missing), strict=True))
    except FhirError:
        if not service_refs:
            raise
        # The services are a nicety (coverage falls back to the deployment file): never fail the launch on them.
        urls2, service_refs = urls2[:start_services], []
        missing = [u for u in urls2 if u not in included]
        fetched = dict(zip(missing, fetch_many(client, missing), strict=True))
    got2 = [included.get(u) or fetched.get(u) for u in urls2]
    services = {ref: got2[start_services + i] for i, ref in enumerate(service_refs)}
    got2 = got2[:start_services]
    locations = [location_summary(r) for r in got2[:len(loc_refs)] if r and r.get("resourceType") == "Location"]
    org = got2[len(loc_refs)] if org_ref else None
    practitioner = got2[-1] if prac_ref else (user if user and user.get("resourceType") == "Practitioner" else None)

    enc_summary = None
    if encounter:
        cls = encounter.get("class")
        enc_summary = {
            "id": encounter.get("id"),
            "class": cls.get("code") if isinstance(cls, dict) else None,
            "start": (encounter.get("period") or {}).get("start"),
            "interpreter_needed": interpreter_needed(encounter),
            "locations": locations,
            "service_provider": organization_summary(org) if org and org.get("resourceType") == "Organization"
            else None,
        }

    if user_type in ("Practitioner", "PractitionerRole"):
        user_roles = role_names(roles) or ["clinician"]
    else:
        user_roles = []
    user_name = None
    if practitioner:
        user_name = human_name(practitioner.get("name"), with_prefix=True)
    elif user:
        user_name = human_name(user.get("name"))

    return {
        "patient": patient_summary(patient) if patient else None,
        "encounter": enc_summary,
        "user": {"reference": (prac_ref or user_ref or fhir_user), "name": user_name, "roles": user_roles,
                 "practitioner_roles": [_with_service_places(summary, services, client.base_url)
                                        for summary in summaries]},
        "need_patient_banner": bool(token_response.get("need_patient_banner", True)),
        "smart_style_url": token_response.get("smart_style_url")
        if isinstance(token_response.get("smart_style_url"), str) else None,
        "intent": clean_text(token_response.get("intent"), 64) or None,
        "fhir_context": [c for c in (token_response.get("fhirContext")
                                     if isinstance(token_response.get("fhirContext"), list) else [])
                         if isinstance(c, dict)],
        "scope": str(token_response.get("scope") or ""),
    }
