"""Fixtures for the sandbox EHR tests: a fresh sandbox app (seeded SQLite store) per test and token helpers."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox_ehr import authstore
from sandbox_ehr.app import create_sandbox_app


@pytest.fixture
def sandbox_app(tmp_path):
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / "sandbox.db"),
                              "APP_LAUNCH_URL": "http://app.test/launch",
                              "SANDBOX_BASE_URL": "http://ehr.test"})
    yield app
    app.extensions["sandbox_store"].close()


@pytest.fixture
def fhir(sandbox_app):
    return sandbox_app.test_client()


@pytest.fixture
def token(sandbox_app):
    """``token(scope, patient=None, ...)`` -> Authorization headers with a fresh access token."""

    def _make(scope: str = "user/*.cruds", **kw: Any) -> dict[str, str]:
        with sandbox_app.app_context():
            return {"Authorization": "Bearer " + authstore.issue_access_token("test-client", scope, **kw)}

    return _make


@pytest.fixture
def auth(token):
    """Headers with a user/*.cruds token (full access)."""
    return token()
