"""L12 and I4: quick exit changes state only by POST with the CSRF token, and revokes tokens at the EHR's
revocation_endpoint (RFC 7009) when discovery advertises one, at quick exit and at purge."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest

from config.current import settings_of
from smart_app.store.models import LaunchRecord
from tests.conftest import app_config, launch_for
from tests.launch.fakes import FakeEhr
from tests.security.conftest import ROOT, launch, record

pytestmark = pytest.mark.security


@pytest.fixture
def csrf_app(tmp_path):
    from smart_app import create_app

    app = create_app(app_config(f"sqlite:///{tmp_path / 'x.db'}", WTF_CSRF_ENABLED=True))
    yield app
    app.extensions["db_engine"].dispose()


def _status(app, lid: str) -> str:
    return record(app, lid).status


def test_exit_needs_post_and_the_csrf_token(csrf_app):
    """L12: GET /exit and a POST without the token (an <img>, a forged form) only send the window away;
    the launch stays. The page's own form (JavaScript off) carries the token and ends it."""
    client = csrf_app.test_client()
    lid = launch_for(csrf_app, client)
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    form = re.search(r'<form class="quick-exit-form" method="post" action="/exit"[^>]*>(.*?)</form>', page, re.S)
    assert form and 'name="csrf_token"' in form.group(1) and 'id="quick-exit"' in form.group(1)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.group(1)).group(1)
    for forged in (client.get("/exit"), client.post("/exit"), client.post("/exit", data={"csrf_token": "x"})):
        assert forged.status_code == 302 and forged.headers["Location"] == settings_of(csrf_app).neutral_exit_url
        assert "Clear-Site-Data" not in forged.headers
    assert _status(csrf_app, lid) == "active" and client.get(f"/l/{lid}/").status_code == 200
    resp = client.post("/exit", data={"csrf_token": token})
    assert resp.status_code == 302 and "cookies" in resp.headers["Clear-Site-Data"]
    assert _status(csrf_app, lid) == "ended" and client.get(f"/l/{lid}/").status_code == 404


def test_quick_exit_script_posts_with_the_token():
    """L12: the Esc/button path posts the CSRF token before location.replace: the exit POST (fetch, or the
    beacon where fetch is unavailable) carries the token, and the page leaves only when that POST has answered
    or after a short cap (the browser tests check that Back then shows nothing)."""
    from pathlib import Path

    js = (Path(__file__).resolve().parents[2] / "smart_app/static/quick_exit.js").read_text()
    assert 'data.append("csrf_token", csrf)' in js and "sendBeacon(url, form())" in js
    assert 'fetch(exitPost, {method: "POST", body: form()' in js and ".then(go, go)" in js
    assert js.index("blank();\n    if (exitPost) { endThenLeave(); }") > 0  # blank first, then end, then leave


def _revocation(fake) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    doc = {"issuer": FakeEhr.ISS, "jwks_uri": ROOT + "/auth/jwks", "authorization_endpoint": ROOT + "/auth/authorize",
           "token_endpoint": ROOT + "/auth/token", "revocation_endpoint": ROOT + "/auth/revoke",
           "code_challenge_methods_supported": ["S256"], "capabilities": ["launch-ehr"]}
    fake.adapter.add("GET", FakeEhr.ISS + "/.well-known/smart-configuration", (200, doc))

    def revoke(req):
        seen.append({k: v[0] for k, v in parse_qs(req.body).items()})
        return 200, ""

    fake.adapter.add("POST", ROOT + "/auth/revoke", revoke)
    fake.token_extra["refresh_token"] = "fake-refresh"
    return seen


def test_quick_exit_revokes_tokens(app, client, fake):
    """I4: quick exit revokes the refresh and the access token at the EHR (after the response has gone)."""
    seen = _revocation(fake)
    lid = launch(client, fake)
    resp = client.post("/exit")
    resp.close()  # call_on_close: revocation runs once the response is sent
    assert [(s["token"], s["token_type_hint"]) for s in seen] == [("fake-refresh", "refresh_token"),
                                                                  ("fake-access", "access_token")]
    assert all(s["client_id"] == "fake-app" for s in seen)
    assert record(app, lid).tokens_enc is None


def test_purge_revokes_tokens_of_expired_launches(app, client, fake):
    """I4: the retention purge revokes a launch's tokens before deleting it."""
    seen = _revocation(fake)
    lid = launch(client, fake)
    with app.app_context():
        from sqlalchemy import update

        from smart_app.launch.retention import purge
        from smart_app.store.db import get_session

        db = get_session()
        db.execute(update(LaunchRecord).where(LaunchRecord.id == lid)
                   .values(expires_at=datetime.now(UTC) - timedelta(seconds=5)))
        db.commit()
        counts = purge(db)
        assert counts["launches"] == 1 and counts["tokens_revoked"] == 2
        assert db.get(LaunchRecord, lid) is None
    assert {s["token"] for s in seen} == {"fake-refresh", "fake-access"}


def test_no_revocation_without_an_advertised_endpoint(app, client, fake):
    """I4 control: an EHR that advertises no revocation_endpoint gets no revocation request."""
    lid = launch(client, fake)
    client.post("/exit").close()
    assert not [c for c in fake.adapter.calls if "revoke" in c.url]
    assert _status(app, lid) == "ended"
