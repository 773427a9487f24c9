"""Real browser at 1366x768: a negative screen on a shared screen — neutral headings, the instrument's name one tap
away, and "Done — back to the chart" on the result, which ends the launch. Screenshots go to ``IPV_SCREENSHOTS``
(else the test's tmp directory)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.pages import HITS_NEGATIVE, check_answers, pass_gate
from tests.support.shots import shots_dir

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1366, "height": 768}


def test_negative_screen_on_a_shared_screen_is_finished_from_the_result(launched_page, new_context, tmp_path):
    shots = shots_dir(tmp_path)
    page = launched_page("pat-joana", "enc-joana-chelsea", page=new_context(viewport=VIEWPORT).new_page())
    pass_gate(page)
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text("Check-in questions")
    name = page.get_by_test_id("instrument-name")
    expect(name.locator("p")).to_be_hidden()
    name.locator("summary").click()  # one tap
    expect(name).to_contain_text("HITS")
    page.screenshot(path=str(shots / "neutral-questions-1366x768.png"))
    check_answers(page, HITS_NEGATIVE)
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")
    expect(heading).to_have_text("Next steps")
    done = page.get_by_test_id("done-back-to-chart")
    expect(done).to_be_visible()
    done.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "negative-result-done-1366x768.png"))
    done.click()
    expect(page.get_by_test_id("finished")).to_be_visible()
