"""A patient-facing sign-in to the sandbox EHR without a browser: the standalone patient launch a portal app makes
(authorize with PKCE -> the sign-in page, where a patient or a proxy signs in -> code -> token), as the tests and
the demo's leak check need it. The token answer is what a site hands ``flask leak-check`` (DEPLOY.md)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

PORTAL_CLIENT = "ipv-portal-test"  # sandbox_ehr/clients.yaml
TEST_PATIENT, TEST_ENCOUNTER, TEST_PROXY = "pat-tess", "enc-tess-bwh", "rp-tess-proxy"  # data/06-portal.json
# v2 and v1 spellings both asked: the EHR grants the ones it knows (Oracle: v1 only).
PORTAL_SCOPE = "openid fhirUser launch/patient patient/*.rs patient/*.read"


def portal_token(base_url: str, user: str, scope: str = PORTAL_SCOPE, redirect_uri: str = "http://127.0.0.1:9/callback",
                 timeout: float = 10.0) -> dict[str, Any]:
    """The token answer for ``user`` (``Patient/<id>`` or ``RelatedPerson/<id>``) signing in to the portal app."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    iss = base_url.rstrip("/") + "/fhir"
    page = requests.get(base_url + "/auth/authorize", params={
        "response_type": "code", "client_id": PORTAL_CLIENT, "redirect_uri": redirect_uri, "scope": scope,
        "state": secrets.token_urlsafe(16), "aud": iss, "code_challenge": challenge, "code_challenge_method": "S256",
    }, allow_redirects=False, timeout=timeout)
    pending = re.search(r'name="pending" value="([^"]+)"', page.text)
    if page.status_code != 200 or not pending:
        raise RuntimeError(f"portal sign-in page not shown ({page.status_code}): {page.headers.get('Location')}")
    signed_in = requests.post(base_url + "/auth/login", data={"pending": pending.group(1), "portal_user": user,
                                                               "action": "approve"},
                              allow_redirects=False, timeout=timeout)
    code = parse_qs(urlsplit(signed_in.headers.get("Location", "")).query).get("code")
    if not code:
        raise RuntimeError(f"portal sign-in refused ({signed_in.status_code})")
    answer = requests.post(base_url + "/auth/token", data={
        "grant_type": "authorization_code", "code": code[0], "redirect_uri": redirect_uri,
        "client_id": PORTAL_CLIENT, "code_verifier": verifier}, timeout=timeout)
    answer.raise_for_status()
    return answer.json()
