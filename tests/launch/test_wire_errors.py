"""Every way the EHR can fail a call is one ``FhirWireError``: a view catches "the EHR failed" once. Our own
misconfiguration is not one of them."""

from __future__ import annotations

import pytest
import requests

from fhir.client import FhirClient
from fhir.context import read_launch_context
from fhir.errors import FhirWireError
from fhir.smart.client_auth import ClientAuth, ClientAuthError
from fhir.smart.discovery import SmartConfiguration, fetch_configuration
from fhir.smart.id_token import JwksCache, verify_id_token
from fhir.smart.oauth import exchange_code
from tests.launch.fakes import FakeAdapter

ISS = "https://ehr.example/fhir"
CONFIG = SmartConfiguration(iss=ISS, authorization_endpoint="https://ehr.example/auth",
                            token_endpoint="https://ehr.example/token", jwks_uri="https://ehr.example/jwks")


def _timeout(_request):
    raise requests.Timeout("slow EHR")


def _session(method: str, url: str, answer) -> requests.Session:
    fake = FakeAdapter()
    fake.add(method, url, answer)
    return fake.session()


CALLS = {
    "FHIR read, HTTP 500": lambda: FhirClient(ISS, "t", session=_session(
        "GET", f"{ISS}/Patient/p1", (500, {}))).read("Patient", "p1"),
    "FHIR read, timeout": lambda: FhirClient(ISS, "t", session=_session(
        "GET", f"{ISS}/Patient/p1", _timeout)).read("Patient", "p1"),
    "launch context, patient unreadable": lambda: read_launch_context(FhirClient(ISS, "t", session=_session(
        "GET", f"{ISS}/Patient/p1", (404, {}))), {"patient": "p1"}),
    "discovery, nothing published": lambda: fetch_configuration(ISS, http=_session(
        "GET", f"{ISS}/metadata", (404, {}))),
    "token, refused": lambda: exchange_code(CONFIG, code="c", redirect_uri="r", code_verifier="v",
                                            auth=ClientAuth(client_id="app"), http=_session(
                                                "POST", CONFIG.token_endpoint, (400, {"error": "invalid_grant"}))),
    "token, timeout": lambda: exchange_code(CONFIG, code="c", redirect_uri="r", code_verifier="v",
                                            auth=ClientAuth(client_id="app"), http=_session(
                                                "POST", CONFIG.token_endpoint, _timeout)),
    "id_token, JWKS unreadable": lambda: verify_id_token("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", issuer=ISS,
                                                         client_id="app", nonce=None, jwks_uri=CONFIG.jwks_uri,
                                                         http=_session("GET", CONFIG.jwks_uri, (503, {})),
                                                         cache=JwksCache()),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_each_ehr_failure_is_a_wire_error(call):
    with pytest.raises(FhirWireError):
        call()


def test_our_own_misconfiguration_is_not_a_wire_error():
    with pytest.raises(ClientAuthError) as err:
        ClientAuth(client_id="app", kind="client_secret_basic")  # no secret configured
    assert not isinstance(err.value, FhirWireError)
