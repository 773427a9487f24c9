"""The sandbox's SMART App Launch 2.2 authorization server, through the Flask test client."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest

from sandbox_ehr import authstore

BASE = "http://ehr.test"
ISS = BASE + "/fhir"
TOKEN_URL = BASE + "/auth/token"
REDIRECT = "http://127.0.0.1:5000/callback"
SECRET = "sandbox-secret-not-for-production"
KEYS = Path(__file__).resolve().parents[2] / "sandbox_ehr" / "keys"
EHR_SCOPE = "launch openid fhirUser patient/*.rs"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def new_launch(app, patient="pat-alice", encounter="enc-alice-bwh", practitioner="prac-avery", **extra) -> str:
    with app.app_context():
        return authstore.create_launch({"practitioner": practitioner, "patient": patient, "encounter": encounter,
                                        "need_patient_banner": True, **extra})


def authorize_params(challenge: str, client_id="ipv-screen-public", scope=EHR_SCOPE, launch=None, **over) -> dict:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
              "state": "st-" + secrets.token_hex(4), "aud": ISS, "code_challenge": challenge,
              "code_challenge_method": "S256", "nonce": "n-" + secrets.token_hex(4)}
    if launch:
        params["launch"] = launch
    params.update(over)
    return {k: v for k, v in params.items() if v is not None}


def redirect_query(resp) -> dict[str, str]:
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    loc = urlsplit(resp.headers["Location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(loc.query).items()}


def get_code(fhir, app, client_id="ipv-screen-public", scope=EHR_SCOPE, launch="auto", **over) -> tuple[str, str, dict]:
    verifier, challenge = pkce()
    if launch == "auto":
        launch = new_launch(app)
    params = authorize_params(challenge, client_id, scope, launch, **over)
    query = redirect_query(fhir.get("/auth/authorize?" + urlencode(params)))
    assert "code" in query, query
    assert query["state"] == params["state"]
    return query["code"], verifier, params


def assertion(client_id="ipv-screen-jwt", alg="RS384", kid="sandbox-rs384", key_file="rs384-private.pem",
              aud=TOKEN_URL, exp_in=120, jti=None, **claims) -> str:
    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in, "iat": now,
            "jti": jti or uuid.uuid4().hex, **claims}
    key = (KEYS / key_file).read_text()
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"} if kid else {"typ": "JWT"})


def client_auth(kind: str) -> tuple[dict, dict]:
    """(form fields, headers) for each client authentication kind."""
    if kind == "public":
        return {"client_id": "ipv-screen-public"}, {}
    if kind == "secret-basic":
        basic = base64.b64encode(f"ipv-screen-secret:{SECRET}".encode()).decode()
        return {}, {"Authorization": f"Basic {basic}"}
    if kind == "secret-post":
        return {"client_id": "ipv-screen-secret", "client_secret": SECRET}, {}
    alg, kid, key = {"jwt-rs384": ("RS384", "sandbox-rs384", "rs384-private.pem"),
                     "jwt-es384": ("ES384", "sandbox-es384", "es384-private.pem")}[kind]
    return {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(alg=alg, kid=kid, key_file=key)}, {}


CLIENT_IDS = {"public": "ipv-screen-public", "secret-basic": "ipv-screen-secret", "secret-post": "ipv-screen-secret",
              "jwt-rs384": "ipv-screen-jwt", "jwt-es384": "ipv-screen-jwt"}


def exchange(fhir, code, verifier, kind="public", **more):
    form, headers = client_auth(kind)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            **form, **more}
    return fhir.post("/auth/token", data={k: v for k, v in data.items() if v is not None}, headers=headers)


def jwks_keys(fhir) -> dict[str, object]:
    return {k["kid"]: jwt.PyJWK(k).key for k in fhir.get("/auth/jwks").json["keys"]}


# --- discovery ---------------------------------------------------------------------------------------------

def test_smart_configuration(fhir):
    r = fhir.get("/fhir/.well-known/smart-configuration")
    assert r.status_code == 200
    conf = r.json
    assert conf["issuer"] == ISS
    assert conf["jwks_uri"] == BASE + "/auth/jwks"
    assert conf["authorization_endpoint"] == BASE + "/auth/authorize"
    assert conf["token_endpoint"] == TOKEN_URL
    assert set(conf["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert {"client_secret_basic", "private_key_jwt"} <= set(conf["token_endpoint_auth_methods_supported"])
    assert {"openid", "fhirUser", "launch", "launch/patient", "offline_access"} <= set(conf["scopes_supported"])
    assert {"launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
            "client-confidential-asymmetric", "context-ehr-patient", "context-ehr-encounter",
            "context-standalone-patient", "sso-openid-connect", "permission-v1", "permission-v2",
            "authorize-post"} <= set(conf["capabilities"])
    assert r.headers["Cache-Control"].startswith("no-store")


def test_openid_configuration_matches_issuer_and_jwks(fhir):
    conf = fhir.get("/fhir/.well-known/openid-configuration").json
    assert conf["issuer"] == ISS and conf["jwks_uri"] == BASE + "/auth/jwks"
    assert "RS256" in conf["id_token_signing_alg_values_supported"]
    keys = fhir.get("/auth/jwks").json["keys"]
    assert keys and all(k["kty"] == "RSA" and k["alg"] == "RS256" and "d" not in k for k in keys)


# --- authorize ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, error", [
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"aud": "https://evil.example/fhir"}, "invalid_request"),
    ({"aud": None}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "system/*.cruds"}, "invalid_scope"),
    ({"launch": "no-such-launch"}, "invalid_request"),
    ({"scope": "openid fhirUser patient/*.rs"}, "invalid_scope"),  # EHR launch without the launch scope
])
def test_authorize_errors_redirect_with_error(fhir, sandbox_app, override, error):
    _, challenge = pkce()
    params = authorize_params(challenge, launch=new_launch(sandbox_app))
    params.update(override)
    query = redirect_query(fhir.get("/auth/authorize?" + urlencode({k: v for k, v in params.items() if v})))
    assert query["error"] == error
    assert "code" not in query
    assert query["state"] == params["state"]


@pytest.mark.parametrize("override", [{"client_id": "unknown"}, {"redirect_uri": "https://evil.example/cb"},
                                      {"redirect_uri": None}])
def test_authorize_never_redirects_for_unknown_client_or_redirect_uri(fhir, sandbox_app, override):
    _, challenge = pkce()
    params = {**authorize_params(challenge, launch=new_launch(sandbox_app)), **override}
    r = fhir.get("/auth/authorize?" + urlencode({k: v for k, v in params.items() if v}))
    assert r.status_code == 400
    assert "Location" not in r.headers


def test_authorize_accepts_post(fhir, sandbox_app):
    _, challenge = pkce()
    r = fhir.post("/auth/authorize", data=authorize_params(challenge, launch=new_launch(sandbox_app)))
    assert "code" in redirect_query(r)


# --- token: PKCE and codes ---------------------------------------------------------------------------------

def test_wrong_or_missing_code_verifier_is_invalid_grant(fhir, sandbox_app):
    code, _, _ = get_code(fhir, sandbox_app)
    r = exchange(fhir, code, pkce()[0])
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"
    code, _, _ = get_code(fhir, sandbox_app)
    r = exchange(fhir, code, None)
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"


def test_redirect_uri_must_match(fhir, sandbox_app):
    code, verifier, _ = get_code(fhir, sandbox_app)
    r = exchange(fhir, code, verifier, redirect_uri="http://127.0.0.1:5001/callback")
    assert r.json["error"] == "invalid_grant"


def test_replayed_code_fails_and_revokes_the_first_tokens(fhir, sandbox_app):
    code, verifier, _ = get_code(fhir, sandbox_app)
    first = exchange(fhir, code, verifier)
    assert first.status_code == 200
    bearer = {"Authorization": f"Bearer {first.json['access_token']}"}
    assert fhir.get("/fhir/Patient/pat-alice", headers=bearer).status_code == 200
    again = exchange(fhir, code, verifier)
    assert again.status_code == 400 and again.json["error"] == "invalid_grant"
    assert fhir.get("/fhir/Patient/pat-alice", headers=bearer).status_code == 401


def test_code_of_another_client_is_refused(fhir, sandbox_app):
    code, verifier, _ = get_code(fhir, sandbox_app, client_id="ipv-screen-secret")
    r = exchange(fhir, code, verifier, kind="public")
    assert r.json["error"] == "invalid_grant"


# --- token: each client kind and the launch context --------------------------------------------------------

@pytest.mark.parametrize("kind", list(CLIENT_IDS))
def test_ehr_launch_token_response_for_each_client_kind(fhir, sandbox_app, kind):
    code, verifier, params = get_code(fhir, sandbox_app, client_id=CLIENT_IDS[kind])
    r = exchange(fhir, code, verifier, kind)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert body["scope"].split() == EHR_SCOPE.split()
    assert body["patient"] == "pat-alice" and body["encounter"] == "enc-alice-bwh"
    assert body["fhirContext"] == [{"reference": "Encounter/enc-alice-bwh"}]
    assert body["need_patient_banner"] is True
    assert body["smart_style_url"] == BASE + "/auth/smart-style.json"
    assert "refresh_token" not in body  # neither offline_access nor online_access was asked
    assert r.headers["Cache-Control"] == "no-store"
    # The access token works at the FHIR API, limited to the launch patient.
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert fhir.get("/fhir/Encounter/enc-alice-bwh", headers=bearer).status_code == 200
    assert fhir.get("/fhir/Patient/pat-carmen", headers=bearer).status_code == 403


def test_id_token_claims_and_signature(fhir, sandbox_app):
    code, verifier, params = get_code(fhir, sandbox_app, client_id="ipv-screen-public")
    id_token = exchange(fhir, code, verifier).json["id_token"]
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "RS256"
    key = jwks_keys(fhir)[header["kid"]]
    claims = jwt.decode(id_token, key, algorithms=["RS256"], audience="ipv-screen-public", issuer=ISS)
    assert claims["fhirUser"] == ISS + "/Practitioner/prac-avery"
    assert claims["nonce"] == params["nonce"]
    assert claims["sub"] and claims["exp"] > claims["iat"]
    # A tampered token does not verify against the published key.
    head, payload, sig = id_token.split(".")
    forged = jwt.utils.base64url_encode(jwt.utils.base64url_decode(payload).replace(b"prac-avery", b"prac-devon"))
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{forged.decode()}.{sig}", key, algorithms=["RS256"], audience="ipv-screen-public")


def test_no_id_token_without_openid(fhir, sandbox_app):
    code, verifier, _ = get_code(fhir, sandbox_app, scope="launch patient/*.rs")
    body = exchange(fhir, code, verifier).json
    assert "id_token" not in body and body["patient"] == "pat-alice"


def test_launch_without_encounter_and_without_banner(fhir, sandbox_app):
    launch = new_launch(sandbox_app, patient="pat-kim", encounter=None, need_patient_banner=False)
    code, verifier, _ = get_code(fhir, sandbox_app, launch=launch)
    body = exchange(fhir, code, verifier).json
    assert body["patient"] == "pat-kim"
    assert "encounter" not in body
    assert body["need_patient_banner"] is False


@pytest.mark.parametrize("bad, needle", [
    ({"client_secret": "wrong"}, "invalid_client"),
    ({"client_id": "ipv-screen-secret"}, "invalid_client"),  # confidential client without authentication
    ({"client_id": "nobody"}, "invalid_client"),
])
def test_bad_client_authentication(fhir, sandbox_app, bad, needle):
    code, verifier, _ = get_code(fhir, sandbox_app, client_id="ipv-screen-secret")
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            "client_id": "ipv-screen-secret", **bad}
    r = fhir.post("/auth/token", data=data)
    assert r.status_code in (400, 401)
    assert r.json["error"] == needle


def test_wrong_basic_secret_is_401(fhir, sandbox_app):
    code, verifier, _ = get_code(fhir, sandbox_app, client_id="ipv-screen-secret")
    basic = base64.b64encode(b"ipv-screen-secret:wrong").decode()
    r = fhir.post("/auth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                       "code_verifier": verifier}, headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 401 and r.json["error"] == "invalid_client"
    assert "WWW-Authenticate" in r.headers


@pytest.mark.parametrize("claims", [
    {"aud": "http://other.example/token"},
    {"exp_in": 3600},  # more than five minutes ahead
    {"exp_in": -60},  # expired
    {"kid": "unknown-kid"},
    {"kid": None},  # SMART requires kid in the header
    {"key_file": "es384-private.pem", "alg": "ES384"},  # signed with the wrong key for the kid
    {"sub": "someone-else"},
    {"alg": "RS256"},  # SMART: RS384 or ES384 only
])
def test_bad_client_assertions_are_refused(fhir, sandbox_app, claims):
    code, verifier, _ = get_code(fhir, sandbox_app, client_id="ipv-screen-jwt")
    r = exchange(fhir, code, verifier, "public", client_id=None,
                 client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                 client_assertion=assertion(**claims))
    assert r.status_code == 401 and r.json["error"] == "invalid_client"


def test_client_assertion_jti_replay_is_refused(fhir, sandbox_app):
    signed = assertion(jti="same-jti")
    fields = {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
              "client_assertion": signed, "client_id": None}
    code, verifier, _ = get_code(fhir, sandbox_app, client_id="ipv-screen-jwt")
    assert exchange(fhir, code, verifier, "public", **fields).status_code == 200
    code, verifier, _ = get_code(fhir, sandbox_app, client_id="ipv-screen-jwt")
    r = exchange(fhir, code, verifier, "public", **fields)
    assert r.status_code == 401 and "jti" in r.json["error_description"]


# --- refresh -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("access", ["offline_access", "online_access"])
def test_refresh_rotates_and_detects_reuse(fhir, sandbox_app, access):
    code, verifier, _ = get_code(fhir, sandbox_app, client_id="ipv-screen-secret", scope=f"{EHR_SCOPE} {access}")
    first = exchange(fhir, code, verifier, "secret-post").json
    assert first["refresh_token"]
    form, headers = client_auth("secret-basic")
    r = fhir.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                  headers=headers)
    assert r.status_code == 200, r.json
    second = r.json
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["patient"] == "pat-alice" and second["scope"] == first["scope"]
    bearer = {"Authorization": f"Bearer {second['access_token']}"}
    assert fhir.get("/fhir/Patient/pat-alice", headers=bearer).status_code == 200
    # The rotated refresh token comes back: theft signal, the whole grant is revoked.
    reuse = fhir.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                      headers=headers)
    assert reuse.status_code == 400 and reuse.json["error"] == "invalid_grant"
    assert fhir.get("/fhir/Patient/pat-alice", headers=bearer).status_code == 401


def test_refresh_may_only_narrow_scope(fhir, sandbox_app):
    code, verifier, _ = get_code(fhir, sandbox_app, scope=f"{EHR_SCOPE} offline_access")
    tokens = exchange(fhir, code, verifier).json
    wider = fhir.post("/auth/token", data={"grant_type": "refresh_token", "client_id": "ipv-screen-public",
                                           "refresh_token": tokens["refresh_token"], "scope": "user/*.cruds"})
    assert wider.json["error"] == "invalid_scope"
    code, verifier, _ = get_code(fhir, sandbox_app, scope=f"{EHR_SCOPE} offline_access")
    tokens = exchange(fhir, code, verifier).json
    narrower = fhir.post("/auth/token", data={"grant_type": "refresh_token", "client_id": "ipv-screen-public",
                                              "refresh_token": tokens["refresh_token"],
                                              "scope": "launch patient/*.rs"})
    assert narrower.status_code == 200 and narrower.json["scope"] == "launch patient/*.rs"


def test_refresh_token_of_another_client_is_refused(fhir, sandbox_app):
    code, verifier, _ = get_code(fhir, sandbox_app, scope=f"{EHR_SCOPE} offline_access")
    tokens = exchange(fhir, code, verifier).json
    form, headers = client_auth("secret-basic")
    r = fhir.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                  headers=headers)
    assert r.json["error"] == "invalid_grant"


def test_unsupported_grant_type(fhir):
    r = fhir.post("/auth/token", data={"grant_type": "password", "client_id": "ipv-screen-public"})
    assert r.status_code == 400 and r.json["error"] == "unsupported_grant_type"
    # client_credentials exists (Backend Services) but a public client is not registered for it (RFC 6749 5.2).
    r = fhir.post("/auth/token", data={"grant_type": "client_credentials", "client_id": "ipv-screen-public"})
    assert r.status_code == 400 and r.json["error"] == "unauthorized_client"


# --- scopes ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("requested, granted, read_status", [
    ("launch patient/Patient.read", "launch patient/Patient.read", 200),  # v1
    ("launch patient/Patient.rs", "launch patient/Patient.rs", 200),  # v2
    ("launch patient/Patient.r", "launch patient/Patient.r", 200),
    ("launch patient/Encounter.rs system/*.cruds", "launch patient/Encounter.rs", 403),  # system/ not registered
])
def test_v1_and_v2_scopes_are_granted_and_enforced(fhir, sandbox_app, requested, granted, read_status):
    code, verifier, _ = get_code(fhir, sandbox_app, scope=requested)
    body = exchange(fhir, code, verifier).json
    assert body["scope"] == granted
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert fhir.get("/fhir/Patient/pat-alice", headers=bearer).status_code == read_status


# --- standalone launch -------------------------------------------------------------------------------------

def _standalone(fhir, scope="launch/patient openid fhirUser patient/*.rs"):
    verifier, challenge = pkce()
    params = authorize_params(challenge, scope=scope)
    page = fhir.get("/auth/authorize?" + urlencode(params))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    pending = html.split('name="pending" value="')[1].split('"')[0]
    return verifier, params, html, pending


def test_standalone_launch_with_patient_picker(fhir, sandbox_app):
    verifier, params, html, pending = _standalone(fhir)
    assert 'id="patient"' in html and "Social worker" in html
    r = fhir.post("/auth/login", data={"pending": pending, "practitioner": "prac-devon", "patient": "pat-carmen",
                                       "action": "approve"})
    query = redirect_query(r)
    assert query["state"] == params["state"]
    body = exchange(fhir, query["code"], verifier).json
    assert body["patient"] == "pat-carmen" and "encounter" not in body
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert claims["fhirUser"] == ISS + "/Practitioner/prac-devon"
    # The pending login is single use.
    again = fhir.post("/auth/login", data={"pending": pending, "practitioner": "prac-devon", "patient": "pat-carmen"})
    assert again.status_code == 400


def test_standalone_needs_a_patient_when_asked(fhir):
    _, _, _, pending = _standalone(fhir)
    r = fhir.post("/auth/login", data={"pending": pending, "practitioner": "prac-devon", "action": "approve"})
    assert r.status_code == 400
    assert 'id="login-error"' in r.get_data(as_text=True)


def test_standalone_without_patient_scope_has_no_picker(fhir):
    verifier, params, html, pending = _standalone(fhir, scope="openid fhirUser user/*.rs")
    assert 'id="patient"' not in html
    query = redirect_query(fhir.post("/auth/login", data={"pending": pending, "practitioner": "prac-avery"}))
    body = exchange(fhir, query["code"], verifier).json
    assert "patient" not in body
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert fhir.get("/fhir/Patient/pat-carmen", headers=bearer).status_code == 200  # user/ scope: any patient


def test_standalone_deny_returns_access_denied(fhir):
    _, params, _, pending = _standalone(fhir)
    query = redirect_query(fhir.post("/auth/login", data={"pending": pending, "action": "deny"}))
    assert query["error"] == "access_denied" and query["state"] == params["state"]


# --- private_key_jwt with a registered jwks_uri ------------------------------------------------------------

def test_private_key_jwt_keys_from_jwks_uri(tmp_path):
    """A client registered with jwks_uri (no inline keys): the sandbox fetches the app's published JWKS."""
    import yaml
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from flask import Flask, jsonify

    from sandbox_ehr.app import create_sandbox_app
    from sandbox_ehr.harness.live import LiveServer

    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(
        load_pem_public_key((KEYS / "rs384-public.pem").read_bytes()), as_dict=True)
    jwk.update(kid="sandbox-rs384", alg="RS384", use="sig")
    keys_app = Flask("jwks")
    keys_app.add_url_rule("/jwks", "jwks", lambda: jsonify({"keys": [jwk]}))
    keys_server = LiveServer(keys_app).start()
    try:
        clients = tmp_path / "clients.yaml"
        clients.write_text(yaml.safe_dump({"clients": {"ipv-screen-jwt": {
            "name": "jwks_uri client", "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": keys_server.url + "/jwks", "redirect_uris": ["http://127.0.0.1:*/callback"],
            "scopes": ["launch", "openid", "fhirUser", "patient/*.rs"]}}}))
        app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / "s.db"),
                                  "SANDBOX_BASE_URL": BASE, "SANDBOX_CLIENTS": str(clients)})
        fhir = app.test_client()
        code, verifier, _ = get_code(fhir, app, client_id="ipv-screen-jwt")
        r = exchange(fhir, code, verifier, "jwt-rs384", client_id=None)
        assert r.status_code == 200, r.json
        # A key the app does not publish is refused.
        code, verifier, _ = get_code(fhir, app, client_id="ipv-screen-jwt")
        r = exchange(fhir, code, verifier, "jwt-es384", client_id=None)
        assert r.status_code == 401 and r.json["error"] == "invalid_client"
        app.extensions["sandbox_store"].close()
    finally:
        keys_server.stop()
