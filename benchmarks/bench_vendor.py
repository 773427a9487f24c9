"""Chart write-back per sandbox EHR personality (generic, epic, oracle): EHR calls per referral and referrals/s.

For each personality: N referrals consented through the app's consent page (preview digest + POST, as a
clinician does), then the outbox worker threads send them to a live sandbox EHR in that personality, clean and with
~30% of writes faulted (5xx, 429, timeouts, fail-after-commit). "EHR calls/ref" counts every /fhir request the EHR
received for the sends (creates, searches before a re-send, read-backs, retries), from the EHR's own call log; the
"notes" column is what the EHR keeps (duplicates show as more notes than referrals). Last, the consent POST's
duration while the EHR takes 5 s per call (the POST never waits on the EHR). Figures only: nothing is asserted.

    python -m benchmarks.bench_vendor [--referrals 100] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FAULTS = {"error_rate": 0.15, "timeout_rate": 0.05, "timeout_seconds": 0.2, "fail_after_commit_rate": 0.10,
          "apply_to": "writes", "seed": 8}
RESOURCES = {"generic": ["ServiceRequest", "DocumentReference"], "epic": ["DocumentReference"],
             "oracle": ["DocumentReference"]}


def run(personality: str, tmp: Path, *, n: int, workers: int, faults: bool) -> dict[str, Any]:
    from sandbox_ehr.harness.vendor import FAST, consent_many, start
    from smart_app.outbox.worker import OutboxWorker

    env = start(personality, tmp, db_url=f"sqlite:///{tmp / 'app.db'}",
                **{**FAST, "OUTBOX_LEASE_SECONDS": 15, "OUTBOX_MAX_ATTEMPTS": 50})
    try:
        consent_many(env, n, RESOURCES[personality])
        env.faults(**FAULTS) if faults else env.faults()
        before = len(env.calls())
        began = time.perf_counter()
        threads = [threading.Thread(target=OutboxWorker(env.app).drain, kwargs={"max_seconds": 600})
                   for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        calls = env.calls()[before:]
        injected = env.sandbox.extensions["sandbox_faults"].snapshot()["injected"]
        return {"per_second": n / elapsed, "seconds": elapsed, "calls_per_ref": len(calls) / n,
                "notes": len(env.documents()), "faulted": injected["errors"] + injected["timeouts"]
                + injected["failed_after_commit"]}
    finally:
        env.close()


def slow_consent(personality: str, tmp: Path, n: int = 5) -> float:
    """Median consent POST seconds while every EHR call takes 5 s."""
    from sandbox_ehr.harness.vendor import consent_many, start

    env = start(personality, tmp, db_url=f"sqlite:///{tmp / 'slow.db'}")
    try:
        env.faults(latency_seconds=5)
        return statistics.median(consent_many(env, n, RESOURCES[personality]))
    finally:
        env.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    for name in ("werkzeug", "ipv.outbox", "ipv", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    print(f"vendor write-back: {args.referrals} referrals, {args.workers} worker threads, live sandbox EHR")
    print(f"{'personality':<12}{'faults':<8}{'ref/s':>8}{'seconds':>9}{'EHR calls/ref':>15}{'faulted':>9}{'notes':>7}")
    for personality in ("generic", "epic", "oracle"):
        for faults in (False, True):
            with tempfile.TemporaryDirectory() as d:
                r = run(personality, Path(d), n=args.referrals, workers=args.workers, faults=faults)
            print(f"{personality:<12}{'on' if faults else 'off':<8}{r['per_second']:>8.1f}{r['seconds']:>9.1f}"
                  f"{r['calls_per_ref']:>15.2f}{r['faulted']:>9}{r['notes']:>7}", flush=True)
    for personality in ("epic", "oracle"):
        with tempfile.TemporaryDirectory() as d:
            seconds = slow_consent(personality, Path(d))
        print(f"consent POST with a 5 s EHR ({personality}): median {seconds * 1000:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
