"""The screening flow through the Flask test client: gate -> instrument -> score -> danger check -> result."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

import smart_app.screening.views
from config.current import settings_of
from tests.conftest import app_config, default_context
from tests.screening.helpers import launch_data

YES, NO = "LA33-6", "LA32-8"
HITS_POSITIVE = {"instrument": "hits", "q-hurt": "LA6482-9", "q-insult": "LA16644-9", "q-threaten": "LA10082-8",
                 "q-scream": "LA10066-1"}
HITS_NEGATIVE = {"instrument": "hits", "q-hurt": "LA6270-8", "q-insult": "LA10066-1", "q-threaten": "LA6270-8",
                 "q-scream": "LA6270-8"}
DA5_ITEMS = ("escalation", "weapon", "strangulation", "jealousy", "fear-for-life")


def da5(*yes: str) -> dict[str, str]:
    return {f"q-{i}": YES if i in yes else NO for i in DA5_ITEMS}


def bwh_context():
    ctx = default_context()
    ctx["encounter"] = {"id": "enc-bwh", "class": "AMB", "locations": [{
        "id": "loc-bwh", "name": "Brigham and Women's Hospital",
        "identifiers": [{"system": "urn:ipv-sandbox:site", "value": "bwh"}], "postalCode": "02115"}],
        "service_provider": {"id": "org-bwh", "name": "Brigham and Women's Hospital", "identifiers": []}}
    return ctx


class Flow:
    """Drives one launch through the pages, recording every URL the browser would see."""

    def __init__(self, client, lid):
        self.client, self.lid, self.urls = client, lid, []

    def get(self, path, **kw):
        self.urls.append(path)
        return self.client.get(path, **kw)

    def post(self, path, data):
        self.urls.append(path)
        r = self.client.post(path, data=data)
        if r.status_code == 302:
            self.urls.append(r.headers["Location"])
        return r

    def gate(self):
        r = self.post(f"/l/{self.lid}/gate", {"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
        assert r.status_code == 302 and r.headers["Location"].endswith(f"/l/{self.lid}/screen")
        return r

    def screen(self, data):
        return self.post(f"/l/{self.lid}/screen", data)

    def danger(self, data):
        return self.post(f"/l/{self.lid}/more", data)

    def result(self):
        r = self.get(f"/l/{self.lid}/result")
        assert r.status_code == 200
        return r.get_data(as_text=True)


@pytest.fixture
def flow(client, make_launch):
    return Flow(client, make_launch(client))


BOSTON = ZoneInfo("America/New_York")
AFTER_HOURS = datetime(2026, 11, 24, 20, 0, tzinfo=BOSTON)  # a Tuesday evening: the advocates' pagers answer
IN_HOURS = datetime(2026, 11, 24, 10, 0, tzinfo=BOSTON)  # the same Tuesday morning: their main lines do


@pytest.fixture
def after_hours(app):
    """The urgent box gives the number that answers now: these tests read the after-hours pagers, whatever the
    hour the suite runs at."""
    app.extensions["clock"] = lambda: AFTER_HOURS
    yield
    app.extensions.pop("clock", None)


def test_instrument_waits_for_the_private_gate(flow):
    r = flow.get(f"/l/{flow.lid}/screen")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/l/{flow.lid}/")
    assert flow.client.post(f"/l/{flow.lid}/screen", data=HITS_POSITIVE).status_code == 302
    assert "screening" not in launch_data(flow.client.application, flow.lid)


def test_gate_then_default_hits_page_rendered_from_the_questionnaire(flow):
    flow.gate()
    page = flow.get(f"/l/{flow.lid}/screen").get_data(as_text=True)
    assert 'data-instrument="hits"' in page
    assert "How often does your partner:" in page
    for link_id in ("hurt", "insult", "threaten", "scream"):
        assert page.count(f'name="q-{link_id}"') == 5
    assert "Fairly often" in page and "Patient declines" in page


def test_negative_screen_goes_to_result_with_universal_education(flow, app):
    flow.gate()
    r = flow.screen(HITS_NEGATIVE)
    assert r.headers["Location"].endswith(f"/l/{flow.lid}/result")
    page = flow.result()
    assert 'data-interpretation="negative"' in page and "Negative — HITS 5, cut-off &gt; 10." in page
    assert 'data-testid="universal-education"' in page and 'data-testid="urgent"' not in page
    for number in ("1-877-785-2020", "1-800-799-7233"):
        assert number in page
    s = launch_data(app, flow.lid)["screening"]
    assert s["instrument"] == "hits" and s["questionnaire"].endswith("/Questionnaire/hits")
    assert s["answers"] == {"hurt": "LA6270-8", "insult": "LA10066-1", "threaten": "LA6270-8", "scream": "LA6270-8"}
    assert (s["score"], s["interpretation"], s["danger"], s["danger_items"]) == (5, "negative", False, [])
    assert s["language"] == "en" and s["version"] and s["completed_at"]
    assert s["answer_codings"]["insult"] == {
        "system": "http://loinc.org", "code": "LA10066-1",
        "display": "Rarely", "score": 2}


def test_declined_screen_offers_resources_anyway_and_skips_the_danger_check(flow, app):
    flow.gate()
    r = flow.screen({"instrument": "hits", "action": "decline", "q-hurt": "LA6482-9"})
    assert r.headers["Location"].endswith("/result")
    page = flow.result()
    assert 'data-interpretation="declined"' in page and 'data-testid="universal-education"' in page
    assert "1-877-785-2020" in page and "1-800-799-7233" in page
    s = launch_data(app, flow.lid)["screening"]
    assert (s["interpretation"], s["score"], s["answers"]) == ("declined", None, {})


def test_positive_screen_asks_the_danger_check_then_offers_referral(flow, app):
    flow.gate()
    r = flow.screen(HITS_POSITIVE)
    # The same next page as a negative screen (review finding M2): /result asks the danger check first.
    assert r.headers["Location"].endswith(f"/l/{flow.lid}/result")
    page = flow.get(r.headers["Location"]).get_data(as_text=True)
    assert 'data-instrument="da-5"' in page and "capable of killing you" in page
    assert flow.danger(da5("jealousy")).headers["Location"].endswith("/result")
    page = flow.result()
    assert 'data-interpretation="positive"' in page and "Positive — HITS 14, cut-off &gt; 10." in page
    assert "DA-5: 1 of 5 yes — below the high-risk cut-off (≥ 3)." in page
    assert 'data-testid="urgent"' not in page
    # The referral blueprint may not be installed: either its link or the plain advice, never a 500.
    assert 'data-testid="to-referral"' in page or "Offer the programs below" in page
    data = launch_data(app, flow.lid)
    assert data["screening"]["danger"] is False
    assert data["danger_check"]["answers"]["jealousy"] == YES and data["danger_check"]["score"] == 1


@pytest.mark.parametrize("item", ["weapon", "strangulation", "fear-for-life", "escalation"])
def test_danger_answer_shows_the_urgent_path_first(flow, app, item, after_hours):
    flow.gate()
    flow.screen(HITS_POSITIVE)
    flow.danger(da5(item))
    page = flow.result()
    urgent = page.index('data-testid="urgent"')
    assert urgent < page.index('data-testid="summary"') and urgent < page.index('data-testid="resources"')
    block = page[urgent:page.index("</section>", urgent)]
    assert "911" in block and "1-877-785-2020" in block
    # Default context: MGH Chelsea -> HAVEN's after-hours advocate pager, as the seed gives it.
    assert "HAVEN at MGH" in block and "1-617-726-2241" in block and "1-617-732-5520" not in block
    s = launch_data(app, flow.lid)["screening"]
    assert s["danger"] is True and s["danger_items"] == [item]


def test_urgent_path_at_a_brigham_site_pages_passageway(client, make_launch, after_hours):
    flow = Flow(client, make_launch(client, context=bwh_context()))
    flow.gate()
    flow.screen(HITS_POSITIVE)
    flow.danger(da5("weapon", "strangulation"))
    page = flow.result()
    block = page[page.index('data-testid="urgent"'):page.index('data-testid="summary"')]
    assert "Passageway at BWH" in block and "1-617-732-5520 ext. 31808" in block and "1-617-726-2241" not in block


def test_partly_answered_form_is_shown_again_with_answers_kept(flow, app):
    flow.gate()
    r = flow.screen({"instrument": "hits", "q-hurt": "LA10082-8"})
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert 'role="alert"' in page and re.search(r'value="LA10082-8"\s[^>]*checked', page)
    assert "screening" not in launch_data(app, flow.lid)


def test_one_clinicians_marked_answers_never_reach_another_launchs_blank_form(flow, app, make_launch):
    """Blank forms reuse questions rendered once per instrument and languages (screening.question_html)."""
    flow.gate()
    checked = re.compile(r"\schecked[\s>]")
    page = flow.screen({"instrument": "hits", "q-hurt": "LA10082-8", "q-scream": "LA6482-9"}).get_data(as_text=True)
    assert len(checked.findall(page)) == 2 and 'class="question missing"' in page
    other_client = app.test_client()
    other = Flow(other_client, make_launch(other_client))
    other.gate()
    blank = other.get(f"/l/{other.lid}/screen").get_data(as_text=True)
    assert not checked.search(blank) and 'class="question missing"' not in blank and 'role="alert"' not in blank
    assert 'name="q-hurt" value="LA10082-8"' in blank
    assert not checked.search(flow.get(f"/l/{flow.lid}/screen").get_data(as_text=True))  # the same blank form


def test_another_offered_instrument_can_be_chosen(flow, app):
    flow.gate()
    page = flow.get(f"/l/{flow.lid}/screen?instrument=hark").get_data(as_text=True)
    assert 'data-instrument="hark"' in page and "Within the last year" in page
    flow.screen({"instrument": "hark", "q-humiliation": NO, "q-afraid": YES, "q-rape": NO, "q-kick": NO})
    assert launch_data(app, flow.lid)["screening"]["interpretation"] == "positive"


def test_an_instrument_not_offered_falls_back_to_the_default(flow):
    flow.gate()
    assert 'data-instrument="hits"' in flow.get(f"/l/{flow.lid}/screen?instrument=da-5").get_data(as_text=True)
    assert 'data-instrument="hits"' in flow.get(f"/l/{flow.lid}/screen?instrument=nope").get_data(as_text=True)


def test_deployment_config_picks_default_and_offered(tmp_path):
    from smart_app import create_app
    from tests.conftest import launch_for

    app = create_app(app_config(f"sqlite:///{tmp_path / 'a.db'}", DEFAULT_INSTRUMENT="pvs",
                                OFFERED_INSTRUMENTS=["pvs", "hark"]))
    try:
        client = app.test_client()
        lid = launch_for(app, client, data={"gate": {"status": "confirmed"}})
        page = client.get(f"/l/{lid}/screen").get_data(as_text=True)
        assert 'data-instrument="pvs"' in page
        assert 'data-testid="use-hark"' in page and 'data-testid="use-hits"' not in page
    finally:
        app.extensions["db_engine"].dispose()


def test_no_answers_in_logs(flow, caplog):
    caplog.set_level(logging.DEBUG)
    flow.gate()
    flow.screen(HITS_POSITIVE)
    flow.danger(da5("weapon"))
    flow.result()
    text = caplog.text
    for secret in ("LA6482-9", "LA16644-9", "LA10082-8", "LA10066-1", YES, "weapon", "Frequently", "positive",
                   "danger"):
        assert secret not in text
    assert "screening completed" in text  # the log is there, just without answers or result


def test_no_answers_in_any_url(flow):
    flow.gate()
    flow.get(f"/l/{flow.lid}/screen")
    flow.screen(HITS_POSITIVE)
    flow.danger(da5("weapon"))
    page = flow.result()
    urls = flow.urls + re.findall(r'href="([^"]+)"', page) + re.findall(r'action="([^"]+)"', page)
    for url in urls:
        # The random launch id may itself contain "q-": look only at what the app put around it.
        path = url.replace(flow.lid, "<lid>")
        assert not re.search(r"q-|frequently|fairly-often|LA6482-9|LA16644-9|LA33-6|LA32-8|score", path), url


def test_nothing_is_written_to_the_chart(flow, monkeypatch):
    import fhir.client
    import smart_app.launch.ehr

    def refuse(*a, **kw):
        raise AssertionError("screening must not call the EHR")

    monkeypatch.setattr(smart_app.launch.ehr, "fhir_client_for", refuse)
    for name in ("create", "update", "bundle"):
        monkeypatch.setattr(fhir.client.FhirClient, name, refuse)
    flow.gate()
    flow.screen(HITS_POSITIVE)
    flow.danger(da5("weapon"))
    assert "Nothing has been written to the chart." in flow.result()


def test_every_screening_page_is_no_store(flow):
    pages = [flow.get(f"/l/{flow.lid}/")]
    flow.gate()
    pages.append(flow.get(f"/l/{flow.lid}/screen"))
    flow.screen(HITS_POSITIVE)
    pages.append(flow.get(f"/l/{flow.lid}/more"))
    flow.danger(da5())
    pages.append(flow.get(f"/l/{flow.lid}/result"))
    for r in pages:
        assert r.status_code == 200 and "no-store" in r.headers["Cache-Control"]


def test_not_now_records_only_in_the_app_and_reminds_at_the_gate(flow, app):
    r = flow.post(f"/l/{flow.lid}/gate", {"action": "not_now"})
    assert r.headers["Location"].endswith("/not-now")
    data = launch_data(app, flow.lid)
    assert data["gate"]["status"] == "not_now" and "screening" not in data
    assert 'data-testid="gate-reminder"' in flow.get(f"/l/{flow.lid}/").get_data(as_text=True)


def test_csrf_is_enforced_on_the_answer_form(tmp_path):
    from smart_app import create_app
    from tests.conftest import launch_for

    app = create_app(app_config(f"sqlite:///{tmp_path / 'c.db'}", WTF_CSRF_ENABLED=True))
    try:
        client = app.test_client()
        lid = launch_for(app, client, data={"gate": {"status": "confirmed"}})
        assert client.post(f"/l/{lid}/screen", data=HITS_POSITIVE).status_code == 400
        page = client.get(f"/l/{lid}/screen").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        assert client.post(f"/l/{lid}/screen", data=dict(HITS_POSITIVE, csrf_token=token)).status_code == 302
    finally:
        app.extensions["db_engine"].dispose()


# ---------------------------------------------------------------- Spanish


def test_spanish_from_patient_communication(client, make_launch, app):
    ctx = default_context()
    ctx["patient"] = dict(ctx["patient"], language="es", languages=["es"])
    flow = Flow(client, make_launch(client, context=ctx))
    gate = flow.get(f"/l/{flow.lid}/").get_data(as_text=True)
    # Two languages at once: the clinician's page stays in the deployment's language (English) ...
    assert '<html lang="en" dir="ltr">' in gate and "Before you ask" in gate and "Quick exit" in gate
    # the patient's language
    assert '<span class="current" lang="es" dir="ltr" aria-current="true">Español</span>' in gate
    flow.gate()
    page = flow.get(f"/l/{flow.lid}/screen").get_data(as_text=True)
    # ... the questions are read aloud in Spanish, with the English beneath each one.
    assert '<span lang="es" dir="ltr" class="read-aloud">Dígame con qué frecuencia su pareja:</span>' in page
    assert '<span lang="es" dir="ltr" class="read-aloud">1. Le hace daño físico</span>' in page
    assert '<span class="clinician-text" lang="en" dir="ltr">Physically hurt you</span>' in page
    assert "Con mucha frecuencia" in page and "Read each question to the patient" in page
    assert 'data-testid="translation-note"' in page and "not a validated version" in page
    flow.screen(HITS_POSITIVE)
    flow.danger(da5("strangulation"))
    app.extensions["clock"] = lambda: AFTER_HOURS
    try:
        result = flow.result()
    finally:
        app.extensions.pop("clock")
    # Strangulation alone is high danger (the DA-5 file flags it always-high, as the LAP 2.0 revision counts it).
    assert "High danger (strangulation reported)" in result and "after hours: page the advocate on call" in result
    assert '<q lang="es" dir="ltr">Si está en peligro inmediato, llame al 911.</q>' in result  # said to the patient
    assert launch_data(app, flow.lid)["screening"]["language"] == "es"


def test_language_switch_on_the_page_keeps_the_launch(flow, app):
    gate = flow.get(f"/l/{flow.lid}/").get_data(as_text=True)
    link = re.search(r'href="([^"]+)"[^>]*data-testid="lang-es"', gate).group(1)
    assert link.startswith(f"/l/{flow.lid}/")
    switched = flow.get(link).get_data(as_text=True)
    # one switch: the patient's
    assert "Before you ask" in switched and 'lang="es" dir="ltr" aria-current="true"' in switched
    flow.gate()
    # The choice stays for the rest of the launch, without ?lang on later pages.
    assert "Le hace daño físico" in flow.get(f"/l/{flow.lid}/screen").get_data(as_text=True)
    assert launch_data(app, flow.lid)["locale"] == "es"
    english = flow.get(f"/l/{flow.lid}/screen?lang=en&instrument=hits").get_data(as_text=True)
    assert "Physically hurt you" in english and 'data-testid="translation-note"' not in english
    assert "Le hace daño físico" not in english and 'class="clinician-text"' not in english


def test_result_without_a_screen_goes_back_to_the_gate(flow):
    r = flow.get(f"/l/{flow.lid}/result")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/l/{flow.lid}/")


def test_done_with_nothing_marked_is_not_taken_as_declined(flow, app):
    flow.gate()
    r = flow.screen({"instrument": "hits", "action": "submit"})
    assert r.status_code == 400 and 'role="alert"' in r.get_data(as_text=True)
    assert "screening" not in launch_data(app, flow.lid)


def test_quick_exit_server_side_ends_the_launch_and_nothing_comes_back(flow, app):
    flow.gate()
    flow.screen(HITS_POSITIVE)
    r = flow.client.post("/exit")
    assert r.status_code == 302 and r.headers["Location"] == settings_of(app).neutral_exit_url
    assert "no-store" in r.headers["Cache-Control"] and "cookies" in r.headers["Clear-Site-Data"]
    for path in ("/", "/screen", "/more", "/result"):
        back = flow.get(f"/l/{flow.lid}{path}")
        assert back.status_code == 404 and "no-store" in back.headers["Cache-Control"]
        assert "Rosa Test" not in back.get_data(as_text=True)


def test_every_page_has_the_quick_exit_button_and_script(flow):
    pages = [flow.get(f"/l/{flow.lid}/").get_data(as_text=True)]
    flow.gate()
    pages.append(flow.get(f"/l/{flow.lid}/screen").get_data(as_text=True))
    flow.screen(HITS_NEGATIVE)
    pages.append(flow.result())
    for page in pages:
        assert 'id="quick-exit"' in page and "quick_exit.js" in page and 'target="_top"' in page


def test_a_site_instrument_without_spanish_is_marked_english_on_a_spanish_page(tmp_path):
    import json

    from fhir.questionnaires import DEFAULT_DIR
    from smart_app import create_app
    from tests.conftest import launch_for

    raw = json.loads((DEFAULT_DIR / "hark.json").read_text(encoding="utf-8"))
    raw.update(id="site-hark", url="http://example.org/site/Questionnaire/site-hark", title="Site HARK")
    raw.pop("_title")
    for item in raw["item"]:
        item.pop("_text", None)
    site = tmp_path / "site"
    site.mkdir()
    (site / "site-hark.json").write_text(json.dumps(raw), encoding="utf-8")
    app = create_app(app_config(f"sqlite:///{tmp_path / 's.db'}", INSTRUMENT_DIRS=[str(site)],
                                OFFERED_INSTRUMENTS=["site-hark"], DEFAULT_INSTRUMENT="site-hark"))
    try:
        client = app.test_client()
        lid = launch_for(app, client, data={"gate": {"status": "confirmed"}, "locale": "es"})
        page = client.get(f"/l/{lid}/screen").get_data(as_text=True)
        assert '<html lang="en" dir="ltr">' in page and "Site HARK</p>" in page  # one tap away (neutral headings)
        assert '<span lang="en" dir="ltr" class="read-aloud">1. Within the last year' in page
        assert '<span lang="es" dir="ltr">Sí</span>' in page  # answer displays still carry their Spanish
        # No Spanish version of this instrument: the page says to use an interpreter, from the English shown.
        assert "No Spanish version of this questionnaire: use an interpreter" in page
        assert page.count('data-testid="translation-note"') == 1
    finally:
        app.extensions["db_engine"].dispose()


def _urgent_block(client, make_launch, context):
    flow = Flow(client, make_launch(client, context=context))
    flow.gate()
    flow.screen(HITS_POSITIVE)
    flow.danger(da5("weapon"))
    page = flow.result()
    return page[page.index('data-testid="urgent"'):page.index('data-testid="summary"')]


def test_urgent_path_outside_both_networks_gives_no_other_hospitals_pager(client, make_launch):
    ctx = default_context()
    ctx["encounter"] = {"id": "enc-b", "class": "AMB", "locations": [{
        "id": "loc-baystate", "name": "Baystate Medical Center",
        "identifiers": [{"system": "urn:ipv-sandbox:site", "value": "baystate"}], "postalCode": "01199"}],
        "service_provider": {"id": "org-baystate", "name": "Baystate Health", "identifiers": []}}
    block = _urgent_block(client, make_launch, ctx)
    assert "1-877-785-2020" in block and 'data-testid="no-advocate"' in block
    assert "1-617-726-2241" not in block and "1-617-732-5520" not in block


def test_urgent_path_without_an_encounter_lists_every_advocate_pager(client, make_launch, after_hours):
    block = _urgent_block(client, make_launch, default_context(encounter=None))
    assert "1-617-732-5520 ext. 31808" in block and "1-617-726-2241" in block


def test_urgent_path_falls_back_to_the_seed_when_the_directory_is_unreadable(client, make_launch, monkeypatch,
                                                                             after_hours):
    def broken(app):
        raise OSError("directory unreadable")

    monkeypatch.setattr(smart_app.screening.views, "store_for", broken)
    block = _urgent_block(client, make_launch, bwh_context())
    assert "Passageway at BWH" in block and "1-617-732-5520 ext. 31808" in block and "1-617-726-2241" not in block


@pytest.mark.postgres
def test_full_flow_on_postgresql(postgres_url):
    from smart_app import create_app
    from tests.conftest import launch_for

    app = create_app(app_config(postgres_url))
    try:
        client = app.test_client()
        flow = Flow(client, launch_for(app, client))
        flow.gate()
        flow.screen(HITS_POSITIVE)
        flow.danger(da5("weapon"))
        assert 'data-testid="urgent"' in flow.result()
        s = launch_data(app, flow.lid)["screening"]
        assert (s["interpretation"], s["danger"], s["danger_items"]) == ("positive", True, ["weapon"])
    finally:
        app.extensions["db_engine"].dispose()


def test_urls_never_name_the_result(flow):
    # Browser history and access logs see paths: none may tell a positive screen or danger apart.
    flow.gate()
    flow.screen(HITS_POSITIVE)
    flow.danger(da5("weapon"))
    flow.result()
    for url in flow.urls:
        assert not re.search(r"danger|positive|negative|urgent|declin|violence|abuse", url), url


def test_after_a_negative_screen_the_clinician_may_still_ask_the_safety_questions(flow, app):
    flow.gate()
    flow.screen(HITS_NEGATIVE)
    page = flow.result()
    link = re.search(r'href="([^"]+)" data-testid="ask-safety"', page).group(1)
    assert link == f"/l/{flow.lid}/more"
    flow.danger(da5("strangulation"))
    page = flow.result()
    assert 'data-testid="urgent"' in page and 'data-interpretation="negative"' in page
    assert 'data-testid="ask-safety"' not in page
    assert launch_data(app, flow.lid)["screening"]["danger"] is True


@pytest.mark.parametrize("answers", [HITS_NEGATIVE, HITS_POSITIVE], ids=["negative", "positive"])
def test_every_result_offers_done_back_to_the_chart_which_ends_the_launch(flow, answers):
    flow.gate()
    flow.screen(answers)
    if answers is HITS_POSITIVE:  # physical violence: the danger check comes first
        flow.danger(da5())
    page = flow.result()
    assert 'data-testid="done-back-to-chart"' in page and f'action="/l/{flow.lid}/finish"' in page
    done = flow.post(f"/l/{flow.lid}/finish", {})
    assert done.status_code == 200 and 'data-testid="finished"' in done.get_data(as_text=True)
    assert flow.get(f"/l/{flow.lid}/result").status_code != 200  # the launch's pages stop working


@pytest.mark.parametrize(("settings", "neutral"), [
    ({}, True),  # the default: a shared screen
    ({"SCREEN_SETTING": "private"}, False),
    ({"SCREEN_SETTING": "private", "NEUTRAL_HEADINGS": True}, True),
    ({"SCREEN_SETTING": "shared", "NEUTRAL_HEADINGS": False}, False),
])
def test_neutral_headings_on_shared_screens_with_the_instrument_one_tap_away(tmp_path, settings, neutral):
    from smart_app import create_app
    from tests.conftest import launch_for

    app = create_app(app_config(f"sqlite:///{tmp_path / 'n.db'}", **settings))
    try:
        flow = Flow(app.test_client(), None)
        flow.lid = launch_for(app, flow.client)
        flow.gate()
        h1 = re.compile(r"<h1[^>]*>([^<]*)</h1>")
        page = flow.get(f"/l/{flow.lid}/screen").get_data(as_text=True)
        if neutral:
            assert h1.search(page).group(1) == "Check-in questions"
            name = page.split('data-testid="instrument-name"')[1].split("</details>")[0]
            assert "<summary>Which questionnaire?</summary>" in name and "HITS" in name
        else:
            assert "HITS" in h1.search(page).group(1) and 'data-testid="instrument-name"' not in page
        flow.screen(HITS_POSITIVE)
        page = flow.get(f"/l/{flow.lid}/result").get_data(as_text=True)  # the danger check first
        assert (h1.search(page).group(1) == "A few more questions") is neutral
        assert ("DA-5" in h1.search(page).group(1)) is not neutral
        flow.danger(da5())
        page = flow.result()
        assert (h1.search(page).group(1) == "Next steps") is neutral
    finally:
        app.extensions["db_engine"].dispose()


def test_urgent_path_in_hours_gives_the_programs_main_line(client, make_launch, app):
    app.extensions["clock"] = lambda: IN_HOURS
    block = _urgent_block(client, make_launch, default_context())
    assert "HAVEN at MGH" in block and "1-617-724-0054" in block and "1-617-726-2241" not in block
