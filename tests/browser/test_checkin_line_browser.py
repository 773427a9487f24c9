"""Real browser at 1366x768: where the deployment allows it, the result of a negative screen offers the neutral chart
line unticked with its exact words; the button without the tick writes nothing; ticked, the line is queued and the
worker writes it (the result page shows the status). Screenshots go to ``IPV_SCREENSHOTS`` (else tmp)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from config.current import replace_settings
from smart_app.writeback.checkin import CHECKIN_SENTENCE
from tests.support.pages import HITS_NEGATIVE, check_answers, pass_gate
from tests.support.shots import shots_dir

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture
def line_allowed(live_app):
    replace_settings(live_app.app, NEUTRAL_CHECKIN_RECORD=True)
    yield
    replace_settings(live_app.app, NEUTRAL_CHECKIN_RECORD=False)  # the live app is shared by the session


def test_the_neutral_line_is_offered_unticked_and_written_once_ticked(line_allowed, launched_page, new_context,
                                                                      tmp_path):
    shots = shots_dir(tmp_path)
    page = launched_page("pat-joana", "enc-joana-chelsea", page=new_context(viewport=VIEWPORT).new_page())
    pass_gate(page)
    check_answers(page, HITS_NEGATIVE)
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")
    box = page.get_by_test_id("chart-line")
    expect(box).to_contain_text("Add a neutral line to the chart:")
    expect(page.get_by_test_id("chart-line-words")).to_have_text(CHECKIN_SENTENCE)
    expect(page.get_by_test_id("chart-line-tick")).not_to_be_checked()
    box.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "checkin-line-offered-1366x768.png"))
    page.get_by_test_id("chart-line-add").click()  # without the tick
    expect(page.locator("main")).to_contain_text("Nothing was written")
    page.go_back()
    page.get_by_test_id("chart-line-tick").check()
    page.get_by_test_id("chart-line-add").click()
    page.wait_for_url(re.compile(r"/result#chart-line$"))
    expect(page.get_by_test_id("chart-line-queued")).to_be_visible()
    expect(page.get_by_test_id("chart-line-form")).to_have_count(0)
    row = page.get_by_test_id("chart-line-status").locator("tr[data-state]")
    expect(row).to_have_count(1)
    # The worker thread sends it; a reload shows the row's state as the confirmation page does.
    for _ in range(100):
        if row.get_attribute("data-state") == "written":
            break
        page.reload()
    expect(row).to_have_attribute("data-state", "written")
    expect(row).to_contain_text("Written to the chart")
    expect(row).to_contain_text("Check-in note")
    expect(row).not_to_contain_text("Referral")
    page.get_by_test_id("chart-line").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "checkin-line-written-1366x768.png"))
    page.get_by_test_id("done-back-to-chart").click()
    expect(page.get_by_test_id("finished")).to_be_visible()
