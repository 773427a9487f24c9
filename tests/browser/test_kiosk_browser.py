"""The clinic tablet in Chromium: a paired tablet used by two patients in a row (the second meets nothing of the
first: pages, Back, storage, cookies), exit to the decoy page by button, Escape and the hidden gestures, the
same-device hand-over with its PIN, the idle lock, and what history, titles, URLs and print keep. The sandbox EHR
records every FHIR call: none is made while the tablet is used."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from config.current import replace_settings, settings_of
from sandbox_ehr.fhir_api import calls
from tests.browser.conftest import lid_of
from tests.screening.helpers import launch_data
from tests.support.pages import pass_gate
from tests.support.shots import shots_dir

pytestmark = [pytest.mark.browser, pytest.mark.kiosk]
LANDSCAPE = {"width": 1024, "height": 768}
PORTRAIT = {"width": 768, "height": 1024}
NEUTRAL_TITLE = "Clinic check-in"


def offer_tablet(page: Any, mode: str) -> str:
    """From the instrument page: "Patient answers on a tablet", the mode, Continue; returns the code or PIN."""
    page.get_by_test_id("offer-tablet").click()
    page.get_by_test_id(f"mode-{mode}").check()
    page.get_by_test_id("tablet-go").click()
    secret = page.get_by_test_id("tablet-code" if mode == "paired" else "tablet-pin")
    return secret.inner_text().replace(" ", "")


def identifiers(page: Any) -> list[str]:
    """What would identify the clinician's patient: the banner's name, the launch id."""
    return [page.get_by_test_id("patient-name").inner_text().strip(), lid_of(page)]


def pair(tablet: Any, app_url: str, code: str) -> None:
    tablet.goto(app_url + "/tablet")
    tablet.get_by_test_id("pair-code").fill(code)
    tablet.get_by_test_id("pair-start").click()
    tablet.get_by_test_id("tablet-welcome").wait_for()


def shows_on_the_status_page(page: Any, test_id: str) -> None:
    """The clinician's status page comes to show ``test_id`` by itself: it refreshes every few seconds while the
    patient answers (a reload from the test could race that refresh and be aborted)."""
    expect(page.get_by_test_id(test_id)).to_be_visible(timeout=20_000)


def answer(tablet: Any, choices: list[int]) -> None:
    """Begin, then tap the n-th answer of each question in turn (1 = Never ... 5 = Frequently)."""
    tablet.get_by_test_id("tablet-begin").click()
    for n in choices:
        tablet.get_by_test_id("tablet-question").wait_for()
        tablet.get_by_test_id(f"option-{n}").click()


def browser_traces(tablet: Any, app: Any) -> dict[str, Any]:
    """What the tablet's browser holds of the app: cookies (decoded session keys), storage, IndexedDB, workers."""
    state = tablet.evaluate("""async () => ({
        local: localStorage.length, session: sessionStorage.length,
        idb: indexedDB.databases ? (await indexedDB.databases()).length : 0,
        workers: navigator.serviceWorker ? (await navigator.serviceWorker.getRegistrations()).length : 0,
        title: document.title, url: location.pathname + location.search,
    })""")
    keys: set[str] = set()
    for cookie in tablet.context.cookies():
        if cookie["name"] == app.config["SESSION_COOKIE_NAME"]:
            keys |= set(app.session_interface.get_signing_serializer(app).loads(cookie["value"]))
    state["session_keys"] = sorted(keys)
    return state


def plant(tablet: Any) -> None:
    """Something in every store the wipe must empty (the tablet's pages write none themselves)."""
    tablet.evaluate("""() => { localStorage.setItem('left', '1'); sessionStorage.setItem('left', '1');
                               indexedDB.open('left'); }""")


def assert_clean(tablet: Any, app: Any, secrets: list[str]) -> None:
    traces = browser_traces(tablet, app)
    assert traces["local"] == traces["session"] == traces["idb"] == traces["workers"] == 0, traces
    assert "kt" not in traces["session_keys"], traces
    assert traces["title"] == NEUTRAL_TITLE and traces["url"].startswith("/tablet"), traces
    page_text = tablet.content()
    for secret in secrets:
        assert secret not in page_text and secret not in traces["url"]


