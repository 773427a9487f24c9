"""Per-call headers on an outbound ``requests`` session, from a provider the caller passes in.

The app sends its request id to the EHR as ``X-Request-ID`` on every FHIR and OAuth call (discovery, token,
JWKS, style, FHIR REST), so an EHR's logs and ours can be joined. This module knows nothing of the app: the
caller passes a function returning the headers for the call being made (read at send time, so one shared
session serves every request and thread). Mounted as a transport adapter, so it also applies to any
``requests.Session`` subclass (requests-oauthlib's ``OAuth2Session``) given the same adapter.

Also here: ``OutboundSession``, a session that reads the proxy and CA-bundle environment once per origin
(requests re-reads the whole environment on every call), with the same result; and ``NoAmbientState``: one
session serves every user's calls, so it keeps no cookies an EHR sets and takes no credentials from ~/.netrc.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies

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


# requests reads the proxy variables (and no_proxy) and the CA bundle from the environment on every call,
# scanning all of os.environ twice (~0.2 ms a call). What it computes depends only on the URL's origin and a
# few variables, so it is kept per origin and recomputed by requests itself whenever one of them changes.
_ENV_KEYS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
             "NO_PROXY", "REQUEST_METHOD", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
_env_cache: dict[tuple, tuple[dict[str, str], str | None]] = {}


def _environment(url: str) -> tuple[dict[str, str], str | None]:
    parts = urlsplit(url)
    key = (parts.scheme, parts.netloc, tuple(os.environ.get(k) for k in _ENV_KEYS))
    found = _env_cache.get(key)
    if found is None:
        if len(_env_cache) > 256:  # a changing environment (tests) must not grow this without bound
            _env_cache.clear()
        found = (get_environ_proxies(url), os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"))
        _env_cache[key] = found
    return found


class EnvironmentOnce:
    """Mixin for a ``requests.Session`` (or subclass): ``merge_environment_settings`` as requests does it, the
    environment part looked up per origin (``_environment``) instead of re-read on every call."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # noqa: ANN001, ANN201
        if not self.trust_env or (proxies or {}).get("no_proxy"):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        env_proxies, ca_bundle = _environment(url)
        if proxies is not None:
            for k, v in env_proxies.items():
                proxies.setdefault(k, v)
        if verify is True or verify is None:
            verify = ca_bundle or verify
        return {"proxies": merge_setting(proxies, self.proxies), "stream": merge_setting(stream, self.stream),
                "verify": merge_setting(verify, self.verify), "cert": merge_setting(cert, self.cert)}


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


class OutboundSession(NoAmbientState, EnvironmentOnce, requests.Session):
    """The app's outbound session class: a requests.Session with the environment read once per origin, keeping
    no cookies and reading no ~/.netrc."""
