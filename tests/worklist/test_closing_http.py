"""Closing a referral says how it ended, from a short list: without one nothing closes; the outcome is stored as a
plain code (with the attempt count for "unable to reach safely"), and shown in the queue, the referral and the CSV."""

from __future__ import annotations

import csv
import io
import re

import pytest

from smart_app.store.db import session_scope
from smart_app.store.models import AuditEvent, ReferralRecord
from tests.worklist.support import EHR1, SNOMED_SW, make_referral, role, worker_context

pytestmark = [pytest.mark.routing, pytest.mark.worklist]

SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"


def social_worker(app, make_launch):
    client = app.test_client()
    return client, make_launch(client, context=worker_context(
        "Practitioner/sw", "Sam Social", [role([SNOMED_SW], organizations=["Organization/org-bwh"])], SW_SCOPE),
        iss=EHR1, kind="standalone")


def stored(app, rid):
    with app.app_context(), session_scope(app) as db:
        r = db.get(ReferralRecord, rid)
        return r.status, r.closing_outcome, r.closing_attempts


def test_closing_requires_an_outcome_from_the_list(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p1", "Cora Close")
    client, lid = social_worker(app, make_launch)
    page = client.get(f"/l/{lid}/worklist/{rid}").get_data(as_text=True)
    menu = page.split('data-testid="closing-outcome"')[1].split("</select>")[0]
    offered = re.findall(r'<option value="([a-z_]+)">', menu)
    assert offered == ["reached_supported", "reached_declined", "unreachable", "referred_elsewhere", "duplicate"]
    for outcome in ("", "bogus"):
        resp = client.post(f"/l/{lid}/worklist/{rid}/status", data={"status": "rejected", "outcome": outcome})
        assert "error=outcome" in resp.headers["Location"]
        assert stored(app, rid) == ("requested", None, None)
    assert 'data-testid="outcome-error"' in client.get(resp.headers["Location"]).get_data(as_text=True)
    # Moves that do not close need none.
    assert client.post(f"/l/{lid}/worklist/{rid}/status", data={"status": "accepted"}).status_code == 302
    assert stored(app, rid) == ("accepted", None, None)
    assert client.post(f"/l/{lid}/worklist/{rid}/status",
                       data={"status": "cancelled", "outcome": "duplicate"}).status_code == 302
    assert stored(app, rid) == ("cancelled", "duplicate", None)
    with app.app_context(), session_scope(app) as db:
        details = [a.detail for a in db.query(AuditEvent).filter(AuditEvent.action == "change_status")]
    assert details == ["refused: no-closing-outcome", "refused: no-closing-outcome", "requested->accepted",
                       "accepted->cancelled (duplicate)"]


def test_unable_to_reach_safely_keeps_the_attempts_and_every_view_shows_the_outcome(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p1", "Una Reach")
    other = make_referral(app, make_launch, "bwh", "p2", "Sue Supported")
    client, lid = social_worker(app, make_launch)
    for _ in range(3):
        assert client.post(f"/l/{lid}/worklist/{rid}/contact",
                           data={"channel": "phone", "outcome": "no_answer"}).status_code == 302
    for status in ("accepted", "completed"):
        client.post(f"/l/{lid}/worklist/{rid}/status", data={"status": status, "outcome": "unreachable"})
        client.post(f"/l/{lid}/worklist/{other}/status", data={"status": status, "outcome": "reached_supported"})
    assert stored(app, rid) == ("completed", "unreachable", 3)
    queue = client.get(f"/l/{lid}/worklist?status=closed").get_data(as_text=True)
    row = queue.split(f'data-testid="referral-{rid}"')[1].split("</tr>")[0]
    assert 'data-outcome="unreachable"' in row and "Unable to reach safely after 3 attempts" in row
    assert "Reached and supported" in queue.split(f'data-testid="referral-{other}"')[1].split("</tr>")[0]
    page = client.get(f"/l/{lid}/worklist/{rid}").get_data(as_text=True)
    assert re.search(r'data-testid="closing-outcome-shown" data-outcome="unreachable">Unable to reach safely after 3 '
                     r'attempts<', page)
    lines = list(csv.DictReader(io.StringIO(client.get(f"/l/{lid}/worklist/export.csv?status=closed")
                                             .get_data(as_text=True))))
    assert {line["closing_outcome"] for line in lines} == {"Unable to reach safely after 3 attempts",
                                                           "Reached and supported"}
