"""Full SMART launches against the live sandbox EHR (real HTTP for discovery, authorize, token,
JWKS and FHIR), driven through the app's test client: every client authentication kind,
v1 and v2 scopes, standalone launch, refresh, and the attacks a real EHR can take part in.
"""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import jwt
import pytest
import requests
from sqlalchemy import select

from config.current import replace_settings, settings_of
from config.deployment import DEPLOYMENTS_DIR
from fhir.smart.discovery import _from_capability_statement, fetch_configuration
from sandbox_ehr.demo import on_sandbox
from smart_app.store.models import LaunchRecord

KEYS = Path(DEPLOYMENTS_DIR).parents[1] / "sandbox_ehr" / "keys"
V2 = ("launch openid fhirUser patient/Patient.rs patient/Encounter.rs patient/Location.rs patient/Organization.rs "
      "user/Practitioner.rs user/PractitionerRole.rs")
V1 = ("launch openid fhirUser patient/Patient.read patient/Encounter.read patient/Location.read "
      "patient/Organization.read user/Practitioner.read user/PractitionerRole.read")
CLIENTS = {
    "public": dict(client_id="ipv-screen-public", client_auth="none"),
    "secret-basic": dict(client_id="ipv-screen-secret", client_auth="client_secret_basic",
                         client_secret="sandbox-secret-not-for-production"),
    "secret-post": dict(client_id="ipv-screen-secret", client_auth="client_secret_post",
                        client_secret="sandbox-secret-not-for-production"),
    "jwt-rs384": dict(client_id="ipv-screen-jwt", client_auth="private_key_jwt",
                      private_key_file=str(KEYS / "rs384-private.pem"), signing_alg="RS384", key_id="sandbox-rs384"),
    "jwt-es384": dict(client_id="ipv-screen-jwt", client_auth="private_key_jwt",
                      private_key_file=str(KEYS / "es384-private.pem"), signing_alg="ES384", key_id="sandbox-es384"),
}


def configure(app, sandbox, kind: str = "public", scopes: str = V2, **more) -> None:
    """The app registered with the live sandbox: its iss allow-listed, the deployment's ``ehrs`` entry (the plain
    iss and the per-launch iss pattern) on the sandbox's port."""
    replace_settings(app, **on_sandbox(settings_of(app), sandbox.url), scopes_ehr=scopes,
        **{"client_secret": None, "private_key_file": None, **CLIENTS[kind]}, **more)


def ehr_launch_id(sandbox, patient: str, encounter: str | None = None, practitioner: str = "prac-avery",
                  banner: bool = True) -> str:
    """Ask the sandbox's EHR simulator for a launch, as a clinician pressing "Launch app"."""
    form = {"practitioner": practitioner, "patient": patient, "encounter": encounter or ""}
    if banner:
        form["need_patient_banner"] = "1"
    resp = requests.post(sandbox.url + "/ehr/launch", data=form, allow_redirects=False, timeout=10)
    assert resp.status_code == 303, resp.text
    return parse_qs(urlsplit(resp.headers["Location"]).query)["launch"][0]


def authorize(client, url: str) -> str:
    """The app's /launch answer -> the sandbox's authorize -> the callback query string."""
    resp = client.get(url)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    at_ehr = requests.get(resp.headers["Location"], allow_redirects=False, timeout=10)
    assert at_ehr.status_code == 302, at_ehr.text
    back = urlsplit(at_ehr.headers["Location"])
    assert back.path == "/callback"
    return back.query


def launch(client, sandbox, patient: str, encounter: str | None = None, practitioner: str = "prac-avery",
           banner: bool = True):
    lid = ehr_launch_id(sandbox, patient, encounter, practitioner, banner)
    query = authorize(client, f"/launch?iss={quote(sandbox.iss)}&launch={lid}")
    return client.get("/callback?" + query), query


def launch_id(resp) -> str:
    match = re.search(r"/l/([^/]+)/", resp.headers.get("Location", ""))
    assert match, (resp.status_code, resp.get_data(as_text=True)[:500])
    return match.group(1)


