"""The social worker's queue page (GET /l/<lid>/worklist) with 200 and 1,000 referrals in scope.

Referrals are made the way a clinician makes them: ten through the consent page (the project's own test helper,
``tests.worklist.support.make_referral``: three sites, two EHRs, urgent or not, several safe-contact channels), then
copied row by row (referral, site keys, program index and outbox rows; a new id and a re-encrypted summary with
another name) up to the wanted count, with ages spread over two weeks and some contacted or closed. As many
referrals again are out of the social worker's scope (another site of the same EHR, the same sites of another EHR),
so the scoping query has something to leave out. The social worker covers BWH and MGH from their EHR role.

Per page: CPU time of the request (time.process_time: the machine is shared) as median and p95 over repeated
requests, and the SQL statements it sends (an SQLAlchemy ``before_cursor_execute`` listener), for the default
view (open referrals, urgent first) and for a filtered, program-sorted view. Targets (printed as pass/miss,
never asserted): median <= 50 ms with 200 referrals in scope; SQL statements per page the same at 200 and 1,000.

    python -m benchmarks.bench_worklist [--repeat 25]
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TARGET_MS = 50.0
SIZES = (200, 1000)
VIEWS = {"default": "", "filtered": "?status=all&urgency=routine&sort=program"}


def _seeds(app: Any) -> tuple[list[str], list[str]]:
    """Referrals through the consent page: (in the social worker's scope, outside it)."""
    from tests.conftest import launch_for
    from tests.worklist.support import EHR1, EHR2, make_referral

    def make_launch(client: Any, context: Any = None, data: Any = None, iss: str = EHR1, kind: str = "ehr") -> str:
        return launch_for(app, client, context, data, iss=iss, kind=kind)

    mine, other = [], []
    channels = ("phone", "text", "none", "email")
    for i, (site, danger, language) in enumerate([("bwh", False, "en"), ("bwh", True, "es"), ("mgh", False, "pt"),
                                                  ("mgh", True, "en"), ("bwh", False, "en"),
                                                  ("mgh", False, "es")]):
        mine.append(make_referral(app, make_launch, site, f"seed-{i}", f"Seed Patient {i}", danger=danger,
                                  channel=channels[i % len(channels)], language=language))
    for i, (site, iss) in enumerate([("mgh-chelsea", EHR1), ("mgh-chelsea", EHR1), ("bwh", EHR2), ("mgh", EHR2)]):
        other.append(make_referral(app, make_launch, site, f"other-{i}", f"Other Patient {i}", iss=iss,
                                   channel=channels[i % len(channels)]))
    return mine, other


def _copy(app: Any, seeds: list[str], n: int, rng: random.Random) -> None:
    """n copies of the seed referrals, row by row, each with its own id, name, age and status."""
    from sqlalchemy import insert, select

    from smart_app.store.crypto import decrypt_json, encrypt_json
    from smart_app.store.db import session_scope
    from smart_app.store.models import OutboxItem, ReferralProgram, ReferralRecord, ReferralSite, new_id

    ref_cols = [c.key for c in ReferralRecord.__table__.columns]
    out_cols = [c.key for c in OutboxItem.__table__.columns if c.key != "id"]
    now = datetime.now(UTC)
    with app.app_context(), session_scope(app) as db:
        templates = []
        for rid in seeds:
            rec = db.execute(select(ReferralRecord.__table__).where(ReferralRecord.id == rid)).one()._asdict()
            keys = list(db.scalars(select(ReferralSite.key).where(ReferralSite.referral_id == rid)))
            rows = [r._asdict() for r in db.execute(select(OutboxItem.__table__)
                                                    .where(OutboxItem.referral_id == rid))]
            programs = [r._asdict() for r in db.execute(select(ReferralProgram.key, ReferralProgram.program_enc)
                                                        .where(ReferralProgram.referral_id == rid))]
            templates.append((rec, decrypt_json(rec["summary_enc"]), keys, rows, programs))
        refs, sites, outbox, indexed = [], [], [], []
        for i in range(n):
            rec, summary, keys, rows, programs = templates[i % len(templates)]
            rid = new_id()
            created = now - timedelta(hours=rng.uniform(0, 24 * 14))
            status = rng.choices(["requested", "accepted", "in-progress", "completed", "rejected"],
                                 [6, 2, 2, 1, 1])[0]
            contacted = status != "requested" and rng.random() < 0.7
            refs.append({**{k: rec[k] for k in ref_cols}, "id": rid, "launch_id": None, "created_at": created,
                         "status": status, "first_contact_at": created + timedelta(hours=2) if contacted else None,
                         "closed_at": now if status in ("completed", "rejected") else None,
                         "summary_enc": encrypt_json({**summary, "patient_name": f"Patient {i:04d}",
                                                      "mrn": f"MRN-{i:06d}", "patient_id": f"pat-{i}"})})
            sites += [{"referral_id": rid, "key": k} for k in keys]
            indexed += [{**p, "referral_id": rid} for p in programs]
            for row in rows:
                state = rng.choices(["written", "pending", "failed"], [8, 1, 1])[0]
                outbox.append({**{k: row[k] for k in out_cols}, "referral_id": rid, "status": state,
                               "identifier_value": f"{rid}.{row['kind'].lower()}",
                               "label_status": "ok" if state == "written" else None})
        for table, values in ((ReferralRecord, refs), (ReferralSite, sites), (OutboxItem, outbox),
                              (ReferralProgram, indexed)):
            for start in range(0, len(values), 500):
                db.execute(insert(table), values[start:start + 500])


class StatementCounter:
    """SQL statements the app's engine sends (each cursor execute, as the database sees them)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.count = 0
        event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, *_args: Any) -> None:
        self.count += 1


def measure(client: Any, url: str, counter: StatementCounter, repeat: int) -> dict[str, Any]:
    client.get(url)  # warm: templates compiled, directory loaded
    cpu, statements = [], []
    page = ""
    for _ in range(repeat):
        before = counter.count
        start = time.process_time()
        resp = client.get(url)
        cpu.append((time.process_time() - start) * 1000)
        statements.append(counter.count - before)
        assert resp.status_code == 200, resp.status_code
        page = resp.get_data(as_text=True)
    shown = re.search(r'data-testid="shown-count">([^<]*)<', page)
    rows = len(re.findall(r'data-testid="referral-', page))
    return {"median": statistics.median(cpu), "p95": statistics.quantiles(cpu, n=20)[-1],
            "statements": max(statements), "rows": rows, "shown": shown.group(1).strip() if shown else "?"}


def run(size: int, tmp: Path, repeat: int) -> dict[str, dict[str, Any]]:
    from smart_app import create_app
    from tests.conftest import app_config, launch_for
    from tests.worklist.support import EHR1, SNOMED_SW, role, worker_context

    app = create_app(app_config(f"sqlite:///{tmp / f'queue-{size}.db'}"))
    try:
        rng = random.Random(size)
        mine, other = _seeds(app)
        _copy(app, mine, size - len(mine), rng)
        _copy(app, other, size - len(other), rng)
        client = app.test_client()
        roles = [role([SNOMED_SW], organizations=["Organization/org-bwh", "Organization/org-mgh"])]
        lid = launch_for(app, client, worker_context("Practitioner/sw", "Sam Social", roles,
                                                     "openid fhirUser user/Task.rus user/ServiceRequest.rus"),
                         iss=EHR1, kind="standalone")
        counter = StatementCounter(app.extensions["db_engine"])
        gc.collect()
        gc.freeze()  # as a preloaded gunicorn worker runs (config/gunicorn.conf.py): what start-up loaded is frozen
        return {view: measure(client, f"/l/{lid}/worklist{query}", counter, repeat) for view, query in VIEWS.items()}
    finally:
        gc.unfreeze()
        app.extensions["db_engine"].dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args(argv)
    for name in ("werkzeug", "ipv", "ipv.crypto", "smart_app", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    print(f"social-work queue page, SQLite, CPU per request over {args.repeat} requests; as many referrals again "
          "out of scope (another site, another EHR)")
    print(f"{'in scope':>9}  {'view':<9}{'median ms':>10}{'p95 ms':>8}{'SQL/page':>9}{'rows':>6}  shown")
    results: dict[int, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as d:
        for size in SIZES:
            results[size] = run(size, Path(d), args.repeat)
            for view, r in results[size].items():
                print(f"{size:>9,}  {view:<9}{r['median']:>10.1f}{r['p95']:>8.1f}{r['statements']:>9}{r['rows']:>6}"
                      f"  {r['shown']}", flush=True)
    small, large = results[SIZES[0]]["default"], results[SIZES[-1]]
    print(f"targets: median {small['median']:.1f} ms at {SIZES[0]} (<= {TARGET_MS:.0f} ms: "
          f"{'pass' if small['median'] <= TARGET_MS else 'miss'}); SQL statements per page "
          + ", ".join(f"{v} {results[SIZES[0]][v]['statements']} -> {large[v]['statements']}" for v in VIEWS)
          + f" from {SIZES[0]:,} to {SIZES[-1]:,} (independent of the referrals: "
          + ("pass" if all(results[SIZES[0]][v]["statements"] == large[v]["statements"] for v in VIEWS) else "miss")
          + ")")


if __name__ == "__main__":
    main()
