"""Program report: suppression (primary and complementary), the report against an independent tally of
200 synthetic journeys driven over HTTP, CSV and CLI equal, purge-proof, role-gated."""

from __future__ import annotations

import dataclasses
import random
import re
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from smart_app.report import tables as rpt
from smart_app.report.events import month_of
from smart_app.store.models import OutboxItem, ReferralDims, ReferralEvent, ReferralRecord, ReportEvent
from tests.conftest import default_context, store_launch

pytestmark = pytest.mark.report


# ---------------------------------------------------------------------------- suppression


def shown(report: rpt.Report) -> dict[tuple[str, str, str], int | None]:
    return {(r.site, r.by + ":" + r.value, k): r.shown(k) for r in report.rows() for k, _ in rpt.MEASURES}


def assert_safe(report: rpt.Report) -> None:
    """No shown cell is 1-10, and in no additive group is exactly one cell hidden (it could be recovered)."""
    for row in report.rows():
        for k, _ in rpt.MEASURES:
            v = row.shown(k)
            assert v is None or v == 0 or v >= rpt.THRESHOLD, (row.site, row.value, k, v)
    for members, total, measures in rpt._groups(report):
        for m in measures:
            hidden = [r for r in members + [total] if m in r.hidden]
            assert len(hidden) != 1, (total.site, m, [(r.value, r.counts.get(m)) for r in members + [total]])
            if hidden:  # the hidden cells' sum is not a single shown number minus shown numbers of one cell
                assert len(hidden) >= 2


def test_primary_suppression_hides_1_to_10_and_shows_0_and_11():
    counts = {("bwh", "offered", "hits", "en"): 11, ("bwh", "completed", "hits", "en"): 10,
              ("bwh", "declined", "hits", "en"): 1, ("mgh", "offered", "hits", "en"): 40}
    report = rpt.build(counts, "2026-11")
    bwh = report.sites[0]
    assert bwh.site == "bwh" and bwh.shown("offered") == 11 and bwh.shown("positive") == 0
    assert bwh.shown("completed") is None and bwh.shown("declined") is None
    assert_safe(report)


def test_complementary_suppression_one_small_site_hides_another_so_the_total_cannot_give_it_away():
    counts = {("bwh", "referral", "hits", "en"): 4, ("mgh", "referral", "hits", "en"): 30,
              ("mgh-chelsea", "referral", "hits", "en"): 25}
    report = rpt.build(counts, "2026-11")
    by_site = {r.site: r for r in report.sites}
    assert by_site["bwh"].shown("referral") is None  # primary
    assert by_site["mgh-chelsea"].shown("referral") is None  # complementary: the smallest other cell
    assert by_site["mgh"].shown("referral") == 30 and by_site[rpt.ALL].shown("referral") == 59
    assert_safe(report)


def test_complementary_suppression_within_a_sites_instruments_and_languages():
    # bwh: HITS 25 (en 20, es 5), HARK 15 (en 15): es 5 is primary; its complement in the language group is en.
    counts = {("bwh", "completed", "hits", "en"): 20, ("bwh", "completed", "hits", "es"): 5,
              ("bwh", "completed", "hark", "en"): 15, ("mgh", "completed", "hits", "en"): 50}
    report = rpt.build(counts, "2026-11")
    langs = {r.value: r for r in report.breakdown["bwh"]["language"]}
    insts = {r.value: r for r in report.breakdown["bwh"]["instrument"]}
    assert langs["es"].shown("completed") is None and langs["en"].shown("completed") is None
    assert insts["hits"].shown("completed") == 25 and insts["hark"].shown("completed") == 15
    assert_safe(report)