@pytest.fixture
def clinician(new_context: Callable[..., Any], launched_page: Callable[..., Any]) -> Callable[..., Any]:
    def _open(patient: str, encounter: str, mode: str = "paired") -> tuple[Any, str, list[str]]:
        page = launched_page(patient, encounter, page=new_context(viewport=LANDSCAPE).new_page())
        pass_gate(page)
        secrets = identifiers(page)
        return page, offer_tablet(page, mode), secrets

    return _open


@pytest.fixture
def tablet(new_context: Callable[..., Any]) -> Any:
    return new_context(viewport=LANDSCAPE).new_page()


def test_two_patients_in_a_row_on_one_tablet(clinician, tablet, live_app, live_sandbox, tmp_path):
    shots = shots_dir(tmp_path)
    seen: list[str] = []  # every URL the tablet showed
    tablet.on("framenavigated", lambda frame: seen.append(frame.url) if frame == tablet.main_frame else None)
    first, code, first_secrets = clinician("pat-alice", "enc-alice-bwh")
    clinician_url = first.url
    first.goto("about:blank")  # nothing of the clinician's pages runs while the tablet is used
    before = len(calls(live_sandbox.app))
    pair(tablet, live_app.url, code)
    answer(tablet, [5, 5, 3, 5])
    tablet.get_by_test_id("tablet-hand-back").wait_for()
    tablet.screenshot(path=str(shots / "kiosk-hand-back-1024x768.png"))
    plant(tablet)
    assert len(calls(live_sandbox.app)) == before, "the tablet's requests made the app call the EHR"
    body = tablet.locator("main").inner_text()
    assert "Frequently" not in body and "positive" not in body.lower()

    first.goto(clinician_url)
    first.get_by_test_id("tablet-finished").wait_for()
    first.get_by_test_id("tablet-show-result").click()
    first.wait_for_url("**/result")
    data = launch_data(live_app.app, lid_of(first))
    assert data["administered"] == "self" and data["screening"]["interpretation"] == "positive"
    tablet.get_by_test_id("tablet-idle").wait_for()  # the tablet saw the hand-back and wiped itself
    assert_clean(tablet, live_app.app, first_secrets)

    second, code, second_secrets = clinician("pat-grace", "enc-grace-mgh")
    pair(tablet, live_app.url, code)
    tablet.get_by_test_id("tablet-begin").click()
    assert tablet.get_by_test_id("tablet-progress").inner_text().startswith("Question 1 of")
    # Back through everything this tablet showed: never the first patient's hand-back or a later question.
    while tablet.evaluate("history.length") > 1:
        if tablet.go_back() is None:
            break
        text = tablet.locator("body").inner_text()
        assert "hand the tablet back" not in text and "Question 2" not in text
        assert tablet.title() in (NEUTRAL_TITLE, "")
        for secret in first_secrets + second_secrets:
            assert secret not in text and secret not in tablet.url
    assert all("/tablet" in url or url == "about:blank" for url in seen), seen
    assert not any(s in url for url in seen for s in first_secrets + second_secrets)


@pytest.mark.parametrize("how", ["button", "escape", "triple-tap", "long-press"])
def test_exit_shows_the_decoy_and_leaves_nothing(clinician, tablet, live_app, how, tmp_path):
    page, code, secrets = clinician("pat-alice", "enc-alice-bwh")
    pair(tablet, live_app.url, code)
    answer(tablet, [5])
    tablet.get_by_test_id("tablet-question").wait_for()
    tablet.wait_for_load_state("load")  # kiosk.js listens for the key and the gestures
    plant(tablet)
    header = tablet.get_by_test_id("tablet-header")
    if how == "button":
        tablet.get_by_test_id("tablet-exit").click()
    elif how == "escape":
        tablet.keyboard.press("Escape")
    elif how == "triple-tap":
        box = header.bounding_box()
        for _ in range(3):
            tablet.mouse.click(box["x"] + 20, box["y"] + 10)
    else:
        box = header.bounding_box()
        tablet.mouse.move(box["x"] + 20, box["y"] + 10)
        tablet.mouse.down()
        tablet.wait_for_url("**/tablet/tips**")
        tablet.mouse.up()
    tablet.get_by_test_id("tablet-tips").wait_for()
    if how == "button":
        tablet.screenshot(path=str(shots_dir(tmp_path) / "kiosk-decoy-1024x768.png"))
    tablet.wait_for_url("**/tablet/tips**", wait_until="load")  # the page's own decoy first, then the server's
    assert_clean(tablet, live_app.app, secrets)
    tablet.go_back()
    assert tablet.get_by_test_id("tablet-question").count() == 0
    shows_on_the_status_page(page, "tablet-exited")
    assert "screening" not in launch_data(live_app.app, lid_of(page))


