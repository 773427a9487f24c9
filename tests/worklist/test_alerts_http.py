"""Alerts that reach someone: an unrouted referral or an urgent one not contacted in time shows a banner to every
social worker of that EHR (and of no other), makes /readyz ``degraded`` with the counts, and sets the gauge
``ipv_referrals_open`` per EHR and route; all of it clears once the referral is closed or contacted. HTTP through
the Flask test client (the EHR is unreachable: chart writes stay queued)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from config.current import replace_settings
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord
from tests.worklist.support import EHR1, EHR2, SNOMED_SW, make_referral, role, with_deployment, worker_context

pytestmark = [pytest.mark.routing, pytest.mark.worklist]

EHR_UNNAMED = "http://127.0.0.1:9/unnamed/fhir"  # an iss the deployment's ehrs block does not name
TEAM = {"id": "passageway-bwh", "name": "Passageway's social work team at BWH", "ehr": "ehr1",
        "sites": ["Location/loc-bwh"], "members": ["Practitioner/sw-team"]}
SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"
TOKEN = "scrape-secret"
# What the referrals below carry that must never reach /readyz or /metrics.
PHI = ("Uma Urgent", "Rosa Unrouted", "Olga Other", "Nadia Nowhere", "MRN-p", "p-urgent", "p-unrouted",
       "Brigham", "Massachusetts General", "loc-bwh", "org-mgh", "127.0.0.1")


@pytest.fixture
def deployment(app):
    with_deployment(app, ehrs={"ehr1": {"name": "EHR one", "iss": [EHR1]}, "ehr2": {"name": "EHR two", "iss": [EHR2]}},
                    routing={"teams": [TEAM]})
    replace_settings(app, metrics_token=TOKEN)
    OutboxWorker(app).beat()  # a live worker: only the referral alerts can make /readyz degraded here
    return app


def _age(app, rid, hours):
    """Made ``hours`` ago, before due times were stored: due its urgency's time later, around the clock."""
    with app.app_context(), session_scope(app) as db:
        db.execute(update(ReferralRecord).where(ReferralRecord.id == rid)
                   .values(created_at=datetime.now(UTC) - timedelta(hours=hours), due_at=None))


def _sw(app, make_launch, reference, iss=EHR1, roles=None):
    client = app.test_client()
    return client, make_launch(client, context=worker_context(reference, "Sam Social", roles or [role([SNOMED_SW])],
                                                              SW_SCOPE), iss=iss, kind="standalone")


def _ready(app):
    resp = app.test_client().get("/readyz")
    text = resp.get_data(as_text=True)
    assert not [p for p in PHI if p in text], text
    return resp.status_code, resp.get_json()


def _gauge(app, phi=PHI) -> dict[tuple[str, str, str, str], float]:
    resp = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert not [p for p in phi if p in text]
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "ipv_referrals_open":
            for s in family.samples:
                key = (s.labels["ehr"], s.labels["route_kind"], s.labels["route_team"], s.labels["state"])
                assert key not in out  # one series each, whichever worker answered
                out[key] = s.value
    return out


def _close(client, lid, rid):
    for status in ("accepted", "completed"):
        assert client.post(f"/l/{lid}/worklist/{rid}/status",
                           data={"status": status, "outcome": "reached_supported"}).status_code == 302


def _banners(page):
    unrouted = re.search(r'data-testid="unrouted-banner" data-count="(\d+)"', page)
    overdue = re.search(r'data-testid="overdue-banner" data-count="(\d+)" data-mine="(\d+)"', page)
    return (int(unrouted.group(1)) if unrouted else 0,
            (int(overdue.group(1)), int(overdue.group(2))) if overdue else None)


