"""SMART App Launch 2.2 authorization server of the sandbox EHR.

Endpoints (base = this server's root URL, iss = ``<base>/fhir``):
  GET  /fhir/.well-known/smart-configuration   SMART discovery
  GET  /fhir/.well-known/openid-configuration  OpenID discovery (for id_token verification)
  GET  /auth/jwks                              public key that signs id_tokens (RS256)
  GET|POST /auth/authorize                     authorization code flow, PKCE S256 required
  POST /auth/login                             standalone launch: pick practitioner (and patient), approve; for a
                                               portal app (audience: patient) a patient or a proxy signs in
  POST /auth/token                             authorization_code and refresh_token grants, and
                                               client_credentials (SMART Backend Services, private_key_jwt)
  GET  /auth/smart-style.json                  the style referenced by smart_style_url

With a per-launch iss (``issuers.py``) every endpoint also answers under ``<root>/l/<id>``, and codes and
tokens are good only under the iss they were issued for.

Clients are registered in ``clients.yaml`` (path overridable with SANDBOX_CLIENTS). It is a test harness,
strict where the app must be strict (PKCE, aud, state, single-use codes, client assertions), so a mistake in
the app's SMART client fails here the way it would against a real EHR.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import jwt
import requests
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Blueprint, Flask, Response, current_app, jsonify, redirect, render_template, request
from jwt.algorithms import RSAAlgorithm

from sandbox_ehr import authstore
from sandbox_ehr.issuers import current_iss_id, prefix, root_url
from sandbox_ehr.personality import current as current_personality

bp = Blueprint("auth", __name__)

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS384", "ES384")
ASSERTION_MAX_LIFETIME = 300  # SMART: exp no more than five minutes in the future
CLOCK_SKEW = 10
ID_TOKEN_LIFETIME = 3600
# SMART App Launch 2.2 Backend Services, "Issue access token": the access token's lifetime "SHOULD be no greater
# than five minutes" (https://hl7.org/fhir/smart-app-launch/backend-services.html#issue-access-token).
SYSTEM_TOKEN_LIFETIME = 300
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")

CAPABILITIES = [
    "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
    "client-confidential-asymmetric", "context-ehr-patient", "context-ehr-encounter",
    "context-standalone-patient", "context-banner", "context-style", "sso-openid-connect",
    "permission-v1", "permission-v2", "permission-patient", "permission-user", "permission-offline",
    "authorize-post",
]
SCOPES_SUPPORTED = [
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter", "offline_access",
    "online_access", "patient/*.cruds", "user/*.cruds", "patient/*.rs", "user/*.rs", "patient/*.read",
    "patient/*.write", "user/*.read", "user/*.write", "system/*.cruds", "system/*.rs", "system/*.read",
    "system/*.write",
]
_V1_PERMS = {"read": "rs", "write": "cud", "*": "cruds"}
_V2_ORDER = "cruds"
_RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(\?.*)?$")
_PKCE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def init_app(app: Flask) -> None:
    app.config.setdefault("SANDBOX_CLIENTS", str(Path(__file__).with_name("clients.yaml")))
    # Public base URL; None = derived from each request (works on any port the tests pick).
    app.config.setdefault("SANDBOX_BASE_URL", None)
    authstore.init_schema(app.config["SANDBOX_DB"])
    app.extensions["sandbox_refresh_counts"] = RefreshCounts()
    with app.app_context():
        _signing_key()  # create and persist the id_token key at start, not on first login


@bp.after_request
def _no_store(response: Response) -> Response:
    # Token responses and authorization pages must never be cached (RFC 6749 5.1).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


class RefreshCounts:
    """Refresh-token uses the token endpoint saw (``used``) and rotated tokens that came back (``replayed``):
    shown at ``GET /__faults`` so a test can tell a clean single refresh from a race between processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.counts = {"used": 0, "replayed": 0}

    def add(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


# --- URLs --------------------------------------------------------------------------------------

def base_url() -> str:
    """This server's public root, under the request's per-launch iss prefix when it has one."""
    return root_url() + prefix()


def issuer() -> str:
    return base_url() + "/fhir"


def token_endpoint() -> str:
    return base_url() + "/auth/token"


def smart_urls() -> dict[str, str]:
    """OAuth URLs, also for the FHIR API's CapabilityStatement security extension."""
    base = base_url()
    return {"authorize": base + "/auth/authorize", "token": base + "/auth/token"}


# --- clients -----------------------------------------------------------------------------------

_clients_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def clients() -> dict[str, dict[str, Any]]:
    path = current_app.config["SANDBOX_CLIENTS"]
    mtime = Path(path).stat().st_mtime
    cached = _clients_cache.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    with open(path, encoding="utf-8") as fh:
        loaded = (yaml.safe_load(fh) or {}).get("clients") or {}
    _clients_cache[path] = (mtime, loaded)
    return loaded


def redirect_uri_allowed(client: dict[str, Any], uri: str | None) -> bool:
    """Exact match, or a registered pattern whose port is ``*`` (sandbox loopback only)."""
    if not uri:
        return False
    try:
        got = urlsplit(uri)
        got_port = got.port
    except ValueError:
        return False
    if got.fragment:
        return False
    for pattern in client.get("redirect_uris") or []:
        if pattern == uri:
            return True
        if ":*/" in pattern:
            want = urlsplit(pattern.replace(":*/", "/", 1))
            if (got.scheme, got.hostname, got.path, got.query) == (want.scheme, want.hostname, want.path, "") \
                    and got_port is not None:
                return True
    return False


# --- scopes ------------------------------------------------------------------------------------

def _parse_resource_scope(scope: str) -> tuple[str, str, set[str]] | None:
    match = _RESOURCE_SCOPE.match(scope)
    if not match:
        return None
    context, rtype, perms, _query = match.groups()
    if perms in _V1_PERMS:
        return context, rtype, set(_V1_PERMS[perms])
    # v2: letters from c r u d s, in that order, each at most once.
    if perms and all(p in _V2_ORDER for p in perms) and "".join(sorted(perms, key=_V2_ORDER.index)) == perms \
            and len(set(perms)) == len(perms):
        return context, rtype, set(perms)
    return None


def scope_allowed(scope: str, allowed: list[str]) -> bool:
    if scope in allowed:
        return True
    wanted = _parse_resource_scope(scope)
    if wanted is None:
        return False
    for pattern in allowed:
        have = _parse_resource_scope(pattern)
        if have and have[0] == wanted[0] and have[1] in ("*", wanted[1]) and wanted[2] <= have[2]:
            return True
    return False


def grant_scopes(client: dict[str, Any], requested: str, ehr_launch: bool) -> list[str]:
    """The requested scopes this client may have, in request order (v1 and v2 syntax kept as asked)."""
    allowed = client.get("scopes") or []
    granted: list[str] = []
    for scope in requested.split():
        if scope in granted:
            continue
        if scope == "launch" and not ehr_launch:
            continue  # ``launch`` only means something with a launch parameter
        if scope.startswith("system/"):
            continue  # system/ scopes only through client_credentials (Backend Services), never with a user
        if not current_personality().accepts_scope(scope):
            continue  # a syntax this EHR does not know (Oracle: v1 only) is not granted
        if scope_allowed(scope, allowed):
            granted.append(scope)
    return granted


# --- signing key -------------------------------------------------------------------------------

_key_lock = threading.Lock()
_key_cache: dict[str, tuple[str, Any]] = {}


def _generate_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return _thumbprint(key.public_key()), pem


def _thumbprint(public_key: Any) -> str:
    """RFC 7638 JWK thumbprint, used as kid."""
    jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def _signing_key() -> tuple[str, Any]:
    db = current_app.config["SANDBOX_DB"]
    with _key_lock:
        if db not in _key_cache:
            kid, pem = authstore.get_or_create_signing_key(_generate_key)
            _key_cache[db] = (kid, serialization.load_pem_private_key(pem.encode(), password=None))
        return _key_cache[db]


def public_jwks() -> dict[str, Any]:
    kid, key = _signing_key()
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, alg="RS256", use="sig")
    return {"keys": [jwk]}


