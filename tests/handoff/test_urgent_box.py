"""The urgent box's heading says what the answers mean, by the danger check's own file: "Danger sign reported"
below the cut-off, "High danger (DA-5 ≥ 3)" at or above it, strangulation high on its own; every yes is named."""

from __future__ import annotations

import pytest

from smart_app.screening.views import apply_cutoffs
from tests.screening.test_flow import Flow, bwh_context, da5

pytestmark = pytest.mark.handoff

FREQUENTLY = "LA6482-9"
HITS_HURT = {"instrument": "hits", "q-hurt": FREQUENTLY, "q-insult": FREQUENTLY, "q-threaten": FREQUENTLY,
             "q-scream": FREQUENTLY}


def urgent_section(page: str) -> str:
    return page.split('data-testid="urgent"', 1)[1].split("</section>", 1)[0]


def heading(page: str) -> str:
    return urgent_section(page).split('data-testid="urgent-heading">', 1)[1].split("<", 1)[0]


@pytest.fixture
def after_da5(client, make_launch):
    def _run(*yes: str) -> tuple[Flow, str]:
        flow = Flow(client, make_launch(client, context=bwh_context()))
        flow.gate()
        flow.screen(HITS_HURT)
        flow.danger(da5(*yes))
        return flow, flow.result()

    return _run


def test_two_yes_below_the_cut_off_is_a_danger_sign_not_high_danger(after_da5):
    _flow, page = after_da5("weapon", "jealousy")
    assert heading(page) == "Danger sign reported"
    box = urgent_section(page)
    assert 'data-high="no"' in page and "high danger" not in box.lower()
    assert "DA-5: 2 of 5 yes — below the high-risk cut-off (≥ 3). Yes to: weapon, violent jealousy." in box


def test_three_yes_is_high_danger_with_the_files_cut_off(after_da5):
    _flow, page = after_da5("escalation", "jealousy", "fear-for-life")
    assert heading(page) == "High danger (DA-5 ≥ 3)"
    assert 'data-high="yes"' in page
    assert "Yes to: violence getting worse, violent jealousy, fear for life." in urgent_section(page)


def test_strangulation_alone_is_high_danger(after_da5):
    _flow, page = after_da5("strangulation")
    assert heading(page) == "High danger (strangulation reported)"
    assert 'data-high="yes"' in page and "DA-5: 1 of 5 yes — below the high-risk cut-off" in page


def test_no_yes_shows_no_urgent_box(after_da5):
    _flow, page = after_da5()
    assert 'data-testid="urgent"' not in page


def test_the_cut_off_is_read_from_the_questionnaire_not_the_code(app, after_da5):
    """A site that sets the DA-5 cut-off to 2 (deployment ``cutoffs``) gets "High danger (DA-5 ≥ 2)" at 2."""
    registry = app.extensions["screening"]
    registry["instruments"] = apply_cutoffs(registry["instruments"], {"da-5": 2})
    _flow, page = after_da5("weapon", "jealousy")
    assert heading(page) == "High danger (DA-5 ≥ 2)"


def test_the_referral_page_carries_the_same_heading(after_da5):
    flow, _page = after_da5("weapon")
    page = flow.get(f"/l/{flow.lid}/referrals").get_data(as_text=True)
    assert heading(page) == "Danger sign reported"
