"""Exactly once without conditional create, bounded read-back, shutdown, profile by path (issue 8).

Against the scripted FakeEhr (tests/writeback/support.py) switched to behave like the vendors' documented
rules: If-None-Exist ignored (Epic: conditionalCreate false), identifier and labels dropped (Oracle),
creates answered without a body. Counts are what the fake EHR holds, not what the app believes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, update

from config.ehr_profile import EhrProfile, RestrictedNoteTypeMissing
from fhir.builders import writable
from smart_app import create_app
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem
from tests.conftest import app_config
from tests.writeback.support import FakeEhr, add_launch, add_referral

ISS = "http://ehr.test/fhir"
PROFILES = Path(__file__).resolve().parents[2] / "config" / "ehr_profiles"
RESTRICTED = {"system": "urn:site:note-type", "code": "SW-CONF", "display": "Confidential social work note"}


def profile_file(tmp_path, base: str, **changes) -> str:
    """A site's own profile file (a path, not a bundled name), derived from a bundled one."""
    raw = yaml.safe_load((PROFILES / f"{base}.yaml").read_text())
    raw.update(changes, restricted_note_type=RESTRICTED)
    path = tmp_path / f"site-{base}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def rows(app):
    with app.app_context(), session_scope(app) as db:
        return list(db.scalars(select(OutboxItem).order_by(OutboxItem.id)))


def one_note(app, tmp_path, base="epic", **changes):
    ref = profile_file(tmp_path, base, **changes)
    profile = EhrProfile.load(ref)
    lid = add_launch(app, ISS, "tok", encounter="enc-1")
    add_referral(app, lid, ISS, profile, encounter="enc-1", author="Practitioner/prac-1",
                 resources=["DocumentReference"])
    (row,) = rows(app)
    assert row.profile == ref  # stored as the path: the worker reloads it from there
    return row


def vendor_ehr() -> FakeEhr:
    ehr = FakeEhr()
    ehr.honour_conditional = False  # Epic: conditionalCreate false; a replay files a second note
    ehr.keep_identifier = False
    ehr.return_minimal = True
    return ehr


@pytest.mark.parametrize("base", ["epic", "oracle-health"])
def test_timeout_after_commit_is_found_by_its_reference_code_not_sent_again(fast_app, tmp_path, base):
    ehr = vendor_ehr()
    ehr.script = ["after_commit:timeout"]  # the EHR filed it; the answer never came
    one_note(fast_app, tmp_path, base)
    worker = OutboxWorker(fast_app, client_for=ehr.client)
    worker.run_once()
    (row,) = rows(fast_app)
    assert row.status == "pending" and row.outcome_unknown
    worker.drain()
    (row,) = rows(fast_app)
    assert row.status == "written" and not row.outcome_unknown
    assert ehr.count("DocumentReference") == 1 and len(ehr.sent) == 1  # searched, never re-sent
    assert ("search", "DocumentReference") in ehr.calls


def test_5xx_after_commit_is_found_not_duplicated(fast_app, tmp_path):
    ehr = vendor_ehr()
    ehr.script = ["after_commit:500"]
    one_note(fast_app, tmp_path)
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app)
    assert row.status == "written" and ehr.count("DocumentReference") == 1 and len(ehr.sent) == 1


def test_timeout_before_the_ehr_filed_it_is_resent_once_the_search_proves_it_absent(fast_app, tmp_path):
    ehr = vendor_ehr()
    ehr.script = ["timeout"]
    one_note(fast_app, tmp_path)
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app)
    assert row.status == "written" and ehr.count("DocumentReference") == 1 and len(ehr.sent) == 2


def test_refusal_is_not_an_unknown_outcome(fast_app, tmp_path):
    ehr = vendor_ehr()
    ehr.script = [422]
    one_note(fast_app, tmp_path)
    worker = OutboxWorker(fast_app, client_for=ehr.client)
    worker.run_once()
    (row,) = rows(fast_app)
    assert row.status == "pending" and row.final_retry and not row.outcome_unknown
    worker.drain()
    assert rows(fast_app)[0].status == "written" and ehr.count("DocumentReference") == 1
    assert ("search", "DocumentReference") not in ehr.calls  # a refusal needs no search


