"""CDS Hooks 2.0 service against the sandbox EHR as the CDS Client (real JWTs, real FHIR reads).

The sandbox signs with its CDS key (sandbox_ehr/cds_client.py) and publishes it at /cds-client/jwks.json;
the app allow-lists that iss + JWKS URL. Each test creates its own patients in the sandbox store.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from config.current import replace_settings, settings_of
from smart_app import create_app
from smart_app.store.models import CdsCard, ReportEvent
from tests.conftest import app_config

pytestmark = pytest.mark.cds

SID = "checkin-patient-view"
FORBIDDEN_WORDS = ("abuse", "violence", "ipv", "partner", "domestic", "hits", "hark", "danger", "safety",
                   "unsafe", "hurt", "threat", "score", "positive", "negative", "screen")


@pytest.fixture
def cds_app(tmp_path, sandbox):
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", ALLOWED_ISS=[sandbox.iss],
                                APP_BASE_URL="https://ipv.example.test", CDS={
                                    "interval_months": 12, "population": "uspstf",
                                    "clients": [{"iss": sandbox.url, "jwks_url": sandbox.url + "/cds-client/jwks.json",
                                                 "fhir_servers": [sandbox.iss], "site": "bwh"}]}))
    yield app
    app.extensions["db_engine"].dispose()


def new_patient(sandbox, *, gender: str = "female", birth: str = "1990-01-01") -> str:
    pid = "cds-" + uuid.uuid4().hex[:12]
    sandbox.app.extensions["sandbox_store"].update({"resourceType": "Patient", "id": pid, "gender": gender,
                                                    "birthDate": birth, "name": [{"family": "Test"}]})
    return pid


def add_screen(sandbox, pid: str, when: datetime, code: tuple[str, str] = ("http://loinc.org", "95614-4")) -> None:
    sandbox.app.extensions["sandbox_store"].create({
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": code[0], "code": code[1]}]},
        "effectiveDateTime": when.isoformat(timespec="seconds"), "valueQuantity": {"value": 4}})


def hook_body(cds_app, sandbox, pid: str, *, prefetch: bool = True, scope: str | None = None) -> dict[str, Any]:
    from sandbox_ehr import cds_client

    service = cds_app.test_client().get("/cds-services").json["services"][0]
    assert service["id"] == SID
    sandbox.app.config["CDS_PREFETCH"] = prefetch
    sandbox.app.config["CDS_SCOPE"] = scope
    try:
        with sandbox.app.app_context():
            return cds_client.hook_request(service, pid, "prac-avery", None)
    finally:
        sandbox.app.config.pop("CDS_PREFETCH")
        sandbox.app.config.pop("CDS_SCOPE")


def token(sandbox, audience: str, **kw: Any) -> str:
    from sandbox_ehr import cds_client

    with sandbox.app.app_context():
        return cds_client.signed_jwt(audience, **kw)


def call(cds_app, sandbox, body: dict[str, Any], *, bearer: str | None = None, sid: str = SID):
    url = f"https://ipv.example.test/cds-services/{sid}"
    headers = {"Authorization": f"Bearer {bearer if bearer is not None else token(sandbox, url)}"}
    return cds_app.test_client().post(f"/cds-services/{sid}", json=body, headers=headers)


def cards(resp) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json["cards"]


# ---------------------------------------------------------------------------- discovery


def test_discovery_lists_both_hooks_with_prefetch_for_patient_and_our_screens(cds_app):
    services = {s["hook"]: s for s in cds_app.test_client().get("/cds-services").json["services"]}
    assert set(services) == {"patient-view", "encounter-start"}
    for s in services.values():
        assert s["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        screens = s["prefetch"]["screens"]
        assert screens.startswith("Observation?patient={{context.patientId}}&code=")
        for code in ("http://loinc.org|95614-4", "http://loinc.org|76504-0",
                     "http://example.org/fhir/ipv-screen/Questionnaire/pvs|total"):
            assert code in screens
    assert services["encounter-start"]["prefetch"]["encounter"] == "Encounter/{{context.encounterId}}"


# ---------------------------------------------------------------------------- the card


def test_due_patient_gets_one_neutral_card_with_a_smart_link(cds_app, sandbox):
    pid = new_patient(sandbox)
    got = cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid)))
    assert len(got) == 1
    card = got[0]
    assert card["indicator"] == "info" and len(card["summary"]) < 140
    assert card["links"] == [{"label": "Open check-in", "url": "https://ipv.example.test/launch", "type": "smart"}]
    text = " ".join([card["summary"], card["detail"], card["source"]["label"], card["links"][0]["label"]]).lower()
    for word in FORBIDDEN_WORDS:
        assert word not in text, word
    assert not any(ch.isdigit() for ch in card["summary"] + card["detail"])  # no score, no count
    with cds_app.app_context():
        from smart_app.store.db import get_session

        row = get_session().get(CdsCard, card["uuid"])
        assert (row.site, row.service, row.outcome) == ("bwh", SID, None)


def test_patient_screened_last_week_gets_no_card(cds_app, sandbox):
    pid = new_patient(sandbox)
    add_screen(sandbox, pid, datetime.now(UTC) - timedelta(days=7))
    assert cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid))) == []


def test_screen_older_than_the_interval_or_of_another_code_still_due(cds_app, sandbox):
    pid = new_patient(sandbox)
    add_screen(sandbox, pid, datetime.now(UTC) - timedelta(days=400))
    add_screen(sandbox, pid, datetime.now(UTC) - timedelta(days=3), code=("http://loinc.org", "4548-4"))
    assert len(cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid)))) == 1


def test_site_instrument_without_loinc_counts_as_a_screen(cds_app, sandbox):
    pid = new_patient(sandbox)
    add_screen(sandbox, pid, datetime.now(UTC) - timedelta(days=30),
               code=("http://example.org/fhir/ipv-screen/Questionnaire/pvs", "total"))
    assert cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid))) == []


@pytest.mark.parametrize("gender,birth", [("male", "1990-01-01"), ("female", "1960-01-01"),
                                          ("female", "2015-01-01")])
def test_outside_the_uspstf_population_no_card(cds_app, sandbox, gender, birth):
    pid = new_patient(sandbox, gender=gender, birth=birth)
    assert cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid))) == []


def test_population_is_configurable(cds_app, sandbox):
    replace_settings(cds_app, CDS=dict(settings_of(cds_app).cds, population={"name": "all-adults"}))
    pid = new_patient(sandbox, gender="male", birth="1960-01-01")
    assert len(cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid)))) == 1


# ---------------------------------------------------------------------------- prefetch missing


def test_missing_prefetch_reads_fhir_with_the_hooks_authorization(cds_app, sandbox):
    recent, due = new_patient(sandbox), new_patient(sandbox)
    add_screen(sandbox, recent, datetime.now(UTC) - timedelta(days=7))
    body = hook_body(cds_app, sandbox, recent, prefetch=False)
    assert "prefetch" not in body
    assert cards(call(cds_app, sandbox, body)) == []  # only a FHIR read can have found last week's screen
    assert len(cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, due, prefetch=False)))) == 1
    # And it did read the Patient: a man gets no card without prefetch too.
    man = new_patient(sandbox, gender="male")
    assert cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, man, prefetch=False))) == []


def test_ehr_without_observation_read_shows_the_card(cds_app, sandbox):
    """Decision (README): when the screens cannot be read, the status is unknown and the card is shown."""
    pid = new_patient(sandbox)
    add_screen(sandbox, pid, datetime.now(UTC) - timedelta(days=7))
    # Token without Observation scope: we do not search (the sandbox would answer 403).
    body = hook_body(cds_app, sandbox, pid, prefetch=False, scope="patient/Patient.r")
    assert len(cards(call(cds_app, sandbox, body))) == 1
    # Scope not stated but the EHR refuses the search (403): unknown, card shown.
    body = hook_body(cds_app, sandbox, pid, prefetch=False, scope="patient/Patient.r")
    body["fhirAuthorization"].pop("scope")
    assert len(cards(call(cds_app, sandbox, body))) == 1


def test_fhir_server_not_allow_listed_is_never_called(cds_app, sandbox, monkeypatch):
    pid = new_patient(sandbox)
    body = hook_body(cds_app, sandbox, pid, prefetch=False)
    body["fhirServer"] = "https://attacker.example/fhir"
    import requests

    real = requests.Session.request

    def only_allow_listed(self, method, url, *a, **k):
        assert url.startswith(sandbox.url + "/"), f"the app called a host that is not allow-listed: {url}"
        return real(self, method, url, *a, **k)

    monkeypatch.setattr(requests.Session, "request", only_allow_listed)
    assert len(cards(call(cds_app, sandbox, body))) == 1  # unknown -> card; nothing sent


# ---------------------------------------------------------------------------- authentication


def _other_key_token(url: str, sandbox, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": sandbox.url, "aud": url, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    payload.update(claims)
    return jwt.encode(payload, ec.generate_private_key(ec.SECP384R1()), algorithm="ES384",
                      headers={"kid": "sandbox-cds-es384"})


def test_hostile_and_unsigned_callers_get_401_and_nothing_is_recorded(cds_app, sandbox):
    pid = new_patient(sandbox)
    body = hook_body(cds_app, sandbox, pid)
    url = f"https://ipv.example.test/cds-services/{SID}"
    now = int(time.time())
    unsigned = jwt.encode({"iss": sandbox.url, "aud": url, "iat": now, "exp": now + 300, "jti": "x" * 20},
                          None, algorithm="none", headers={"kid": "sandbox-cds-es384"})
    client = cds_app.test_client()
    assert client.post(f"/cds-services/{SID}", json=body).status_code == 401  # no Authorization
    for bad in (unsigned, "not-a-jwt", _other_key_token(url, sandbox),
                token(sandbox, url, iss="https://evil.example"),  # iss not allow-listed
                _other_key_token(url, sandbox, kid="other")):
        resp = call(cds_app, sandbox, body, bearer=bad)
        assert resp.status_code == 401 and "cards" not in resp.json
    with cds_app.app_context():
        from smart_app.store.db import get_session

        assert get_session().scalar(select(func.count()).select_from(CdsCard)) == 0


def test_wrong_audience_is_refused(cds_app, sandbox):
    body = hook_body(cds_app, sandbox, new_patient(sandbox))
    for aud in ("https://ipv.example.test/cds-services/checkin-encounter-start", "https://other.example/cds-services"):
        assert call(cds_app, sandbox, body, bearer=token(sandbox, aud)).status_code == 401


def test_expired_token_is_refused(cds_app, sandbox):
    body = hook_body(cds_app, sandbox, new_patient(sandbox))
    url = f"https://ipv.example.test/cds-services/{SID}"
    assert call(cds_app, sandbox, body, bearer=token(sandbox, url, lifetime=-120)).status_code == 401


def test_replayed_jti_is_refused(cds_app, sandbox):
    body = hook_body(cds_app, sandbox, new_patient(sandbox))
    url = f"https://ipv.example.test/cds-services/{SID}"
    jti = str(uuid.uuid4())
    assert call(cds_app, sandbox, body, bearer=token(sandbox, url, jti=jti)).status_code == 200
    assert call(cds_app, sandbox, body, bearer=token(sandbox, url, jti=jti)).status_code == 401


def test_symmetric_algorithm_with_the_public_key_as_secret_is_refused(cds_app, sandbox):
    import json

    from sandbox_ehr import cds_client

    url = f"https://ipv.example.test/cds-services/{SID}"
    body = hook_body(cds_app, sandbox, new_patient(sandbox))
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    secret = json.dumps(cds_client.public_jwks()["keys"][0]).encode()  # PyJWT will not do this: by hand
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "kid": "sandbox-cds-es384", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"iss": sandbox.url, "aud": url, "iat": now, "exp": now + 300,
                             "jti": str(uuid.uuid4())}).encode())
    sig = b64(hmac.new(secret, f"{head}.{claims}".encode(), hashlib.sha256).digest())
    forged = f"{head}.{claims}.{sig}"
    assert call(cds_app, sandbox, body, bearer=forged).status_code == 401


def test_bad_body_is_400_after_authentication(cds_app, sandbox):
    body = hook_body(cds_app, sandbox, new_patient(sandbox))
    body["hook"] = "order-sign"
    assert call(cds_app, sandbox, body).status_code == 400
    body["hook"] = "patient-view"
    body["context"]["patientId"] = "../Patient/x?y"
    assert call(cds_app, sandbox, body).status_code == 400


# ---------------------------------------------------------------------------- feedback


def test_feedback_records_accepted_and_overridden_once(cds_app, sandbox):
    first = cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, new_patient(sandbox))))[0]["uuid"]
    second = cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, new_patient(sandbox))))[0]["uuid"]
    url = f"https://ipv.example.test/cds-services/{SID}/feedback"
    client = cds_app.test_client()
    assert client.post(f"/cds-services/{SID}/feedback", json={"feedback": []}).status_code == 401
    fb = {"feedback": [{"card": first, "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:00:00Z"},
                       {"card": second, "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00Z"},
                       {"card": str(uuid.uuid4()), "outcome": "accepted"}]}
    for _ in range(2):  # a repeated report counts once
        resp = client.post(f"/cds-services/{SID}/feedback", json=fb,
                           headers={"Authorization": f"Bearer {token(sandbox, url)}"})
        assert resp.status_code == 200
    with cds_app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        kinds = dict(db.execute(select(ReportEvent.kind, func.count()).group_by(ReportEvent.kind)).all())
        assert kinds == {"card_shown": 2, "card_accepted": 1, "card_overridden": 1}
        assert db.get(CdsCard, first).outcome == "accepted"


def test_a_jku_not_on_the_allow_list_is_never_fetched(cds_app, sandbox, monkeypatch):
    """Oracle Health names its key set in the token's jku; we read only a jku listed for that iss."""
    import requests

    real = requests.Session.request
    fetched: list[str] = []

    def record(self, method, url, *a, **k):
        fetched.append(url)
        return real(self, method, url, *a, **k)

    monkeypatch.setattr(requests.Session, "request", record)
    body = hook_body(cds_app, sandbox, new_patient(sandbox))
    url = f"https://ipv.example.test/cds-services/{SID}"
    now = int(time.time())
    forged = jwt.encode({"iss": sandbox.url, "aud": url, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
                        ec.generate_private_key(ec.SECP384R1()), algorithm="ES384",
                        headers={"kid": "attacker-key", "jku": "https://attacker.example/jwks.json"})
    assert call(cds_app, sandbox, body, bearer=forged).status_code == 401
    assert not [u for u in fetched if "attacker" in u]


def test_replay_refused_on_postgresql(sandbox, postgres_url):
    app = create_app(app_config(postgres_url, ALLOWED_ISS=[sandbox.iss], APP_BASE_URL="https://ipv.example.test",
                                CDS={"clients": [{"iss": sandbox.url, "jwks_url": sandbox.url + "/cds-client/jwks.json",
                                                  "fhir_servers": [sandbox.iss]}]}))
    try:
        body = hook_body(app, sandbox, new_patient(sandbox))
        bearer = token(sandbox, f"https://ipv.example.test/cds-services/{SID}")
        assert len(cards(call(app, sandbox, body, bearer=bearer))) == 1
        assert call(app, sandbox, body, bearer=bearer).status_code == 401
    finally:
        app.extensions["db_engine"].dispose()


def test_encounter_start_counts_the_card_for_the_encounters_site(cds_app, sandbox):

    from sandbox_ehr import cds_client

    replace_settings(cds_app, site_map={"Location/loc-mgh-chelsea": "mgh-chelsea"})
    pid = new_patient(sandbox)
    store = sandbox.app.extensions["sandbox_store"]
    enc = "enc-" + pid
    store.update({"resourceType": "Encounter", "id": enc, "status": "in-progress",
                  "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                  "subject": {"reference": f"Patient/{pid}"},
                  "location": [{"location": {"reference": "Location/loc-mgh-chelsea"}}]})
    service = {s["id"]: s for s in cds_app.test_client().get("/cds-services").json["services"]}[
        "checkin-encounter-start"]
    with sandbox.app.app_context():
        body = cds_client.hook_request(service, pid, "prac-avery", enc)
    assert body["hook"] == "encounter-start" and body["prefetch"]["encounter"]["id"] == enc
    got = cards(call(cds_app, sandbox, body, sid="checkin-encounter-start"))
    assert len(got) == 1
    with cds_app.app_context():
        from smart_app.store.db import get_session

        assert get_session().get(CdsCard, got[0]["uuid"]).site == "mgh-chelsea"
    # The patient-view service refuses an encounter-start body (hook mismatch).
    assert call(cds_app, sandbox, body).status_code == 400


def test_expired_request_jtis_are_purged_with_the_other_replay_guards(cds_app, sandbox):
    from smart_app.launch.retention import purge
    from smart_app.store.models import CdsJti

    cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, new_patient(sandbox))))
    with cds_app.app_context():
        from smart_app.store.db import get_session

        db = get_session()
        assert db.scalar(select(func.count()).select_from(CdsJti)) == 1
        purge(db)  # not expired yet: kept (a replay is still refused)
        assert db.scalar(select(func.count()).select_from(CdsJti)) == 1
        purge(db, now=datetime.now(UTC) + timedelta(minutes=20))
        assert db.scalar(select(func.count()).select_from(CdsJti)) == 0


