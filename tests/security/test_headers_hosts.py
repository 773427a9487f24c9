"""L10: HSTS over https, COOP, CORP, CSP form-action; no redirect built from an untrusted Host."""

from __future__ import annotations

import pytest

from tests.conftest import app_config

pytestmark = pytest.mark.security


def test_security_headers(client):
    """L10: COOP, CORP and CSP form-action on every response; HSTS only when served over https."""
    plain = client.get("/no/such/page")
    assert plain.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert plain.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    csp = plain.headers["Content-Security-Policy"]
    assert "form-action 'self' https://www.weather.gov" in csp and "frame-ancestors" in csp
    assert "Strict-Transport-Security" not in plain.headers
    secure = client.get("/no/such/page", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_trailing_slash_redirect_never_uses_the_host_header(client, make_launch):
    """L10: the router's 308 (/l/<lid> -> /l/<lid>/) carries a path, not a URL built from Host."""
    lid = make_launch(client)
    resp = client.get(f"/l/{lid}", headers={"Host": "evil.example"})
    assert resp.status_code == 308
    assert resp.headers["Location"] == f"/l/{lid}/" and "evil.example" not in resp.headers["Location"]
    resp = client.get(f"/l/{lid}?x=1", headers={"Host": "evil.example"})
    assert resp.headers["Location"] == f"/l/{lid}/?x=1"


def test_no_redirect_anywhere_uses_an_untrusted_host(client, make_launch, fake_free_paths):
    """L10: no response of the app (launch, callback, exit, pages) puts a foreign Host into Location."""
    lid = make_launch(client)
    for method, path in fake_free_paths(lid):
        resp = client.open(path, method=method, headers={"Host": "evil.example"})
        assert "evil.example" not in resp.headers.get("Location", ""), (method, path)


@pytest.fixture
def fake_free_paths():
    def paths(lid: str):
        return [("GET", f"/l/{lid}"), ("GET", f"/l/{lid}/"), ("POST", "/exit"), ("GET", "/exit"),
                ("GET", "/launch/standalone"), ("GET", "/callback?state=x&code=y"), ("GET", "/static/app.css"),
                ("POST", f"/l/{lid}/gate"), ("GET", f"/l/{lid}/result")]
    return paths


def test_trusted_hosts_refuse_other_hosts(tmp_path):
    """L10: with TRUSTED_HOSTS set, a request for another Host is refused outright (400)."""
    from smart_app import create_app

    app = create_app(app_config(f"sqlite:///{tmp_path / 'h.db'}", TRUSTED_HOSTS=["ipv.example.org"]))
    client = app.test_client()
    assert client.get("/no/such/page", headers={"Host": "ipv.example.org"}).status_code == 404
    assert client.get("/no/such/page", headers={"Host": "evil.example"}).status_code == 400
