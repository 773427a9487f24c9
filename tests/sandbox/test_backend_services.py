"""SMART Backend Services in the sandbox auth server (SMART App Launch 2.2, backend-services.html):
client_credentials with a private_key_jwt assertion, system/ scopes only, no refresh token, five-minute tokens."""

from __future__ import annotations

import pytest

from tests.sandbox.test_auth_server import assertion, client_auth

CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def backend_token(fhir, scope="system/DocumentReference.rs system/DocumentReference.c", **form):
    data = {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": CLIENT_ASSERTION, "client_assertion": assertion(), **form}
    return fhir.post("/auth/token", data={k: v for k, v in data.items() if v is not None})


def test_client_credentials_issues_a_short_system_token(fhir):
    r = backend_token(fhir)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["token_type"].lower() == "bearer" and body["expires_in"] <= 300
    assert body["scope"] == "system/DocumentReference.rs system/DocumentReference.c"
    assert "refresh_token" not in body and "patient" not in body and "id_token" not in body
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    # A system token reads any patient's data and may create, as its scopes say.
    assert fhir.get("/fhir/DocumentReference?patient=pat-alice", headers=bearer).status_code == 200
    assert fhir.get("/fhir/Patient/pat-alice", headers=bearer).status_code == 403  # not granted


def test_only_system_scopes_are_granted(fhir):
    r = backend_token(fhir, scope="launch patient/*.rs user/*.cruds system/Patient.rs")
    assert r.status_code == 200 and r.json["scope"] == "system/Patient.rs"
    r = backend_token(fhir, scope="patient/*.rs")
    assert r.status_code == 400 and r.json["error"] == "invalid_scope"


@pytest.mark.parametrize("kind", ["public", "secret-basic", "secret-post"])
def test_client_credentials_needs_an_asymmetric_client(fhir, kind):
    form, headers = client_auth(kind)
    r = fhir.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/Patient.rs", **form},
                  headers=headers)
    assert r.status_code in (400, 401) and r.json["error"] in ("unauthorized_client", "invalid_client")


def test_bad_or_replayed_assertion_is_refused(fhir):
    jwt_ = assertion()
    first = backend_token(fhir, client_assertion=jwt_)
    assert first.status_code == 200
    again = backend_token(fhir, client_assertion=jwt_)
    assert again.status_code == 401 and again.json["error"] == "invalid_client"
    late = backend_token(fhir, client_assertion=assertion(exp_in=3600))
    assert late.status_code == 401 and late.json["error"] == "invalid_client"


def test_authorization_code_flow_never_grants_system_scopes(fhir, sandbox_app):
    from tests.sandbox.test_auth_server import exchange, get_code

    code, verifier, _ = get_code(fhir, sandbox_app, scope="launch patient/*.rs system/*.cruds")
    body = exchange(fhir, code, verifier).json
    assert body["scope"] == "launch patient/*.rs"
