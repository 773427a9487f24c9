"""The zero-leak go-live check: write a test referral as the app writes one, then read the chart as the patient and
as a proxy, and name everything of it that came back.

The write is the app's own: the note worded by ``smart_app.writeback.note``, the resources this deployment would
plan for a consented referral (``plan_writeback`` with the EHR profile's rules as the deployment narrows them:
every kind the consent page could offer, the optional ones too), and where the deployment allows the neutral
check-in line after a negative screen (``smart_app/writeback/checkin.py``) that note as well, stored in the outbox
and sent by the outbox worker with the site's writer (a test clinician's sign-in, else the backend-services token).
The reads are the portal's: each written resource by id, and the searches a portal runs for the patient's record
(notes, orders, results, problems and diagnoses, encounters, questionnaire answers, messages, tasks). A resource of
the test referral in any answer is a leak; so is any text carrying the referral's reference code.

It runs only against a patient the EHR itself marks as test data (``meta.tag`` v3-ActReason ``HTEST``) and only
with sign-ins whose patient is that patient. Afterwards it deletes what it wrote where the EHR allows a delete, and
names what it had to leave, and removes its own rows from the app's database.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import delete, select

from config.current import settings_of
from config.ehrs import launch_allowed
from config.leakcheck import LeakCheckFile
from fhir.builders import WritebackInput, plan_writeback, reference_code
from fhir.client import FhirClient, FhirError
from smart_app.launch.ehr import http_session, system_client
from smart_app.ops.profiles import profile_for
from smart_app.outbox.enqueue import enqueue
from smart_app.outbox.settings import OutboxSettings
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem, ReferralRecord
from smart_app.store.task_status import CANCELLED
from smart_app.writeback.checkin import line_input
from smart_app.writeback.note import with_note

# HL7 v3-ActReason HTEST "test health data": the EHR's own mark of a test patient.
TEST_DATA = ("http://terminology.hl7.org/CodeSystem/v3-ActReason", "HTEST")
# What a portal shows of a patient's record, by the searches a portal app runs (patient=<id>).
PORTAL_SEARCHES = ("DocumentReference", "ServiceRequest", "Observation", "Condition", "Encounter",
                   "QuestionnaireResponse", "Communication", "Task", "DiagnosticReport")
# A positive screen with no danger answer, as the consent page needs one: the made-up referral's clinical part.
TEST_SCREENING = {"instrument": "hits", "questionnaire": "http://loinc.org/q/95614-4", "version": "1", "score": 15,
                  "interpretation": "positive", "danger": False, "answers": {}}
TEST_PROGRAM = {"service_id": "leak-check", "program": "Leak check test program (not a real referral)"}
# Not sent at once: the check reads, then cleans up, within one run (seconds, not the app's minutes of backoff).
CHECK_OUTBOX = OutboxSettings(max_attempts=3, base_delay=0.2, max_delay=1.0, final_retry_delay=0.0,
                              link_wait_seconds=2.0)
WRITE_SECONDS = 60.0


class Refused(Exception):
    """The check will not run (not a test patient, a sign-in for someone else, an EHR not allowed)."""


class Inconclusive(Exception):
    """The check ran but cannot say (nothing written, a read that failed): never reported as no leak."""


@dataclass
class Written:
    kind: str
    id: str


@dataclass
class Seen:
    viewer: str  # patient | proxy
    how: str  # "read" or the search
    reference: str  # Type/id
    text: str  # what of the test referral it carries


@dataclass
class Report:
    written: list[Written] = field(default_factory=list)
    not_written: list[str] = field(default_factory=list)  # "Kind: reason"
    seen: list[Seen] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "viewer: search answered 403"
    left: list[str] = field(default_factory=list)  # written resources the EHR would not delete

    @property
    def leaked(self) -> bool:
        return bool(self.seen)


@dataclass
class Viewer:
    name: str
    client: FhirClient


def viewers(spec: LeakCheckFile, tokens: dict[str, dict[str, Any]], timeout: float) -> list[Viewer]:
    """A FHIR client per patient-facing sign-in, each checked to be the test patient's."""
    out = []
    for name, token in tokens.items():
        patient = token.get("patient")
        if patient and patient != spec.test_patient.id:
            raise Refused(f"the {name}'s sign-in is for another patient, not the test patient")
        out.append(Viewer(name, FhirClient(spec.iss, token["access_token"], timeout=timeout, session=http_session())))
    return out


