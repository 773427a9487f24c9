"""The app's outbound sessions (fhir/http.py OutboundSession, the OAuth2Session of fhir/smart/oauth.py) take
proxies, no_proxy and the CA bundle from the environment exactly as a plain requests.Session does, and a
changed environment is seen at the next call."""

from __future__ import annotations

import pytest
import requests

from fhir.http import OutboundSession
from fhir.smart.oauth import _oauth
from fhir.url_policy import OutboundPolicy, origin_of

URLS = ["https://ehr.example.org/fhir/Patient/1", "https://auth.example.org:8443/token", "http://127.0.0.1:5000/x",
        "https://internal.example.org/fhir"]
ENVIRONMENTS = [
    {},
    {"HTTPS_PROXY": "http://proxy.example:3128"},
    {"https_proxy": "http://lower.example:3128", "NO_PROXY": "internal.example.org,127.0.0.1"},
    {"ALL_PROXY": "http://all.example:1080", "no_proxy": "*"},
    {"HTTP_PROXY": "http://cgi.example:80", "REQUEST_METHOD": "GET"},  # CGI: HTTP_PROXY is ignored
    {"REQUESTS_CA_BUNDLE": "/etc/hospital-ca.pem"},
    {"CURL_CA_BUNDLE": "/etc/curl-ca.pem", "HTTPS_PROXY": "http://proxy.example:3128"},
]
NAMES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
         "NO_PROXY", "REQUEST_METHOD", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.mark.parametrize("session", [OutboundSession, lambda: _oauth("client", None)])
def test_environment_settings_are_what_requests_computes(monkeypatch, session):
    ours, plain = session(), requests.Session()
    for env in ENVIRONMENTS * 2:  # twice: nothing of the first pass is kept for the second
        for name in NAMES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for url in URLS:
            for verify in (None, True, False, "/own/bundle.pem"):
                assert ours.merge_environment_settings(url, {}, None, verify, None) == \
                    plain.merge_environment_settings(url, {}, None, verify, None), (env, url, verify)
        explicit = {"no_proxy": "ehr.example.org"}  # a per-call no_proxy goes to requests itself
        assert ours.merge_environment_settings(URLS[0], dict(explicit), None, None, None) == \
            plain.merge_environment_settings(URLS[0], dict(explicit), None, None, None)


def test_a_proxy_set_after_the_first_call_is_used(monkeypatch):
    session = OutboundSession()
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    assert "https" not in session.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert session.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"]["https"] == \
        "http://proxy.example:3128"


def test_policy_origins_follow_a_changed_allow_list():
    """The policy's parsed origins are kept per allow-list: a changed list is a different policy."""
    policy = OutboundPolicy(iss_list=["https://ehr.example/fhir"])
    assert policy.refusal("https://ehr.example/x") is None and policy.refusal("https://other.example/x")
    policy.iss_list.append("https://other.example/fhir")
    assert policy.refusal("https://other.example/x") is None
    assert origin_of("https://ehr.example/a b") is None and origin_of("https://ehr.example/\x7f") is None
