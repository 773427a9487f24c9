"""One outbound session serves every user and launch of a process (smart_app/launch/ehr.py), and the OAuth session
sends through the same transports: neither may carry state from one call to the next that the call did not
bring. An EHR's Set-Cookie is not sent back on later calls (it would tie different users' requests together),
and ~/.netrc never replaces the bearer token's Authorization header (requests reads it when a call has no auth).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from fhir.http import OutboundSession
from fhir.smart.oauth import _oauth

pytestmark = pytest.mark.security


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/landing")
        else:
            self.send_response(200)
            self.send_header("Set-Cookie", "EHRSESSION=patient-of-the-first-call; Path=/")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _plain_http(monkeypatch):
    # oauthlib refuses http:// on its own; the app's sandbox runs allow it the same way (fhir/smart/oauth.py).
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


SESSIONS = {"outbound": OutboundSession, "oauth": lambda: _oauth("client", None), "plain requests": requests.Session}


@pytest.mark.parametrize("kind", SESSIONS)
def test_a_cookie_set_by_the_ehr_is_not_sent_on_later_calls(server, kind):
    session = SESSIONS[kind]()
    session.get(f"{server}/first", timeout=5)
    session.get(f"{server}/second", timeout=5)
    sent = "cookie" in _Recorder.seen[1]
    # The plain session is the control: it proves the server's cookie would be sent back.
    assert sent is (kind == "plain requests")


@pytest.mark.parametrize("kind", SESSIONS)
@pytest.mark.parametrize("path", ["/direct", "/redirect"])
def test_netrc_never_replaces_the_bearer_token(server, kind, path, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password from-the-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    session = SESSIONS[kind]()
    session.get(f"{server}{path}", headers={"Authorization": "Bearer the-launch-token"}, timeout=5)
    got = [h.get("authorization") for h in _Recorder.seen]
    if kind == "plain requests":  # the control: requests puts the netrc login in place of the token
        assert got[0].startswith("Basic ")
    else:
        assert got[0] == "Bearer the-launch-token"
        # Same host after the redirect: the token stays, and no netrc login takes its place.
        assert all(value == "Bearer the-launch-token" for value in got)