def test_complementary_suppression_cascades_across_groups():
    # A site total hidden as the complement in the all-sites group must not be recoverable from its own
    # instrument rows, so one of those is hidden too.
    counts = {("a", "offered", "hits", "en"): 3, ("b", "offered", "hits", "en"): 12,
              ("b", "offered", "hark", "en"): 14, ("c", "offered", "hits", "en"): 40}
    report = rpt.build(counts, "2026-11")
    sites = {r.site: r for r in report.sites}
    assert sites["a"].shown("offered") is None and sites["b"].shown("offered") is None
    b_inst = [r.shown("offered") for r in report.breakdown["b"]["instrument"]]
    assert None in b_inst  # hits 12 and hark 14 both shown would give b = 26 and so a = 3
    assert_safe(report)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from([k for k, _ in rpt.MEASURES]),
              st.sampled_from(["hits", "hark", "pvs"]), st.sampled_from(["en", "es"])),
    st.integers(min_value=1, max_value=40), min_size=1, max_size=40))
def test_suppression_is_safe_for_any_counts(counts):
    counts = {k: v for k, v in counts.items() if not (k[1].startswith("card_") and (k[2], k[3]) != ("", ""))}
    counts = counts or {("a", "offered", "hits", "en"): 5}
    assert_safe(rpt.build(counts, "2026-11"))


# ---------------------------------------------------------------------------- 200 journeys over HTTP

SITES = ("bwh", "mgh", "mgh-chelsea")


def context_for(site: str, lang: str, roles: list[str] | None = None) -> dict[str, Any]:
    ctx = default_context()
    ctx["patient"] = dict(ctx["patient"], id="pat-" + secrets.token_hex(6), language=lang, languages=[lang])
    ctx["encounter"] = dict(ctx["encounter"], locations=[{
        "id": f"loc-{site}", "name": site, "identifiers": [{"system": "urn:ipv-sandbox:site", "value": site}]}])
    if roles:
        ctx["user"] = dict(ctx["user"], roles=roles)
    return ctx


def client_with_launch(app, context: dict[str, Any]):
    client = app.test_client()
    # Each journey is another workstation: the per-address rate limit (RATELIMIT_ACTIONS) is per clinician.
    client.environ_base["REMOTE_ADDR"] = "10.{}.{}.{}".format(*secrets.token_bytes(3))
    bid = secrets.token_urlsafe(24)
    lid = store_launch(app, bid=bid, context=context, iss="http://127.0.0.1:9/fhir")
    with client.session_transaction() as sess:
        sess["bid"] = bid
    return client, lid


@pytest.fixture
def report_app(app):
    return app  # consent only queues the chart write (the worker sends it; none runs here)