def test_readyz_is_degraded_with_counts_while_a_referral_is_unrouted_and_ready_once_someone_takes_it(
        deployment, make_launch):
    app = deployment
    status, body = _ready(app)
    assert status == 200 and body["status"] == "ready"
    assert body["checks"]["referral_alerts"] == {"ok": True, "critical": False,
                                                 "detail": {"unrouted": 0, "overdue_urgent": 0, "routes": []}}
    covered = make_referral(app, make_launch, "bwh", "p-covered", "Cora Covered")  # the team's: no alert
    assert _ready(app)[1]["status"] == "ready"

    rid = make_referral(app, make_launch, "mgh", "p-unrouted", "Rosa Unrouted")  # no team covers MGH
    status, body = _ready(app)
    assert status == 200 and body["status"] == "degraded"  # reported, the instance stays in rotation
    assert body["checks"]["referral_alerts"] == {"ok": False, "critical": False, "detail": {
        "unrouted": 1, "overdue_urgent": 0,
        "routes": [{"ehr": "ehr1", "route_kind": "unrouted", "route_team": "none", "unrouted": 1,
                    "overdue_urgent": 0}]}}
    replace_settings(app, readyz_strict=True)  # strict mode fails readiness on the worker, never on a waiting referral
    status, body = _ready(app)
    assert status == 200 and body["checks"]["referral_alerts"]["critical"] is False

    # A social worker takes it: a person is named for it, so the alert and the banner go, and it is no longer
    # pinned above the older referral (it stays in every queue of the EHR).
    client, lid = _sw(app, make_launch, "Practitioner/sw-team")
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _banners(page) == (1, None) and re.findall(r'data-testid="referral-([^"]+)"', page) == [rid, covered]
    assert client.post(f"/l/{lid}/worklist/{rid}/assign", data={"action": "take"}).status_code == 302
    status, body = _ready(app)
    assert status == 200 and body["status"] == "ready" and body["checks"]["referral_alerts"]["ok"] is True
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _banners(page) == (0, None) and re.findall(r'data-testid="referral-([^"]+)"', page) == [covered, rid]
    _client, other_lid = _sw(app, make_launch, "Practitioner/sw-x")
    assert rid in _client.get(f"/l/{other_lid}/worklist").get_data(as_text=True)


def test_readyz_reports_an_overdue_urgent_referral_by_route_until_it_is_contacted(deployment, make_launch):
    app = deployment
    rid = make_referral(app, make_launch, "bwh", "p-urgent", "Uma Urgent", danger=True)
    assert _ready(app)[1]["status"] == "ready"  # urgent, but not yet late
    _age(app, rid, 30)
    status, body = _ready(app)
    assert status == 200 and body["status"] == "degraded"
    assert body["checks"]["referral_alerts"]["detail"] == {
        "unrouted": 0, "overdue_urgent": 1,
        "routes": [{"ehr": "ehr1", "route_kind": "coverage", "route_team": "passageway-bwh", "unrouted": 0,
                    "overdue_urgent": 1}]}
    client, lid = _sw(app, make_launch, "Practitioner/sw-team")
    assert client.post(f"/l/{lid}/worklist/{rid}/contact",
                       data={"channel": "phone", "outcome": "no_answer"}).status_code == 302
    assert _ready(app)[1]["status"] == "ready"


