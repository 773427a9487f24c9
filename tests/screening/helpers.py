"""Screening test helpers. Launches on any app instance: ``tests.conftest.launch_for`` / ``store_launch``."""

from __future__ import annotations

from typing import Any

from smart_app.launch.state import Launch
from smart_app.store.models import LaunchRecord


def launch_data(app, lid: str) -> dict[str, Any]:
    with app.test_request_context():
        from smart_app.store.db import get_session

        return Launch(get_session().get(LaunchRecord, lid)).data
