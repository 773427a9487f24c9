"""Resume after a quick exit is not bound to the browser that exited, and the offer says why: quick exit leaves
nothing in the browser to recognise it by. Through the sandbox EHR's real launch."""

from __future__ import annotations

import re

import pytest

from tests.screening.helpers import launch_data
from tests.screening.test_resume import relaunch, screened_then_quick_exit

pytestmark = pytest.mark.security

RESULT_WORDS = re.compile(r"HITS|positive|negative|score|violence|danger|abuse", re.I)


def test_quick_exit_leaves_the_browser_nothing_to_be_recognised_by(app, client, sandbox):
    screened_then_quick_exit(app, client, sandbox)
    assert client.get_cookie("session") is None  # the session cookie is deleted by the exit's answer
    resp = client.post("/exit")
    clears = {part.strip().strip('"') for part in resp.headers["Clear-Site-Data"].split(",")}
    assert {"cookies", "storage", "cache"} <= clears


def test_another_browser_of_the_same_sign_in_is_offered_and_the_offer_says_why(app, client, sandbox):
    old = screened_then_quick_exit(app, client, sandbox)
    other_browser = app.test_client()
    new, page = relaunch(other_browser, sandbox)
    assert 'data-testid="gate-resume"' in page
    why = re.search(r'data-testid="resume-why">([^<]+)<', page)
    assert why, "the offer says why it is not tied to this browser"
    text = why.group(1)
    assert "EHR sign-in" in text and "this patient and this visit" in text and "15 minutes" in text
    assert "cannot tell which browser" in text
    assert not RESULT_WORDS.search(text)  # neutral on a shared screen
    r = other_browser.post(f"/l/{new}/resume", data={"action": "continue"})
    assert r.status_code == 302 and launch_data(app, new)["screening"]
    assert old != new
