"""Real SMART launches through the sandbox EHR (discovery, authorize, sign-in, token, FHIR reads over HTTP), with
the shipped sandbox deployment's ``ehrs`` and ``roles`` blocks:

- a program manager whom only the deployment's role mapping makes one (a locally coded PractitionerRole) reaches
  the program report; a plain clinician does not;
- a social worker launching standalone against the sandbox's per-launch iss mode (a fresh iss each time) sees the
  same queue as through an EHR launch; an iss outside every pattern is refused, with nothing sent to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest
import requests
from sqlalchemy import select

from config.current import replace_settings, settings_of
from smart_app.store.db import session_scope
from smart_app.store.models import LaunchRecord
from tests.launch.test_launch_sandbox import authorize, configure, ehr_launch_id, launch, launch_id, stored
from tests.worklist.support import make_referral

pytestmark = pytest.mark.routing


def user_of(app, lid: str) -> dict:
    with app.app_context():
        return stored(app, lid).context["user"]


def standalone(client, sandbox, practitioner: str, iss: str | None = None):
    """The app's standalone launch (on ``iss``, else the deployment's), signed in at the sandbox as
    ``practitioner``; returns the app's answer to the callback."""
    resp = client.get("/launch/standalone" + (f"?iss={quote(iss)}" if iss else ""))
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    login = requests.get(resp.headers["Location"], allow_redirects=False, timeout=10)
    assert login.status_code == 200, login.text[:300]
    action = urljoin(login.url, re.search(r'method="post" action="([^"]+)"', login.text).group(1))
    pending = re.search(r'name="pending" value="([^"]+)"', login.text).group(1)
    back = requests.post(action, data={"pending": pending, "practitioner": practitioner, "action": "approve"},
                         allow_redirects=False, timeout=10)
    assert back.status_code in (302, 303), back.text[:300]
    assert urlsplit(back.headers["Location"]).path == "/callback"
    return client.get("/callback?" + urlsplit(back.headers["Location"]).query)


# -- the program report, reached by a mapped program manager ----------------------------------------------------


def test_a_program_manager_by_the_deployments_mapping_reaches_the_report_through_a_real_launch(app, sandbox):
    configure(app, sandbox, "secret-basic")
    client = app.test_client()
    done = standalone(client, sandbox, "prac-kendall")
    lid = launch_id(done)
    user = user_of(app, lid)
    # Nothing in the EHR's codes says program manager: the deployment's mapping (by text) does, once, at callback.
    assert user["roles"] == ["clinician"] and user["app_roles"] == ["program_manager"]
    assert [r["app_roles"] for r in user["practitioner_roles"]] == [["program_manager"]]
    assert urlsplit(done.headers["Location"]).path == f"/l/{lid}/report"
    page = client.get(f"/l/{lid}/report")
    assert page.status_code == 200 and "Program report" in page.get_data(as_text=True)
    assert client.get(f"/l/{lid}/report.csv").status_code == 200
    # The queue reads the same stored roles: a program manager reads it, and may not act.
    queue = client.get(f"/l/{lid}/worklist")
    assert queue.status_code == 200 and "As program manager you can read and export the queue" in \
        queue.get_data(as_text=True)


def test_a_plain_clinician_does_not_reach_the_report(app, client, sandbox):
    configure(app, sandbox)
    resp, _ = launch(client, sandbox, "pat-alice", "enc-alice-bwh", "prac-avery")
    lid = launch_id(resp)
    assert user_of(app, lid)["app_roles"] == []
    assert client.get(f"/l/{lid}/report").status_code == 403
    assert client.get(f"/l/{lid}/report.csv").status_code == 403


def test_without_the_mapping_the_same_user_is_no_program_manager(app, sandbox):
    """The report follows the deployment's mapping, not anything the test or the EHR hands over."""
    configure(app, sandbox, "secret-basic")
    roles = {k: v for k, v in settings_of(app).roles.items() if k != "program_manager"}
    replace_settings(app, roles=roles)
    client = app.test_client()
    lid = launch_id(standalone(client, sandbox, "prac-kendall"))
    assert client.get(f"/l/{lid}/report").status_code == 403


def test_a_program_manager_named_by_fhir_user_in_the_mapping(app, sandbox):
    configure(app, sandbox, "secret-basic")
    roles = {**settings_of(app).roles, "program_manager": {"users": ["Practitioner/prac-avery"]}}
    replace_settings(app, roles=roles)
    client = app.test_client()
    lid = launch_id(standalone(client, sandbox, "prac-avery"))
    assert user_of(app, lid)["app_roles"] == ["program_manager"]
    assert client.get(f"/l/{lid}/report").status_code == 200
    lid = launch_id(standalone(app.test_client(), sandbox, "prac-kendall"))  # its text rule is gone now
    assert user_of(app, lid)["app_roles"] == []