def stored(app, lid: str):
    with app.app_context():
        from smart_app.launch.state import Launch
        from smart_app.store.db import get_session

        return Launch(get_session().get(LaunchRecord, lid))


@pytest.mark.parametrize("kind", list(CLIENTS))
@pytest.mark.parametrize("scopes", [V2, V1], ids=["v2", "v1"])
def test_full_launch_for_each_client_kind_and_scope_syntax(app, client, sandbox, kind, scopes):
    configure(app, sandbox, kind, scopes)
    resp, _ = launch(client, sandbox, "pat-joana", "enc-joana-chelsea", "prac-blair")
    lid = launch_id(resp)
    with app.app_context():
        rec = stored(app, lid)
        ctx, tokens = rec.context, rec.tokens
        assert rec.record.status == "active"
    assert ctx["patient"]["id"] == "pat-joana" and ctx["patient"]["name"] == "Joana Exemplo"
    assert ctx["patient"]["language"] == "pt" and ctx["patient"]["languages"] == ["pt", "en"]
    assert ctx["encounter"]["id"] == "enc-joana-chelsea"
    loc = ctx["encounter"]["locations"][0]
    assert loc["id"] == "loc-mgh-chelsea" and {"system": "urn:ipv-sandbox:site", "value": "mgh-chelsea"} in \
        loc["identifiers"]
    assert ctx["encounter"]["service_provider"]["id"].startswith("org-")
    assert ctx["user"]["reference"] == "Practitioner/prac-blair" and "Blair" in ctx["user"]["name"]
    assert ctx["user"]["roles"] == ["clinician"]
    assert ctx["need_patient_banner"] is True and ctx["smart_style_url"].endswith("/auth/smart-style.json")
    assert ctx["fhir_context"] == [{"reference": "Encounter/enc-joana-chelsea"}]
    granted = tokens["scope"].split()
    assert ("patient/Patient.read" in granted) == (scopes == V1)
    assert ("patient/Patient.rs" in granted) == (scopes == V2)
    page = client.get(resp.headers["Location"], follow_redirects=True).get_data(as_text=True)
    assert "Joana Exemplo" in page
    # smart_style_url honoured: the EHR's style, sanitized, linked from every page of this launch.
    assert ctx["smart_style"]["color_background"] == "#f6f7f9"
    assert f'href="/l/{lid}/smart-style.css"' in page
    css = client.get(f"/l/{lid}/smart-style.css")
    assert css.mimetype == "text/css" and "--smart-color-background: #f6f7f9;" in css.get_data(as_text=True)
    # Fixed for the launch: the browser keeps it (privately) instead of asking again with every page.
    assert css.headers["Cache-Control"].startswith("private, max-age=")


def test_social_worker_role_and_no_banner(app, client, sandbox):
    configure(app, sandbox)
    resp, _ = launch(client, sandbox, "pat-grace", "enc-grace-mgh", "prac-emery", banner=False)
    lid = launch_id(resp)
    with app.app_context():
        ctx = stored(app, lid).context
    assert ctx["user"]["roles"] == ["social_worker"] and ctx["need_patient_banner"] is False
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    assert 'data-testid="patient-name"' not in page  # the EHR shows its own banner


def test_launch_without_encounter(app, client, sandbox):
    configure(app, sandbox)
    resp, _ = launch(client, sandbox, "pat-kim")
    with app.app_context():
        ctx = stored(app, launch_id(resp)).context
    assert ctx["patient"]["name"] == "Kim Noencounter" and ctx["encounter"] is None


