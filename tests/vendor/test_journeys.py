"""The clinician's journey at HTTP level against each sandbox EHR personality (generic, epic, oracle), ending with
exactly what that EHR keeps in its store; the note the EHR keeps equals the consent page's preview byte for byte."""

from __future__ import annotations

import threading

import pytest

from sandbox_ehr.harness.vendor import PERSONALITIES, Journey, note_text, start
from smart_app.referral.channels import CHANNELS

pytestmark = pytest.mark.vendor

LABEL_CODES = {"R", "SDV"}


@pytest.fixture
def env(request, tmp_path):
    environment = start(request.param, tmp_path)
    yield environment
    environment.close()


def visit(env, patient="pat-joana", encounter="enc-joana-chelsea") -> Journey:
    journey = Journey(env)
    journey.launch(patient, encounter)
    journey.screen_positive()
    journey.choose_program()
    return journey


def writes(env) -> list[dict]:
    """Requests that could change the EHR's data (a batch of reads at launch is not one)."""
    return [c for c in env.calls() if c["method"] in ("POST", "PUT", "DELETE", "PATCH")
            and c["path"].rstrip("/") != "/fhir" and not c["path"].endswith("/_search")]


def labels(resource: dict) -> set[str]:
    return {c.get("code") for c in (resource.get("meta") or {}).get("security") or []}


@pytest.mark.parametrize("env", PERSONALITIES, indirect=True)
def test_clinician_journey_ends_with_what_the_ehr_keeps(env):
    journey = visit(env)
    form = journey.choices(channel="phone", contact_note="after 5 pm — móvil only")
    shown = journey.preview(form)
    assert shown["note"] and journey.consent_page_note(form) == shown["note"]
    writes_before = writes(env)
    resp = journey.consent(form, shown["digest"])
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/l/{journey.lid}/consent/done")
    assert writes(env) == writes_before  # the POST wrote nothing itself
    env.drain()

    [doc] = env.documents("pat-joana")
    assert note_text(doc) == shown["note"]  # byte for byte what the patient was shown
    assert doc["subject"] == {"reference": "Patient/pat-joana"} and doc["status"] == "current"
    assert doc["docStatus"] == "final"
    rid = journey.referral_id()
    kept = env.kept()
    if env.personality == "generic":
        # A conformant server keeps the labels, the business identifier and the referral order.
        assert labels(doc) >= LABEL_CODES
        assert any(i.get("value", "").startswith(rid) for i in doc["identifier"])
        assert kept == {"DocumentReference": 1, "ServiceRequest": 1, "Observation": 0, "QuestionnaireResponse": 0,
                        "Task": 0}
    elif env.personality == "epic":
        # Clinical note only, filed signed against the visit's encounter, in the site's restricted note type;
        # Epic does not file identifier or meta.security.
        assert kept == {"DocumentReference": 1, "ServiceRequest": 0, "Observation": 0, "QuestionnaireResponse": 0,
                        "Task": 0}
        assert "identifier" not in doc and not labels(doc)
        assert doc["context"]["encounter"] == [{"reference": "Encounter/enc-joana-chelsea"}]
        assert doc["type"]["coding"][0]["code"] == "SW-CONF"
        assert doc["content"][0]["attachment"]["contentType"].split(";")[0] == "text/plain"
    else:
        # Oracle: one author = the signed-in provider, a period with times, the exact content type; the labels,
        # identifier and category are silently ignored.
        assert kept == {"DocumentReference": 1, "ServiceRequest": 0, "Observation": 0, "QuestionnaireResponse": 0,
                        "Task": 0}
        assert "identifier" not in doc and not labels(doc) and "category" not in doc
        assert [a["reference"] for a in doc["author"]] == ["Practitioner/prac-avery"]
        assert "T" in doc["context"]["period"]["end"]
        assert doc["content"][0]["attachment"]["contentType"] == "text/plain;charset=utf-8"
        assert doc["type"]["coding"][0]["code"] == "IPV-SW-CONF"
    # The confirmation page's status reaches "done" without asking the EHR again.
    status = journey.client.get(f"/l/{journey.lid}/progress").get_json()
    assert status["done"]


def _combinations(personality: str) -> list[tuple[str, bool]]:
    detailed = [False, True] if personality == "generic" else [False]  # detail is offered where the profile allows
    return [(c, d) for c in CHANNELS for d in detailed]


