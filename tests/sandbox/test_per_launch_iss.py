"""Per-launch iss: each standalone launch gets a FHIR base of its own, and works end to end under it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest

from sandbox_ehr.app import create_sandbox_app
from tests.sandbox.test_auth_server import ISS, REDIRECT, authorize_params, pkce, redirect_query

STANDALONE_SCOPE = "openid fhirUser user/*.rs offline_access"


@pytest.fixture
def per_launch_app(tmp_path):
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / "sandbox.db"),
                              "APP_LAUNCH_URL": "http://app.test/launch", "SANDBOX_BASE_URL": "http://ehr.test",
                              "SANDBOX_PER_LAUNCH_ISS": True})
    yield app
    app.extensions["sandbox_store"].close()


@pytest.fixture
def client(per_launch_app):
    return per_launch_app.test_client()


def standalone_iss(client) -> str:
    """What the launcher hands the app: ``POST /ehr/standalone`` -> the app's standalone URL with ``iss``."""
    r = client.post("/ehr/standalone")
    assert r.status_code == 303
    target = urlsplit(r.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == "http://app.test/launch/standalone"
    return parse_qs(target.query)["iss"][0]


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def sign_in(client, iss: str, practitioner: str = "prac-harper") -> tuple[dict, dict]:
    """A standalone launch against ``iss`` using only what its discovery document names: (config, tokens)."""
    conf = client.get(iss + "/.well-known/smart-configuration").json
    verifier, challenge = pkce()
    params = authorize_params(challenge, scope=STANDALONE_SCOPE, aud=iss)
    page = client.get(conf["authorization_endpoint"] + "?" + urlencode(params))
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    html = page.get_data(as_text=True)
    action = html.split('method="post" action="')[1].split('"')[0]
    pending = html.split('name="pending" value="')[1].split('"')[0]
    query = redirect_query(client.post(action, data={"pending": pending, "practitioner": practitioner,
                                                     "action": "approve"}))
    assert query["state"] == params["state"]
    r = client.post(conf["token_endpoint"], data={"grant_type": "authorization_code", "code": query["code"],
                                                  "redirect_uri": REDIRECT, "code_verifier": verifier,
                                                  "client_id": "ipv-screen-public"})
    assert r.status_code == 200, r.json
    return conf, r.json


def test_two_standalone_launches_get_their_own_iss_and_each_works_end_to_end(client):
    first, second = standalone_iss(client), standalone_iss(client)
    assert first != second
    for iss in (first, second):
        root = iss.removesuffix("/fhir")
        assert iss.startswith("http://ehr.test/l/") and iss != ISS
        conf, tokens = sign_in(client, iss)
        assert conf["issuer"] == iss
        assert (conf["authorization_endpoint"], conf["token_endpoint"], conf["jwks_uri"]) == \
            (root + "/auth/authorize", root + "/auth/token", root + "/auth/jwks")
        assert client.get(iss + "/.well-known/openid-configuration").json["issuer"] == iss
        security = client.get(iss + "/metadata").json["rest"][0]["security"]["extension"][0]["extension"]
        assert {e["url"]: e["valueUri"] for e in security} == {"authorize": root + "/auth/authorize",
                                                              "token": root + "/auth/token"}
        # The id_token is signed by this iss's JWKS and names the user under this iss.
        keys = {k["kid"]: jwt.PyJWK(k).key for k in client.get(conf["jwks_uri"]).json["keys"]}
        kid = jwt.get_unverified_header(tokens["id_token"])["kid"]
        claims = jwt.decode(tokens["id_token"], keys[kid], algorithms=["RS256"], audience="ipv-screen-public",
                            issuer=iss)
        assert claims["fhirUser"] == iss + "/Practitioner/prac-harper"
        # The FHIR API answers under this iss, with full URLs under it.
        roles = client.get(iss + "/PractitionerRole?practitioner=prac-harper", headers=bearer(tokens)).json
        assert [e["fullUrl"] for e in roles["entry"]] == [iss + "/PractitionerRole/role-harper-bwh"]
        # A refresh at this iss's token endpoint works, and its access token too.
        refreshed = client.post(conf["token_endpoint"], data={"grant_type": "refresh_token",
                                                              "refresh_token": tokens["refresh_token"],
                                                              "client_id": "ipv-screen-public"})
        assert refreshed.status_code == 200, refreshed.json
        assert client.get(iss + "/Patient/pat-nora", headers=bearer(refreshed.json)).status_code == 200


def test_tokens_and_codes_are_good_only_under_their_own_iss(client):
    first, second = standalone_iss(client), standalone_iss(client)
    _, tokens = sign_in(client, first)
    assert client.get(first + "/Patient/pat-alice", headers=bearer(tokens)).status_code == 200
    assert client.get(second + "/Patient/pat-alice", headers=bearer(tokens)).status_code == 401
    assert client.get(ISS + "/Patient/pat-alice", headers=bearer(tokens)).status_code == 401
    refresh_elsewhere = client.post(second.removesuffix("/fhir") + "/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "ipv-screen-public"})
    assert refresh_elsewhere.json["error"] == "invalid_grant"
    # A plain-iss token does not open a per-launch iss either.
    _, plain = sign_in(client, ISS)
    assert client.get(first + "/Patient/pat-alice", headers=bearer(plain)).status_code == 401
    assert client.get(ISS + "/Patient/pat-alice", headers=bearer(plain)).status_code == 200


def test_a_code_is_exchanged_only_at_the_iss_that_issued_it(client):
    first, second = standalone_iss(client), standalone_iss(client)
    verifier, challenge = pkce()
    params = authorize_params(challenge, scope=STANDALONE_SCOPE, aud=first)
    html = client.get(first.removesuffix("/fhir") + "/auth/authorize?" + urlencode(params)).get_data(as_text=True)
    pending = html.split('name="pending" value="')[1].split('"')[0]
    # The sign-in started under the first iss cannot be finished under the second.
    assert client.post(second.removesuffix("/fhir") + "/auth/login",
                       data={"pending": pending, "practitioner": "prac-harper"}).status_code == 400
    query = redirect_query(client.post(first.removesuffix("/fhir") + "/auth/login",
                                       data={"pending": pending, "practitioner": "prac-harper"}))
    r = client.post(second.removesuffix("/fhir") + "/auth/token", data={
        "grant_type": "authorization_code", "code": query["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": "ipv-screen-public"})
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"


def test_aud_must_be_the_per_launch_iss(client):
    iss = standalone_iss(client)
    _, challenge = pkce()
    params = authorize_params(challenge, scope=STANDALONE_SCOPE, aud=ISS)
    query = redirect_query(client.get(iss.removesuffix("/fhir") + "/auth/authorize?" + urlencode(params)))
    assert query["error"] == "invalid_request"


def test_ehr_launches_keep_the_plain_iss(client):
    r = client.post("/ehr/launch", data={"practitioner": "prac-indigo", "patient": "pat-nora",
                                         "encounter": "enc-nora-bwh-ed"})
    assert parse_qs(urlsplit(r.headers["Location"]).query)["iss"] == [ISS]


def test_unknown_ids_and_other_pages_under_a_prefix_are_not_found(client):
    iss = standalone_iss(client)
    root = iss.removesuffix("/fhir")
    assert client.get("/l/unknown-launch-id/fhir/metadata").status_code == 404
    assert client.get(root + "/ehr").status_code == 404
    assert client.get(root + "/__faults").status_code == 404
    assert client.get(iss + "/metadata").status_code == 200


def test_off_by_default_the_launcher_hands_out_the_plain_iss(sandbox_app):
    plain = sandbox_app.test_client()
    assert standalone_iss(plain) == ISS
    assert plain.get("/l/any-launch-id/fhir/metadata").status_code == 404


def test_the_mode_can_be_switched_on_a_running_sandbox(sandbox_app):
    client = sandbox_app.test_client()
    sandbox_app.config["SANDBOX_PER_LAUNCH_ISS"] = True
    iss = standalone_iss(client)
    assert iss != ISS and client.get(iss + "/metadata").status_code == 200
    sandbox_app.config["SANDBOX_PER_LAUNCH_ISS"] = False
    assert client.get(iss + "/metadata").status_code == 404


def test_app_standalone_url_can_be_set(tmp_path):
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / "s.db"),
                              "APP_STANDALONE_URL": "https://app.example/start?mode=sw"})
    r = app.test_client().post("/ehr/standalone")
    assert r.headers["Location"].startswith("https://app.example/start?mode=sw&iss=")
    app.extensions["sandbox_store"].close()


def test_simulator_page_offers_the_standalone_launch(client):
    html = client.get("/ehr").get_data(as_text=True)
    assert 'id="standalone-button"' in html and 'action="/ehr/standalone"' in html
    assert "http://app.test/launch/standalone" in html and "per-launch iss is on" in html


def test_outside_a_request_the_iss_is_the_plain_one(sandbox_app):
    """The CDS client and tests issue tokens and name the iss in an app context, with no request."""
    from sandbox_ehr.auth import issuer

    with sandbox_app.app_context():
        assert issuer() == ISS
