"""The clinician's minute at 1366x768: what is above the fold (assertions on positions, not pixels)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.browser.conftest import lid_of
from tests.support.pages import pass_gate

pytestmark = pytest.mark.browser
NY = ZoneInfo("America/New_York")
SCREEN = {"width": 1366, "height": 768}


@pytest.fixture
def screen_page(new_context):
    return new_context(viewport=SCREEN).new_page()


@pytest.fixture
def clock(live_app):
    """Pin the app's hour (the referral page reads ``app.extensions["clock"]``)."""

    def _set(when: datetime) -> None:
        live_app.app.extensions["clock"] = lambda: when

    yield _set
    live_app.app.extensions.pop("clock", None)


def above_the_fold(page, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= SCREEN["height"]


def serious_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']}" for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")]


@pytest.mark.parametrize(("when", "number", "state"), [
    (datetime(2026, 11, 24, 9, 30, tzinfo=NY), "1-617-732-8753", "open"),             # Tuesday morning
    (datetime(2026, 11, 24, 19, 0, tzinfo=NY), "1-617-732-5520 ext. 31808", "after_hours"),  # Tuesday evening
    (datetime(2026, 11, 26, 10, 0, tzinfo=NY), "1-617-732-5520 ext. 31808", "after_hours"),  # Thanksgiving
])
def test_call_now_is_above_the_fold_at_this_hour(launched_page, live_app, screen_page, clock, when, number, state):
    clock(when)
    page = launched_page("pat-alice", "enc-alice-bwh", page=screen_page)
    page.goto(f"{live_app.url}/l/{lid_of(page)}/referrals")
    first = page.locator('[data-testid="call-now-item"]').first
    assert first.get_attribute("data-service") == "passageway" and first.get_attribute("data-state") == state
    assert first.locator('[data-testid="call-now-number"]').inner_text() == number
    assert above_the_fold(page, '[data-testid="call-now"]')
    assert above_the_fold(page, '[data-testid="call-now-item"] >> nth=1')  # the 24/7 line too
    assert above_the_fold(page, '[data-testid="result"]')  # and the top program
    if when.day == 26:
        assert "Thanksgiving" in first.inner_text()
    # 209A and the safety ideas are in the collapsed patient section, not on the clinician's screen.
    assert not page.locator('[data-testid="protective-orders"]').is_visible()
    assert page.locator('[data-testid="patient-section"]').count() == 1
    if state == "open":
        assert serious_violations(page) == []


def test_no_encounter_lists_both_programs_on_the_referral_page(launched_page, live_app, screen_page, clock):
    clock(datetime(2026, 11, 24, 19, 0, tzinfo=NY))
    page = launched_page("pat-marcus", "enc-marcus-mgh", page=screen_page)  # org only: MGH, HAVEN
    page.goto(f"{live_app.url}/l/{lid_of(page)}/referrals")
    assert page.locator('[data-testid="call-now-item"]').first.get_attribute("data-service") == "haven"
    page = launched_page("pat-marcus", None, page=screen_page)  # no encounter at all
    page.goto(f"{live_app.url}/l/{lid_of(page)}/referrals")
    services = page.locator('[data-testid="call-now-item"]').evaluate_all("els => els.map(e => e.dataset.service)")
    assert set(services) == {"passageway", "haven", "ma-safelink"}
    assert above_the_fold(page, '[data-testid="call-now"]')


def test_urgent_box_for_da5_of_3_is_above_the_fold_and_actionable(launched_page, live_app, screen_page, clock):
    from tests.browser.test_screening_browser import answer

    clock(datetime(2026, 11, 24, 20, 0, tzinfo=NY))  # Tuesday evening: the pager
    page = launched_page("pat-alice", "enc-alice-bwh", page=screen_page)
    pass_gate(page)
    for link_id in ("hurt", "insult", "threaten", "scream"):
        answer(page, link_id, "frequently")
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")  # the DA-5 is asked at /result (finding M2)
    assert "Physical violence reported" in page.get_by_test_id("summary-line").inner_text()
    for link_id in ("escalation", "strangulation", "fear-for-life"):
        answer(page, link_id, "LA33-6")
    for link_id in ("weapon", "jealousy"):
        answer(page, link_id, "LA32-8")
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")
    page.get_by_test_id("summary").wait_for()  # /result again after the danger check
    urgent = page.get_by_test_id("urgent")
    assert "3 of 5 yes — high risk of severe assault" in urgent.inner_text()
    call = page.get_by_test_id("urgent-call").first
    assert call.get_attribute("data-service") == "passageway" and call.get_attribute("data-state") == "after_hours"
    assert "1-617-732-5520 ext. 31808" in call.inner_text()
    for test_id in ("urgent-call", "urgent-security", "strangulation", "urgent-hotlines"):
        assert above_the_fold(page, f'[data-testid="{test_id}"]'), test_id
    assert above_the_fold(page, '[data-testid="say-911"]')
    assert serious_violations(page) == []


def test_bilingual_read_aloud_page_fits_the_screen(launched_page, screen_page):
    """Carmen (Spanish): English instructions, Spanish questions with the English beneath, all on one screen."""
    page = launched_page("pat-carmen", "enc-carmen-sjphc", page=screen_page)
    assert page.locator("html").get_attribute("lang") == "en"
    pass_gate(page)
    grid = page.get_by_test_id("likert")
    first = grid.locator("tbody th").first
    assert first.locator('[lang="es"]').inner_text() == "1. Le hace daño físico"
    assert first.locator(".clinician-text").inner_text() == "Physically hurt you"
    assert "Nunca" in grid.locator("thead").inner_text() and "Never" in grid.locator("thead").inner_text()
    assert "Read each question to the patient" in page.locator("main").inner_text()
    # "Use another tool" above the questions; every question and both buttons above the fold.
    other = page.locator(".other-instruments").bounding_box()
    assert other["y"] < grid.bounding_box()["y"]
    for row in range(4):
        assert above_the_fold(page, f'[data-testid="likert"] tbody tr >> nth={row}')
    assert above_the_fold(page, '[data-testid="submit"]') and above_the_fold(page, '[data-testid="decline"]')
    assert serious_violations(page) == []


def test_handout_printed_from_a_negative_screen_in_portuguese(launched_page, live_app, screen_page):
    """Joana (Portuguese) at MGH Chelsea: a negative screen still gives a wallet card, in Portuguese."""
    import re

    from tests.browser.test_screening_browser import answer

    page = launched_page("pat-joana", "enc-joana-chelsea", page=screen_page)
    assert page.get_by_test_id("lang-switch").locator('[aria-current="true"]').inner_text() == "Português"
    pass_gate(page)
    assert "Machuca você fisicamente" in page.get_by_test_id("likert").inner_text()
    for link_id in ("hurt", "insult", "threaten", "scream"):
        answer(page, link_id, "never")
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")
    assert "Negative — HITS 4" in page.get_by_test_id("summary-line").inner_text()
    assert "Damos este cartão a todas as pessoas" in page.get_by_test_id("say-handout").inner_text()
    page.get_by_test_id("result-handout").click()
    page.wait_for_url("**/handout")
    # One language rule: the page's controls in the clinician's language, the card in the patient's.
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_test_id("card").evaluate("e => e.closest('[lang]').getAttribute('lang')") == "pt"
    assert page.title() == "Recursos de saúde"  # the printed sheet's neutral title, in the patient's language
    assert page.get_by_test_id("print").is_visible() and page.get_by_test_id("qr").count() == 0
    assert serious_violations(page) == []
    page.emulate_media(media="print")
    card = page.get_by_test_id("card")
    printed = card.inner_text()
    assert "Recursos de saúde" in printed and "HAVEN" in printed and "1-617-724-0054" in printed
    assert "Outros horários: 1-617-726-2241" in printed and "Emergência: 911" in printed
    assert "Passageway" not in printed  # this site's program, not another hospital's
    assert not re.search(r"violên|abus|domést|estupro|agress|abrigo|209A", printed, re.I)
    assert card.bounding_box()["width"] <= 3.6 * 96  # a wallet card (3.5 in)
    assert not page.locator(".handout-tools").is_visible()
    assert page.pdf()[:4] == b"%PDF"
