"""Authorization code flow with PKCE (S256), state and nonce; code exchange and refresh, on
requests-oauthlib's ``OAuth2Session`` (authorization_url, fetch_token, refresh_token). Our own code
keeps only what the library does not do: the ``private_key_jwt`` assertion (client_auth.py) and the
id_token checks (id_token.py).

The per-launch secrets (state, PKCE verifier, nonce) are created here but stored by the
caller server-side (the app keeps them encrypted in its LaunchRecord, keyed by state):
nothing secret is kept in an OAuth session object or a cookie.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import requests
from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error
from requests_oauthlib import OAuth2Session

from fhir import json_depth
from fhir.errors import FhirWireError
from fhir.http import DeadlineSession, NoAmbientState, not_answering
from fhir.smart.client_auth import ClientAuth
from fhir.smart.discovery import SmartConfiguration
from fhir.text import clean_text
from fhir.url_policy import share_transport


class TokenError(FhirWireError):
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


class _OAuth2Session(DeadlineSession, NoAmbientState, OAuth2Session):
    """requests-oauthlib's session, keeping no cookies, reading no ~/.netrc and holding the token call to one
    deadline (fhir/http.py)."""


def _oauth(client_id: str, http: requests.Session | None, **kwargs: Any) -> OAuth2Session:
    """An OAuth2Session that sends through ``http``'s transports (the app's outbound URL policy)."""
    oauth = _OAuth2Session(client_id, **kwargs)
    if http is not None:
        share_transport(http, oauth)
    for hook in ("access_token_response", "refresh_token_response"):
        oauth.register_compliance_hook(hook, _check_response)
    return oauth


def _relax_transport_check(url: str) -> None:
    # oauthlib refuses http:// on its own; our outbound policy (fhir/url_policy.py) is the one authority on
    # schemes (https outside the sandbox), so oauthlib is told to leave http to it.
    if url.lower().startswith("http://"):
        os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")


def authorize_url(config: SmartConfiguration, *, client_id: str, redirect_uri: str, scope: str, state: str,
                  aud: str, code_challenge: str, nonce: str | None = None, launch: str | None = None) -> str:
    """The authorization request URL (SMART App Launch 2.2 "Obtain authorization code"), built by
    requests-oauthlib. The PKCE challenge is passed in: its verifier stays in the caller's server-side
    launch record, never on the session object."""
    scopes = scope.split()
    extra: dict[str, str] = {"aud": aud, "code_challenge": code_challenge, "code_challenge_method": "S256"}
    if launch:
        extra["launch"] = launch
    if nonce and "openid" in scopes:
        extra["nonce"] = nonce
    _relax_transport_check(config.authorization_endpoint)
    oauth = _oauth(client_id, None, redirect_uri=redirect_uri, scope=scopes, state=state)
    url, _state = oauth.authorization_url(config.authorization_endpoint, **extra)
    return url


def _check_response(resp: requests.Response) -> requests.Response:
    """Compliance hook run before oauthlib parses a token response: our own checks and messages
    (status, JSON object, bearer access token), with EHR text cleaned and capped."""
    try:
        body = json_depth.loads(resp.content)
    except ValueError:
        body = None
    if resp.status_code != 200 or not isinstance(body, dict):
        error = clean_text(body.get("error"), 60) if isinstance(body, dict) else ""
        desc = clean_text(body.get("error_description"), 200) if isinstance(body, dict) else ""
        msg = f"The EHR refused the token request (HTTP {resp.status_code}"
        msg += f", {error}" if error else ""
        msg += f": {desc})" if desc else ")"
        raise TokenError(msg, error=error or None, status=resp.status_code)
    if not isinstance(body.get("access_token"), str) or not body["access_token"] \
            or str(body.get("token_type", "")).lower() != "bearer":
        raise TokenError("The EHR's token response has no bearer access token.")
    # Values oauthlib would trip over (a numeric scope, a text expires_in) are dropped before it parses.
    changed = False
    if "expires_in" in body and (not isinstance(body["expires_in"], int | float) or isinstance(body["expires_in"], bool)
                                 or not -1e9 < body["expires_in"] < 1e9):
        body.pop("expires_in")
        changed = True
    if "scope" in body and not isinstance(body["scope"], str):
        body.pop("scope")
        changed = True
    if changed:
        resp._content = json.dumps(body).encode()
    return resp


def _token(call: Any, token_url: str) -> dict[str, Any]:
    _relax_transport_check(token_url)
    try:
        token = dict(call())
    except TokenError:
        raise
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise TokenError(f"The EHR's token endpoint is not answering ({not_answering(exc)}). "
                         "Try again in a minute.") from None
    except OAuth2Error as exc:
        raise TokenError(f"The EHR refused the token request ({clean_text(exc.error, 60)}: "
                         f"{clean_text(exc.description, 200)})", error=clean_text(exc.error, 60)) from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, Warning, requests.RequestException):
        raise TokenError("The EHR's token response could not be used.") from None
    if isinstance(token.get("scope"), list):  # oauthlib hands scope back as a list
        token["scope"] = " ".join(str(s) for s in token["scope"])
    # Absolute expiry so the app can refresh before a call, not after a 401.
    if isinstance(token.get("expires_in"), int | float):
        token["expires_at"] = int(time.time()) + int(token["expires_in"])
    else:
        token.pop("expires_at", None)
    return token


def exchange_code(config: SmartConfiguration, *, code: str, redirect_uri: str, code_verifier: str,
                  auth: ClientAuth, http: requests.Session | None = None, timeout: float = 10.0,
                  credentials: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trade the authorization code for tokens with requests-oauthlib's ``fetch_token``; the PKCE verifier
    comes from the caller's server-side launch record (the caller checks the id_token). ``credentials``:
    ``auth.oauth_kwargs(config.token_endpoint)`` made ahead by the caller (so it can record the assertion's
    jti in the same transaction as the code); made here when not given."""
    oauth = _oauth(auth.client_id, http, redirect_uri=redirect_uri)  # scope=None: the EHR may narrow it
    kwargs = credentials if credentials is not None else auth.oauth_kwargs(config.token_endpoint)
    return _token(lambda: oauth.fetch_token(config.token_endpoint, code=code, code_verifier=code_verifier,
                                            timeout=timeout, **kwargs), config.token_endpoint)


def refresh(config: SmartConfiguration, *, refresh_token: str, auth: ClientAuth, scope: str | None = None,
            http: requests.Session | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Use a refresh token (requests-oauthlib ``refresh_token``). The response may omit a new refresh
    token: keep the old one then."""
    oauth = _oauth(auth.client_id, http, scope=scope.split() if scope else None)
    kwargs = auth.oauth_kwargs(config.token_endpoint, refresh=True)
    body = _token(lambda: oauth.refresh_token(config.token_endpoint, refresh_token=refresh_token,
                                              timeout=timeout, **kwargs), config.token_endpoint)
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
    oauth = _oauth(auth.client_id, http, client=BackendApplicationClient(auth.client_id))
    kwargs = auth.oauth_kwargs(config.token_endpoint)
    # scope as a request parameter, not on the session: the EHR may grant less (no oauthlib scope warning).
    return _token(lambda: oauth.fetch_token(config.token_endpoint, scope=" ".join(scope.split()), timeout=timeout,
                                            **kwargs), config.token_endpoint)
