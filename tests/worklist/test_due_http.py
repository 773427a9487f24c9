"""Due times from urgency, counted in the program's hours and holidays, and the overdue queue: through the consent
page and the queue over HTTP, with the app's clock pinned (``app.extensions["clock"]``), never a timed wait.

BWH's directory program (Passageway) is open Monday to Friday 08:30-17:30 in Boston and closed on the
Massachusetts calendar's holidays; the deployment's default is 1 business hour (urgent) and 2 business days
(routine)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from config.current import replace_settings, settings_of
from smart_app import create_app
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord
from smart_app.worklist.due import DueConfigError
from tests.conftest import app_config
from tests.worklist.support import (
    EHR1,
    SNOMED_SW,
    clinician_context,
    make_referral,
    referral_data,
    role,
    with_deployment,
    worker_context,
)
from tests.writeback.support import consent

pytestmark = [pytest.mark.routing, pytest.mark.worklist]

BOSTON = ZoneInfo("America/New_York")
SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"
BWH_AND_MGH = [role([SNOMED_SW], organizations=["Organization/org-bwh", "Organization/org-mgh"])]


def at(text: str) -> datetime:
    """A Boston wall-clock time, as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=BOSTON).astimezone(UTC)


def pin(app, moment: datetime) -> None:
    app.extensions["clock"] = lambda: moment


def due_of(app, rid: str) -> datetime:
    with app.app_context(), session_scope(app) as db:
        due = db.get(ReferralRecord, rid).due_at
    return (due if due.tzinfo else due.replace(tzinfo=UTC)).astimezone(BOSTON)


def refer(app, make_launch, when: str, patient: str, *, urgent: bool, site: str = "bwh") -> str:
    pin(app, at(when))
    return make_referral(app, make_launch, site, patient, "Pat Example", danger=urgent)


def refer_from_unknown_clinic(app, make_launch, when: str, patient: str) -> str:
    """An urgent referral from a clinic no directory program serves (a team may still cover its Location)."""
    pin(app, at(when))
    ctx = clinician_context("bwh", patient, "Pat Example")
    ctx["encounter"]["locations"] = [{"id": "loc-elsewhere", "name": "Elsewhere Clinic", "identifiers": []}]
    ctx["encounter"]["service_provider"] = {"id": "org-elsewhere", "name": "Elsewhere Clinic", "identifiers": []}
    client = app.test_client()
    lid = make_launch(client, context=ctx, data=referral_data("bwh", danger=True), iss=EHR1)
    assert consent(client, lid, channel="phone", resources=["ServiceRequest", "Task"]).status_code == 302
    with app.app_context(), session_scope(app) as db:
        return db.scalar(select(ReferralRecord.id).where(ReferralRecord.launch_id == lid))


def queue(app, make_launch, query: str = "") -> str:
    client = app.test_client()
    lid = make_launch(client, context=worker_context("Practitioner/sw", "Sam Social", BWH_AND_MGH, SW_SCOPE),
                      iss=EHR1, kind="standalone")
    resp = client.get(f"/l/{lid}/worklist{query}")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def rows(page: str) -> list[str]:
    return re.findall(r'data-testid="referral-([^"]+)"', page)


def overdue_flag(page: str, rid: str) -> str:
    return re.search(rf'data-testid="referral-{rid}"[^>]*data-overdue="(yes|no)"', page).group(1)


def test_urgent_is_one_business_hour_of_the_programs_hours(app, make_launch):
    # In hours: an hour later. Friday 17:00: the half hour left that day, then Monday's opening.
    assert due_of(app, refer(app, make_launch, "2026-12-02T10:00", "p1", urgent=True)) == at("2026-12-02T11:00")
    assert due_of(app, refer(app, make_launch, "2026-12-04T17:00", "p2", urgent=True)) == at("2026-12-07T09:00")
    # Saturday night, outside the hours: an hour after Monday opens.
    assert due_of(app, refer(app, make_launch, "2026-12-05T23:30", "p3", urgent=True)) == at("2026-12-07T09:30")
    # Christmas Eve 17:00: Christmas Day (a holiday) is skipped.
    assert due_of(app, refer(app, make_launch, "2026-12-24T17:00", "p4", urgent=True)) == at("2026-12-28T09:00")


def test_routine_is_two_business_days_skipping_weekends_and_holidays(app, make_launch):
    # Monday 10:00: Wednesday 10:00.
    assert due_of(app, refer(app, make_launch, "2026-12-07T10:00", "p1", urgent=False)) == at("2026-12-09T10:00")
    # Friday night: two whole business days, Monday and Tuesday.
    assert due_of(app, refer(app, make_launch, "2026-12-04T23:00", "p2", urgent=False)) == at("2026-12-08T17:30")
    # Thursday before Christmas (Friday a holiday): Monday, then Tuesday at the same point of the day.
    assert due_of(app, refer(app, make_launch, "2026-12-24T16:00", "p3", urgent=False)) == at("2026-12-29T16:00")
    # Friday before Martin Luther King Jr. Day (Monday 18 January 2027): Tuesday, then Wednesday.
    assert due_of(app, refer(app, make_launch, "2027-01-15T12:00", "p4", urgent=False)) == at("2027-01-20T12:00")


