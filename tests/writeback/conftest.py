from __future__ import annotations

import pytest

from smart_app import create_app
from tests.conftest import app_config

FAST = {"OUTBOX_BASE_DELAY": 0.001, "OUTBOX_MAX_DELAY": 0.005, "OUTBOX_FINAL_RETRY_DELAY": 0.0,
        "OUTBOX_LEASE_SECONDS": 30, "HTTP_TIMEOUT_SECONDS": 2.0}


@pytest.fixture
def app(tmp_path):
    """The shared ``app`` fixture, with millisecond backoff so retries run within a test
    (overridden here so ``make_launch`` uses the same app)."""
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", **FAST))
    yield app
    app.extensions["db_engine"].dispose()


@pytest.fixture
def fast_app(app):
    return app
