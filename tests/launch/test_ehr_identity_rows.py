"""One EHR on two iss values (its plain iss and a per-launch one matching its pattern) is one EHR everywhere the app
remembers something: the gate's visit memory, the program report's events, the access audit. Rows stored before
the identity was kept (keyed by the raw iss) are still found; another EHR's patient with the same id is not."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from smart_app.ops.audit import query_audit
from smart_app.store.crypto import keyed_hash
from smart_app.store.db import session_scope
from smart_app.store.models import AuditEvent, PatientMark, ReferralRecord, ReferralSite, ReportEvent
from tests.worklist.support import clinician_context, make_referral, with_deployment

pytestmark = pytest.mark.routing

PLAIN = "http://127.0.0.1:9/fhir"                 # the EHR's launch iss
PER_LAUNCH = "http://127.0.0.1:9/l/launch-7/fhir"  # a standalone launcher's iss for one launch
OTHER = "http://127.0.0.1:9/other/fhir"           # another EHR
NEVER = "LA6270-8"  # HITS "Never" (LOINC answer code)


@pytest.fixture
def one_ehr(app):
    with_deployment(app, ehrs={"bwh": {"name": "Brigham EHR", "iss": [PLAIN],
                                       "iss_patterns": ["http://127.0.0.1:9/l/*/fhir"]},
                               "other": {"name": "Another EHR", "iss": [OTHER]}}, routing={})
    return app


def screen(app, make_launch, iss: str, patient: str) -> str:
    """A completed (negative) HITS screen on a launch on ``iss``; returns the launch id."""
    client = app.test_client()
    lid = make_launch(client, context=clinician_context("bwh", patient, "Pat Example"), iss=iss)
    client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
    resp = client.post(f"/l/{lid}/screen", data={"instrument": "hits", "q-hurt": NEVER, "q-insult": NEVER,
                                                 "q-threaten": NEVER, "q-scream": NEVER})
    assert resp.status_code == 302
    assert client.get(f"/l/{lid}/result").status_code == 200  # audited: view_result
    return lid


def earlier_line(app, make_launch, iss: str, patient: str) -> str | None:
    client = app.test_client()
    lid = make_launch(client, context=clinician_context("bwh", patient, "Pat Example", encounter="enc-later"),
                      iss=iss)
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    if 'data-testid="gate-earlier"' not in page:
        return None
    return page.split('data-testid="gate-earlier"')[1].split("</p>")[0]


def test_visit_memory_report_events_and_audit_carry_the_ehr_for_both_of_its_iss_values(one_ehr, make_launch):
    app = one_ehr
    screen(app, make_launch, PLAIN, "p-1")
    # A launch on the per-launch iss finds the screen made on the plain one, and the other way round.
    assert "screened, no referral" in earlier_line(app, make_launch, PER_LAUNCH, "p-1")
    screen(app, make_launch, PER_LAUNCH, "p-2")
    assert "screened, no referral" in earlier_line(app, make_launch, PLAIN, "p-2")
    make_referral(app, make_launch, "bwh", "p-3", "Pat Example", iss=PER_LAUNCH, encounter="enc-p3")
    assert "referral open" in earlier_line(app, make_launch, PLAIN, "p-3")
    # Another EHR's patient with the same id is someone else.
    assert earlier_line(app, make_launch, OTHER, "p-1") is None
    screen(app, make_launch, OTHER, "p-9")
    with app.app_context(), session_scope(app) as db:
        events = db.execute(select(ReportEvent.kind, ReportEvent.ehr)).all()
        audit = db.execute(select(AuditEvent.action, AuditEvent.iss, AuditEvent.ehr)).all()
    assert {ehr for kind, ehr in events if kind != "referral"} == {"bwh", "other"}
    assert [ehr for kind, ehr in events if kind == "referral"] == ["bwh"]
    assert sorted(e for k, e in events if k == "completed") == ["bwh", "bwh", "other"]
    views = [(iss, ehr) for action, iss, ehr in audit if action == "view_result"]
    assert views == [(PLAIN, "bwh"), (PER_LAUNCH, "bwh"), (OTHER, "other")]


def test_rows_from_before_the_identity_are_still_found(one_ehr, make_launch):
    app = one_ehr
    with app.app_context(), session_scope(app) as db:
        # A screen mark keyed by the plain iss, as the app made them before; an audit row without its EHR.
        db.add(PatientMark(patient_key=keyed_hash(f"patient|{PLAIN}|p-old"), encounter_key=None, kind="screen",
                           at=datetime.now(UTC)))
        db.add(AuditEvent(action="view_result", actor="Practitioner/doc", iss=PLAIN, instance="old"))
        db.add(AuditEvent(action="view_result", actor="Practitioner/doc", iss=OTHER, instance="old"))
    assert "screened, no referral" in earlier_line(app, make_launch, PER_LAUNCH, "p-old")
    assert earlier_line(app, make_launch, OTHER, "p-old") is None
    screen(app, make_launch, PER_LAUNCH, "p-new")
    with app.app_context(), session_scope(app) as db:
        found = query_audit(db, ehr="bwh", action="view_result")
        assert [(r["iss"], r["ehr"], r["instance"] == "old") for r in found] == [
            (PLAIN, "bwh", True), (PER_LAUNCH, "bwh", False)]
        assert [r["iss"] for r in query_audit(db, ehr="other", action="view_result")] == [OTHER]


def test_the_queue_and_saved_views_are_the_ehrs_whichever_iss_the_social_worker_launches_on(one_ehr, make_launch):
    from tests.worklist.support import SNOMED_SW, role, worker_context

    app = one_ehr
    rid = make_referral(app, make_launch, "bwh", "p-q", "Pat Queue", iss=PLAIN)
    with app.app_context(), session_scope(app) as db:
        # One made before routing: no ehr, kept by the iss it was made on.
        old = ReferralRecord(iss=PLAIN, profile="sandbox", status="requested", route_kind=None, ehr=None)
        db.add(old)
        db.flush()
        db.add(ReferralSite(referral_id=old.id, key="Location/loc-bwh"))
        old_id = old.id

    def queue(iss):
        client = app.test_client()
        lid = make_launch(client, context=worker_context("Practitioner/sw", "S W", [role(
            [SNOMED_SW], locations=["Location/loc-bwh"])]), iss=iss, kind="standalone")
        page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
        return client, lid, set(re.findall(r'data-testid="referral-([^"]+)"', page)), page

    _client, _lid, on_plain, _page = queue(PLAIN)
    client, lid, on_per_launch, _page = queue(PER_LAUNCH)
    assert on_plain == on_per_launch == {rid, old_id}
    assert queue(OTHER)[2] == set()
    # A view saved on one launch is there on the next, on another iss of the EHR.
    client.post(f"/l/{lid}/worklist/saved", data={"urgency": "urgent"})
    assert 'data-testid="saved-view"' in queue("http://127.0.0.1:9/l/launch-8/fhir")[3]
    assert 'data-testid="saved-view"' not in queue(OTHER)[3]


def test_a_program_manager_reads_their_own_ehrs_report_on_any_of_its_iss_values(one_ehr, make_launch):
    import csv
    import io

    from tests.worklist.support import role, worker_context

    app = one_ehr
    app.config["REPORT_CLOCK"] = lambda: datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # October has closed
    with app.app_context(), session_scope(app) as db:
        db.add_all([ReportEvent(month="2026-10", site="bwh", kind="completed", ehr="bwh") for _ in range(12)]
                   + [ReportEvent(month="2026-10", site="mgh", kind="completed", ehr="other") for _ in range(15)]
                   # Counted before the identity was kept: the deployment's, in every EHR's report as before.
                   + [ReportEvent(month="2026-10", site="faulkner", kind="completed", ehr=None) for _ in range(11)])

    def report(iss):
        client = app.test_client()
        lid = make_launch(client, context=worker_context("Practitioner/pm", "P M", [role(texts=["Program manager"])]),
                          iss=iss, kind="standalone")
        resp = client.get(f"/l/{lid}/report.csv?view=month&period=2026-10")
        assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
        return {r["site"]: r["screens"] for r in csv.DictReader(io.StringIO(resp.get_data(as_text=True)))
                if r["level"] == "site"}

    assert report(PLAIN) == report(PER_LAUNCH) == {"bwh": "12", "faulkner": "11"}
    assert report(OTHER) == {"mgh": "15", "faulkner": "11"}
    cli = app.test_cli_runner()
    whole = cli.invoke(args=["report", "--view", "month", "--period", "2026-10"])
    assert whole.exit_code == 0 and {"bwh", "mgh", "faulkner"} <= {
        r["site"] for r in csv.DictReader(io.StringIO(whole.output))}
    one = cli.invoke(args=["report", "--view", "month", "--period", "2026-10", "--ehr", "other"])
    assert one.exit_code == 0 and "bwh" not in {r["site"] for r in csv.DictReader(io.StringIO(one.output))}
    assert cli.invoke(args=["report", "--period", "2026-10", "--ehr", "nowhere"]).exit_code != 0
