"""Authorize URL, PKCE S256, state/nonce entropy, token exchange and refresh."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from fhir.smart.client_auth import ClientAuth
from fhir.smart.discovery import SmartConfiguration
from fhir.smart.oauth import (
    TokenError,
    authorize_url,
    exchange_code,
    new_nonce,
    new_pkce,
    new_state,
    refresh,
    s256,
    token_expired,
)
from tests.launch.fakes import FakeAdapter

CONFIG = SmartConfiguration(iss="https://ehr.example/fhir", authorization_endpoint="https://ehr.example/auth?tenant=1",
                            token_endpoint="https://ehr.example/token")


def test_pkce_s256_matches_rfc7636_example():
    # RFC 7636 appendix B.
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_pkce_is_valid_and_fresh():
    a, b = new_pkce(), new_pkce()
    assert a.verifier != b.verifier
    assert 43 <= len(a.verifier) <= 128
    digest = base64.urlsafe_b64encode(hashlib.sha256(a.verifier.encode()).digest()).rstrip(b"=").decode()
    assert a.challenge == digest and a.method == "S256"


def test_state_and_nonce_have_at_least_128_bits():
    states = {new_state() for _ in range(100)}
    assert len(states) == 100
    # token_urlsafe(32): 43 base64url chars = 256 bits
    assert all(len(s) >= 22 for s in states) and len(new_nonce()) >= 22


def test_authorize_url_carries_every_smart_parameter():
    url = authorize_url(CONFIG, client_id="app", redirect_uri="https://app/callback",
                        scope="launch openid  fhirUser patient/Patient.rs", state="st", aud=CONFIG.iss,
                        code_challenge="ch", nonce="no", launch="L1")
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.netloc == "ehr.example" and parts.path == "/auth"
    assert q == {"tenant": "1", "response_type": "code", "client_id": "app", "redirect_uri": "https://app/callback",
                 "scope": "launch openid fhirUser patient/Patient.rs", "state": "st", "aud": CONFIG.iss,
                 "code_challenge": "ch", "code_challenge_method": "S256", "launch": "L1", "nonce": "no"}


def test_no_nonce_without_openid():
    url = authorize_url(CONFIG, client_id="app", redirect_uri="r", scope="launch", state="s", aud="a",
                        code_challenge="c", nonce="n")
    assert "nonce" not in parse_qs(urlsplit(url).query)


def test_exchange_sends_code_verifier_and_records_expiry():
    fake = FakeAdapter()
    seen = {}

    def token(req):
        seen.update({k: v[0] for k, v in parse_qs(req.body).items()})
        return 200, {"access_token": "at", "token_type": "Bearer", "expires_in": 300, "patient": "p1"}

    fake.add("POST", CONFIG.token_endpoint, token)
    body = exchange_code(CONFIG, code="c1", redirect_uri="https://app/callback", code_verifier="v" * 50,
                         auth=ClientAuth(client_id="app"), http=fake.session())
    assert seen == {"grant_type": "authorization_code", "code": "c1", "redirect_uri": "https://app/callback",
                    "code_verifier": "v" * 50, "client_id": "app"}
    assert body["patient"] == "p1" and body["expires_at"] > 0
    assert not token_expired(body)


@pytest.mark.parametrize("status,body,needle", [
    (400, {"error": "invalid_grant", "error_description": "code expired"}, "invalid_grant"),
    (500, "oops", "HTTP 500"),
    (200, {"token_type": "Bearer"}, "no bearer"),
    (200, {"access_token": "x", "token_type": "MAC"}, "no bearer"),
])
def test_token_errors_are_reported(status, body, needle):
    fake = FakeAdapter()
    fake.add("POST", CONFIG.token_endpoint, (status, body))
    with pytest.raises(TokenError) as err:
        exchange_code(CONFIG, code="c", redirect_uri="r", code_verifier="v", auth=ClientAuth(client_id="app"),
                      http=fake.session())
    assert needle in err.value.message


def test_refresh_keeps_old_refresh_token_when_none_returned():
    fake = FakeAdapter()
    fake.add("POST", CONFIG.token_endpoint, (200, {"access_token": "new", "token_type": "bearer",
                                                   "expires_in": 60}))
    body = refresh(CONFIG, refresh_token="rt", auth=ClientAuth(client_id="app"), http=fake.session())
    assert body["access_token"] == "new" and body["refresh_token"] == "rt"
    assert parse_qs(fake.calls[0].body)["grant_type"] == ["refresh_token"]


def test_token_expired_uses_skew():
    assert token_expired({"expires_at": 1000}, now=980)
    assert not token_expired({"expires_at": 1000}, now=900)
    assert not token_expired({}, now=10**10)