# --- discovery ---------------------------------------------------------------------------------

@bp.get("/fhir/.well-known/smart-configuration")
def smart_configuration() -> Response:
    base = base_url()
    return jsonify({
        "issuer": issuer(),
        "jwks_uri": base + "/auth/jwks",
        "authorization_endpoint": base + "/auth/authorize",
        "token_endpoint": base + "/auth/token",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    })


@bp.get("/fhir/.well-known/openid-configuration")
def openid_configuration() -> Response:
    base = base_url()
    return jsonify({
        "issuer": issuer(),
        "jwks_uri": base + "/auth/jwks",
        "authorization_endpoint": base + "/auth/authorize",
        "token_endpoint": base + "/auth/token",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "code_challenge_methods_supported": ["S256"],
    })


@bp.get("/auth/jwks")
def jwks() -> Response:
    return jsonify(public_jwks())


@bp.get("/auth/smart-style.json")
def smart_style() -> Response:
    # SMART styling hints (App Launch "smart_style_url"); EHR-like neutral palette.
    return jsonify({
        "color_background": "#f6f7f9", "color_error": "#b00020", "color_highlight": "#2b6cb0",
        "color_modal_backdrop": "", "color_success": "#2f855a", "color_text": "#1a202c",
        "dim_border_radius": "4px", "dim_font_size": "16px", "dim_spacing_size": "16px",
        "font_family_body": "system-ui, sans-serif", "font_family_heading": "system-ui, sans-serif",
    })


