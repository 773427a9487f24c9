"""Discovery and JWKS caches: read ahead at start-up, refreshed in the background before they expire."""

from __future__ import annotations

import threading

from fhir.smart.ttl_cache import RefreshingCache


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_fresh_entry_is_served_without_fetching_and_refreshed_ahead_in_the_background():
    clock, calls, done = Clock(), [], threading.Event()

    def fetch():
        calls.append(clock.now)
        done.set()
        return len(calls)

    cache = RefreshingCache(100, clock=clock)
    assert cache.get("k", fetch) == 1
    clock.now += 50  # mid-life: served from the cache, no refetch
    assert cache.get("k", fetch) == 1 and len(calls) == 1
    clock.now += 35  # last fifth of its life: still served at once, refetched in the background
    done.clear()
    assert cache.get("k", fetch) == 1
    assert done.wait(5) and len(calls) == 2
    assert cache.get("k", fetch) == 2  # the refreshed value, no foreground fetch
    assert len(calls) == 2


def _settled(cache: RefreshingCache) -> None:
    """Wait until the background refresh has fully finished (its bookkeeping runs after the fetch)."""
    import time

    for _ in range(500):
        if not cache._refreshing:
            return
        time.sleep(0.01)
    raise AssertionError("background refresh never finished")


def test_failed_background_refresh_keeps_the_entry_until_it_expires():
    clock, attempts = Clock(), []
    cache = RefreshingCache(100, clock=clock)
    cache.get("k", lambda: "v1")
    finished = threading.Event()

    def broken():
        attempts.append(1)
        finished.set()
        raise OSError("EHR down")

    clock.now += 90
    assert cache.get("k", broken) == "v1"
    assert finished.wait(5)
    _settled(cache)
    clock.now += 5
    finished.clear()
    assert cache.get("k", broken) == "v1"  # still served: the failure changed nothing (and is retried)
    assert finished.wait(5) and len(attempts) == 2
    clock.now += 10  # expired: the next read fetches in the foreground
    assert cache.get("k", lambda: "v2") == "v2"


def test_start_up_prefetch_reads_discovery_and_jwks_of_every_allowed_issuer(sandbox, tmp_path):
    """A warmed-up app launches with no discovery or JWKS read: both were read at start-up."""

    from fhir.smart import id_token
    from smart_app import create_app
    from smart_app.launch.ehr import prefetch_issuers
    from tests.conftest import app_config

    app = create_app(app_config(f"sqlite:///{tmp_path / 'a.db'}", ALLOWED_ISS=[sandbox.iss, "http://127.0.0.1:9/fhir"]))
    with app.app_context():
        assert prefetch_issuers(timeout=2) == ["http://127.0.0.1:9/fhir"]  # a down EHR is skipped, not fatal
        assert "smart_http" not in app.extensions  # its connections closed before any fork
        cached = app.extensions["smart_discovery"]._cache._entries
    assert any(k.startswith(sandbox.iss.rstrip("/")) for k in cached)
    assert any(k.startswith(sandbox.url) for k in id_token._default_cache._cache._entries)


def test_the_cache_keeps_at_most_its_bound_and_drops_what_expires_first():
    """Keys can come from the EHR (a style URL per token response): the cache never grows past its bound."""
    clock = Clock()
    cache = RefreshingCache(100, max_entries=3, clock=clock)
    for i, key in enumerate(("a", "b", "c")):
        clock.now += 1
        cache.get(key, lambda i=i: i)
    cache.get("a", lambda: "again")  # a hit changes nothing
    clock.now += 1
    cache.get("d", lambda: 3)
    assert len(cache) == 3
    assert cache.get("a", lambda: "refetched") == "refetched"  # "a" expired first, so it went
    assert cache.get("d", lambda: "refetched") == 3 and len(cache) == 3


def test_a_restarted_app_reads_the_style_its_ehr_named_so_its_first_launch_makes_only_token_and_context_calls(
        tmp_path):
    """The style URL comes in the token response: a process started after launches reads it at start-up from the
    newest launch of each allow-listed EHR (as it reads discovery and JWKS), so its first launch calls the EHR for
    the token and the context only, and the pages still carry the EHR's style."""
    from smart_app import create_app
    from smart_app.launch import ehr as launch_ehr
    from tests.conftest import app_config
    from tests.launch.test_launch_sandbox import configure, launch, launch_id, stored
    from tests.support.keepalive import sandbox_kept_alive

    apps = []
    config = app_config(f"sqlite:///{tmp_path / 'app.db'}")  # one deployment: the same keys in both processes
    try:
        with sandbox_kept_alive(tmp_path) as (sandbox, server):
            for _ in range(2):  # the first process launches once; the second starts after it on the same database
                app = create_app(config)
                apps.append(app)
                configure(app, sandbox, "jwt-rs384")
                launch_ehr.warm_up(app)
                seen = len(server.requests_seen)
                lid = launch_id(launch(app.test_client(), sandbox, "pat-alice", "enc-alice-bwh")[0])
            calls = [path for _peer, _method, path in server.requests_seen[seen:]
                     if path not in ("/ehr/launch", "/auth/authorize")]
            assert sorted(calls) == ["/auth/token", "/fhir/"], calls
            with apps[-1].app_context():  # the style read at start, applied to this launch
                assert stored(apps[-1], lid).context["smart_style"]
    finally:
        for app in apps:
            app.extensions["db_engine"].dispose()
