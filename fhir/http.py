"""Per-call headers on an outbound ``requests`` session, from a provider the caller passes in.

The app sends its request id to the EHR as ``X-Request-ID`` on every FHIR and OAuth call (discovery, token,
JWKS, style, FHIR REST), so an EHR's logs and ours can be joined. This module knows nothing of the app: the
caller passes a function returning the headers for the call being made (read at send time, so one shared
session serves every request and thread). Mounted as a transport adapter, so it also applies to any
``requests.Session`` subclass (requests-oauthlib's ``OAuth2Session``) given the same adapter.

Also here: ``OutboundSession`` and its ``NoAmbientState``: one session serves every user's calls, so it keeps
no cookies an EHR sets and takes no credentials from ~/.netrc.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http.cookiejar import DefaultCookiePolicy

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar

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


def no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An ``auth`` that adds nothing: given, it keeps requests from filling in credentials of its own."""
    return request


class NoAmbientState:
    """Mixin for a ``requests.Session`` shared by every user and launch of a process.

    - Cookies: an EHR's ``Set-Cookie`` on one user's call would otherwise be sent with every later user's calls
      to that host (a session cookie tying patients' requests together). The jar's policy accepts none.
    - ~/.netrc: requests fills in credentials from it when a call carries no ``auth`` (and again after a
      redirect), replacing the bearer token's Authorization header with the file's login for that host.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cookies = RequestsCookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        if not request.auth and not self.auth:
            request.auth = no_auth  # an auth is given, so requests does not look in ~/.netrc
        return super().prepare_request(request)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        # requests' own, without its ~/.netrc lookup: credentials are dropped when a redirect leaves the host.
        headers = prepared_request.headers
        if "Authorization" in headers and self.should_strip_auth(response.request.url, prepared_request.url):
            del headers["Authorization"]


class OutboundSession(NoAmbientState, requests.Session):
    """The app's outbound session class: a requests.Session keeping no cookies and reading no ~/.netrc."""
