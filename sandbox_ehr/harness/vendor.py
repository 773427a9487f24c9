"""A live sandbox EHR in one vendor personality and the app configured for it (the EHR profile and scopes of that
vendor, as ``python -m sandbox_ehr.demo --personality`` wires them), and the clinician's journey at HTTP level:
EHR launch -> private gate -> HITS -> danger check -> referral list -> consent (preview + digest) -> the outbox
worker -> what the EHR keeps in its store."""

from __future__ import annotations

import base64
import html
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.fernet import Fernet

from sandbox_ehr.harness.live import LiveServer

PERSONALITIES = ("generic", "epic", "oracle")
# HITS positive (3 + 5 + 2 + 5 = 15 > 10) and a danger check with no danger answer.
HITS_POSITIVE = {"instrument": "hits", "q-hurt": "LA6482-9", "q-insult": "LA16644-9", "q-threaten": "LA10082-8",
                 "q-scream": "LA10066-1"}
NO = "LA32-8"
DANGER_NONE = {f"q-{i}": NO for i in ("escalation", "weapon", "strangulation", "jealousy", "fear-for-life")}
# (patient, encounter) pairs of the seed data with an encounter (Epic needs one), sandbox_ehr/README.md. Many
# patients: a real chart does not hold hundreds of these notes, and the app's search before a re-send reads at most
# one page of a patient's notes.
PATIENTS = [("pat-alice", "enc-alice-bwh"), ("pat-carmen", "enc-carmen-sjphc"), ("pat-joana", "enc-joana-chelsea"),
            ("pat-dana", "enc-dana-faulkner"), ("pat-ellen", "enc-ellen-brookside"),
            ("pat-fatima", "enc-fatima-whittier"), ("pat-grace", "enc-grace-mgh"),
            ("pat-marisol", "enc-marisol-revere"), ("pat-hana", "enc-hana-baystate"), ("pat-june", "enc-june-bwh"),
            ("pat-lucia", "enc-lucia-bwh"), ("pat-marcus", "enc-marcus-mgh"), ("pat-river", "enc-river-sjphc")]
SCREENING = {"instrument": "hits", "questionnaire": "urn:test:hits", "version": "1", "score": 14,
             "interpretation": "positive", "danger": False, "answers": {},
             "completed_at": "2026-01-01T10:00:00+00:00"}
REFERRAL = {"site": "mgh-chelsea", "selected": ["haven"],
            "results": [{"service_id": "haven", "program": "HAVEN at MGH", "phone": "617-724-0054"}]}
# What each vendor grants the app (what a launch's token response says), v1 spelling.
GRANTED = {"generic": "launch patient/Patient.r patient/Encounter.r patient/DocumentReference.crs "
                      "patient/ServiceRequest.crs patient/Observation.crs",
           "epic": "launch patient/Patient.read patient/Encounter.read patient/DocumentReference.read "
                   "patient/DocumentReference.write",
           "oracle": "launch patient/Patient.read patient/Encounter.read user/DocumentReference.read "
                     "user/DocumentReference.write"}
FAST = {"OUTBOX_BASE_DELAY": 0.001, "OUTBOX_MAX_DELAY": 0.005, "OUTBOX_FINAL_RETRY_DELAY": 0.0,
        "OUTBOX_LEASE_SECONDS": 30, "HTTP_TIMEOUT_SECONDS": 5.0}


@dataclass
class VendorEnv:
    personality: str
    sandbox: Any  # the sandbox Flask app
    server: LiveServer
    app: Any  # the IPV app (Flask), talking to the sandbox over real HTTP
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def iss(self) -> str:
        return self.server.url + "/fhir"

    def close(self) -> None:
        self.server.stop()
        self.app.extensions["db_engine"].dispose()
        self.sandbox.extensions["sandbox_store"].close()

    # --- the EHR's side ---------------------------------------------------------------------------------------

    def faults(self, **settings: Any) -> None:
        self.sandbox.extensions["sandbox_faults"].configure(settings)

    def documents(self, patient: str | None = None) -> list[dict[str, Any]]:
        """Every DocumentReference the EHR keeps (for one patient), straight from its store."""
        from sandbox_ehr.store import get_store

        with self.sandbox.app_context():
            params = {"patient": [patient]} if patient else {}
            return get_store(self.sandbox).search("DocumentReference", params)

    def kept(self) -> dict[str, int]:
        """How many resources of each written type the EHR keeps."""
        from sandbox_ehr.store import get_store

        with self.sandbox.app_context():
            store = get_store(self.sandbox)
            return {t: store.count(t) for t in ("DocumentReference", "ServiceRequest", "Observation",
                                                   "QuestionnaireResponse", "Task")}

    def calls(self) -> list[dict[str, Any]]:
        from sandbox_ehr.fhir_api import calls

        return calls(self.sandbox)

    # --- the app's side ---------------------------------------------------------------------------------------

    def drain(self, max_seconds: float = 60.0) -> Any:
        from smart_app.outbox.worker import OutboxWorker

        return OutboxWorker(self.app).drain(max_seconds=max_seconds)


