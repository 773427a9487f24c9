"""Screening test helpers. Launches on any app instance: ``tests.conftest.launch_for`` / ``store_launch``."""

from __future__ import annotations

from typing import Any

from smart_app.launch_state import Launch
from smart_app.models import LaunchRecord


def launch_data(app, lid: str) -> dict[str, Any]:
    with app.test_request_context():
        from smart_app.db import get_session

        return Launch(get_session().get(LaunchRecord, lid)).data
