"""Per-call headers on an outbound ``requests`` session, from a provider the caller passes in.

The app sends its request id to the EHR as ``X-Request-ID`` on every FHIR and OAuth call (discovery, token,
JWKS, style, FHIR REST), so an EHR's logs and ours can be joined. This module knows nothing of the app: the
caller passes a function returning the headers for the call being made (read at send time, so one shared
session serves every request and thread). Mounted as a transport adapter, so it also applies to any
``requests.Session`` subclass (requests-oauthlib's ``OAuth2Session``) given the same adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import requests
from requests.adapters import HTTPAdapter

HeaderProvider = Callable[[], Mapping[str, str]]


class HeaderAdapter(HTTPAdapter):
    """An HTTPAdapter that adds the provider's headers to each prepared request (existing ones win)."""

    def __init__(self, provider: HeaderProvider, **kwargs):
        super().__init__(**kwargs)
        self.provider = provider

    def send(self, request: requests.PreparedRequest, *args, **kwargs) -> requests.Response:
        for name, value in (self.provider() or {}).items():
            if value and name not in request.headers:
                request.headers[name] = value
        return super().send(request, *args, **kwargs)


def add_header_provider(session: requests.Session, provider: HeaderProvider) -> requests.Session:
    """Mount a HeaderAdapter for http:// and https:// on ``session``; returns the session."""
    adapter = HeaderAdapter(provider)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
