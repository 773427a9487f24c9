"""HTTPS is the tested default: the whole clinician journey in Chromium over real TLS, the EHR
(https://localhost:<port>) and the app (https://127.0.0.1:<port>) on two different sites, top level and inside
the EHR's cross-site frame, then the social worker's standalone launch; once with gunicorn serving TLS, once
behind Debian's nginx terminating TLS. The app runs the production configuration (check-config passes).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from playwright.sync_api import expect

from sandbox_ehr.store import get_store
from tests.support import tls
from tests.support.pages import DA5_NO, HITS_POSITIVE, check_answers, pass_gate, refer_to_the_first
from tests.tls.conftest import lid_of

pytestmark = [pytest.mark.browser]


def clinician_journey(target: Any, lid: str, app: tls.AppProcess) -> None:
    try:
        _clinician_journey(target, lid)
    except Exception as exc:
        raise AssertionError(f"journey stopped at {target.url}: {exc}\n{app.log_tail()}") from exc


def _clinician_journey(target: Any, lid: str) -> None:
    """Gate -> HITS -> danger check -> result -> referral -> consent -> note written, by clicks only.
    ``target`` is a Page (top level) or the app's Frame inside the EHR page: every POST is a real form POST
    that Flask-WTF's HTTPS referrer check must accept."""
    pass_gate(target)
    check_answers(target, HITS_POSITIVE)
    target.get_by_test_id("submit").click()
    target.wait_for_url("**/result")  # the danger check is asked at /result
    check_answers(target, DA5_NO)
    with target.expect_navigation():
        target.get_by_test_id("submit").click()
    target.get_by_test_id("summary").wait_for()
    assert target.get_by_test_id("summary").get_attribute("data-interpretation") == "positive"
    target.get_by_test_id("to-referral").click()
    target.wait_for_url(f"**/l/{lid}/referrals")
    target.fill('[data-testid="safe-zip"]', "02150")
    with target.expect_navigation():
        target.click('[data-testid="find"]')
    refer_to_the_first(target, lid)
    target.check('[data-testid="channel-none"]')  # safe contact: asked here, nothing preselected
    # The preview (and the digest the POST carries) follows the answer through a fetch POST (CSRF header).
    expect(target.get_by_test_id("note-preview")).to_contain_text("Do not contact the patient")
    target.get_by_test_id("consent-yes").click()
    target.wait_for_url(f"**/l/{lid}/consent/done")
    # The consent POST returns at once; the outbox worker (its own process) writes, and the page follows
    # the status by itself (a same-origin fetch) until everything is in the chart.
    expect(target.get_by_test_id("all-written")).to_be_visible(timeout=60_000)
    expect(target.get_by_test_id("failed-alert")).to_be_hidden()


def chart_notes(sandbox: tls.TlsSandbox, patient: str) -> list[dict]:
    return get_store(sandbox.app).search("DocumentReference", {"subject": f"Patient/{patient}"})


def social_worker_finds(app: tls.AppProcess, context: Any, name: str) -> None:
    """Standalone launch (no EHR page): the app -> the EHR's sign-in -> back to the app's worklist. Emery's
    PractitionerRole names MGH, whose Chelsea health center referred the patient; she accepts the referral."""
    page = context.new_page()
    page.goto(app.url + "/launch/standalone")
    page.select_option("#practitioner", "prac-emery")
    page.click("#approve-button")
    page.wait_for_url("**/worklist")
    assert page.url.startswith(app.url)
    row = page.locator('[data-testid^="referral-"]').filter(has_text=name).and_(
        page.locator('[data-status="requested"]'))
    assert row.count() == 1
    with page.expect_navigation():
        row.get_by_test_id("open").click()
    with page.expect_navigation():
        page.get_by_test_id("set-accepted").click()
    expect(page.get_by_test_id("facts")).to_have_attribute("data-status", "accepted")


def session_cookies_set(page: Any, app: tls.AppProcess) -> list[str]:
    seen: list[str] = []

    def on_response(response: Any) -> None:
        if response.url.startswith(app.url):
            cookie = response.all_headers().get("set-cookie")
            if cookie and "ipv_session=" in cookie:
                seen.append(cookie)

    page.on("response", on_response)
    return seen


