"""Outbound URL policy: the only hosts this app talks to.

- An origin (scheme, host, port) is reachable only if it is the origin of an allow-listed ``iss`` or a
  deployment lists it explicitly (an authorization server on another host, ``OUTBOUND_HOSTS``).
- ``https`` only, except where ``allow_http`` is set (the bundled sandbox EHR, loopback test servers).
- No redirect to another origin (the EHR's discovery document cannot send us, or our client secret,
  elsewhere); same-origin redirects are followed up to a small limit.
- FHIR URLs (``fhirUser``, references) must sit under the ``iss`` base after normalisation: dot segments
  (``..``, ``.``, also percent-encoded) are refused, never resolved.

Enforced in a requests transport adapter, so every call made through the app's HTTP session (discovery,
token, JWKS, revocation, FHIR, ``smart_style_url``) passes the same check, including each redirect hop.
Nothing here imports from ``smart_app``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote, urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REDIRECTS = 3


class OutboundPolicyError(requests.exceptions.ConnectionError):
    """A request the policy refuses; never sent. (A ConnectionError, so every caller that already
    handles "the EHR did not answer" fails closed the same way.)"""


Origin = tuple[str, str, int]
# Control characters, space and DEL: one regex scan, not a Python loop per character (every outbound call
# checks its URL, and the policy its allow-list).
_CTL_SPACE_DEL = re.compile(r"[\x00-\x20\x7f]")
_CTL_SPACE = re.compile(r"[\x00-\x20]")


def origin_of(url: str) -> Origin | None:
    """(scheme, lower-case host, port) of an absolute http(s) URL; None if it is not one."""
    if not isinstance(url, str) or _CTL_SPACE_DEL.search(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host or parts.username is not None or parts.password is not None:
        return None
    if not host.isascii():
        return None
    return scheme, host, port or DEFAULT_PORTS[scheme]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _has_dot_segment(path: str) -> bool:
    decoded = unquote(unquote(path))  # %2e%2e and %252e%252e alike
    return any(seg in (".", "..") for seg in decoded.replace("\\", "/").split("/"))


def under_base(url: str, base: str) -> bool:
    """True when ``url`` is ``base`` itself or a path below it (same origin, no dot segments)."""
    u, b = origin_of(url), origin_of(base)
    if u is None or b is None or u != b:
        return False
    upath = urlsplit(url).path
    bpath = urlsplit(base).path.rstrip("/")
    if _has_dot_segment(upath):
        return False
    return upath == bpath or upath.startswith(bpath + "/")


def safe_relative(reference: str) -> bool:
    """A relative FHIR reference/path without dot segments, scheme or authority."""
    if not isinstance(reference, str) or not reference or reference.startswith(("/", "\\")):
        return False
    if ":" in reference.split("/", 1)[0] or _CTL_SPACE.search(reference):
        return False
    return not _has_dot_segment(reference.split("?", 1)[0])


@dataclass
class OutboundPolicy:
    """Which origins the app may call. ``iss_list``: allow-listed FHIR bases; ``extra``: origins a
    deployment lists (``https://auth.example.org`` or a bare host, meaning https on 443)."""

    iss_list: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    allow_http: bool = False
    allow_loopback: bool = False  # the bundled sandbox EHR runs on a local port chosen at start

    def origins(self) -> frozenset[Origin]:
        return _origins(tuple(self.iss_list), tuple(self.extra))

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be called, or None when it may."""
        origin = origin_of(url)
        if origin is None:
            return "not an absolute http(s) URL"
        if origin[0] != "https" and not (self.allow_http or is_loopback(origin[1])):
            return "plain http outside the sandbox"
        if origin not in self.origins() and not (self.allow_loopback and is_loopback(origin[1])):
            return f"host {origin[1]} is not derived from the allow-listed EHRs"
        return None

    def check(self, url: str) -> None:
        reason = self.refusal(url)
        if reason:
            raise OutboundPolicyError(f"outbound call refused: {reason}")


@lru_cache(maxsize=64)
def _origins(iss_list: tuple[str, ...], extra: tuple[str, ...]) -> frozenset[Origin]:
    """The origins an allow-list names, parsed once per distinct list (the policy is checked on every call)."""
    out: set[Origin] = set()
    for item in [*iss_list, *extra]:
        item = (item or "").strip()
        if not item:
            continue
        origin = origin_of(item if "://" in item else f"https://{item}")
        if origin:
            out.add(origin)
    return frozenset(out)


class PolicyAdapter(BaseAdapter):
    """Wraps a transport adapter: refuses URLs outside the policy and cross-origin redirects."""

    def __init__(self, inner: BaseAdapter | None, policy: Callable[[], OutboundPolicy]):
        super().__init__()
        self.inner = inner or HTTPAdapter()
        self.policy = policy

    def send(self, request, **kwargs):  # noqa: ANN001 - requests' adapter signature
        self.policy().check(request.url)
        response = self.inner.send(request, **kwargs)
        if response.is_redirect:
            target = requests.compat.urljoin(request.url, response.headers.get("Location", ""))
            if origin_of(target) != origin_of(request.url):
                raise OutboundPolicyError("outbound call refused: redirect to another host", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def enforce(session: requests.Session, policy: Callable[[], OutboundPolicy]) -> requests.Session:
    """Put every transport of ``session`` behind the policy (idempotent) and cap redirects."""
    for prefix, adapter in list(session.adapters.items()):
        if not isinstance(adapter, PolicyAdapter):
            session.adapters[prefix] = PolicyAdapter(adapter, policy)
        else:
            adapter.policy = policy
    session.max_redirects = MAX_REDIRECTS
    return session


def share_transport(source: requests.Session, target: requests.Session) -> requests.Session:
    """Let ``target`` (an OAuth2Session) send through ``source``'s adapters (and so its policy)."""
    target.adapters = source.adapters
    target.headers.update({k: v for k, v in source.headers.items() if k.lower() == "user-agent"})
    target.max_redirects = source.max_redirects
    return target


def hosts_from(values: Iterable[str]) -> list[str]:
    return [v.strip() for v in values if v and v.strip()]
