"""Screening in a real browser (Debian Chromium via Playwright): Spanish positive screen, quick exit by
button and Esc (then Back shows nothing of the app), keyboard-only completion, axe-core checks.

Chromium comes from the shared ``browser`` fixture (tests/browser/conftest.py). Most tests run the app
on a real port with CSRF on, insert a launch the way ``make_launch`` does and give the browser the
matching signed session cookie, so they need no EHR; one launches for real from the sandbox EHR
(``launched_page``). The neutral exit page is served by Playwright's router (no network).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.fernet import Fernet

from config.current import replace_settings, settings_of
from sandbox_ehr.harness.live import LiveServer
from tests.conftest import default_context, store_launch
from tests.screening.helpers import launch_data
from tests.support.pages import pass_gate

pytestmark = pytest.mark.browser

NEUTRAL = "http://neutral.test/weather"
LID = re.compile(r"/l/([A-Za-z0-9_-]+)/")
PATIENT = "Rosa Test"


@pytest.fixture(scope="module")
def screening_app(tmp_path_factory) -> Iterator[tuple[Any, str]]:
    from smart_app import create_app

    db = tmp_path_factory.mktemp("screening-browser") / "app.db"
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{db}", "SECRET_KEY": secrets.token_urlsafe(16),
                      "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "SESSION_COOKIE_SECURE": False,
                      "NEUTRAL_EXIT_URL": NEUTRAL})
    server = LiveServer(app).start()
    yield app, server.url
    server.stop()
    app.extensions["db_engine"].dispose()


@pytest.fixture
def open_launch(browser, screening_app):
    """open_launch(context=None, data=None) -> (page, lid): a fresh browser profile holding one active launch."""
    app, url = screening_app
    contexts = []

    def _open(context: dict[str, Any] | None = None, data: dict[str, Any] | None = None):
        bid = secrets.token_urlsafe(24)
        lid = store_launch(app, bid=bid, context=context, data=data)
        cookie = app.session_interface.get_signing_serializer(app).dumps({"bid": bid})
        ctx = browser.new_context()
        contexts.append(ctx)
        ctx.set_default_timeout(15_000)
        ctx.add_cookies([{"name": app.config["SESSION_COOKIE_NAME"], "value": cookie, "url": url}])
        ctx.route("http://neutral.test/**", lambda route: route.fulfill(
            status=200, content_type="text/html", body="<!doctype html><title>Weather</title><h1>Forecast</h1>"))
        page = ctx.new_page()
        page.goto(f"{url}/l/{lid}/")
        return page, lid

    yield _open
    for ctx in contexts:
        ctx.close()


# HITS answers are LOINC answer codes; tests name them by their English display.
HITS_LA = {"never": "LA6270-8", "rarely": "LA10066-1", "sometimes": "LA10082-8", "fairly-often": "LA16644-9",
           "frequently": "LA6482-9"}


def answer(page, link_id: str, code: str) -> None:
    code = HITS_LA.get(code, code)
    page.locator(f'input[name="q-{link_id}"][value="{code}"]').check()


def spanish_context():
    ctx = default_context()
    ctx["patient"] = dict(ctx["patient"], language="es", languages=["es"])
    return ctx


def test_full_positive_hits_screen_in_spanish(open_launch, screening_app):
    page, lid = open_launch(context=spanish_context())
    # The clinician's page in English; the patient's language is Spanish.
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", level=1).inner_text() == "Before you ask"
    pass_gate(page)
    assert "Dígame con qué frecuencia su pareja:" in page.content()
    assert page.get_by_test_id("translation-note").is_visible()
    for link_id, code in (("hurt", "sometimes"), ("insult", "frequently"), ("threaten", "rarely"),
                          ("scream", "fairly-often")):
        answer(page, link_id, code)
    page.get_by_role("button", name="Done").click()
    page.wait_for_url("**/result")  # the danger check is asked at /result (finding M2)
    assert "¿Cree que su pareja es capaz de matarle?" in page.content()
    for link_id in ("escalation", "weapon", "strangulation", "jealousy", "fear-for-life"):
        answer(page, link_id, "LA32-8")
    page.get_by_role("button", name="Done").click()
    page.wait_for_url("**/result")
    page.get_by_test_id("summary").wait_for()  # /result again after the danger check
    summary = page.get_by_test_id("summary")
    assert summary.get_attribute("data-interpretation") == "positive"
    assert "Positive — HITS 14, cut-off > 10." in summary.inner_text()
    assert page.get_by_test_id("urgent").count() == 0
    assert "1-877-785-2020" in page.get_by_test_id("resources").inner_text()
    s = launch_data(screening_app[0], lid)["screening"]
    assert (s["score"], s["interpretation"], s["language"]) == (14, "positive", "es")


def test_language_switch_in_the_browser_keeps_the_launch(open_launch):
    page, lid = open_launch()
    with page.expect_navigation():
        page.get_by_test_id("lang-es").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Before you ask"  # the clinician's language
    assert page.get_by_test_id("lang-switch").locator('[aria-current="true"]').inner_text() == "Español"
    assert f"/l/{lid}/" in page.url
    pass_gate(page)
    assert "Le hace daño físico" in page.content()


def test_danger_answer_shows_urgent_path_first(open_launch, screening_app):
    app, _url = screening_app
    # The urgent box gives the number that answers now: a Tuesday evening, when HAVEN's pager does.
    app.extensions["clock"] = lambda: datetime(2026, 11, 24, 20, 0, tzinfo=ZoneInfo("America/New_York"))
    try:
        _danger_answer_shows_urgent_path_first(open_launch)
    finally:
        app.extensions.pop("clock", None)


def _danger_answer_shows_urgent_path_first(open_launch) -> None:
    page, _ = open_launch()
    pass_gate(page)
    for link_id in ("hurt", "insult", "threaten", "scream"):
        answer(page, link_id, "frequently")
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")  # the danger check is asked at /result (finding M2)
    for link_id in ("escalation", "weapon", "jealousy", "fear-for-life"):
        answer(page, link_id, "LA32-8")
    answer(page, "strangulation", "LA33-6")
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")
    page.get_by_test_id("summary").wait_for()  # /result again after the danger check
    first_heading = page.locator("main h1, main h2").first
    assert first_heading.inner_text() == "High danger (strangulation reported)"  # high on its own (LAP 2.0)
    urgent = page.get_by_test_id("urgent").inner_text()
    assert "911" in urgent and "1-877-785-2020" in urgent and "1-617-726-2241" in urgent


def launch_status_after_exit(app, lid: str, page) -> str | None:
    """The launch's status once quick exit has been recorded. The Esc path ends the launch with a beacon POST
    the browser sends alongside the navigation: on a loaded machine it may land a moment after the neutral page
    shows, so wait for it (bounded, 10 s) before reading."""
    from smart_app.store.db import session_scope
    from smart_app.store.models import LaunchRecord

    status = None
    for _ in range(100):
        with app.app_context(), session_scope(app) as db:
            status = db.get(LaunchRecord, lid).status
        if status == "ended":
            break
        page.wait_for_timeout(100)
    return status


def _assert_exited(page, screening_app, lid) -> None:
    page.wait_for_url(NEUTRAL)
    assert PATIENT not in page.content()
    page.go_back()
    page.wait_for_load_state()
    # Back re-asks the server (no-store); the launch has ended, so nothing of it comes back.
    assert PATIENT not in page.content()
    assert "Physically hurt you" not in page.content()
    assert launch_status_after_exit(screening_app[0], lid, page) == "ended"


def test_quick_exit_button_then_back_shows_nothing(open_launch, screening_app):
    page, lid = open_launch()
    pass_gate(page)
    assert PATIENT in page.content()
    page.get_by_role("button", name="Quick exit").click()
    _assert_exited(page, screening_app, lid)


def test_quick_exit_by_escape_then_back_shows_nothing(open_launch, screening_app):
    page, lid = open_launch()
    pass_gate(page)
    answer(page, "hurt", "frequently")
    page.keyboard.press("Escape")
    _assert_exited(page, screening_app, lid)


def test_quick_exit_blanks_the_page_before_leaving(open_launch):
    page, _ = open_launch()
    # A second listener on the same target runs right after quick_exit.js's, in the same task,
    # before any navigation: it reports what is on screen at that moment.
    page.evaluate("""document.addEventListener('keydown', function () {
        console.log(JSON.stringify({visibility: document.documentElement.style.visibility,
                                    children: document.body.children.length, title: document.title,
                                    text: document.body.innerText}));
    }, true)""")
    with page.expect_console_message() as message:
        page.keyboard.press("Escape")

    state = json.loads(message.value.text)
    assert state == {"visibility": "hidden", "children": 0, "title": "", "text": ""}
    page.wait_for_url(NEUTRAL)


def test_quick_exit_inside_an_ehr_frame_replaces_the_top_window(open_launch, screening_app):
    page, lid = open_launch()
    url = screening_app[1]
    # A same-origin host page stands in for the EHR (frame-ancestors allows 'self' only).
    host = f"{url}/__ehr_frame_host"
    page.context.route(host, lambda route: route.fulfill(
        status=200, content_type="text/html",
        body=f'<!doctype html><title>EHR</title><iframe id="app" src="{url}/l/{lid}/" width="900" height="700">'
             "</iframe>"))
    page.goto(host)
    frame = page.frame_locator("#app")
    frame.get_by_role("button", name="Quick exit").click()
    page.wait_for_url(NEUTRAL)
    assert "Forecast" in page.content()


def test_keyboard_only_completion(open_launch, screening_app):
    page, lid = open_launch()
    page.locator("body").focus()

    def tab_to(test_id: str) -> None:
        for _ in range(30):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement && document.activeElement.dataset.testid") == test_id:
                return
        raise AssertionError(f"Tab never reached {test_id}")

    tab_to("gate-alone")
    page.keyboard.press("Space")
    tab_to("gate-interpreter")
    page.keyboard.press("Space")
    tab_to("gate-start")
    page.keyboard.press("Enter")
    page.wait_for_url("**/screen")
    # Tab enters each radio group on its first option ("Never"); Space selects it.
    for link_id in ("hurt", "insult", "threaten", "scream"):
        for _ in range(30):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.name") == f"q-{link_id}":
                break
        page.keyboard.press("Space")
    tab_to("submit")
    page.keyboard.press("Enter")
    page.wait_for_url("**/result")
    page.get_by_test_id("summary").wait_for()  # /result again after the danger check
    assert page.get_by_test_id("summary").get_attribute("data-interpretation") == "negative"
    s = launch_data(screening_app[0], lid)["screening"]
    assert s["answers"] == {"hurt": "LA6270-8", "insult": "LA6270-8", "threaten": "LA6270-8", "scream": "LA6270-8"}


def serious_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']}" for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")]


@pytest.mark.parametrize("lang", ["en", "es"])
def test_axe_gate_instrument_and_result_have_no_serious_violations(open_launch, lang):
    page, lid = open_launch(context=spanish_context() if lang == "es" else None)
    found = {"gate": serious_violations(page)}
    pass_gate(page)
    found["instrument"] = serious_violations(page)
    page.get_by_test_id("submit").click()  # nothing answered: the error state is checked too
    page.get_by_role("alert").wait_for()
    found["instrument-error"] = serious_violations(page)
    for link_id in ("hurt", "insult", "threaten", "scream"):
        answer(page, link_id, "frequently")
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")  # the danger check is asked at /result (finding M2)
    found["danger"] = serious_violations(page)
    for link_id in ("escalation", "strangulation", "jealousy", "fear-for-life"):
        answer(page, link_id, "LA32-8")
    answer(page, "weapon", "LA33-6")
    page.get_by_test_id("submit").click()
    page.wait_for_url("**/result")
    page.get_by_test_id("summary").wait_for()  # /result again after the danger check
    found["result"] = serious_violations(page)
    assert found == {k: [] for k in found}


def test_real_launch_spanish_patient_positive_hits_with_danger_pages_passageway(launched_page, live_app):
    """End to end from the sandbox EHR: Carmen (Patient.communication es) at Southern Jamaica Plain, at night."""
    live_app.app.extensions["clock"] = lambda: datetime(2026, 11, 24, 22, 0, tzinfo=ZoneInfo("America/New_York"))
    try:
        page = launched_page("pat-carmen", "enc-carmen-sjphc")
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.get_by_role("heading", level=1).inner_text() == "Before you ask"
        pass_gate(page)
        for link_id in ("hurt", "insult", "threaten", "scream"):
            answer(page, link_id, "fairly-often")
        page.get_by_role("button", name="Done").click()
        page.wait_for_url("**/result")  # the danger check is asked at /result (finding M2)
        for link_id in ("escalation", "weapon", "jealousy", "strangulation"):
            answer(page, link_id, "LA32-8")
        answer(page, "fear-for-life", "LA33-6")
        page.get_by_role("button", name="Done").click()
        page.wait_for_url("**/result")
        page.get_by_test_id("summary").wait_for()  # /result again after the danger check
        # One yes (fear for life), below the DA-5 cut-off: a danger sign, not high danger.
        assert page.locator("main h1, main h2").first.inner_text() == "Danger sign reported"
        urgent = page.get_by_test_id("urgent").inner_text()
    finally:
        live_app.app.extensions.pop("clock", None)
    assert "Si está en peligro inmediato, llame al 911." in urgent  # said to the patient in Spanish
    assert "1-877-785-2020" in urgent and "1-617-732-5520 ext. 31808" in urgent
    assert page.get_by_test_id("summary").get_attribute("data-interpretation") == "positive"


def test_real_ehr_frame_quick_exit_breaks_out_and_ends_the_launch(launched_page, page, live_app):
    """The sandbox EHR frames the app from another origin; quick exit must replace the EHR's top window."""
    before = settings_of(live_app.app).neutral_exit_url
    replace_settings(live_app.app, NEUTRAL_EXIT_URL=NEUTRAL)
    page.context.route("http://neutral.test/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<!doctype html><title>Weather</title><h1>Forecast</h1>"))
    try:
        frame = launched_page("pat-alice", "enc-alice-bwh", iframe=True)
        lid = LID.search(frame.url).group(1)
        frame.get_by_test_id("gate-alone").check()
        frame.press("body", "Escape")  # Esc inside the framed app
        page.wait_for_url(NEUTRAL)
        assert "Forecast" in page.content() and "Alice" not in page.content()
        assert launch_status_after_exit(live_app.app, lid, page) == "ended"
    finally:
        replace_settings(live_app.app, NEUTRAL_EXIT_URL=before)