def test_standalone_launch_for_a_social_worker(app, client, sandbox):
    configure(app, sandbox, "secret-basic")
    resp = client.get("/launch/standalone")  # the deployment's default iss
    assert resp.status_code == 302
    auth = urlsplit(resp.headers["Location"])
    q = parse_qs(auth.query)
    assert "launch" not in q and q["aud"] == [sandbox.iss]
    login = requests.get(resp.headers["Location"], allow_redirects=False, timeout=10)
    pending = re.search(r'name="pending" value="([^"]+)"', login.text).group(1)
    back = requests.post(sandbox.url + "/auth/login", data={"pending": pending, "practitioner": "prac-devon",
                                                            "action": "approve"}, allow_redirects=False, timeout=10)
    done = client.get("/callback?" + urlsplit(back.headers["Location"]).query)
    assert done.status_code == 302
    lid = launch_id(done)
    with app.app_context():
        rec = stored(app, lid)
        assert rec.kind == "standalone" and rec.context["patient"] is None
        assert rec.context["user"]["roles"] == ["social_worker"]
    target = "worklist.index" if "worklist" in app.blueprints else "launch.ready"
    with app.test_request_context():
        from flask import url_for

        assert done.headers["Location"] == url_for(target, lid=lid)
    # ?iss= works too when it is on the allow-list.
    assert client.get(f"/launch/standalone?iss={quote(sandbox.iss)}").status_code == 302


def test_refresh_of_an_expired_access_token(app, client, sandbox):
    configure(app, sandbox, "jwt-es384", V2 + " online_access")
    resp, _ = launch(client, sandbox, "pat-alice", "enc-alice-bwh")
    lid = launch_id(resp)
    with app.test_request_context():
        from smart_app.launch.ehr import fhir_client_for
        from smart_app.launch.state import Launch
        from smart_app.store.db import get_session

        record = get_session().get(LaunchRecord, lid)
        launch_ = Launch(record)
        old = launch_.tokens
        assert old.get("refresh_token")
        launch_.set_tokens({**old, "expires_at": 0})  # expired
        launch_.save()
        fhir = fhir_client_for(launch_)
        assert fhir.read("Patient", "pat-alice")["id"] == "pat-alice"
        new = Launch(get_session().get(LaunchRecord, lid)).tokens
    assert new["access_token"] != old["access_token"] and new["expires_at"] > old["expires_at"] - 10
    assert new["refresh_token"] != old["refresh_token"]  # rotated, and the new one kept
    assert new["patient"] == "pat-alice"


def test_two_patients_in_one_browser_never_mix(app, client, sandbox):
    configure(app, sandbox)
    lid_a = launch_id(launch(client, sandbox, "pat-alice", "enc-alice-bwh")[0])
    lid_b = launch_id(launch(client, sandbox, "pat-grace", "enc-grace-mgh")[0])
    page_a = client.get(f"/l/{lid_a}/").get_data(as_text=True)
    page_b = client.get(f"/l/{lid_b}/").get_data(as_text=True)
    assert "Alice Sample" in page_a and "Grace" not in page_a
    assert "Grace Synthetic" in page_b and "Alice" not in page_b
    stranger = app.test_client()
    for lid in (lid_a, lid_b):
        resp = stranger.get(f"/l/{lid}/")
        assert resp.status_code == 404 and "Alice" not in resp.get_data(as_text=True)


def test_replayed_code_never_reaches_the_ehr_twice(app, client, sandbox):
    configure(app, sandbox)
    resp, query = launch(client, sandbox, "pat-dana", "enc-dana-faulkner")
    assert resp.status_code == 302
    code = parse_qs(query)["code"][0]
    again = client.get("/callback?" + query)
    assert again.status_code == 400
    # A fresh launch in the same browser presenting the old code.
    fresh = authorize(client, f"/launch?iss={quote(sandbox.iss)}&launch={ehr_launch_id(sandbox, 'pat-dana')}")
    state = parse_qs(fresh)["state"][0]
    replay = client.get(f"/callback?code={quote(code)}&state={quote(state)}")
    assert replay.status_code == 400 and "already used" in replay.get_data(as_text=True)


