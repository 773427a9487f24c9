"""Launch: EHR round trips and app CPU of /callback, cold (first launch of the process) and steady state.

The sandbox EHR runs on a live port behind a middleware that records every request it serves (path and
start/end time); the app runs in this process and is driven as the EHR simulator's "Launch app" button
and the browser would (simulator launch -> /launch -> authorize -> /callback). EHR calls made while
/callback runs are counted, and so are sequential rounds (calls that overlap in time count as one round:
parallel reads wait once). App CPU is this thread's CPU time for /callback (the sandbox serves from its own
threads). Target (printed, never asserted): steady state at most 2 sequential EHR calls, CPU <= 10 ms median; and a
process started after launches (a restart, a gunicorn master before it forks) makes its first launch with 2 EHR
calls too (the style file read at start-up with discovery and the JWKS).

Then the caches of the wire layer, one at a time turned off, over whole launches (/launch and /callback, what
the user waits for in the app) with every sandbox answer held back by a modelled EHR round trip: the EHR calls,
sequential rounds, wall time and app CPU each cache saves a launch; and what requests' own reading of the proxy
environment costs a launch, which no cache of ours holds any more (docs/decisions/0003-wire-caches.md).
"""

from __future__ import annotations

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

from benchmarks import targets
from config import current as config_current
from config.current import replace_settings, settings_of

LAUNCHES = 40
PATIENTS = [("pat-alice", "enc-alice-bwh"), ("pat-carmen", "enc-carmen-sjphc"), ("pat-joana", "enc-joana-chelsea")]


class Recorder:
    """WSGI middleware: (path, start, end) of every request the sandbox serves; ``delay`` seconds are added to
    each (a modelled network round trip to the EHR)."""

    def __init__(self, app: Any):
        self.app, self.calls, self.lock = app, [], threading.Lock()
        self.delay = 0.0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        t0 = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
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
        config = {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp / 'app.db'}",
                  "SECRET_KEY": secrets.token_urlsafe(32),
                  "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "WTF_CSRF_ENABLED": False,
                  "SESSION_COOKIE_SECURE": False, "ALLOWED_ISS": [iss], "RATELIMIT_ENABLED": False,
                  "LOG_LEVEL": "WARNING", "WARM_UP": True}
        app = create_app(config)
        replace_settings(app, allowed_iss=[iss], standalone_iss=iss)
        sandbox.config["APP_LAUNCH_URL"] = "http://127.0.0.1:5000/launch"
        client = app.test_client()
        results = [launch_once(client, url, iss, recorder, i)["callback"] for i in range(LAUNCHES)]
        # A process started after those launches (a restart, a new worker's master): its warm-up reads what the
        # first process read on its first launch, the style file included; its first launch is what a worker's is.
        restarted = create_app(config)
        replace_settings(restarted, allowed_iss=[iss], standalone_iss=iss)
        first_after = launch_once(restarted.test_client(), url, iss, recorder, 0)
        restarted.extensions["db_engine"].dispose()
        caches = cache_ablation(app, client, url, iss, recorder)
        server.shutdown()
    cold, steady = results[0], results[1:]
    print(f"/callback against the live sandbox EHR ({LAUNCHES} EHR launches, private_key_jwt RS384; {targets.load()})")
    print(f"  first launch of a process on an empty database: {cold['calls']} EHR calls in {cold['rounds']} sequential "
          f"rounds, CPU {cold['cpu']:.1f} ms, wall {cold['wall']:.0f} ms  {cold['paths']}")
    after = first_after["launch"]["calls"] + first_after["callback"]["calls"]
    print(f"  first launch of a process started after launches (/launch + /callback): "
          f"{targets.judged('first_launch_calls', after, ' EHR calls', fmt='.0f')}  "
          f"{first_after['launch']['paths'] + first_after['callback']['paths']}")
    med = {k: statistics.median(r[k] for r in steady) for k in ("calls", "rounds", "cpu", "wall")}
    print(f"  steady state (median): {med['calls']:.0f} EHR calls in "
          f"{targets.judged('callback_rounds', med['rounds'], ' sequential rounds', fmt='.0f')}, "
          f"CPU {targets.judged('callback_ms', med['cpu'], ' ms', fmt='.1f')} "
          f"({targets.before('callback_ms', ' ms', fmt='.1f')}), "
          f"wall {med['wall']:.0f} ms")
    print(f"  steady-state calls: {steady[-1]['paths']}")
    bad = [r["status"] for r in results if r["status"] != 302]
    if bad:
        print(f"  !! {len(bad)} callbacks did not redirect into the app: {bad[:5]}")
    print_caches(caches)


def measured(client: Any, path: str, recorder: Recorder) -> tuple[Any, dict[str, Any]]:
    """Serve ``path`` in the app; the EHR calls made meanwhile, their sequential rounds, CPU and wall time."""
    c0, t0 = time.thread_time(), time.perf_counter()
    resp = client.get(path)
    t1, cpu = time.perf_counter(), (time.thread_time() - c0) * 1000
    calls = recorder.between(t0, t1)
    return resp, {"status": resp.status_code, "calls": len(calls), "rounds": rounds(calls), "cpu": cpu,
                  "wall": (t1 - t0) * 1000, "paths": sorted(p for p, _, _ in calls)}


