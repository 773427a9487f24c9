"""Real browser (Debian Chromium, 1366x768): a Cantonese-speaking patient (the EHR says yue-HK) is read the
questions in Traditional Chinese with the interpreter's note, and Chinese (both scripts) and Haitian Creole pages and
the printed wallet card are drawn with real glyphs of the right script, never boxes: Chromium's own answer (DevTools
CSS.getPlatformFontsForNode) names the face each text was drawn with."""

from __future__ import annotations

import os
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import lid_of
from tests.browser.test_writeback_browser import _screened
from tests.support import tools
from tests.support.pages import pass_gate
from tests.support.shots import shots_dir

pytestmark = [pytest.mark.browser, pytest.mark.i18n]

CANTONESE = "pat-mei"
FACE = {"zh-Hant": "Noto Sans CJK TC", "zh-Hans": "Noto Sans CJK SC"}


@pytest.fixture(scope="module")
def cantonese_patient(live_sandbox) -> str:
    """A patient of the live sandbox whose record says she speaks Cantonese (Hong Kong)."""
    from sandbox_ehr.store import get_store

    tools.cjk_fonts()
    with live_sandbox.app.app_context():
        store = get_store(live_sandbox.app)
        if not store.exists("Patient", CANTONESE):
            store.create({
                "resourceType": "Patient", "active": True, "gender": "female", "birthDate": "1990-05-02",
                "name": [{"use": "official", "family": "Chan", "given": ["Mei"], "text": "Mei Chan"}],
                "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "yue-HK",
                                                            "display": "Cantonese (Hong Kong)"}],
                                                "text": "Cantonese"}, "preferred": True}],
            }, assign_id=CANTONESE)
    return CANTONESE


def faces(page: Any, selector: str) -> set[str]:
    """The font families Chromium drew the text directly inside ``selector`` with. One DevTools session per page,
    kept open: detaching one ends the page's emulated print media."""
    cdp = SESSIONS.get(id(page))
    if cdp is None:
        cdp = SESSIONS[id(page)] = page.context.new_cdp_session(page)
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    assert node, selector
    return {f["familyName"] for f in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]}


SESSIONS: dict[int, Any] = {}


@pytest.fixture(autouse=True)
def _forget_sessions():
    yield
    SESSIONS.clear()  # the page and its sessions close with the test's browser context


def shot(page: Any, tmp_path, name: str, **kwargs: Any) -> None:
    page.screenshot(path=os.path.join(str(shots_dir(tmp_path)), name), **kwargs)


def test_a_cantonese_speaker_is_read_traditional_chinese_with_the_interpreters_note(
        launched_page, live_app, cantonese_patient, tmp_path):
    page = launched_page(cantonese_patient)
    page.set_viewport_size({"width": 1366, "height": 768})
    # From the EHR's yue-HK: the patient's language is Traditional Chinese, the page stays the clinician's.
    expect(page.locator('[data-testid="lang-switch"] [aria-current="true"]')).to_have_attribute("lang", "zh-Hant")
    assert page.locator("html").get_attribute("lang") == "en"
    pass_gate(page)
    said = page.locator('.read-aloud[lang="zh-Hant"]').first
    expect(said).to_be_visible()
    assert faces(page, '.read-aloud[lang="zh-Hant"]') == {FACE["zh-Hant"]}
    expect(page.get_by_test_id("translation-note")).to_contain_text(
        "translation for reading aloud with an interpreter; not a validated version")
    expect(page.get_by_test_id("spoken-note")).to_contain_text("Cantonese")
    shot(page, tmp_path, "questions-zh-Hant-cantonese-en-clinician.png", full_page=True)


@pytest.mark.parametrize("lang", ["zh-Hant", "zh-Hans"])
def test_the_wallet_card_prints_in_chinese(launched_page, live_app, tmp_path, lang):
    tools.cjk_fonts()
    page = launched_page("pat-june", "enc-june-bwh")
    page.set_viewport_size({"width": 1366, "height": 768})
    lid = lid_of(page)
    _screened(live_app, lid)
    page.goto(f"{live_app.url}/l/{lid}/handout?lang={lang}")
    expect(page.get_by_test_id("handout")).to_have_attribute("lang", lang)
    expect(page.get_by_test_id("handout-title")).to_have_text({"zh-Hant": "健康資源", "zh-Hans": "健康资源"}[lang])
    assert faces(page, '[data-testid="handout-title"]') == {FACE[lang]}
    shot(page, tmp_path, f"handout-card-{lang}-en-clinician.png")
    page.emulate_media(media="print")  # what the printer gets
    assert page.evaluate("matchMedia('print').matches") and not page.get_by_test_id("print").is_visible()
    assert faces(page, '[data-testid="handout-title"]') == {FACE[lang]}
    assert faces(page, '[data-testid="card"] .intro') == {FACE[lang]}
    assert page.evaluate("matchMedia('print').matches")  # still printing when the picture is taken
    shot(page, tmp_path, f"handout-card-{lang}-printed.png")
    page.emulate_media(media="screen")
    page.goto(f"{live_app.url}/l/{lid}/handout?lang={lang}&layout=page")
    expect(page.get_by_test_id("protective-orders")).to_be_visible()
    assert faces(page, '[data-testid="safety-idea"]') <= {FACE[lang], "DejaVu Sans"}
    shot(page, tmp_path, f"handout-page-{lang}-en-clinician.png", full_page=True)


def test_the_consent_script_is_said_in_simplified_chinese(launched_page, live_app, tmp_path):
    tools.cjk_fonts()
    page = launched_page("pat-june", "enc-june-bwh")
    page.set_viewport_size({"width": 1366, "height": 768})
    lid = lid_of(page)
    _screened(live_app, lid)
    page.goto(f"{live_app.url}/l/{lid}/consent?lang=zh-Hans")
    expect(page.get_by_test_id("consent-yes")).to_have_text("The patient agrees: write to the chart")
    line = page.locator('#consent-question .said').first
    expect(line.locator('[data-audience="patient"]')).to_have_attribute("lang", "zh-Hans")
    expect(line.locator('[data-audience="clinician"]')).to_have_attribute("lang", "en")
    assert faces(page, '#consent-question .said [data-audience="patient"]') == {FACE["zh-Hans"]}
    shot(page, tmp_path, "consent-zh-Hans-en-clinician.png", full_page=True)


def test_haitian_creole_questions_and_card(launched_page, live_app, tmp_path):
    page = launched_page("pat-june", "enc-june-bwh")
    page.set_viewport_size({"width": 1366, "height": 768})
    lid = lid_of(page)
    page.goto(f"{live_app.url}/l/{lid}/?lang=ht")
    pass_gate(page)
    expect(page.locator('.read-aloud[lang="ht"]').first).to_contain_text("patnè")
    shot(page, tmp_path, "questions-ht-en-clinician.png", full_page=True)
    _screened(live_app, lid)
    page.goto(f"{live_app.url}/l/{lid}/handout?lang=ht")
    expect(page.get_by_test_id("handout-title")).to_have_text("Resous pou lasante")
    page.emulate_media(media="print")
    shot(page, tmp_path, "handout-card-ht-printed.png")
