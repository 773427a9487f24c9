"""Fixtures for the `tls` tests: a throw-away CA, the sandbox EHR on https://localhost:<port>, the app in
production mode under gunicorn's TLS on https://127.0.0.1:<port> or behind Debian's nginx, and Chromium
trusting exactly those servers' keys (``--ignore-certificate-errors-spki-list``), not every certificate error.

- ``tls_sandbox`` (session): ``.url``, ``.iss``, ``.app``.
- ``tls_app`` / ``nginx_app`` (session): ``.url``, ``.env``, ``.check_report`` (the `check-config` output).
- ``tls_browser`` (module), ``tls_context`` (function): a fresh profile per call.
- ``ehr_launch(app, page, patient, encounter, iframe=False)`` drives the EHR simulator page.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import tls, tools

TIMEOUT_MS = 20_000
LID_IN_PATH = re.compile(r"/l/([A-Za-z0-9_-]+)/")



@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> tls.TestCA:
    return tls.TestCA(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="session")
def app_cert(tls_ca: tls.TestCA) -> tls.Issued:
    return tls_ca.issue("127.0.0.1")


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return tls.client_key(tmp_path_factory.mktemp("tls-client"))


@pytest.fixture(scope="session")
def tls_sandbox(tls_ca, client_keys, tmp_path_factory) -> Iterator[tls.TlsSandbox]:
    sandbox = tls.TlsSandbox(tls_ca, tmp_path_factory.mktemp("tls-sandbox"), client_keys[1])
    yield sandbox
    sandbox.stop()


def _env_for(tls_ca, client_keys, tls_sandbox, folder: Path, db: tuple[str, dict[str, str]]) -> Callable:
    deployment = tls.write_deployment(folder, client_keys[0], tls_sandbox.iss,
                                      tuning={**db[1], "neutral_exit_url": tls_sandbox.url + "/ehr?from=exit"})

    def env_for(url: str) -> dict[str, str]:
        return tls.app_env(deployment=deployment, db_url=db[0], base_url=url, ca_file=tls_ca.ca_file,
                           ehr_origin=tls_sandbox.url)

    return env_for


@pytest.fixture(scope="session")
def tls_app(tls_ca, app_cert, client_keys, tls_sandbox, tmp_path_factory) -> Iterator[tls.AppProcess]:
    """gunicorn serving TLS itself (2 workers) + the outbox worker, production configuration."""
    folder = tmp_path_factory.mktemp("tls-app")
    with tls.database_url(folder) as db:
        app = tls.start_gunicorn_tls(issued=app_cert, env_for=_env_for(tls_ca, client_keys, tls_sandbox, folder, db),
                                     folder=folder, ca_file=tls_ca.ca_file)
        yield app
        app.stop()


@pytest.fixture(scope="session")
def nginx_app(tls_ca, app_cert, client_keys, tls_sandbox, tmp_path_factory) -> Iterator[tls.AppProcess]:
    """Debian's nginx terminating TLS in front of gunicorn on a unix socket, TRUSTED_PROXY_HOPS=1."""
    tools.nginx(tls.NGINX)
    folder = tmp_path_factory.mktemp("tls-nginx")
    with tls.database_url(folder) as db:
        app = tls.start_behind_nginx(issued=app_cert, env_for=_env_for(tls_ca, client_keys, tls_sandbox, folder, db),
                                     folder=folder, ca_file=tls_ca.ca_file)
        yield app
        app.stop()


@pytest.fixture(scope="module")
def tls_browser(tls_sandbox, app_cert) -> Iterator[Any]:
    executable = tools.chromium()
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS

    # Trust exactly the two test servers' keys (EHR and app), not every certificate error.
    trust = f"--ignore-certificate-errors-spki-list={tls_sandbox.spki},{app_cert.spki}"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=[*CHROMIUM_ARGS, trust], headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def tls_context(tls_browser) -> Iterator[Callable[[], Any]]:
    made: list[Any] = []

    def _new() -> Any:
        ctx = tls_browser.new_context()
        ctx.set_default_timeout(TIMEOUT_MS)
        made.append(ctx)
        return ctx

    yield _new
    for ctx in made:
        ctx.close()


def lid_of(target: Any) -> str:
    match = LID_IN_PATH.search(target.url)
    assert match, f"not on a launch page: {target.url}"
    return match.group(1)


@pytest.fixture
def ehr_launch(tls_sandbox) -> Callable[..., Any]:
    """Launch ``app`` from the sandbox's EHR simulator page (https://localhost) in ``page``; returns the page
    (top level) or the app's Frame inside the EHR page (``iframe=True``) once the app shows its first page."""

    def _launch(app: tls.AppProcess, page: Any, patient_id: str, encounter_id: str | None = None,
                practitioner_id: str = "prac-avery", iframe: bool = False) -> Any:
        tls_sandbox.app.config["APP_LAUNCH_URL"] = app.url + "/launch"
        page.goto(tls_sandbox.url + "/ehr")
        page.select_option("#practitioner", practitioner_id)
        page.select_option("#patient", patient_id)
        page.select_option("#encounter", encounter_id or "")
        page.set_checked("#iframe", iframe)
        page.click("#launch-button")
        if iframe:
            page.wait_for_url(re.compile(r"/ehr/frame/"))
            frame = page.wait_for_selector("iframe").content_frame()
            try:
                frame.wait_for_url(lambda url: url.startswith(app.url) and bool(LID_IN_PATH.search(url)))
            except Exception as exc:
                raise AssertionError(f"frame at {frame.url}: {frame.content()[:800]}\n{app.log_tail()}") from exc
            frame.wait_for_load_state("domcontentloaded")
            return frame
        page.wait_for_url(lambda url: url.startswith(app.url) or "/auth/" in url)
        page.wait_for_load_state("domcontentloaded")
        if not LID_IN_PATH.search(page.url):
            raise AssertionError(f"launch did not reach the app ({page.url}): {page.content()[:800]}\n"
                                 f"{app.log_tail()}")
        return page

    return _launch