def default_style_url() -> str:
    return base_url() + "/auth/smart-style.json"


# --- authorize ---------------------------------------------------------------------------------

def _error_page(message: str, status: int = 400) -> tuple[str, int]:
    return render_template("auth_error.html", title="Authorization error", message=message), status


def _redirect_with(redirect_uri: str, **params: str | None) -> Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    sep = "&" if urlsplit(redirect_uri).query else "?"
    return redirect(f"{redirect_uri}{sep}{query}", code=302)


class _AuthorizeError(Exception):
    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@bp.route("/auth/authorize", methods=["GET", "POST"])
def authorize():
    params = request.values
    client_id = params.get("client_id", "")
    client = clients().get(client_id)
    if client is None:
        # Never redirect for an unknown client: the redirect_uri cannot be trusted (RFC 6749 4.1.2.1).
        return _error_page("Unknown client_id. The app is not registered with this EHR.")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri_allowed(client, redirect_uri):
        return _error_page("redirect_uri is missing or not registered for this client.")
    state = params.get("state") or None
    try:
        req = _validate_authorize(client_id, client, params)
    except _AuthorizeError as exc:
        return _redirect_with(redirect_uri, error=exc.error, error_description=exc.description, state=state)
    if req["launch"]:
        code = authstore.create_code(client_id, redirect_uri, req["code_challenge"], " ".join(req["scope"]),
                                     req["nonce"], _code_context(req["launch_context"], req["scope"]))
        return _redirect_with(redirect_uri, code=code, state=state)
    # Standalone launch: the user signs in to the EHR and picks context.
    pending_id = authstore.create_pending(req)
    return _login_page(pending_id, req)


