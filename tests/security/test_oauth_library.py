"""Card package: authorize URL, code exchange and refresh go through requests_oauthlib.OAuth2Session; the
PKCE verifier handed to fetch_token comes from the server-side launch record."""

from __future__ import annotations

import pytest
from requests_oauthlib import OAuth2Session

from fhir.smart.oauth import s256
from tests.security.conftest import launch, start

pytestmark = pytest.mark.security


def test_launch_uses_oauth2session_with_the_server_side_verifier(app, client, fake, monkeypatch):
    """Card package: authorization_url and fetch_token of OAuth2Session build the authorize request and the
    code exchange; fetch_token gets the verifier whose S256 matches the challenge sent to the EHR."""
    calls: dict[str, list] = {"authorization_url": [], "fetch_token": []}
    real_auth, real_fetch = OAuth2Session.authorization_url, OAuth2Session.fetch_token

    def spy_auth(self, url, state=None, **kwargs):
        calls["authorization_url"].append(kwargs)
        return real_auth(self, url, state, **kwargs)

    def spy_fetch(self, token_url, **kwargs):
        calls["fetch_token"].append(kwargs)
        return real_fetch(self, token_url, **kwargs)

    monkeypatch.setattr(OAuth2Session, "authorization_url", spy_auth)
    monkeypatch.setattr(OAuth2Session, "fetch_token", spy_fetch)
    q = start(client, fake)
    assert len(calls["authorization_url"]) == 1
    resp = client.get(f"/callback?code=code-9&state={q['state']}")
    assert resp.status_code == 302
    (kwargs,) = calls["fetch_token"]
    assert kwargs["code"] == "code-9" and s256(kwargs["code_verifier"]) == q["code_challenge"]
    token_call = [c for c in fake.adapter.calls if c.url.endswith("/auth/token")][0]
    assert f"code_verifier={kwargs['code_verifier']}" in token_call.body


def test_refresh_uses_oauth2session(app, client, fake, monkeypatch):
    """Card package: an expired access token is renewed with OAuth2Session.refresh_token."""
    seen: list[str] = []
    real = OAuth2Session.refresh_token

    def spy(self, token_url, **kwargs):
        seen.append(kwargs["refresh_token"])
        return real(self, token_url, **kwargs)

    monkeypatch.setattr(OAuth2Session, "refresh_token", spy)
    fake.token_extra.update(refresh_token="rt-1", expires_in=-100)
    lid = launch(client, fake)
    with app.test_request_context():
        from smart_app.launch.ehr import fhir_client_for
        from smart_app.launch.state import Launch
        from smart_app.store.db import get_session
        from smart_app.store.models import LaunchRecord

        fhir_client_for(Launch(get_session().get(LaunchRecord, lid)))
    assert seen == ["rt-1"]
