"""CDS Hooks 2.0 service: a neutral "check-in due" card with a SMART link that launches the app.

``GET /cds-services`` discovery (no PHI; open, so an EHR's registration tool can read it);
``POST /cds-services/<id>`` for ``patient-view`` and ``encounter-start``;
``POST /cds-services/<id>/feedback`` accepted / overridden cards, counted for the program report.

Every POST must carry the EHR's signed JWT (fhir/cds_hooks.py): ``iss`` allow-listed in the
deployment's ``cds.clients`` with its JWKS, ``aud`` = the URL called, ``exp``, ``iat``, a ``jti``
never seen before, a ``kid`` in that JWKS. Anything else is 401 and nothing is read or written.
When prefetch is missing the service reads the Patient and the screens from ``fhirServer`` with
``fhirAuthorization`` — only when that server is allow-listed for this client and in allowed_iss.

The card never says why it is shown and never carries an answer or a score: it may be on a
shared screen. Its wording avoids abuse words on purpose (tests check it).
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid as uuidlib
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from config.current import current_settings
from fhir.builders import codes as writeback_codes
from fhir.cds_hooks import (
    FHIR_ID,
    CdsAuthError,
    CdsClientConfig,
    bearer,
    bundle_resources,
    card,
    jti_key,
    key_from_jwks,
    prefetch_templates,
    unverified_claims,
    verify_request_jwt,
)
from fhir.client import FhirClient, FhirError
from fhir.smart.discovery import normalize_iss
from fhir.smart.id_token import IdTokenError, JwksCache
from smart_app.launch.ehr import http_session
from smart_app.launch.visit_memory import checkin_done, followup_open
from smart_app.ops.security import csrf
from smart_app.report import events
from smart_app.screening.checkin import CheckinPolicy, decide
from smart_app.store.db import get_session
from smart_app.store.models import CdsCard, CdsJti

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__)
# Called by EHR servers, not browsers: authenticated by the signed JWT, so no CSRF token.
csrf.exempt(bp)

# id -> (hook, title, description). Neutral names: they show in EHR configuration screens.
SERVICES: dict[str, tuple[str, str, str]] = {
    "checkin-patient-view": ("patient-view", "Routine check-in",
                             "Suggests the routine private check-in when it is due under the site's policy."),
    "checkin-encounter-start": ("encounter-start", "Routine check-in",
                                "Suggests the routine private check-in at the start of a visit when it is due."),
}
# Card text: neutral on purpose (no abuse words; tests/cds check the list in FORBIDDEN_WORDS there).
CARD_SUMMARY = "Routine check-in due"
CARD_DETAIL = ("The routine private check-in is due at this visit under your organization's schedule. "
               "Open it when you are ready; it takes a few minutes.")
CARD_SOURCE = "Private check-in"
CARD_LINK = "Open check-in"
# A positive self-administered screen still waits for the clinician's response (smart_app/followup/items.py): shown
# for this patient until one is recorded, whatever the schedule says; as neutral as the check-in card.
FOLLOWUP_SUMMARY = "Check-in follow-up to record"
FOLLOWUP_DETAIL = ("A follow-up from an earlier check-in with this patient has not been recorded yet. "
                   "Open the check-in when you are with the patient to record it.")
OBS_READ = re.compile(r"^(patient|user|system)/(Observation|\*)\.(read|\*|c?r?u?d?s)$")


def _policy() -> CheckinPolicy:
    return CheckinPolicy.from_settings(current_settings().cds)


def _clients() -> dict[str, CdsClientConfig]:
    cds = current_settings().cds
    return {c.iss: CdsClientConfig(iss=c.iss, jwks=c.jwks, jwks_urls=tuple(c.jwks_url),
                                   fhir_servers=tuple(c.fhir_servers), site=c.site)
            for c in (cds.clients if cds else [])}


def _base() -> str:
    return current_settings().app_base_url


def screen_codes() -> list[tuple[str, str]]:
    """This app's total-score codes: LOINC for HITS and HARK (fhir/writeback_codes.yaml), the
    Questionnaire canonical + ``total`` for the others (as fhir/builders.py writes them). Read once."""
    if "cds_codes" not in current_app.extensions:
        current_app.extensions["cds_codes"] = _screen_codes()
    return current_app.extensions["cds_codes"]


def _screen_codes() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    loinc = writeback_codes()["score_codes"]
    instruments = (current_app.extensions.get("screening") or {}).get("instruments") or {}
    for key, inst in sorted(instruments.items()):
        if inst.role != "screen":
            continue
        c = loinc.get(key)
        out.append((c["system"], c["code"]) if c else (inst.url, "total"))
    for c in loinc.values():
        if (c["system"], c["code"]) not in out:
            out.append((c["system"], c["code"]))
    return out


# ---------------------------------------------------------------------------- discovery


@bp.get("/cds-services")
def discovery() -> Response:
    codes = screen_codes()
    services = [{"hook": hook, "id": sid, "title": title, "description": desc,
                 "prefetch": prefetch_templates(codes, with_encounter=hook == "encounter-start")}
                for sid, (hook, title, desc) in SERVICES.items()]
    return jsonify({"services": services})


# ---------------------------------------------------------------------------- authentication


def _jwks(client: CdsClientConfig, url: str | None, *, force: bool = False) -> dict[str, Any]:
    if client.jwks is not None or url is None:
        return client.jwks or {"keys": []}
    cache: JwksCache = current_app.extensions.setdefault("cds_jwks", JwksCache(ttl_seconds=300))
    return cache.get(url, http=http_session(), force=force,
                     timeout=min(3.0, current_settings().http_timeout_seconds))


def _key(client: CdsClientConfig, kid: str, alg: str, jku: Any = None) -> Any:
    url = client.jwks_url_for(jku)
    try:
        key = key_from_jwks(_jwks(client, url), kid, alg)
        if key is None and url and client.jwks is None:
            # An unknown kid may be a rotated key: re-read once, at most every 30 s per key set.
            last = current_app.extensions.setdefault("cds_jwks_forced", {})
            if time.monotonic() - last.get(url, -1e9) > 30:
                last[url] = time.monotonic()
                key = key_from_jwks(_jwks(client, url, force=True), kid, alg)
    except IdTokenError:
        raise CdsAuthError("jwks unavailable") from None
    if key is None:
        raise CdsAuthError("unknown kid")
    return key


def authenticate() -> CdsClientConfig:
    """The calling EHR's config, or CdsAuthError. Records the jti (a replay is refused): flushed here, so a
    concurrent replay waits on the unique key and fails; committed with the rest of the request (one commit)."""
    token = bearer(request.headers.get("Authorization"))
    header, unverified = unverified_claims(token)
    client = _clients().get(str(unverified.get("iss") or ""))
    if client is None:
        raise CdsAuthError("iss not allow-listed")
    kid, alg = header.get("kid"), header.get("alg")
    if not isinstance(kid, str) or not kid or not isinstance(alg, str):
        raise CdsAuthError("kid and alg required")
    audience = _base() + request.path
    claims = verify_request_jwt(token, header=header, key=_key(client, kid, alg, header.get("jku")),
                               iss=client.iss, audience=audience)
    db = get_session()
    try:
        db.add(CdsJti(key=jti_key(client.iss, claims["jti"]),
                      expires_at=datetime.fromtimestamp(claims["exp"] + 60, UTC)))
        db.flush()
    except IntegrityError:
        db.rollback()
        raise CdsAuthError("jti replayed") from None
    if random.random() < 0.02:  # keep the replay guard small: expired jtis can no longer be replayed
        db.execute(delete(CdsJti).where(CdsJti.expires_at < datetime.now(UTC)))
    return client


def _bad_request() -> tuple[Response, int]:
    get_session().commit()  # the jti stays recorded: a bad request cannot be replayed either
    return jsonify({"error": "bad request"}), 400


def _unauthorized(exc: CdsAuthError) -> tuple[Response, int]:
    log.warning("cds request refused: %s", exc)
    resp = jsonify({"error": "unauthorized"})
    resp.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return resp, 401


# ---------------------------------------------------------------------------- the hook


def _fhir(client: CdsClientConfig, body: dict[str, Any]) -> FhirClient | None:
    """A FHIR client for the request's fhirServer — only an allow-listed one, with the hook's token."""
    server = body.get("fhirServer")
    auth = body.get("fhirAuthorization") or {}
    if not isinstance(server, str) or not isinstance(auth, dict) or not auth.get("access_token"):
        return None
    server = normalize_iss(server)
    allowed = {normalize_iss(u) for u in current_settings().allowed_iss}
    if server not in allowed or server not in {normalize_iss(u) for u in client.fhir_servers}:
        log.warning("cds: fhirServer not allow-listed for this client; no FHIR read")
        return None
    timeout = current_settings().cds_fhir_timeout_seconds
    return FhirClient(server, str(auth["access_token"]), timeout=timeout, session=http_session())


def _can_read_observations(body: dict[str, Any]) -> bool:
    scope = (body.get("fhirAuthorization") or {}).get("scope")
    if not isinstance(scope, str) or not scope.strip():
        return True  # scope not stated: try, a 401/403 is handled as unknown
    return any(OBS_READ.match(s) for s in scope.split())


def _patient(body: dict[str, Any], patient_id: str, fhir: FhirClient | None) -> dict[str, Any] | None:
    pre = (body.get("prefetch") or {})
    p = pre.get("patient")
    if isinstance(p, dict) and p.get("resourceType") == "Patient" and p.get("id") == patient_id:
        return p
    if fhir is None:
        return None
    try:
        return fhir.read("Patient", patient_id)
    except FhirError as exc:
        log.info("cds: Patient read failed (%s)", exc.status)
        return None


def _screens(body: dict[str, Any], patient_id: str, fhir: FhirClient | None,
             codes: list[tuple[str, str]], since: datetime) -> list[dict[str, Any]] | None:
    """This patient's screens; None when unknown (no prefetch and no readable FHIR server)."""
    pre = body.get("prefetch") or {}
    if "screens" in pre:
        if pre["screens"] is None:  # 2.0: null = the client has no data for this key
            return []
        found = bundle_resources(pre["screens"])
        if found is not None:
            return found
    if fhir is None or not _can_read_observations(body):
        return None
    params = {"patient": patient_id, "code": ",".join(f"{s}|{c}" for s, c in codes),
              "date": "ge" + since.date().isoformat()}
    try:
        return fhir.search("Observation", params)
    except FhirError as exc:
        log.info("cds: Observation search failed (%s): screening status unknown", exc.status)
        return None


