"""The warm hand-off over HTTP: offered at high danger (DA-5 at its cut-off, strangulation alone) or on the clinician's
judgement, never below the cut-off without it; its outcome kept in the launch, carried onto the referral (made after
it, or already made), shown in the social-work queue, counted in the report, and never written in the chart note."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from fhir.builders import reference_code
from smart_app.report import measures as ms
from smart_app.report import periods as pd
from smart_app.report import suppress as sp
from smart_app.report import tables as rpt
from smart_app.report.events import month_of
from smart_app.store.crypto import decrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem, ReferralRecord, ReportEvent
from tests.conftest import app_config
from tests.report.support import recovered
from tests.report.test_report import published, run, truth_of
from tests.screening.helpers import launch_data
from tests.screening.test_flow import Flow, bwh_context, da5
from tests.worklist.support import EHR1, SNOMED_SW, role, worker_context
from tests.writeback.support import consent

pytestmark = pytest.mark.handoff

NY = ZoneInfo("America/New_York")
THANKSGIVING_9PM = datetime(2026, 11, 26, 21, 0, tzinfo=NY)
TUE_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=NY)
FREQUENTLY = "LA6482-9"
HITS_HURT = {"instrument": "hits", "q-hurt": FREQUENTLY, "q-insult": FREQUENTLY, "q-threaten": FREQUENTLY,
             "q-scream": FREQUENTLY}
PAGER = "tel:+16177325520,31808"


@pytest.fixture
def at(app):
    def _set(when: datetime) -> None:
        app.extensions["clock"] = lambda: when

    _set(THANKSGIVING_9PM)
    yield _set
    app.extensions.pop("clock", None)


@pytest.fixture
def visit(client, make_launch, at):
    """visit(*da5_yes) -> the flow at /result after HITS (physical violence) and the DA-5 at BWH, on EHR1."""

    def _run(*yes: str) -> Flow:
        flow = Flow(client, make_launch(client, context=bwh_context(), iss=EHR1))
        flow.gate()
        flow.screen(HITS_HURT)
        flow.danger(da5(*yes))
        return flow

    return _run


def box(page: str) -> str:
    return page.split('data-testid="urgent"', 1)[1].split("</section>", 1)[0]


def handoff_block(page: str) -> str:
    return page.split('data-testid="handoff"', 1)[1].split('data-testid="urgent-security"', 1)[0]


def step(flow: Flow, **form: str):
    return flow.post(f"/l/{flow.lid}/step", form)


def events(app) -> dict[str, int]:
    with app.app_context(), session_scope(app) as db:
        rows = db.execute(select(ReportEvent.kind, func.count()).where(ReportEvent.kind.like("handoff_%"),
                                                                       ReportEvent.site == "bwh",
                                                                       ReportEvent.month == month_of())
                          .group_by(ReportEvent.kind)).all()
    return dict(rows)


def referral_of(app, lid: str) -> ReferralRecord:
    """The launch's referral, its summary decrypted onto ``.summary``."""
    with app.app_context(), session_scope(app) as db:
        record = db.scalar(select(ReferralRecord).where(ReferralRecord.launch_id == lid))
        db.expunge(record)
        record.summary = decrypt_json(record.summary_enc)
        return record


def refer(flow: Flow) -> None:
    """Tick this site's program on the referral page and give consent (phone is safe)."""
    r = flow.post(f"/l/{flow.lid}/referrals", {"action": "save", "selected": "passageway"})
    assert r.status_code == 302
    r = consent(flow.client, flow.lid, channel="phone", resources=["ServiceRequest", "Task"])
    assert r.status_code == 302, r.get_data(as_text=True)[:300]


# ---------------------------------------------------------------------------- when the call is offered


def test_below_the_cut_off_no_call_is_offered_until_the_clinician_judges_it_urgent(app, visit):
    flow = visit("weapon", "jealousy")  # DA-5 2 of 5
    page = flow.result()
    assert 'data-testid="urgent-heading">Danger sign reported<' in page and 'data-offer="no"' in page
    assert 'data-testid="handoff"' not in page
    assert 'data-testid="judge-urgent"' in box(page)  # the clinician's judgement, in the box itself
    assert events(app) == {}
    r = step(flow, action="urgent", back="result")
    assert r.status_code == 302 and r.headers["Location"] == f"/l/{flow.lid}/result#urgent"
    page = flow.result()
    assert 'data-testid="urgent-heading">Urgent: your judgement<' in page and 'data-offer="yes"' in page
    block = handoff_block(page)
    assert "Call the advocate now, with the patient" in block and f'href="{PAGER}"' in block
    assert 'data-testid="judge-urgent"' not in page
    assert events(app) == {"handoff_offered": 1}