def test_worker_killed_mid_send_then_the_row_is_searched_for_not_resent(fast_app, tmp_path):
    ehr = vendor_ehr()
    row = one_note(fast_app, tmp_path)
    dead = OutboxWorker(fast_app, client_for=ehr.client, worker_id="killed")
    with fast_app.app_context(), session_scope(fast_app) as db:
        dead.claim(db)
        # What the worker did before it died: marked the outcome unknown, then the EHR filed the note.
        db.execute(update(OutboxItem).values(outcome_unknown=True))
    from smart_app.store.crypto import decrypt_json
    with fast_app.app_context():
        ehr.create(decrypt_json(rows(fast_app)[0].resource_enc))
    with fast_app.app_context(), session_scope(fast_app) as db:
        db.execute(update(OutboxItem).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app)
    assert row.status == "written" and ehr.count("DocumentReference") == 1 and len(ehr.sent) == 1


def test_search_not_allowed_marks_check_the_chart_and_never_resends(fast_app, tmp_path, make_launch):
    ehr = vendor_ehr()
    ehr.script = ["after_commit:timeout"]
    ehr.search_status = 403
    one_note(fast_app, tmp_path)
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app)
    assert row.status == "check" and "check the chart" in row.last_error and "HTTP 403" in row.last_error
    assert len(ehr.sent) == 1 and ehr.count("DocumentReference") == 1
    with fast_app.test_request_context():
        from smart_app.outbox.status import row_view

        view = row_view(row)
    assert view["state"] == "check" and "Check the chart" in view["text"]


def test_unknown_outcome_then_sign_in_gone_is_check_the_chart_not_failed(fast_app, tmp_path):
    ehr = vendor_ehr()
    ehr.script = ["after_commit:timeout"]
    one_note(fast_app, tmp_path)
    OutboxWorker(fast_app, client_for=ehr.client).run_once()

    def gone(_row):
        from smart_app.outbox.clients import AuthGone
        raise AuthGone("the visit's EHR sign-in is gone")

    OutboxWorker(fast_app, client_for=gone).drain(max_seconds=5)
    (row,) = rows(fast_app)
    assert row.status == "check" and "nothing was written" not in row.last_error


def test_identifier_search_where_the_ehr_keeps_identifiers_but_ignores_if_none_exist(fast_app, tmp_path):
    ehr = FakeEhr()
    ehr.honour_conditional = False
    ehr.script = ["after_commit:500"]
    one_note(fast_app, tmp_path, "sandbox", honours_conditional_create=False, identifier_kept=True)
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app)
    assert row.status == "written" and ehr.count("DocumentReference") == 1 and len(ehr.sent) == 1


def test_labels_dropped_by_the_ehr_the_note_is_protected_by_its_type_and_not_read_back(fast_app, tmp_path):
    ehr = vendor_ehr()
    ehr.drop_labels = True
    one_note(fast_app, tmp_path, "oracle-health")
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    (row,) = rows(fast_app)
    assert row.status == "written" and row.label_status == "note_type"
    assert ("read", "DocumentReference") not in ehr.calls
    (doc,) = [r for (k, _i), r in ehr.resources.items() if k == "DocumentReference"]
    assert doc["type"]["coding"] == [RESTRICTED]
    assert doc["content"][0]["attachment"]["contentType"] == "text/plain;charset=utf-8"
    assert doc["context"]["period"]["end"] and "T" in doc["context"]["period"]["start"]
    assert doc["author"] == [{"reference": "Practitioner/prac-1"}] and doc["docStatus"] == "final"


def test_labels_verified_from_the_create_answer_without_a_read_back(fast_app):
    ehr = FakeEhr()  # honours Prefer: return=representation
    lid = add_launch(fast_app, ISS, "tok")
    add_referral(fast_app, lid, ISS, EhrProfile.load("sandbox"), resources=["DocumentReference"])
    OutboxWorker(fast_app, client_for=ehr.client).drain()
    assert rows(fast_app)[0].label_status == "ok" and ("read", "DocumentReference") not in ehr.calls


@pytest.mark.parametrize(("faults", "reads"), [([None, 403], 1), ([None, 404], 1), ([None, 503, 503, 503, 503], 3)])
def test_read_back_is_bounded(fast_app, faults, reads):
    ehr = FakeEhr()
    ehr.return_minimal = True
    ehr.script = list(faults)
    lid = add_launch(fast_app, ISS, "tok")
    add_referral(fast_app, lid, ISS, EhrProfile.load("sandbox"), resources=["DocumentReference"])
    OutboxWorker(fast_app, client_for=ehr.client).drain(max_seconds=30)
    (row,) = rows(fast_app)
    assert row.status == "written" and row.label_status == "unchecked"
    assert ehr.calls.count(("read", "DocumentReference")) == reads


