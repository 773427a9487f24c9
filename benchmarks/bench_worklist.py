"""The social worker's queue page (GET /l/<lid>/worklist) with 1,000, 10,000 and 50,000 referrals in scope.

Referrals are inserted as the consent page stores them (sandbox_ehr/harness/bulk.py: site keys, program index, an
encrypted summary, reference code and MRN key), ages spread over 90 days, every status, a quarter urgent; a tenth
as many again are outside the social worker's scope (another site of the same EHR, the same sites of another
EHR), so the scope has something to leave out. The social worker covers BWH and MGH from their EHR role.

Per view: wall time of the request (the database's work included) as median and p95 over repeated requests, the
app process's CPU time (time.process_time; PostgreSQL's own CPU is not in it), the database's time on the grouped
count (every count and filter option) and on the page's rows, and the SQL statements it sends (SQLAlchemy cursor
listeners); and whether the page's count, and the first row of "urgent, oldest first", are what a plain-Python
tally of the inserted referrals says. Views: the first page as the queue opens (open referrals,
urgent first), "urgent, oldest first", and a filtered, program-sorted view. PostgreSQL (TEST_DATABASE_URL, a
fresh schema) is the production case; SQLite (the demo) follows. Target, printed as pass/miss and never
asserted: first page p95 <= 150 ms at every size; SQL statements per page the same at every size. The machine is
shared: the load average is printed beside the figures.

    python -m benchmarks.bench_worklist [--repeat 25] [--sizes 1000,10000,50000] [--sqlite-only|--postgresql-only]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox_ehr.harness.bulk import CLOSED_RAW, OUT_OF_SCOPE_SITE, Made, insert_referrals

TARGET_P95_MS = 150.0
SIZES = (1_000, 10_000, 50_000)
VIEWS = {"first page": "", "urgent, oldest": "?urgency=urgent&sort=oldest",
         "filtered": "?status=all&urgency=routine&sort=program"}


class StatementCounter:
    """SQL statements the app's engine sends (each cursor execute, as the database sees them), and the time the
    database takes on each kind: the grouped count behind every count and filter option (``GROUP BY``), the page of
    referrals (``LIMIT``), the rest."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.count = 0
        self.ms: Counter[str] = Counter()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *_args: Any) -> None:
        self.count += 1
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        took = (time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())) * 1000
        kind = "counts" if "GROUP BY" in statement and "count(" in statement else \
            "page" if "LIMIT" in statement else "other"
        self.ms[kind] += took


def measure(client: Any, url: str, counter: StatementCounter, repeat: int) -> dict[str, Any]:
    client.get(url)  # warm: templates compiled, directory loaded
    wall, cpu, statements, sql = [], [], [], {"counts": [], "page": [], "other": []}
    page = ""
    for _ in range(repeat):
        before, before_ms = counter.count, Counter(counter.ms)
        start, start_cpu = time.perf_counter(), time.process_time()
        resp = client.get(url)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        statements.append(counter.count - before)
        for kind, times in sql.items():
            times.append(counter.ms[kind] - before_ms[kind])
        assert resp.status_code == 200, resp.status_code
        page = resp.get_data(as_text=True)
    shown = re.search(r'data-testid="shown-count"[^>]*>([^<]*)<', page)
    matching = re.search(r"of ([\d,]+) matching", shown.group(1)) if shown else None
    # A periodic statement (the launch's sliding expiry) can fall in one request: the usual count is the figure.
    return {"median": statistics.median(wall), "p95": statistics.quantiles(wall, n=20)[-1],
            "cpu": statistics.median(cpu), "statements": statistics.mode(statements),
            "counts_ms": statistics.median(sql["counts"]), "page_ms": statistics.median(sql["page"]),
            "rows": re.findall(r'data-testid="referral-([^"]+)"', page),
            "matching": int(matching.group(1).replace(",", "")) if matching else None}


def expected(made: list[Made]) -> dict[str, tuple[int, str | None]]:
    """Per view, from the inserted referrals in plain Python: how many match, and the first row where the order is
    plain (urgent, oldest first: the oldest open urgent referral)."""
    open_ = [m for m in made if m.status not in CLOSED_RAW]
    urgent = sorted((m for m in open_ if m.urgent), key=lambda m: m.created_at)
    return {"first page": (len(open_), None), "urgent, oldest": (len(urgent), urgent[0].id if urgent else None),
            "filtered": (sum(1 for m in made if not m.urgent), None)}


@contextmanager
def _database(kind: str, tmp: Path, size: int) -> Iterator[str | None]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'queue-{size}.db'}"
        return
    from benchmarks.bench_load import postgres_schema

    with postgres_schema() as url:
        yield url


