"""L5, L6 and I3: text from the EHR (or from a link anyone can craft) is cleaned and capped before it is
shown or logged; /callback shows EHR error text only for this browser's own pending sign-in; directory
URLs are only https:, http: or tel:."""

from __future__ import annotations

import logging

import pytest

from fhir.text import clean_text
from tests.launch.fakes import FakeEhr
from tests.security.conftest import context_of, launch, start

pytestmark = pytest.mark.security

RLO = "\u202e"


def test_clean_text_strips_controls_and_bidi_and_caps():
    """L5/I3: CR/LF, NUL, bidi overrides and isolates go; length is capped."""
    assert clean_text("a\r\nINFO forged line\x00") == "a INFO forged line"
    assert clean_text(f"Ann{RLO}eiloP\u2066x\u2069") == "AnneiloPx"
    assert len(clean_text("x" * 10_000, 200)) == 200
    assert clean_text(None) == ""


def test_token_error_description_is_cleaned_in_page_and_log(app, client, fake, caplog):
    """L5: the token endpoint's error_description reaches neither page nor log with CR/LF, and is capped."""
    forged = "bad\r\nINFO:gunicorn.access:forged line " + "z" * 5000
    fake.token_status = 400
    fake.token_response = lambda: {"error": "invalid_grant", "error_description": forged}
    caplog.set_level(logging.INFO)
    q = start(client, fake)
    resp = client.get(f"/callback?code=c&state={q['state']}")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "invalid_grant" in text
    assert "forged line" in text and "\r\nINFO" not in text and "z" * 300 not in text
    for rec in caplog.records:
        assert "\n" not in rec.getMessage() and "\r" not in rec.getMessage()
        assert len(rec.getMessage()) < 1000


def test_callback_error_text_only_for_this_browsers_pending_launch(app, client, fake):
    """L6: /callback?error=...&error_description=... with no launch of this browser shows a fixed message,
    not the attacker's text; for a real pending launch the EHR's (cleaned) text is shown."""
    spoof = "Call 1-900-555-0100 to restore your account at https://evil.example/login"
    resp = client.get(f"/callback?error=access_denied&error_description={spoof}")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "1-900-555-0100" not in text and "evil.example" not in text
    assert "access_denied" not in text
    # Another browser's state does not unlock the text either.
    q = start(client, fake)
    other = app.test_client()
    text = other.get(f"/callback?error=access_denied&error_description={spoof}&state={q['state']}").get_data(
        as_text=True)
    assert "1-900-555-0100" not in text
    # This browser's own pending sign-in: the EHR's words, cleaned.
    resp = client.get(f"/callback?error=access_denied&error_description=User%0D%0Asaid%E2%80%AEno&state={q['state']}")
    assert "access_denied" in resp.get_data(as_text=True) and "User saidno" in resp.get_data(as_text=True)


def test_bidi_override_in_ehr_names_never_reaches_the_banner(app, client, fake):
    """I3: U+202E and control characters in the patient's and user's names are removed before storage."""
    fake.adapter.add("GET", FakeEhr.ISS + "/Patient/p1", (200, {
        "resourceType": "Patient", "id": "p1", "name": [{"text": f"Ann{RLO}eiloP\r\nX"}],
        "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": f"MRN{RLO}1"}]}))
    fake.adapter.add("GET", FakeEhr.ISS + "/Practitioner/d1", (200, {
        "resourceType": "Practitioner", "id": "d1", "name": [{"given": [f"Dee{RLO}"], "family": "Doc\x07tor"}]}))
    lid = launch(client, fake)
    ctx = context_of(app, lid)
    assert ctx["patient"]["name"] == "AnneiloP X" and ctx["patient"]["mrn"] == "MRN1"
    assert ctx["user"]["name"] == "Dee Doctor"
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    assert RLO not in page and "AnneiloP X" in page


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)",
                                 "data:text/html,<script>1</script>", "vbscript:x", "file:///etc/passwd",
                                 "ftp://x.example/", "//evil.example/"])
def test_directory_urls_only_https_http_tel(url):
    """I3: the directory loaders keep only https:, http: and tel: URLs (HSDS and our native YAML)."""
    from referrals.loaders.common import safe_url

    assert safe_url(url) is None
    assert safe_url("https://example.org/help") == "https://example.org/help"
    assert safe_url("tel:+16177328753") == "tel:+16177328753"
