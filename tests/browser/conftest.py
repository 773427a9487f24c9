"""Real-browser fixtures: a live sandbox EHR and a live app wired to each other, and Debian's
Chromium driven by Playwright (sync API).

Fixtures (others build on these; add yours below, additively):

- ``live_sandbox`` (session): sandbox EHR on a free port, its simulator launching ``live_app``.
  ``.url``, ``.iss``, ``.app``.
- ``live_app`` (session): the app (deployment "sandbox", CSRF on, plain HTTP cookies) on a free
  port, allow-listing only ``live_sandbox.iss``. ``.url``, ``.app``.
- ``browser`` (module): Chromium; every test module using it is skipped clearly when
  /usr/bin/chromium (or CHROMIUM) is missing, and fails under CI (``tests/support/tools.py``). Use it rather
  than starting Playwright yourself.
- ``new_context`` (function): ``new_context()`` -> a fresh BrowserContext (= a separate browser profile:
  its own cookies); closed after the test.
- ``context`` / ``page`` (function): one context and one page in it.
- ``launched_page`` (function): ``launched_page(patient_id, encounter_id=None, practitioner_id="prac-avery",
  page=<the page fixture>, need_patient_banner=True, iframe=False)`` drives the sandbox's EHR simulator
  page and returns the page once the app shows the launch's first page (the private gate at ``/l/<lid>/``);
  with ``iframe=True`` the EHR embeds the app and the app's Frame is returned. ``lid_of(page_or_frame)``
  gives the launch id from its URL.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet

from config.current import replace_settings
from sandbox_ehr.harness.live import LiveServer
from tests.support import tools

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
TIMEOUT_MS = 15_000
LID_IN_PATH = re.compile(r"/l/([A-Za-z0-9_-]+)/")


@dataclasses.dataclass
class Live:
    app: Any
    server: LiveServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def iss(self) -> str:
        return self.server.url + "/fhir"



@pytest.fixture(scope="session")
def live_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A sandbox EHR of its own (own SQLite store) for browser tests; APP_LAUNCH_URL set by ``live_app``."""
    from sandbox_ehr.app import create_sandbox_app

    db = tmp_path_factory.mktemp("browser-sandbox") / "sandbox.db"
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(db)})
    server = LiveServer(app)
    app.config["SANDBOX_BASE_URL"] = server.url
    server.start()
    yield Live(app, server)
    server.stop()


@pytest.fixture(scope="session")
def live_app(live_sandbox: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The app on a real port, registered with ``live_sandbox`` the way the demo is."""
    from config.deployment import Deployment
    from config.files import read_yaml
    from config.settings import deployment_path
    from sandbox_ehr.demo import on_sandbox
    from smart_app import create_app

    db = tmp_path_factory.mktemp("browser-app") / "app.db"
    sandbox = Deployment.model_validate(read_yaml(deployment_path("sandbox"), "deployment"))
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": f"sqlite:///{db}",
        "SECRET_KEY": secrets.token_urlsafe(16),
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "SESSION_COOKIE_SECURE": False,  # plain HTTP on 127.0.0.1
        **on_sandbox(sandbox, live_sandbox.url),
        "FRAME_ANCESTORS": f"'self' {live_sandbox.url}",
    })
    server = LiveServer(app)
    replace_settings(app, APP_BASE_URL=server.url)
    live_sandbox.app.config["APP_LAUNCH_URL"] = server.url + "/launch"
    server.start()
    # The outbox worker, as `make demo` runs it: the consent POST only stores writes, the worker sends.
    import threading

    from smart_app.outbox.worker import OutboxWorker

    stop = threading.Event()
    worker = threading.Thread(target=OutboxWorker(app, timeout=5).loop,
                              kwargs={"stop": stop.is_set, "idle_sleep": 0.2}, daemon=True)
    worker.start()
    yield Live(app, server)
    stop.set()
    worker.join(timeout=10)
    server.stop()
    app.extensions["db_engine"].dispose()


# Module scope, not session: Playwright's sync API allows one running instance per thread, and a test
# module that starts its own must not find ours still running from an earlier module.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = tools.chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def new_context(browser: Any) -> Iterator[Callable[..., Any]]:
    """Factory of fresh browser contexts (separate cookie jars = separate browsers)."""
    made: list[Any] = []

    def _new(**kwargs: Any) -> Any:
        ctx = browser.new_context(**kwargs)
        ctx.set_default_timeout(TIMEOUT_MS)
        made.append(ctx)
        return ctx

    yield _new
    for ctx in made:
        ctx.close()


@pytest.fixture
def context(new_context: Callable[..., Any]) -> Any:
    return new_context()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


def lid_of(page: Any) -> str:
    """The launch id in the page's URL (``/l/<lid>/...``)."""
    match = LID_IN_PATH.search(page.url)
    assert match, f"not on a launch page: {page.url}"
    return match.group(1)


def open_queue(page: Any, app_url: str, practitioner_id: str) -> Any:
    """Sign in through the app's standalone launch as ``practitioner_id`` and land on the social-work queue."""
    page.goto(app_url + "/launch/standalone")
    page.select_option("#practitioner", practitioner_id)
    page.click("#approve-button")
    page.wait_for_url("**/worklist")
    return page


@pytest.fixture
def launched_page(live_sandbox: Live, live_app: Live, page: Any) -> Callable[..., Any]:
    """Launch the app from the sandbox's EHR simulator; returns the page at the app's first page."""

    def _launch(patient_id: str, encounter_id: str | None = None, practitioner_id: str = "prac-avery", *,
                page: Any = page, need_patient_banner: bool = True, iframe: bool = False) -> Any:
        page.goto(live_sandbox.url + "/ehr")
        page.select_option("#practitioner", practitioner_id)
        page.select_option("#patient", patient_id)  # fires "change": the encounter list follows the patient
        page.select_option("#encounter", encounter_id or "")
        page.set_checked("#need_patient_banner", need_patient_banner)
        page.set_checked("#iframe", iframe)
        page.click("#launch-button")
        if iframe:
            # The EHR page embeds the app; the launch runs inside the frame. Returns the Frame.
            page.wait_for_url(re.compile(r"/ehr/frame/"))
            frame = page.wait_for_selector("iframe").content_frame()
            frame.wait_for_url(lambda url: url.startswith(live_app.url) and bool(LID_IN_PATH.search(url)))
            frame.wait_for_load_state("domcontentloaded")
            return frame
        # Redirects (app /launch -> EHR authorize -> app /callback) end on the app, or on an error page.
        page.wait_for_url(lambda url: url.startswith(live_app.url) or "/auth/" in url)
        page.wait_for_load_state("domcontentloaded")
        if not LID_IN_PATH.search(page.url):
            message = page.locator("main").inner_text() if page.locator("main").count() else page.content()[:500]
            raise AssertionError(f"launch did not reach the app ({page.url}): {message.strip()}")
        return page

    return _launch
