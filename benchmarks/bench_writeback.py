"""Chart write-back throughput against the live sandbox EHR, with and without injected faults.

Prints referrals per second through the outbox (N referrals, each from its own launch, W worker threads;
each referral = the profile's default resources, ServiceRequest + DocumentReference) and the EHR round trips per
referral (every HTTP call the app made: creates, read-backs, searches, retries; the CapabilityStatement read
once per worker is counted apart), with the reads among them. Single creates
(sandbox profile) and one transaction per referral (generic-smart2 profile).

Target (issue 14), printed as pass/miss for the clean runs: EHR calls per referral at the floor, i.e. one create
per resource with single creates, one call with a transaction; labels verified from the create or transaction
response where it carries them (the sandbox honours Prefer: return=representation), a read-back only as the
fallback. Figures only: nothing here asserts timing.

With faults, a referral order whose outcome stays unknown ends as "check the chart"; its note then waits
OUTBOX_LINK_WAIT_SECONDS (60 s, the outbox's default) before it is sent without the link, so a faulted run's
seconds can include that one wait (the generic-smart2 run: ~60 s instead of ~10 s).

    python -m benchmarks.bench_writeback [--referrals 200] [--workers 4]
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from cryptography.fernet import Fernet
from werkzeug.serving import make_server

PATIENTS = [("pat-alice", "enc-alice-bwh"), ("pat-carmen", "enc-carmen-sjphc"), ("pat-joana", "enc-joana-chelsea")]
SCOPE = ("launch patient/DocumentReference.crs patient/ServiceRequest.crs patient/Observation.crs "
         "patient/QuestionnaireResponse.cs patient/Task.crus")
SCREENING = {"instrument": "hits", "score": 14, "interpretation": "positive", "danger": False,
             "completed_at": "2026-01-01T10:00:00+00:00"}
REFERRAL = {"results": [{"service_id": "haven", "program": "HAVEN at MGH"}], "selected": ["haven"]}
FAULTS = {"error_rate": 0.2, "statuses": [500, 502, 503, 429], "timeout_rate": 0.05, "timeout_seconds": 0.6,
          "fail_after_commit_rate": 0.1, "seed": 1}


class CountingSession(requests.Session):
    """The app's outbound session, counting every HTTP call to the EHR."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.reads = 0  # GETs: read-backs and searches before a re-send
        self.metadata = 0  # CapabilityStatement reads: once per worker (is If-None-Exist honoured?), not per referral
        self._lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        with self._lock:
            if str(url).rstrip("/").endswith("/metadata"):
                self.metadata += 1
            else:
                self.calls += 1
                self.reads += str(method).upper() == "GET"
        return super().request(method, url, *args, **kwargs)


class Server:
    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()


def _app(tmp: Path, name: str) -> Any:
    from smart_app import create_app

    return create_app({
        "TESTING": True, "DATABASE_URL": f"sqlite:///{tmp / (name + '.db')}", "SECRET_KEY": secrets.token_hex(16),
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "OUTBOX_BASE_DELAY": 0.01, "OUTBOX_MAX_DELAY": 0.1,
        "OUTBOX_FINAL_RETRY_DELAY": 0.0, "OUTBOX_MAX_ATTEMPTS": 25, "HTTP_TIMEOUT_SECONDS": 0.3,
    })


def _enqueue(app: Any, sandbox: Any, iss: str, n: int, profile_name: str) -> None:
    """n consented referrals, each with its own launch (one referral per launch is a unique index on
    ReferralRecord.launch_id, as the consent page makes them): launch records from the project's helper
    (sandbox_ehr.harness.launches.add_launch -> store_launch), each with a sandbox access token."""
    from config.ehr_profile import EhrProfile
    from fhir.builders import WritebackInput, plan_writeback
    from sandbox_ehr.authstore import issue_access_token
    from sandbox_ehr.harness.launches import add_launch
    from smart_app.outbox.enqueue import enqueue
    from smart_app.outbox.settings import OutboxSettings
    from smart_app.store.db import session_scope
    from smart_app.store.models import ReferralRecord
    from smart_app.writeback.note import with_note

    profile = EhrProfile.load(profile_name)
    settings = OutboxSettings.for_app(app, profile)
    for i in range(n):
        patient, encounter = PATIENTS[i % len(PATIENTS)]
        with sandbox.app_context():
            token = issue_access_token("ipv-screen-jwt", SCOPE, patient=patient, encounter=encounter)
        lid = add_launch(app, iss, token, patient=patient, encounter=encounter)
        with app.app_context(), session_scope(app) as db:
            ref = ReferralRecord(launch_id=lid, iss=iss, profile=profile.name, status="new")
            db.add(ref)
            db.flush()
            inp = with_note(WritebackInput(referral_key=ref.id, patient_id=patient, encounter_id=encounter,
                                           author_reference=None, author_name=None, screening=dict(SCREENING),
                                           referral=dict(REFERRAL), resources=list(profile.resources)))
            enqueue(db, referral_id=ref.id, launch_id=lid, iss=iss, profile=profile,
                    plans=plan_writeback(inp, profile.write_rules), settings=settings)


