"""A failed write is classified by what is known of it, on an EHR that forbids the DocumentReference search (the
epic personality), where an unknown outcome can only end as "check the chart".

Not applied, for certain (sent again as a plain create, and it lands once): the EHR answered 503 or 429 itself,
the connection was refused, the TLS handshake failed. Unknown (never re-sent blindly; here: check the chart): a
504 or 502 from a gateway, a connection dropped once the request was sent, a 500 after the EHR filed it."""

from __future__ import annotations

import socket
import threading

import pytest
import requests
import yaml
from sqlalchemy import select

from config.checks import check_config
from config.deployment import DEPLOYMENTS_DIR
from config.settings import load_settings
from fhir.client import FhirClient, FhirUnavailable
from fhir.http import DeadlineBeforeSend, DeadlineExceeded, EhrBusy, never_sent
from sandbox_ehr.harness.live import LiveServer
from sandbox_ehr.harness.vendor import consent_many, start
from smart_app.outbox import retry
from smart_app.outbox.state import CHECK, PENDING, WRITTEN
from smart_app.outbox.worker import OutboxWorker

pytestmark = [pytest.mark.ops, pytest.mark.vendor]

NOT_APPLIED_ANSWERS = {"503 from the EHR": {"error_rate": 1.0, "statuses": [503]},
                       "429 from the EHR": {"error_rate": 1.0, "statuses": [429]}}
UNKNOWN_ANSWERS = {"504 from a gateway": {"timeout_rate": 1.0, "timeout_seconds": 0.05},
                   "502 from a gateway": {"error_rate": 1.0, "statuses": [502]},
                   "connection dropped after sending": {"timeout_rate": 1.0, "timeout_seconds": 0.05,
                                                        "timeout_action": "drop"}}


# The epic personality's registered APIs without the DocumentReference search (a site that did not register it).
NO_NOTE_SEARCH = ["Patient.read", "Encounter.read", "DocumentReference.create", "DocumentReference.read"]


@pytest.fixture
def env(tmp_path):
    environment = start("epic", tmp_path)
    environment.sandbox.config["SANDBOX_REGISTERED_APIS"] = NO_NOTE_SEARCH
    consent_many(environment, 1)
    yield environment
    environment.close()


def the_note(env):
    from smart_app.store.db import session_scope
    from smart_app.store.models import OutboxItem

    with env.app.app_context(), session_scope(env.app) as db:
        row = db.scalars(select(OutboxItem).where(OutboxItem.kind == "DocumentReference")).one()
        db.expunge(row)
        return row


def one_try(env) -> None:
    assert OutboxWorker(env.app).run_once().claimed == 1


def sent_again_and_landed_once(env) -> None:
    row = the_note(env)
    assert row.status == PENDING and not row.outcome_unknown, (row.status, row.last_error)
    env.faults()
    env.drain()
    row = the_note(env)
    assert row.status == WRITTEN, (row.status, row.last_error)
    assert len(env.documents()) == 1


@pytest.mark.parametrize("answer", NOT_APPLIED_ANSWERS)
def test_an_ehr_that_is_not_taking_writes_filed_nothing_so_the_write_is_sent_again(env, answer):
    env.faults(**NOT_APPLIED_ANSWERS[answer], apply_to="writes")
    one_try(env)
    assert len(env.documents()) == 0
    sent_again_and_landed_once(env)


def test_a_refused_connection_sent_nothing_so_the_write_is_sent_again(env):
    port = env.server.port
    env.server.stop()  # nothing listens on the EHR's port: the connection is refused
    try:
        one_try(env)
        assert "nothing was sent" in the_note(env).last_error
    finally:
        env.server = LiveServer(env.sandbox, port=port).start()
    sent_again_and_landed_once(env)


def test_an_earlier_unknown_outcome_is_not_forgotten_when_later_sends_are_refused(tmp_path):
    """The note is filed but its answer is a 500; every later send meets a 429. The last word is not "not in the
    chart" (it is there): an EHR's refusal of a later send says nothing of the earlier one."""
    env = start("generic", tmp_path, OUTBOX_MAX_ATTEMPTS=3)  # honours If-None-Exist: no search before a re-send
    try:
        consent_many(env, 1)
        env.faults(fail_after_commit_rate=1.0, apply_to="writes")
        one_try(env)
        env.faults(error_rate=1.0, statuses=[429], apply_to="writes")
        env.drain()
        row = the_note(env)
        assert row.status == CHECK, (row.status, row.last_error)
        assert len(env.documents()) == 1
    finally:
        env.close()


