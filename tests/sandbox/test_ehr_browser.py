"""The EHR simulator page in Debian's Chromium: encounter list follows the patient; new-window and iframe launch.

The app is a stand-in that echoes its launch parameters, so this tests the sandbox page alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, request

from sandbox_ehr.app import create_sandbox_app
from sandbox_ehr.harness.live import LiveServer
from tests.support import tools

pytestmark = pytest.mark.browser

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[tuple[str, str]]:
    echo = Flask("echo-app")

    @echo.get("/launch")
    def launch() -> str:
        return f"<p id='got'>{request.query_string.decode()}</p>"

    app_server = LiveServer(echo).start()
    sandbox = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path_factory.mktemp("ehr") / "s.db"),
                                  "APP_LAUNCH_URL": app_server.url + "/launch"})
    sandbox_server = LiveServer(sandbox)
    sandbox.config["SANDBOX_BASE_URL"] = sandbox_server.url
    sandbox_server.start()
    yield sandbox_server.url, app_server.url
    sandbox_server.stop()
    app_server.stop()


@pytest.fixture(scope="module")
def browser():
    executable = tools.chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context()
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


def _launch_params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_encounter_list_follows_the_patient(servers, context):
    ehr, _ = servers
    page = context.new_page()
    page.goto(ehr + "/ehr")
    page.select_option("#patient", "pat-lucia")
    enabled = page.eval_on_selector_all("#encounter option:not([disabled])", "els => els.map(e => e.value)")
    assert set(enabled) == {"", "enc-lucia-mgh", "enc-lucia-bwh"}
    page.select_option("#encounter", "enc-lucia-bwh")
    page.select_option("#patient", "pat-kim")  # no encounters: back to "No encounter"
    assert page.eval_on_selector("#encounter", "e => e.value") == ""
    enabled = page.eval_on_selector_all("#encounter option:not([disabled])", "els => els.map(e => e.value)")
    assert enabled == [""]


def test_launch_in_a_new_window(servers, context):
    ehr, app = servers
    page = context.new_page()
    page.goto(ehr + "/ehr")
    page.select_option("#practitioner", "prac-emery")
    page.select_option("#patient", "pat-joana")
    page.select_option("#encounter", "enc-joana-chelsea")
    page.set_checked("#new_window", True)
    with context.expect_page() as new_page:
        page.click("#launch-button")
    launched = new_page.value
    launched.wait_for_load_state()
    assert launched.url.startswith(app + "/launch?")
    params = _launch_params(launched.url)
    assert params["iss"] == ehr + "/fhir" and params["launch"]
    assert page.url == ehr + "/ehr"  # the EHR stays open behind the app


def test_launch_in_an_iframe(servers, context):
    ehr, app = servers
    page = context.new_page()
    page.goto(ehr + "/ehr")
    page.select_option("#patient", "pat-carmen")
    page.set_checked("#iframe", True)
    page.click("#launch-button")
    page.wait_for_url(lambda url: "/ehr/frame/" in url)
    frame = page.frame_locator("#app-frame")
    assert "launch=" in frame.locator("#got").inner_text()
    assert "Carmen" in page.locator(".chart-banner").inner_text()