def test_wrong_state_with_a_real_code(app, client, sandbox):
    configure(app, sandbox)
    lid = ehr_launch_id(sandbox, "pat-ellen")
    query = authorize(client, f"/launch?iss={quote(sandbox.iss)}&launch={lid}")
    code = parse_qs(query)["code"][0]
    for bad in ("", "state=" + "A" * 43):
        resp = client.get(f"/callback?code={quote(code)}&{bad}")
        assert resp.status_code == 400 and "Traceback" not in resp.get_data(as_text=True)
    # Another browser with the right state is refused too; the code was never spent.
    assert app.test_client().get("/callback?" + query).status_code == 400
    assert client.get("/callback?" + query).status_code == 302


def test_ehr_error_is_shown_plainly(app, client, sandbox):
    configure(app, sandbox, scopes="openid fhirUser patient/Patient.rs")  # no "launch": the sandbox refuses
    lid = ehr_launch_id(sandbox, "pat-ellen")
    query = authorize(client, f"/launch?iss={quote(sandbox.iss)}&launch={lid}")
    assert "error=" in query
    resp = client.get("/callback?" + query)
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "invalid_scope" in text and "launch scope" in text


def test_unknown_launch_parameter_is_refused_by_the_ehr(app, client, sandbox):
    configure(app, sandbox)
    query = authorize(client, f"/launch?iss={quote(sandbox.iss)}&launch=not-a-launch")
    resp = client.get("/callback?" + query)
    assert resp.status_code == 400 and "launch is unknown" in resp.get_data(as_text=True)


def test_iss_not_on_allow_list(app, client, sandbox):
    configure(app, sandbox)
    replace_settings(app, ALLOWED_ISS=["https://other-ehr.example/fhir"])
    resp = client.get(f"/launch?iss={quote(sandbox.iss)}&launch=x")
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert "not registered" in resp.get_data(as_text=True)


def test_discovery_fallback_reads_the_sandbox_capability_statement(sandbox):
    well_known = fetch_configuration(sandbox.iss)
    cap = requests.get(sandbox.iss + "/metadata", headers={"Accept": "application/fhir+json"}, timeout=10).json()
    fallback = _from_capability_statement(sandbox.iss, cap)
    assert well_known.source == "well-known" and fallback.source == "capability-statement"
    assert (fallback.authorization_endpoint, fallback.token_endpoint) == \
        (well_known.authorization_endpoint, well_known.token_endpoint)


def test_jwks_publishes_our_public_key(app, client, sandbox):
    configure(app, sandbox, "jwt-es384")
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    assert [(k["kid"], k["alg"], k["kty"]) for k in keys] == [("sandbox-es384", "ES384", "EC")]
    assert all("d" not in k for k in keys)  # never the private part


def test_refused_refresh_is_a_clear_401_not_a_crash(app, client, sandbox):
    configure(app, sandbox, "public", V2 + " online_access")
    lid = launch_id(launch(client, sandbox, "pat-alice", "enc-alice-bwh")[0])
    with app.test_request_context():
        from smart_app.launch.ehr import fhir_client_for
        from smart_app.launch.state import Launch
        from smart_app.ops.errors import LaunchError
        from smart_app.store.db import get_session

        launch_ = Launch(get_session().get(LaunchRecord, lid))
        launch_.set_tokens({**launch_.tokens, "expires_at": 0, "refresh_token": "revoked-or-forged"})
        launch_.save()
        with pytest.raises(LaunchError) as caught:
            fhir_client_for(launch_)
    assert caught.value.status == 401 and "Launch the app again" in caught.value.message


@pytest.mark.postgres
def test_full_launch_and_replay_on_postgresql(postgres_url, sandbox):
    from smart_app import create_app
    from tests.conftest import app_config

    app = create_app(app_config(postgres_url))
    try:
        client = app.test_client()
        configure(app, sandbox, "jwt-rs384")
        resp, query = launch(client, sandbox, "pat-marisol", "enc-marisol-revere")
        lid = launch_id(resp)
        assert "Marisol Ficticia" in client.get(f"/l/{lid}/").get_data(as_text=True)
        assert client.get("/callback?" + query).status_code == 400
        assert app.test_client().get(f"/l/{lid}/").status_code == 404
    finally:
        app.extensions["db_engine"].dispose()


