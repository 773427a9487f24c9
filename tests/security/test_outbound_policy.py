"""L7: the app calls only hosts derived from the allow-listed iss (plus hosts a deployment lists), https
outside the sandbox, no cross-host redirects, FHIR URLs under the iss base, smart_style_url under the policy."""

from __future__ import annotations

import pytest

from config.current import replace_settings
from fhir.url_policy import OutboundPolicy, safe_relative, under_base
from tests.launch.fakes import FakeEhr
from tests.security.conftest import ROOT, context_of, launch

pytestmark = pytest.mark.security

ISS = FakeEhr.ISS


def _hosts(fake) -> set[str]:
    from urllib.parse import urlsplit

    return {urlsplit(c.url).hostname for c in fake.adapter.calls}


def _discovery(fake, **changes) -> None:
    doc = {"issuer": ISS, "jwks_uri": ROOT + "/auth/jwks", "authorization_endpoint": ROOT + "/auth/authorize",
           "token_endpoint": ROOT + "/auth/token", "code_challenge_methods_supported": ["S256"],
           "capabilities": ["launch-ehr", "client-public", "sso-openid-connect"]}
    doc.update(changes)
    fake.adapter.add("GET", ISS + "/.well-known/smart-configuration", (200, doc))


def test_policy_rules():
    """L7: origins from the allow-list and explicit hosts only; https outside the sandbox; dot segments refused."""
    policy = OutboundPolicy(iss_list=["https://ehr.example/fhir/r4"], extra=["auth.example"])
    assert policy.refusal("https://ehr.example/anything") is None
    assert policy.refusal("https://auth.example/token") is None
    assert policy.refusal("https://evil.example/") and policy.refusal("http://ehr.example/fhir/r4")
    assert policy.refusal("https://ehr.example:8443/") and policy.refusal("ftp://ehr.example/")
    assert policy.refusal("https://user:pw@ehr.example/") and policy.refusal("https://ehr.example\x00.evil/")
    assert OutboundPolicy(iss_list=["http://ehr.test/fhir"], allow_http=True).refusal("http://ehr.test/x") is None
    assert under_base("https://ehr.example/fhir/r4/Practitioner/1", "https://ehr.example/fhir/r4")
    for bad in ("https://ehr.example/fhir/r4/../internal", "https://ehr.example/fhir/r4/%2e%2e/internal",
                "https://ehr.example/fhir/r4x/Practitioner/1", "https://ehr.example/other"):
        assert not under_base(bad, "https://ehr.example/fhir/r4"), bad
    assert safe_relative("Practitioner/1") and not safe_relative("../internal")
    assert not safe_relative("Practitioner/%2E%2E/x") and not safe_relative("//evil.example/x")


def test_smart_style_url_on_another_host_is_never_fetched(app, client, fake):
    """L7: smart_style_url from a host outside the policy (blind SSRF) is not fetched; on the EHR host it is."""
    fake.token_extra["smart_style_url"] = "https://evil.example/style.json"
    launch(client, fake, "c1")
    assert "evil.example" not in _hosts(fake)
    fake.token_extra["smart_style_url"] = "http://fake-ehr.test/style.json"  # plain http: refused outside sandbox
    replace_settings(app, deployment_name="production-like")
    calls = len(fake.adapter.calls)
    launch(client, fake, "c2")
    assert not any(c.url.startswith("http://") for c in fake.adapter.calls[calls:])
    fake.adapter.add("GET", ROOT + "/style.json", (200, {"color_background": "#eeeeee"}))
    fake.token_extra["smart_style_url"] = ROOT + "/style.json"
    lid = launch(client, fake, "c3")
    assert context_of(app, lid)["smart_style"] == {"color_background": "#eeeeee"}


def test_discovery_redirect_to_another_host_is_refused(app, client, fake):
    """L7: discovery does not follow a redirect to another host."""
    fake.adapter.add("GET", ISS + "/.well-known/smart-configuration",
                     lambda _r: (302, "", {"Location": "https://evil.example/.well-known/smart-configuration"}))
    fake.adapter.add("GET", ISS + "/metadata", lambda _r: (302, "", {"Location": "https://evil.example/metadata"}))
    resp = client.get(f"/launch?iss={ISS}&launch=L1")
    assert resp.status_code == 424 and "Location" not in resp.headers
    assert "evil.example" not in _hosts(fake)


def test_token_endpoint_on_another_host_gets_no_secret(app, client, fake):
    """L7: a token endpoint on a host outside the policy is refused at /launch: the browser is not sent on,
    and the client secret never leaves."""
    replace_settings(app, client_auth="client_secret_post",
                                                   client_secret="s3cret")
    _discovery(fake, token_endpoint="https://evil.example/token")
    resp = client.get(f"/launch?iss={ISS}&launch=L1")
    assert resp.status_code == 424 and "Location" not in resp.headers
    assert "evil.example" not in _hosts(fake)
    assert all("s3cret" not in str(c.body) and "s3cret" not in str(c.headers) for c in fake.adapter.calls)


def test_authorization_server_on_a_listed_host_is_allowed(app, client, fake):
    """L7: a deployment may list its authorization server's host explicitly (OUTBOUND_HOSTS)."""
    auth = "https://login.fake-ehr-auth.test"
    _discovery(fake, authorization_endpoint=auth + "/authorize", token_endpoint=auth + "/token",
               jwks_uri=auth + "/jwks")
    fake.adapter.add("POST", auth + "/token", lambda _r: (200, fake.token_response()))
    fake.adapter.add("GET", auth + "/jwks", lambda _r: (200, fake.jwks()))
    assert client.get(f"/launch?iss={ISS}&launch=L1").status_code == 424
    replace_settings(app, OUTBOUND_HOSTS=[auth])
    lid = launch(client, fake)
    assert context_of(app, lid)["patient"]["id"] == "p1"


@pytest.mark.parametrize("fhir_user", [ISS + "/../internal/Practitioner/d1", ISS + "/Practitioner/../../internal",
                                       ISS + "/%2e%2e/internal", "https://evil.example/fhir/Practitioner/d1",
                                       "Practitioner/../internal"])
def test_fhir_user_outside_the_iss_base_gets_no_token(app, client, fake, fhir_user):
    """L7: a fhirUser that leaves the iss base after normalisation is never read with the bearer token."""
    fake.id_token_claims["fhirUser"] = fhir_user
    lid = launch(client, fake)
    assert context_of(app, lid)["user"]["roles"] == []
    for call in fake.adapter.calls:
        assert "internal" not in call.url and "evil.example" not in call.url, call.url
