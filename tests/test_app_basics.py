"""Behaviour every page shares: no-store, a clear 404, quick exit ends the launches."""

import re

import pytest

from config.current import settings_of
from smart_app.store.models import LaunchRecord


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
    assert resp.headers["Location"] == settings_of(app).neutral_exit_url
    assert "cookies" in resp.headers["Clear-Site-Data"]
    with app.app_context():
        from smart_app.store.db import get_session

        assert get_session().get(LaunchRecord, lid).status == "ended"


def test_quick_exit_button_works_without_javascript(client, make_launch):
    """The button is a plain form POST to /exit with the CSRF token (review finding L12: a GET changes
    nothing), so even with scripts off the launch ends."""
    lid = make_launch(client)
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    assert '<form class="quick-exit-form" method="post" action="/exit"' in page and 'id="quick-exit"' in page
    resp = client.get("/exit")
    assert resp.status_code == 302 and client.get(f"/l/{lid}/").status_code == 200  # GET: state unchanged
    resp = client.post("/exit")
    assert resp.status_code == 302 and resp.headers["Location"] == settings_of(client.application).neutral_exit_url
    assert client.get(f"/l/{lid}/").status_code == 404



def test_own_stylesheets_and_scripts_are_kept_by_content_pages_are_not(app, client, make_launch):
    """The app's static files may be cached (no patient data; the URL names the content), so a page costs one
    request; the page itself, a missing file and the tablet's files stay no-store."""
    from smart_app.ops.security import static_digest

    lid = make_launch(client)
    page = client.get(f"/l/{lid}/")
    assert page.headers["Cache-Control"].startswith("no-store")
    urls = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.get_data(as_text=True))
    assert {u.split("?")[0] for u in urls} >= {"/static/app.css", "/static/quick_exit.js"}
    for url in urls:
        name, version = url.removeprefix("/static/").split("?v=")
        assert version == static_digest(app.static_folder, name)
        resp = client.get(url)
        assert resp.status_code == 200 and resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "Pragma" not in resp.headers and resp.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/static/no-such.css").headers["Cache-Control"].startswith("no-store")
    assert client.get("/tablet/static/kiosk.css").headers["Cache-Control"].startswith("no-store")


def test_fixed_urls_are_url_fors_own_under_each_script_root(app, client, make_launch):
    """The page's static files and quick exit are built once and reused: the same URLs url_for makes, under a
    script root and without one."""
    from flask import url_for

    lid = make_launch(client)
    for root in ("", "/ipv", ""):
        page = client.get(f"/l/{lid}/", environ_overrides={"SCRIPT_NAME": root}).get_data(as_text=True)
        with app.test_request_context("/", environ_overrides={"SCRIPT_NAME": root}):
            wanted = [url_for("static", filename="app.css"), url_for("exit.quick_exit"),
                      url_for("static", filename="quick_exit.js")]
        assert all(f'"{url}"' in page for url in wanted), root
        assert wanted[0].startswith(f"{root}/static/app.css?v=")


def test_launch_urls_are_url_fors_own_under_each_script_root(app, client, make_launch):
    """A launch's page URLs are built once per endpoint with a stand-in id and given each launch's id: the same
    URLs url_for makes, for every endpoint named by a launch id alone, under a script root and without one; an
    endpoint that is not installed is None only when asked as optional, and an id of another shape is url_for's."""
    from flask import url_for
    from werkzeug.routing import BuildError

    from smart_app.ops.security import launch_url

    lid, other = make_launch(client), make_launch(client)
    endpoints = [r.endpoint for r in app.url_map.iter_rules() if r.arguments == {"lid"} and not r.defaults]
    assert {"exit.close_launch", "screening.step", "referral.handout"} <= set(endpoints)
    for root in ("", "/ipv", ""):
        with app.test_request_context("/", environ_overrides={"SCRIPT_NAME": root}):
            for launch in (lid, other):
                for endpoint in endpoints:
                    assert launch_url(endpoint, launch) == url_for(endpoint, lid=launch), (root, endpoint)
                    assert launch_url(endpoint, launch, optional=True) == url_for(endpoint, lid=launch)
            assert launch_url("no.such", lid, optional=True) is None
            with pytest.raises(BuildError):
                launch_url("no.such", lid)
            assert launch_url("screening.step", "a b/é") == url_for("screening.step", lid="a b/é")
        page = client.get(f"/l/{lid}/", environ_overrides={"SCRIPT_NAME": root}).get_data(as_text=True)
        assert f'data-close-url="{root}/l/{lid}/close"' in page