def _validate_authorize(client_id: str, client: dict[str, Any], params) -> dict[str, Any]:
    if params.get("response_type") != "code":
        raise _AuthorizeError("unsupported_response_type", "response_type must be code")
    state = params.get("state")
    if not state:
        raise _AuthorizeError("invalid_request", "state is required")
    aud = (params.get("aud") or "").rstrip("/")
    if aud != issuer():
        # SMART: aud must be the FHIR base URL the app means to talk to; a mismatch may be a phishing EHR.
        raise _AuthorizeError("invalid_request", "aud must be this server's FHIR base URL")
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if not challenge:
        raise _AuthorizeError("invalid_request", "code_challenge is required (PKCE)")
    if method != "S256":
        raise _AuthorizeError("invalid_request", "code_challenge_method must be S256")
    if not _CHALLENGE.match(challenge):
        raise _AuthorizeError("invalid_request", "code_challenge is not a base64url SHA-256 digest")
    requested = params.get("scope") or ""
    if not requested.strip():
        raise _AuthorizeError("invalid_scope", "scope is required")
    launch = params.get("launch") or None
    launch_context = None
    if launch:
        launch_context = authstore.get_launch(launch)
        if launch_context is None:
            raise _AuthorizeError("invalid_request", "launch is unknown or expired")
        if "launch" not in requested.split():
            raise _AuthorizeError("invalid_scope", "an EHR launch requires the launch scope")
    granted = grant_scopes(client, requested, ehr_launch=bool(launch))
    if not granted:
        raise _AuthorizeError("invalid_scope", "none of the requested scopes is allowed for this client")
    return {"client_id": client_id, "redirect_uri": params.get("redirect_uri"), "state": state,
            "code_challenge": challenge, "scope": granted, "nonce": params.get("nonce") or None,
            "launch": launch, "launch_context": launch_context, "iss_id": current_iss_id()}


def _code_context(launch_context: dict[str, Any], scope: list[str]) -> dict[str, Any]:
    """What the token response may reveal, limited by the granted scopes."""
    ehr = "launch" in scope
    with_patient = ehr or "launch/patient" in scope
    with_encounter = ehr or "launch/encounter" in scope
    encounter = launch_context.get("encounter") if with_encounter else None
    fhir_context = launch_context.get("fhirContext")
    if fhir_context is None:
        fhir_context = [{"reference": f"Encounter/{encounter}"}] if encounter else []
    return {
        "practitioner": launch_context.get("practitioner"),
        "patient": launch_context.get("patient") if with_patient else None,
        "encounter": encounter,
        "need_patient_banner": bool(launch_context.get("need_patient_banner", True)),
        "smart_style_url": launch_context.get("smart_style_url") or default_style_url(),
        "intent": launch_context.get("intent"),
        "fhirContext": fhir_context if with_encounter else [],
        "iss_id": current_iss_id(),
    }


def _login_page(pending_id: str, req: dict[str, Any], error: str | None = None, status: int = 200):
    from sandbox_ehr.ehr_ui import list_patients, list_portal_users, list_practitioners

    client = clients()[req["client_id"]]
    portal = _patient_facing(client)
    need_patient = "launch/patient" in req["scope"] and not portal
    return render_template(
        "auth_login.html", pending_id=pending_id, client_name=client.get("name"),
        practitioners=[] if portal else list_practitioners(), patients=list_patients() if need_patient else [],
        portal_users=list_portal_users() if portal else [],
        need_patient=need_patient, scopes=req["scope"], error=error,
    ), status


def _patient_facing(client: dict[str, Any]) -> bool:
    """A portal app: its users are patients and their proxies, never staff (clients.yaml ``audience: patient``)."""
    return client.get("audience") == "patient"


def _portal_context(form: Any) -> dict[str, Any] | None:
    """The launch context of a patient or proxy sign-in: the patient in context, the user as fhirUser."""
    from sandbox_ehr.ehr_ui import portal_patient_of

    user = form.get("portal_user", "")
    patient = portal_patient_of(user)
    if patient is None:
        return None
    return {"practitioner": None, "fhir_user": user, "patient": patient, "encounter": None,
            "need_patient_banner": False, "smart_style_url": default_style_url(), "intent": None,
            "fhirContext": [], "iss_id": current_iss_id()}