# Run after kiosk.js's own key handler (listeners run in the order they were added): what the patient sees two
# frames after the key, reported through the console (Playwright's locators and evaluate wait for the pending
# navigation, here the held exit).
DRAWN_JS = """() => document.addEventListener('keydown', () => {
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const main = document.getElementById('main');
    console.log(JSON.stringify({
      tips: main.querySelectorAll('[data-testid="tablet-tips"]').length,
      question: document.querySelectorAll('[data-testid="tablet-question"]').length,
      visible: getComputedStyle(main).visibility, exit: getComputedStyle(document.getElementById('exit-form')).display,
      h1: getComputedStyle(main.querySelector('h1')).fontSize,
      url: location.pathname}));
  }));
})"""


def test_exit_shows_the_decoy_before_the_server_answers(clinician, tablet, live_app):
    """The decoy is drawn from the question page itself: with the exit's request held, the question is gone and the
    tips are on screen, with the stylesheet the page already had; the server's tips page follows when it answers."""
    page, code, secrets = clinician("pat-alice", "enc-alice-bwh")
    pair(tablet, live_app.url, code)
    answer(tablet, [5])
    tablet.get_by_test_id("tablet-question").wait_for()
    tablet.wait_for_load_state("load")  # kiosk.js listens for the key
    tablet.evaluate(DRAWN_JS)
    held: list[Any] = []
    tablet.route("**/tablet/exit", lambda route: held.append(route))
    with tablet.expect_console_message(lambda message: message.text.startswith("{")) as drawn:
        tablet.keyboard.press("Escape")
    seen = json.loads(drawn.value.text)
    h1 = seen.pop("h1")
    assert seen == {"tips": 1, "question": 0, "visible": "visible", "exit": "none", "url": "/tablet/q"}
    for _ in range(200):  # the exit's request, not answered
        if held:
            break
        tablet.wait_for_timeout(50)
    held[0].continue_()
    tablet.wait_for_url("**/tablet/tips**", wait_until="load")
    tablet.get_by_test_id("tablet-tips").wait_for()
    # The decoy was drawn with the stylesheet the question page already had, as the server's page is.
    assert tablet.evaluate("getComputedStyle(document.querySelector('main h1')).fontSize") == h1
    shows_on_the_status_page(page, "tablet-exited")


def test_same_device_hand_over_and_back_with_the_pin(clinician, live_app, live_sandbox, tmp_path):
    page, pin, secrets = clinician("pat-grace", "enc-grace-mgh", mode="device")
    clinician_url = page.url
    lid = lid_of(page)
    before = len(calls(live_sandbox.app))
    page.get_by_test_id("tablet-handover").click()
    page.get_by_test_id("tablet-welcome").wait_for()
    page.go_back()  # the clinician's page of a moment ago: gone
    assert page.get_by_test_id("patient-name").count() == 0 and secrets[0] not in page.content()
    page.goto(live_app.url + "/tablet/q")
    answer(page, [1, 1, 1, 1])
    page.get_by_test_id("unlock-pin").wait_for()
    assert len(calls(live_sandbox.app)) == before
    page.evaluate("() => { try { localStorage.setItem('x', '1'); } catch (e) {} }")  # would be wiped
    page.get_by_test_id("unlock-pin").fill("000000" if pin != "000000" else "111111")
    page.get_by_test_id("unlock-submit").click()
    page.get_by_test_id("pin-error").wait_for()
    page.get_by_test_id("unlock-pin").fill(pin)
    page.get_by_test_id("unlock-submit").click()
    page.wait_for_url(f"**/l/{lid}/result")
    # Wiped on the way (the clinician's own pages count their open tabs in localStorage again afterwards).
    assert page.evaluate("localStorage.getItem('x')") is None
    assert launch_data(live_app.app, lid)["screening"]["administered"] == "self"
    assert clinician_url.endswith("/tablet/status")