def require_test_patient(spec: LeakCheckFile, reader: Viewer) -> None:
    """The EHR marks the patient as test data, read through the patient's own sign-in."""
    try:
        patient = reader.client.read("Patient", spec.test_patient.id)
    except FhirError as exc:
        raise Refused(f"the test patient could not be read with the {reader.name}'s sign-in ({exc.status})") from None
    tags = {(t.get("system"), t.get("code")) for t in (patient.get("meta") or {}).get("tag") or []
            if isinstance(t, dict)}
    if TEST_DATA not in tags:
        raise Refused(f"Patient/{spec.test_patient.id} is not marked as a test patient (meta.tag "
                      f"{TEST_DATA[0]}|{TEST_DATA[1]}): the check never writes to a real patient's chart")


def writer(app: Flask, spec: LeakCheckFile, clinician: dict[str, Any] | None, timeout: float) -> FhirClient:
    if clinician is not None:
        return FhirClient(spec.iss, clinician["access_token"], timeout=timeout, session=http_session())
    try:
        return system_client(spec.iss)
    except Exception as exc:  # noqa: BLE001 - not configured, or the EHR refused: said plainly
        raise Refused(f"no writer: give clinician_token_file, or configure backend_services ({exc})") from None


def write_test_referral(app: Flask, spec: LeakCheckFile, client: FhirClient, report: Report) -> str:
    """Plan, store and send one test referral the way a consent does; returns its referral id."""
    settings = settings_of(app)
    profile = profile_for(app)
    rules = settings.broadly_visible.narrow(profile.write_rules)
    now = datetime.now(UTC)
    with session_scope(app) as db:
        record = ReferralRecord(launch_id=None, iss=spec.iss, profile=profile.ref, status=CANCELLED,
                                created_at=now, reference_code=None)
        db.add(record)
        db.flush()
        record.reference_code = reference_code(record.id)
        inp = with_note(WritebackInput(
            referral_key=record.id, patient_id=spec.test_patient.id, encounter_id=spec.test_patient.encounter,
            author_reference=spec.test_patient.author, author_name=None,
            screening={**TEST_SCREENING, "completed_at": now.isoformat(timespec="seconds")},
            referral={"selected": [TEST_PROGRAM["service_id"]], "results": [TEST_PROGRAM]},
            resources=list(rules.offered), safe_contact={"channel": "none", "note": None}, now=now))
        enqueue(db, referral_id=record.id, launch_id=None, iss=spec.iss, profile=profile,
                plans=plan_writeback(inp, rules), settings=CHECK_OUTBOX)
        rid = record.id
        db.commit()
    _send(app, client, rid, report)
    if not report.written:
        raise Inconclusive("nothing was written, so nothing could leak: the check proves nothing ("
                           + "; ".join(report.not_written) + ")")
    return rid


def write_checkin_line(app: Flask, spec: LeakCheckFile, client: FhirClient, report: Report) -> str | None:
    """Where the deployment allows it, the neutral check-in line as the result page files it (its own outbox key,
    no referral behind it); returns that key, or None when the deployment does not write it."""
    settings = settings_of(app)
    if not settings.neutral_checkin_record:
        return None
    profile = profile_for(app)
    key = secrets.token_urlsafe(24)
    inp = line_input(key, profile, patient_id=spec.test_patient.id, encounter_id=spec.test_patient.encounter,
                     author_reference=spec.test_patient.author, author_name=None)
    with session_scope(app) as db:
        enqueue(db, referral_id=key, launch_id=None, iss=spec.iss, profile=profile,
                plans=plan_writeback(inp, settings.broadly_visible.narrow(profile.write_rules)), settings=CHECK_OUTBOX)
        db.commit()
    _send(app, client, key, report)
    return key


def _send(app: Flask, client: FhirClient, key: str, report: Report) -> None:
    """The outbox worker sends the rows of ``key``; each is named written (with its id) or not."""
    OutboxWorker(app, client_for=lambda _row: client, settings=CHECK_OUTBOX).drain(referral_id=key,
                                                                                  max_seconds=WRITE_SECONDS)
    with session_scope(app) as db:
        for row in db.scalars(select(OutboxItem).where(OutboxItem.referral_id == key).order_by(OutboxItem.id)):
            if row.status == "written" and row.server_id:
                report.written.append(Written(row.kind, row.server_id))
            else:
                report.not_written.append(f"{row.kind}: {row.status} ({row.last_error or 'no answer'})")


