"""Logs, request ids and metrics: JSON lines without PHI, capped and single-line; X-Request-ID reaches the EHR on
every call; SQL parameters never appear in errors; /metrics is protected and labels routes by template."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask, jsonify, request
from sqlalchemy.exc import IntegrityError

from config.current import replace_settings
from sandbox_ehr.harness.live import LiveServer
from smart_app.launch.ehr import fhir_client_for, http_session
from smart_app.launch.state import Launch
from smart_app.ops.observability import launch_ref
from smart_app.store.db import session_scope
from smart_app.store.models import LaunchRecord, UsedCode
from tests.writeback.support import REFERRAL, SCREENING

pytestmark = pytest.mark.ops
DOWN_ISS = "http://127.0.0.1:9/fhir"
PHI = ("Rosa Test", "TEST-1", "pat-test", "02150", "1990-04-02", "LA-secret-answer")


@pytest.fixture
def log_lines():
    """The app's own log handler, pointed at a buffer; yields a function returning the parsed lines."""
    root = logging.getLogger()
    handler = next(h for h in root.handlers if getattr(h, "_ipv_handler", False))
    buffer = io.StringIO()
    old_stream, old_level = handler.setStream(buffer), root.level
    root.setLevel(logging.DEBUG)
    try:
        yield lambda: [line for line in buffer.getvalue().splitlines() if line.strip()]
    finally:
        handler.setStream(old_stream)
        root.setLevel(old_level)


def test_a_whole_journey_logs_json_lines_without_phi(app, make_launch, log_lines):
    client = app.test_client()
    data = {"screening": dict(SCREENING, answers={"95618-5": {"code": "LA-secret-answer"}}), "referral": REFERRAL}
    lid = make_launch(client, data=data, iss=DOWN_ISS)
    client.get(f"/l/{lid}/result")
    client.get(f"/l/{lid}/consent")
    client.post(f"/l/{lid}/consent", data={"consent": "yes", "channel": "none"})
    client.get("/callback?state=not-a-launch&code=x")  # a refused launch is logged
    with app.test_request_context(f"/l/{lid}/result"):
        app.preprocess_request()
        logging.getLogger("ipv.test").info("page served")
    lines = log_lines()
    assert len(lines) >= 2
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message", "request_id", "launch"} <= set(record)
        assert not any(value in line for value in PHI), line
        assert lid not in line  # the launch id itself never; its hash may appear
    records = [json.loads(line) for line in lines]
    assert any(r["message"].startswith("launch refused") and r["request_id"] != "-" for r in records)
    assert records[-1]["launch"] == launch_ref(lid) and records[-1]["request_id"] != "-"


def test_fields_are_single_line_stripped_and_capped(app, log_lines):
    forged = 'EHR says \r\n{"level": "CRITICAL", "message": "forged"}\u202eevil\x00' + "x" * 5000
    logging.getLogger("ipv.test\nforged").warning("error_description: %s", forged)
    [line] = log_lines()
    record = json.loads(line)
    assert "\n" not in record["message"] and "\r" not in record["message"] and "\u202e" not in record["message"]
    assert "\x00" not in record["message"] and len(record["message"]) <= 1001
    assert record["logger"] == "ipv.test forged"


def test_request_id_from_proxy_is_kept_or_replaced(client):
    assert client.get("/healthz", headers={"X-Request-ID": "lb-42.a_b"}).headers["X-Request-ID"] == "lb-42.a_b"
    for bad in ("has space", "x" * 65, "semi;colon", "\u00e9t\u00e9"):
        rid = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert rid != bad and len(rid) == 32


def test_x_request_id_is_sent_on_every_ehr_call(app):
    """Discovery/token/JWKS/FHIR all go through the app's one session: a fake EHR records what it receives."""
    seen: list[tuple[str, str | None]] = []
    ehr = Flask("fake-ehr")

    @ehr.route("/fhir/<path:path>", methods=["GET", "POST"])
    def anything(path):
        seen.append((path, request.headers.get("X-Request-ID")))
        return jsonify({"resourceType": "Patient", "id": "p1"})

    server = LiveServer(ehr).start()
    try:
        with app.test_request_context("/healthz", headers={"X-Request-ID": "req-abc"}):
            app.preprocess_request()
            http_session().get(server.url + "/fhir/.well-known/smart-configuration", timeout=5)
            with session_scope(app) as db:
                record = LaunchRecord(state="s-x", browser_id="b", iss=server.url + "/fhir", status="active",
                                      expires_at=datetime.now(UTC) + timedelta(hours=1))
                launch = Launch(record)
                launch.set_tokens({"access_token": "t", "token_type": "Bearer"})
                db.add(record)
            fhir_client_for(launch).read("Patient", "p1")
        with app.test_request_context("/healthz"):
            app.preprocess_request()
            http_session().get(server.url + "/fhir/metadata", timeout=5)
    finally:
        server.stop()
    assert seen[0] == (".well-known/smart-configuration", "req-abc")
    assert seen[1] == ("Patient/p1", "req-abc")
    assert seen[2][0] == "metadata" and seen[2][1] and seen[2][1] != "req-abc"


def test_sql_parameters_never_appear_in_database_errors(app):
    with app.app_context(), session_scope(app) as db:
        db.add(UsedCode(code_hash="SECRET-PARAM-VALUE"))
    with pytest.raises(IntegrityError) as info, app.app_context(), session_scope(app) as db:
        db.add(UsedCode(code_hash="SECRET-PARAM-VALUE"))
    assert "SECRET-PARAM-VALUE" not in str(info.value)
    assert "hidden due to hide_parameters" in str(info.value)


def test_metrics_need_the_bearer_token_and_label_routes_by_template(app, make_launch):
    client = app.test_client()
    assert client.get("/metrics").status_code == 404  # no token configured: not served
    replace_settings(app, METRICS_TOKEN="scrape-secret")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    lid = make_launch(client, data={"screening": dict(SCREENING), "referral": REFERRAL}, iss=DOWN_ISS)
    client.get(f"/l/{lid}/result")
    client.post(f"/l/{lid}/consent", data={"consent": "yes", "channel": "none"})
    resp = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert resp.status_code == 200 and "Set-Cookie" not in resp.headers
    body = resp.get_data(as_text=True)
    assert 'ipv_http_requests_total{method="GET",route="/l/<lid>/result",status="200"}' in body
    assert "ipv_http_request_duration_seconds_bucket" in body
    assert 'ipv_access_events_total{action="view_result"}' in body
    assert "ipv_outbox_depth " in body and "ipv_outbox_oldest_age_seconds " in body
    assert 'ipv_outbox_rows{status="pending"}' in body and 'ipv_outbox_label_rows{label_status="flagged"}' in body
    assert lid not in body and "pat-test" not in body
