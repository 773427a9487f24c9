"""Two hosts (tests/support/hosts.py): two app instances under gunicorn on separate ports, two outbox workers, the
sandbox EHR as its own process, one PostgreSQL database and Redis. One stack for the module. Correctness only, never
timings: a launch that moves between instances at every request, rate limits counted once across both, one token
refresh for a launch however many processes ask at once, every referral's note written exactly once by the two
workers with one of them killed mid-send."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from sqlalchemy import text

from benchmarks.bench_load import PATIENTS, launch_from_ehr, walk_to_consent
from tests.support.hosts import ROOT, TwoHosts

# One xdist worker runs the module, so its module fixture is built once (`--dist loadgroup`, Makefile).
pytestmark = [pytest.mark.scale, pytest.mark.postgres, pytest.mark.xdist_group("two_hosts")]

# Per client address and minute, on /launch (this stack's tuning.ratelimit_launch): above the journeys' launches from
# 127.0.0.1 in a minute, two stacks' at once under pytest-xdist included.
LAUNCH_LIMIT = 40
TUNING = {"ratelimit_launch": f"{LAUNCH_LIMIT} per minute", "ratelimit_callback": "1000 per minute",
          # A killed worker's claim is taken over once its lease runs out (a send takes well under a second here).
          "outbox_lease_seconds": 4, "outbox_base_delay": 0.2, "outbox_max_delay": 1.0,
          # One EHR serves every clinician here: its bound on calls in flight is the whole process's (the default
          # halves it so that a second slow EHR still finds room), as bench_load's deployment sets it.
          "ehr_calls_per_ehr": 6, "ehr_calls_total": 6,
          "directory_check_seconds": 1}
CLINICIANS = 8
WRITE_LATENCY = 0.5  # seconds the EHR takes over each write in the worker test: the kill lands inside one


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHosts]:
    stack = TwoHosts(tmp_path_factory.mktemp("two-hosts"), tuning=TUNING).start()
    try:
        yield stack
    finally:
        stack.stop()


class RoundRobin:
    """A browser (one cookie jar) walking a clinician's journey from the EHR launch to the consent, whose every request
    goes to the other instance than its previous one: a load balancer without sticky sessions at its least kind.
    ``served`` lists (page, instance URL, status) of each request to the app. The journey is bench_load's
    (``launch_from_ehr``, ``walk_to_consent``): the pages' forms submitted with their fields, CSRF token included."""

    def __init__(self, hosts: TwoHosts, visit: tuple[str, str], first: str = "a", second: str = "b"):
        self.hosts, self.visit = hosts, visit
        self.order = [hosts.urls[first], hosts.urls[second]]
        self.served: list[tuple[str, str, int]] = []
        self.lid = ""
        self.http = requests.Session()

    def _ask(self, page: str, method: str, path: str, data: dict[str, Any] | None = None) -> requests.Response:
        base = self.order[len(self.served) % 2]
        answer = self.http.request(method, base + path, data=data, allow_redirects=False, timeout=60)
        self.served.append((page, base, answer.status_code))
        return answer

    def launch(self) -> str:
        """The EHR launch ("Launch app", /launch, the EHR's authorize, /callback): the launch id."""
        self.lid = launch_from_ehr(self._ehr, self._ask, self.hosts.sandbox_url, self.hosts.iss, self.visit)
        assert self.served[0][2] == 302, self.served  # /launch sent the browser on to the EHR's authorize
        return self.lid

    def _ehr(self, method: str, url: str, data: dict[str, Any] | None) -> requests.Response:
        return self.http.request(method, url, data=data, allow_redirects=False, timeout=60)

    def walk(self) -> None:
        """Gate, a positive screen, result, referrals, consent to a note in the chart, confirmation."""
        if self.launch():
            walk_to_consent(self.lid, lambda page, path: self._ask(page, "GET", path).text, self._ask)

    def failures(self) -> list[tuple[str, int]]:
        return [(page, status) for page, _, status in self.served if status >= 400]


def wait_for(condition, what: str, hosts: TwoHosts, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}\n{hosts.log_tail()}"
        time.sleep(0.1)


def outbox_settled(hosts: TwoHosts) -> bool:
    return not hosts.scalar("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')")


