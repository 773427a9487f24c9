"""Scope: two EHRs and three sites; social workers with different coverage see and act on exactly their
referrals — list, history, status change, contact log and export — and anything else is a plain 404."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from fhir.builders import reference_code
from smart_app.store.db import session_scope
from smart_app.store.models import AuditEvent, ContactAttempt, ReferralEvent
from tests.worklist.support import EHR1, EHR2, SNOMED_SW, make_referral, role, with_deployment, worker_context

pytestmark = pytest.mark.worklist


@pytest.fixture
def world(app, make_launch):
    """EHR 1: referrals at BWH, MGH and MGH Chelsea. EHR 2: one at BWH (same site ids, other EHR). Every site has
    a route (BWH a team whose site the BWH social worker's role covers), so no referral is in the unrouted queue
    that every social worker of its EHR sees (tests/worklist/test_routing_http.py)."""
    with_deployment(app, worklist={"coverage": {
        "users": {"Practitioner/sw-mgh": ["urn:ipv-sandbox:site|mgh", "urn:ipv-sandbox:site|mgh-chelsea"]},
        "roles": {}}},
        routing={"teams": [{"id": "sw-bwh", "name": "BWH social work", "sites": ["Organization/org-bwh"]}]})
    return {
        "bwh": make_referral(app, make_launch, "bwh", "p-bwh", "Bea Brigham"),
        "mgh": make_referral(app, make_launch, "mgh", "p-mgh", "Mia General", danger=True),
        "chelsea": make_referral(app, make_launch, "mgh-chelsea", "p-chel", "Cleo Chelsea"),
        "ehr2-bwh": make_referral(app, make_launch, "bwh", "p-other", "Olga Otherehr", iss=EHR2),
    }


WORKERS = {
    # Coverage from the EHR: PractitionerRole.organization.
    "sw_bwh": (EHR1, worker_context("Practitioner/sw-bwh", "Devon Social", [role([SNOMED_SW],
                                                                              organizations=["Organization/org-bwh"])])),
    # Text-only role ("Medical social worker"), coverage from the deployment file per user.
    "sw_mgh": (EHR1, worker_context("Practitioner/sw-mgh", "Emery Social", [role(texts=["Medical social worker"])])),
    # Same site ids, other EHR.
    "sw_ehr2": (EHR2, worker_context("Practitioner/sw-bwh", "Devon Social", [role([SNOMED_SW],
                                                                               organizations=["Organization/org-bwh"])])),
    # A social worker whom nothing assigns to a site.
    "sw_none": (EHR1, worker_context("Practitioner/sw-x", "Nobody Assigned", [role([SNOMED_SW])])),
}
SEES = {"sw_bwh": {"bwh"}, "sw_mgh": {"mgh", "chelsea"}, "sw_ehr2": {"ehr2-bwh"}, "sw_none": set()}


def _login(app, make_launch, who):
    iss, ctx = WORKERS[who]
    client = app.test_client()
    return client, make_launch(client, context=ctx, iss=iss, kind="standalone")


def _listed(page: str) -> set[str]:
    return set(re.findall(r'data-testid="referral-([^"]+)"', page))


@pytest.mark.parametrize("who", sorted(WORKERS))
def test_each_social_worker_sees_and_acts_on_exactly_their_referrals(app, make_launch, world, who):
    client, lid = _login(app, make_launch, who)
    mine = {world[k] for k in SEES[who]}
    others = set(world.values()) - mine
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _listed(page) == mine
    for name in ("Bea Brigham", "Mia General", "Cleo Chelsea", "Olga Otherehr"):
        rid = next(world[k] for k, n in (("bwh", "Bea Brigham"), ("mgh", "Mia General"),
                                          ("chelsea", "Cleo Chelsea"), ("ehr2-bwh", "Olga Otherehr")) if n == name)
        assert (name in page) == (rid in mine)
    csv_text = client.get(f"/l/{lid}/worklist/export.csv?status=all").get_data(as_text=True)
    assert {line.split(",")[0] for line in csv_text.splitlines()[1:]} == {reference_code(r) for r in mine}
    if who == "sw_none":
        assert 'data-reason="no-coverage"' in page and "no site is assigned to you" in page
    for rid in others:
        for resp in (client.get(f"/l/{lid}/worklist/{rid}"), client.get(f"/l/{lid}/worklist/{rid}/history"),
                     client.get(f"/l/{lid}/worklist/{rid}/export.txt"),
                     client.post(f"/l/{lid}/worklist/{rid}/status", data={"status": "accepted"}),
                     client.post(f"/l/{lid}/worklist/{rid}/contact",
                                 data={"channel": "phone", "outcome": "reached", "note": "x"})):
            body = resp.get_data(as_text=True)
            assert resp.status_code == 404
            assert not any(n in body for n in ("Bea", "Mia", "Cleo", "Olga", "MRN"))
    for rid in mine:
        assert client.get(f"/l/{lid}/worklist/{rid}").status_code == 200
        assert client.get(f"/l/{lid}/worklist/{rid}/export.txt").status_code == 200
        assert client.post(f"/l/{lid}/worklist/{rid}/contact", data={"channel": "phone", "outcome": "no_answer"}
                           ).status_code == 302
        assert client.post(f"/l/{lid}/worklist/{rid}/status", data={"status": "accepted"}).status_code == 302
    with app.app_context(), session_scope(app) as db:
        audit = list(db.scalars(select(AuditEvent).where(AuditEvent.actor == WORKERS[who][1]["user"]["reference"],
                                                         AuditEvent.iss == WORKERS[who][0])))
        refused = [a for a in audit if a.detail == "refused: not-found"]
        assert sorted({a.object_id for a in refused}) == sorted(others) and len(refused) == 5 * len(others)
        assert {a.action for a in audit if a.object_id in mine} == {"open_referral", "export", "log_contact",
                                                                    "change_status"} or not mine
        assert [a.action for a in audit if a.object_id is None][:2] == ["view_worklist", "export"]
        touched = set(db.scalars(select(ReferralEvent.referral_id)))
        touched |= set(db.scalars(select(ContactAttempt.referral_id)))
        assert touched == mine  # nothing outside the scope was changed


def test_a_clinician_role_gets_no_queue(app, make_launch, world):
    client = app.test_client()
    ctx = worker_context("Practitioner/doc", "Dr. Doc", [role([{"system": "http://snomed.info/sct",
                                                                "code": "309343006"}],
                                                               organizations=["Organization/org-bwh"])])
    lid = make_launch(client, context=ctx, iss=EHR1, kind="standalone")
    resp = client.get(f"/l/{lid}/worklist")
    assert resp.status_code == 403 and "Bea Brigham" not in resp.get_data(as_text=True)
    assert client.get(f"/l/{lid}/worklist/{world['bwh']}").status_code == 403


def test_program_manager_reads_and_exports_but_does_not_act(app, make_launch, world):
    with_deployment(app, roles={"social_worker": {"codes": [{"system": "http://snomed.info/sct",
                                                              "code": "106328005"}]},
                                "program_manager": {"texts": ["program manager"]}})
    client = app.test_client()
    ctx = worker_context("Practitioner/pm", "Pat Manager", [role(texts=["DV Program Manager"],
                                                                 organizations=["Organization/org-bwh"])])
    lid = make_launch(client, context=ctx, iss=EHR1, kind="standalone")
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _listed(page) == {world["bwh"]} and "read and export" in page
    assert client.get(f"/l/{lid}/worklist/export.csv").status_code == 200
    assert client.post(f"/l/{lid}/worklist/{world['bwh']}/status", data={"status": "accepted"}).status_code == 403
    with app.app_context(), session_scope(app) as db:
        assert db.scalar(select(func.count()).select_from(ReferralEvent)) == 0


def test_coverage_by_role_in_the_deployment_file(app, make_launch, world):
    with_deployment(app, worklist={"coverage": {"users": {}, "roles": {"social_worker": ["Location/loc-mgh"]}}})
    client, lid = _login(app, make_launch, "sw_none")
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _listed(page) == {world["mgh"]} and "from this app's settings for your role" in page


def test_scope_on_postgresql(postgres_url):
    """The scope query (iss + EXISTS over referral_site) on PostgreSQL, as deployed."""
    from smart_app import create_app
    from tests.conftest import app_config, launch_for

    app = create_app(app_config(postgres_url))
    # Each site has a team, so no referral here is in the unrouted queue every social worker of its EHR sees.
    with_deployment(app, routing={"teams": [{"id": "t-bwh", "name": "BWH", "sites": ["Organization/org-bwh"]},
                                            {"id": "t-mgh", "name": "MGH", "sites": ["Organization/org-mgh"]}]})
    try:
        def make(client, context=None, data=None, iss=EHR1, kind="ehr"):
            return launch_for(app, client, context, data, iss=iss, kind=kind)

        mine = make_referral(app, make, "bwh", "p-a", "Ada Postgres")
        other_ehr = make_referral(app, make, "bwh", "p-b", "Bo Otherehr", iss=EHR2)
        other_site = make_referral(app, make, "mgh", "p-c", "Cy Othersite")
        iss, ctx = WORKERS["sw_bwh"]
        client = app.test_client()
        lid = make(client, context=ctx, iss=iss, kind="standalone")
        assert _listed(client.get(f"/l/{lid}/worklist").get_data(as_text=True)) == {mine}
        for rid in (other_ehr, other_site):
            assert client.get(f"/l/{lid}/worklist/{rid}").status_code == 404
            assert client.post(f"/l/{lid}/worklist/{rid}/status", data={"status": "accepted"}).status_code == 404
        assert client.post(f"/l/{lid}/worklist/{mine}/status", data={"status": "accepted"}).status_code == 302
    finally:
        app.extensions["db_engine"].dispose()
