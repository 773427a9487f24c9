"""EHR launch in a real browser: from the sandbox's EHR page to the app's private gate."""

from __future__ import annotations

import pytest

from tests.browser.conftest import lid_of

pytestmark = pytest.mark.browser


def test_launch_from_ehr_page_reaches_gate_with_right_patient(launched_page):
    page = launched_page("pat-carmen", "enc-carmen-sjphc", "prac-casey")
    assert page.get_by_test_id("patient-name").inner_text() == "Carmen Prueba"
    assert page.locator("form.gate").count() == 1  # the private gate, nothing asked yet
    assert "Carmen" not in page.url and "pat-carmen" not in page.url  # no PHI in the URL


def test_two_patients_in_two_tabs_stay_apart(launched_page, context, live_app):
    tab_a = launched_page("pat-alice", "enc-alice-bwh")
    tab_b = launched_page("pat-grace", "enc-grace-mgh", page=context.new_page())
    lid_a, lid_b = lid_of(tab_a), lid_of(tab_b)
    assert lid_a != lid_b
    # Each tab, reloaded after the other launch, still shows its own patient.
    tab_a.reload()
    tab_b.reload()
    assert tab_a.get_by_test_id("patient-name").inner_text() == "Alice Sample"
    assert tab_b.get_by_test_id("patient-name").inner_text() == "Grace Synthetic"
    assert "Grace" not in tab_a.content() and "Alice" not in tab_b.content()


def test_launch_id_from_another_browser_is_not_found(launched_page, new_context, live_app):
    page = launched_page("pat-dana", "enc-dana-faulkner")
    lid = lid_of(page)
    stranger = new_context().new_page()  # another browser profile: no session cookie of ours
    response = stranger.goto(f"{live_app.url}/l/{lid}/")
    assert response.status == 404
    assert "Dana" not in stranger.content()


def test_launch_inside_an_ehr_frame(launched_page, page, live_app):
    """As most EHRs show SMART apps: the session cookie and CSP frame-ancestors must let it run framed."""
    frame = launched_page("pat-alice", "enc-alice-bwh", iframe=True)
    assert frame.get_by_test_id("patient-name").inner_text() == "Alice Sample"
    assert "/ehr/frame/" in page.url and frame.url.startswith(live_app.url)  # app framed by the EHR page
    lid_of(frame)


def test_standalone_launch_by_a_social_worker(page, live_app):
    page.goto(live_app.url + "/launch/standalone")
    page.select_option("#practitioner", "prac-devon")  # the sandbox's sign-in page
    page.click("#approve-button")
    page.wait_for_url(lambda url: url.startswith(live_app.url) and "/l/" in url)
    lid = lid_of(page)
    expected = f"/l/{lid}/worklist" if "worklist" in live_app.app.blueprints else f"/l/{lid}/ready"
    assert page.url == live_app.url + expected
    assert page.get_by_test_id("patient-name").count() == 0  # no patient in this launch
