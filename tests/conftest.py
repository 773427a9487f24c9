"""Fixtures (flaskr style): app with a temporary database, client, and a way to
start a launch without the EHR for feature tests that do not test the launch."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from sandbox_ehr.harness.launches import app_config as app_config
from sandbox_ehr.harness.launches import default_context as default_context
from sandbox_ehr.harness.launches import launch_for as launch_for
from sandbox_ehr.harness.launches import store_launch as store_launch
from smart_app import create_app
from tests.support import tools
from tests.support.nginx import start_nginx as start_nginx

# Folders whose every test carries a marker, so `-m "not browser"` (or `-m tls`) selects them by what they need.
_FOLDER_MARKERS = {"browser": pytest.mark.browser, "tls": pytest.mark.tls}
_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.path).relative_to(_TESTS).parts
        marker = _FOLDER_MARKERS.get(parts[0]) if len(parts) > 1 else None
        if marker is not None:
            item.add_marker(marker)
    # The image test builds a Debian base first (minutes, root): `make test-image` runs it; elsewhere it is left
    # out of the run (deselected, so a run never reports it as a skip).
    if not os.environ.get("IPV_IMAGE_BASE"):
        image = [item for item in items if item.get_closest_marker("image")]
        if image:
            config.hook.pytest_deselected(items=image)
            items[:] = [item for item in items if not item.get_closest_marker("image")]


# Hypothesis: CI replays the same examples every run (derandomize: a red CI is reproducible and a green one
# is not luck); a developer's run explores new random examples. HYPOTHESIS_PROFILE=ci|dev overrides, and
# each test's own @settings (max_examples) still bounds its time.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if tools.under_ci() else "dev"))


@pytest.fixture(autouse=True)
def _nothing_left_frozen() -> Iterator[None]:
    """A test that builds a production (non-TESTING) app in this process freezes everything alive into the
    collector's permanent generation; thaw it afterwards so no later test runs against what this one built."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


@pytest.fixture
def app(tmp_path):
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}"))
    yield app
    app.extensions["db_engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema per test on TEST_DATABASE_URL (without it: skipped, or failed under CI)."""
    with tools.postgres_schema(tools.postgres_base_url()) as url:
        yield url


@pytest.fixture
def make_launch(app):
    """Create an active launch bound to ``client``'s browser; returns its id."""

    def _make(client, context: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
              iss: str = "http://ehr.test/fhir", kind: str = "ehr") -> str:
        return launch_for(app, client, context, data, iss=iss, kind=kind)

    return _make


class SandboxServer:
    """A running sandbox EHR: ``url`` (root), ``iss`` (FHIR base = url + "/fhir"), ``app`` (its Flask app)."""

    def __init__(self, app, server):
        self.app = app
        self.server = server
        self.url = server.url
        self.iss = server.url + "/fhir"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """Session-wide sandbox EHR (SMART auth server + FHIR store with seed data) on a free port.

    SANDBOX_BASE_URL is pinned to the live URL so the Flask test client (``sandbox.app.test_client()``) and
    real HTTP see the same iss, token endpoint and client-assertion audience.
    """
    from sandbox_ehr.app import create_sandbox_app
    from sandbox_ehr.harness.live import LiveServer

    db = tmp_path_factory.mktemp("sandbox") / "sandbox.db"
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(db),
                              "APP_LAUNCH_URL": "http://127.0.0.1:5000/launch"})
    server = LiveServer(app)
    app.config["SANDBOX_BASE_URL"] = server.url
    server.start()
    yield SandboxServer(app, server)
    server.stop()
