"""Steps through the app's pages in a real browser (Playwright's sync API) that many tests take on the way to what
they test. ``page`` is a Page, or the app's Frame inside the EHR's page: both have the calls used here.

A test of a step itself (the gate's buttons one by one, a keyboard-only walk, Escape on the gate) clicks it by hand.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

# HITS answers as LOINC answer codes (Sherin et al. 1998 scoring: never 1 .. frequently 5): sometimes 3 + frequently 5
# + rarely 2 + frequently 5 = 15 > 10, positive.
HITS_POSITIVE = {"hurt": "LA10082-8", "insult": "LA6482-9", "threaten": "LA10066-1", "scream": "LA6482-9"}
# Never 1 + rarely 2 + never 1 + never 1 = 5, negative.
HITS_NEGATIVE = {"hurt": "LA6270-8", "insult": "LA10066-1", "threaten": "LA6270-8", "scream": "LA6270-8"}
# The danger check (DA-5) answered No to every question (LA32-8 = No).
DA5_NO = dict.fromkeys(("escalation", "weapon", "strangulation", "jealousy", "fear-for-life"), "LA32-8")


def pass_gate(page: Any) -> None:
    """From the private gate (``/l/<lid>/``): the patient is alone, no family member interprets, Start; returns once
    the questions' page is shown."""
    page.get_by_test_id("gate-alone").check()
    page.get_by_test_id("gate-interpreter").check()
    page.get_by_test_id("gate-start").click()
    page.wait_for_url(lambda url: urlsplit(url).path.endswith("/screen"))


def check_answers(page: Any, answers: dict[str, str]) -> None:
    """Tick each question's answer: ``answers`` maps a question's linkId to its answer code."""
    for link_id, code in answers.items():
        page.locator(f'input[name="q-{link_id}"][value="{code}"]').check()


def refer_to_the_first(page: Any, lid: str) -> None:
    """On the referral list: select the first program listed, save the list, and go on to the consent page."""
    service = page.locator('[data-testid="result"]').first.get_attribute("data-service")
    page.check(f'[data-testid="select-{service}"]')
    page.click('[data-testid="save"]')
    page.get_by_test_id("saved").wait_for()
    page.get_by_test_id("to-consent").click()
    page.wait_for_url(f"**/l/{lid}/consent")
