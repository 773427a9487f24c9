"""Referral page and discreet handout in Chromium, launched from the sandbox EHR (real encounter context)."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import lid_of
from tests.support.shots import shots_dir

pytestmark = pytest.mark.browser


def test_chelsea_launch_ranks_haven_first_and_zip_stays_out_of_urls(launched_page, live_app):
    page = launched_page("pat-joana", "enc-joana-chelsea")
    lid = lid_of(page)
    seen_urls: list[str] = []
    page.on("request", lambda req: seen_urls.append(req.url))
    page.goto(f"{live_app.url}/l/{lid}/referrals?lang=en")
    first = page.locator('[data-testid="result"]').first
    assert first.get_attribute("data-service") == "haven"
    assert "On site at this health center" in first.inner_text()
    page.fill('[data-testid="safe-zip"]', "02151")
    page.check('[data-testid="need-legal"]')
    with page.expect_navigation():  # POST, then the redirect back: read the new page, not the old one
        page.click('[data-testid="find"]')
    assert "miles from 02151" in page.locator('[data-testid="results"]').inner_text()
    assert not any("02151" in u for u in seen_urls)
    # Choose HAVEN; the page keeps the choice after the redirect (safe contact is asked on the consent page).
    page.check('[data-testid="select-haven"]')
    page.click('[data-testid="save"]')
    page.wait_for_selector('[data-testid="saved"]')
    assert page.is_checked('[data-testid="select-haven"]')


def test_handout_prints_discreetly(launched_page, live_app):
    page = launched_page("pat-dana", "enc-dana-faulkner")
    lid = lid_of(page)
    external: list[str] = []
    page.on("request", lambda req: external.append(req.url) if not req.url.startswith((live_app.url, "data:"))
            else None)
    page.goto(f"{live_app.url}/l/{lid}/handout?qr=1&lang=en")
    assert page.title() == "Health resources"
    qr = page.locator('[data-testid="qr"] img')
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0")
    page.emulate_media(media="print")
    assert page.locator('[data-testid="handout"]').is_visible()
    assert not page.locator("#quick-exit").is_visible()
    assert not page.locator(".handout-tools").is_visible()
    printed = page.locator('[data-testid="handout"]').inner_text()
    assert "Passageway" in printed and "1-617-732-8753" in printed  # Faulkner's program first
    assert not re.search(r"violen|abus|domestic|rape|assault|shelter", printed, re.I)
    pdf = page.pdf()  # headless Chromium prints with the print stylesheet
    assert pdf[:4] == b"%PDF"
    page.emulate_media(media="screen")
    assert page.locator("#quick-exit").is_visible()
    assert not [u for u in external if not u.startswith(("http://127.0.0.1", "http://localhost"))]


def serious_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']}" for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")]


def test_spanish_patient_at_sjphc_and_accessibility(launched_page, live_app):
    """Carmen's chart says Spanish: the clinician's page stays English, the patient section and handout are in
    Spanish, and Passageway (which speaks it) is first."""
    page = launched_page("pat-carmen", "enc-carmen-sjphc")
    lid = lid_of(page)
    page.goto(f"{live_app.url}/l/{lid}/referrals")
    assert page.locator("html").get_attribute("lang") == "en"
    first = page.locator('[data-testid="result"]').first
    assert first.get_attribute("data-service") == "passageway"
    assert "Speaks Spanish" in first.inner_text()
    page.get_by_test_id("patient-section").locator("summary").click()
    assert "Ideas para un plan de seguridad" in page.get_by_test_id("patient-section").inner_text()
    found = {"referrals": serious_violations(page)}
    page.goto(f"{live_app.url}/l/{lid}/handout?qr=1")
    assert page.title() == "Recursos de salud"
    found["handout"] = serious_violations(page)
    assert found == {k: [] for k in found}


def test_full_page_handout_waits_for_the_patients_word_and_prints_ideas_before_the_209a_page(
        launched_page, new_context, live_app, tmp_path):
    """1366x768: the full page's caution comes first and Print waits for the tick; printed, the first page carries
    the card and the safety ideas, the 209A section (whose published text names the abuser) starts a new page."""
    page = launched_page("pat-dana", "enc-dana-faulkner", page=new_context(viewport={"width": 1366, "height": 768})
                         .new_page())
    lid = lid_of(page)
    page.goto(f"{live_app.url}/l/{lid}/handout?lang=en&layout=page")
    caution, tick, button = (page.get_by_test_id("print-caution"), page.get_by_test_id("safe-to-carry"),
                             page.get_by_test_id("print"))
    assert caution.is_visible() and caution.bounding_box()["y"] < 768  # seen before anything is printed
    assert button.is_disabled()
    page.screenshot(path=str(shots_dir(tmp_path) / "handout-full-page-caution-1366x768.png"))
    tick.check()
    assert button.is_enabled()
    orders = page.locator(".protective-orders")
    assert orders.evaluate("el => el.classList.contains('new-page')")
    page.emulate_media(media="print")
    assert orders.evaluate("el => getComputedStyle(el).breakBefore") == "page"
    before = page.evaluate("""() => { const main = document.querySelector('[data-testid="handout"]');
        const range = document.createRange(); range.setStart(main, 0);
        range.setEndBefore(document.querySelector('.protective-orders')); return range.toString(); }""")
    assert "Safety planning ideas" in before and not re.search(r"abus|violen|209A", before, re.I)
