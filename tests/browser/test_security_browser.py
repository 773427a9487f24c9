"""Review findings M2 and M3 in real Chromium: closing the last tab of a launch ends it (beacon), a second
tab keeps it open, and browser history keeps only the neutral title."""

from __future__ import annotations

import time

import pytest

from config.current import settings_of
from tests.browser.conftest import lid_of

pytestmark = [pytest.mark.browser, pytest.mark.security]


def _status(live_app, lid: str) -> str:
    with live_app.app.test_request_context():
        from smart_app.store.db import get_session
        from smart_app.store.models import LaunchRecord

        return get_session().get(LaunchRecord, lid).status


def _expires_soon(live_app, lid: str) -> bool:
    from datetime import UTC, datetime, timedelta

    with live_app.app.test_request_context():
        from smart_app.store.db import get_session
        from smart_app.store.models import LaunchRecord

        expires = get_session().get(LaunchRecord, lid).expires_at
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        return expires <= datetime.now(UTC) + timedelta(seconds=settings_of(live_app.app).close_grace_seconds + 1)


def _wait(predicate, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_closing_the_last_tab_ends_the_launch_in_chromium(launched_page, live_app, context):
    """M3: with two tabs of a launch open, closing one keeps it; closing the last sends the beacon and the
    launch ends after the grace period. Every title Chromium saw is the neutral one (M2)."""
    page = launched_page("pat-alice", "enc-alice-bwh")
    lid = lid_of(page)
    assert page.title() == "Health check-in"
    assert "minutes without use" in page.get_by_test_id("session-note").inner_text()
    second = context.new_page()
    second.goto(page.url)
    second.wait_for_load_state("domcontentloaded")
    second.close(run_before_unload=True)
    time.sleep(1.0)
    assert not _expires_soon(live_app, lid)  # one tab is still open: no beacon
    page.close(run_before_unload=True)
    assert _wait(lambda: _expires_soon(live_app, lid)), "no close beacon arrived after the last tab closed"
    assert _status(live_app, lid) == "active"  # ended by expiry after CLOSE_GRACE_SECONDS, then purged