@bp.post("/auth/login")
def login():
    from sandbox_ehr.ehr_ui import resource_exists

    pending_id = request.form.get("pending", "")
    req = authstore.get_pending(pending_id)
    if req is None or req.get("iss_id") != current_iss_id():
        return _error_page("This sign-in request is unknown or has expired. Start the app again.")
    if request.form.get("action") == "deny":
        authstore.delete_pending(pending_id)
        return _redirect_with(req["redirect_uri"], error="access_denied",
                              error_description="The user denied the request", state=req["state"])
    if _patient_facing(clients()[req["client_id"]]):
        context = _portal_context(request.form)
        if context is None:
            return _login_page(pending_id, req, error="Choose who is signing in.", status=400)
        if not authstore.delete_pending(pending_id):
            return _error_page("This sign-in request was already used. Start the app again.")
        code = authstore.create_code(req["client_id"], req["redirect_uri"], req["code_challenge"],
                                     " ".join(req["scope"]), req["nonce"], context)
        return _redirect_with(req["redirect_uri"], code=code, state=req["state"])
    practitioner = request.form.get("practitioner", "")
    patient = request.form.get("patient") or None
    need_patient = "launch/patient" in req["scope"]
    if not practitioner or not resource_exists("Practitioner", practitioner):
        return _login_page(pending_id, req, error="Choose who is signing in.", status=400)
    if need_patient and (not patient or not resource_exists("Patient", patient)):
        return _login_page(pending_id, req, error="Choose a patient.", status=400)
    if not authstore.delete_pending(pending_id):
        return _error_page("This sign-in request was already used. Start the app again.")
    context = {"practitioner": practitioner, "patient": patient if need_patient else None, "encounter": None,
               "need_patient_banner": True, "smart_style_url": default_style_url(), "intent": None,
               "fhirContext": [], "iss_id": current_iss_id()}
    code = authstore.create_code(req["client_id"], req["redirect_uri"], req["code_challenge"],
                                 " ".join(req["scope"]), req["nonce"], context)
    return _redirect_with(req["redirect_uri"], code=code, state=req["state"])


# --- token -------------------------------------------------------------------------------------

class _TokenError(Exception):
    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _token_error(exc: _TokenError) -> Response:
    response = jsonify({"error": exc.error, "error_description": exc.description})
    response.status_code = exc.status
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="sandbox-ehr"'
    return response


@bp.post("/auth/token")
def token() -> Response:
    grants = {"authorization_code": _exchange_code, "refresh_token": _refresh,
              "client_credentials": _client_credentials}
    try:
        client_id = authenticate_client()
        grant_type = request.form.get("grant_type") or ""
        if grant_type not in grants:
            raise _TokenError("unsupported_grant_type",
                              "grant_type must be authorization_code, refresh_token or client_credentials")
        if grant_type not in (clients()[client_id].get("grant_types") or DEFAULT_GRANT_TYPES):
            # RFC 6749 5.2: the authenticated client is not authorized to use this grant type.
            raise _TokenError("unauthorized_client", f"this client is not registered for {grant_type}")
        body = grants[grant_type](client_id)
    except _TokenError as exc:
        return _token_error(exc)
    return jsonify(body)