def test_the_tls_deployment_passes_check_config(tls_app, nginx_app, tls_sandbox):
    for app in (tls_app, nginx_app):
        # Its two workers keep rate limits in memory (no Redis in this set-up): the one thing check-config notes.
        assert "0 error(s), 1 warning(s)" in app.check_report, app.check_report
        assert "WARNING: RATELIMIT_STORAGE_URI: memory://" in app.check_report
    # --online fetches the EHR's discovery document over TLS, trusting the test CA like the app does.
    out = subprocess.run([str(tls.BIN / "flask"), "--app", "smart_app", "check-config", "--online"],
                         env=tls_app.env, cwd=tls.ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # ... and would refuse an EHR that is not there.
    deployment = Path(tls_app.env["IPV_DEPLOYMENT"])
    absent = yaml.safe_load(deployment.read_text()) | {"allowed_iss": ["https://localhost:1/fhir"]}
    other = deployment.with_name("hospital-tls-absent-ehr.yaml")
    other.write_text(yaml.safe_dump(absent))
    env = {**tls_app.env, "IPV_DEPLOYMENT": str(other)}
    out = subprocess.run([str(tls.BIN / "flask"), "--app", "smart_app", "check-config", "--online"],
                         env=env, cwd=tls.ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "https://localhost:1/fhir: discovery failed" in out.stdout


def test_clinician_top_level_then_social_worker_over_gunicorn_tls(tls_app, tls_sandbox, tls_context, ehr_launch):
    context = tls_context()
    page = context.new_page()
    cookies = session_cookies_set(page, tls_app)
    exits: list[dict] = []
    page.on("request", lambda r: exits.append(r.all_headers()) if "from=exit" in r.url else None)
    page = ehr_launch(tls_app, page, "pat-joana", "enc-joana-chelsea")
    lid = lid_of(page)
    assert page.url.startswith("https://127.0.0.1:")
    clinician_journey(page, lid, tls_app)
    notes = chart_notes(tls_sandbox, "pat-joana")
    assert notes and {"R", "SDV"} <= {c["code"] for c in notes[-1]["meta"]["security"]}
    assert cookies and all("Secure" in c and "SameSite=None" in c and "Partitioned" in c for c in cookies)

    # Quick exit: the neutral page (another origin) receives no referrer.
    page.keyboard.press("Escape")
    page.wait_for_url("**/ehr?from=exit")
    assert exits and not any(headers.get("referer") for headers in exits)

    social_worker_finds(tls_app, tls_context(), "Joana")


def test_clinician_inside_the_ehr_cross_site_frame_over_gunicorn_tls(tls_app, tls_sandbox, tls_context,
                                                                     ehr_launch):
    page = tls_context().new_page()
    cookies = session_cookies_set(page, tls_app)
    frame = ehr_launch(tls_app, page, "pat-alice", "enc-alice-bwh", iframe=True)
    assert page.url.startswith(tls_sandbox.url) and frame.url.startswith(tls_app.url)  # two sites
    before = len(chart_notes(tls_sandbox, "pat-alice"))
    clinician_journey(frame, lid_of(frame), tls_app)
    assert len(chart_notes(tls_sandbox, "pat-alice")) == before + 1
    # The session cookie set inside the cross-site frame is a partitioned third-party cookie.
    assert cookies and all("Secure" in c and "SameSite=None" in c and "Partitioned" in c for c in cookies)


def test_clinician_in_frame_and_social_worker_behind_nginx(nginx_app, tls_sandbox, tls_context, ehr_launch):
    page = tls_context().new_page()
    frame = ehr_launch(nginx_app, page, "pat-joana", "enc-joana-chelsea", iframe=True)
    assert frame.url.startswith(nginx_app.url)
    clinician_journey(frame, lid_of(frame), nginx_app)
    social_worker_finds(nginx_app, tls_context(), "Joana")


@pytest.mark.parametrize("which", ["tls_app", "nginx_app"])
def test_https_csrf_referrer_check_stays_strict(which, request, tls_ca, tls_context, ehr_launch):
    """The fix keeps Flask-WTF's strict HTTPS check: a POST with this browser's session and token but no
    Referer, or another site's, is refused; the same-origin Referer the browser sends is accepted. Behind
    nginx this also proves ProxyFix: only an app that knows the request came over HTTPS checks the Referer."""
    app = request.getfixturevalue(which)
    context = tls_context()
    page = ehr_launch(app, context.new_page(), "pat-joana", "enc-joana-chelsea")
    lid = lid_of(page)
    assert page.evaluate("document.querySelector('meta[name=referrer]').content") == "same-origin"
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    http = requests.Session()
    http.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would win over verify=
    http.verify = str(tls_ca.ca_file)
    for cookie in context.cookies(app.url):
        http.cookies.set(cookie["name"], cookie["value"])
    url = f"{app.url}/l/{lid}/gate"
    form = {"csrf_token": token, "alone": "yes", "no_family_interpreter": "yes"}
    no_referrer = http.post(url, data=form, allow_redirects=False, timeout=30)
    assert no_referrer.status_code == 400 and "referrer" in no_referrer.text.lower()
    foreign = http.post(url, data=form, headers={"Referer": "https://evil.test/"}, allow_redirects=False, timeout=30)
    assert foreign.status_code == 400
    same = http.post(url, data=form, headers={"Referer": page.url}, allow_redirects=False, timeout=30)
    assert same.status_code in (302, 303) and f"/l/{lid}/screen" in same.headers["Location"]


def test_trusted_hosts_and_headers_over_tls(tls_app, nginx_app, tls_ca):
    for app in (tls_app, nginx_app):
        ok = requests.get(app.url + "/healthz", verify=str(tls_ca.ca_file), timeout=10)
        assert ok.status_code == 200
        assert ok.headers["Referrer-Policy"] == "same-origin"
        # A Host the app does not serve (DNS rebinding, a misrouted proxy) is refused.
        bad = requests.get(app.url + "/healthz", headers={"Host": "evil.test"}, verify=str(tls_ca.ca_file),
                           timeout=10)
        assert bad.status_code == 400
