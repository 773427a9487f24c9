"""Routing at creation, through the consent page: a team that covers the site, else the fallback team, else the
unrouted queue that every social worker and program manager of that EHR sees first. The clinician is told who
will see it, and never more than is true. EHR identity: several iss values are one EHR."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from config.current import settings_of
from sandbox_ehr.harness.launches import app_config
from smart_app import create_app
from smart_app.ops import housekeeping
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord
from smart_app.worklist.routing import RoutingConfigError
from tests.worklist.support import (
    EHR1,
    EHR2,
    SNOMED_SW,
    clinician_context,
    referral_data,
    role,
    with_deployment,
    worker_context,
)
from tests.writeback.support import consent

pytestmark = [pytest.mark.routing, pytest.mark.worklist]

EHR1_STANDALONE = "http://127.0.0.1:9/standalone/fhir"  # the same EHR as EHR1, on another iss
PM = {"system": "urn:local", "code": "PM", "display": "Program manager"}
TEAM = {"id": "passageway-bwh", "name": "Passageway's social work team at BWH", "sites": ["Location/loc-bwh"],
        "members": ["Practitioner/sw-team"]}
FALLBACK = {"id": "on-call", "name": "the social-work team on call", "fallback": True,
            "members": ["Practitioner/sw-oncall"]}


def _record(app, rid):
    with app.app_context(), session_scope(app) as db:
        r = db.get(ReferralRecord, rid)
        return r.ehr, r.route_kind, r.route_team


def _refer(app, make_launch, site, patient, iss=EHR1):
    """A referral through the consent page; returns its id and the confirmation page the clinician reads."""
    client = app.test_client()
    lid = make_launch(client, context=clinician_context(site, patient, "Pat Example"), data=referral_data(site),
                      iss=iss)
    assert consent(client, lid, channel="phone", resources=["ServiceRequest", "Task"]).status_code == 302
    with app.app_context(), session_scope(app) as db:
        rid = db.scalar(select(ReferralRecord.id).where(ReferralRecord.launch_id == lid))
    page = client.get(f"/l/{lid}/consent/done").get_data(as_text=True)
    return rid, html.unescape(re.search(r'data-testid="social-work-next">([^<]*)<', page).group(1))


def _queue(app, make_launch, reference, roles, iss=EHR1):
    client = app.test_client()
    lid = make_launch(client, context=worker_context(reference, "S W", roles), iss=iss, kind="standalone")
    resp = client.get(f"/l/{lid}/worklist")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    return page, re.findall(r'data-testid="referral-([^"]+)"', page)


def _ehrs(app):
    """Two EHRs of the test's own (the sandbox deployment's teams, for its own EHR, go with its ehrs block)."""
    with_deployment(app, ehrs={"ehr1": {"name": "EHR one", "iss": [EHR1, EHR1_STANDALONE]},
                               "ehr2": {"name": "EHR two", "iss": [EHR2]}}, routing={})


def test_a_covered_site_goes_to_its_team_and_the_clinician_is_told_the_team(app, make_launch):
    _ehrs(app)
    with_deployment(app, routing={"teams": [{**TEAM, "ehr": "ehr1"}, {**FALLBACK, "ehr": "ehr1"}]})
    rid, words = _refer(app, make_launch, "bwh", "p1")
    assert _record(app, rid) == ("ehr1", "coverage", "passageway-bwh")
    assert "Passageway's social work team at BWH sees this referral" in words
    _page, listed = _queue(app, make_launch, "Practitioner/sw-team", [role([SNOMED_SW])])
    assert listed == [rid]
    _page, listed = _queue(app, make_launch, "Practitioner/sw-oncall", [role([SNOMED_SW])])
    assert listed == []  # routed to a team: the fallback team does not see it


def test_an_uncovered_site_goes_to_the_fallback_team_and_says_it_has_no_team(app, make_launch):
    _ehrs(app)
    with_deployment(app, routing={"teams": [{**TEAM, "ehr": "ehr1"}, {**FALLBACK, "ehr": "ehr1"}]})
    rid, words = _refer(app, make_launch, "mgh", "p2")
    assert _record(app, rid) == ("ehr1", "fallback", "on-call")
    assert "the social-work team on call sees this referral — this site has no assigned team yet" in words
    assert "You do not need to do anything else" not in words
    _page, listed = _queue(app, make_launch, "Practitioner/sw-oncall", [role([SNOMED_SW])])
    assert listed == [rid]


def test_with_no_team_the_referral_is_unrouted_and_every_social_worker_and_manager_of_the_ehr_sees_it_first(
        app, make_launch):
    _ehrs(app)
    with_deployment(app, roles={"social_worker": {"codes": [{"system": SNOMED_SW["system"],
                                                             "code": SNOMED_SW["code"]}]},
                                "program_manager": {"texts": ["program manager"]}},
                    routing={"teams": [{**TEAM, "ehr": "ehr1"}]})
    covered, _words = _refer(app, make_launch, "bwh", "p0")
    rid, words = _refer(app, make_launch, "mgh", "p3")
    other, _words = _refer(app, make_launch, "mgh", "p4", iss=EHR2)
    assert _record(app, rid) == ("ehr1", "unrouted", None)
    assert "no assigned social-work team yet" in words and "every social worker of this EHR" in words
    assert "You do not need to do anything else" not in words
    # A social worker whom nothing assigns to a site, on the EHR's other iss; a team member; a program manager.
    for reference, roles, iss in (("Practitioner/sw-x", [role([SNOMED_SW])], EHR1_STANDALONE),
                                  ("Practitioner/sw-team", [role([SNOMED_SW])], EHR1),
                                  ("Practitioner/pm", [role([PM])], EHR1)):
        page, listed = _queue(app, make_launch, reference, roles, iss=iss)
        assert rid in listed and other not in listed
        assert listed[0] == rid  # at the top, before the team's own referral
        assert 'data-testid="unrouted-banner" data-count="1"' in page
        assert (covered in listed) == (reference == "Practitioner/sw-team")
    # The other EHR's social worker sees its own unrouted referral, never this one.
    page, listed = _queue(app, make_launch, "Practitioner/sw-y", [role([SNOMED_SW])], iss=EHR2)
    assert listed == [other]


def test_a_launch_with_no_encounter_is_unrouted_not_lost(app, make_launch):
    from tests.conftest import default_context

    _ehrs(app)
    ctx = default_context()
    ctx["encounter"] = None
    client = app.test_client()
    lid = make_launch(client, context=ctx, data=referral_data("bwh"), iss=EHR1)
    assert consent(client, lid, channel="phone", resources=["ServiceRequest", "Task"]).status_code == 302
    with app.app_context(), session_scope(app) as db:
        r = db.scalar(select(ReferralRecord).where(ReferralRecord.launch_id == lid))
        rid, route = r.id, (r.ehr, r.route_kind)
    assert route == ("ehr1", "unrouted")
    page = client.get(f"/l/{lid}/consent/done").get_data(as_text=True)
    assert "the EHR did not say where this visit is" in page and "every social worker of this EHR" in page
    _page, listed = _queue(app, make_launch, "Practitioner/sw-x", [role([SNOMED_SW])])
    assert listed == [rid]


def test_without_an_ehrs_block_each_iss_is_its_own_ehr(app, make_launch):
    rid, _words = _refer(app, make_launch, "mgh", "p5")
    assert _record(app, rid) == (EHR1, "unrouted", None)
    _page, listed = _queue(app, make_launch, "Practitioner/sw-x", [role([SNOMED_SW])], iss=EHR2)
    assert listed == []
    _page, listed = _queue(app, make_launch, "Practitioner/sw-x", [role([SNOMED_SW])], iss=EHR1)
    assert listed == [rid]


def test_a_standalone_launch_on_an_iss_tied_to_no_ehr_is_refused_with_a_reason(app):
    with_deployment(app, ehrs={"ehr1": {"iss": [EHR1]}}, routing={},
                    allowed_iss=[*settings_of(app).allowed_iss, EHR1, EHR2])
    resp = app.test_client().get("/launch/standalone", query_string={"iss": EHR2})
    assert resp.status_code == 400
    assert "do not say which EHR this address belongs to" in resp.get_data(as_text=True)


def test_iss_patterns_tie_per_launch_iss_values_to_one_ehr():
    from config.ehrs import ehr_id_for
    from config.settings import load_settings
    dep = load_settings({"ALLOWED_ISS": [], "EHRS": {"sbx": {"iss": ["http://h/fhir"],
                                                             "iss_patterns": ["http://h/launch/*/fhir"]}},
                         "ROUTING": {}})
    assert ehr_id_for("http://h/fhir/", dep) == "sbx"
    assert ehr_id_for("http://h/launch/abc123/fhir", dep) == "sbx"
    assert ehr_id_for("http://h/launch/a/b/fhir", dep) == "http://h/launch/a/b/fhir"  # * is one segment
    assert ehr_id_for("http://other/fhir", dep) == "http://other/fhir"


def test_the_deployment_coverage_adds_to_the_places_the_ehr_role_names(app, make_launch):
    """A site the deployment file covers is routed (no team, no fallback): the social workers it names see it even
    when their EHR role names other places (the EHR's places used to replace the file's list, and the referral,
    routed, reached no one)."""
    _ehrs(app)
    with_deployment(app, worklist={"coverage": {"roles": {"social_worker": ["Location/loc-mgh"]},
                                                "users": {"Practitioner/sw-own": ["Location/loc-bwh"]}}})
    rid, _words = _refer(app, make_launch, "mgh", "p9")
    assert _record(app, rid) == ("ehr1", "coverage", None)
    for reference in ("Practitioner/sw-places", "Practitioner/sw-own"):  # EHR places; their own list
        _page, listed = _queue(app, make_launch, reference,
                               [role([SNOMED_SW], organizations=["Organization/org-elsewhere"])])
        assert listed == [rid]


def test_the_program_managers_coverage_lets_them_see_a_site_and_routes_nothing(app, make_launch):
    """Program managers read the queue and change nothing: a site only their coverage lists is unrouted, so every
    social worker of the EHR sees it (routed to them alone, no one would work it)."""
    _ehrs(app)
    with_deployment(app, roles={"social_worker": {"codes": [{"system": SNOMED_SW["system"],
                                                             "code": SNOMED_SW["code"]}]},
                                "program_manager": {"texts": ["program manager"]}},
                    worklist={"coverage": {"roles": {"program_manager": ["Location/loc-mgh"]}}})
    rid, words = _refer(app, make_launch, "mgh", "p10")
    assert _record(app, rid) == ("ehr1", "unrouted", None)
    assert "You do not need to do anything else" not in words
    for reference, roles in (("Practitioner/pm", [role([PM])]), ("Practitioner/sw-x", [role([SNOMED_SW])])):
        _page, listed = _queue(app, make_launch, reference, roles)
        assert listed == [rid]


def test_a_team_of_program_managers_alone_stops_start_up_naming_it(tmp_path):
    teams = {"teams": [{"id": "managers", "name": "The managers", "sites": ["Location/loc-mgh"],
                        "members": ["program_manager"]}]}
    with pytest.raises(RoutingConfigError, match=r"routing.teams\[0\] \(managers\): members are only program"):
        create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", ROUTING=teams))


def test_referrals_made_before_the_ehrs_block_named_their_ehr_stay_in_its_queues(app, make_launch):
    # Made while each iss was its own EHR (keyed on the raw iss); then the deployment ties EHR1 and its standalone
    # iss to one EHR. The referral stays in that EHR's queues on either iss, at the top as unrouted, counted; never
    # another EHR's; the worker's round then keys it on the EHR.
    rid, _words = _refer(app, make_launch, "mgh", "p6")
    assert _record(app, rid) == (EHR1, "unrouted", None)
    _ehrs(app)
    for iss in (EHR1_STANDALONE, EHR1):
        page, listed = _queue(app, make_launch, "Practitioner/sw-x", [role([SNOMED_SW])], iss=iss)
        assert listed == [rid] and 'data-testid="unrouted-banner" data-count="1"' in page
    _page, listed = _queue(app, make_launch, "Practitioner/sw-y", [role([SNOMED_SW])], iss=EHR2)
    assert listed == []
    with app.app_context(), session_scope(app) as db:
        assert housekeeping.run(app, db)["referrals_rekeyed"] == 1
    assert _record(app, rid) == ("ehr1", "unrouted", None)
    _page, listed = _queue(app, make_launch, "Practitioner/sw-x", [role([SNOMED_SW])], iss=EHR1_STANDALONE)
    assert listed == [rid]
