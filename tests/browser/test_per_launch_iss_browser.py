"""In Chromium: a social worker starts the app from the sandbox's standalone launcher with per-launch iss on (each
launch gets an iss of its own, as independent SMART launchers do), signs in, and lands on the same queue the EHR
launch shows, launch after launch. The shipped sandbox deployment ties the per-launch iss values to the sandbox EHR
by its iss pattern (config/deployments/sandbox.yaml, ``ehrs``)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from smart_app.store.db import session_scope
from smart_app.store.models import LaunchRecord
from tests.browser.conftest import lid_of
from tests.browser.test_worklist_browser import _refer

pytestmark = pytest.mark.routing


@pytest.fixture
def per_launch_iss(live_sandbox) -> Iterator[None]:
    live_sandbox.app.config["SANDBOX_PER_LAUNCH_ISS"] = True
    try:
        yield
    finally:
        live_sandbox.app.config["SANDBOX_PER_LAUNCH_ISS"] = False


def _queue(page) -> tuple[str, list[str]]:
    count = page.get_by_test_id("shown-count").inner_text()
    ids = page.locator('[data-testid^="referral-"]').evaluate_all(
        "rows => rows.map(r => r.dataset.testid.slice('referral-'.length))")
    return count, sorted(ids)


def test_per_launch_iss_standalone_lands_on_the_ehr_launchs_queue(live_app, live_sandbox, launched_page,
                                                                   new_context, per_launch_iss):
    tag = secrets.token_hex(3)
    mine = {_refer(live_app, live_sandbox, "bwh", patient, encounter, f"Pat Iss{tag}", danger=False,
                   channel="phone", hours_ago=hours)
            for patient, encounter, hours in (("pat-alice", "enc-alice-bwh", 5), ("pat-june", "enc-june-bwh", 4),
                                              ("pat-lucia", "enc-lucia-bwh", 3))}
    # Through the EHR: Harper (hospital-wide social worker) opens the app from a chart, then the queue.
    ehr_page = launched_page("pat-alice", "enc-alice-bwh", "prac-harper",
                             page=new_context(viewport={"width": 1366, "height": 768}).new_page())
    ehr_page.goto(live_app.url + f"/l/{lid_of(ehr_page)}/worklist")
    expected = _queue(ehr_page)
    # Every referral the filters keep is listed (other tests may have closed some of the queue's, counted in all).
    shown = re.fullmatch(r"(\d+) of (\d+) referrals shown\.", expected[0])
    assert mine <= set(expected[1]) and shown and int(shown[1]) == len(expected[1]) <= int(shown[2])

    seen = set()
    for _ in range(2):
        page = new_context(viewport={"width": 1366, "height": 768}).new_page()
        page.goto(live_sandbox.url + "/ehr")
        page.click("#standalone-button")  # the launcher mints an iss and opens the app's standalone launch
        page.wait_for_url(re.compile(r"/l/[^/]+/auth/authorize"))
        page.select_option("#practitioner", "prac-harper")
        page.click("#approve-button")
        page.wait_for_url(re.compile(r"/l/[^/]+/worklist$"))
        assert page.url.startswith(live_app.url)
        with live_app.app.app_context(), session_scope(live_app.app) as db:
            iss = db.get(LaunchRecord, lid_of(page)).iss
        assert iss.startswith(live_sandbox.url + "/l/") and iss.endswith("/fhir") and iss not in seen
        seen.add(iss)
        assert _queue(page) == expected
        for rid in mine:
            assert page.get_by_test_id(f"referral-{rid}").is_visible()