def _texts(resource: dict[str, Any]) -> str:
    """The resource as text, with every attachment's data decoded (a note's body travels base64-encoded)."""
    parts = [json.dumps(resource, ensure_ascii=False)]
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, str) and node.get("contentType"):
                try:
                    parts.append(base64.b64decode(data).decode("utf-8", "replace"))
                except ValueError:
                    pass
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return "\n".join(parts)


def carries(resource: dict[str, Any], rid: str, written: list[Written]) -> str | None:
    """What of the test referral ``resource`` carries: itself, a reference to it, its text (the line with the
    reference code or the referral id)."""
    ours = {f"{w.kind}/{w.id}" for w in written}
    ref = f"{resource.get('resourceType')}/{resource.get('id')}"
    text = _texts(resource)
    found = []
    if ref in ours:
        found.append("a resource the check wrote")
    linked = sorted(r for r in ours if r != ref and (f'"{r}"' in text or f'/{r}"' in text))
    if linked:
        found.append("a reference to " + ", ".join(linked))
    code = reference_code(rid)
    lines = text.splitlines()
    line = next((ln for ln in lines if code in ln), None) or next((ln for ln in lines if rid in ln), None)
    if line and (not found or code in line):
        found.append(f"text: {line.strip()[:160]}")
    return "; ".join(found) or None


def read_as(viewer: Viewer, spec: LeakCheckFile, rid: str, report: Report) -> None:
    """Every written resource by id, then the portal's searches; whatever of the test referral comes back."""
    found: dict[str, Seen] = {}
    for item in report.written:
        try:
            resource = viewer.client.read(item.kind, item.id)
        except FhirError as exc:
            if exc.status in (401, 403, 404, 410):
                continue  # not shown to this sign-in
            raise Inconclusive(f"{viewer.name}: reading {item.kind}/{item.id} failed ({exc.status})") from None
        found[f"{item.kind}/{item.id}"] = Seen(viewer.name, "read", f"{item.kind}/{item.id}",
                                              carries(resource, rid, report.written) or "a resource the check wrote")
    for rtype in PORTAL_SEARCHES:
        query = f"{rtype}?patient={spec.test_patient.id}"
        try:
            resources, _complete = viewer.client.search_pages(rtype, {"patient": spec.test_patient.id})
        except FhirError as exc:
            if exc.status in (401, 403, 404):
                report.unreadable.append(f"{viewer.name}: {query} answered {exc.status}")
                continue
            raise Inconclusive(f"{viewer.name}: {query} failed ({exc.status})") from None
        for resource in resources:
            what = carries(resource, rid, report.written)
            ref = f"{resource.get('resourceType')}/{resource.get('id')}"
            if what and ref not in found:
                found[ref] = Seen(viewer.name, query, ref, what)
    report.seen.extend(found.values())


def clean_up(app: Flask, client: FhirClient, rid: str, report: Report, delete_written: bool,
             line_key: str | None = None) -> None:
    """Delete the test writes where the EHR allows it (name what stays), and the check's rows in the app."""
    for item in reversed(report.written) if delete_written else []:
        try:
            client.request("DELETE", f"{item.kind}/{item.id}")
        except FhirError as exc:
            report.left.append(f"{item.kind}/{item.id} (delete answered {exc.status})")
    if not delete_written:
        report.left.extend(f"{w.kind}/{w.id} (cleanup off)" for w in report.written)
    with session_scope(app) as db:
        db.execute(delete(OutboxItem).where(OutboxItem.referral_id.in_([k for k in (rid, line_key) if k])))
        db.execute(delete(ReferralRecord).where(ReferralRecord.id == rid))
        db.commit()


def run(app: Flask, spec: LeakCheckFile, tokens: dict[str, dict[str, Any]],
        clinician: dict[str, Any] | None) -> Report:
    """The whole check; raises Refused or Inconclusive, else the report (``report.leaked``)."""
    settings = settings_of(app)
    if not launch_allowed(spec.iss, settings.allowed_iss, settings):
        raise Refused(f"{spec.iss} is not one of this deployment's allowed_iss")
    timeout = settings.http_timeout_seconds
    readers = viewers(spec, tokens, timeout)
    require_test_patient(spec, readers[0])
    client = writer(app, spec, clinician, timeout)
    report = Report()
    rid = write_test_referral(app, spec, client, report)
    line_key = None
    try:
        line_key = write_checkin_line(app, spec, client, report)
        for viewer in readers:
            read_as(viewer, spec, rid, report)
    finally:
        clean_up(app, client, rid, report, spec.cleanup, line_key)
    return report