def test_shutdown_finishes_the_send_in_flight_and_releases_the_rest(fast_app):
    ehr = FakeEhr()
    lid = add_launch(fast_app, ISS, "tok")
    profile = EhrProfile.load("sandbox")
    for _ in range(3):
        add_referral(fast_app, lid, ISS, profile, resources=["DocumentReference"])
    worker = OutboxWorker(fast_app, client_for=ehr.client)
    original = ehr.create

    def create_then_sigterm(resource, if_none_exist=None):
        worker.stopping.set()  # SIGTERM arrives while the first write is on the wire
        return original(resource, if_none_exist)

    ehr.create = create_then_sigterm
    worker.run_once()
    states = sorted((r.status, r.attempts, r.claimed_by) for r in rows(fast_app))
    assert states == [("pending", 0, None), ("pending", 0, None), ("written", 1, None)]
    assert len(ehr.sent) == 1


def test_startup_refuses_a_profile_that_cannot_protect_the_note(tmp_path):
    config = app_config(f"sqlite:///{tmp_path / 'a.db'}", EHR_PROFILE="oracle-health")
    with pytest.raises(RestrictedNoteTypeMissing, match="restricted_note_type"):
        create_app(config)
    app = create_app({**config, "RESTRICTED_NOTE_TYPE": "urn:site:note-type|SW-CONF|Confidential"})
    with app.app_context():
        from smart_app.ops.profiles import current_profile

        assert current_profile().document_type["code"] == "SW-CONF"
    app.extensions["db_engine"].dispose()


def test_granted_scope_narrows_what_is_offered_and_says_why():
    epic = EhrProfile.load("epic").write_rules
    offer = writable(epic, "launch patient/DocumentReference.read", has_encounter=True, has_author=True)
    assert offer.kinds == () and offer.not_offered["DocumentReference"] == ("scope", "patient/DocumentReference.write")
    offer = writable(epic, "patient/DocumentReference.write", has_encounter=False, has_author=True)
    assert offer.not_offered["DocumentReference"] == ("encounter", "")
    offer = writable(epic, "patient/DocumentReference.write", has_encounter=True, has_author=True)
    assert offer.kinds == ("DocumentReference",) and offer.not_offered["ServiceRequest"] == ("ehr", "")
    oracle = EhrProfile.load("oracle-health").write_rules
    # Provider-context create needs user/ scopes: a patient/ write scope is not enough.
    assert writable(oracle, "patient/DocumentReference.write", has_encounter=True, has_author=True).kinds == ()
    assert writable(oracle, "user/DocumentReference.write", has_encounter=True, has_author=False).not_offered[
        "DocumentReference"] == ("author", "")
    sandbox = EhrProfile.load("sandbox").write_rules
    offer = writable(sandbox, "patient/DocumentReference.cs patient/ServiceRequest.c patient/Task.crus",
                     has_encounter=True, has_author=True)
    assert offer.kinds == ("ServiceRequest", "DocumentReference", "Task")
    assert offer.not_offered["Observation"] == ("scope", "patient/Observation.c")


def test_unknown_conditional_create_is_read_from_the_capability_statement(fast_app):
    class Client:
        base_url = "http://ehr.test/fhir"

        def __init__(self, statement):
            self.statement = statement
            self.calls = 0

        def capabilities(self):
            self.calls += 1
            return self.statement

    generic = EhrProfile.load("generic-smart2")  # honours_conditional_create: unknown
    worker = OutboxWorker(fast_app)
    yes = Client({"rest": [{"resource": [{"type": "DocumentReference", "conditionalCreate": True},
                                         {"type": "Task"}]}]})
    assert worker.honours_conditional_create(generic, yes, "DocumentReference")
    assert not worker.honours_conditional_create(generic, yes, "Task")  # not declared = not honoured
    assert yes.calls == 1  # read once per server
    assert not OutboxWorker(fast_app).honours_conditional_create(generic, Client({}), "DocumentReference")
    assert not worker.honours_conditional_create(EhrProfile.load("epic"), yes, "DocumentReference")