@pytest.mark.parametrize("env", PERSONALITIES, indirect=True)
def test_stored_note_equals_the_preview_for_every_channel_and_detail(env):
    patients = [("pat-joana", "enc-joana-chelsea"), ("pat-alice", "enc-alice-bwh"), ("pat-grace", "enc-grace-mgh")]
    expected: dict[str, list[str]] = {}
    for i, (channel, detailed) in enumerate(_combinations(env.personality)):
        patient, encounter = patients[i % len(patients)]
        journey = visit(env, patient, encounter)
        form = journey.choices(channel=channel, contact_note="llamar después de las 5 — “solo” móvil",
                               detailed=detailed, detail_text="Documented at the patient's request: bruise, 3 Jan.")
        shown = journey.preview(form)
        assert journey.consent_page_note(form) == shown["note"], (channel, detailed)
        assert journey.consent(form, shown["digest"]).status_code == 302
        expected.setdefault(patient, []).append(shown["note"])
    env.drain()
    for patient, notes in expected.items():
        kept = sorted(note_text(d) for d in env.documents(patient))
        assert kept == sorted(notes)  # every note the EHR keeps is one the patient was shown, and nothing else


@pytest.mark.parametrize("env", PERSONALITIES, indirect=True)
def test_consent_without_a_screen_is_409_and_the_ehr_gets_nothing(env):
    journey = Journey(env)
    journey.launch("pat-alice", "enc-alice-bwh")
    before = env.kept()
    resp = journey.post("/consent", {"shown": "1", "channel": "phone", "consent": "yes", "digest": "x"})
    assert resp.status_code == 409
    env.drain(max_seconds=5)
    assert env.kept() == before and writes(env) == []


@pytest.mark.parametrize("env", ["epic"], indirect=True)
def test_three_concurrent_consent_posts_file_one_note(env):
    journey = visit(env)
    form = journey.choices(channel="email")
    digest = journey.preview(form)["digest"]
    cookie = journey.client.get_cookie("ipv_session") or journey.client.get_cookie("session")
    clients = []
    for _ in range(3):
        c = env.app.test_client()
        c.set_cookie(cookie.key, cookie.value)
        clients.append(c)
    barrier = threading.Barrier(3)
    statuses: list[int] = []

    def post(c):
        barrier.wait()
        statuses.append(c.post(f"/l/{journey.lid}/consent",
                               data={**form, "consent": "yes", "digest": digest}).status_code)

    threads = [threading.Thread(target=post, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [302, 302, 302]
    from sqlalchemy import func, select

    from smart_app.store.db import session_scope
    from smart_app.store.models import ReferralRecord

    with env.app.app_context(), session_scope(env.app) as db:
        assert db.scalar(select(func.count()).select_from(ReferralRecord)) == 1
    env.drain()
    assert len(env.documents("pat-joana")) == 1


@pytest.mark.parametrize("personality", ["epic", "oracle"])
def test_slow_ehr_the_consent_post_never_waits_on_it(personality, tmp_path):
    """5 s per EHR call: the consent POST stores the writes and returns; no EHR call happens inside it.
    (The app's timeouts are longer than the EHR's latency here: a slow EHR, not a failing one.)"""
    env = start(personality, tmp_path, HTTP_TIMEOUT_SECONDS=20.0)
    try:
        _slow_ehr(env)
    finally:
        env.close()


def _slow_ehr(env) -> None:
    journey = visit(env)
    form = journey.choices(channel="none")
    digest = journey.preview(form)["digest"]
    env.faults(latency_seconds=5)
    before = len(env.calls())
    resp = journey.consent(form, digest)
    during = env.calls()[before:]
    assert resp.status_code == 302 and during == []  # not one request reached the EHR while the POST ran
    status = journey.client.get(f"/l/{journey.lid}/progress").get_json()
    assert not status["done"]  # the write is queued; the worker sends it
    env.drain(max_seconds=120)
    assert len(env.documents("pat-joana")) == 1


@pytest.mark.parametrize("env", ["epic", "oracle"], indirect=True)
def test_the_note_is_written_with_a_system_token_once_the_visits_token_is_gone(env):
    """SMART Backend Services: the write outlives the launch's token (Epic and Oracle both take system access)."""
    import sqlite3

    from tests.writeback.support import set_tokens

    journey = visit(env)
    form = journey.choices(channel="text")
    shown = journey.preview(form)
    assert journey.consent(form, shown["digest"]).status_code == 302
    set_tokens(env.app, journey.lid, {})  # expired, nothing to refresh with
    env.drain()
    [doc] = env.documents("pat-joana")
    assert note_text(doc) == shown["note"]
    conn = sqlite3.connect(env.sandbox.config["SANDBOX_DB"])
    try:
        scopes = [r[0] for r in conn.execute("SELECT scope FROM auth_access_token WHERE patient IS NULL")]
    finally:
        conn.close()
    assert scopes and all(s.startswith("system/") for s in " ".join(scopes).split())
