"""Many referrals at once, for the queue at hospital scale (tests/worklist/test_queue_scale.py and
benchmarks/bench_worklist.py): Core inserts of whole rows (referral, site keys, program index), a few seconds for
50,000 on PostgreSQL, with a plain-Python record of each (``Made``) for an independent tally.

Every referral is a consented referral as the consent page stores it: routed by coverage to the EHR's social
workers, site keys of the encounter's organization,
a program index row per program (keyed HMAC + encrypted name), an encrypted summary (taken from a small pool of
summaries encrypted once: only the page shown decrypts one), a reference code and an MRN key. Ages stay clear
of the queue's time boundaries (24 h and 7 days) by half an hour, so a tally made at insert time and the page
read seconds later agree.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from config.current import settings_of
from config.ehrs import ehr_id_for
from fhir.builders import reference_code
from smart_app.store.crypto import encrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralProgram, ReferralRecord, ReferralSite, new_id
from smart_app.worklist.routing import COVERAGE
from smart_app.worklist.scope import NO_PROGRAM, program_key, program_keys_of
from smart_app.worklist.search import mrn_key

# (site name as the EHR names it, organization key the social worker's role covers); None: no name recorded.
IN_SCOPE_SITES = [("Brigham and Women's Hospital", "Organization/org-bwh"),
                  ("BWH Emergency Department", "Organization/org-bwh"),
                  ("Massachusetts General Hospital", "Organization/org-mgh"),
                  ("MGH Women's Health", "Organization/org-mgh"),
                  (None, "Organization/org-mgh")]
OUT_OF_SCOPE_SITE = ("MGH Chelsea HealthCare Center", "Organization/org-mgh-chelsea")
# Two programs share a name (one program at two services): a referral naming both counts once under it.
PROGRAMS = [("passageway", "Passageway at BWH"), ("haven", "HAVEN at MGH"), ("casa", "Casa Myrna"),
            ("rcc", "Boston Area Rape Crisis Center"), ("legal-a", "DV Legal Clinic"),
            ("legal-b", "DV Legal Clinic")]
STATUS_WEIGHTS = {"requested": 30, "accepted": 10, "in-progress": 12, "on-hold": 3, "completed": 20, "cancelled": 3,
                  "rejected": 4, "new": 2, "contacted": 2, "closed": 2}
CLOSED_RAW = {"completed", "cancelled", "rejected", "closed"}
BOUNDARIES_H = (24.0, 24.0 * 7)
POOL = 16


@dataclass(frozen=True)
class Made:
    """One inserted referral as a plain record (what an independent tally counts)."""

    id: str
    created_at: datetime
    status: str
    urgent: bool
    contacted: bool
    site_name: str | None
    programs: tuple[str, ...]  # names, as the queue lists them
    program_ids: tuple[str, ...]
    mrn: str


def _age_hours(rng: random.Random, max_days: float) -> float:
    while True:
        hours = rng.uniform(0.1, max_days * 24)
        if all(abs(hours - b) > 0.5 for b in BOUNDARIES_H):
            return hours


def insert_referrals(app: Any, n: int, *, iss: str, now: datetime, seed: int = 1, max_days: float = 90,
                     site: tuple[str | None, str] | None = None, batch: int = 5000) -> list[Made]:
    """Insert ``n`` referrals of EHR ``iss`` (at ``site``, else spread over IN_SCOPE_SITES); returns them."""
    rng = random.Random(seed)
    ehr = ehr_id_for(iss, settings_of(app))
    statuses, weights = list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values())
    made: list[Made] = []
    with app.app_context(), session_scope(app) as db:
        pool = [encrypt_json({"patient_name": f"Bulk Patient {i:02d}", "mrn": f"BULK-{i:02d}", "language": "en",
                              "programs": [], "safe_contact": {"channel": ("phone", "text", "none")[i % 3]}})
                for i in range(POOL)]
        program_blobs = {pid: encrypt_json({"id": pid, "name": name}) for pid, name in PROGRAMS}
        keys = {pid: program_key({"id": pid, "name": name}) for pid, name in PROGRAMS}
        names = dict(PROGRAMS)
        for start in range(0, n, batch):
            refs, sites, programs = [], [], []
            for i in range(start, min(n, start + batch)):
                rid = new_id()
                site_name, org = site or rng.choice(IN_SCOPE_SITES)
                status = rng.choices(statuses, weights)[0]
                urgent = rng.random() < 0.25
                created = now - timedelta(hours=_age_hours(rng, max_days))
                contacted = status not in ("requested", "new") and rng.random() < 0.8
                chosen = rng.sample([p for p, _ in PROGRAMS], k=rng.choice((0, 1, 1, 1, 2)))
                mrn = f"BULK-{seed}-{i}"
                refs.append({"id": rid, "launch_id": None, "iss": iss, "ehr": ehr, "route_kind": COVERAGE,
                             "route_team": None, "profile": "generic-smart2", "site": None,
                             "urgent": urgent, "status": status, "status_by": None, "status_at": None,
                             "created_at": created, "summary_enc": pool[i % POOL], "site_name": site_name,
                             "patient_key": None, "encounter_key": None,
                             "first_contact_at": created + timedelta(minutes=30) if contacted else None,
                             "closed_at": now if status in CLOSED_RAW else None,
                             "reference_code": reference_code(rid), "mrn_key": mrn_key(mrn),
                             "program_keys": program_keys_of(keys[p] for p in chosen)})
                sites.append({"referral_id": rid, "key": org})
                programs += [{"referral_id": rid, "key": keys[p], "program_enc": program_blobs[p]} for p in chosen]
                if not chosen:
                    programs.append({"referral_id": rid, "key": NO_PROGRAM, "program_enc": None})
                made.append(Made(id=rid, created_at=created, status=status, urgent=urgent, contacted=contacted,
                                 site_name=site_name, programs=tuple(dict.fromkeys(names[p] for p in chosen)),
                                 program_ids=tuple(chosen), mrn=mrn))
            conn = db.connection()
            for table, rows in ((ReferralRecord, refs), (ReferralSite, sites), (ReferralProgram, programs)):
                conn.execute(insert(table.__table__), rows)  # one executemany: the driver pipelines the rows
            db.commit()
    return made
