"""Token refresh across processes: two processes (web instances, the outbox worker) that find the same launch's
token expired at the same moment make one refresh call to the EHR between them, and both end with a token the EHR
accepts. The sandbox EHR's refresh tokens are single use: a second refresh with the same token is a replay, which
revokes the grant (the second process, and every later write of the visit, would have no sign-in)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from config.current import settings_of
from sandbox_ehr.harness.vendor import Journey, start
from tests.support import tools

pytestmark = pytest.mark.security

ROOT = Path(__file__).resolve().parents[2]
PATIENT, ENCOUNTER = "pat-alice", "enc-alice-bwh"


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PostgreSQL (its row lock) where there is one, and always under CI; SQLite (its write lock) otherwise."""
    if tools.postgres_base_url(optional=True):
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'app.db'}"


def expire_token(env, lid: str) -> None:
    from smart_app.launch.state import Launch
    from smart_app.store.db import get_session
    from smart_app.store.models import LaunchRecord

    with env.app.test_request_context():
        launch = Launch(get_session().get(LaunchRecord, lid))
        assert launch.tokens.get("refresh_token"), "the deployment asks for online_access: a refresh token"
        launch.set_tokens({**launch.tokens, "expires_at": 0})
        launch.save()


def test_two_processes_refreshing_one_launch_make_one_refresh_call_and_both_have_a_valid_token(tmp_path, db_url):
    env = start("generic", tmp_path, db_url=db_url)
    try:
        lid = Journey(env).launch(PATIENT, ENCOUNTER)
        expire_token(env, lid)
        requests.delete(env.server.url + "/__faults", timeout=10)  # counts from here
        # The token answer takes about half a second: the second process asks while the first one waits for it.
        env.faults(trickle=["token"], trickle_bytes_per_second=2000)
        settings = settings_of(env.app)
        config = {"TESTING": True, **{k: getattr(settings, k.lower()) for k in (
            "DATABASE_URL", "SECRET_KEY", "TOKEN_ENCRYPTION_KEY", "SESSION_COOKIE_SECURE", "ALLOWED_ISS",
            "HTTP_TIMEOUT_SECONDS")}}
        go = tmp_path / "go"
        spec = tmp_path / "refresh.json"
        spec.write_text(json.dumps({"personality": env.personality, "iss": env.iss, "config": config,
                                    "launch": lid, "patient": PATIENT, "go": str(go)}))
        procs = [subprocess.Popen([sys.executable, "-m", "tests.security.refresh_proc", str(spec)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
        try:
            for proc in procs:
                assert proc.stdout.readline().strip() == "ready"
            go.write_text("go")
            answers = [json.loads(proc.communicate(timeout=120)[0].strip().splitlines()[-1]) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        counts = requests.get(env.server.url + "/__faults", timeout=10).json()["refresh"]
        assert counts == {"used": 1, "replayed": 0}, (counts, answers)
        assert all(a.get("read") for a in answers), answers
        assert answers[0]["token"] == answers[1]["token"]  # the loser uses the token the winner stored
    finally:
        env.close()