# -- the per-launch iss standalone journey -------------------------------------------------------------------------


@pytest.fixture
def per_launch_iss(sandbox) -> Iterator[None]:
    """The session's sandbox hands each standalone launch an iss of its own for this test."""
    sandbox.app.config["SANDBOX_PER_LAUNCH_ISS"] = True
    try:
        yield
    finally:
        sandbox.app.config["SANDBOX_PER_LAUNCH_ISS"] = False


def fresh_iss(sandbox) -> str:
    """What the sandbox's launcher hands the app for a standalone launch (``POST /ehr/standalone``)."""
    resp = requests.post(sandbox.url + "/ehr/standalone", allow_redirects=False, timeout=10)
    assert resp.status_code == 303
    return parse_qs(urlsplit(resp.headers["Location"]).query)["iss"][0]


def queue(client, lid: str) -> tuple[str, list[str]]:
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    count = re.search(r'data-testid="shown-count"[^>]*>([^<]*)<', page).group(1)
    return count, re.findall(r'data-testid="referral-([^"]+)"', page)


def test_per_launch_iss_standalone_sees_the_same_queue_as_the_ehr_launch(app, make_launch, sandbox, per_launch_iss):
    configure(app, sandbox, "secret-basic")
    mine = {make_referral(app, make_launch, "bwh", f"p-bwh-{i}", "Pat Example", iss=sandbox.iss) for i in range(3)}
    other_ehr = make_referral(app, make_launch, "bwh", "p-elsewhere", "Pat Elsewhere", iss="http://127.0.0.1:9/fhir")
    # Through the EHR: the hospital-wide social worker opens the app from a chart.
    ehr_client = app.test_client()
    query = authorize(ehr_client, f"/launch?iss={quote(sandbox.iss)}&launch="
                      + ehr_launch_id(sandbox, "pat-alice", "enc-alice-bwh", "prac-harper"))
    lid = launch_id(ehr_client.get("/callback?" + query))
    count, listed = queue(ehr_client, lid)
    assert set(listed) == mine and other_ehr not in listed and count == "3 of 3 referrals shown."
    # Standalone, twice: each launch on an iss the sandbox made for it, both the sandbox EHR by its pattern.
    seen = set()
    for _ in range(2):
        iss = fresh_iss(sandbox)
        assert iss != sandbox.iss and iss.startswith(sandbox.url + "/l/") and iss not in seen
        seen.add(iss)
        client = app.test_client()
        done = standalone(client, sandbox, "prac-harper", iss=iss)
        slid = launch_id(done)
        assert urlsplit(done.headers["Location"]).path == f"/l/{slid}/worklist"
        with app.app_context(), session_scope(app) as db:
            assert db.scalar(select(LaunchRecord.iss).where(LaunchRecord.id == slid)) == iss
        assert queue(client, slid) == (count, listed)


@pytest.mark.parametrize("where", ["/x/abc/fhir", "/l/a/b/fhir", "/l/../fhir", "/l/abc/fhir/more"])
def test_an_iss_outside_every_pattern_is_refused_and_nothing_is_sent(app, sandbox, per_launch_iss, where,
                                                                     monkeypatch):
    configure(app, sandbox, "secret-basic")
    from smart_app.launch import views

    def no_call(iss):
        raise AssertionError(f"discovery was asked of {iss}")

    monkeypatch.setattr(views, "_discover", no_call)
    resp = app.test_client().get("/launch/standalone", query_string={"iss": sandbox.url + where})
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert "This EHR is not registered to launch this app" in resp.get_data(as_text=True)


def test_a_pattern_never_opens_another_host(app, sandbox, per_launch_iss):
    configure(app, sandbox, "secret-basic")
    port = urlsplit(sandbox.url).port
    for iss in (f"http://localhost:{port}/l/abc/fhir", f"http://127.0.0.2:{port}/l/abc/fhir",
                f"http://127.0.0.1:{port + 1}/l/abc/fhir", f"https://127.0.0.1:{port}/l/abc/fhir"):
        resp = app.test_client().get("/launch/standalone", query_string={"iss": iss})
        assert resp.status_code == 400 and "not registered" in resp.get_data(as_text=True), iss


# -- the pattern syntax ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["https://*.example.org/fhir", "https://ehr.example.org:*/fhir",
                                     "https://ehr.example.org/l/*/x/*/fhir", "https://ehr.example.org/l/a*/fhir",
                                     "https://ehr.example.org/l/*/fhir?x=1", "ehr.example.org/l/*/fhir",
                                     "https://ehr.example.org/fhir"])