def launch_once(client: Any, url: str, iss: str, recorder: Recorder, i: int) -> dict[str, dict[str, Any]]:
    """One EHR launch as the simulator and the browser drive it: figures of /launch and of /callback."""
    patient, encounter = PATIENTS[i % len(PATIENTS)]
    form = {"practitioner": "prac-avery", "patient": patient, "encounter": encounter, "need_patient_banner": "1"}
    at = requests.post(url + "/ehr/launch", data=form, allow_redirects=False, timeout=10)
    launch = parse_qs(urlsplit(at.headers["Location"]).query)["launch"][0]
    resp, at_launch = measured(client, f"/launch?iss={quote(iss)}&launch={launch}", recorder)
    back = requests.get(resp.headers["Location"], allow_redirects=False, timeout=10)
    _done, at_callback = measured(client, "/callback?" + urlsplit(back.headers["Location"]).query, recorder)
    return {"launch": at_launch, "callback": at_callback}


# A modelled round trip to the EHR for the cache comparison: every sandbox answer waits this long. A hospital's
# EHR is seldom nearer than this to the app's servers; the saving in rounds holds whatever the distance.
EHR_ROUND_TRIP = 0.05
CACHE_LAUNCHES = 12


def cache_ablation(app: Any, client: Any, url: str, iss: str, recorder: Recorder) -> dict[str, dict[str, Any]]:
    """Median figures of a whole launch with every cache on, then with each wire-layer cache off in turn, then
    with every entry expired just before the launch (what refresh-ahead spares one launch per TTL and worker)."""
    from fhir.smart import id_token

    def discovery_off() -> None:
        replace_settings(app, DISCOVERY_TTL_SECONDS=0)
        app.extensions.pop("smart_discovery", None)

    def jwks_off() -> None:
        id_token._default_cache = id_token.JwksCache(ttl_seconds=0)

    def style_off() -> None:
        replace_settings(app, STYLE_TTL_SECONDS=0)
        app.extensions.pop("smart_style", None)

    def expire_all() -> None:
        for cache in (app.extensions.get("smart_discovery"), app.extensions.get("smart_style"),
                      id_token._default_cache):
            if cache is not None:
                cache.clear()

    nothing = lambda: None  # noqa: E731
    variants = {"every cache on": (nothing, nothing), "no discovery cache": (discovery_off, nothing),
                "no JWKS cache": (jwks_off, nothing), "no style cache": (style_off, nothing),
                "every entry just expired": (nothing, expire_all)}
    saved_settings, saved_jwks = settings_of(app), id_token._default_cache
    out: dict[str, dict[str, Any]] = {}
    recorder.delay = EHR_ROUND_TRIP
    try:
        for name, (turn_off, before_each) in variants.items():
            turn_off()
            for i in range(2):  # the first launches fill whatever cache is on
                launch_once(client, url, iss, recorder, i)
            runs = []
            for i in range(CACHE_LAUNCHES):
                before_each()
                runs.append(launch_once(client, url, iss, recorder, i))
            out[name] = {k: statistics.median(r["launch"][k] + r["callback"][k] for r in runs)
                         for k in ("calls", "rounds", "wall", "cpu")}
            out[name]["paths"] = runs[-1]["launch"]["paths"] + runs[-1]["callback"]["paths"]
            config_current.init_app(app, saved_settings)
            app.extensions.pop("smart_discovery", None)  # made with the turned-off TTL: the next launch refills
            app.extensions.pop("smart_style", None)
            id_token._default_cache = saved_jwks
    finally:
        recorder.delay = 0.0
    return out


def environment_read_us(extra_variables: int = 0) -> float:
    """Microseconds requests spends per outbound call reading the proxy and CA-bundle environment (it scans all
    of os.environ), with ``extra_variables`` more variables set (as Kubernetes service links add)."""
    import os
    import timeit

    names = [f"BENCH_SVC_{i}_SERVICE_HOST" for i in range(extra_variables)]
    os.environ.update({n: "10.0.0.1" for n in names})
    try:
        session, target, n = requests.Session(), "https://ehr.example.org/fhir/Patient/1", 300
        best = min(timeit.repeat(lambda: session.merge_environment_settings(target, {}, None, None, None),
                                 number=n, repeat=3))
    finally:
        for name in names:
            del os.environ[name]
    return best / n * 1e6


def print_caches(caches: dict[str, dict[str, Any]]) -> None:
    base = caches["every cache on"]
    print(f"Wire-layer caches: a whole launch (/launch + /callback, median of {CACHE_LAUNCHES}), each EHR answer "
          f"held back {EHR_ROUND_TRIP * 1000:.0f} ms")
    print(f"  every cache on:  {base['calls']:.0f} EHR calls in {base['rounds']:.0f} sequential rounds, "
          f"wall {base['wall']:.0f} ms, CPU {base['cpu']:.1f} ms")
    for name, fig in caches.items():
        if name == "every cache on":
            continue
        print(f"  {name + ':':32s} {fig['calls'] - base['calls']:+.0f} calls, {fig['rounds'] - base['rounds']:+.0f} "
              f"rounds, wall {fig['wall'] - base['wall']:+.0f} ms, CPU {fig['cpu'] - base['cpu']:+.1f} ms a launch "
              f"{sorted(set(fig['paths']) - set(base['paths'])) or ''}")
    import os

    here, large = environment_read_us(), environment_read_us(400)
    print(f"  requests reads the proxy environment on every outbound call (no cache of ours): {here:.0f} us a call "
          f"with this process's {len(os.environ)} variables, {large:.0f} us with 400 more; "
          f"{base['calls']:.0f} calls a launch: {base['calls'] * here / 1000:.2f} ms "
          f"({base['calls'] * large / 1000:.1f} ms) CPU a launch")


if __name__ == "__main__":
    main()