def _duplicates(sandbox: Any, identifiers: set[str]) -> int:
    """Writes of this run stored more than once at the EHR (the same identifier on two resources): must be 0."""
    import json
    import sqlite3
    from collections import Counter

    seen: Counter[str] = Counter()
    with sqlite3.connect(sandbox.config["SANDBOX_DB"]) as con:
        for (content,) in con.execute("SELECT content FROM fhir_resource"):
            for ident in json.loads(content).get("identifier") or []:
                if ident.get("value") in identifiers:
                    seen[ident["value"]] += 1
    return sum(1 for count in seen.values() if count > 1)


def run(sandbox: Any, url: str, tmp: Path, *, n: int, workers: int, faults: bool, profile: str) -> dict[str, Any]:
    from config.ehr_profile import EhrProfile
    from smart_app.outbox.worker import OutboxWorker

    name = f"{profile}-{'faults' if faults else 'clean'}"
    app = _app(tmp, name)
    session = CountingSession()
    app.extensions["smart_http"] = session  # smart_app.launch.ehr.http_session(): every EHR call goes through it
    _enqueue(app, sandbox, url + "/fhir", n, profile)
    requests.post(url + "/__faults", json=FAULTS if faults else {}, timeout=5)
    ws = [OutboxWorker(app, timeout=0.3) for _ in range(workers)]
    threads = [threading.Thread(target=w.drain, kwargs={"max_seconds": 600}) for w in ws]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    injected = requests.get(url + "/__faults", timeout=5).json()["injected"]
    requests.delete(url + "/__faults", timeout=5)
    from sqlalchemy import func, select

    from smart_app.store.db import session_scope
    from smart_app.store.models import OutboxItem

    with app.app_context(), session_scope(app) as db:
        statuses = dict(db.execute(select(OutboxItem.status, func.count()).group_by(OutboxItem.status)).all())
        labels = dict(db.execute(select(OutboxItem.label_status, func.count())
                                 .group_by(OutboxItem.label_status)).all())
        ours = set(db.execute(select(OutboxItem.identifier_value)).scalars())
    app.extensions["db_engine"].dispose()
    loaded = EhrProfile.load(profile)
    floor = 1 if loaded.mode == "transaction" else len(loaded.resources)
    return {"name": name, "referrals": n, "duplicates": _duplicates(sandbox, ours),
            "seconds": elapsed, "per_second": n / elapsed,
            "calls": session.calls, "round_trips": session.calls / n, "reads": session.reads / n, "floor": floor,
            "statuses": statuses,
            "labels": labels, "metadata": session.metadata, "injected": sum(injected.values())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("ipv.outbox").setLevel(logging.ERROR)
    from sandbox_ehr.app import create_sandbox_app

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sandbox = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp / "sandbox.db")})
        with Server(sandbox) as server:
            sandbox.config["SANDBOX_BASE_URL"] = server.url
            print(f"write-back: {args.referrals} referrals, {args.workers} worker threads, live sandbox EHR")
            print(f"{'run':<28}{'ref/s':>8}{'seconds':>9}{'EHR calls/ref':>15}{'reads/ref':>11}{'faults':>8}"
                  "  dups  outcome; labels")
            clean, runs = [], []
            for profile in ("sandbox", "generic-smart2"):
                for faults in (False, True):
                    r = run(sandbox, server.url, tmp, n=args.referrals, workers=args.workers, faults=faults,
                            profile=profile)
                    print(f"{r['name']:<28}{r['per_second']:>8.1f}{r['seconds']:>9.1f}{r['round_trips']:>15.2f}"
                          f"{r['reads']:>11.2f}{r['injected']:>8}{r['duplicates']:>6}  {r['statuses']}; {r['labels']}",
                          flush=True)
                    runs.append(r)
                    if not faults:
                        clean.append(r)
            for r in runs:
                if r["duplicates"]:
                    # Nothing duplicated is a safety rule: printed loudly.
                    print(f"!! {r['name']}: {r['duplicates']} writes stored more than once at the EHR (must be 0)")
            for r in clean:
                # At the floor: every referral written with one call per create (or one transaction), no
                # read-back because the response carried the stored labels.
                ok = r["round_trips"] <= r["floor"] and r["reads"] == 0
                print(f"{r['name']}: {r['round_trips']:.2f} EHR calls/ref ({r['calls']} for {r['referrals']}), "
                      f"{r['reads']:.2f} reads/ref, "
                      f"{r['metadata']} CapabilityStatement reads in all (target <= {r['floor']} calls/ref, labels "
                      f"from the create response, no read-back: {'pass' if ok else 'miss'})")


if __name__ == "__main__":
    main()
