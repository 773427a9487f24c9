"""A year of a 50-hospital health system's data in PostgreSQL, made in SQL (``generate_series``, one INSERT per table),
for the benchmarks at volume (benchmarks/bench_scale.py) and, reduced, the `scale` tests (tests/scale/).

The schema is the real one (`db upgrade`: month partitions included). What is made, for ``referrals`` referrals:
- 50 sites of two EHRs (35 and 15 sites), sizes falling off as 1/rank^0.9 (the largest hospital makes 19% of the
  referrals, the three largest 36%, the smallest clinic 0.5%), each with a site key per Organization and Location;
- referrals over the 365 days before ``now``: 5% open (made in the last 60 days, most in the last fortnight), a
  fifth urgent, 90% routed by coverage, 7% to a fallback team, 3% unrouted; one or two programs of the site's
  three (or none, one in ten); contacted, closed with an outcome; site keys, program index, report dimensions;
- three status events per closed referral, one per open one taken;
- two outbox rows per referral (a note and a ServiceRequest), written, and one pending row per ten referrals
  (100,000 at a million) due over the last hour and the next;
- ``audit_per_referral`` audit rows per referral spread over the year in time order, and
  ``report_per_referral`` report events per referral (screens offered, completed, positive...), by month.

Encrypted columns (summaries, program names, audit patients) come from a small pool encrypted with the keys kept
in the database's ``scale_meta`` table, so a later run can read the rows it shows. Deterministic for a seed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Engine, create_engine, text

EHR1 = "http://127.0.0.1:9/fhir"  # the sandbox harness's two EHRs (sandbox_ehr/harness/launches.py)
EHR2 = "http://127.0.0.1:9/other/fhir"
SITES = 50
EHR1_SITES = 35
SIZE_EXPONENT = 0.9  # site sizes fall off as 1 / rank ** 0.9
OPEN_SHARE = 0.05
URGENT_SHARE = 0.2
PENDING_PER_REFERRAL = 0.1
POOL = 16
OPEN_STATUSES = ("requested", "accepted", "in-progress", "on-hold")
CLOSED_STATUSES = ("completed", "completed", "completed", "cancelled", "rejected")
OUTCOMES = ("engaged", "declined", "unreachable", "safety_plan")
AUDIT_ACTIONS = ("launch", "launch", "launch", "view_result", "view_result", "write_resource", "view_worklist",
                 "view_worklist", "open_referral", "change_status", "log_contact", "assign_referral")
REPORT_KINDS = ("offered", "offered", "completed", "completed", "positive", "referral", "contacted_24h",
                "declined")


TABLES = ("referral", "referral_site", "referral_program", "referral_dims", "referral_event", "outbox", "audit_event",
          "report_event")


@dataclass(frozen=True)
class Sizes:
    referrals: int
    audit_per_referral: int = 12
    report_per_referral: int = 4

    @property
    def pending(self) -> int:
        return int(self.referrals * PENDING_PER_REFERRAL)


def site_name(i: int) -> str:
    return f"Hospital {i:02d}" if i <= 12 else f"Clinic {i:02d}"


def site_weights() -> list[float]:
    raw = [1 / (i ** SIZE_EXPONENT) for i in range(1, SITES + 1)]
    return [w / sum(raw) for w in raw]


def create_database(admin_url: str, name: str) -> str:
    """Drop and create database ``name`` on the server of ``admin_url``; returns its URL."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def app_keys() -> dict[str, str]:
    return {"SECRET_KEY": Fernet.generate_key().decode(), "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode()}


def stored_keys(engine: Engine) -> dict[str, Any] | None:
    """The keys and sizes a previous run stored (None: no complete year in this database)."""
    with engine.connect() as conn:
        if not conn.execute(text("SELECT to_regclass('scale_meta')")).scalar():
            return None
        return {k: v for k, v in conn.execute(text("SELECT key, value FROM scale_meta"))}


def _pools(app: Any) -> dict[str, Any]:
    """Encrypted blobs and keyed hashes made with the app's keys: summaries, program names and keys."""
    from smart_app.store.crypto import encrypt_json
    from smart_app.worklist.scope import program_key

    with app.app_context():
        summaries = [encrypt_json({"patient_name": f"Year Patient {i:02d}", "mrn": f"YEAR-{i:02d}", "language": "en",
                                   "programs": [], "safe_contact": {"channel": ("phone", "text", "none")[i % 3]}})
                     for i in range(POOL)]
        patients = [encrypt_json({"id": f"pat-year-{i}", "mrn": f"YEAR-{i:02d}"}) for i in range(POOL)]
        programs = []
        for i in range(1, SITES * 3 + 1):
            program = {"id": f"prog-{i:03d}", "name": f"Program {i:03d}"}
            programs.append((i, program_key(program), encrypt_json(program)))
    return {"summaries": summaries, "patients": patients, "programs": programs}


def _setup_sql(conn: Any, app: Any, pools: dict[str, Any], now: datetime) -> None:
    from config.current import settings_of
    from config.ehrs import ehr_id_for

    ehrs = {EHR1: ehr_id_for(EHR1, settings_of(app)), EHR2: ehr_id_for(EHR2, settings_of(app))}
    conn.execute(text("CREATE TEMP TABLE gen_site (idx int PRIMARY KEY, name text, org text, loc text, iss text, "
                      "ehr text, lo float8, hi float8)"))
    low = 0.0
    rows = []
    for i, w in enumerate(site_weights(), start=1):
        iss = EHR1 if i <= EHR1_SITES else EHR2
        rows.append({"idx": i, "name": site_name(i), "org": f"Organization/org-h{i:02d}",
                     "loc": f"Location/loc-h{i:02d}", "iss": iss, "ehr": ehrs[iss], "lo": low,
                     "hi": 1.0 if i == SITES else low + w})
        low += w
    conn.execute(text("INSERT INTO gen_site VALUES (:idx, :name, :org, :loc, :iss, :ehr, :lo, :hi)"), rows)
    conn.execute(text("CREATE TEMP TABLE gen_program (idx int PRIMARY KEY, key text, blob bytea)"))
    conn.execute(text("INSERT INTO gen_program VALUES (:i, :k, :b)"),
                 [{"i": i, "k": k, "b": b} for i, k, b in pools["programs"]])
    conn.execute(text("CREATE TEMP TABLE gen_pool (idx int PRIMARY KEY, summary bytea, patient bytea)"))
    conn.execute(text("INSERT INTO gen_pool VALUES (:i, :s, :p)"),
                 [{"i": i, "s": s, "p": p} for i, (s, p) in enumerate(zip(pools["summaries"], pools["patients"],
                                                                          strict=True))])
    conn.execute(text("CREATE TEMP TABLE gen_now AS SELECT CAST(:now AS timestamptz) AS now"), {"now": now})


# One statement per table. ``g`` numbers the referrals; every random choice is drawn once in gen_ref.
GEN_REF = f"""
CREATE TEMP TABLE gen_ref AS
SELECT g, 'yr' || lpad(g::text, 10, '0') AS id, s.idx AS site, s.name AS site_name, s.org, s.loc, s.iss, s.ehr,
       r.open, r.urgent, r.route, r.created_at,
       CASE WHEN r.pick < 0.1 THEN 0 WHEN r.pick < 0.75 THEN 1 ELSE 2 END AS n_programs,
       (s.idx - 1) * 3 + 1 + (g % 3) AS program_a, (s.idx - 1) * 3 + 1 + ((g + 1) % 3) AS program_b
FROM generate_series(1, :n) g
CROSS JOIN LATERAL (SELECT g AS gg, random() AS u, random() < {OPEN_SHARE} AS open, random() < {URGENT_SHARE} AS urgent,
                           random() AS route, random() AS pick, random() AS age, random() AS age2 OFFSET 0) r0
CROSS JOIN LATERAL (SELECT r0.*, (SELECT now FROM gen_now) - CASE
         WHEN r0.open THEN make_interval(secs => 60 * 86400 * r0.age * r0.age2)
         ELSE make_interval(secs => 365 * 86400 * r0.age) END AS created_at) r
JOIN gen_site s ON r.u >= s.lo AND r.u < s.hi
"""
REFERRAL = f"""
INSERT INTO referral (id, launch_id, iss, profile, site, urgent, status, status_by, status_at, created_at,
                      summary_enc, site_name, patient_key, encounter_key, first_contact_at, closed_at,
                      reference_code, mrn_key, handoff, ehr, route_kind, route_team, program_keys, due_at, assignee,
                      assignee_name_enc, assigned_at, closing_outcome, closing_attempts)
SELECT id, NULL, iss, 'generic-smart2', 'h' || lpad(site::text, 2, '0'), urgent, status, NULL, NULL, created_at,
       pool.summary, site_name, md5('p' || g), md5('e' || g),
       CASE WHEN status <> 'requested' THEN created_at + make_interval(mins => 30 + (g % 2000)) END,
       CASE WHEN NOT open THEN created_at + make_interval(days => 3 + (g % 40)) END,
       upper(substr(md5('c' || g), 1, 4)) || '-' || upper(substr(md5('c' || g), 5, 4)), md5('m' || g),
       CASE WHEN urgent AND g % 3 = 0 THEN 'offered' END, ehr,
       CASE WHEN route < 0.9 THEN 'coverage' WHEN route < 0.97 THEN 'fallback' ELSE 'unrouted' END,
       CASE WHEN route >= 0.9 AND route < 0.97 THEN 'team-' || ehr END,
       CASE n_programs WHEN 0 THEN '' WHEN 1 THEN pa.key
            ELSE least(pa.key, pb.key) || ',' || greatest(pa.key, pb.key) END,
       created_at + CASE WHEN urgent THEN interval '24 hours' ELSE interval '72 hours' END,
       CASE WHEN status NOT IN ('requested') THEN 'Practitioner/sw-' || (g % 400) END, NULL,
       CASE WHEN status NOT IN ('requested') THEN created_at + interval '20 minutes' END,
       CASE WHEN NOT open THEN (ARRAY{list(OUTCOMES)})[1 + g % {len(OUTCOMES)}] END,
       CASE WHEN NOT open THEN 1 + g % 3 END
FROM (SELECT *, CASE WHEN open THEN (ARRAY{list(OPEN_STATUSES)})[1 + g % {len(OPEN_STATUSES)}]
                     ELSE (ARRAY{list(CLOSED_STATUSES)})[1 + g % {len(CLOSED_STATUSES)}] END AS status
      FROM gen_ref) x
JOIN gen_pool pool ON pool.idx = x.g % {POOL}
JOIN gen_program pa ON pa.idx = x.program_a
JOIN gen_program pb ON pb.idx = x.program_b
"""
STATEMENTS: list[tuple[str, str]] = [
    ("referral_site", "INSERT INTO referral_site (referral_id, key) SELECT id, org FROM gen_ref "
                      "UNION ALL SELECT id, loc FROM gen_ref"),
    ("referral_program", """INSERT INTO referral_program (referral_id, key, program_enc)
        SELECT r.id, COALESCE(p.key, 'NONE'), p.blob FROM gen_ref r
        LEFT JOIN gen_program p ON (r.n_programs >= 1 AND p.idx = r.program_a) OR (r.n_programs = 2 AND
                                                                                      p.idx = r.program_b)"""),
    ("referral_dims", """INSERT INTO referral_dims (referral_id, month, site, instrument, language, contacted)
        SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM'), 'h' || lpad(site::text, 2, '0'),
               (ARRAY['hits', 'hark', 'wast'])[1 + g % 3], (ARRAY['en', 'en', 'en', 'es', 'pt'])[1 + g % 5], NOT open
        FROM gen_ref"""),
    ("referral_event", """INSERT INTO referral_event (referral_id, from_status, to_status, by_reference, at, assignee)
        SELECT id, (ARRAY['requested', 'accepted', 'in-progress'])[k],
               (ARRAY['accepted', 'in-progress', 'completed'])[k],
               'Practitioner/sw-' || (g % 400), created_at + make_interval(hours => k * 6),
               'Practitioner/sw-' || (g % 400)
        FROM gen_ref, generate_series(1, 3) k WHERE NOT open OR k = 1"""),
    ("outbox", """INSERT INTO outbox (referral_id, launch_id, iss, profile, mode, kind, operation, identifier_system,
                    identifier_value, full_url, depends_on, resource_enc, status, attempts, max_attempts, final_retry,
                    outcome_unknown, label_attempts, next_attempt_at, created_at, updated_at, written_at,
                    server_id, label_status)
        SELECT id, NULL, iss, 'generic-smart2', 'single', kind, 'create', 'urn:ipv:referral', id || ':' || kind,
               'urn:uuid:' || md5(id || kind), '{}', ''::bytea, 'written', 1, 10, false, false, 1,
               created_at, created_at, created_at + interval '2 seconds', created_at + interval '2 seconds',
               kind || '/' || g, 'ok'
        FROM gen_ref, unnest(ARRAY['DocumentReference', 'ServiceRequest']) kind"""),
    ("outbox pending", f"""INSERT INTO outbox (referral_id, launch_id, iss, profile, mode, kind, operation,
                    identifier_system, identifier_value, full_url, depends_on, resource_enc, status, attempts,
                    max_attempts, final_retry, outcome_unknown, label_attempts, next_attempt_at, created_at,
                    updated_at)
        SELECT id, NULL, iss, 'generic-smart2', 'single', 'Task', 'status', 'urn:ipv:task', id || '-task',
               'urn:uuid:' || md5(id || 'task'), '{{}}', pool.summary,
               'pending', g % 4, 10, false, false, 0,
               (SELECT now FROM gen_now) + make_interval(secs => (g % 7200) - 3600),
               (SELECT now FROM gen_now), (SELECT now FROM gen_now)
        FROM gen_ref JOIN gen_pool pool ON pool.idx = g % {POOL} WHERE g % :every = 0"""),
    ("audit_event", f"""INSERT INTO audit_event (at, action, actor, iss, ehr, instance, launch_ref, request_id,
                    object_id, detail, patient_enc)
        SELECT (SELECT now FROM gen_now) - interval '365 days' + make_interval(secs => 365 * 86400.0 * a / :audit),
               (ARRAY{list(AUDIT_ACTIONS)})[1 + a % {len(AUDIT_ACTIONS)}],
               'Practitioner/p' || (a::bigint * 7919 % 2000),
               CASE WHEN a % 10 < 7 THEN '{EHR1}' ELSE '{EHR2}' END, NULL, 'web-' || (a % 4),
               substr(md5('l' || (a / 6)), 1, 16), md5('q' || a), 'yr' || lpad((a::bigint * 7 % :n + 1)::text, 10, '0'),
               NULL, CASE WHEN a % 3 = 0 THEN pool.patient END
        FROM generate_series(1, :audit) a JOIN gen_pool pool ON pool.idx = a % {POOL}"""),
    ("report_event", f"""INSERT INTO report_event (month, site, kind, instrument, language, ehr)
        SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM'), 'h' || lpad(site::text, 2, '0'),
               (ARRAY{list(REPORT_KINDS)})[1 + (g * :per + k) % {len(REPORT_KINDS)}],
               (ARRAY['hits', 'hark', 'wast'])[1 + g % 3],
               (ARRAY['en', 'en', 'en', 'es', 'pt'])[1 + g % 5], ehr
        FROM gen_ref, generate_series(1, :per) k"""),
]


def fill(engine: Engine, app: Any, sizes: Sizes, keys: dict[str, str], *, now: datetime | None = None,
         seed: float = 0.42,
         say: Callable[[str], None] = print) -> dict[str, float]:
    """Fill the (migrated, empty) database of ``engine`` with a year of ``sizes`` (``app`` made with ``keys``, which
    are kept in ``scale_meta``); the seconds each table took."""
    now = now or datetime.now(UTC)
    pools = _pools(app)
    took: dict[str, float] = {}
    with engine.begin() as conn:
        conn.execute(text("SELECT setseed(:seed)"), {"seed": seed})
        conn.execute(text("SET LOCAL work_mem = '64MB'"))
        conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        # Month partitions for the year (as the purge makes the months ahead, here the months behind).
        conn.execute(text("SELECT audit_event_add_partition(m::date), report_event_add_partition(m::date) "
                          "FROM generate_series(date_trunc('month', CAST(:now AS timestamptz) AT TIME ZONE 'UTC') "
                          "- interval '13 months', date_trunc('month', CAST(:now AS timestamptz) AT TIME ZONE 'UTC'),"
                          " interval '1 month') m"), {"now": now})
        _setup_sql(conn, app, pools, now)
        params = {"n": sizes.referrals, "every": max(1, round(1 / PENDING_PER_REFERRAL)),
                  "audit": sizes.referrals * sizes.audit_per_referral, "per": sizes.report_per_referral}
        for name, sql in [("gen_ref", GEN_REF), ("referral", REFERRAL), *STATEMENTS]:
            start = time.perf_counter()
            count = conn.execute(text(sql), params).rowcount
            took[name] = time.perf_counter() - start
            say(f"  {name:<17}{max(count, 0):>12,} rows {took[name]:>8.1f} s")
        conn.execute(text("CREATE TABLE scale_meta (key text PRIMARY KEY, value text)"))
        conn.execute(text("INSERT INTO scale_meta VALUES ('referrals', :n), ('made_at', :at)"),
                     {"n": str(sizes.referrals), "at": now.isoformat()})
        conn.execute(text("INSERT INTO scale_meta SELECT key, value FROM json_each_text(CAST(:keys AS json))"),
                     {"keys": json.dumps(keys)})
    start = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM ANALYZE {', '.join(TABLES)}"))
    took["vacuum analyze"] = time.perf_counter() - start
    say(f"  {'vacuum analyze':<17}{'':>12} {took['vacuum analyze']:>13.1f} s")
    return took
