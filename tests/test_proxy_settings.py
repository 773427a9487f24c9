"""TRUSTED_PROXY_HOPS (werkzeug ProxyFix) and TRUSTED_HOSTS, at the HTTP level (over real TLS and nginx:
tests/tls/)."""

from __future__ import annotations

import pytest
from flask import request

from smart_app import create_app
from tests.conftest import app_config


def _app(tmp_path, **extra):
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", **extra))
    app.add_url_rule("/_seen", "seen", lambda: {"secure": request.is_secure, "host": request.host,
                                                "remote": request.remote_addr})
    return app


def test_forwarded_headers_are_ignored_without_a_trusted_proxy(tmp_path):
    client = _app(tmp_path).test_client()
    seen = client.get("/_seen", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "6.6.6.6",
                                         "X-Forwarded-Host": "evil.test"}).json
    assert seen == {"secure": False, "host": "localhost", "remote": "127.0.0.1"}


def test_one_trusted_hop_takes_the_proxys_headers(tmp_path):
    client = _app(tmp_path, TRUSTED_PROXY_HOPS=1).test_client()
    seen = client.get("/_seen", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "6.6.6.6, 10.0.0.9",
                                         "X-Forwarded-Host": "ipv.hospital.test"}).json
    # Only the last hop (the one proxy) is believed: a client-sent X-Forwarded-For entry is not.
    assert seen == {"secure": True, "host": "ipv.hospital.test", "remote": "10.0.0.9"}


@pytest.mark.parametrize("headers, status", [
    ({"Host": "ipv.hospital.test"}, 200),
    ({"Host": "evil.test"}, 400),
    ({"Host": "evil.test", "X-Forwarded-Host": "ipv.hospital.test"}, 200),  # the trusted proxy's view
    ({"Host": "ipv.hospital.test", "X-Forwarded-Host": "evil.test"}, 400),
])
def test_trusted_hosts_behind_a_proxy(tmp_path, headers, status):
    client = _app(tmp_path, TRUSTED_HOSTS=["ipv.hospital.test"], TRUSTED_PROXY_HOPS=1).test_client()
    assert client.get("/_seen", headers=headers).status_code == status
