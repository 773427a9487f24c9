"""Real browser, Arabic patient: every line said to or printed for the patient runs right to left, the clinician's
page and the clinician's line beneath each said line left to right; on screen and in print emulation (the wallet
card). Checked on the dir attributes and on the direction Chromium computes."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from smart_app.launch.state import Launch
from smart_app.store.db import session_scope
from smart_app.store.models import LaunchRecord
from tests.browser.conftest import lid_of
from tests.browser.test_writeback_browser import _screened
from tests.support.pages import pass_gate
from tests.support.shots import shots_dir
from tests.writeback.support import SCREENING

pytestmark = [pytest.mark.browser, pytest.mark.i18n]


# Where a line's text ends on the right (its words, not its box).
TEXT_RIGHT = ("e => { const r = document.createRange(); r.selectNodeContents(e);"
              " return r.getBoundingClientRect().right; }")


def direction(locator) -> str:
    return locator.evaluate("e => getComputedStyle(e).direction")


def assert_said_lines(page, selector: str) -> int:
    """Each read-aloud line: the patient's words rtl (attribute and computed), the clinician's beneath ltr."""
    lines = page.locator(selector)
    assert lines.count() > 0, selector
    for i in range(lines.count()):
        said = lines.nth(i).locator('[lang="ar"]').first
        echo = lines.nth(i).locator('.clinician-text[lang="en"]').first
        assert said.get_attribute("dir") == "rtl" and direction(said) == "rtl"
        assert echo.get_attribute("dir") == "ltr" and direction(echo) == "ltr"
    return lines.count()


def assert_clinicians_page(page) -> None:
    html = page.locator("html")
    assert html.get_attribute("lang") == "en" and html.get_attribute("dir") == "ltr"
    assert direction(page.locator("main#main, main").first) == "ltr"


def test_arabic_lines_run_right_to_left_on_the_clinicians_left_to_right_pages(launched_page, live_app, tmp_path):
    page = launched_page("pat-june", "enc-june-bwh")
    page.set_viewport_size({"width": 1366, "height": 768})
    lid = lid_of(page)
    shots = str(shots_dir(tmp_path))
    page.goto(f"{live_app.url}/l/{lid}/?lang=ar")
    switch = page.get_by_test_id("lang-switch").locator('[aria-current="true"]')
    expect(switch).to_have_text("العربية")
    assert switch.get_attribute("dir") == "rtl"
    expect(page.get_by_test_id("translation-note")).to_contain_text("Arabic text: translation for reading aloud with "
                                                                    "an interpreter; not a validated version.")
    if page.get_by_test_id("education").count():  # the universal-education script, read to every patient
        assert assert_said_lines(page, '[data-testid="education"] .said') >= 1
        page.get_by_test_id("education").scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(shots, "rtl-gate-education-ar-patient-en-clinician.png"))
    pass_gate(page)

    # The questions: each one in Arabic, right to left, the English beneath left to right; answers likewise.
    assert_clinicians_page(page)
    assert assert_said_lines(page, "[data-link-id]") == 4
    answer = page.locator('table.likert thead th span[lang="ar"]').first
    assert answer.get_attribute("dir") == "rtl" and direction(answer) == "rtl"
    expect(page.get_by_test_id("submit")).to_have_text("Done")  # the clinician's control, in English
    assert direction(page.get_by_test_id("submit")) == "ltr"
    page.screenshot(path=os.path.join(shots, "rtl-questions-ar-patient-en-clinician.png"))
    # The danger check, and an instrument whose questions have answers of their own (one block per question).
    with live_app.app.app_context(), session_scope(live_app.app) as db:  # a positive screen with physical violence
        Launch(db.get(LaunchRecord, lid)).update_data(screening=dict(SCREENING, danger_check_due=True,
                                                                     physical_violence=True))
    page.goto(f"{live_app.url}/l/{lid}/result")  # the danger check is asked where the result would be
    expect(page.get_by_test_id("instrument-form")).to_have_attribute("data-instrument", "da-5")
    assert assert_said_lines(page, "[data-link-id]") == 5
    page.screenshot(path=os.path.join(shots, "rtl-danger-check-ar-patient-en-clinician.png"), full_page=True)
    page.goto(f"{live_app.url}/l/{lid}/screen?instrument=pvs")
    assert assert_said_lines(page, "fieldset[data-link-id]") == 3
    for i in range(3):  # each question ends against its block's right edge, where a right-to-left line starts
        block = page.locator("fieldset[data-link-id]").nth(i).bounding_box()
        line = page.locator("fieldset[data-link-id] legend .read-aloud").nth(i).evaluate(TEXT_RIGHT)
        assert block["x"] + block["width"] - line < 40, i
    option = page.locator('label.option span[lang="ar"]').first
    assert option.get_attribute("dir") == "rtl" and direction(option) == "rtl"
    page.screenshot(path=os.path.join(shots, "rtl-pvs-ar-patient-en-clinician.png"), full_page=True)

    # The result's and the urgent box's words to say, the consent script.
    _screened(live_app, lid)
    page.goto(f"{live_app.url}/l/{lid}/result")
    assert_clinicians_page(page)
    assert assert_said_lines(page, "p.say") >= 1
    page.screenshot(path=os.path.join(shots, "rtl-result-ar-patient-en-clinician.png"), full_page=True)
    page.goto(f"{live_app.url}/l/{lid}/consent")
    assert_clinicians_page(page)
    assert assert_said_lines(page, "#consent-question .said") >= 1
    assert direction(page.get_by_test_id("consent-yes")) == "ltr"
    page.locator("#consent-question").scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(shots, "rtl-consent-ar-patient-en-clinician.png"))

    # The referral page's patient section (209A, safety ideas) right to left, phone numbers left to right in it.
    page.goto(f"{live_app.url}/l/{lid}/referrals")
    section = page.get_by_test_id("patient-section")
    section.locator("summary").click()
    block = section.locator('[data-audience="patient"]')
    assert block.get_attribute("dir") == "rtl" and direction(block) == "rtl"
    assert direction(block.locator("h2").first) == "rtl"
    numbers = block.locator('a[href^="tel:"]')
    for i in range(numbers.count()):  # left to right and whole: a number never breaks over two lines
        assert direction(numbers.nth(i)) == "ltr"
        assert len(numbers.nth(i).evaluate("e => Array.from(e.getClientRects()).map(r => r.top)")) == 1
    block.scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(shots, "rtl-referrals-ar-patient-section.png"))


def test_arabic_wallet_card_prints_right_to_left(launched_page, live_app, tmp_path):
    page = launched_page("pat-june", "enc-june-bwh")
    page.set_viewport_size({"width": 1366, "height": 768})
    lid = lid_of(page)
    _screened(live_app, lid)
    shots = str(shots_dir(tmp_path))
    page.goto(f"{live_app.url}/l/{lid}/handout?lang=ar")
    html = page.locator("html")
    assert html.get_attribute("lang") == "en" and html.get_attribute("dir") == "ltr"  # the clinician's controls
    expect(page.get_by_test_id("print")).to_have_text("Print")
    handout = page.get_by_test_id("handout")
    assert handout.get_attribute("lang") == "ar" and handout.get_attribute("dir") == "rtl"
    expect(page.get_by_test_id("handout-title")).to_have_text("موارد صحية")

    def check(media: str) -> None:
        card = page.get_by_test_id("card")
        assert direction(card) == "rtl", media
        title = page.get_by_test_id("handout-title")
        assert direction(title) == "rtl", media
        # Right to left: the title sits against the card's right edge.
        box, text = card.bounding_box(), title.evaluate(
            "e => { const r = document.createRange(); r.selectNodeContents(e); const b = r.getBoundingClientRect();"
            " return {left: b.left, right: b.right}; }")
        assert box["x"] + box["width"] - text["right"] < text["left"] - box["x"], media
        numbers = page.locator('[data-testid="card"] a[href^="tel:"]')
        assert numbers.count() >= 1 and all(direction(numbers.nth(i)) == "ltr" for i in range(numbers.count()))

    check("screen")
    page.screenshot(path=os.path.join(shots, "rtl-handout-card-ar-screen.png"))
    page.emulate_media(media="print")
    try:
        check("print")
        assert not page.locator("nav.handout-tools").is_visible()  # the clinician's controls do not print
        page.screenshot(path=os.path.join(shots, "rtl-handout-card-ar-print.png"))
    finally:
        page.emulate_media(media="screen")


@pytest.mark.parametrize(("lang", "title"), [("ru", "Ресурсы для здоровья"), ("vi", "Nguồn hỗ trợ sức khỏe")])
def test_russian_and_vietnamese_lines_run_left_to_right_beneath_nothing_rtl(launched_page, live_app, tmp_path, lang,
                                                                             title):
    """The left-to-right patient languages: the questions and the card in the patient's language, dir ltr."""
    page = launched_page("pat-june", "enc-june-bwh")
    page.set_viewport_size({"width": 1366, "height": 768})
    lid = lid_of(page)
    shots = str(shots_dir(tmp_path))
    page.goto(f"{live_app.url}/l/{lid}/?lang={lang}")
    pass_gate(page)
    said = page.locator(f'[data-link-id] .read-aloud[lang="{lang}"]')
    assert said.count() == 4 and all(said.nth(i).get_attribute("dir") == "ltr" for i in range(4))
    assert direction(said.first) == "ltr"
    page.screenshot(path=os.path.join(shots, f"questions-{lang}-patient-en-clinician.png"))
    _screened(live_app, lid)
    page.goto(f"{live_app.url}/l/{lid}/handout")
    expect(page.get_by_test_id("handout-title")).to_have_text(title)
    assert page.get_by_test_id("handout").get_attribute("dir") == "ltr"
    page.screenshot(path=os.path.join(shots, f"handout-card-{lang}.png"))