# ---------------------------------------------------------------------------- the app's own memory

HITS_NEGATIVE = {"instrument": "hits", "q-hurt": "LA6270-8", "q-insult": "LA10066-1", "q-threaten": "LA6270-8",
                 "q-scream": "LA6270-8"}


def screen_in_the_app(cds_app, sandbox, pid: str, encounter: str) -> None:
    """A negative screen through the app's pages: nothing reaches the chart, only the app's visit memory."""
    from tests.conftest import default_context, launch_for

    ctx = default_context()
    ctx["patient"]["id"], ctx["encounter"]["id"] = pid, encounter
    client = cds_app.test_client()
    lid = launch_for(cds_app, client, ctx, iss=sandbox.iss)
    assert client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes",
                                               "action": "start"}).status_code == 302
    assert client.post(f"/l/{lid}/screen", data=HITS_NEGATIVE).status_code == 302
    page = client.get(f"/l/{lid}/result").get_data(as_text=True)
    assert 'data-testid="done-back-to-chart"' in page
    assert "finished" in client.post(f"/l/{lid}/finish").get_data(as_text=True)


def encounter_body(cds_app, sandbox, pid: str, enc: str) -> dict[str, Any]:
    from sandbox_ehr import cds_client

    sandbox.app.extensions["sandbox_store"].update({
        "resourceType": "Encounter", "id": enc, "status": "in-progress", "subject": {"reference": f"Patient/{pid}"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}})
    service = {s["id"]: s for s in cds_app.test_client().get("/cds-services").json["services"]}[
        "checkin-encounter-start"]
    with sandbox.app.app_context():
        return cds_client.hook_request(service, pid, "prac-avery", enc)


