"""Helpers for write-back tests: launches with tokens, referrals enqueued straight into the outbox,
and a small in-memory EHR double for outbox logic that needs exact, scripted failures."""

from __future__ import annotations

import threading
from typing import Any

from config.ehr_profile import EhrProfile
from fhir.builders import WritebackInput, plan_writeback
from fhir.client import FhirError, FhirUnavailable, Response
from sandbox_ehr.harness.launches import add_launch as add_launch
from smart_app.outbox.enqueue import enqueue
from smart_app.outbox.settings import OutboxSettings
from smart_app.store.crypto import encrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import LaunchRecord, ReferralRecord, ReferralSite
from smart_app.writeback.note import with_note

SCREENING = {"instrument": "hits", "questionnaire": "urn:test:hits", "version": "1", "score": 14,
             "interpretation": "positive", "danger": False, "answers": {}, "completed_at": "2026-01-01T10:00:00+00:00"}
REFERRAL = {"site": "mgh-chelsea", "results": [{"service_id": "haven", "program": "HAVEN at MGH",
                                                "phone": "617-724-0054"}],
            "selected": ["haven"], "safe_contact": {"channel": "none", "note": None}}


def add_referral(app, launch_id: str, iss: str, profile: EhrProfile, patient: str = "pat-1",
                 encounter: str | None = None, resources: list[str] | None = None,
                 author: str | None = None) -> str:
    """A consented referral with its writes stored in the outbox (what the consent view does)."""
    with app.app_context(), session_scope(app) as db:
        # Many referrals share one test launch here (one per launch is the consent page's rule, enforced on
        # ReferralRecord.launch_id); the outbox rows carry the launch whose token they use.
        record = ReferralRecord(launch_id=None, iss=iss, profile=profile.ref, site="mgh-chelsea", status="new")
        db.add(record)
        db.flush()
        # The site key a referral from the default context's encounter carries (social-work scope, issue 11).
        db.add(ReferralSite(referral_id=record.id, key="urn:ipv-sandbox:site|mgh-chelsea"))
        # Test data: the score, the referral and the note where the profile offers them (the consent page
        # leaves the score off by default; these outbox tests choose it explicitly).
        default = [r for r in ("Observation", "ServiceRequest", "DocumentReference") if r in profile.offered]
        inp = with_note(WritebackInput(referral_key=record.id, patient_id=patient, encounter_id=encounter,
                                       author_reference=author, author_name=None, screening=dict(SCREENING),
                                       referral=dict(REFERRAL), resources=resources or default))
        record.summary_enc = encrypt_json({"patient_name": "Test Patient", "safe_contact": REFERRAL["safe_contact"]})
        enqueue(db, referral_id=record.id, launch_id=launch_id, iss=iss, profile=profile,
                plans=plan_writeback(inp, profile.write_rules), settings=OutboxSettings.for_app(app, profile))
        return record.id