def _client_credentials(client_id: str) -> dict[str, Any]:
    """SMART Backend Services (App Launch 2.2, backend-services.html): a system token for a registered client.

    The client must have authenticated with a signed JWT assertion (``private_key_jwt``; the assertion's
    checks are in ``_authenticate_assertion``); only ``system/`` scopes are granted, no refresh token, no
    user or patient context, and the token lives at most five minutes.
    """
    client = clients()[client_id]
    if client.get("token_endpoint_auth_method") != "private_key_jwt" or not request.form.get("client_assertion"):
        raise _TokenError("invalid_client", "client_credentials needs a private_key_jwt client assertion", 401)
    personality = current_personality()
    allowed = client.get("system_scopes") or []
    requested = (request.form.get("scope") or "").split()
    if personality.backend_scope_ignored:
        # Epic: the token carries the APIs registered on the client, whatever scope is asked for.
        requested = list(allowed)
    if not requested:
        raise _TokenError("invalid_scope", "scope is required (system/ scopes)")
    granted: list[str] = []
    for scope in requested:
        if scope.startswith("system/") and scope not in granted and personality.accepts_scope(scope) \
                and scope_allowed(scope, allowed):
            granted.append(scope)
    if not granted:
        raise _TokenError("invalid_scope", "none of the requested system/ scopes is registered for this client")
    granted = personality.spell(granted)
    access = authstore.issue_access_token_for_grant(client_id, " ".join(granted), None, None, None,
                                                    SYSTEM_TOKEN_LIFETIME, None, iss_id=current_iss_id())
    return {"access_token": access, "token_type": "bearer", "expires_in": SYSTEM_TOKEN_LIFETIME,
            "scope": " ".join(granted)}


def authenticate_client() -> str:
    """Authenticate per the client's registration; returns its client_id or raises invalid_client."""
    form = request.form
    assertion = form.get("client_assertion")
    basic = request.authorization if request.authorization and request.authorization.type == "basic" else None
    methods_used = sum(bool(x) for x in (assertion, basic, form.get("client_secret")))
    if methods_used > 1:
        raise _TokenError("invalid_request", "use exactly one client authentication method")
    if assertion or form.get("client_assertion_type"):
        return _authenticate_assertion(form.get("client_assertion_type"), assertion, form.get("client_id"))
    if basic:
        # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding.
        client_id, secret = unquote(basic.username or ""), unquote(basic.password or "")
        if form.get("client_id") and form.get("client_id") != client_id:
            raise _TokenError("invalid_client", "client_id does not match the Authorization header", 401)
        return _check_secret(client_id, secret, status=401)
    client_id = form.get("client_id", "")
    if form.get("client_secret"):
        return _check_secret(client_id, form["client_secret"], status=400)
    client = clients().get(client_id)
    if client is None:
        raise _TokenError("invalid_client", "unknown client", 401)
    if client.get("token_endpoint_auth_method", "none") != "none":
        raise _TokenError("invalid_client", "this client must authenticate", 401)
    return client_id


def _check_secret(client_id: str, secret: str, status: int) -> str:
    client = clients().get(client_id)
    expected = (client or {}).get("client_secret")
    if not client or client.get("token_endpoint_auth_method") != "client_secret" or not expected \
            or not hmac.compare_digest(secret.encode(), str(expected).encode()):
        raise _TokenError("invalid_client", "client authentication failed", status)
    return client_id


