"""Real Chromium: the sandbox EHR's simulator calls the app's CDS Hooks patient-view service when a patient
is opened, shows the card, and the card's link launches the app to the private gate; the program report
page passes axe-core and reads without JavaScript."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from config.current import replace_settings, settings_of
from smart_app.report import periods as pd
from smart_app.store.models import CdsCard, ReportEvent
from tests.browser.conftest import LID_IN_PATH, Live
from tests.conftest import default_context, store_launch


@pytest.fixture
def cds_wired(live_sandbox: Live, live_app: Live) -> Iterator[None]:
    """The simulator calls the live app's hooks; the app allow-lists the sandbox as a CDS client."""
    live_sandbox.app.config["CDS_SERVICES_URL"] = live_app.url + "/cds-services"
    before = settings_of(live_app.app).cds
    replace_settings(live_app.app, CDS={"interval_months": 12, "population": "uspstf", "clients": [
        {"iss": live_sandbox.url, "jwks_url": live_sandbox.url + "/cds-client/jwks.json",
         "fhir_servers": [live_sandbox.iss], "site": "bwh"}]})
    yield
    live_sandbox.app.config.pop("CDS_SERVICES_URL", None)
    replace_settings(live_app.app, CDS=before)


def sandbox_patient(live_sandbox: Live, screened_days_ago: int | None = None) -> str:
    store = live_sandbox.app.extensions["sandbox_store"]
    pid = "cdsb-" + uuid.uuid4().hex[:10]
    store.update({"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1991-05-05",
                  "name": [{"given": ["Card"], "family": "Tester" + pid[-4:]}]})
    if screened_days_ago is not None:
        store.create({"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
                      "code": {"coding": [{"system": "http://loinc.org", "code": "95614-4"}]},
                      "effectiveDateTime": (datetime.now(UTC) - timedelta(days=screened_days_ago)).isoformat(),
                      "valueQuantity": {"value": 5}})
    return pid


@pytest.mark.cds
def test_opening_a_patient_shows_the_card_and_its_link_launches_the_app_to_the_gate(
        cds_wired, live_sandbox, live_app, page):
    pid = sandbox_patient(live_sandbox)
    page.goto(f"{live_sandbox.url}/ehr?patient={pid}")
    page.select_option("#practitioner", "prac-avery")
    card = page.locator("#cds-cards .cds-card")
    card.wait_for()
    assert card.locator("h2").inner_text() == "Routine check-in due"
    page.get_by_role("button", name="Open check-in").click()
    page.wait_for_url(lambda url: url.startswith(live_app.url) and bool(LID_IN_PATH.search(url)))
    assert page.locator("[data-testid='gate-alone']").count() == 1  # the private gate, first page of a screen
    assert f"Tester{pid[-4:]}" in page.locator("body").inner_text()  # the right patient
    with live_app.app.app_context():
        from sqlalchemy import select

        from smart_app.store.db import get_session

        outcomes = [c.outcome for c in get_session().scalars(select(CdsCard))]
    assert "accepted" in outcomes


@pytest.mark.cds
def test_patient_screened_last_week_gets_no_card_on_the_simulator(cds_wired, live_sandbox, page):
    pid = sandbox_patient(live_sandbox, screened_days_ago=7)
    page.goto(f"{live_sandbox.url}/ehr?patient={pid}")
    page.wait_for_selector("#cds-cards[data-state='done']", state="attached")
    assert page.locator("#cds-cards .cds-card").count() == 0


# ---------------------------------------------------------------------------- report page


@pytest.fixture
def report_page(browser, live_app: Live) -> Iterator[Any]:
    app = live_app.app
    month = pd.month_key(pd.current_month(datetime.now(UTC)) - 1)  # the last closed month: the report shows it
    with app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        for site, n in (("bwh", 37), ("mgh", 14), ("mgh-chelsea", 4)):
            for i in range(n):
                for kind in ("offered", "completed") + (("positive",) if i % 3 == 0 else ()):
                    db.add(ReportEvent(month=month, site=site, kind=kind, instrument=("hits", "hark")[i % 2],
                                       language=("en", "es")[i % 4 == 0]))
            db.add(ReportEvent(month=month, site=site, kind="card_shown"))
        db.commit()
    contexts = []

    def _open(js: bool = True) -> Any:
        ctx_data = default_context()
        ctx_data["user"] = dict(ctx_data["user"], roles=["program_manager"])
        bid = secrets.token_urlsafe(24)
        lid = store_launch(app, bid=bid, context=ctx_data)
        cookie = app.session_interface.get_signing_serializer(app).dumps({"bid": bid})
        ctx = browser.new_context(java_script_enabled=js)
        contexts.append(ctx)
        ctx.add_cookies([{"name": app.config["SESSION_COOKIE_NAME"], "value": cookie, "url": live_app.url}])
        page = ctx.new_page()
        page.goto(f"{live_app.url}/l/{lid}/report?view=month&period={month}")
        return page

    yield _open
    for ctx in contexts:
        ctx.close()


@pytest.mark.report
def test_report_page_has_no_serious_axe_violations(report_page):
    from axe_playwright_python.sync_playwright import Axe

    page = report_page()
    results = Axe().run(page)
    serious = [f"{v['id']} ({v['impact']}): {v['help']}" for v in results.response["violations"]
               if v.get("impact") in ("serious", "critical")]
    assert serious == []


@pytest.mark.report
def test_report_page_reads_without_javascript(report_page):
    page = report_page(js=False)
    assert page.locator("svg[role='img'] desc").count() == 1
    assert page.locator("svg rect").count() > 5
    bwh = page.locator("[data-testid='report-screening'] tr[data-row='site:bwh'] td[data-measure='screens']")
    assert int(bwh.inner_text()) >= 37
    assert "suppressed" in page.locator("[data-testid='report-screening']").inner_text()  # mgh-chelsea's 4
