"""The fault suite: 500 consented referrals written to an EHR that ignores If-None-Exist (epic, oracle), with about
30% of writes faulted (5xx, 429, 504 timeouts, fail-after-commit) and a worker process killed (SIGKILL) while it is
sending. The EHR must end with exactly one note per referral: 500 notes, 0 duplicates, none missing. Counted in the
EHR's own store, matched by the note text each referral planned (its reference code makes every text unique)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from config.current import settings_of
from sandbox_ehr.harness.vendor import FAST, consent_many, note_text, start
from tests.support import tools

pytestmark = [pytest.mark.vendor, pytest.mark.slow]

N = int(os.environ.get("VENDOR_FAULT_REFERRALS", "500"))
FAULTS = {"error_rate": 0.15, "timeout_rate": 0.05, "timeout_seconds": 0.2, "fail_after_commit_rate": 0.10,
          "apply_to": "writes", "seed": 8}
# The lease outlives a send (tuning.http_timeout_seconds 5 s), so only a dead worker's rows are taken over.
SUITE = {**FAST, "OUTBOX_LEASE_SECONDS": 15, "OUTBOX_MAX_ATTEMPTS": 50}


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PostgreSQL (a fresh schema on TEST_DATABASE_URL) as a deployment runs, and always under CI, where the
    worker's claims and leases race for real; SQLite only on a developer's machine without PostgreSQL."""
    if tools.postgres_base_url(optional=True):
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'app.db'}"


def _planned_notes(env) -> Counter:
    from smart_app.store.crypto import decrypt_json
    from smart_app.store.db import session_scope
    from smart_app.store.models import OutboxItem

    texts: Counter = Counter()
    with env.app.app_context(), session_scope(env.app) as db:
        for row in db.scalars(select(OutboxItem).where(OutboxItem.kind == "DocumentReference")):
            doc = decrypt_json(row.resource_enc)
            texts[base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()] += 1
    return texts


def _kill_a_worker_mid_send(env, tmp_path: Path) -> None:
    """Run a worker process against a slow EHR and SIGKILL it while its writes are in flight."""
    spec = tmp_path / "worker.json"
    settings = settings_of(env.app)
    config = {"TESTING": True, "WTF_CSRF_ENABLED": False,
              **{k: getattr(settings, k.lower()) for k in ("DATABASE_URL", "SECRET_KEY", "TOKEN_ENCRYPTION_KEY",
                                                           "SESSION_COOKIE_SECURE", "ALLOWED_ISS", *SUITE)}}
    spec.write_text(json.dumps({"personality": env.personality, "iss": env.iss, "config": config}))
    env.faults(**FAULTS, latency_seconds=0.3)  # every write spends 0.3 s at the EHR: a kill lands mid-send
    before = len(env.documents())
    proc = subprocess.Popen([sys.executable, "-m", "tests.vendor.worker_proc", str(spec)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(env.documents()) < before + 15 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(0.15)  # inside the next write's 0.3 s at the EHR
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert len(env.documents()) > before, "the worker process never wrote"


@pytest.mark.parametrize("personality", ["epic", "oracle"])
def test_500_referrals_with_faults_and_a_killed_worker_give_exactly_500_notes(personality, tmp_path, db_url):
    from smart_app.outbox.worker import OutboxWorker

    env = start(personality, tmp_path, db_url=db_url, **SUITE)
    try:
        consent_many(env, N)
        planned = _planned_notes(env)
        assert sum(planned.values()) == N and max(planned.values()) == 1  # every referral's note is unique

        _kill_a_worker_mid_send(env, tmp_path)
        env.faults(**FAULTS)  # faults stay on; the EHR is fast again
        stop = time.monotonic() + 600
        workers = [OutboxWorker(env.app) for _ in range(2)]
        threads = [threading.Thread(target=w.drain, kwargs={"max_seconds": 600}) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, stop - time.monotonic()))
        injected = env.sandbox.extensions["sandbox_faults"].snapshot()["injected"]
        assert injected["failed_after_commit"] > 0 and injected["errors"] > 0
        kept = Counter(note_text(d) for d in env.documents())
        duplicates = {t: c for t, c in kept.items() if c > 1}
        missing = set(planned) - set(kept)
        assert not duplicates, f"{len(duplicates)} notes filed more than once"
        assert not missing, f"{len(missing)} referrals have no note in the EHR"
        assert sum(kept.values()) == N and set(kept) == set(planned)
    finally:
        env.close()