def journey(app, rng: random.Random, sw, expected: Counter) -> None:
    site, lang, inst = rng.choice(SITES), rng.choice(["en", "es"]), rng.choice(["hits", "hark"])
    client, lid = client_with_launch(app, context_for(site, lang))
    key = lambda kind: (site, kind, inst, lang)  # noqa: E731
    if rng.random() < 0.1:
        assert client.post(f"/l/{lid}/gate", data={"action": "not_now"}).status_code == 302
        return
    assert client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes"}).status_code == 302
    assert client.get(f"/l/{lid}/screen?instrument={inst}").status_code == 200
    assert client.get(f"/l/{lid}/screen?instrument={inst}").status_code == 200  # a reload is not a second offer
    expected[key("offered")] += 1
    outcome = rng.choices(["declined", "negative", "positive", "urgent"], [15, 45, 28, 12])[0]
    items = ("hurt", "insult", "threaten", "scream") if inst == "hits" else ("humiliation", "afraid", "rape", "kick")
    form: dict[str, str] = {"instrument": inst}
    if outcome == "declined":
        form["action"] = "decline"
    else:
        answer = {"hits": ("LA6270-8", "LA6482-9"), "hark": ("LA32-8", "LA33-6")}[inst][outcome != "negative"]
        form.update({f"q-{i}": answer for i in items})
    resp = client.post(f"/l/{lid}/screen", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    if outcome == "declined":
        expected[key("declined")] += 1
        return
    expected[key("completed")] += 1
    if outcome == "negative":
        return
    expected[key("positive")] += 1
    danger = {i: "LA32-8" for i in ("escalation", "weapon", "strangulation", "jealousy", "fear-for-life")}
    if outcome == "urgent":
        danger["weapon"] = "LA33-6"
        expected[key("urgent")] += 1
    assert client.post(f"/l/{lid}/more", data={f"q-{k}": v for k, v in danger.items()}).status_code == 302
    client.post(f"/l/{lid}/more", data={f"q-{k}": v for k, v in danger.items()})  # double submit: counted once
    if rng.random() < 0.3:
        return  # no consent to a referral
    from tests.writeback.support import consent

    assert consent(client, lid, channel="none").status_code == 302
    consent(client, lid, channel="none")  # double submit: one referral
    expected[key("referral")] += 1
    if rng.random() < 0.2:
        return  # not contacted yet
    hours = rng.choice([2, 30, 100])
    with app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        rec = db.scalar(select(ReferralRecord).where(ReferralRecord.launch_id == lid))
        rec.created_at = datetime.now(UTC) - timedelta(hours=hours)
        db.commit()
        rid = rec.id
    sw_client, sw_lid = sw
    # No channel was safe: social work logs the patient reaching out (issue 11 contact log). A shift's worth of
    # contacts in a few seconds would trip the per-address rate limit: each comes from its own address here.
    sw_client.environ_base["REMOTE_ADDR"] = "10.{}.{}.{}".format(*secrets.token_bytes(3))
    assert sw_client.post(f"/l/{sw_lid}/worklist/{rid}/contact",
                          data={"channel": "patient_initiated", "outcome": "patient_reached_out"}).status_code == 302
    if hours <= 24:
        expected[key("contacted_24h")] += 1
    if hours <= 72:
        expected[key("contacted_72h")] += 1


def test_report_equals_an_independent_tally_of_200_journeys_and_survives_the_purge(report_app):
    app = report_app
    rng = random.Random(2026)
    expected: Counter = Counter()
    # The social worker covers the three sites (deployment file coverage, issue 11 scope).
    dep = app.config["DEPLOYMENT"]
    app.config["DEPLOYMENT"] = dataclasses.replace(dep, extra={**dep.extra, "worklist": {"coverage": {"roles": {
        "social_worker": [f"urn:ipv-sandbox:site|{s}" for s in SITES]}}}})
    sw = client_with_launch(app, context_for("bwh", "en", roles=["social_worker"]))
    for _ in range(200):
        journey(app, rng, sw, expected)
    month = month_of()
    with app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        assert rpt.raw_counts(db, month) == dict(expected)
        report = rpt.build(rpt.raw_counts(db, month), month)
    assert_safe(report)
    # Every shown number equals the independent tally; the site rows' totals too.
    for row in report.sites:
        for k in rpt.JOURNEY:
            want = sum(n for (s, kind, _i, _l), n in expected.items()
                       if kind == k and (row.site == rpt.ALL or s == row.site))
            assert row.shown(k) in (None, want)
            assert row.counts.get(k, 0) == want
    assert sum(expected.values()) > 200 and expected[("bwh", "referral", "hits", "en")] >= 1

    pm = client_with_launch(app, context_for("bwh", "en", roles=["program_manager"]))
    page = pm[0].get(f"/l/{pm[1]}/report?month={month}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<svg" in html and "pat-" not in html and "Rosa" not in html
    csv_body = pm[0].get(f"/l/{pm[1]}/report.csv?month={month}").get_data(as_text=True)
    cli = app.test_cli_runner().invoke(args=["report", "--month", month])
    assert cli.exit_code == 0 and cli.output == csv_body
    assert csv_body == rpt.csv_text(report)
    for cell in re.findall(r'<td data-measure="[a-z_0-9]+">(\d+)</td>', html):
        assert int(cell) == 0 or int(cell) >= rpt.THRESHOLD

    # Purging referrals (and launches) leaves past reports unchanged.
    with app.app_context():
        from smart_app.store.db import get_session
        from smart_app.store.models import LaunchRecord

        db = get_session()
        db.execute(delete(OutboxItem))
        db.execute(delete(ReferralEvent))
        db.execute(delete(ReferralDims))
        db.execute(delete(ReferralRecord))
        db.execute(delete(LaunchRecord))
        db.commit()
        assert rpt.raw_counts(db, month) == dict(expected)
    assert app.test_cli_runner().invoke(args=["report", "--month", month]).output == csv_body


def test_event_rows_hold_nothing_about_a_patient(report_app):
    client, lid = client_with_launch(report_app, context_for("mgh", "es"))
    client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes"})
    client.get(f"/l/{lid}/screen?instrument=hits")
    client.post(f"/l/{lid}/screen", data={"instrument": "hits", **{f"q-{i}": "LA6482-9" for i in
                                                                 ("hurt", "insult", "threaten", "scream")}})
    with report_app.app_context():
        from smart_app.store.db import get_session

        rows = get_session().scalars(select(ReportEvent)).all()
    assert {(r.kind, r.site, r.instrument, r.language, r.month) for r in rows} == {
        (k, "mgh", "hits", "es", month_of()) for k in ("offered", "completed", "positive")}
    assert set(ReportEvent.__table__.columns.keys()) == {"id", "month", "site", "kind", "instrument", "language"}


def test_report_is_for_program_managers_only(report_app):
    client, lid = client_with_launch(report_app, context_for("bwh", "en"))  # a clinician
    assert client.get(f"/l/{lid}/report").status_code == 403
    assert client.get(f"/l/{lid}/report.csv").status_code == 403
    pm, pm_lid = client_with_launch(report_app, context_for("bwh", "en", roles=["program_manager"]))
    assert pm.get(f"/l/{pm_lid}/report?month=2026-13").status_code == 400
    assert pm.get(f"/l/{pm_lid}/report?month=2026-11").status_code == 200
    assert report_app.test_cli_runner().invoke(args=["report", "--month", "nov"]).exit_code != 0


def test_a_program_manager_lands_on_the_report(report_app):
    from smart_app.launch.state import Launch
    from smart_app.launch.views import _landing
    from smart_app.store.models import LaunchRecord

    with report_app.test_request_context():
        for roles, patient, intent, want in ((["program_manager"], None, None, "/report"),
                                             (["clinician"], {"id": "p"}, "report", "/report"),
                                             # standalone with a patient: the queue, which offers that
                                             # patient's referrals (a queue role never lands on a screening)
                                             (["program_manager"], {"id": "p"}, None, "/worklist")):
            record = LaunchRecord(id="x", state="s", browser_id="b", iss="i", kind="standalone", status="active")
            launch = Launch(record)
            launch._context = {"user": {"roles": roles}, "patient": patient, "intent": intent}
            assert _landing(launch).endswith(want), (roles, patient, intent)


def test_report_on_postgresql_equals_the_tally(postgres_url):
    from smart_app import create_app
    from tests.conftest import app_config

    app = create_app(app_config(postgres_url))
    try:
        rng, expected = random.Random(7), Counter()
        dep = app.config["DEPLOYMENT"]  # the social worker covers the three sites (issue 11 scope), as above
        app.config["DEPLOYMENT"] = dataclasses.replace(dep, extra={**dep.extra, "worklist": {"coverage": {"roles": {
            "social_worker": [f"urn:ipv-sandbox:site|{s}" for s in SITES]}}}})
        sw = client_with_launch(app, context_for("mgh", "es", roles=["social_worker"]))
        for _ in range(40):
            journey(app, rng, sw, expected)
        with app.app_context():
            from smart_app.store.db import get_session

            assert rpt.raw_counts(get_session(), month_of()) == dict(expected)
    finally:
        app.extensions["db_engine"].dispose()
