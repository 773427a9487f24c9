"""Who works a referral: a social worker takes it or hands it over to a colleague of the same EHR and team, each
change audited with staff references only; the queue shows the assignee on the row and filters mine / unassigned."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from smart_app.store.db import session_scope
from smart_app.store.models import AuditEvent, ReferralRecord
from tests.worklist.support import EHR1, EHR2, SNOMED_SW, make_referral, role, with_deployment, worker_context

pytestmark = [pytest.mark.routing, pytest.mark.worklist]

SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"
BWH = [role([SNOMED_SW], organizations=["Organization/org-bwh"])]
MGH = [role([SNOMED_SW], organizations=["Organization/org-mgh"])]


def worker(app, make_launch, reference, name, roles=BWH, iss=EHR1):
    client = app.test_client()
    lid = make_launch(client, context=worker_context(reference, name, roles, SW_SCOPE), iss=iss, kind="standalone")
    assert client.get(f"/l/{lid}/worklist").status_code == 200  # the queue has now seen this social worker
    return client, lid


def rows(page):
    return re.findall(r'data-testid="referral-([^"]+)"', page)


def handover_options(page):
    select_html = page.split('data-testid="handover-to"')[1].split("</select>")[0]
    return re.findall(r'<option value="([^"]+)">([^<]+)</option>', select_html)


def assignee_of(app, rid):
    with app.app_context(), session_scope(app) as db:
        return db.get(ReferralRecord, rid).assignee


def audit_rows(app):
    with app.app_context(), session_scope(app) as db:
        return [(a.actor, a.object_id, a.detail) for a in db.scalars(
            select(AuditEvent).where(AuditEvent.action == "assign_referral").order_by(AuditEvent.id))]


def test_take_then_hand_over_to_a_colleague_seen_for_this_ehr_each_audited(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p1", "Hana Handover")
    sam, sam_lid = worker(app, make_launch, "Practitioner/sam", "Sam Social")
    worker(app, make_launch, "Practitioner/alex", "Alex Advocate")
    worker(app, make_launch, "Practitioner/mia", "Mia Other EHR", iss=EHR2)  # another EHR: never offered
    page = sam.get(f"/l/{sam_lid}/worklist/{rid}").get_data(as_text=True)
    assert 'data-testid="assignee" data-assignee=""' in page and "Nobody yet" in page
    assert handover_options(page) == [("Practitioner/alex", "Alex Advocate")]

    assert sam.post(f"/l/{sam_lid}/worklist/{rid}/assign", data={"action": "take"}).status_code == 302
    assert assignee_of(app, rid) == "Practitioner/sam"
    row = sam.get(f"/l/{sam_lid}/worklist").get_data(as_text=True).split(f'data-testid="referral-{rid}"')[1]
    assert 'data-assignee="Practitioner/sam"' in row[:400] and 'data-mine="yes"' in row.split("</tr>")[0]

    assert sam.post(f"/l/{sam_lid}/worklist/{rid}/assign",
                    data={"action": "hand_over", "to": "Practitioner/alex"}).status_code == 302
    assert assignee_of(app, rid) == "Practitioner/alex"
    row = sam.get(f"/l/{sam_lid}/worklist").get_data(as_text=True).split(f'data-testid="referral-{rid}"')[1]
    assert "Alex Advocate" in row.split("</tr>")[0] and 'data-mine="no"' in row.split("</tr>")[0]

    # A colleague not seen yet, typed; a malformed one refused (and audited as refused), nothing changed.
    assert sam.post(f"/l/{sam_lid}/worklist/{rid}/assign",
                    data={"action": "hand_over", "to_typed": " Practitioner/new-1 "}).status_code == 302
    assert assignee_of(app, rid) == "Practitioner/new-1"
    refused = sam.post(f"/l/{sam_lid}/worklist/{rid}/assign", data={"action": "hand_over", "to_typed": "Hana H."})
    assert "error=handover" in refused.headers["Location"] and assignee_of(app, rid) == "Practitioner/new-1"

    history = [re.sub(r"<[^>]+>", "", li).split(" — ", 1)[1].strip() for li in re.findall(
        r'<li data-kind="assign">(.*?)</li>', sam.get(f"/l/{sam_lid}/worklist/{rid}").get_data(as_text=True), re.S)]
    assert history == ["Taken: Sam Social", "Handed over to Alex Advocate: Sam Social",
                       "Handed over to Practitioner/new-1: Sam Social"]
    assert audit_rows(app) == [
        ("Practitioner/sam", rid, "take (was nobody)"),
        ("Practitioner/sam", rid, "hand over to Practitioner/alex (was Practitioner/sam)"),
        ("Practitioner/sam", rid, "hand over to Practitioner/new-1 (was Practitioner/alex)"),
        ("Practitioner/sam", rid, "refused: invalid-reference"),
    ]
    with app.app_context(), session_scope(app) as db:
        details = " ".join(a.detail or "" for a in db.scalars(select(AuditEvent)))
    assert "Hana" not in details and "MRN-p1" not in details


def test_a_teams_referral_is_offered_only_to_that_teams_members(app, make_launch):
    with_deployment(app, routing={"teams": [
        {"id": "bwh-team", "name": "BWH team", "sites": ["Location/loc-bwh"], "members": ["Practitioner/sam",
                                                                                          "Practitioner/alex"]},
        {"id": "mgh-team", "name": "MGH team", "sites": ["Location/loc-mgh"], "members": ["Practitioner/mo"]}]})
    rid = make_referral(app, make_launch, "bwh", "p1", "Tia Team")
    sam, sam_lid = worker(app, make_launch, "Practitioner/sam", "Sam Social", roles=[role([SNOMED_SW])])
    worker(app, make_launch, "Practitioner/alex", "Alex Advocate", roles=[role([SNOMED_SW])])
    worker(app, make_launch, "Practitioner/mo", "Mo MGH", roles=[role([SNOMED_SW])])
    page = sam.get(f"/l/{sam_lid}/worklist/{rid}").get_data(as_text=True)
    assert handover_options(page) == [("Practitioner/alex", "Alex Advocate")]


def test_mine_and_unassigned_filters_in_sql_with_counts(app, make_launch):
    mine = make_referral(app, make_launch, "bwh", "p1", "Mina Mine")
    theirs = make_referral(app, make_launch, "bwh", "p2", "Theo Theirs")
    free = make_referral(app, make_launch, "bwh", "p3", "Fran Free")
    sam, sam_lid = worker(app, make_launch, "Practitioner/sam", "Sam Social")
    alex, alex_lid = worker(app, make_launch, "Practitioner/alex", "Alex Advocate")
    assert sam.post(f"/l/{sam_lid}/worklist/{mine}/assign", data={"action": "take"}).status_code == 302
    assert alex.post(f"/l/{alex_lid}/worklist/{theirs}/assign", data={"action": "take"}).status_code == 302
    assert set(rows(sam.get(f"/l/{sam_lid}/worklist?assignee=mine").get_data(as_text=True))) == {mine}
    assert set(rows(sam.get(f"/l/{sam_lid}/worklist?assignee=unassigned").get_data(as_text=True))) == {free}
    assert set(rows(alex.get(f"/l/{alex_lid}/worklist?assignee=mine").get_data(as_text=True))) == {theirs}
    page = sam.get(f"/l/{sam_lid}/worklist").get_data(as_text=True)
    for value, n in (("mine", 1), ("unassigned", 1), ("others", 1)):
        assert re.search(rf'data-testid="filter-assignee-{value}"[^>]*>[^<]*<span class="count">\({n}\)', page)


def test_a_program_manager_cannot_take_or_hand_over(app, make_launch):
    rid = make_referral(app, make_launch, "bwh", "p1", "Pia Manager")
    with_deployment(app, roles={"program_manager": {"texts": ["program manager"]}})
    client = app.test_client()
    lid = make_launch(client, context=worker_context(
        "Practitioner/pm", "Pat Manager", [role(texts=["Program manager"], organizations=["Organization/org-bwh"])],
        SW_SCOPE), iss=EHR1, kind="standalone")
    assert client.post(f"/l/{lid}/worklist/{rid}/assign", data={"action": "take"}).status_code == 403
    assert assignee_of(app, rid) is None
