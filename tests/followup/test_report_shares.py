"""The program report's two new shares, from real journeys: positive self-screens with a response recorded (goal
90%) and check-ins where universal education was offered (goal 95%), per site for a closed month, with the report's
small-cell suppression."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from config.current import replace_settings
from smart_app.report.events import month_of
from tests.followup.support import POSITIVE, tablet_done
from tests.worklist.support import EHR1, clinician_context

pytestmark = [pytest.mark.kiosk, pytest.mark.education, pytest.mark.report]


def _clinician(app, make_launch, n: int, site: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = f"10.0.{n // 250}.{n % 250}"  # one workstation each (per-address limits)
    return client, make_launch(client, context=clinician_context(site, f"p-{site}-{n}", "Rosa Report"), iss=EHR1)


def _journeys(app, make_launch, site: str, *, self_screens: int, responded: int, checkins: int, offered: int):
    for n in range(self_screens):
        client, lid = _clinician(app, make_launch, n, site)
        item = tablet_done(app, client, lid, POSITIVE)
        if n < responded:
            code = "not_safe_now" if n == 0 else "discussed_referred"
            assert client.post(f"/l/{lid}/followup", data={"item": item, "response": code}).status_code == 302
    for n in range(checkins):
        client, lid = _clinician(app, make_launch, 1000 + n, site)
        assert client.get(f"/l/{lid}/").status_code == 200
        if n < offered:
            client.post(f"/l/{lid}/education", data={"back": "start"})


def _report(app, make_launch):
    """The month just closed, as a program manager reads it: the CSV rows by level:site, and the page."""
    replace_settings(app, roles={"program_manager": {"texts": ["program manager"]}})
    app.config["REPORT_CLOCK"] = lambda: datetime.now(UTC) + timedelta(days=32)  # this month has closed
    ctx = clinician_context("bwh", "p-none", "Nobody")
    ctx["user"] = {"reference": "Practitioner/pm", "name": "Pat Manager", "roles": ["program_manager"]}
    client = app.test_client()
    lid = make_launch(client, context=ctx, iss=EHR1)
    month = month_of()
    resp = client.get(f"/l/{lid}/report.csv?view=month&period={month}")
    assert resp.status_code == 200
    rows = {":".join(filter(None, (r["level"], r["site"]))): r
            for r in csv.DictReader(io.StringIO(resp.get_data(as_text=True))) if r["level"] != "team"}
    return rows, client.get(f"/l/{lid}/report?view=month&period={month}").get_data(as_text=True)


def test_the_report_gives_both_shares_per_site_and_says_which_are_below_goal(app, make_launch):
    _journeys(app, make_launch, "bwh", self_screens=12, responded=12, checkins=24, offered=12)
    rows, page = _report(app, make_launch)
    bwh = rows["site:bwh"]
    # "Not safe to discuss now" is a recorded response too: all 12 responded.
    assert (bwh["self_positives"], bwh["self_responded"], bwh["response_share"]) == ("12", "12", "1.000")
    # Every check-in (its gate shown) counted once, whether or not the card was offered.
    assert (bwh["checkins"], bwh["education_offered"], bwh["education_share"]) == ("24", "12", "0.500")
    assert rows["all"]["response_share"] == "1.000"
    assert 'data-testid="report-followup"' in page and 'data-testid="report-education"' in page
    education = page[page.index('data-testid="report-education"'):]
    assert 'data-testid="below-goal"' in education[:education.index("</table>")]
    followup = page[page.index('data-testid="report-followup"'):]
    assert 'data-testid="below-goal"' not in followup[:followup.index("</table>")]
    assert "p-bwh" not in page and "Rosa Report" not in page


def test_small_counts_are_suppressed_and_so_is_their_share(app, make_launch):
    _journeys(app, make_launch, "bwh", self_screens=5, responded=3, checkins=0, offered=0)
    rows, _page = _report(app, make_launch)
    bwh = rows["site:bwh"]
    assert bwh["self_positives"] == "suppressed" and bwh["self_responded"] == "suppressed"
    assert bwh["response_share"] == ""
