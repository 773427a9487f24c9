"""Attack suite against /launch and /callback with a fake EHR that misbehaves on purpose
(bad id_tokens, errors). The same flows against the real sandbox are in test_launch_sandbox.py.

Every refusal must be a clear 4xx page: no redirect, no stack trace, no tokens kept.
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from smart_app.store.models import LaunchRecord
from tests.launch.fakes import FakeEhr, install_fake_ehr

CLIENT_ID = "fake-app"


@pytest.fixture
def fake(app):
    return install_fake_ehr(app, CLIENT_ID)


def start(client, fake, iss: str = FakeEhr.ISS) -> dict[str, str]:
    resp = client.get(f"/launch?iss={quote(iss)}&launch=L1")
    assert resp.status_code == 302, resp.data
    query = {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}
    fake.nonce = query.get("nonce")
    return query


def callback(client, state: str, code: str = "code-1"):
    return client.get(f"/callback?code={code}&state={state}")


def record_for(app, state: str) -> LaunchRecord:
    with app.app_context():
        from sqlalchemy import select

        from smart_app.store.db import get_session

        return get_session().scalar(select(LaunchRecord).where(LaunchRecord.state == state))


def refused(resp, status: int = 400, needle: str | None = None) -> str:
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, text
    assert "Location" not in resp.headers
    assert "Traceback" not in text and "fake-access" not in text
    if needle:
        assert needle in text
    return text


def test_valid_launch_is_accepted(app, client, fake):
    """The control for every refusal below: the same fake EHR, nothing tampered."""
    q = start(client, fake)
    assert {"state", "nonce", "code_challenge", "aud"} <= q.keys() and q["aud"] == FakeEhr.ISS
    resp = callback(client, q["state"])
    assert resp.status_code == 302 and "/l/" in resp.headers["Location"]
    rec = record_for(app, q["state"])
    assert rec.status == "active" and rec.pending_enc is None
    assert b"fake-access" not in rec.tokens_enc  # encrypted at rest
    page = client.get(resp.headers["Location"], follow_redirects=True)
    assert "Fake Patient" in page.get_data(as_text=True)


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _swap_payload(token: str, **changes) -> str:
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return ".".join((header, _b64(claims), sig))


@pytest.mark.parametrize("setup, needle", [
    (lambda f: setattr(f, "tamper", lambda t: _swap_payload(t, fhirUser=FakeEhr.ISS + "/Practitioner/other")),
     "signature"),
    (lambda f: setattr(f, "tamper", lambda t: ".".join([_b64({"alg": "none", "typ": "JWT"}), t.split(".")[1], ""])),
     "accepted algorithm"),
    (lambda f: f.id_token_claims.update(exp=int(time.time()) - 3600, iat=int(time.time()) - 4000), "expired"),
    (lambda f: f.id_token_claims.update(aud="someone-else"), "aud"),
    (lambda f: f.id_token_claims.update(iss="https://other-ehr.test/fhir"), "iss"),
    (lambda f: f.id_token_claims.update(nonce="nonce-of-another-launch"), "nonce"),
    (lambda f: f.id_token_claims.update(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200), "iat"),
    (lambda f: f.token_extra.update(id_token=None), "id_token"),
], ids=["tampered", "alg-none", "expired", "wrong-aud", "wrong-iss", "nonce-mismatch", "future-iat", "missing"])
def test_bad_id_token_is_refused(app, client, fake, setup, needle):
    setup(fake)
    q = start(client, fake)
    refused(callback(client, q["state"]), 400, needle)
    rec = record_for(app, q["state"])
    assert rec.status == "error" and rec.tokens_enc is None and rec.pending_enc is None


def test_missing_state_and_wrong_state(client, fake):
    start(client, fake)
    refused(client.get("/callback?code=code-1"), 400, "does not match a launch")
    refused(callback(client, "x" * 43), 400, "does not match a launch")
    refused(callback(client, "x" * 5000), 400)


def test_state_of_another_browser_is_refused(app, client, fake):
    q = start(client, fake)
    other = app.test_client()
    refused(callback(other, q["state"]), 400, "does not match a launch")
    # The rightful browser can still finish.
    assert callback(client, q["state"]).status_code == 302


def test_replayed_code_is_refused(app, client, fake):
    q1 = start(client, fake)
    assert callback(client, q1["state"], "code-A").status_code == 302
    refused(callback(client, q1["state"], "code-A"), 400)  # same callback again
    q2 = start(client, fake)
    refused(callback(client, q2["state"], "code-A"), 400, "already used")  # old code, fresh launch
    assert record_for(app, q2["state"]).status == "error"


def test_iss_not_allowed_sends_nothing(client, fake):
    resp = client.get("/launch?iss=https://evil.example/fhir&launch=L1")
    refused(resp, 400, "not registered")
    assert fake.adapter.calls == []  # not even discovery
    refused(client.get("/launch/standalone?iss=https://evil.example/fhir"), 400, "not registered")
    assert fake.adapter.calls == []


def test_ehr_error_in_callback_is_shown_plainly(app, client, fake):
    q = start(client, fake)
    resp = client.get(f"/callback?error=access_denied&error_description=The+user+said+no&state={q['state']}")
    refused(resp, 400, "access_denied")
    assert "The user said no" in resp.get_data(as_text=True)
    assert record_for(app, q["state"]).status == "error"


def test_token_endpoint_error_is_shown_plainly(client, fake):
    fake.token_status = 400
    q = start(client, fake)
    refused(callback(client, q["state"]), 400, "invalid_grant")


def test_ehr_launch_without_patient_is_refused(client, fake):
    fake.token_extra.update(patient=None)
    q = start(client, fake)
    refused(callback(client, q["state"]), 400, "which patient")


@pytest.mark.parametrize("url", [
    "/launch", "/launch?iss=", "/launch?launch=L1", f"/launch?iss={FakeEhr.ISS}",
    "/launch?iss=" + "h" * 5000 + "&launch=x", "/launch?iss=%00%01&launch=x",
    "/launch?iss=javascript:alert(1)&launch=x",
    "/callback", "/callback?state=", "/callback?code=&state=abc", "/callback?error=" + "e" * 3000,
    "/l/not-a-launch/", "/l/%00/", "/l/x/ready", "/launch/standalone?iss=ftp://x",
])
def test_bad_input_gets_a_clear_4xx(client, fake, url):
    resp = client.get(url)
    text = resp.get_data(as_text=True)
    assert 400 <= resp.status_code < 500, (url, resp.status_code)
    assert "Traceback" not in text and "Quick exit" in text
    assert resp.headers["Cache-Control"].startswith("no-store")


def test_intent_worklist_lands_on_the_worklist_when_installed(app, client, fake):
    fake.token_extra.update(intent="worklist")
    q = start(client, fake)
    resp = callback(client, q["state"])
    lid = resp.headers["Location"].split("/")[2]
    expected = f"/l/{lid}/worklist" if "worklist" in app.blueprints else f"/l/{lid}/"
    assert resp.status_code == 302 and resp.headers["Location"] == expected
