"""Fixtures (flaskr style): app with a temporary database, client, and a way to
start a launch without the EHR for feature tests that do not test the launch."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text

from smart_app import create_app
from smart_app.launch.state import Launch, new_expiry
from smart_app.store.models import LaunchRecord
from tests.support import tools

# Folders whose every test carries a marker, so `-m "not browser"` (or `-m tls`) selects them by what they need.
_FOLDER_MARKERS = {"browser": pytest.mark.browser, "tls": pytest.mark.tls}
_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.path).relative_to(_TESTS).parts
        marker = _FOLDER_MARKERS.get(parts[0]) if len(parts) > 1 else None
        if marker is not None:
            item.add_marker(marker)


# Hypothesis: CI replays the same examples every run (derandomize: a red CI is reproducible and a green one
# is not luck); a developer's run explores new random examples. HYPOTHESIS_PROFILE=ci|dev overrides, and
# each test's own @settings (max_examples) still bounds its time.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def app_config(db_url: str, **extra: Any) -> dict[str, Any]:
    config = {
        "TESTING": True,
        "DATABASE_URL": db_url,
        "SECRET_KEY": secrets.token_urlsafe(16),
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "WTF_CSRF_ENABLED": False,
        "SESSION_COOKIE_SECURE": False,
    }
    config.update(extra)
    return config


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
    base = tools.postgres_base_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def default_context(**overrides: Any) -> dict[str, Any]:
    """Context as fhir/context.py builds it at launch (see that module for the shape)."""
    context: dict[str, Any] = {
        "patient": {
            "id": "pat-test", "name": "Rosa Test", "birthDate": "1990-04-02", "gender": "female",
            "language": "en", "languages": ["en"], "mrn": "TEST-1",
        },
        "encounter": {
            "id": "enc-test", "class": "AMB",
            "locations": [{"id": "loc-mgh-chelsea", "name": "MGH Chelsea HealthCare Center",
                           "identifiers": [{"system": "urn:ipv-sandbox:site", "value": "mgh-chelsea"}],
                           "postalCode": "02150"}],
            "service_provider": {"id": "org-mgh", "name": "Massachusetts General Hospital",
                                 "identifiers": []},
        },
        "user": {"reference": "Practitioner/prac-test", "name": "Dr. Test Clinician",
                 "roles": ["clinician"]},
        "need_patient_banner": True,
        "smart_style_url": None,
        "intent": None,
        "fhir_context": [],
        "scope": "",
    }
    context.update(overrides)
    return context


def store_launch(app, *, bid: str, context: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                 tokens: dict[str, Any] | None = None, iss: str = "http://ehr.test/fhir", kind: str = "ehr",
                 status: str = "active") -> str:
    """Store a launch record as the callback would (context and tokens encrypted); returns its id."""
    with app.test_request_context():
        from smart_app.store.db import get_session

        record = LaunchRecord(state=secrets.token_urlsafe(24), browser_id=bid, iss=iss,
                              kind=kind, status=status, expires_at=new_expiry())
        launch = Launch(record)
        launch.set_context(context or default_context())
        launch.set_tokens(tokens if tokens is not None else {"access_token": "test-token", "token_type": "Bearer"})
        if data:
            launch.update_data(**data)
        db = get_session()
        db.add(record)
        db.commit()
        return record.id


def launch_for(app, client, context: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
               iss: str = "http://ehr.test/fhir", kind: str = "ehr") -> str:
    """An active launch bound to ``client``'s browser (its session cookie's ``bid``)."""
    with client.session_transaction() as sess:
        bid = sess.setdefault("bid", secrets.token_urlsafe(24))
    return store_launch(app, bid=bid, context=context, data=data, iss=iss, kind=kind)


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
    from tests.support.live import LiveServer

    db = tmp_path_factory.mktemp("sandbox") / "sandbox.db"
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(db),
                              "APP_LAUNCH_URL": "http://127.0.0.1:5000/launch"})
    server = LiveServer(app)
    app.config["SANDBOX_BASE_URL"] = server.url
    server.start()
    yield SandboxServer(app, server)
    server.stop()