@pytest.mark.parametrize(("yes", "heading"), [
    (("escalation", "weapon", "fear-for-life"), "High danger (DA-5 ≥ 3)"),
    (("strangulation",), "High danger (strangulation reported)"),
])
def test_high_danger_offers_the_call_on_the_number_that_answers_now(app, visit, yes, heading):
    flow = visit(*yes)
    page = flow.result()
    assert f'data-testid="urgent-heading">{heading}<' in page and 'data-offer="yes"' in page
    block = handoff_block(page)
    # Thanksgiving night: Passageway's pager, its extension dialled after a pause.
    assert block.startswith(' data-service="passageway"')  # this site's program
    assert f'<a href="{PAGER}" class="number call-button" data-testid="urgent-number">1-617-732-5520 ext. 31808</a>' \
        in block
    assert "closed today (Thanksgiving Day): page the advocate on call" in block
    assert "Would you like to talk with an advocate now?" in block  # said to the patient
    assert re.findall(r'data-testid="outcome-([a-z_]+)"', block) == ["spoke_now", "left_message", "declined",
                                                                     "not_safe"]
    assert 'data-testid="judge-urgent"' not in page
    assert events(app) == {"handoff_offered": 1}
    # The referral page's box offers the same call and returns there.
    referrals = flow.get(f"/l/{flow.lid}/referrals").get_data(as_text=True)
    assert f'href="{PAGER}"' in handoff_block(referrals) and 'name="back" value="referrals"' in referrals


def test_in_hours_the_call_is_the_programs_main_line(visit, at):
    at(TUE_10AM)
    block = handoff_block(visit("escalation", "weapon", "fear-for-life").result())
    assert 'href="tel:+16177328753"' in block and "open now" in block


def test_no_danger_sign_no_box_but_the_clinician_can_still_judge_it_urgent(app, client, make_launch, at):
    flow = Flow(client, make_launch(client, context=bwh_context(), iss=EHR1))
    flow.gate()
    flow.screen({"instrument": "hits", "q-hurt": "LA6270-8", "q-insult": FREQUENTLY, "q-threaten": FREQUENTLY,
                 "q-scream": FREQUENTLY})  # positive, no physical violence: no DA-5
    page = flow.result()
    assert 'data-testid="urgent"' not in page and 'data-testid="judge-urgent"' in page
    assert step(flow, action="outcome", outcome="spoke_now", back="result").status_code == 400  # nothing offered
    assert "handoff" not in launch_data(app, flow.lid)
    step(flow, action="urgent", back="result")
    page = flow.result()
    assert 'data-testid="urgent-heading">Urgent: your judgement<' in page and f'href="{PAGER}"' in page


# ---------------------------------------------------------------------------- the outcome


def test_outcome_is_kept_reaches_the_referral_the_queue_and_the_report_not_the_note(app, visit):
    flow = visit("escalation", "weapon", "fear-for-life")
    assert step(flow, action="outcome", outcome="nonsense", back="result").status_code == 400
    r = step(flow, action="outcome", outcome="spoke_now", back="result")
    assert r.status_code == 302 and r.headers["Location"] == f"/l/{flow.lid}/result#urgent"
    assert "spoke" not in r.headers["Location"]  # nothing about it in a URL
    kept = launch_data(app, flow.lid)["handoff"]
    assert kept["outcome"] == "spoke_now" and kept["program"] == "Passageway at BWH"
    assert kept["number"] == "1-617-732-5520 ext. 31808"
    page = flow.result()
    assert 'data-testid="handoff-outcome" data-outcome="spoke_now">Recorded: Spoke with an advocate now.<' in page
    assert 'data-testid="handoff-form"' not in page  # done: final
    step(flow, action="outcome", outcome="declined", back="result")  # a second press changes nothing
    assert launch_data(app, flow.lid)["handoff"]["outcome"] == "spoke_now"
    assert events(app) == {"handoff_offered": 1, "handoff_completed": 1}

    refer(flow)
    record = referral_of(app, flow.lid)
    assert record.handoff == "spoke_now" and record.urgent
    assert record.summary["handoff"]["outcome"] == "spoke_now"
    assert record.summary["handoff"]["program"] == "Passageway at BWH"
    # Not in anything written to the chart (the note included).
    with app.app_context(), session_scope(app) as db:
        written = [decrypt_json(row.resource_enc) for row in db.scalars(select(OutboxItem)
                                                                        .where(OutboxItem.referral_id == record.id))]
    assert written and "advocate" not in repr(written).lower() and "spoke" not in repr(written).lower()

    # The social worker covering BWH sees it in the queue row and on the referral.
    sw = app.test_client()
    sw_lid = _sw_launch(app, sw)
    queue = sw.get(f"/l/{sw_lid}/worklist").get_data(as_text=True)
    row = queue.split(f'data-testid="referral-{record.id}"', 1)[1].split("</tr>", 1)[0]
    outcome = row.split('data-testid="handoff"', 1)[1].split("</td>", 1)[0]
    assert 'data-outcome="spoke_now" title="Warm hand-off: Spoke with an advocate now"' in outcome
    assert "☎ spoke now" in outcome
    detail = sw.get(f"/l/{sw_lid}/worklist/{record.id}").get_data(as_text=True)
    facts = detail.split('<dd data-testid="handoff" data-outcome="spoke_now">', 1)[1].split("</dd>", 1)[0]
    assert facts.startswith("Spoke with an advocate now · Passageway at BWH (")
    assert '<a href="tel:+16177325520,31808" class="phone">1-617-732-5520 ext. 31808</a>' in facts
    exported = list(csv.DictReader(io.StringIO(sw.get(f"/l/{sw_lid}/worklist/export.csv?status=all")
                                               .get_data(as_text=True))))
    assert [row["reference"] for row in exported if row["warm_handoff"] == "spoke_now"] == [reference_code(record.id)]

    # The program report counts it from the referral once the month has closed: one hand-off offered,
    # one completed at BWH (a count of 1, so the page shows it suppressed).
    with app.app_context(), session_scope(app) as db:
        this_month = pd.month_number(month_of())
        counts = ms.collect(db, ms.DueRule(24, 72), this_month + 1).counts
    assert sum(by.get(this_month, 0) for (site, _t), by in counts[ms.HANDOFF_OFFERED].items() if site == "bwh") == 1
    assert sum(by.get(this_month, 0) for (site, _t), by in counts[ms.HANDOFF_COMPLETED].items() if site == "bwh") == 1