def test_the_route_teams_program_counts_else_the_sites_else_around_the_clock(app, make_launch):
    # The route's team names a program answering around the clock: Friday night + 1 hour, not Monday 09:30.
    with_deployment(app, routing={"teams": [{"id": "sw-bwh", "name": "BWH social work", "sites": ["Location/loc-bwh"],
                                             "program": "national-dv-hotline"}]})
    assert due_of(app, refer(app, make_launch, "2026-12-04T23:00", "p1", urgent=True)) == at("2026-12-05T00:00")
    # A clinic no directory program serves, no team: around the clock.
    with_deployment(app, routing={"teams": []})
    assert due_of(app, refer_from_unknown_clinic(app, make_launch, "2026-12-04T23:00", "p2")) == at("2026-12-05T00:00")
    # The same clinic covered by a team whose program keeps office hours: Monday.
    with_deployment(app, routing={"teams": [{"id": "sw-else", "name": "Elsewhere social work",
                                             "sites": ["Location/loc-elsewhere"], "program": "haven"}]})
    assert due_of(app, refer_from_unknown_clinic(app, make_launch, "2026-12-04T23:00", "p3")) == at("2026-12-07T09:30")


def test_a_deployment_due_setting_is_used_and_a_bad_one_stops_start_up(app, make_launch, tmp_path):
    worklist = settings_of(app).worklist.model_dump()
    replace_settings(app, worklist={**worklist, "due": {"urgent": "4 hours"}})  # on the clock
    assert due_of(app, refer(app, make_launch, "2026-12-04T23:00", "p1", urgent=True)) == at("2026-12-05T03:00")
    assert "A first contact is due 4 hours after an urgent referral and 2 business days after a routine one" in \
        queue(app, make_launch)
    with pytest.raises(DueConfigError, match="worklist.due.routine"):
        create_app(app_config(f"sqlite:///{tmp_path / 'bad.db'}", WORKLIST={"due": {"routine": "soon"}}))


def test_overdue_is_past_the_due_time_highlighted_and_first(app, make_launch):
    routine_late = refer(app, make_launch, "2026-12-01T10:00", "p1", urgent=False)   # due Thu 3 Dec 10:00
    urgent_soon = refer(app, make_launch, "2026-12-03T11:30", "p2", urgent=True)     # due Thu 3 Dec 12:30
    urgent_late = refer(app, make_launch, "2026-12-03T09:00", "p3", urgent=True)     # due Thu 3 Dec 10:00
    routine_fresh = refer(app, make_launch, "2026-12-03T11:45", "p4", urgent=False)  # due Mon 7 Dec 11:45
    pin(app, at("2026-12-03T12:00"))
    page = queue(app, make_launch)
    # Overdue first, urgent before routine; then the urgent one still in time; then the rest.
    assert rows(page) == [urgent_late, routine_late, urgent_soon, routine_fresh]
    assert [overdue_flag(page, r) for r in rows(page)] == ["yes", "yes", "no", "no"]
    assert 'class="row-overdue"' in page.split(f'data-testid="referral-{urgent_late}"')[1].split(">")[0] + ">"
    assert "in 30 min" in page.split(f'data-testid="referral-{urgent_soon}"')[1].split("</tr>")[0]
    # The overdue filter, in SQL: both overdue ones, with its count.
    assert rows(queue(app, make_launch, "?urgency=overdue")) == [urgent_late, routine_late]
    assert re.search(r'data-testid="filter-urgency-overdue"[^>]*>[^<]*<span class="count">\(2\)', page)
    # Half an hour later the urgent one is overdue too; a contact attempt ends the overdue state.
    pin(app, at("2026-12-03T12:31"))
    assert rows(queue(app, make_launch, "?urgency=overdue")) == [urgent_late, urgent_soon, routine_late]
    with app.app_context(), session_scope(app) as db:
        db.execute(update(ReferralRecord).where(ReferralRecord.id == urgent_late)
                   .values(first_contact_at=at("2026-12-03T12:20")))
    assert rows(queue(app, make_launch, "?urgency=overdue")) == [urgent_soon, routine_late]


def test_a_referral_without_a_stored_due_time_is_due_its_urgencys_time_around_the_clock(app, make_launch):
    old = refer(app, make_launch, "2026-12-04T23:00", "p1", urgent=True)
    with app.app_context(), session_scope(app) as db:
        db.execute(update(ReferralRecord).where(ReferralRecord.id == old).values(due_at=None))
    pin(app, at("2026-12-04T23:59"))
    assert overdue_flag(queue(app, make_launch), old) == "no"
    pin(app, at("2026-12-05T00:01"))  # an hour and a minute after it was made, weekend or not
    page = queue(app, make_launch)
    assert overdue_flag(page, old) == "yes" and rows(queue(app, make_launch, "?urgency=overdue")) == [old]
