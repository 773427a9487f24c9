"""L8: Flask-Limiter limits /launch, /callback and worklist actions per client address; a 429 page; Redis
storage shared by every worker in production."""

from __future__ import annotations

import uuid

import pytest
import redis

from config.current import replace_settings, settings_of
from tests.conftest import app_config, default_context, launch_for
from tests.launch.fakes import FakeEhr
from tests.support import tools

pytestmark = pytest.mark.security


def _app(tmp_path, name: str, **extra):
    from smart_app import create_app

    return create_app(app_config(f"sqlite:///{tmp_path / name}", RATELIMIT_LAUNCH="3 per minute",
                                 RATELIMIT_CALLBACK="3 per minute", RATELIMIT_ACTIONS="2 per minute", **extra))


def _fake(app):

    ehr = FakeEhr("fake-app")
    replace_settings(app, client_id="fake-app", client_auth="none")
    replace_settings(app, ALLOWED_ISS=[FakeEhr.ISS])
    app.extensions["smart_http"] = ehr.adapter.session()
    return ehr


def test_launch_and_callback_are_limited_with_a_429_page(tmp_path):
    """L8: each /launch writes a pending row; past the limit the client gets a plain 429 page, no row."""
    app = _app(tmp_path, "a.db")
    assert settings_of(app).ratelimit_storage_uri == "memory://"
    _fake(app)
    client = app.test_client()
    codes = [client.get(f"/launch?iss={FakeEhr.ISS}&launch=L{i}").status_code for i in range(5)]
    assert codes == [302, 302, 302, 429, 429]
    page = client.get(f"/launch?iss={FakeEhr.ISS}&launch=x")
    text = page.get_data(as_text=True)
    assert page.status_code == 429 and "Wait a minute" in text and "Traceback" not in text
    assert "Retry-After" in page.headers and "no-store" in page.headers["Cache-Control"]
    with app.app_context():
        from sqlalchemy import func, select

        from smart_app.store.db import get_session
        from smart_app.store.models import LaunchRecord

        assert get_session().scalar(select(func.count()).select_from(LaunchRecord)) == 3
    codes = [client.get("/callback?code=x&state=y").status_code for _ in range(4)]
    assert codes == [400, 400, 400, 429]
    # Quick exit is never limited.
    assert client.post("/exit").status_code == 302


def test_worklist_actions_are_limited(tmp_path):
    """L8: worklist actions (POSTs of the social-work queue) are limited; clinical pages are not."""
    app = _app(tmp_path, "w.db")
    client = app.test_client()
    sw = default_context(user={"reference": "Practitioner/sw", "name": "S W", "roles": ["social_worker"]})
    lid = launch_for(app, client, context=sw)
    target = f"/l/{lid}/worklist/nope/status"
    codes = [client.post(target, data={"status": "contacted"}).status_code for _ in range(3)]
    assert 429 not in codes[:2] and codes[2] == 429
    # The clinical pages are not limited: a clinic behind one address must never be stopped mid-screening.
    gate = [client.post(f"/l/{lid}/gate", data={"action": "not_now"}).status_code for _ in range(4)]
    assert 429 not in gate


def test_redis_storage_is_shared_by_workers(tmp_path):
    """L8: with RATELIMIT_STORAGE_URI=redis://127.0.0.1:6379 two app processes (workers) share the counts."""
    url = tools.redis_url(0)
    prefix = f"ipv-test-{uuid.uuid4().hex}"
    extra = {"RATELIMIT_STORAGE_URI": url, "RATELIMIT_KEY_PREFIX": prefix,
             "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": False, "RATELIMIT_SWALLOW_ERRORS": False}
    one, two = _app(tmp_path, "1.db", **extra), _app(tmp_path, "2.db", **extra)
    _fake(one)
    _fake(two)
    r = redis.Redis.from_url(url)
    try:
        codes = [app.test_client().get(f"/launch?iss={FakeEhr.ISS}&launch=x").status_code
                 for app in (one, two, one, two)]
        assert codes == [302, 302, 302, 429]
        assert list(r.scan_iter(f"*{prefix}*"))  # the count is Redis's, not each instance's memory
    finally:
        keys = list(r.scan_iter(f"*{prefix}*"))
        if keys:
            r.delete(*keys)


def test_only_limited_views_consult_the_limiter(tmp_path, monkeypatch):
    """The limiter is asked on /launch (a limited view), never on a clinical page: no limit applies there."""
    from flask_limiter import Limiter

    app = _app(tmp_path, "c.db")
    asked: list[str | None] = []
    real = Limiter.identify_request  # the first step of every check, the app-wide one and a view's own

    def counting(self, *a, **k):
        endpoint = real(self, *a, **k)
        asked.append(endpoint)
        return endpoint

    monkeypatch.setattr(Limiter, "identify_request", counting)
    client = app.test_client()
    lid = launch_for(app, client, default_context())
    assert client.get(f"/l/{lid}/").status_code == 200
    assert asked == []
    _fake(app)
    assert client.get(f"/launch?iss={FakeEhr.ISS}&launch=L1").status_code == 302
    assert set(asked) == {"launch.ehr_launch"}
