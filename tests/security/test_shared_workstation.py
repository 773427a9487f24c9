"""M3 (shared clinic workstations) and L4 (session fixation): idle timeout, binding to the EHR user, the end
of a launch when its last tab closes, and a new browser id at every sign-in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from config.current import replace_settings, settings_of
from smart_app.store.models import LaunchRecord
from tests.conftest import app_config
from tests.launch.fakes import FakeEhr
from tests.security.conftest import bid_of, launch, record

pytestmark = pytest.mark.security


def _set(app, lid: str, **values) -> None:
    with app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        db.execute(update(LaunchRecord).where(LaunchRecord.id == lid).values(**values))
        db.commit()


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def test_idle_launch_needs_a_new_ehr_launch(app, client, fake):
    """M3: a launch unused for IDLE_TIMEOUT_SECONDS (15 minutes by default) is refused; each use starts the
    idle time again."""
    assert settings_of(app).idle_timeout_seconds == 900
    lid = launch(client, fake)
    expires = _aware(record(app, lid).expires_at)
    now = datetime.now(UTC)
    assert now + timedelta(seconds=800) < expires <= now + timedelta(seconds=901)
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    assert "Fake Patient" in page
    note = re.search(r'data-testid="session-note"><small>(.*?)</small>', page).group(1)
    assert "15 minutes" in note and "last tab" in note  # the page says how long it stays open
    # Fifteen minutes pass without use: the stored expiry is what a quarter of an hour of silence leaves.
    _set(app, lid, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    gone = client.get(f"/l/{lid}/")
    assert gone.status_code == 404 and "Fake Patient" not in gone.get_data(as_text=True)


def test_use_keeps_a_launch_open_but_never_past_the_launch_ttl(app, client, fake):
    """M3: use pushes the expiry to the idle timeout again, capped at LAUNCH_TTL_SECONDS after the start."""
    lid = launch(client, fake)
    _set(app, lid, expires_at=datetime.now(UTC) + timedelta(seconds=60))
    assert client.get(f"/l/{lid}/").status_code == 200
    assert _aware(record(app, lid).expires_at) > datetime.now(UTC) + timedelta(seconds=800)
    started = datetime.now(UTC) - timedelta(seconds=settings_of(app).launch_ttl_seconds - 30)
    _set(app, lid, created_at=started, expires_at=datetime.now(UTC) + timedelta(seconds=10))
    assert client.get(f"/l/{lid}/").status_code == 200
    assert _aware(record(app, lid).expires_at) <= started + timedelta(seconds=settings_of(app).launch_ttl_seconds)


def test_launch_is_bound_to_the_ehr_user_who_started_it(app, client, fake):
    """M3: the next clinician signing in at the same browser ends the previous user's launches there;
    the same clinician's own earlier launch stays open."""
    mine = launch(client, fake, "code-1")
    again = launch(client, fake, "code-2")  # same user, another patient tab
    assert client.get(f"/l/{mine}/").status_code == 200 and client.get(f"/l/{again}/").status_code == 200
    fake.id_token_claims["fhirUser"] = FakeEhr.ISS + "/Practitioner/d2"
    fake.adapter.add("GET", FakeEhr.ISS + "/Practitioner/d2", (200, {"resourceType": "Practitioner", "id": "d2"}))
    next_user = launch(client, fake, "code-3")
    assert client.get(f"/l/{next_user}/").status_code == 200
    for lid in (mine, again):
        resp = client.get(f"/l/{lid}/")
        assert resp.status_code == 404 and "Fake Patient" not in resp.get_data(as_text=True)
        assert record(app, lid).status == "ended"


