"""Real browser at 1366x768: universal education at the start of the check-in (the patient's language, the
clinician's beneath), then the patient answers alone on this device, and after the PIN the result asks for the
clinician's response first; "Done" waits for it, "Not safe to discuss now" is one press. Screenshots of both steps
go to IPV_SCREENSHOTS (tests/support/shots.py)."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import lid_of
from tests.browser.test_clinician_minute_browser import serious_violations
from tests.support.pages import pass_gate
from tests.support.shots import shots_dir

pytestmark = [pytest.mark.browser, pytest.mark.kiosk, pytest.mark.education]
SCREEN = {"width": 1366, "height": 768}
# HITS on the tablet, options in the file's order (1 Never .. 5 Frequently): hurt Never, the other three Frequently.
ANSWERS = (1, 5, 5, 5)


def test_education_first_then_the_tablet_then_the_response_is_asked(launched_page, live_app, new_context, tmp_path):
    shots = shots_dir(tmp_path)
    page = new_context(viewport=SCREEN).new_page()
    page = launched_page("pat-priya", "enc-priya-bwh-ed-obs", page=page)
    lid = lid_of(page)
    page.goto(f"{live_app.url}/l/{lid}/?lang=es")
    education = page.locator('[data-testid="education"]')
    assert education.is_visible()
    first = education.locator('[data-audience="patient"]').first
    assert first.get_attribute("lang") == "es" and first.inner_text().startswith("Antes de empezar")
    assert education.locator('[data-audience="clinician"]').first.inner_text().startswith("Before we start")
    page.screenshot(path=str(shots / "education-gate-es-1366x768.png"))
    assert serious_violations(page) == []
    page.click('[data-testid="education-offered"]')
    assert page.locator('[data-testid="education-done"]').is_visible()

    # The private gate, then the patient answers alone on this device.
    pass_gate(page)
    page.click('[data-testid="offer-tablet"]')
    page.click('[data-testid="tablet-go"]')
    pin = re.sub(r"\D", "", page.locator('[data-testid="tablet-pin"]').inner_text())
    page.click('[data-testid="tablet-handover"]')
    page.click('[data-testid="tablet-begin"]')
    for option in ANSWERS:
        page.click(f'[data-testid="option-{option}"]')
    page.fill('[data-testid="unlock-pin"] input[name="pin"], input[name="pin"]', pin)
    page.click('[data-testid="unlock-submit"]')
    page.wait_for_url(re.compile(rf"/l/{lid}/result"))

    panel = page.locator('[data-testid="followup-panel"]')
    assert panel.is_visible()
    page.click('[data-testid="done-back-to-chart"]')
    page.wait_for_url(re.compile(r"pending=followup"))
    assert page.locator('[data-testid="followup-pending"]').is_visible()
    page.locator('[data-testid="followup-panel"]').scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "followup-panel-1366x768.png"))
    assert serious_violations(page) == []
    page.click('[data-testid="followup-not-safe"]')
    assert page.locator('[data-testid="followup-reminder"]').is_visible()
    assert not page.locator('[data-testid="followup-panel"]').count()

    # Close it for the rest of the session's browser tests: a later launch for Priya would ask again.
    later = launched_page("pat-priya", "enc-priya-bwh-ed-obs", page=new_context(viewport=SCREEN).new_page())
    assert later.locator('[data-testid="followup-panel"]').is_visible()
    later.click('[data-testid="followup-declined"]')
    assert not later.locator('[data-testid="followup-panel"]').count()