def run(url: str, size: int, repeat: int) -> dict[str, dict[str, Any]]:
    """The three views at ``size`` referrals in scope: timings, and whether the count and first row are right."""
    from sqlalchemy import text

    from sandbox_ehr.harness.launches import EHR1, EHR2, SNOMED_SW, app_config, launch_for, role, worker_context
    from smart_app import create_app

    app = create_app(app_config(url))
    try:
        now = datetime.now(UTC)
        made = insert_referrals(app, size, iss=EHR1, now=now, seed=size)
        insert_referrals(app, size // 20, iss=EHR1, now=now, seed=size + 1, site=OUT_OF_SCOPE_SITE)
        insert_referrals(app, size // 20, iss=EHR2, now=now, seed=size + 2)
        with app.extensions["db_engine"].begin() as conn:
            conn.execute(text("ANALYZE"))
        client = app.test_client()
        roles = [role([SNOMED_SW], organizations=["Organization/org-bwh", "Organization/org-mgh"])]
        lid = launch_for(app, client, worker_context("Practitioner/sw", "Sam Social", roles,
                                                     "openid fhirUser user/Task.rus user/ServiceRequest.rus"),
                         iss=EHR1, kind="standalone")
        counter = StatementCounter(app.extensions["db_engine"])
        gc.collect()
        gc.freeze()  # as a preloaded gunicorn worker runs (config/gunicorn.conf.py): what start-up loaded is frozen
        results = {view: measure(client, f"/l/{lid}/worklist{query}", counter, repeat) for view, query in VIEWS.items()}
        for view, (count, first) in expected(made).items():
            r = results[view]
            r["right"] = r["matching"] == count and (first is None or (r["rows"] or [None])[0] == first)
        return results
    finally:
        gc.unfreeze()
        app.extensions["db_engine"].dispose()


def _report(kind: str, sizes: tuple[int, ...], repeat: int, tmp: Path) -> dict[int, dict[str, dict[str, Any]]]:
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for size in sizes:
        with _database(kind, tmp, size) as url:
            if url is None:
                print(f"{kind}: not measured (PostgreSQL at TEST_DATABASE_URL does not answer)")
                return results
            results[size] = run(url, size, repeat)
        load = os.getloadavg()[0]
        for view, r in results[size].items():
            print(f"{kind:<10}{size:>8,}  {view:<15}{r['median']:>9.1f}{r['p95']:>8.1f}{r['cpu']:>8.1f}"
                  f"{r['counts_ms']:>8.1f}{r['page_ms']:>8.1f}{r['statements']:>5}{len(r['rows']):>5}"
                  f"{r['matching'] or 0:>9,}  {'yes' if r['right'] else 'NO':<6}{load:>5.1f}", flush=True)
    if results:
        first = [results[s]["first page"]["p95"] for s in results]
        same = all(results[s][v]["statements"] == results[sizes[0]][v]["statements"] for s in results for v in VIEWS)
        right = all(r["right"] for by_view in results.values() for r in by_view.values())
        print(f"{kind} targets: first page p95 " + ", ".join(f"{s:,}: {p:.0f} ms" for s, p in zip(results, first,
                                                                                                strict=True))
              + f" (<= {TARGET_P95_MS:.0f} ms: {'pass' if max(first) <= TARGET_P95_MS else 'miss'}); SQL statements"
              f" per page the same at every size: {'pass' if same else 'miss'}; counts and first rows right:"
              f" {'pass' if right else 'MISS'}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--postgresql-only", action="store_true")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    for name in ("werkzeug", "ipv", "ipv.crypto", "smart_app", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    print(f"social-work queue page, wall time per request over {args.repeat} requests (app CPU beside it); a tenth"
          " as many referrals again out of scope (another site, another EHR)")
    print("counts ms: the grouped count behind every count and filter option; page ms: the page's rows; right: the"
          " count, and the first row of 'urgent, oldest', as a plain-Python tally of the inserted referrals says")
    print(f"{'database':<10}{'in scope':>8}  {'view':<15}{'median ms':>9}{'p95 ms':>8}{'CPU ms':>8}{'counts':>8}"
          f"{'page':>8}{'SQL':>5}{'rows':>5}{'matching':>9}  {'right':<6}{'load':>5}")
    with tempfile.TemporaryDirectory() as d:
        kinds = ("sqlite",) if args.sqlite_only else ("postgresql",) if args.postgresql_only else ("postgresql",
                                                                                                  "sqlite")
        for kind in kinds:
            _report(kind, sizes, args.repeat, Path(d))


if __name__ == "__main__":
    main()
