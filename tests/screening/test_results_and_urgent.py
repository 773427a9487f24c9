"""One-line summaries, when the DA-5 follows, and the urgent box (who to call now, in order)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import default_context
from tests.screening.test_flow import NO, YES, Flow, bwh_context, da5

NY = ZoneInfo("America/New_York")
TUE_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=NY)
TUE_8PM = datetime(2026, 11, 24, 20, 0, tzinfo=NY)
THANKSGIVING_NOON = datetime(2026, 11, 26, 12, 0, tzinfo=NY)
NEVER, FREQUENTLY = "LA6270-8", "LA6482-9"


@pytest.fixture
def at(app):
    def _set(when: datetime) -> None:
        app.extensions["clock"] = lambda: when

    yield _set
    app.extensions.pop("clock", None)


def bwh_flow(client, make_launch) -> Flow:
    flow = Flow(client, make_launch(client, context=bwh_context()))
    flow.gate()
    return flow


def test_positive_without_physical_violence_skips_the_da5_but_offers_it(client, make_launch):
    """HITS 16 from insults, threats and screaming (hurt: never): positive, no DA-5 unless the clinician asks."""
    flow = bwh_flow(client, make_launch)
    r = flow.screen({"instrument": "hits", "q-hurt": NEVER, "q-insult": FREQUENTLY, "q-threaten": FREQUENTLY,
                     "q-scream": FREQUENTLY})
    assert r.headers["Location"].endswith("/result")
    page = flow.result()
    assert "Positive — HITS 16, cut-off &gt; 10." in page
    assert "Next: offer a referral and the handout." in page
    assert 'data-testid="ask-safety"' in page  # the clinician may still choose the DA-5
    page = flow.get(f"/l/{flow.lid}/more").get_data(as_text=True)
    assert 'data-instrument="da-5"' in page


@pytest.mark.parametrize(("form", "physical"), [
    ({"instrument": "pvs", "q-hurt": "no", "q-safe": "no", "q-previous": "no"}, False),        # "not safe" alone
    ({"instrument": "pvs", "q-hurt": "yes-partner", "q-safe": "yes", "q-previous": "no"}, True),
    ({"instrument": "e-hits", "q-hurt": "never", "q-insult": "fairly-often", "q-threaten": "never",
      "q-scream": "never", "q-sex": "never"}, False),                                            # E-HITS 8 from insults
    ({"instrument": "hark", "q-humiliation": NO, "q-afraid": NO, "q-rape": NO, "q-kick": YES}, True),
])
def test_the_da5_follows_only_when_physical_violence_was_reported(client, make_launch, form, physical):
    flow = bwh_flow(client, make_launch)
    r = flow.screen(form)
    # Always /result (review finding M2: the URL never tells); /result asks the DA-5 first when it follows.
    assert r.headers["Location"].endswith("/result")
    page = flow.get(r.headers["Location"]).get_data(as_text=True)
    assert ('data-instrument="da-5"' in page) == physical
    if physical:
        page = flow.get(r.headers["Location"]).get_data(as_text=True)
        assert "Physical violence reported. Next: five safety questions (DA-5)." in page
        assert 'data-testid="summary-line"' in page and "Positive — " in page


@pytest.mark.parametrize(("when", "number", "state"), [
    (TUE_10AM, "1-617-732-8753", "open"),
    (TUE_8PM, "1-617-732-5520 ext. 31808", "after_hours"),
    (THANKSGIVING_NOON, "1-617-732-5520 ext. 31808", "after_hours"),
])
def test_urgent_box_calls_the_site_program_on_the_number_that_answers_now(client, make_launch, at, when, number,
                                                                         state):
    at(when)
    flow = bwh_flow(client, make_launch)
    flow.screen({"instrument": "hits", "q-hurt": FREQUENTLY, "q-insult": FREQUENTLY, "q-threaten": FREQUENTLY,
                 "q-scream": FREQUENTLY})
    flow.danger(da5("escalation", "weapon", "jealousy"))
    page = flow.result()
    urgent = page.split('data-testid="urgent"', 1)[1].split("</section>", 1)[0]
    assert '<h1 id="urgent-title" data-testid="urgent-heading">High danger (DA-5 ≥ 3)</h1>' in urgent
    # Every yes is named, the one that is not a danger item too (3 of 5 yes, three named).
    assert ("DA-5: 3 of 5 yes — high risk of severe assault (cut-off ≥ 3). Yes to: violence getting worse, weapon, "
            "violent jealousy.") in urgent
    steps = [urgent.index(k) for k in ('data-testid="urgent-call"', 'data-testid="urgent-security"',
                                       'data-testid="urgent-hotlines"')]
    assert steps == sorted(steps)  # program, hospital security, then hotlines
    call = urgent.split('data-testid="urgent-call"', 1)[1].split("</li>", 1)[0]
    assert f'data-service="passageway" data-state="{state}"' in call and "Call Passageway at BWH now" in call
    assert number in call and "911" not in call
    assert ("open now" in call) == (state == "open")
    if when is THANKSGIVING_NOON:
        assert "closed today (Thanksgiving Day)" in call
    assert "call hospital security" in urgent
    assert "1-877-785-2020" in urgent and "1-800-799-7233" in urgent
    assert 'data-testid="strangulation"' not in urgent
    # 911 is said to the patient, not a step for the clinician.
    assert "If you are in immediate danger, call 911." in urgent.split('data-testid="say-911"', 1)[1]


def test_strangulation_prompts_an_injury_assessment(client, make_launch, at):
    at(TUE_10AM)
    flow = bwh_flow(client, make_launch)
    flow.screen({"instrument": "hits", "q-hurt": FREQUENTLY, "q-insult": NEVER, "q-threaten": NEVER,
                 "q-scream": NEVER})
    flow.danger(da5("strangulation"))
    page = flow.result()
    assert 'data-testid="urgent"' in page and 'data-testid="strangulation"' in page
    assert "Strangulation reported: assess for injury now." in page and "Messing, Campbell" in page


def test_urgent_box_without_a_known_site_lists_the_default_programs(client, make_launch, at):
    at(TUE_8PM)
    flow = Flow(client, make_launch(client, context=default_context(encounter=None)))
    flow.gate()
    flow.screen({"instrument": "hits", "q-hurt": FREQUENTLY, "q-insult": FREQUENTLY, "q-threaten": FREQUENTLY,
                 "q-scream": FREQUENTLY})
    flow.danger(da5("weapon"))
    page = flow.result()
    assert page.count('data-testid="urgent-call"') == 2
    assert "1-617-732-5520 ext. 31808" in page and "1-617-726-2241" in page


def test_referral_page_urgent_banner_keeps_the_numbers(client, make_launch, at):
    at(TUE_8PM)
    flow = bwh_flow(client, make_launch)
    flow.screen({"instrument": "hits", "q-hurt": FREQUENTLY, "q-insult": FREQUENTLY, "q-threaten": FREQUENTLY,
                 "q-scream": FREQUENTLY})
    flow.danger(da5("fear-for-life"))
    page = flow.get(f"/l/{flow.lid}/referrals").get_data(as_text=True)
    urgent = page.split('data-testid="urgent"', 1)[1].split("</section>", 1)[0]
    assert "1-617-732-5520 ext. 31808" in urgent and "1-877-785-2020" in urgent


@pytest.mark.parametrize("form", [
    {"instrument": "hits", "q-hurt": NEVER, "q-insult": NEVER, "q-threaten": NEVER, "q-scream": NEVER},  # negative
    {"instrument": "hits", "action": "decline"},                                                           # declined
    {"instrument": "hits", "q-hurt": NEVER, "q-insult": FREQUENTLY, "q-threaten": FREQUENTLY,
     "q-scream": FREQUENTLY},                                                                              # positive
])
def test_every_result_offers_the_handout_with_this_sites_program(client, make_launch, form):
    flow = bwh_flow(client, make_launch)
    flow.screen(form)
    page = flow.result()
    assert 'data-testid="result-handout"' in page and 'data-testid="say-handout"' in page
    handout = flow.get(f"/l/{flow.lid}/handout").get_data(as_text=True)
    items = [m.split('"')[0] for m in handout.split('data-testid="handout-item" data-service="')[1:]]
    assert items == ["passageway", "ma-safelink"]  # this site's program and the 24/7 line, not HAVEN
    assert 'data-print' in handout and 'data-testid="qr"' not in handout  # Print button; QR off by default


def test_confirmation_reminds_the_handout_says_what_social_work_does_and_done_ends_the_launch(client, make_launch):
    lid = make_launch(client, data={"writeback": {"referral_id": "no-such-referral"}})
    page = client.get(f"/l/{lid}/consent/done").get_data(as_text=True)
    assert 'data-testid="handout-reminder"' in page and f'href="/l/{lid}/handout"' in page
    assert "What social work does next" in page and "never when no way is safe" in page
    r = client.post(f"/l/{lid}/finish")
    assert r.status_code == 200 and 'data-testid="finished"' in r.get_data(as_text=True)
    assert client.get(f"/l/{lid}/").status_code in (403, 404, 410)  # the launch has ended
