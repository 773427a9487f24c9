"""Discovery: .well-known first, CapabilityStatement fallback, per-issuer cache with TTL."""

from __future__ import annotations

import pytest

from fhir.smart.discovery import OAUTH_URIS, DiscoveryCache, DiscoveryError, fetch_configuration
from tests.launch.fakes import FakeAdapter

ISS = "https://ehr.example/fhir"
WELL_KNOWN = {
    "issuer": ISS, "jwks_uri": "https://ehr.example/jwks",
    "authorization_endpoint": "https://ehr.example/authorize", "token_endpoint": "https://ehr.example/token",
    "capabilities": ["launch-ehr", "client-public"], "code_challenge_methods_supported": ["S256"],
}
CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "rest": [{"mode": "server", "security": {"extension": [{"url": OAUTH_URIS, "extension": [
        {"url": "authorize", "valueUri": "https://old.example/auth"},
        {"url": "token", "valueUri": "https://old.example/token"},
    ]}]}}],
}


def test_well_known_is_used_first():
    fake = FakeAdapter()
    fake.add("GET", f"{ISS}/.well-known/smart-configuration", (200, WELL_KNOWN))
    config = fetch_configuration(ISS + "/", http=fake.session())
    assert config.token_endpoint == "https://ehr.example/token"
    assert config.jwks_uri == "https://ehr.example/jwks"
    assert config.supports("launch-ehr") and config.source == "well-known"
    assert [c.url for c in fake.calls] == [f"{ISS}/.well-known/smart-configuration"]


def test_falls_back_to_capability_statement():
    fake = FakeAdapter()
    fake.add("GET", f"{ISS}/metadata", (200, CAPABILITY))
    config = fetch_configuration(ISS, http=fake.session())
    assert config.authorization_endpoint == "https://old.example/auth"
    assert config.token_endpoint == "https://old.example/token"
    assert config.source == "capability-statement"
    assert len(fake.calls) == 2


def test_unusable_well_known_falls_back_too():
    fake = FakeAdapter()
    fake.add("GET", f"{ISS}/.well-known/smart-configuration", (200, {"issuer": ISS}))
    fake.add("GET", f"{ISS}/metadata", (200, CAPABILITY))
    assert fetch_configuration(ISS, http=fake.session()).source == "capability-statement"


@pytest.mark.parametrize("metadata", [(404, {}), (200, {"resourceType": "Patient"}), (200, "<html>"),
                                      (200, {"resourceType": "CapabilityStatement", "rest": [{}]})])
def test_no_configuration_is_a_clear_error(metadata):
    fake = FakeAdapter()
    fake.add("GET", f"{ISS}/metadata", metadata)
    with pytest.raises(DiscoveryError):
        fetch_configuration(ISS, http=fake.session())


def test_cache_per_issuer_with_ttl():
    fake = FakeAdapter()
    fake.add("GET", f"{ISS}/.well-known/smart-configuration", (200, WELL_KNOWN))
    other = "https://other.example/fhir"
    fake.add("GET", f"{other}/.well-known/smart-configuration", (200, {**WELL_KNOWN, "issuer": other}))
    now = [1000.0]
    cache = DiscoveryCache(ttl_seconds=60, clock=lambda: now[0])
    http = fake.session()
    first = cache.get(ISS, http=http)
    assert cache.get(ISS + "/", http=http) is first  # trailing slash: same issuer
    assert len(fake.calls) == 1
    cache.get(other, http=http)
    assert len(fake.calls) == 2  # cached per issuer
    now[0] += 61
    cache.get(ISS, http=http)
    assert len(fake.calls) == 3  # expired: fetched again


def test_a_fallback_taken_because_the_well_known_answered_unusable_is_not_kept():
    """An EHR mid-change answers its well-known document with wrong types: this launch uses its CapabilityStatement,
    and the next reads the well-known again, so the repaired document (with its JWKS) is used at once."""
    fake = FakeAdapter()
    fake.add("GET", f"{ISS}/.well-known/smart-configuration", (200, {**WELL_KNOWN, "token_endpoint": 42}))
    fake.add("GET", f"{ISS}/metadata", (200, CAPABILITY))
    cache = DiscoveryCache(ttl_seconds=3600)
    http = fake.session()
    assert cache.get(ISS, http=http).source == "capability-statement"
    fake.add("GET", f"{ISS}/.well-known/smart-configuration", (200, WELL_KNOWN))
    repaired = cache.get(ISS, http=http)
    assert repaired.source == "well-known" and repaired.jwks_uri == WELL_KNOWN["jwks_uri"]
    assert cache.get(ISS, http=http) is repaired  # the good document is kept as before


def test_a_v1_server_without_a_well_known_document_is_kept():
    fake = FakeAdapter()
    fake.add("GET", f"{ISS}/metadata", (200, CAPABILITY))
    cache = DiscoveryCache(ttl_seconds=3600)
    http = fake.session()
    first = cache.get(ISS, http=http)
    assert cache.get(ISS, http=http) is first and first.source == "capability-statement"