def _authenticate_assertion(assertion_type: str | None, assertion: str | None, form_client_id: str | None) -> str:
    if assertion_type != CLIENT_ASSERTION_TYPE or not assertion:
        raise _TokenError("invalid_client", f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}", 401)
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _TokenError("invalid_client", "client_assertion is not a JWT", 401) from None
    alg = header.get("alg")
    if not header.get("kid"):
        # SMART asymmetric client auth: the JWT header names the signing key (kid is required).
        raise _TokenError("invalid_client", "client_assertion header must carry kid", 401)
    if alg not in ASSERTION_ALGS:
        raise _TokenError("invalid_client", "client_assertion must be signed with RS384 or ES384", 401)
    client_id = unverified.get("iss")
    client = clients().get(client_id) if isinstance(client_id, str) else None
    if client is None or client.get("token_endpoint_auth_method") != "private_key_jwt":
        raise _TokenError("invalid_client", "unknown client or not registered for private_key_jwt", 401)
    if form_client_id and form_client_id != client_id:
        raise _TokenError("invalid_client", "client_id does not match the assertion", 401)
    keys = _client_keys(client, header.get("kid"), alg)
    if not keys:
        raise _TokenError("invalid_client", "no registered key matches the assertion's kid and alg", 401)
    claims = None
    for key in keys:
        try:
            claims = jwt.decode(assertion, key, algorithms=[alg], audience=token_endpoint(), issuer=client_id,
                                leeway=CLOCK_SKEW, options={"require": ["iss", "sub", "aud", "exp", "jti"]})
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise _TokenError("invalid_client", f"client_assertion rejected: {exc}", 401) from None
    if claims is None:
        raise _TokenError("invalid_client", "client_assertion signature does not verify", 401)
    if claims["sub"] != client_id:
        raise _TokenError("invalid_client", "client_assertion sub must equal iss (the client_id)", 401)
    if claims["exp"] > authstore.now() + ASSERTION_MAX_LIFETIME + CLOCK_SKEW:
        raise _TokenError("invalid_client", "client_assertion exp is more than five minutes ahead", 401)
    if not authstore.remember_jti(client_id, str(claims["jti"]), int(claims["exp"])):
        raise _TokenError("invalid_client", "client_assertion jti was already used", 401)
    return client_id


_jwks_uri_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}


def _client_keys(client: dict[str, Any], kid: str | None, alg: str) -> list[Any]:
    """Registered public keys usable for ``alg`` (matching ``kid`` when the header names one)."""
    jwk_list = list((client.get("jwks") or {}).get("keys") or [])
    uri = client.get("jwks_uri")
    if uri:
        cached = _jwks_uri_cache.get(uri)
        if not cached or cached[0] < time.monotonic() or (kid and all(k.get("kid") != kid for k in cached[1])):
            try:
                resp = requests.get(uri, timeout=5)
                resp.raise_for_status()
                cached = (time.monotonic() + 300, list(resp.json().get("keys") or []))
                _jwks_uri_cache[uri] = cached
            except (requests.RequestException, ValueError):
                cached = cached or (0.0, [])
        jwk_list.extend(cached[1])
    want_kty = "RSA" if alg.startswith("RS") else "EC"
    keys = []
    for jwk in jwk_list:
        if kid and jwk.get("kid") != kid:
            continue
        if jwk.get("kty") != want_kty or jwk.get("alg") not in (None, alg):
            continue
        try:
            keys.append(jwt.PyJWK(jwk, algorithm=alg).key)
        except jwt.PyJWTError:
            continue
    return keys


def _verify_pkce(verifier: str | None, challenge: str) -> bool:
    if not verifier or not _PKCE.match(verifier):
        return False
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(digest, challenge)


def _exchange_code(client_id: str) -> dict[str, Any]:
    code = request.form.get("code", "")
    try:
        record = authstore.consume_code(code) if code else None
    except authstore.CodeReplayed:
        raise _TokenError("invalid_grant", "authorization code was already used; its tokens are revoked") from None
    if record is None:
        raise _TokenError("invalid_grant", "authorization code is unknown or expired")
    if record["client_id"] != client_id:
        raise _TokenError("invalid_grant", "authorization code was issued to another client")
    if record["context"].get("iss_id") != current_iss_id():
        raise _TokenError("invalid_grant", "authorization code was issued under another iss")
    if request.form.get("redirect_uri") != record["redirect_uri"]:
        raise _TokenError("invalid_grant", "redirect_uri does not match the authorization request")
    if not _verify_pkce(request.form.get("code_verifier"), record["code_challenge"]):
        raise _TokenError("invalid_grant", "code_verifier does not match code_challenge (PKCE S256)")
    return _issue(client_id, record["grant_id"], record["scope"].split(), record["context"], record["nonce"],
                  with_id_token=True)