def test_sign_in_binds_by_a_keyed_user_tag_and_decides_untagged_launches_from_their_context(app, client, fake):
    """M3 with the user tag: the callback stores a keyed HMAC of (iss, user), never the user id in clear; the
    same user's tagged launch moves to the new browser id; launches without a tag (older rows) are decided
    from their decrypted context, as before: the same user's stays, another user's ends."""
    from tests.conftest import default_context, store_launch

    first = launch(client, fake, "code-1")
    tag = record(app, first).user_tag
    assert re.fullmatch(r"[0-9a-f]{64}", tag)  # a digest (hex), so never the reference "Practitioner/d1"
    user = {"reference": "Practitioner/d1", "name": "Dee Doctor", "roles": ["clinician"]}
    mine_untagged = store_launch(app, bid=bid_of(client), iss=FakeEhr.ISS, context=default_context(user=user))
    other_user = store_launch(app, bid=bid_of(client), iss=FakeEhr.ISS, context=default_context(
        user={"reference": "Practitioner/d9", "name": "Someone Else", "roles": ["clinician"]}))
    assert record(app, mine_untagged).user_tag is None
    second = launch(client, fake, "code-2")
    assert record(app, second).user_tag == tag  # same user, same tag
    for lid in (first, second, mine_untagged):
        assert record(app, lid).browser_id == bid_of(client) and record(app, lid).status == "active"
        assert client.get(f"/l/{lid}/").status_code == 200
    assert record(app, other_user).status == "ended" and client.get(f"/l/{other_user}/").status_code == 404
    # Another user at this browser: every launch of the first user ends, tagged or not.
    fake.id_token_claims["fhirUser"] = FakeEhr.ISS + "/Practitioner/d2"
    fake.adapter.add("GET", FakeEhr.ISS + "/Practitioner/d2", (200, {"resourceType": "Practitioner", "id": "d2"}))
    third = launch(client, fake, "code-3")
    assert record(app, third).user_tag not in (None, tag)
    for lid in (first, second, mine_untagged):
        assert record(app, lid).status == "ended" and client.get(f"/l/{lid}/").status_code == 404


def test_browser_id_is_regenerated_at_callback(app, client, fake):
    """L4: the browser id changes at /callback, so an id planted before sign-in (session fixation) opens
    nothing afterwards."""
    from tests.security.conftest import start

    q = start(client, fake)
    planted = bid_of(client)
    attacker = app.test_client()
    with attacker.session_transaction() as sess:
        sess["bid"] = planted
    resp = client.get(f"/callback?code=code-1&state={q['state']}")
    lid = resp.headers["Location"].split("/")[2]
    assert bid_of(client) not in (None, planted)
    assert record(app, lid).browser_id == bid_of(client)
    assert client.get(f"/l/{lid}/").status_code == 200
    assert attacker.get(f"/l/{lid}/").status_code == 404


@pytest.fixture
def csrf_app(tmp_path):
    from smart_app import create_app

    app = create_app(app_config(f"sqlite:///{tmp_path / 'c.db'}", WTF_CSRF_ENABLED=True, CLOSE_GRACE_SECONDS=60))
    yield app
    app.extensions["db_engine"].dispose()


def _token(page: str) -> str:
    return re.search(r'data-csrf="([^"]+)"', page).group(1)


def test_closing_the_last_tab_ends_the_launch(csrf_app, make_launch):
    """M3: the beacon sent when the last tab closes (POST with the CSRF token) ends the launch after the
    grace period; a forged POST without the token changes nothing; /alive (a reload) reopens within grace."""
    from tests.conftest import launch_for

    client = csrf_app.test_client()
    lid = launch_for(csrf_app, client)
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    assert f'data-close-url="/l/{lid}/close"' in page and 'src="/static/quick_exit.js?v=' in page
    assert client.post(f"/l/{lid}/close").status_code == 400  # no CSRF token: refused
    assert client.get(f"/l/{lid}/").status_code == 200
    token = _token(page)
    assert client.post(f"/l/{lid}/close", data={"csrf_token": token}).status_code == 204
    assert _aware(record(csrf_app, lid).expires_at) <= datetime.now(UTC) + timedelta(seconds=60)
    assert client.post(f"/l/{lid}/alive", data={"csrf_token": token}).status_code == 204  # a reload: still open
    assert _aware(record(csrf_app, lid).expires_at) > datetime.now(UTC) + timedelta(seconds=800)
    replace_settings(csrf_app, CLOSE_GRACE_SECONDS=0)
    assert client.post(f"/l/{lid}/close", data={"csrf_token": token}).status_code == 204  # grace 0: ends now
    assert client.get(f"/l/{lid}/").status_code == 404


def test_csrf_token_survives_only_the_same_users_own_session(app, client, fake):
    """L4: a CSRF token planted with the session before sign-in is dropped at /callback; the token of a
    session the same user's own earlier sign-in created is kept (their other tabs' forms keep working)."""
    with client.session_transaction() as sess:
        sess["csrf_token"] = "planted-token"
    launch(client, fake, "code-1")
    with client.session_transaction() as sess:
        assert sess.get("csrf_token") != "planted-token"
        sess["csrf_token"] = "my-own-token"
    launch(client, fake, "code-2")  # the same user opens another patient
    with client.session_transaction() as sess:
        assert sess.get("csrf_token") == "my-own-token"
