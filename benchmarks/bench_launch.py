"""Launch: EHR round trips and app CPU of /callback, cold (first launch of the process) and steady state.

The sandbox EHR runs on a live port behind a middleware that records every request it serves (path and
start/end time); the app runs in this process and is driven as the EHR simulator's "Launch app" button
and the browser would (simulator launch -> /launch -> authorize -> /callback). EHR calls made while
/callback runs are counted, and so are sequential rounds (calls that overlap in time count as one round:
parallel reads wait once). App CPU is this thread's CPU time for /callback (the sandbox serves from its own
threads). Target (printed, never asserted): steady state at most 2 sequential EHR calls, CPU <= 10 ms median.
"""

from __future__ import annotations

import dataclasses
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import requests
from cryptography.fernet import Fernet
from werkzeug.serving import make_server

LAUNCHES = 40
PATIENTS = [("pat-alice", "enc-alice-bwh"), ("pat-carmen", "enc-carmen-sjphc"), ("pat-joana", "enc-joana-chelsea")]


class Recorder:
    """WSGI middleware: (path, start, end) of every request the sandbox serves."""

    def __init__(self, app: Any):
        self.app, self.calls, self.lock = app, [], threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return list(self.app(environ, start_response))
        finally:
            with self.lock:
                self.calls.append((environ.get("PATH_INFO", ""), t0, time.perf_counter()))

    def between(self, t0: float, t1: float) -> list[tuple[str, float, float]]:
        with self.lock:
            return [c for c in self.calls if c[1] >= t0 and c[2] <= t1]


def rounds(calls: list[tuple[str, float, float]]) -> int:
    """Sequential rounds: calls that overlap in time are one round."""
    n, end = 0, -1.0
    for _, start, stop in sorted(calls, key=lambda c: c[1]):
        if start >= end:
            n += 1
            end = stop
        else:
            end = max(end, stop)
    return n


def main() -> None:
    import logging

    from sandbox_ehr.app import create_sandbox_app
    from smart_app import create_app

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sandbox = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp / "sandbox.db")})
        recorder = Recorder(sandbox.wsgi_app)
        sandbox.wsgi_app = recorder
        server = make_server("127.0.0.1", 0, sandbox, threaded=True)
        url = f"http://127.0.0.1:{server.server_port}"
        sandbox.config["SANDBOX_BASE_URL"] = url
        threading.Thread(target=server.serve_forever, daemon=True).start()
        iss = url + "/fhir"
        app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp / 'app.db'}",
                          "SECRET_KEY": secrets.token_urlsafe(32),
                          "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "WTF_CSRF_ENABLED": False,
                          "SESSION_COOKIE_SECURE": False, "ALLOWED_ISS": [iss], "RATELIMIT_ENABLED": False,
                          "LOG_LEVEL": "WARNING", "WARM_UP": True})
        app.config["DEPLOYMENT"] = dataclasses.replace(app.config["DEPLOYMENT"], allowed_iss=[iss],
                                                       standalone_iss=iss)
        sandbox.config["APP_LAUNCH_URL"] = "http://127.0.0.1:5000/launch"
        client = app.test_client()
        results = []
        for i in range(LAUNCHES):
            patient, encounter = PATIENTS[i % len(PATIENTS)]
            form = {"practitioner": "prac-avery", "patient": patient, "encounter": encounter,
                    "need_patient_banner": "1"}
            at = requests.post(url + "/ehr/launch", data=form, allow_redirects=False, timeout=10)
            launch = parse_qs(urlsplit(at.headers["Location"]).query)["launch"][0]
            resp = client.get(f"/launch?iss={quote(iss)}&launch={launch}")
            back = requests.get(resp.headers["Location"], allow_redirects=False, timeout=10)
            query = urlsplit(back.headers["Location"]).query
            c0, t0 = time.thread_time(), time.perf_counter()
            done = client.get("/callback?" + query)
            t1, cpu = time.perf_counter(), (time.thread_time() - c0) * 1000
            calls = recorder.between(t0, t1)
            results.append({"status": done.status_code, "calls": len(calls), "rounds": rounds(calls), "cpu": cpu,
                            "wall": (t1 - t0) * 1000, "paths": sorted(p for p, _, _ in calls)})
        server.shutdown()
    cold, steady = results[0], results[1:]
    print(f"/callback against the live sandbox EHR ({LAUNCHES} EHR launches, private_key_jwt RS384)")
    print(f"  first launch after a warmed-up start:  {cold['calls']} EHR calls in {cold['rounds']} sequential rounds, "
          f"CPU {cold['cpu']:.1f} ms, wall {cold['wall']:.0f} ms  {cold['paths']}")
    med = {k: statistics.median(r[k] for r in steady) for k in ("calls", "rounds", "cpu", "wall")}
    print(f"  steady state (median): {med['calls']:.0f} EHR calls in {med['rounds']:.0f} sequential rounds "
          f"(target <= 2: {'pass' if med['rounds'] <= 2 else 'miss'}), CPU {med['cpu']:.1f} ms "
          f"(target <= 10 ms: {'pass' if med['cpu'] <= 10 else 'miss'}), wall {med['wall']:.0f} ms")
    print(f"  steady-state calls: {steady[-1]['paths']}")
    bad = [r["status"] for r in results if r["status"] != 302]
    if bad:
        print(f"  !! {len(bad)} callbacks did not redirect into the app: {bad[:5]}")


if __name__ == "__main__":
    main()
