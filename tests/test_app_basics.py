"""Behaviour every page shares: no-store, a clear 404, quick exit ends the launches."""

from smart_app.models import LaunchRecord


def test_error_page_is_plain_and_uncached(client):
    resp = client.get("/no/such/page")
    assert resp.status_code == 404
    assert resp.headers["Cache-Control"].startswith("no-store")
    assert b"Traceback" not in resp.data
    assert b"Quick exit" in resp.data


def test_quick_exit_ends_this_browsers_launches(app, client, make_launch):
    lid = make_launch(client)
    resp = client.post("/exit")
    assert resp.status_code == 302
    assert resp.headers["Location"] == app.config["NEUTRAL_EXIT_URL"]
    assert "cookies" in resp.headers["Clear-Site-Data"]
    with app.app_context():
        from smart_app.db import get_session

        assert get_session().get(LaunchRecord, lid).status == "ended"
