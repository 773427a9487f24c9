"""Token revocation (RFC 7009) at the EHR's ``revocation_endpoint``, when its discovery advertises one.

Used when a launch ends (quick exit) and when retention deletes it: the refresh token first
(revoking it usually revokes its access tokens too, RFC 7009 section 2.1), then the access token. Best
effort: an EHR without the endpoint, or one that fails, leaves the tokens to expire on their own.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from fhir.smart.client_auth import ClientAuth, ClientAuthError
from fhir.smart.discovery import SmartConfiguration

log = logging.getLogger(__name__)


def revoke_tokens(config: SmartConfiguration, tokens: dict[str, Any], *, auth: ClientAuth,
                  http: requests.Session, timeout: float = 5.0) -> int:
    """Revoke the refresh and access token of ``tokens``; returns how many the EHR accepted (HTTP 200)."""
    endpoint = config.revocation_endpoint
    if not endpoint:
        return 0
    done = 0
    for hint in ("refresh_token", "access_token"):
        token = tokens.get(hint)
        if not isinstance(token, str) or not token:
            continue
        data = {"token": token, "token_type_hint": hint}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            auth.apply(data, headers, endpoint)
            resp = http.post(endpoint, data=data, headers=headers, timeout=timeout, allow_redirects=False)
        except (requests.RequestException, ClientAuthError) as exc:
            log.warning("token revocation failed: %s", type(exc).__name__)
            continue
        if resp.status_code == 200:
            done += 1
        else:
            log.warning("token revocation refused (HTTP %s)", resp.status_code)
    return done
