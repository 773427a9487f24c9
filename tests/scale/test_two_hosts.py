"""Two hosts (tests/support/hosts.py): two app instances under gunicorn on separate ports, two outbox workers, the
sandbox EHR as its own process, one PostgreSQL database and Redis. One stack for the module. Correctness only, never
timings: a launch that moves between instances at every request, rate limits counted once across both, one token
refresh for a launch however many processes ask at once, every referral's note written exactly once by the two
workers with one of them killed mid-send."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from benchmarks.bench_load import PATIENTS, Clinician
from tests.support.hosts import TwoHosts

pytestmark = [pytest.mark.scale, pytest.mark.postgres]

LAUNCH_LIMIT = 30  # per client address and minute, on /launch: this stack's tuning.ratelimit_launch
TUNING = {"ratelimit_launch": f"{LAUNCH_LIMIT} per minute", "ratelimit_callback": "1000 per minute",
          # A killed worker's claim is taken over once its lease runs out (a send takes well under a second here).
          "outbox_lease_seconds": 4, "outbox_base_delay": 0.2, "outbox_max_delay": 1.0}
CLINICIANS = 12


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHosts]:
    stack = TwoHosts(tmp_path_factory.mktemp("two-hosts"), tuning=TUNING).start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def fresh_limits(hosts: TwoHosts) -> Iterator[None]:
    """The rate-limit counts start at zero (every test here launches from this one address)."""
    import redis

    store = redis.Redis.from_url(hosts.redis_url)
    store.flushdb()
    yield
    store.flushdb()


class RoundRobin(Clinician):
    """A browser whose every request goes to the other instance than its previous one: a load balancer without
    sticky sessions at its least kind. ``served`` lists (page, instance URL) of each request."""

    def __init__(self, hosts: TwoHosts, visit: tuple[str, str], first: str = "a", second: str = "b"):
        self.served: list[tuple[str, str]] = []
        self.order = [hosts.urls[first], hosts.urls[second]]
        super().__init__(self.order[0], hosts.sandbox_url, hosts.iss, visit, [])

    def _timed(self, page: str, method: str, path: str, **kw: Any) -> requests.Response:
        self.base = self.order[len(self.served) % 2]
        self.served.append((page, self.base))
        return super()._timed(page, method, path, **kw)

    def launch_only(self) -> str:
        assert self.launch(), self.record
        return self.lid

    def walk(self) -> None:
        self._walk()

    def failures(self) -> list[tuple[str, int]]:
        return [(page, status) for page, _, status in self.record if status >= 400]


def wait_for(condition, what: str, hosts: TwoHosts, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}\n{hosts.log_tail()}"
        time.sleep(0.1)


def outbox_settled(hosts: TwoHosts) -> bool:
    return not hosts.scalar("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')")


def test_a_launch_continues_on_the_other_instance_at_every_request_through_to_a_consented_referral(hosts,
                                                                                                    fresh_limits):
    before = hosts.scalar("SELECT count(*) FROM referral")
    clinician = RoundRobin(hosts, PATIENTS[0])
    clinician.walk()
    assert clinician.lid and not clinician.failures(), (clinician.failures(), hosts.log_tail())
    pages = [page for page, _ in clinician.served]
    assert pages[:2] == ["launch", "callback"] and "consent POST" in pages and pages[-1] == "done"
    by_instance = {url: [p for p, u in clinician.served if u == url] for url in hosts.urls.values()}
    # /launch on A, /callback on B: the pending sign-in (PKCE verifier, state, nonce) is in the database, the
    # browser's binding in the cookie both instances sign with the same SECRET_KEY.
    assert by_instance[hosts.urls["a"]][0] == "launch" and by_instance[hosts.urls["b"]][0] == "callback"
    assert all(by_instance.values()) and abs(len(by_instance[hosts.urls["a"]]) - len(by_instance[hosts.urls["b"]])) <= 1
    assert hosts.scalar("SELECT count(*) FROM referral") == before + 1
    assert hosts.scalar("SELECT count(*) FROM referral WHERE launch_id = :lid", lid=clinician.lid) == 1
    wait_for(lambda: outbox_settled(hosts), "the referral's writes were not sent", hosts)
    assert hosts.scalar("SELECT count(*) FROM outbox WHERE launch_id = :lid AND status <> 'written'",
                        lid=clinician.lid) == 0


def test_rate_limits_are_counted_once_across_both_instances_in_redis(hosts, fresh_limits):
    statuses = []
    for i in range(LAUNCH_LIMIT + 4):
        instance = hosts.urls["a" if i % 2 == 0 else "b"]
        statuses.append((instance, requests.get(instance + "/launch", timeout=10).status_code))
    allowed = [s for s in statuses if s[1] != 429]
    refused = [s for s in statuses if s[1] == 429]
    # Half of the requests went to each instance: each alone saw fewer than the limit, together they reached it.
    assert len(allowed) == LAUNCH_LIMIT, statuses
    assert statuses[:LAUNCH_LIMIT] == allowed and {u for u, _ in refused} == set(hosts.urls.values())
    import redis

    keys = [k.decode() for k in redis.Redis.from_url(hosts.redis_url).keys("*")]
    assert any("ipv-rl" in k and "launch" in k for k in keys), keys


def test_an_instance_and_a_worker_through_pgbouncer_in_transaction_mode_carry_whole_journeys(hosts, fresh_limits):
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
        for visit in PATIENTS:  # each page reads the launch again: statements psycopg would otherwise prepare
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