def test_a_launch_continues_on_the_other_instance_at_every_request_through_to_a_consented_referral(hosts):
    before = hosts.scalar("SELECT count(*) FROM referral")
    clinician = RoundRobin(hosts, PATIENTS[0])
    clinician.walk()
    assert clinician.lid and not clinician.failures(), (clinician.failures(), hosts.log_tail())
    pages = [page for page, _, _ in clinician.served]
    assert pages[:2] == ["launch", "callback"] and "consent POST" in pages and pages[-1] == "done"
    by_instance = {url: [p for p, u, _ in clinician.served if u == url] for url in (hosts.urls["a"], hosts.urls["b"])}
    # /launch on A, /callback on B: the pending sign-in (PKCE verifier, state, nonce) is in the database, the
    # browser's binding in the cookie both instances sign with the same SECRET_KEY.
    assert by_instance[hosts.urls["a"]][0] == "launch" and by_instance[hosts.urls["b"]][0] == "callback"
    assert all(by_instance.values()) and abs(len(by_instance[hosts.urls["a"]]) - len(by_instance[hosts.urls["b"]])) <= 1
    assert hosts.scalar("SELECT count(*) FROM referral") == before + 1
    assert hosts.scalar("SELECT count(*) FROM referral WHERE launch_id = :lid", lid=clinician.lid) == 1
    wait_for(lambda: outbox_settled(hosts), "the referral's writes were not sent", hosts)
    assert hosts.scalar("SELECT count(*) FROM outbox WHERE launch_id = :lid AND status <> 'written'",
                        lid=clinician.lid) == 0


def test_rate_limits_are_counted_once_across_both_instances_in_redis(hosts):
    client = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"  # counts from 0
    statuses = []
    for i in range(LAUNCH_LIMIT + 4):
        instance = hosts.urls["a" if i % 2 == 0 else "b"]
        statuses.append((instance, requests.get(instance + "/launch", headers={"X-Forwarded-For": client},
                                                timeout=10).status_code))
    allowed = [s for s in statuses if s[1] != 429]
    refused = [s for s in statuses if s[1] == 429]
    # Half of the requests went to each instance: each alone saw fewer than the limit, together they reached it.
    assert len(allowed) == LAUNCH_LIMIT, statuses
    assert statuses[:LAUNCH_LIMIT] == allowed and {u for u, _ in refused} == set((hosts.urls["a"], hosts.urls["b"]))
    import redis

    keys = [k.decode() for k in redis.Redis.from_url(hosts.redis_url).keys(f"*{client}*")]
    # The one count both instances kept: LIMITS:LIMITER/ipv-rl/<address>/launch.ehr_launch/<limit>/1/minute
    assert len(keys) == 1 and f"/ipv-rl/{client}/launch." in keys[0] and f"/{LAUNCH_LIMIT}/1/minute" in keys[0], keys


def test_an_instance_and_a_worker_through_pgbouncer_in_transaction_mode_carry_whole_journeys(hosts):
    """deploy/pgbouncer.ini (transaction mode) in front of the same database, a third instance and a worker through
    it with prepared statements off (PgBouncer 1.18 here); the direct workers paused so the writes go through it."""
    env = hosts.behind_pgbouncer()
    hosts.start_instance("c", **env)
    hosts.start_worker("worker-pgbouncer", **env)
    hosts.wait_serving("c")
    direct = [hosts.procs[name].popen for name in ("worker-1", "worker-2")]
    for proc in direct:
        os.killpg(proc.pid, signal.SIGSTOP)
    try:
        lids = []
        for visit in PATIENTS[:2]:  # each page reads the launch again: statements psycopg would otherwise prepare
            clinician = RoundRobin(hosts, visit, first="c", second="c")
            clinician.walk()
            assert clinician.lid and not clinician.failures(), (clinician.failures(), hosts.log_tail())
            lids.append(clinician.lid)
        wait_for(lambda: outbox_settled(hosts), "the writes were not sent through PgBouncer", hosts)
        assert hosts.scalar("SELECT count(*) FROM outbox WHERE launch_id = ANY(:lids) AND status = 'written'",
                            lids=lids) == hosts.scalar("SELECT count(*) FROM outbox WHERE launch_id = ANY(:lids)",
                                                       lids=lids) > 0
        assert hosts.scalar("SELECT count(*) FROM referral WHERE launch_id = ANY(:lids)", lids=lids) == len(lids)
        stats = hosts.pgbouncer_totals()
        assert stats["xact"] > 0 and stats["query"] > 0, stats
    finally:
        for proc in direct:
            os.killpg(proc.pid, signal.SIGCONT)
        hosts.procs["worker-pgbouncer"].stop()
        hosts.procs["app-c"].stop()


@pytest.fixture(scope="module")
def local_app(hosts: TwoHosts):
    """The app built in this process on the stack's database and keys (to age a launch's token, as time would)."""
    from sandbox_ehr.demo import deployment_for
    from smart_app import create_app

    app = create_app({**deployment_for("generic", hosts.iss), **app_config(hosts)})
    yield app
    app.extensions["db_engine"].dispose()