class FakeEhr:
    """In-memory FHIR server double with conditional create and a script of failures.

    ``script`` is a list consumed one entry per call: None (succeed), an int status (fail with
    it), "timeout", or "after_commit:<status>" / "after_commit:timeout" (apply, then fail).
    ``drop_labels`` strips meta.security. Vendor-like switches (issue 8): ``honour_conditional=False``
    ignores If-None-Exist (a replay files a second copy), ``keep_identifier=False`` drops the identifier,
    ``return_minimal=True`` answers a create without a body (Location only); ``search_status`` makes every
    search fail with that status.
    """

    def __init__(self) -> None:
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.script: list[Any] = []
        self.calls: list[tuple[str, str]] = []
        self.creates: list[str] = []  # identifier value per POST the EHR applied
        self.sent: list[str] = []  # identifier value per POST received (faulted or not)
        self.drop_labels = False
        self.honour_conditional = True
        self.keep_identifier = True
        self.return_minimal = False
        self.search_status: int | None = None
        self.lock = threading.Lock()
        self._n = 0

    def client(self, _row: Any = None) -> FakeEhr:
        return self

    def _fault(self) -> Any:
        return self.script.pop(0) if self.script else None

    @staticmethod
    def _raise(fault: Any) -> None:
        if fault == "timeout":
            raise FhirUnavailable("ReadTimeout")
        if isinstance(fault, int):
            outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid",
                                                                       "diagnostics": "Patient Rosa bad"}]}
            raise FhirError(fault, "fault", outcome, retry_after=0.0 if fault == 429 else None)

    def _match(self, kind: str, query: str) -> list[dict[str, Any]]:
        system, value = query.split("=", 1)[1].split("|", 1)
        out = []
        for (k, _id), res in self.resources.items():
            idents = res.get("identifier")
            idents = idents if isinstance(idents, list) else [idents] if idents else []
            if k == kind and any(i.get("system") == system and i.get("value") == value for i in idents):
                out.append(res)
        return out

    def create(self, resource: dict[str, Any], if_none_exist: str | None = None) -> Response:
        with self.lock:
            self.calls.append(("create", resource["resourceType"]))
            ident = resource["identifier"]
            self.sent.append((ident[0] if isinstance(ident, list) else ident)["value"])
            fault = self._fault()
            after = isinstance(fault, str) and fault.startswith("after_commit:")
            if fault is not None and not after:
                self._raise(fault)
            self.creates.append(self.sent[-1])
            honoured = if_none_exist and self.honour_conditional
            found = self._match(resource["resourceType"], if_none_exist) if honoured else []
            if found:
                stored, status = found[0], 200
            else:
                self._n += 1
                stored = dict(resource, id=f"r{self._n}", meta=dict(resource.get("meta") or {}, versionId="1"))
                if self.drop_labels:
                    stored["meta"].pop("security", None)
                if not self.keep_identifier:
                    stored.pop("identifier", None)
                self.resources[(resource["resourceType"], stored["id"])] = stored
                status = 201
            if after:
                tail = fault.split(":")[1]
                self._raise(tail if tail == "timeout" else int(tail))
            body = None if self.return_minimal else stored
            return Response(status, body, f"{resource['resourceType']}/{stored['id']}/_history/1", None)

    def read(self, kind: str, rid: str) -> dict[str, Any]:
        with self.lock:
            self.calls.append(("read", kind))
            self._raise(self._fault())
            return self.resources[(kind, rid)]

    def search(self, kind: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.lock:
            self.calls.append(("search", kind))
            if self.search_status:
                self._raise(self.search_status)
            params = params or {}
            if "identifier" in params:
                return self._match(kind, "identifier=" + params["identifier"])
            out = []
            for (k, _id), res in self.resources.items():
                if k != kind:
                    continue
                subject = (res.get("subject") or {}).get("reference")
                if "patient" in params and subject != f"Patient/{params['patient']}":
                    continue
                if "type" in params:
                    codes = {f"{c.get('system')}|{c.get('code')}" for c in (res.get("type") or {}).get("coding", [])}
                    if params["type"] not in codes:
                        continue
                out.append(res)
            return out

    def count(self, kind: str) -> int:
        return sum(1 for (k, _i) in self.resources if k == kind)


def set_tokens(app, launch_id: str, tokens: dict[str, Any]) -> None:
    with app.app_context(), session_scope(app) as db:
        db.get(LaunchRecord, launch_id).tokens_enc = encrypt_json(tokens)


# Conditional create searches (If-None-Exist): the write scopes need "s" as well as "c".
WRITE_SCOPE = ("launch patient/Patient.r patient/Encounter.r patient/DocumentReference.crs patient/ServiceRequest.crs "
               "patient/Observation.crs patient/QuestionnaireResponse.cs patient/Task.crus")


def sandbox_token(sandbox, patient: str, encounter: str | None = None, lifetime: int = 3600) -> str:
    """A sandbox access token issued directly (no browser): contract of sandbox_ehr.authstore."""
    from sandbox_ehr.authstore import issue_access_token

    with sandbox.app.app_context():
        return issue_access_token("ipv-screen-jwt", WRITE_SCOPE, patient=patient, encounter=encounter,
                                  lifetime=lifetime)


def consent(client, lid: str, **form: Any):
    """Consent as the page does it: ask the server's preview for the digest of exactly these choices
    (what the page shows), then POST consent with that digest. Returns the consent POST's response."""
    data = {"shown": "1", **form}
    data.pop("consent", None)
    preview = client.post(f"/l/{lid}/consent/preview", data=data)
    assert preview.status_code == 200, preview.status_code
    return client.post(f"/l/{lid}/consent", data={**data, "consent": form.get("consent", "yes"),
                                                  "digest": preview.get_json()["digest"]})