@pytest.mark.parametrize("answer", UNKNOWN_ANSWERS)
def test_an_answer_that_leaves_the_outcome_unknown_is_never_sent_again_blindly(env, answer):
    env.faults(**UNKNOWN_ANSWERS[answer], apply_to="writes")
    one_try(env)
    row = the_note(env)
    assert row.outcome_unknown, (row.status, row.last_error)
    env.faults()
    env.drain()
    assert the_note(env).status == CHECK  # the search is forbidden here: a person checks the chart
    assert len(env.documents()) == 0


def test_a_write_filed_before_its_500_is_never_sent_twice(env):
    env.faults(fail_after_commit_rate=1.0, apply_to="writes")
    one_try(env)
    assert the_note(env).outcome_unknown
    env.faults()
    env.drain()
    assert the_note(env).status == CHECK and len(env.documents()) == 1


def _answering_server(answer: bytes) -> tuple[socket.socket, int]:
    """A server that reads each request and sends ``answer`` (raw bytes on the socket), then closes the connection."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _plain_http_server() -> tuple[socket.socket, int]:
    """A server that speaks plain HTTP: an https:// call to it fails in the TLS handshake."""
    return _answering_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def _dropping_server() -> tuple[socket.socket, int]:
    """A server that reads the request and closes the connection in the middle of its answer."""
    return _answering_server(b"HTTP/1.1 201 Created\r\nContent-Type: application/fhir+json\r\n"
                             b"Content-Length: 500\r\n\r\n{\"resourceType\"")


def _create_error(base: str) -> FhirUnavailable:
    client = FhirClient(base, "token", timeout=5)
    with pytest.raises(FhirUnavailable) as caught:
        client.create({"resourceType": "DocumentReference", "status": "current"})
    return caught.value


def test_a_tls_failure_or_a_refused_connection_is_not_applied_a_cut_answer_is_unknown():
    srv, port = _plain_http_server()
    try:
        tls = _create_error(f"https://127.0.0.1:{port}/fhir")
    finally:
        srv.close()
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    refused = _create_error(f"http://127.0.0.1:{closed_port}/fhir")
    assert not tls.sent and not retry.maybe_applied(tls) and retry.transient(tls)
    assert not refused.sent and not retry.maybe_applied(refused) and retry.transient(refused)
    srv, port = _dropping_server()
    try:
        cut = _create_error(f"http://127.0.0.1:{port}/fhir")
    finally:
        srv.close()
    assert cut.sent and retry.maybe_applied(cut)


@pytest.mark.parametrize("path", sorted(DEPLOYMENTS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_a_shipped_deployment_asks_for_online_access_where_its_ehr_gives_refresh_tokens(path):
    settings = load_settings({"IPV_DEPLOYMENT": str(path)})
    if settings.profile.online_access:
        assert "online_access" in settings.scopes_ehr.split(), "a write after the launch token expires would fail"
    assert not [p for p in check_config(settings) if p.setting == "online_access"]


def test_check_config_warns_when_the_ehr_gives_refresh_tokens_and_the_deployment_does_not_ask(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"client_id": "ipv-screen-site-1", "allowed_iss": ["https://fhir.hospital.test/r4"],
                                    "ehr_profile": "epic", "scopes_ehr": "launch openid fhirUser"}))
    found = [p for p in check_config(load_settings({"IPV_DEPLOYMENT": str(path)})) if p.setting == "online_access"]
    assert [p.level for p in found] == ["warning"] and "epic" in found[0].message


def test_a_call_refused_by_the_bulkhead_or_out_of_time_before_it_began_was_never_sent():
    assert never_sent(EhrBusy("full")) and never_sent(DeadlineBeforeSend("no time left"))
    assert not never_sent(DeadlineExceeded("outlasted")) and not never_sent(requests.ReadTimeout())
    assert not never_sent(requests.exceptions.ChunkedEncodingError()) and not never_sent(requests.TooManyRedirects())