def note_text(doc: dict[str, Any]) -> str:
    return base64.b64decode(doc["content"][0]["attachment"]["data"]).decode("utf-8")


def start(personality: str, tmp_path: Path, db_url: str | None = None, **app_config: Any) -> VendorEnv:
    """A sandbox EHR with this personality on a free port and the app wired to it (as the demo wires them)."""
    from sandbox_ehr.app import create_sandbox_app
    from sandbox_ehr.demo import deployment_for
    from smart_app import create_app

    sandbox = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp_path / f"sandbox-{personality}.db"),
                                  "SANDBOX_PERSONALITY": personality})
    server = LiveServer(sandbox)
    sandbox.config["SANDBOX_BASE_URL"] = server.url
    server.start()
    iss = server.url + "/fhir"
    config = {
        "TESTING": True, "DATABASE_URL": db_url or f"sqlite:///{tmp_path / 'app.db'}",
        "SECRET_KEY": secrets.token_urlsafe(16), "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "WTF_CSRF_ENABLED": False, "SESSION_COOKIE_SECURE": False,
        **deployment_for(personality, iss), **FAST, **app_config,
    }
    try:
        app = create_app(config)
    except Exception:
        server.stop()
        raise
    return VendorEnv(personality, sandbox, server, app)


class Journey:
    """One clinician's visit through the app's pages (Flask test client; the app calls the EHR over HTTP)."""

    def __init__(self, env: VendorEnv, client: Any | None = None):
        self.env = env
        self.client = client or env.app.test_client()
        self.lid = ""

    def launch(self, patient: str, encounter: str | None, practitioner: str = "prac-avery") -> str:
        import requests

        form = {"practitioner": practitioner, "patient": patient, "encounter": encounter or "",
                "need_patient_banner": "1"}
        resp = requests.post(self.env.server.url + "/ehr/launch", data=form, allow_redirects=False, timeout=10)
        assert resp.status_code == 303, resp.text
        launch = re.search(r"[?&]launch=([^&]+)", resp.headers["Location"]).group(1)
        start_ = self.client.get(f"/launch?iss={quote(self.env.iss)}&launch={launch}")
        assert start_.status_code == 302, start_.get_data(as_text=True)[:500]
        at_ehr = requests.get(start_.headers["Location"], allow_redirects=False, timeout=10)
        assert at_ehr.status_code == 302, at_ehr.text
        back = at_ehr.headers["Location"]
        assert "error=" not in back, back
        done = self.client.get("/callback?" + back.split("?", 1)[1])
        match = re.search(r"/l/([^/]+)/", done.headers.get("Location", ""))
        assert done.status_code == 302 and match, (done.status_code, done.get_data(as_text=True)[:800])
        self.lid = match.group(1)
        return self.lid

    def post(self, path: str, data: dict[str, Any]) -> Any:
        return self.client.post(f"/l/{self.lid}{path}", data=data)

    def screen_positive(self) -> None:
        r = self.post("/gate", {"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
        assert r.status_code == 302, r.get_data(as_text=True)[:500]
        # The danger check answers go with the screen too, for a layout that asks both on one page.
        r = self.post("/screen", {**HITS_POSITIVE, **DANGER_NONE})
        assert r.status_code == 302, r.get_data(as_text=True)[:500]
        if r.headers["Location"].endswith("/more"):
            assert self.post("/more", DANGER_NONE).status_code == 302
        assert self.client.get(f"/l/{self.lid}/result").status_code == 200

    def choose_program(self) -> str:
        page = self.client.get(f"/l/{self.lid}/referrals").get_data(as_text=True)
        service = re.search(r'data-service="([^"]+)"', page).group(1)
        assert self.post("/referrals", {"action": "save", "selected": service}).status_code == 302
        return service

    def choices(self, channel: str = "none", contact_note: str = "", detailed: bool = False,
                detail_text: str = "", resources: list[str] | None = None) -> dict[str, Any]:
        form: dict[str, Any] = {"shown": "1", "channel": channel}
        if contact_note:
            form["contact_note"] = contact_note
        if detailed:
            form["detailed"] = "yes"
            form["detail_text"] = detail_text
        form["resources"] = self.default_resources() if resources is None else resources
        return form

    def default_resources(self) -> list[str]:
        """What the consent page ticks before the clinician changes anything (a browser submits these)."""
        page = self.client.get(f"/l/{self.lid}/consent").get_data(as_text=True)
        ticked = re.findall(r'<input type="checkbox" name="resources" value="([^"]+)"\s+checked', page)
        return sorted(set(ticked))

    def consent_page_note(self, form: dict[str, Any]) -> str | None:
        """The note text exactly as the consent page shows it (the no-JavaScript "Update preview" answer)."""
        page = self.post("/consent", {**form, "action": "preview"}).get_data(as_text=True)
        match = re.search(r'<pre[^>]*data-testid="note-preview"[^>]*>(.*?)</pre>', page, re.S)
        return html.unescape(match.group(1)) if match else None

    def preview(self, form: dict[str, Any]) -> dict[str, Any]:
        resp = self.post("/consent/preview", form)
        assert resp.status_code == 200, resp.status_code
        return resp.get_json()

    def consent(self, form: dict[str, Any], digest: str | None = None) -> Any:
        digest = digest or self.preview(form)["digest"]
        # These suites refer the same seed patients' visits many times on purpose: the explicit choice a
        # second referral for a visit needs (issue 11) is made here.
        return self.post("/consent", {**form, "consent": "yes", "digest": digest, "second_referral": "yes"})

    def referral_id(self) -> str | None:
        from smart_app.store.db import session_scope
        from smart_app.store.models import ReferralRecord

        with self.env.app.app_context(), session_scope(self.env.app) as db:
            record = db.query(ReferralRecord).filter_by(launch_id=self.lid).one_or_none()
            return record.id if record else None


def stored_launch(env, patient: str, encounter: str) -> tuple[str, str]:
    """A launch as the callback stores it (context + the vendor's token), bound to a browser id."""
    import secrets

    from sandbox_ehr import authstore
    from sandbox_ehr.harness.launches import default_context, store_launch

    with env.sandbox.app_context():
        access = authstore.issue_access_token("ipv-screen-jwt", GRANTED[env.personality], patient=patient,
                                              encounter=encounter, fhir_user="Practitioner/prac-avery",
                                              lifetime=4 * 3600)
    ctx = default_context(scope=GRANTED[env.personality])
    ctx["patient"] = {**ctx["patient"], "id": patient}
    ctx["encounter"] = {**ctx["encounter"], "id": encounter}
    ctx["user"] = {"reference": "Practitioner/prac-avery", "name": "Dr. Avery Testdoctor", "roles": ["clinician"]}
    bid = secrets.token_urlsafe(24)
    lid = store_launch(env.app, bid=bid, context=ctx, iss=env.iss,
                       tokens={"access_token": access, "token_type": "Bearer", "scope": GRANTED[env.personality]},
                       data={"screening": dict(SCREENING), "referral": dict(REFERRAL)})
    return lid, bid


def consent_many(env, n: int, resources: list[str] | None = None) -> list[float]:
    """n consents through the app's consent page (preview digest, then POST), one launch each; returns each
    consent POST's duration in seconds (figures for the bench, never asserted)."""
    import time

    durations = []
    for i in range(n):
        patient, encounter = PATIENTS[i % len(PATIENTS)]
        lid, bid = stored_launch(env, patient, encounter)
        client = env.app.test_client()
        with client.session_transaction() as sess:
            sess["bid"] = bid
        form = {"shown": "1", "channel": ("none", "phone", "email")[i % 3],
                "resources": resources or ["DocumentReference"]}
        digest = client.post(f"/l/{lid}/consent/preview", data=form).get_json()["digest"]
        began = time.perf_counter()
        # The same seed visits are referred many times on purpose: the explicit second-referral choice (issue 11).
        resp = client.post(f"/l/{lid}/consent", data={**form, "consent": "yes", "digest": digest,
                                                       "second_referral": "yes"})
        durations.append(time.perf_counter() - began)
        assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    return durations
