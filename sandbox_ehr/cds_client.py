"""The sandbox EHR as a CDS Hooks 2.0 client: opening a patient on the simulator page calls the
app's ``patient-view`` service and shows its cards.

- ``GET /cds-client/jwks.json``: the public key the sandbox signs its CDS Hooks JWTs with
  (``keys/cds-es384-private.pem``, a public demo key; ES384 as CDS Hooks 2.0 "Trusting CDS Clients" requires).
- ``POST /ehr/cds/patient-view`` (the simulator page's script): builds the hook request the way an EHR
  does — discovery once, prefetch filled from the store, ``fhirAuthorization`` with a fresh patient-scoped
  token — signs it (iss = sandbox base URL, aud = the service URL, exp 5 min, jti, kid) and returns the
  service's cards to the page.

Config: ``CDS_SERVICES_URL`` (the app's ``.../cds-services``; unset = no calls), ``CDS_SERVICE_ID``
(default ``checkin-patient-view``), ``CDS_PREFETCH`` (True: fill prefetch; False: only fhirAuthorization),
``CDS_SCOPE`` (scope of the fhirAuthorization token).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, current_app, jsonify, request

from sandbox_ehr import authstore

bp = Blueprint("cds_client", __name__)
KEY_FILE = Path(__file__).parent / "keys" / "cds-es384-private.pem"
KID = "sandbox-cds-es384"
CLIENT_ID = "cds-service"  # the token's client in the sandbox's own records
DEFAULT_SCOPE = "patient/Patient.r patient/Observation.rs patient/Encounter.r"


def _private_key() -> Any:
    return serialization.load_pem_private_key(KEY_FILE.read_bytes(), password=None)


def public_jwks() -> dict[str, Any]:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(_private_key().public_key(), as_dict=True)
    jwk.update(kid=KID, alg="ES384", use="sig")
    return {"keys": [jwk]}


def signed_jwt(audience: str, *, iss: str | None = None, lifetime: int = 300, jti: str | None = None) -> str:
    from sandbox_ehr.auth import base_url

    now = int(time.time())
    claims = {"iss": iss or base_url(), "aud": audience, "iat": now, "exp": now + lifetime,
              "jti": jti or str(uuid.uuid4())}
    return jwt.encode(claims, _private_key(), algorithm="ES384", headers={"kid": KID, "typ": "JWT"})


@bp.get("/cds-client/jwks.json")
def jwks() -> Response:
    return jsonify(public_jwks())


def _store():
    return current_app.extensions.get("sandbox_store")


def _fill(template: str, context: dict[str, str]) -> Any:
    """Run one prefetch template against the store (read or search); None when a token is missing."""
    for key, value in context.items():
        template = template.replace("{{context." + key + "}}", value)
    if "{{" in template:
        return None
    path, _, query = template.partition("?")
    store = _store()
    if not query and "/" in path:
        rtype, rid = path.split("/", 1)
        return store.read(rtype, rid) if store.exists(rtype, rid) else None
    params = {k: v for k, v in parse_qs(query, keep_blank_values=True).items()}
    found = store.search(path, params)
    return {"resourceType": "Bundle", "type": "searchset", "total": len(found),
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in found]}


def hook_request(service: dict[str, Any], patient: str, practitioner: str, encounter: str | None) -> dict[str, Any]:
    from sandbox_ehr.auth import issuer

    context = {"userId": f"Practitioner/{practitioner}", "patientId": patient}
    if encounter:
        context["encounterId"] = encounter
    scope = current_app.config.get("CDS_SCOPE") or DEFAULT_SCOPE
    token = authstore.issue_access_token(CLIENT_ID, scope, patient=patient, encounter=encounter,
                                         fhir_user=f"Practitioner/{practitioner}", lifetime=300)
    body: dict[str, Any] = {
        "hook": service["hook"], "hookInstance": str(uuid.uuid4()), "fhirServer": issuer(), "context": context,
        "fhirAuthorization": {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": scope,
                              "subject": CLIENT_ID, "patient": patient},
    }
    if current_app.config.get("CDS_PREFETCH", True):
        prefetch = {}
        for key, template in (service.get("prefetch") or {}).items():
            if "{{context.encounterId}}" in template and not encounter:
                continue
            prefetch[key] = _fill(template, context)
        body["prefetch"] = prefetch
    return body


def _discovery(base: str) -> dict[str, Any]:
    resp = requests.get(base, timeout=5)
    resp.raise_for_status()
    return {s["id"]: s for s in resp.json().get("services") or []}


@bp.post("/ehr/cds/patient-view")
def patient_view() -> Response | tuple[Response, int]:
    """Call the app's patient-view service for the patient chosen on the simulator page."""
    base = (current_app.config.get("CDS_SERVICES_URL") or "").rstrip("/")
    if not base:
        return jsonify({"cards": [], "note": "no CDS service configured"})
    store = _store()
    patient = request.form.get("patient", "")
    practitioner = request.form.get("practitioner", "")
    encounter = request.form.get("encounter") or None
    if store is None or not store.exists("Patient", patient) or not store.exists("Practitioner", practitioner):
        return jsonify({"error": "choose a clinician and a patient"}), 400
    sid = current_app.config.get("CDS_SERVICE_ID") or "checkin-patient-view"
    try:
        service = _discovery(base)[sid]
        url = f"{base}/{sid}"
        resp = requests.post(url, json=hook_request(service, patient, practitioner, encounter), timeout=5,
                             headers={"Authorization": f"Bearer {signed_jwt(url)}"})
    except (requests.RequestException, KeyError, ValueError) as exc:
        return jsonify({"error": f"CDS service unavailable ({type(exc).__name__})"}), 502
    if resp.status_code != 200:
        return jsonify({"error": f"CDS service answered {resp.status_code}"}), 502
    launch_url = current_app.config["APP_LAUNCH_URL"]
    cards = []
    for c in (resp.json() or {}).get("cards") or []:
        links = [dict(link, launchable=link.get("type") == "smart" and _same_app(link.get("url"), launch_url))
                 for link in c.get("links") or []]
        cards.append({"uuid": c.get("uuid"), "summary": c.get("summary"), "detail": c.get("detail"),
                      "indicator": c.get("indicator"), "source": (c.get("source") or {}).get("label"),
                      "links": links})
    return jsonify({"cards": cards, "service": sid})


def _same_app(url: str | None, launch_url: str) -> bool:
    """A smart link launches only the app registered with this EHR (its launch URL)."""
    a, b = urlsplit(url or ""), urlsplit(launch_url)
    return (a.scheme, a.netloc, a.path.rstrip("/")) == (b.scheme, b.netloc, b.path.rstrip("/"))


@bp.post("/ehr/cds/feedback")
def feedback() -> Response | tuple[Response, int]:
    """The page reports that a card's link was used (accepted) or the card dismissed (overridden)."""
    base = (current_app.config.get("CDS_SERVICES_URL") or "").rstrip("/")
    sid = current_app.config.get("CDS_SERVICE_ID") or "checkin-patient-view"
    card, outcome = request.form.get("card", ""), request.form.get("outcome", "")
    if not base or not card or outcome not in ("accepted", "overridden"):
        return jsonify({}), 400
    url = f"{base}/{sid}/feedback"
    try:
        requests.post(url, json={"feedback": [{"card": card, "outcome": outcome,
                                               "outcomeTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                 time.gmtime())}]},
                      headers={"Authorization": f"Bearer {signed_jwt(url)}"}, timeout=5)
    except requests.RequestException:
        return jsonify({}), 502
    return jsonify({})