def test_the_gauge_counts_open_unrouted_and_overdue_per_ehr_and_route_with_config_labels_only(
        deployment, make_launch, tmp_path, monkeypatch):
    app = deployment
    baseline = _gauge(app)
    # Every configured EHR's unrouted queue and every team are reported at 0 before anything happens.
    assert baseline == {(ehr, kind, team, state): 0.0
                        for ehr, kind, team in (("ehr1", "unrouted", "none"), ("ehr1", "coverage", "passageway-bwh"),
                                                ("ehr2", "unrouted", "none"))
                        for state in ("open", "unrouted", "overdue_urgent")}
    urgent = make_referral(app, make_launch, "bwh", "p-urgent", "Uma Urgent", danger=True)
    unrouted = make_referral(app, make_launch, "mgh", "p-unrouted", "Rosa Unrouted")
    other = make_referral(app, make_launch, "mgh", "p-other", "Olga Other", iss=EHR2, danger=True)
    make_referral(app, make_launch, "mgh", "p-nowhere", "Nadia Nowhere", iss=EHR_UNNAMED)
    _age(app, urgent, 30)
    _age(app, other, 30)
    gauge = _gauge(app)
    expected = {
        ("ehr1", "coverage", "passageway-bwh", "open"): 1, ("ehr1", "coverage", "passageway-bwh", "unrouted"): 0,
        ("ehr1", "coverage", "passageway-bwh", "overdue_urgent"): 1,
        ("ehr1", "unrouted", "none", "open"): 1, ("ehr1", "unrouted", "none", "unrouted"): 1,
        ("ehr1", "unrouted", "none", "overdue_urgent"): 0,
        ("ehr2", "unrouted", "none", "open"): 1, ("ehr2", "unrouted", "none", "unrouted"): 1,
        ("ehr2", "unrouted", "none", "overdue_urgent"): 1,
        # An iss the deployment file does not name is never a label value.
        ("other", "unrouted", "none", "open"): 1, ("other", "unrouted", "none", "unrouted"): 1,
        ("other", "unrouted", "none", "overdue_urgent"): 0,
    }
    assert gauge == expected
    # Under gunicorn's multiprocess mode the gauge is read once per scrape from the database, not per worker.
    (tmp_path / "metrics").mkdir()  # its own empty directory, as the deployment gives it (the app's .db is here)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    assert _gauge(app) == expected
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")

    client, lid = _sw(app, make_launch, "Practitioner/sw-team")
    assert client.post(f"/l/{lid}/worklist/{urgent}/contact",
                       data={"channel": "phone", "outcome": "reached"}).status_code == 302
    assert client.post(f"/l/{lid}/worklist/{unrouted}/assign", data={"action": "take"}).status_code == 302
    gauge = _gauge(app)
    assert gauge[("ehr1", "unrouted", "none", "open")] == 1 and gauge[("ehr1", "unrouted", "none", "unrouted")] == 0
    _close(client, lid, unrouted)
    gauge = _gauge(app)
    assert gauge[("ehr1", "unrouted", "none", "open")] == 0
    assert gauge[("ehr1", "coverage", "passageway-bwh", "overdue_urgent")] == 0
    assert gauge[("ehr1", "coverage", "passageway-bwh", "open")] == 1  # contacted, still open
    assert gauge[("ehr1", "unrouted", "none", "unrouted")] == 0  # the series stays, at 0
    assert gauge[("ehr2", "unrouted", "none", "overdue_urgent")] == 1  # the other EHR's is its own


def test_without_an_ehrs_block_the_allow_listed_iss_is_the_ehr_label_and_any_other_iss_reads_other(app, make_launch):
    # The sandbox file names its EHR (and that EHR's teams): without them here.
    replace_settings(app, ehrs={}, routing={}, metrics_token=TOKEN,
                     allowed_iss=[EHR1 + "/"])  # as a file may spell it
    make_referral(app, make_launch, "mgh", "p-unrouted", "Rosa Unrouted")
    make_referral(app, make_launch, "mgh", "p-other", "Olga Other", iss=EHR2)
    gauge = _gauge(app, phi=[p for p in PHI if p != "127.0.0.1"] + [EHR2])
    assert {k: v for k, v in gauge.items() if k[3] == "unrouted" and v} == {
        (EHR1, "unrouted", "none", "unrouted"): 1, ("other", "unrouted", "none", "unrouted"): 1}