def test_a_malformed_pattern_is_refused_and_stops_a_production_start(pattern):
    from config.checks import check_config
    from config.ehrs import EhrIdentityError, ehrs_of
    from config.settings import load_settings

    dep = load_settings({"CLIENT_ID": "ipv", "CLIENT_AUTH": "none", "PRIVATE_KEY_FILE": None, "ROUTING": {},
                         "ALLOWED_ISS": ["https://e.example/fhir"], "EHRS": {"bwh": {"iss_patterns": [pattern]}}})
    with pytest.raises(EhrIdentityError, match="bwh"):
        ehrs_of(dep)
    problems = check_config(dep.model_copy(update={"ipv_deployment": "prod"}))
    assert any(p.setting == "ehrs" and p.level == "error" for p in problems)


def test_a_pattern_matches_one_plain_segment_on_its_own_origin_only():
    from config.ehrs import parse_pattern

    p = parse_pattern("https://ehr.example.org/l/*/fhir/")
    assert p.origin == "https://ehr.example.org"
    assert p.matches("https://ehr.example.org/l/Ab-9_x.y~z/fhir")
    for iss in ("https://ehr.example.org/l//fhir", "https://ehr.example.org/l/../fhir", "https://ehr.example.org/l/.x/fhir",
                "https://ehr.example.org/l/a%2Fb/fhir", "https://ehr.example.org/l/a/b/fhir",
                "https://ehr.example.org.evil.test/l/a/fhir", "https://ehr.example.org@evil.test/l/a/fhir",
                "http://ehr.example.org/l/a/fhir", "https://ehr.example.org/l/a/fhir/x"):
        assert not p.matches(iss), iss


def test_an_allow_listed_iss_in_no_ehrs_entry_is_named_at_start_up():
    from config.checks import check_config
    from config.settings import load_settings

    dep = load_settings({"CLIENT_ID": "ipv", "CLIENT_AUTH": "none", "PRIVATE_KEY_FILE": None, "ROUTING": {},
                         "ALLOWED_ISS": ["https://ehr.example.org/fhir", "https://forgotten.example.org/fhir"],
                         "EHRS": {"bwh": {"iss": ["https://ehr.example.org/fhir"],
                                          "iss_patterns": ["https://ehr.example.org/l/*/fhir"]}}})
    problems = check_config(dep.model_copy(update={"ipv_deployment": "prod"}))
    named = [p for p in problems if p.setting == "ehrs"]
    assert [(p.level, p.message.split(" ")[0]) for p in named] == [("warning", "https://forgotten.example.org/fhir")]


def test_a_pattern_on_another_host_is_the_only_host_it_adds_to_the_outbound_policy(app):
    from smart_app.launch.ehr import outbound_policy

    replace_settings(app, deployment_name="prod", client_id="ipv", allowed_iss=["https://ehr.example.org/fhir"],
                     outbound_hosts=[], routing={}, ehrs={"bwh": {"iss": ["https://ehr.example.org/fhir"],
                                                                  "iss_patterns": ["https://launcher.example.org/l/*/fhir"]}})
    with app.app_context():
        policy = outbound_policy()
    assert policy.refusal("https://launcher.example.org/l/abc/fhir/.well-known/smart-configuration") is None
    assert policy.refusal("https://ehr.example.org/fhir/metadata") is None
    for url in ("https://evil.example.org/l/abc/fhir/metadata", "https://x.launcher.example.org/l/a/fhir",
                "https://launcher.example.org:8443/l/a/fhir"):
        assert policy.refusal(url) is not None, url


@pytest.mark.parametrize(("block", "named"), [
    ({"ehrs": {"bwh": {"iss_patterns": ["https://*.example.org/fhir"]}}, "routing": {}}, "ehrs.bwh"),
    ({"roles": {"program_manager": {"users": ["prac-kendall"]}}}, "roles.program_manager.users"),
    ({"routing": {"teams": [{"id": "t"}]}}, "routing.teams.0"),
])
def test_a_malformed_ehrs_roles_or_routing_block_stops_the_app_at_start(tmp_path, block, named):
    from smart_app import create_app
    from smart_app.ops.config_check import ConfigError
    from tests.conftest import app_config

    # The block's shape is the settings model's (a ConfigError naming the key); what it means, the app's own check.
    with pytest.raises((ValueError, ConfigError), match=re.escape(named)):
        create_app(app_config(f"sqlite:///{tmp_path / 'a.db'}", **{k.upper(): v for k, v in block.items()}))
