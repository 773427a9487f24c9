"""M2 and L9: nothing in browser history or the logs tells which screen was asked or what it found."""

from __future__ import annotations

import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import app_config, default_context
from tests.screening.test_flow import HITS_NEGATIVE, HITS_POSITIVE, bwh_context, da5

pytestmark = pytest.mark.security

NEUTRAL_TITLE = "<title>Health check-in</title>"
TELLING = re.compile(r"HITS|HARK|WAST|PVS|E-HITS|Hurt|Insult|Threaten|Scream|Rape|Kick|Abuse|Danger|DA-5|"
                     r"violence|positive|negative|urgent|result|safety|Peligro", re.I)


def _walk(client, lid: str, screen: dict, *, danger: dict | None = None) -> tuple[list[str], list[str]]:
    """Gate, screen (and the danger check if the app asks it), result: the URL path of every page the
    browser shows (after each redirect) and every <title>."""
    paths: list[str] = []
    titles: list[str] = []

    def show(resp):
        while resp.status_code in (301, 302, 303, 307, 308):
            resp = client.get(resp.headers["Location"])
        assert resp.status_code in (200, 400), resp.status_code
        paths.append(resp.request.path.replace(lid, "<lid>"))
        titles.extend(re.findall(r"<title>.*?</title>", resp.get_data(as_text=True), re.S))
        return resp.get_data(as_text=True)

    show(client.get(f"/l/{lid}/"))
    show(client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes", "action": "start"}))
    page = show(client.post(f"/l/{lid}/screen", data=screen))
    if 'data-instrument="da-5"' in page:
        assert danger is not None, "the danger check was asked after a negative screen"
        show(client.post(re.search(r'<form method="post" action="([^"]+)" class="instrument"', page).group(1),
                         data={"instrument": "da-5", **danger}))
    return paths, titles


@pytest.mark.parametrize("instrument", ["hits", "hark", "wast-short", "pvs", "e-hits"])
def test_every_title_is_neutral(client, make_launch, instrument):
    """M2: every page's <title> (kept by browser history) is the same neutral one, for every instrument."""
    lid = make_launch(client, context=bwh_context())
    client.post(f"/l/{lid}/gate", data={"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
    page = client.get(f"/l/{lid}/screen?instrument={instrument}").get_data(as_text=True)
    assert f'data-instrument="{instrument}"' in page  # the instrument is on the page body ...
    assert re.findall(r"<title>.*?</title>", page, re.S) == [NEUTRAL_TITLE]  # ... not in the title


def test_positive_and_negative_screens_leave_the_same_history(app, make_launch):
    """M2/L9: the sequence of URL paths and titles of a positive screen (with its danger check) is the same as
    a negative screen's: the danger check is asked at /result, posted to /screen, never at a telling path."""
    pos_client, neg_client = app.test_client(), app.test_client()
    pos = _walk(pos_client, make_launch(pos_client, context=bwh_context()), HITS_POSITIVE, danger=da5("weapon"))
    neg = _walk(neg_client, make_launch(neg_client, context=bwh_context()), HITS_NEGATIVE)
    dedupe = [p for i, p in enumerate(pos[0]) if i == 0 or pos[0][i - 1] != p]
    assert dedupe == neg[0] == ["/l/<lid>/", "/l/<lid>/screen", "/l/<lid>/result"]
    assert set(pos[1]) == set(neg[1]) == {NEUTRAL_TITLE}
    for path in pos[0] + neg[0]:
        assert not TELLING.search(path.replace("/result", "")), path


def test_error_and_other_pages_have_the_neutral_title(client, make_launch):
    """M2: error pages, the not-now page and the ready page use the neutral title as well."""
    lid = make_launch(client, context=default_context())
    pages = [client.get("/no/such/page"), client.get("/callback"),
             client.post(f"/l/{lid}/gate", data={"action": "not_now"}, follow_redirects=True)]
    for resp in pages:
        assert re.findall(r"<title>.*?</title>", resp.get_data(as_text=True), re.S) == [NEUTRAL_TITLE]


class _Fhir(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b'{"resourceType": "Patient", "id": "pat-l9-logcheck"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


def test_debug_logging_shows_no_patient_id(tmp_path, caplog):
    """L9: with LOG_LEVEL=DEBUG, a real FHIR read (urllib3 over a socket) logs no request line with the
    patient id: HTTP and OAuth libraries stay at WARNING."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fhir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    iss = f"http://127.0.0.1:{server.server_port}/fhir"
    try:
        from smart_app import create_app

        app = create_app(app_config(f"sqlite:///{tmp_path / 'a.db'}", LOG_LEVEL="DEBUG", ALLOWED_ISS=[iss]))
        caplog.set_level(logging.DEBUG)

        def read() -> list[str]:
            caplog.clear()
            with app.app_context():
                from fhir.client import FhirClient
                from smart_app.launch.ehr import http_session

                got = FhirClient(iss, "tok", session=http_session()).read("Patient", "pat-l9-logcheck")
            assert got["id"] == "pat-l9-logcheck"
            return [r.getMessage() for r in caplog.records if "pat-l9-logcheck" in r.getMessage()]

        assert read() == []
        for name in ("urllib3", "requests_oauthlib", "oauthlib"):
            assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
        # Control: with urllib3 left at DEBUG the same read logs the request line with the id.
        logging.getLogger("urllib3").setLevel(logging.DEBUG)
        try:
            assert any("/fhir/Patient/pat-l9-logcheck" in m for m in read())
        finally:
            logging.getLogger("urllib3").setLevel(logging.WARNING)
    finally:
        server.shutdown()
        server.server_close()
