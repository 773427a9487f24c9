"""The pages after the screen are reached at the same paths whatever the result: every page offers the same
same-origin paths (links, forms, script endpoints) after a positive and a negative screen, so a path in the
browser's history or an access log (which keeps paths, never queries) tells nothing of the result. Which path
a clinician opens is their choice among the same offers."""

from __future__ import annotations

import html
import re

import pytest

from tests.screening.test_flow import HITS_NEGATIVE, HITS_POSITIVE, bwh_context, da5

pytestmark = pytest.mark.security

# Positive (13 > 10) with no physical violence: no danger check is asked first.
HITS_POSITIVE_NO_HURT = {"instrument": "hits", "q-hurt": "LA6270-8", "q-insult": "LA6482-9",
                         "q-threaten": "LA10082-8", "q-scream": "LA16644-9"}
SAME_ORIGIN = re.compile(r'\s(?:href|action|src|data-[\w-]+)="(/[^"]*)"')


def offered(page: str, lid: str) -> set[str]:
    """Every same-origin path the page links, posts or points its scripts to (query and fragment dropped)."""
    paths = {html.unescape(p).split("#")[0].split("?")[0] for p in SAME_ORIGIN.findall(page)}
    return {p.replace(lid, "<lid>") for p in paths}


def follow(client, resp):
    while resp.status_code in (301, 302, 303):
        resp = client.get(resp.headers["Location"])
    assert resp.status_code == 200, resp.status_code
    return resp


def screened(app, make_launch, screen: dict, *, danger: dict | None = None, ask_danger: bool = False):
    """A browser that screened (answering the danger check when the app asks it, or asking it from the result
    page): (client, lid, the result page)."""
    client = app.test_client()
    lid = make_launch(client, context=bwh_context())
    client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
    page = follow(client, client.post(f"/l/{lid}/screen", data=screen)).get_data(as_text=True)
    if ask_danger:
        assert 'data-testid="ask-safety"' in page
        page = client.get(f"/l/{lid}/more").get_data(as_text=True)
    if 'data-instrument="da-5"' in page:
        assert danger is not None
        page = follow(client, client.post(f"/l/{lid}/screen", data={"instrument": "da-5", **danger})).get_data(
            as_text=True)
    assert 'data-testid="summary"' in page
    return client, lid, page


def pages_after(client, lid: str, result_page: str) -> dict[str, set[str]]:
    pages = {"result": result_page}
    for name, path in (("referrals", "referrals"), ("handout", "handout"), ("consent", "consent")):
        pages[name] = follow(client, client.get(f"/l/{lid}/{path}")).get_data(as_text=True)
    return {name: offered(page, lid) for name, page in pages.items()}


def test_the_same_paths_follow_a_positive_and_a_negative_screen(app, make_launch):
    pos = pages_after(*screened(app, make_launch, HITS_POSITIVE_NO_HURT))
    neg = pages_after(*screened(app, make_launch, HITS_NEGATIVE))
    assert "/l/<lid>/referrals" in neg["result"]  # the programs page, offered after a negative too
    assert {"/l/<lid>/more", "/l/<lid>/handout", "/l/<lid>/finish"} <= neg["result"]
    assert pos == neg


def test_the_same_paths_follow_the_danger_check_whichever_result_led_to_it(app, make_launch):
    """A positive screen with physical violence (the danger check asked at /result) and a negative one whose
    clinician asked the danger check anyway, with the same danger answers."""
    pos = pages_after(*screened(app, make_launch, HITS_POSITIVE, danger=da5("weapon")))
    neg = pages_after(*screened(app, make_launch, HITS_NEGATIVE, danger=da5("weapon"), ask_danger=True))
    assert "/l/<lid>/referrals" in neg["result"] and "/l/<lid>/step" in neg["result"]
    assert pos == neg