def _race_one_callback(app, sandbox, monkeypatch) -> None:
    """The same callback twice at once (a double-submitted redirect): both pass the state check together;
    the code and the client assertion's jti are committed in one transaction before the exchange, so
    exactly one goes on to the EHR, and only the jti it sent is recorded."""
    import smart_app.launch.views as launch_bp
    from smart_app.store.db import get_session
    from smart_app.store.models import UsedJti

    configure(app, sandbox, "jwt-rs384")
    client = app.test_client()
    query = authorize(client, f"/launch?iss={quote(sandbox.iss)}&launch={ehr_launch_id(sandbox, 'pat-dana')}")
    name = app.config["SESSION_COOKIE_NAME"]
    cookie = client.get_cookie(name).value
    barrier = threading.Barrier(2, timeout=5)
    real_discover, real_sandbox = launch_bp._discover, sandbox.app.wsgi_app
    sent: list[str] = []  # client assertions the EHR's token endpoint received

    def discover(iss: str):
        try:
            barrier.wait()  # both requests have loaded the pending launch and staged the code
        except threading.BrokenBarrierError:
            pass  # the other request was stopped before this point (an order that records the code sooner)
        return real_discover(iss)

    def token_endpoint_log(environ, start_response):
        if environ.get("PATH_INFO") == "/auth/token":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            sent.extend(parse_qs(body.decode()).get("client_assertion", []))
        return real_sandbox(environ, start_response)

    monkeypatch.setattr(launch_bp, "_discover", discover)
    monkeypatch.setattr(sandbox.app, "wsgi_app", token_endpoint_log)
    answers = []

    def run() -> None:
        browser = app.test_client()
        browser.set_cookie(name, cookie)
        answers.append(browser.get("/callback?" + query))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(a.status_code for a in answers) == [302, 400]
    assert "already used" in next(a for a in answers if a.status_code == 400).get_data(as_text=True)
    assert len(sent) == 1
    with app.app_context():
        recorded = list(get_session().scalars(select(UsedJti.jti)))
    assert recorded == [jwt.decode(sent[0], options={"verify_signature": False})["jti"]]


def test_racing_callbacks_exchange_the_code_once(app, sandbox, monkeypatch):
    _race_one_callback(app, sandbox, monkeypatch)


@pytest.mark.postgres
def test_racing_callbacks_exchange_the_code_once_on_postgresql(postgres_url, sandbox, monkeypatch):
    from smart_app import create_app
    from tests.conftest import app_config

    app = create_app(app_config(postgres_url))
    try:
        _race_one_callback(app, sandbox, monkeypatch)
    finally:
        app.extensions["db_engine"].dispose()


def test_launches_share_one_connection_to_an_ehr_that_keeps_it_open(app, tmp_path):
    """Every call the app makes to the EHR (discovery, JWKS, token, the context read) goes through one
    per-process connection pool behind the outbound policy: against an EHR server that keeps connections
    open, two launches' calls arrive over a single TCP connection (werkzeug's server, used elsewhere, closes
    each connection after one answer)."""
    from tests.support.keepalive import sandbox_kept_alive

    with sandbox_kept_alive(tmp_path) as (sandbox, server):
        configure(app, sandbox, "jwt-rs384")
        client = app.test_client()
        for patient, encounter in (("pat-alice", "enc-alice-bwh"), ("pat-carmen", "enc-carmen-sjphc")):
            assert launch_id(launch(client, sandbox, patient, encounter)[0])
    browser = {"/ehr/launch", "/auth/authorize"}  # the test's own EHR simulator and browser, not the app
    app_calls = [(peer, path) for peer, _method, path in server.requests_seen if path not in browser]
    paths = [path for _peer, path in app_calls]
    assert paths.count("/auth/token") == 2 and paths.count("/fhir") + paths.count("/fhir/") == 2, paths
    assert len({peer for peer, _path in app_calls}) == 1, app_calls