def test_card_silent_after_a_negative_screen_in_the_app_in_this_encounter(cds_app, sandbox):
    pid = new_patient(sandbox)
    enc = "enc-" + pid
    assert len(cards(call(cds_app, sandbox, encounter_body(cds_app, sandbox, pid, enc),
                          sid="checkin-encounter-start"))) == 1
    screen_in_the_app(cds_app, sandbox, pid, enc)
    # Minutes later: the chart holds no screen (a negative screen writes nothing), the app remembers it.
    assert cards(call(cds_app, sandbox, encounter_body(cds_app, sandbox, pid, enc),
                      sid="checkin-encounter-start")) == []
    assert cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid))) == []
    other = new_patient(sandbox)
    assert len(cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, other)))) == 1


def _referral(cds_app, sandbox, pid: str, *, status: str, age_days: int) -> None:
    from smart_app.launch.visit_memory import patient_key
    from smart_app.store.db import get_session
    from smart_app.store.models import ReferralRecord

    with cds_app.test_request_context():
        db = get_session()
        db.add(ReferralRecord(launch_id=None, iss=sandbox.iss, profile="generic", site="bwh", status=status,
                              patient_key=patient_key(sandbox.iss, {"patient": {"id": pid}}),
                              created_at=datetime.now(UTC) - timedelta(days=age_days)))
        db.commit()


def test_card_silent_while_a_referral_is_open_and_back_once_it_is_closed_and_old(cds_app, sandbox):
    pid = new_patient(sandbox)
    _referral(cds_app, sandbox, pid, status="in-progress", age_days=400)  # older than the 12-month interval
    assert cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, pid))) == []
    closed = new_patient(sandbox)
    _referral(cds_app, sandbox, closed, status="completed", age_days=400)
    assert len(cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, closed)))) == 1
    recent = new_patient(sandbox)
    _referral(cds_app, sandbox, recent, status="completed", age_days=20)  # inside the interval
    assert cards(call(cds_app, sandbox, hook_body(cds_app, sandbox, recent))) == []
