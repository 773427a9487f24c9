"""Authorization code flow with PKCE (S256), state and nonce; code exchange and refresh.

The per-launch secrets (state, PKCE verifier, nonce) are created here but stored by the
caller server-side (the app keeps them encrypted in its LaunchRecord, keyed by state):
nothing secret is kept in an OAuth session object or a cookie.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from fhir.smart.client_auth import ClientAuth
from fhir.smart.discovery import SmartConfiguration


class TokenError(Exception):
    """The token endpoint refused or failed. ``error`` is the OAuth error code when given."""

    def __init__(self, message: str, error: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.error = error
        self.status = status


def new_state() -> str:
    return secrets.token_urlsafe(32)  # 256 bits (SMART asks for at least 122)


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str
    method: str = "S256"


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce() -> Pkce:
    # RFC 7636: 43..128 chars from the unreserved set; 64 random bytes -> 86 chars.
    verifier = secrets.token_urlsafe(64)
    return Pkce(verifier=verifier, challenge=s256(verifier))


def authorize_url(config: SmartConfiguration, *, client_id: str, redirect_uri: str, scope: str, state: str,
                  aud: str, code_challenge: str, nonce: str | None = None, launch: str | None = None) -> str:
    """The authorization request URL (SMART App Launch 2.2 "Obtain authorization code")."""
    params: dict[str, str] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scope.split()),
        "state": state,
        "aud": aud,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if launch:
        params["launch"] = launch
    if nonce and "openid" in scope.split():
        params["nonce"] = nonce
    parts = urlsplit(config.authorization_endpoint)
    # Keep any query the EHR put in its endpoint (some do), ours after it.
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _token_request(config: SmartConfiguration, data: dict[str, str], auth: ClientAuth,
                   http: requests.Session | None, timeout: float) -> dict[str, Any]:
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    auth.apply(data, headers, config.token_endpoint)
    http = http or requests.Session()
    try:
        resp = http.post(config.token_endpoint, data=data, headers=headers, timeout=timeout)
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise TokenError(f"The EHR's token endpoint did not answer ({type(exc).__name__}).") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        desc = body.get("error_description") if isinstance(body, dict) else None
        msg = f"The EHR refused the token request (HTTP {resp.status_code}"
        msg += f", {error}" if error else ""
        msg += f": {desc})" if desc else ")"
        raise TokenError(msg, error=error, status=resp.status_code)
    if not body.get("access_token") or str(body.get("token_type", "")).lower() != "bearer":
        raise TokenError("The EHR's token response has no bearer access token.")
    # Absolute expiry so the app can refresh before a call, not after a 401.
    if isinstance(body.get("expires_in"), int | float):
        body["expires_at"] = int(time.time()) + int(body["expires_in"])
    return body


def exchange_code(config: SmartConfiguration, *, code: str, redirect_uri: str, code_verifier: str,
                  auth: ClientAuth, http: requests.Session | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Trade the authorization code for tokens (the caller checks the id_token)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": code_verifier}
    return _token_request(config, data, auth, http, timeout)


def refresh(config: SmartConfiguration, *, refresh_token: str, auth: ClientAuth, scope: str | None = None,
            http: requests.Session | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Use a refresh token. The response may omit a new refresh token: keep the old one then."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope:
        data["scope"] = scope
    body = _token_request(config, data, auth, http, timeout)
    body.setdefault("refresh_token", refresh_token)
    return body


def token_expired(tokens: dict[str, Any], *, skew: int = 30, now: float | None = None) -> bool:
    """True when the access token is (about to be) expired; unknown expiry counts as valid."""
    expires_at = tokens.get("expires_at")
    if not isinstance(expires_at, int | float):
        return False
    return (now if now is not None else time.time()) >= expires_at - skew


def client_credentials(config: SmartConfiguration, *, scope: str, auth: ClientAuth,
                       http: requests.Session | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """SMART Backend Services: a system access token (client_credentials; the client authenticates with
    private_key_jwt). Source: SMART App Launch 2.2.0 backend-services.html, "Obtaining an access token"."""
    return _token_request(config, {"grant_type": "client_credentials", "scope": scope}, auth, http, timeout)