def test_an_idle_tablet_locks_itself(clinician, tablet, live_app):
    app = live_app.app
    idle = settings_of(app).tablet_idle_seconds
    replace_settings(app, TABLET_IDLE_SECONDS=2)
    try:
        page, code, secrets = clinician("pat-alice", "enc-alice-bwh")
        pair(tablet, live_app.url, code)
        answer(tablet, [2])
        plant(tablet)
        tablet.get_by_test_id("tablet-idle").wait_for(timeout=20_000)  # its own timer, then the wipe
        assert_clean(tablet, app, secrets)
        shows_on_the_status_page(page, "tablet-locked")
    finally:
        replace_settings(app, TABLET_IDLE_SECONDS=idle)


def test_print_shows_nothing_and_the_header_is_neutral(clinician, tablet, live_app):
    page, code, secrets = clinician("pat-alice", "enc-alice-bwh")
    pair(tablet, live_app.url, code)
    answer(tablet, [])
    tablet.get_by_test_id("tablet-question").wait_for()
    tablet.emulate_media(media="print")
    # Retried: the question may be in the page a moment before its stylesheet (with the print rule) has loaded.
    expect(tablet.locator("main")).to_be_hidden()
    # Chromium's print header is the title and the URL: both neutral.
    assert tablet.title() == NEUTRAL_TITLE and tablet.url.endswith("/tablet/q")
    tablet.emulate_media(media="screen")


@pytest.fixture
def screenshot_pages(clinician, new_context, live_app) -> Iterator[Callable[[dict[str, int], str], Any]]:
    yield lambda viewport, lang: _walk(clinician, new_context, live_app, viewport, lang)


def _walk(clinician, new_context, live_app, viewport, lang) -> Any:
    page, code, _secrets = clinician("pat-alice", "enc-alice-bwh")
    page.set_viewport_size(viewport)
    tablet = new_context(viewport=viewport).new_page()
    return page, tablet, code


@pytest.mark.parametrize("viewport", [LANDSCAPE, PORTRAIT], ids=["1024x768", "768x1024"])
def test_tablet_screens_at_tablet_size(screenshot_pages, live_app, viewport, tmp_path):
    shots = shots_dir(tmp_path)
    size = f"{viewport['width']}x{viewport['height']}"
    page, tablet, code = screenshot_pages(viewport, "es")
    page.screenshot(path=str(shots / f"kiosk-clinician-code-{size}.png"))
    tablet.goto(live_app.url + "/tablet")
    tablet.screenshot(path=str(shots / f"kiosk-idle-{size}.png"))
    pair(tablet, live_app.url, code)
    tablet.get_by_test_id("lang-es").click()
    tablet.get_by_test_id("tablet-welcome").wait_for()
    tablet.screenshot(path=str(shots / f"kiosk-welcome-es-{size}.png"))
    tablet.get_by_test_id("tablet-begin").click()
    tablet.get_by_test_id("tablet-question").wait_for()
    tablet.screenshot(path=str(shots / f"kiosk-question-es-{size}.png"))
    tablet.get_by_test_id("option-1").click()
    tablet.get_by_test_id("tablet-back").wait_for()
    tablet.wait_for_load_state("load")  # sizes are measured once kiosk.css applies, not on the bare page
    for item in tablet.locator(".option").all() + [tablet.get_by_test_id("tablet-exit")]:
        box = item.bounding_box()
        assert box["height"] >= 44 and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    tablet.get_by_test_id("tablet-exit").click()
    tablet.get_by_test_id("tablet-tips").wait_for()
    tablet.screenshot(path=str(shots / f"kiosk-decoy-es-{size}.png"))
