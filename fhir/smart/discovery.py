"""SMART discovery: ``{iss}/.well-known/smart-configuration``, falling back to the
CapabilityStatement's ``oauth-uris`` security extension (``{iss}/metadata``).

Results are cached per issuer for a TTL (thread-safe, in-process): an EHR launch
happens many times a day, the configuration rarely changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests

from fhir import json_depth
from fhir.errors import FhirWireError
from fhir.http import not_answering
from fhir.smart.ttl_cache import RefreshingCache

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


class DiscoveryError(FhirWireError):
    """The issuer's SMART configuration could not be read (message is safe to show)."""


@dataclass(frozen=True)
class SmartConfiguration:
    iss: str
    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None  # OpenID issuer (id_token ``iss``), when the server says
    jwks_uri: str | None = None
    revocation_endpoint: str | None = None  # RFC 7009, when the server advertises one
    capabilities: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    token_endpoint_auth_methods_supported: tuple[str, ...] = ()
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] = ()
    source: str = "well-known"  # well-known | capability-statement
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Read from the CapabilityStatement because the well-known document answered but could not be used: most likely
    # an EHR mid-change, so it serves this launch and is not kept (a kept one would pin the EHR's broken moment,
    # without its JWKS, on every launch until it expired).
    provisional: bool = field(default=False, compare=False)

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities


def normalize_iss(iss: str) -> str:
    """Issuers compare exactly, ignoring one trailing slash."""
    return iss.strip().rstrip("/")


def fetch_configuration(iss: str, *, http: requests.Session | None = None,
                        timeout: float = 10.0) -> SmartConfiguration:
    """Read the SMART configuration of ``iss`` (no cache)."""
    base = normalize_iss(iss)
    http = http or requests.Session()
    try:
        resp = http.get(f"{base}/.well-known/smart-configuration", headers={"Accept": "application/json"},
                        timeout=timeout)
        unusable = resp.status_code == 200
        if resp.status_code == 200:
            doc = _json(resp)
            if doc and all(isinstance(doc.get(k), str) and doc[k] for k in ("authorization_endpoint",
                                                                            "token_endpoint")):
                return _from_well_known(base, doc)
        # 404 or an unusable document: SMART v1 servers publish endpoints in the CapabilityStatement.
        resp = http.get(f"{base}/metadata", headers={"Accept": "application/fhir+json"}, timeout=timeout)
    except requests.RequestException as exc:  # timeouts, connections, cut answers, redirect loops
        raise DiscoveryError(f"The EHR at {base} is not answering ({not_answering(exc)}). "
                             "Try again in a minute.") from None
    if resp.status_code != 200:
        raise DiscoveryError(f"The EHR at {base} publishes no SMART configuration (HTTP {resp.status_code}).")
    cap = _json(resp)
    if not cap or cap.get("resourceType") != "CapabilityStatement":
        raise DiscoveryError(f"The EHR at {base} publishes no SMART configuration.")
    return _from_capability_statement(base, cap, provisional=unusable)


def _json(resp: requests.Response) -> dict[str, Any] | None:
    try:
        doc = json_depth.loads(resp.content)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _from_well_known(base: str, doc: dict[str, Any]) -> SmartConfiguration:
    return SmartConfiguration(
        iss=base,
        authorization_endpoint=str(doc["authorization_endpoint"]),
        token_endpoint=str(doc["token_endpoint"]),
        issuer=_str(doc.get("issuer")),
        jwks_uri=_str(doc.get("jwks_uri")),
        revocation_endpoint=_str(doc.get("revocation_endpoint")),
        capabilities=_tuple(doc.get("capabilities")),
        code_challenge_methods_supported=_tuple(doc.get("code_challenge_methods_supported")),
        token_endpoint_auth_methods_supported=_tuple(doc.get("token_endpoint_auth_methods_supported")),
        token_endpoint_auth_signing_alg_values_supported=_tuple(
            doc.get("token_endpoint_auth_signing_alg_values_supported")),
        source="well-known",
        raw=doc,
    )


def _from_capability_statement(base: str, cap: dict[str, Any], *, provisional: bool = False) -> SmartConfiguration:
    uris: dict[str, str] = {}
    for rest in _dicts(cap.get("rest")):
        security = rest.get("security") if isinstance(rest.get("security"), dict) else {}
        for ext in _dicts(security.get("extension")):
            if ext.get("url") != OAUTH_URIS:
                continue
            for sub in _dicts(ext.get("extension")):
                if isinstance(sub, dict) and isinstance(sub.get("url"), str) and isinstance(sub.get("valueUri"), str):
                    uris[sub["url"]] = sub["valueUri"]
    if "authorize" not in uris or "token" not in uris:
        raise DiscoveryError(f"The EHR at {base} publishes no SMART authorization endpoints.")
    return SmartConfiguration(
        iss=base,
        authorization_endpoint=uris["authorize"],
        token_endpoint=uris["token"],
        revocation_endpoint=uris.get("revoke"),
        # v1 servers did not advertise PKCE; we send S256 anyway (servers ignore unknown params).
        source="capability-statement",
        raw={"oauth-uris": uris},
        provisional=provisional,
    )


class DiscoveryCache:
    """Per-issuer cache with expiry, refreshed ahead in the background (fhir/smart/ttl_cache.py)."""

    def __init__(self, ttl_seconds: float = 3600, clock=time.monotonic):
        self.ttl = ttl_seconds
        self._cache: RefreshingCache[SmartConfiguration] = RefreshingCache(ttl_seconds, clock=clock)

    def get(self, iss: str, *, http: requests.Session | None = None, timeout: float = 10.0,
            ttl_seconds: float | None = None) -> SmartConfiguration:
        key = normalize_iss(iss)
        config = self._cache.get(key, lambda: fetch_configuration(key, http=http, timeout=timeout),
                                 ttl_seconds=ttl_seconds)
        if config.provisional:
            self._cache.discard(key)
        return config

    def clear(self) -> None:
        self._cache.clear()
