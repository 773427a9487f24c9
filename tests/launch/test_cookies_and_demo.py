"""Session cookie flags (embedded in an EHR iframe or not) and the demo's wiring."""

from __future__ import annotations

import secrets
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet

from config.current import replace_settings, settings_of
from sandbox_ehr.demo import on_sandbox
from smart_app import create_app


def _session_cookie(app, iss: str) -> set[str]:
    replace_settings(app, **on_sandbox(settings_of(app), iss.removesuffix("/fhir")))
    client = app.test_client()
    resp = client.get(f"/launch/standalone?iss={quote(iss)}")
    assert resp.status_code == 302
    cookies = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("ipv_session=")]
    assert cookies, resp.headers
    # Flags only (the value is random base64): "a=b; Secure; HttpOnly" -> {"secure", "httponly", ...}
    return {part.strip().lower() for part in cookies[0].split(";")[1:]}


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    def _make(**tuning: str):
        return create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
                           "SECRET_KEY": secrets.token_urlsafe(16),
                           "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), **tuning})
    return _make


def test_embedded_cookie_is_secure_samesite_none_partitioned(make_app, sandbox):
    flags = _session_cookie(make_app(EMBEDDED_IN_IFRAME="1"), sandbox.iss)
    assert {"secure", "httponly", "samesite=none", "partitioned"} <= flags, flags


def test_plain_http_demo_cookie_has_no_secure_flag(make_app, sandbox):
    flags = _session_cookie(make_app(EMBEDDED_IN_IFRAME="0", SESSION_COOKIE_SECURE="0"), sandbox.iss)
    assert {"httponly", "samesite=lax"} <= flags and not {"secure", "partitioned"} & flags, flags


def test_demo_wires_sandbox_and_app(tmp_path):
    from sandbox_ehr.demo import build_apps

    sandbox, app = build_apps("127.0.0.1", 5123, 8123, tmp_path / "inst")
    iss = "http://127.0.0.1:8123/fhir"
    assert sandbox.config["APP_LAUNCH_URL"] == "http://127.0.0.1:5123/launch"
    assert settings_of(app).allowed_iss == [iss] and settings_of(app).standalone_iss == iss
    # The sandbox EHR's identity moves with it: its plain iss and its per-launch iss pattern on port 8123.
    assert settings_of(app).ehrs["sandbox"].model_dump() == {
        "name": "Sandbox EHR (Mass General Brigham)", "iss": [iss], "iss_patterns": ["http://127.0.0.1:8123/l/*/fhir"]}
    assert settings_of(app).app_base_url == "http://127.0.0.1:5123"
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert "http://127.0.0.1:8123" in settings_of(app).frame_ancestors
    assert settings_of(app).database_url.startswith("sqlite:///") and str(tmp_path) in settings_of(app).database_url
    app.extensions["db_engine"].dispose()