def test_the_overdue_banner_shows_to_every_social_worker_and_manager_of_that_ehr_never_another_ehrs_count(
        deployment, make_launch):
    app = deployment
    urgent = make_referral(app, make_launch, "bwh", "p-urgent", "Uma Urgent", danger=True)  # the team's
    late_unrouted = make_referral(app, make_launch, "mgh", "p-unrouted", "Rosa Unrouted", danger=True)
    other = make_referral(app, make_launch, "mgh", "p-other", "Olga Other", iss=EHR2, danger=True)
    for rid in (urgent, late_unrouted, other):
        _age(app, rid, 30)

    # A team member: both of EHR one's in their queue, linked to the filtered view.
    client, lid = _sw(app, make_launch, "Practitioner/sw-team")
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _banners(page) == (1, (2, 2))
    link = re.search(r'<a href="([^"]+)" data-testid="overdue-link">', page).group(1).replace("&amp;", "&")
    assert link == f"/l/{lid}/worklist?urgency=overdue"
    filtered = client.get(link).get_data(as_text=True)
    assert sorted(re.findall(r'data-testid="referral-([^"]+)"', filtered)) == sorted([urgent, late_unrouted])
    # A filter can hide an unrouted referral: its banner then offers the way back (a sort alone hides none).
    assert 'data-testid="unrouted-link"' not in page
    assert 'data-testid="unrouted-link"' not in client.get(f"/l/{lid}/worklist?sort=newest").get_data(as_text=True)
    routine = client.get(f"/l/{lid}/worklist?urgency=routine").get_data(as_text=True)
    assert late_unrouted not in routine
    back = re.search(r'<a href="([^"]+)" data-testid="unrouted-link">', routine).group(1)
    assert back == f"/l/{lid}/worklist" and late_unrouted in client.get(back).get_data(as_text=True)

    # A social worker of the same EHR outside the team: told who holds the one not in their queue.
    client, lid = _sw(app, make_launch, "Practitioner/sw-x")
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _banners(page) == (1, (2, 1))
    elsewhere = re.search(r'data-testid="overdue-elsewhere">([^<]*)<', page).group(1)
    assert "Passageway&#39;s social work team at BWH (1)" in elsewhere

    # A program manager of EHR one (the deployment's role mapping), covering no site: the same banner.
    with_deployment(app, roles={"social_worker": {"codes": [{"system": SNOMED_SW["system"],
                                                             "code": SNOMED_SW["code"]}]},
                                "program_manager": {"codes": [{"system": "urn:local", "code": "PM"}]}})
    client, lid = _sw(app, make_launch, "Practitioner/pm", roles=[role([{"system": "urn:local", "code": "PM"}])])
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _banners(page) == (1, (2, 1)) and "Passageway&#39;s social work team at BWH (1)" in page

    # EHR two's social worker: its own overdue referral only, none of EHR one's counts.
    client, lid = _sw(app, make_launch, "Practitioner/sw-y", iss=EHR2)
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert _banners(page) == (1, (1, 1)) and "Passageway" not in page

    # Once contacted, the banner goes for everyone of EHR one.
    client, lid = _sw(app, make_launch, "Practitioner/sw-team")
    for rid in (urgent, late_unrouted):
        assert client.post(f"/l/{lid}/worklist/{rid}/contact",
                           data={"channel": "phone", "outcome": "no_answer"}).status_code == 302
    assert _banners(client.get(f"/l/{lid}/worklist").get_data(as_text=True)) == (1, None)
    client, lid = _sw(app, make_launch, "Practitioner/sw-y", iss=EHR2)
    assert _banners(client.get(f"/l/{lid}/worklist").get_data(as_text=True)) == (1, (1, 1))


def test_the_alert_rules_in_deploy_md_read_the_gauge_the_app_serves():
    """DEPLOY.md's Prometheus rules are YAML that names this gauge and states the app reports."""
    from pathlib import Path

    import yaml

    from smart_app.worklist.alerts import GAUGE, STATES

    guide = (Path(__file__).resolve().parents[2] / "DEPLOY.md").read_text()
    block = re.search(r"```yaml\n(\s*groups:.*?)```", guide, re.S).group(1)
    rules = [r for g in yaml.safe_load(block)["groups"] for r in g["rules"]]
    by_name = {r["alert"]: r["expr"] for r in rules}
    assert set(by_name) == {"IpvReferralUnrouted", "IpvUrgentReferralOverdue", "IpvReferralCountsMissing"}
    for name in ("IpvReferralUnrouted", "IpvUrgentReferralOverdue"):
        state = re.search(rf'{GAUGE}\{{state="(\w+)"\}}', by_name[name]).group(1)
        assert state in STATES and by_name[name].rstrip().endswith("> 0")
    assert by_name["IpvReferralCountsMissing"] == f"absent({GAUGE})"