def _sw_launch(app, client) -> str:
    from tests.conftest import launch_for

    ctx = worker_context("Practitioner/sw", "Sam Social", [role([SNOMED_SW], organizations=["Organization/org-bwh"])],
                         "openid fhirUser user/Task.rus user/ServiceRequest.rus")
    return launch_for(app, client, ctx, iss=EHR1, kind="standalone")


def test_an_outcome_after_consent_updates_the_launchs_referral(app, visit):
    flow = visit("strangulation")
    refer(flow)
    record = referral_of(app, flow.lid)
    assert record.handoff == "offered" and record.urgent
    assert record.summary["handoff"]["outcome"] == "offered"
    step(flow, action="outcome", outcome="left_message", back="result")
    record = referral_of(app, flow.lid)
    assert record.handoff == "left_message"
    assert record.summary["handoff"]["outcome"] == "left_message"
    step(flow, action="outcome", outcome="spoke_now", back="referrals")  # the advocate called back in time
    assert referral_of(app, flow.lid).handoff == "spoke_now"
    assert events(app) == {"handoff_offered": 1, "handoff_completed": 1}


def test_the_clinicians_judgement_after_consent_makes_the_referral_urgent(app, visit):
    flow = visit()  # nothing but the screen
    refer(flow)
    record = referral_of(app, flow.lid)
    assert (record.urgent, record.handoff) == (False, None) and record.due_at is not None  # routine's due time
    step(flow, action="urgent", back="result")
    record = referral_of(app, flow.lid)
    assert (record.urgent, record.handoff) == (True, "offered")
    assert record.due_at is None  # the routine due time is dropped: due an urgent time after it was made


def test_a_referral_without_any_offer_records_no_handoff(app, visit):
    flow = visit("weapon")  # a danger sign, below the cut-off, no judgement
    refer(flow)
    record = referral_of(app, flow.lid)
    assert record.handoff is None and record.urgent  # urgent as before: a danger answer
    assert record.summary["handoff"] is None


def test_the_report_counts_offered_and_completed_per_site_with_small_cells_suppressed():
    nov, month = pd.month_number("2026-11"), "month:2026-11"
    counts = {ms.REFERRALS: {("bwh", "t"): {nov: 40}, ("mgh", "t"): {nov: 30}},
              ms.HANDOFF_OFFERED: {("bwh", "t"): {nov: 14}, ("mgh", "t"): {nov: 25}},
              ms.HANDOFF_COMPLETED: {("bwh", "t"): {nov: 9}, ("mgh", "t"): {nov: 13}}}
    grid, result = run({"bwh": ("t",), "mgh": ("t",)}, counts)
    assert dict(rpt.COLUMNS)[ms.HANDOFF_COMPLETED] == "Warm hand-offs completed"
    assert result.shown(ms.HANDOFF_COMPLETED, ("site", "bwh"), month) is None  # 9
    # 9 at BWH is hidden, so MGH's 13 and the 22 of all sites are not both shown (else 22 - 13 = BWH).
    assert None in (result.shown(ms.HANDOFF_COMPLETED, ("site", "mgh"), month),
                    result.shown(ms.HANDOFF_COMPLETED, sp.ALL, month))
    # Nor are BWH's 14 offered shown beside anything giving its 5 offered and not completed.
    assert recovered(published(grid, result), truth_of(grid, counts)) == []


def test_the_step_form_needs_its_csrf_token(tmp_path):
    from smart_app import create_app
    from tests.conftest import launch_for

    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", WTF_CSRF_ENABLED=True))
    try:
        client = app.test_client()
        lid = launch_for(app, client, bwh_context(), data={"screening": {"instrument": "hits", "danger": True}})
        assert client.post(f"/l/{lid}/step", data={"action": "urgent", "back": "result"}).status_code == 400
        assert "handoff" not in launch_data(app, lid)
    finally:
        app.extensions["db_engine"].dispose()
