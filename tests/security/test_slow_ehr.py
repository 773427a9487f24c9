"""A slow EHR starves no one: every outbound call has a deadline on the whole call (not per socket read), and a
bulkhead per EHR identity bounds the calls in flight, so quick exit, /healthz and launches from another EHR are
answered while one EHR trickles its answers a byte a second (the sandbox's ``trickle`` fault).

The app runs on a fixed pool of request threads, as under gunicorn's gthread worker: without the bulkhead the
trickling launches would take every thread and the other requests would wait in the queue."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import quote, urlsplit

import pytest
import requests

from config.current import replace_settings, settings_of
from fhir import context as fhir_context
from fhir.client import FhirClient
from fhir.http import (
    Bulkhead,
    BulkheadLimits,
    DeadlineExceeded,
    EhrBusy,
    OutboundSession,
    RequestScope,
    _Watch,
    add_header_provider,
    enter_request_scope,
    exit_request_scope,
)
from fhir.smart.discovery import DiscoveryError, fetch_configuration
from sandbox_ehr import authstore
from sandbox_ehr.app import create_sandbox_app
from sandbox_ehr.harness.live import LiveServer
from smart_app import create_app
from smart_app.store.db import get_session
from smart_app.store.models import LaunchRecord
from tests.conftest import app_config
from tests.launch.test_launch_sandbox import V2, ehr_launch_id

pytestmark = pytest.mark.security

APP_THREADS = 4  # the app's request threads (one gthread worker)
PER_EHR = 2  # calls one EHR may have in flight
TOTAL = 3  # calls all EHRs may have in flight: one thread stays free of EHR calls
SLOW_LAUNCHES = 6  # more than the app has threads
DEADLINE = 15.0  # HTTP_TIMEOUT_SECONDS: the whole of each call; ample for the other pages on a busy machine
GIVE_UP = 120.0  # only so a broken build fails instead of hanging; never asserted on


class Sandbox:
    def __init__(self, tmp, name: str):
        self.app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(tmp / f"{name}.db")})
        self.server = LiveServer(self.app).start()
        self.app.config["SANDBOX_BASE_URL"] = self.server.url
        self.url = self.server.url
        self.iss = self.server.url + "/fhir"

    def faults(self, **settings) -> dict:
        answer = requests.post(self.url + "/__faults", json=settings, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def trickled(self) -> int:
        return requests.get(self.url + "/__faults", timeout=10).json()["injected"]["trickled"]

    def stop(self) -> None:
        self.server.stop()
        self.app.extensions["sandbox_store"].close()


@pytest.fixture
def ehrs(tmp_path):
    a, b = Sandbox(tmp_path, "a"), Sandbox(tmp_path, "b")
    yield a, b
    a.faults()  # the held answers stop trickling at their next byte
    a.stop()
    b.stop()


@pytest.fixture
def app_on_a_pool(tmp_path, ehrs):
    a, b = ehrs
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", HTTP_TIMEOUT_SECONDS=DEADLINE,
                                EHR_CALLS_PER_EHR=PER_EHR, EHR_CALLS_TOTAL=TOTAL))
    replace_settings(app, scopes_ehr=V2, allowed_iss=[a.iss, b.iss], client_id="ipv-screen-public",
                     client_auth="none", client_secret=None, private_key_file=None, routing={},
                     ehrs={"ehr-a": {"name": "EHR A", "iss": [a.iss]}, "ehr-b": {"name": "EHR B", "iss": [b.iss]}})
    server = LiveServer(app, threads=APP_THREADS).start()
    yield app, server.url
    server.stop()
    app.extensions["db_engine"].dispose()


def _until(check, what: str) -> None:
    """Wait for ``check()`` (events seen from outside: counters, finished futures), failing only on GIVE_UP."""
    give_up = time.monotonic() + GIVE_UP
    while not check():
        assert time.monotonic() < give_up, f"never happened: {what}"
        time.sleep(0.05)


def _launch_at_b(app_url: str, b: Sandbox) -> requests.Session:
    """A whole EHR launch at EHR B in a browser of its own; returns the browser (its session cookie)."""
    browser = requests.Session()
    lid = ehr_launch_id(b, "pat-joana", "enc-joana-chelsea", "prac-blair")
    started = browser.get(f"{app_url}/launch?iss={quote(b.iss)}&launch={lid}", allow_redirects=False, timeout=60)
    assert started.status_code == 302, started.text
    at_ehr = requests.get(started.headers["Location"], allow_redirects=False, timeout=60)
    assert at_ehr.status_code == 302, at_ehr.text
    back = browser.get(f"{app_url}/callback?{urlsplit(at_ehr.headers['Location']).query}", allow_redirects=False,
                       timeout=60)
    assert back.status_code == 302 and back.headers["Location"].startswith("/l/"), back.text[:500]
    return browser


def test_a_trickling_ehr_holds_only_its_own_calls(app_on_a_pool, ehrs):
    app, app_url = app_on_a_pool
    a, b = ehrs
    a.faults(trickle=["discovery"], trickle_bytes_per_second=1)
    pool = ThreadPoolExecutor(max_workers=SLOW_LAUNCHES)
    launches: list[Future] = [
        pool.submit(requests.get, f"{app_url}/launch?iss={quote(a.iss)}&launch=slow-{i}", allow_redirects=False,
                    timeout=GIVE_UP)
        for i in range(SLOW_LAUNCHES)]
    try:
        # EHR A holds as many calls as its bulkhead allows; the launches beyond it are answered at once.
        _until(lambda: a.trickled() == PER_EHR and sum(f.done() for f in launches) == SLOW_LAUNCHES - PER_EHR,
               "EHR A holding its bulkhead's calls, the other launches answered")
        held = [f for f in launches if not f.done()]
        for refused in (f.result() for f in launches if f.done()):
            assert refused.status_code == 424
            assert "is not answering (it is still answering this app&#39;s earlier calls)" in refused.text
            assert "Try again in a minute" in refused.text

        # Meanwhile: health, a whole launch at EHR B, and that clinician's quick exit.
        assert requests.get(f"{app_url}/healthz", timeout=GIVE_UP).status_code == 200
        browser = _launch_at_b(app_url, b)
        exited = browser.post(f"{app_url}/exit", allow_redirects=False, timeout=GIVE_UP)
        assert exited.status_code == 302 and exited.headers["Location"] == settings_of(app).neutral_exit_url
        with app.app_context():
            assert {r.status for r in get_session().query(LaunchRecord).filter_by(iss=b.iss)} == {"ended"}

        # ... all while EHR A's calls were still held.
        assert not any(f.done() for f in held)
        assert app.extensions["smart_bulkhead"].in_flight("ehr-a") == PER_EHR
        assert a.trickled() == PER_EHR

        # The held launches end at their deadline with the same plain page (never a 5xx or a gateway's 504).
        for slow in (f.result() for f in held):
            assert slow.status_code == 424
            assert "is not answering (it did not answer in time)" in slow.text
        assert app.extensions["smart_bulkhead"].in_flight("ehr-a") == 0
    finally:
        a.faults()
        pool.shutdown(wait=True)


# --- the deadline and the bulkhead on their own -------------------------------------------------------------

def _session(bulkhead: Bulkhead | None = None) -> requests.Session:
    return add_header_provider(OutboundSession(), dict, bulkhead)


@pytest.mark.parametrize("where", ["discovery", "token"])
def test_a_trickled_answer_ends_at_the_deadline_of_the_whole_call(ehrs, where):
    a, _ = ehrs
    a.faults(trickle=[where], trickle_bytes_per_second=20)  # each read gets bytes: a per-read timeout never ends
    session = _session()
    if where == "discovery":
        with pytest.raises(DiscoveryError, match="did not answer in time"):
            fetch_configuration(a.iss, http=session, timeout=1.0)
    else:
        with pytest.raises(DeadlineExceeded):
            session.post(a.url + "/auth/token", data={"grant_type": "authorization_code", "code": "x",
                                                      "client_id": "ipv-screen-public"}, timeout=1.0)
    a.faults()
    # The session is usable afterwards: the cut connection is not handed to the next call.
    assert session.get(a.iss + "/.well-known/smart-configuration", timeout=5).status_code == 200


def test_redirects_share_one_deadline(ehrs):
    a, _ = ehrs
    hops: list[str] = []
    session = _session()
    session.hooks["response"].append(lambda r, *args, **kwargs: hops.append(r.url))
    session.max_redirects = 10_000
    a.faults(redirect_loop=["discovery"])
    # Every hop answers at once; the loop ends when the call's one deadline is spent (TooManyRedirects never
    # comes at this limit), not after a fresh timeout per hop.
    with pytest.raises(DeadlineExceeded):
        session.get(a.iss + "/.well-known/smart-configuration", timeout=0.5)
    assert len(hops) > 1


def test_one_watchdog_thread_fires_each_deadline_in_time_and_never_a_disarmed_one():
    """Every call's deadline is held by one thread: a deadline earlier than those waiting fires first, a
    disarmed watch never fires, and calls start no thread of their own."""
    fired: dict[str, float] = {}

    class Conn:
        def __init__(self, name: str):
            self.name, self.sock = name, self

        def shutdown(self, *args) -> None:
            fired[self.name] = time.monotonic()

    start = time.monotonic()
    late = _Watch(start + 0.6)
    late.watch(Conn("late"))
    before = threading.active_count()
    watches = {name: _Watch(start + at) for name, at in [("early", 0.2), ("disarmed", 0.3), ("middle", 0.4)]}
    for name, watch in watches.items():
        watch.watch(Conn(name))
    assert threading.active_count() == before
    watches["disarmed"].disarm()
    time.sleep(0.9)
    assert set(fired) == {"early", "middle", "late"}
    assert fired["early"] < fired["middle"] < fired["late"]
    assert fired["early"] - start >= 0.2 and fired["late"] - start >= 0.6
    assert late.fired and not watches["disarmed"].fired


def test_the_bulkhead_refuses_at_once_and_counts_each_ehr_apart():
    """Outside a page each call is its own holder."""
    limits = BulkheadLimits(per_ehr=1, total=2)
    bulkhead = Bulkhead(lambda url: url.split("/")[2], lambda: limits)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with bulkhead.slot("https://a.example/fhir/Patient/1"):
            entered.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait()
    with pytest.raises(EhrBusy):  # the same EHR: refused, not queued
        with bulkhead.slot("https://a.example/fhir/Patient/2"):
            pass
    with bulkhead.slot("https://b.example/fhir/Patient/1"):  # another EHR has its own
        assert bulkhead.in_flight("b.example") == 1
        with pytest.raises(EhrBusy):  # and the total bound holds across EHRs
            with bulkhead.slot("https://c.example/fhir/Patient/1"):
                pass
    release.set()
    holder.join()
    assert bulkhead.in_flight("a.example") == 0
    with bulkhead.slot("https://a.example/fhir/Patient/3"):
        pass


def test_a_pages_parallel_reads_hold_one_slot_of_the_bulkhead(ehrs, monkeypatch):
    """An EHR without batch reads gets a page's reads in parallel (fhir/context.py): they serve one page, so they
    hold one slot between them, even where the bulkhead allows one page per EHR."""
    a, _ = ehrs
    a.faults(latency_seconds=0.3)  # the reads overlap
    limits = BulkheadLimits(per_ehr=1, total=1)
    bulkhead = Bulkhead(lambda url: "ehr-a", lambda: limits)
    with a.app.app_context():
        token = authstore.issue_access_token("t", "user/*.rs")
    client = FhirClient(a.iss, token, session=_session(bulkhead))
    monkeypatch.setattr(fhir_context, "_no_batch", {a.iss})
    scope = enter_request_scope(RequestScope())
    try:
        read = fhir_context.fetch_many(client, ["Patient/pat-alice", "Patient/pat-joana", "Practitioner/prac-avery",
                                                "Practitioner/prac-blair"])
    finally:
        exit_request_scope(scope)
    assert [r["id"] for r in read] == ["pat-alice", "pat-joana", "prac-avery", "prac-blair"]
    assert bulkhead.in_flight("ehr-a") == 0
