"""Real browser at 1366x768: the patient says yes the moment a channel is chosen, and the consent is accepted.

The live preview (static/consent_preview.js) re-plans the write after every change; while its answer is on the way
the agree button is disabled with "Updating…" beside it, so a press lands on the new digest instead of being refused
("What you were about to agree to changed") after the patient had already agreed. Screenshots go to
``IPV_SCREENSHOTS`` (else the test's tmp directory).
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import lid_of
from tests.browser.test_writeback_browser import _screened
from tests.support.shots import shots_dir

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1366, "height": 768}



def test_choose_a_channel_and_agree_at_once_is_accepted(launched_page, new_context, live_app, tmp_path):
    # A visit no other browser test refers: a referral made here would put the duplicate question before
    # another test's consent for the same visit (the live app is shared by the tests of one worker).
    page = launched_page("pat-omar", "enc-omar-bwh-primary-care", page=new_context(viewport=VIEWPORT).new_page())
    lid = lid_of(page)
    _screened(live_app, lid)
    page.goto(f"{live_app.url}/l/{lid}/consent")
    agree, updating = page.get_by_test_id("consent-yes"), page.get_by_test_id("consent-updating")
    expect(agree).to_be_enabled()
    expect(updating).to_be_hidden()
    # A preview held on the wire: the button waits, and says why.
    held: list = []
    page.route("**/consent/preview", lambda route: held.append(route))
    page.check('[data-testid="channel-phone"]')
    expect(agree).to_be_disabled()
    expect(updating).to_be_visible()
    expect(updating).to_have_text("Updating…")
    agree.scroll_into_view_if_needed()
    page.screenshot(path=str(shots_dir(tmp_path) / "consent-updating-1366x768.png"))
    for _ in range(100):  # the debounced request reaches the route (events are dispatched while Playwright waits)
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the preview request was not sent"
    for route in held:
        route.continue_()
    page.unroute("**/consent/preview")
    expect(agree).to_be_enabled()
    expect(updating).to_be_hidden()
    # The clinician's real pace: a channel, then agree at once (well within a second).
    page.check('[data-testid="channel-email"]')
    agree.click()
    page.wait_for_url(f"{live_app.url}/l/{lid}/consent/done")
    expect(page.get_by_test_id("consent-error")).to_have_count(0)

    from smart_app.launch.state import Launch
    from smart_app.store.db import session_scope
    from smart_app.store.models import LaunchRecord

    with live_app.app.app_context(), session_scope(live_app.app) as db:
        data = Launch(db.get(LaunchRecord, lid)).data
    assert data["consent"]["status"] == "given"
    assert data["referral"]["safe_contact"]["channel"] == "email"  # what was on screen when agreed