def _site(client: CdsClientConfig, body: dict[str, Any]) -> str:
    enc = (body.get("prefetch") or {}).get("encounter")
    site_map = current_settings().site_map
    if isinstance(enc, dict):
        for loc in enc.get("location") or []:
            ref = ((loc or {}).get("location") or {}).get("reference") or ""
            if site_map.get(ref):
                return str(site_map[ref])[:64]
    return client.site


def _memory_context(context: dict[str, Any]) -> dict[str, Any]:
    """The hook's patient and encounter in the launch context's shape (what the visit memory is keyed on)."""
    encounter = context.get("encounterId")
    return {"patient": {"id": context["patientId"]},
            "encounter": {"id": encounter} if isinstance(encounter, str) and FHIR_ID.match(encounter) else {}}


@bp.post("/cds-services/<sid>")
def service(sid: str) -> tuple[Response, int] | Response:
    if sid not in SERVICES:
        return jsonify({"error": "no such service"}), 404
    try:
        client = authenticate()
    except CdsAuthError as exc:
        return _unauthorized(exc)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _bad_request()
    context = body.get("context")
    hook = SERVICES[sid][0]
    patient_id = context.get("patientId") if isinstance(context, dict) else None
    if body.get("hook") != hook or not isinstance(patient_id, str) or not FHIR_ID.match(patient_id) \
            or not isinstance(body.get("hookInstance"), str):
        return _bad_request()
    db = get_session()
    # The EHR the card is for: the FHIR server the hook names (allow-listed for this client), else its first.
    server = body.get("fhirServer") if body.get("fhirServer") in client.fhir_servers else \
        next(iter(client.fhir_servers), None)
    if server and followup_open(db, server, _memory_context(context)):
        db.commit()  # the jti
        return jsonify({"cards": [card(uuid=str(uuidlib.uuid4()), summary=FOLLOWUP_SUMMARY, detail=FOLLOWUP_DETAIL,
                                       source_label=CARD_SOURCE, link_label=CARD_LINK,
                                       launch_url=_base() + "/launch")]})
    policy = _policy()
    codes = screen_codes()
    now = datetime.now(UTC)
    fhir = _fhir(client, body)
    patient = _patient(body, patient_id, fhir)
    screens = _screens(body, patient_id, fhir, codes, policy.since(now))
    decision = decide(policy, patient, screens, set(codes), now)
    # The chart may not show this app's screens (a negative screen writes nothing): its own memory counts too.
    if not decision.due or (server and checkin_done(db, server, _memory_context(context), policy.since(now))):
        db.commit()  # the jti
        return jsonify({"cards": []})
    cid = str(uuidlib.uuid4())
    site, month = _site(client, body), events.month_of(now)
    ehr = events.ehr_of(server)
    db.add(CdsCard(uuid=cid, service=sid, site=site, month=month, ehr=ehr))
    events.card(db, "card_shown", site=site, month=month, ehr=ehr)
    db.commit()
    return jsonify({"cards": [card(uuid=cid, summary=CARD_SUMMARY, detail=CARD_DETAIL, source_label=CARD_SOURCE,
                                   link_label=CARD_LINK, launch_url=_base() + "/launch")]})


@bp.post("/cds-services/<sid>/feedback")
def feedback(sid: str) -> tuple[Response, int] | Response:
    """CDS Hooks 2.0 "Feedback": {"feedback": [{"card": uuid, "outcome": "accepted"|"overridden", ...}]}."""
    if sid not in SERVICES:
        return jsonify({"error": "no such service"}), 404
    try:
        authenticate()
    except CdsAuthError as exc:
        return _unauthorized(exc)
    body = request.get_json(silent=True)
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) > 100:
        return _bad_request()
    db = get_session()
    for item in items:
        if not isinstance(item, dict) or item.get("outcome") not in ("accepted", "overridden"):
            continue
        row = db.get(CdsCard, str(item.get("card") or ""))
        if row is None or row.service != sid or row.outcome is not None:
            continue  # unknown card, or its outcome already counted
        row.outcome = item["outcome"]
        events.card(db, f"card_{item['outcome']}", site=row.site, month=row.month, ehr=row.ehr)
    db.commit()
    return jsonify({})