def _refresh(client_id: str) -> dict[str, Any]:
    presented = request.form.get("refresh_token", "")
    try:
        record = authstore.consume_refresh_token(presented) if presented else None
    except authstore.RefreshReplayed:
        _refresh_counts().add("replayed")
        raise _TokenError("invalid_grant", "refresh token was already used; the grant is revoked") from None
    if record is None:
        raise _TokenError("invalid_grant", "refresh token is unknown, revoked or expired")
    _refresh_counts().add("used")
    if record["client_id"] != client_id:
        authstore.revoke_grant(record["grant_id"])
        raise _TokenError("invalid_grant", "refresh token was issued to another client")
    if record["context"].get("iss_id") != current_iss_id():
        raise _TokenError("invalid_grant", "refresh token was issued under another iss")
    scope = record["scope"].split()
    asked = request.form.get("scope")
    if asked:
        narrower = asked.split()
        if any(s not in scope for s in narrower):
            raise _TokenError("invalid_scope", "a refresh may only narrow the original scope")
        scope = narrower
    return _issue(client_id, record["grant_id"], scope, record["context"], None, with_id_token=False)


def _refresh_counts() -> RefreshCounts:
    return current_app.extensions["sandbox_refresh_counts"]


def _issue(client_id: str, grant_id: str, scope: list[str], context: dict[str, Any], nonce: str | None,
           with_id_token: bool) -> dict[str, Any]:
    practitioner = context.get("practitioner")
    # The EHR's own spelling of what it granted (Epic: SMART v1), enforced as spelled.
    scope = current_personality().spell(scope)
    # Access tokens carry fhirUser as a relative reference ("Practitioner/<id>") for the FHIR API's checks;
    # the id_token carries the absolute URL, as SMART requires.
    fhir_user_ref = context.get("fhir_user") or (f"Practitioner/{practitioner}" if practitioner else None)
    access = authstore.issue_access_token_for_grant(
        client_id, " ".join(scope), context.get("patient"), context.get("encounter"), fhir_user_ref,
        authstore.ACCESS_TOKEN_LIFETIME, grant_id, iss_id=context.get("iss_id"))
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                            "expires_in": authstore.ACCESS_TOKEN_LIFETIME, "scope": " ".join(scope)}
    if "offline_access" in scope or "online_access" in scope:
        lifetime = authstore.REFRESH_LIFETIME_OFFLINE if "offline_access" in scope \
            else authstore.REFRESH_LIFETIME_ONLINE
        body["refresh_token"] = authstore.issue_refresh_token(grant_id, client_id, " ".join(scope), context,
                                                              lifetime)
    if with_id_token and "openid" in scope and fhir_user_ref:
        body["id_token"] = _id_token(client_id, fhir_user_ref, nonce, scope)
    if context.get("patient"):
        body["patient"] = context["patient"]
    if context.get("encounter"):
        body["encounter"] = context["encounter"]
    if context.get("fhirContext"):
        body["fhirContext"] = context["fhirContext"]
    body["need_patient_banner"] = bool(context.get("need_patient_banner", True))
    if context.get("smart_style_url"):
        body["smart_style_url"] = context["smart_style_url"]
    if context.get("intent"):
        body["intent"] = context["intent"]
    return body


def _id_token(client_id: str, user: str, nonce: str | None, scope: list[str]) -> str:
    """``user``: the signed-in user's ``Type/id`` (a Practitioner, or a patient or proxy on the portal side)."""
    kid, key = _signing_key()
    issued = authstore.now()
    fhir_user = f"{issuer()}/{user}"
    claims: dict[str, Any] = {"iss": issuer(), "sub": user.split("/", 1)[1], "aud": client_id, "iat": issued,
                              "exp": issued + ID_TOKEN_LIFETIME}
    if nonce:
        claims["nonce"] = nonce
    if "fhirUser" in scope:
        claims["fhirUser"] = fhir_user
    if "profile" in scope:
        claims["profile"] = fhir_user  # SMART v1 name of the same claim
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
