"""Fault settings that act on any endpoint: trickled answers, redirect loops, hostile JSON; and single-use
refresh tokens, counted at /__faults."""

from __future__ import annotations

import json
import time

import pytest
import requests

from sandbox_ehr import authstore
from sandbox_ehr.app import create_sandbox_app
from sandbox_ehr.harness.live import LiveServer
from tests.sandbox.test_auth_server import EHR_SCOPE, client_auth, exchange, get_code


def _faults(client, **settings):
    r = client.post("/__faults", json=settings)
    assert r.status_code == 200, r.json
    return r.json


def max_depth(text: str) -> int:
    """How deeply the JSON in ``text`` nests, counted without recursion (json.loads would need it)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


@pytest.fixture
def live(tmp_path):
    app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / "s.db")})
    server = LiveServer(app).start()
    app.config["SANDBOX_BASE_URL"] = server.url
    with app.app_context():
        token = authstore.issue_access_token("t", "user/*.rs")
    yield server.url, {"Authorization": f"Bearer {token}"}
    server.stop()
    app.extensions["sandbox_store"].close()


# --- trickle -----------------------------------------------------------------------------------------------

TRICKLED_CALLS = {
    "discovery": ("GET", "/fhir/.well-known/smart-configuration", None),
    "token": ("POST", "/auth/token", {"grant_type": "authorization_code", "client_id": "ipv-screen-public",
                                      "code": "unknown"}),
    "fhir_read": ("GET", "/fhir/Patient/pat-alice", None),
}


@pytest.mark.parametrize("where", sorted(TRICKLED_CALLS))
def test_trickle_holds_a_client_that_has_only_a_per_read_timeout(live, where):
    url, auth = live
    requests.post(url + "/__faults", json={"trickle": [where], "trickle_bytes_per_second": 1}, timeout=5)
    method, path, form = TRICKLED_CALLS[where]
    started = time.monotonic()
    # Every read gets a byte within its 5-s timeout, so only a deadline on the whole call stops the wait.
    answer = requests.request(method, url + path, data=form, headers=auth, stream=True, timeout=(5, 5))
    received = b""
    while time.monotonic() - started < 3:
        received += answer.raw.read(1)
    answer.close()
    assert int(answer.headers["Content-Length"]) > 50
    assert 1 <= len(received) < 10  # a few bytes in three seconds: the rest would take minutes
    assert requests.get(url + "/__faults", timeout=5).json()["injected"]["trickled"] == 1


def test_trickle_sends_the_same_answer_slowly_and_only_where_asked(fhir, auth):
    plain = fhir.get("/fhir/.well-known/smart-configuration")
    _faults(fhir, trickle=["discovery"], trickle_bytes_per_second=100_000)
    slow = fhir.get("/fhir/.well-known/smart-configuration")
    assert slow.get_data() == plain.get_data()
    assert slow.headers["Content-Length"] == str(len(plain.get_data()))
    assert fhir.get("/fhir/metadata").status_code == 200  # metadata is discovery too
    fhir.get("/fhir/Patient/pat-alice", headers=auth)  # not named: answered at once
    assert fhir.get("/__faults").json["injected"]["trickled"] == 2


# --- redirect loop -----------------------------------------------------------------------------------------

def test_redirect_loop_points_each_answer_at_itself(fhir, auth):
    _faults(fhir, redirect_loop=["discovery", "token", "fhir_read"])
    r = fhir.get("/fhir/.well-known/smart-configuration?x=1")
    assert r.status_code == 302 and r.headers["Location"] == "http://localhost/fhir/.well-known/smart-configuration?x=1"
    r = fhir.post("/auth/token", data={"grant_type": "refresh_token"})
    assert r.status_code == 307 and r.headers["Location"] == "http://localhost/auth/token"
    r = fhir.get("/fhir/Patient/pat-alice", headers=auth)
    assert r.status_code == 302 and r.headers["Location"] == "http://localhost/fhir/Patient/pat-alice"
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
           "subject": {"reference": "Patient/pat-alice"}}
    assert fhir.post("/fhir/Observation", json=obs, headers=auth).status_code == 201  # writes not named
    assert fhir.get("/__faults").json["injected"]["redirects"] == 3


def test_a_client_following_the_loop_gives_up(live):
    url, auth = live
    requests.post(url + "/__faults", json={"redirect_loop": ["discovery", "token"]}, timeout=5)
    with pytest.raises(requests.TooManyRedirects):
        requests.get(url + "/fhir/.well-known/smart-configuration", timeout=5)
    with pytest.raises(requests.TooManyRedirects):
        requests.post(url + "/auth/token", data={"grant_type": "refresh_token"}, timeout=5)


# --- hostile answers ---------------------------------------------------------------------------------------

def test_wrong_types_in_reads_searches_and_batches(fhir, auth):
    _faults(fhir, hostile="wrong_types")
    patient = fhir.get("/fhir/Patient/pat-alice", headers=auth).json
    assert patient["name"] == 12345 and patient["id"] == "pat-alice"
    assert fhir.get("/fhir/Encounter/enc-alice-bwh", headers=auth).json["location"] == "str"
    found = fhir.get("/fhir/Encounter?patient=pat-alice", headers=auth).json
    assert [e["resource"]["location"] for e in found["entry"] if e["search"]["mode"] == "match"] == ["str"]
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": "Patient/pat-alice"}},
                       {"request": {"method": "GET", "url": "Location/loc-bwh"}}]}
    answer = fhir.post("/fhir/", json=batch, headers=auth).json
    assert answer["entry"][0]["resource"]["name"] == 12345
    assert answer["entry"][1]["resource"]["identifier"] == "urn:ipv-sandbox:site|bwh"
    assert fhir.get("/fhir/Questionnaire", headers=auth).json["resourceType"] == "Bundle"
    # The store is untouched: with the fault off, the same read is sound again.
    fhir.delete("/__faults")
    assert fhir.get("/fhir/Patient/pat-alice", headers=auth).json["name"][0]["text"] == "Alice Sample"


def test_wrong_types_of_ones_own_choosing_and_on_the_token_endpoint(fhir, sandbox_app):
    _faults(fhir, hostile="wrong_types", hostile_on=["fhir_read", "token"],
            hostile_fields={"Encounter": {"location": [{"location": {"reference": 5}}]},
                            "token": {"patient": ["pat-alice"]}})
    code, verifier, _ = get_code(fhir, sandbox_app)
    tokens = exchange(fhir, code, verifier).json
    assert tokens["patient"] == ["pat-alice"] and isinstance(tokens["access_token"], str)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert fhir.get("/fhir/Encounter/enc-alice-bwh", headers=bearer).json["location"] == \
        [{"location": {"reference": 5}}]
    assert fhir.get("/fhir/Patient/pat-alice", headers=bearer).json["name"][0]["text"] == "Alice Sample"


def test_deep_extension_nests_three_thousand_levels(fhir, auth):
    _faults(fhir, hostile="deep_extension")
    text = fhir.get("/fhir/Patient/pat-alice", headers=auth).get_data(as_text=True)
    assert max_depth(text) >= 2 * 3000  # each level is an object in an array
    assert text.startswith('{"resourceType": "Patient", "id": "pat-alice"')
    with pytest.raises(RecursionError):
        json.loads(text)
    found = fhir.get("/fhir/Location?partof=Location/loc-bwh", headers=auth).get_data(as_text=True)
    assert found.count('"valueString":"bottom"') == 2  # one per resource in the searchset


def test_deep_extension_depth_is_a_setting(fhir, auth):
    _faults(fhir, hostile="deep_extension", hostile_depth=3)
    ext = fhir.get("/fhir/Patient/pat-alice", headers=auth).json["extension"]
    assert ext[0]["extension"][0]["extension"][0]["valueString"] == "bottom"


@pytest.mark.parametrize("settings", [
    {"trickle": ["everything"]}, {"trickle": "token"}, {"trickle_bytes_per_second": 0},
    {"redirect_loop": ["fhir"]}, {"hostile": "evil"}, {"hostile_on": ["patient"]}, {"hostile_depth": 0},
    {"hostile_depth": 2.5}, {"hostile_fields": {"Patient": 1}}, {"hostile_fields": []},
])
def test_bad_settings_are_rejected(fhir, settings):
    r = fhir.post("/__faults", json=settings)
    assert r.status_code == 400 and r.json["error"]


# --- single-use refresh tokens -----------------------------------------------------------------------------

def test_a_refresh_token_is_good_for_one_use_and_faults_count_uses_and_replays(fhir, sandbox_app):
    code, verifier, _ = get_code(fhir, sandbox_app, client_id="ipv-screen-secret",
                                 scope=f"{EHR_SCOPE} offline_access")
    first = exchange(fhir, code, verifier, "secret-post").json
    _, headers = client_auth("secret-basic")

    def refresh(token: str):
        return fhir.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token},
                         headers=headers)

    assert refresh(first["refresh_token"]).status_code == 200
    assert fhir.get("/__faults").json["refresh"] == {"used": 1, "replayed": 0}
    again = refresh(first["refresh_token"])
    assert again.status_code == 400 and again.json["error"] == "invalid_grant"
    assert fhir.get("/__faults").json["refresh"] == {"used": 1, "replayed": 1}
    assert fhir.delete("/__faults").json["refresh"] == {"used": 0, "replayed": 0}
