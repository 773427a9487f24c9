"""Real browser: a Spanish-speaking patient's consent page stays the clinician's (English) while the script read
to the patient, refreshed live as choices change, is Spanish with the English beneath."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import lid_of
from tests.browser.test_writeback_browser import _screened
from tests.support.shots import shots_dir

pytestmark = [pytest.mark.browser, pytest.mark.i18n]


def test_consent_script_is_the_patients_language_and_the_page_the_clinicians(launched_page, live_app, tmp_path):
    page = launched_page("pat-june", "enc-june-bwh")
    page.set_viewport_size({"width": 1366, "height": 768})
    lid = lid_of(page)
    _screened(live_app, lid)
    page.goto(f"{live_app.url}/l/{lid}/consent?lang=es")
    assert page.locator("html").get_attribute("lang") == "en"
    expect(page.get_by_test_id("consent-yes")).to_have_text("The patient agrees: write to the chart")
    page.check('[data-testid="channel-phone"]')
    page.check('[data-testid="res-Observation"]')
    line = page.locator('#consent-question .said').filter(has_text="puntuación")
    expect(line.locator('[data-audience="patient"]')).to_have_attribute("lang", "es")
    expect(line.locator('[data-audience="patient"]')).to_have_text("«Se registrará una puntuación de la detección.»")
    expect(line.locator('[data-audience="clinician"]')).to_have_text("“A screening score will be recorded.”")
    expect(line.locator('[data-audience="clinician"]')).to_have_attribute("lang", "en")
    # The translation's honest line, in the clinician's language.
    expect(page.get_by_test_id("translation-note")).to_contain_text("not a validated version")
    shots = str(shots_dir(tmp_path))
    page.locator("#preview").scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(shots, "consent-es-patient-en-clinician.png"))
    # The result page's words to say: Spanish, the English beneath.
    page.goto(f"{live_app.url}/l/{lid}/result")
    say = page.get_by_test_id("say-911")
    expect(say.locator("q")).to_have_attribute("lang", "es")
    expect(say.locator('[data-audience="clinician"]')).to_have_text("If you are in immediate danger, call 911.")
    page.screenshot(path=os.path.join(shots, "result-es-patient-en-clinician.png"))


def test_portuguese_clinician_prints_a_spanish_handout(launched_page, live_app, tmp_path):
    """A deployment whose clinicians read Portuguese: the handout's controls in Portuguese, the card in Spanish."""
    from config.current import replace_settings

    page = launched_page("pat-june", "enc-june-bwh")
    page.set_viewport_size({"width": 1366, "height": 768})
    lid = lid_of(page)
    _screened(live_app, lid)
    replace_settings(live_app.app, clinician_language="pt")
    try:
        page.goto(f"{live_app.url}/l/{lid}/handout?lang=es")
        assert page.locator("html").get_attribute("lang") == "pt"
        expect(page.get_by_test_id("print")).to_have_text("Imprimir")
        expect(page.get_by_test_id("handout")).to_have_attribute("lang", "es")
        expect(page.get_by_test_id("handout-title")).to_have_text("Recursos de salud")
        shots = str(shots_dir(tmp_path))
        page.screenshot(path=os.path.join(shots, "handout-es-patient-pt-clinician.png"))
        page.goto(f"{live_app.url}/l/{lid}/consent?lang=es")
        expect(page.get_by_test_id("consent-yes")).to_have_text("A pessoa concorda: registrar no prontuário")
        said = page.locator("#consent-question .said").first
        expect(said.locator('[data-audience="patient"]')).to_have_attribute("lang", "es")
        expect(said.locator('[data-audience="clinician"]')).to_have_attribute("lang", "pt")
        page.screenshot(path=os.path.join(shots, "consent-es-patient-pt-clinician.png"),
                        full_page=True)
    finally:
        replace_settings(live_app.app, clinician_language="en")
