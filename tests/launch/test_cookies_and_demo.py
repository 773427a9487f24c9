"""Session cookie flags (embedded in an EHR iframe or not) and the demo's wiring."""

from __future__ import annotations

import secrets
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet

from sandbox_ehr.demo import on_sandbox
from smart_app import create_app


def _session_cookie(app, iss: str) -> set[str]:
    app.config["DEPLOYMENT"] = on_sandbox(app.config["DEPLOYMENT"], iss.removesuffix("/fhir"))
    app.config["ALLOWED_ISS"] = [iss]
    client = app.test_client()
    resp = client.get(f"/launch/standalone?iss={quote(iss)}")
    assert resp.status_code == 302
    cookies = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("ipv_session=")]
    assert cookies, resp.headers
    # Flags only (the value is random base64): "a=b; Secure; HttpOnly" -> {"secure", "httponly", ...}
    return {part.strip().lower() for part in cookies[0].split(";")[1:]}


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    def _make(**env: str):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
                           "SECRET_KEY": secrets.token_urlsafe(16),
                           "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode()})
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
    assert app.config["ALLOWED_ISS"] == [iss] and app.config["DEPLOYMENT"].standalone_iss == iss
    # The sandbox EHR's identity moves with it: its plain iss and its per-launch iss pattern on port 8123.
    assert app.config["DEPLOYMENT"].extra["ehrs"]["sandbox"] == {
        "name": "Sandbox EHR (Mass General Brigham)", "iss": [iss], "iss_patterns": ["http://127.0.0.1:8123/l/*/fhir"]}
    assert app.config["APP_BASE_URL"] == "http://127.0.0.1:5123"
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert "http://127.0.0.1:8123" in app.config["FRAME_ANCESTORS"]
    assert app.config["DATABASE_URL"].startswith("sqlite:///") and str(tmp_path) in app.config["DATABASE_URL"]
    app.extensions["db_engine"].dispose()