def app_config(hosts: TwoHosts) -> dict[str, Any]:
    return {"TESTING": True, "DB_CREATE_ALL": False, "DATABASE_URL": hosts.direct_url,
            "SECRET_KEY": hosts.env["SECRET_KEY"], "TOKEN_ENCRYPTION_KEY": hosts.env["TOKEN_ENCRYPTION_KEY"],
            "SESSION_COOKIE_SECURE": False, "ALLOWED_ISS": [hosts.iss], "HTTP_TIMEOUT_SECONDS": 10}


@contextmanager
def paused(hosts: TwoHosts, *names: str) -> Iterator[list[subprocess.Popen]]:
    """The named processes stopped (SIGSTOP) until the block ends or calls ``go`` (SIGCONT)."""
    procs = [hosts.procs[name].popen for name in names]
    for proc in procs:
        os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield procs
    finally:
        resume(procs)


def resume(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        os.killpg(proc.pid, signal.SIGCONT)


REFRESHERS = 3  # processes besides the two workers asking for the same launch's token at once


def test_an_expired_token_is_refreshed_once_however_many_processes_need_it_at_once(hosts, local_app, tmp_path):
    """No page calls the EHR with the clinician's token after the callback (smart_app/outbox/clients.py is the only
    caller of fhir_client_for): the processes that refresh it are the outbox workers and any other process holding
    the launch. Here both workers (the referral's writes) and REFRESHERS more processes (tests/security/
    refresh_proc.py, as the web instances' code builds a client) find the token expired at the same moment, while
    the EHR answers the token call slowly; the sandbox EHR's refresh tokens are single use, so a second refresh
    would show as a replay."""
    from tests.security.test_refresh_across_processes import expire_token

    with paused(hosts, "worker-1", "worker-2") as workers:
        clinician = RoundRobin(hosts, PATIENTS[1], first="b", second="a")
        clinician.walk()
        assert clinician.lid and not clinician.failures(), clinician.failures()
        expire_token(SimpleNamespace(app=local_app), clinician.lid)
        requests.delete(hosts.sandbox_url + "/__faults", timeout=10)  # counts from here
        hosts.faults(trickle=["token"], trickle_bytes_per_second=2000)
        go = tmp_path / "go"
        spec = tmp_path / "refresh.json"
        spec.write_text(json.dumps({"personality": "generic", "iss": hosts.iss, "config": app_config(hosts),
                                    "launch": clinician.lid, "patient": PATIENTS[1][0], "go": str(go)}))
        procs = [subprocess.Popen([sys.executable, "-m", "tests.security.refresh_proc", str(spec)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for _ in range(REFRESHERS)]
        try:
            for proc in procs:
                assert proc.stdout.readline().strip() == "ready"
            go.write_text("go")
            resume(workers)
            answers = [json.loads(proc.communicate(timeout=120)[0].strip().splitlines()[-1]) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    wait_for(lambda: outbox_settled(hosts), "the referral's writes were not sent", hosts)
    counts = hosts.faults()["refresh"]
    hosts.faults(trickle=[])
    assert counts == {"used": 1, "replayed": 0}, (counts, answers)
    assert all(a.get("read") for a in answers), answers
    assert len({a["token"] for a in answers}) == 1  # every process uses the token the one refresh stored
    assert hosts.scalar("SELECT count(*) FROM outbox WHERE launch_id = :lid AND status = 'written'",
                        lid=clinician.lid) == hosts.scalar("SELECT count(*) FROM outbox WHERE launch_id = :lid",
                                                           lid=clinician.lid) > 0


def written_at_the_ehr(hosts: TwoHosts, kind: str) -> Counter:
    """How many resources of ``kind`` the EHR keeps under each business identifier (system|value)."""
    found: Counter = Counter()
    for content in hosts.ehr_resources(kind):
        for ident in json.loads(content).get("identifier") or []:
            found[f"{ident.get('system')}|{ident.get('value')}"] += 1
    return found


def test_two_workers_write_every_referral_exactly_once_with_one_killed_mid_send(hosts):
    """CLINICIANS journeys at once, each on both instances; the EHR slow on writes; one worker SIGKILLed while it
    sends (the other paused until then, so the claims in flight are the killed one's) and started again (as its unit
    restarts it): its claimed rows are taken over when their lease ends.
    Counted at the EHR by each write's business identifier. Meanwhile each process's PostgreSQL connections (by
    application_name, sampled while the journeys run) stay within DEPLOY.md's budget for it."""
    requests.delete(hosts.sandbox_url + "/__faults", timeout=10)
    hosts.faults(latency_seconds=WRITE_LATENCY, apply_to="writes")
    clinicians = [RoundRobin(hosts, PATIENTS[i % len(PATIENTS)], first="ab"[i % 2], second="ba"[i % 2])
                  for i in range(CLINICIANS)]
    threads = [threading.Thread(target=c.walk) for c in clinicians]
    seen: Counter = Counter()  # the most connections each process held at one sample

    def sample() -> None:
        for name, held in hosts.connections().items():
            seen[name] = max(seen[name], held)

    def lids() -> list[str]:
        return [c.lid for c in clinicians if c.lid]

    def count(status: str) -> int:
        return hosts.scalar("SELECT count(*) FROM outbox WHERE launch_id = ANY(:lids) AND status = :status",
                            lids=lids(), status=status)

    # Worker 2 paused while nothing is queued yet (it holds no claim): the rows in flight are worker 1's.
    with paused(hosts, "worker-2") as stopped:
        for t in threads:
            t.start()
        wait_for(lambda: sample() or (count("written") >= 1 and count("sending") >= 1), "no write in flight", hosts)
        hosts.procs["worker-1"].stop(signal.SIGKILL)
        orphaned = count("sending")  # claimed by the dead worker, some perhaps already at the EHR
        resume(stopped)
    hosts.start_worker("worker-1")  # as its unit restarts it
    assert orphaned >= 1
    for t in threads:
        while t.is_alive():
            sample()
            t.join(timeout=0.2)
    failures = [f for c in clinicians for f in c.failures()]
    assert not failures and len(lids()) == CLINICIANS, failures
    wait_for(lambda: sample() or outbox_settled(hosts), "the writes were not all sent", hosts, seconds=90)
    hosts.faults(latency_seconds=0)
    rows = []
    with hosts.engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, identifier_system, identifier_value, status FROM outbox "
                                 "WHERE launch_id = ANY(:lids)"), {"lids": lids()}).all()
    assert {r.status for r in rows} == {"written"} and len(rows) >= CLINICIANS
    assert hosts.scalar("SELECT count(*) FROM referral WHERE launch_id = ANY(:lids)", lids=lids()) == CLINICIANS
    at_ehr = {kind: written_at_the_ehr(hosts, kind) for kind in {r.kind for r in rows}}
    counts = Counter(at_ehr[r.kind][f"{r.identifier_system}|{r.identifier_value}"] for r in rows)
    assert counts == Counter({1: len(rows)}), counts  # each write once: none missing, none twice
    # DEPLOY.md's budget, per process: an instance's workers x (pool_size + max_overflow), a worker 2.
    kept, overflow = hosts_pool()
    assert all(1 <= seen[f"app-{name}"] <= 2 * (kept + overflow) for name in "ab"), seen
    assert all(seen[f"worker-{n}"] <= 2 for n in "12"), seen
    print(f"most connections held at a sample, per process: {dict(seen)}")


def hosts_pool() -> tuple[int, int]:
    """An instance worker's pool here: config/gunicorn.conf.py's threads for 2 workers, the default db_pool."""
    threads = max(4, 16 // 2)
    return threads, threads


def served_directory(url: str) -> str:
    return requests.get(url + "/readyz", timeout=10).json()["checks"]["directory"]["detail"]


def test_a_directory_import_on_one_host_is_served_by_every_instance_without_a_restart(hosts, tmp_path):
    """`flask directory import` run with host A's environment stores the file as the directory's next version in
    the database; every gunicorn worker of both instances serves it within tuning.directory_check_seconds, and
    neither instance was restarted."""
    from tests.referrals import samples

    masters = {name: hosts.procs[f"app-{name}"].popen.pid for name in ("a", "b")}
    before = {name: served_directory(hosts.urls[name]) for name in ("a", "b")}
    count = int(before["a"].split()[0])
    source = samples.write_hsds_json(tmp_path / "county-programs.json", samples.hsds_services())
    done = subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "smart_app", "directory", "import",
                           str(source)], env={**hosts.env, "HOME": str(hosts.folder / "host-a")}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    version = int(re.search(r"directory version (\d+)", done.stdout).group(1))
    added = len(samples.hsds_services())
    expected = f"{count + added} services, version {version}"
    for name in ("a", "b"):  # every worker of the instance: so many answers in a row show the new version
        in_a_row = 0

        def served(name: str = name) -> bool:
            nonlocal in_a_row
            in_a_row = in_a_row + 1 if served_directory(hosts.urls[name]) == expected else 0
            return in_a_row >= 8

        wait_for(served, f"instance {name} does not serve version {version}", hosts, seconds=30)
    assert {name: hosts.procs[f"app-{name}"].popen.pid for name in ("a", "b")} == masters
    assert all(hosts.procs[f"app-{name}"].alive() for name in ("a", "b"))
    assert hosts.scalar("SELECT count(*) FROM directory_import") >= 1
