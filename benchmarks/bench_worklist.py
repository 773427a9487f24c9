"""The social worker's queue page (GET /l/<lid>/worklist) with 1,000, 10,000 and 50,000 referrals in scope.

Referrals are inserted as the consent page stores them (sandbox_ehr/harness/bulk.py: site keys, program index, an
encrypted summary, reference code and MRN key), ages spread over 90 days, every status, a quarter urgent; a tenth
as many again are outside the social worker's scope (another site of the same EHR, the same sites of another
EHR), so the scope has something to leave out. The social worker covers BWH and MGH from their EHR role.

Per view: wall time of the request (the database's work included) as median and p95 over repeated requests, the
app process's CPU time (time.process_time; PostgreSQL's own CPU is not in it), and the SQL statements it sends
(an SQLAlchemy ``before_cursor_execute`` listener). Views: the first page as the queue opens (open referrals,
urgent first), "urgent, oldest first", and a filtered, program-sorted view. PostgreSQL (TEST_DATABASE_URL, a
fresh schema) is the production case; SQLite (the demo) follows. Target, printed as pass/miss and never
asserted: first page p95 <= 150 ms at every size; SQL statements per page the same at every size. The machine is
shared: the load average is printed beside the figures.

    python -m benchmarks.bench_worklist [--repeat 25] [--sizes 1000,10000,50000] [--sqlite-only]
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TARGET_P95_MS = 150.0
SIZES = (1_000, 10_000, 50_000)
VIEWS = {"first page": "", "urgent, oldest": "?urgency=urgent&sort=oldest",
         "filtered": "?status=all&urgency=routine&sort=program"}


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
    wall, cpu, statements = [], [], []
    page = ""
    for _ in range(repeat):
        before = counter.count
        start, start_cpu = time.perf_counter(), time.process_time()
        resp = client.get(url)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        statements.append(counter.count - before)
        assert resp.status_code == 200, resp.status_code
        page = resp.get_data(as_text=True)
    shown = re.search(r'data-testid="shown-count"[^>]*>([^<]*)<', page)
    return {"median": statistics.median(wall), "p95": statistics.quantiles(wall, n=20)[-1],
            "cpu": statistics.median(cpu), "statements": max(statements),
            "rows": len(re.findall(r'data-testid="referral-', page)), "shown": shown.group(1).strip() if shown else "?"}


@contextmanager
def _database(kind: str, tmp: Path, size: int) -> Iterator[str | None]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'queue-{size}.db'}"
        return
    from benchmarks.bench_load import postgres_schema

    with postgres_schema() as url:
        yield url


def run(url: str, size: int, repeat: int) -> dict[str, dict[str, Any]]:
    from sqlalchemy import text

    from sandbox_ehr.harness.bulk import OUT_OF_SCOPE_SITE, insert_referrals
    from sandbox_ehr.harness.launches import EHR1, EHR2, SNOMED_SW, app_config, launch_for, role, worker_context
    from smart_app import create_app

    app = create_app(app_config(url))
    try:
        now = datetime.now(UTC)
        insert_referrals(app, size, iss=EHR1, now=now, seed=size)
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
        return {view: measure(client, f"/l/{lid}/worklist{query}", counter, repeat) for view, query in VIEWS.items()}
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
            print(f"{kind:<10}{size:>8,}  {view:<15}{r['median']:>9.1f}{r['p95']:>8.1f}{r['cpu']:>9.1f}"
                  f"{r['statements']:>6}{r['rows']:>5}{load:>6.1f}  {r['shown']}", flush=True)
    if results:
        first = [results[s]["first page"]["p95"] for s in results]
        same = all(results[s][v]["statements"] == results[sizes[0]][v]["statements"] for s in results for v in VIEWS)
        print(f"{kind} targets: first page p95 " + ", ".join(f"{s:,}: {p:.0f} ms" for s, p in zip(results, first,
                                                                                                strict=True))
              + f" (<= {TARGET_P95_MS:.0f} ms: {'pass' if max(first) <= TARGET_P95_MS else 'miss'}); SQL statements"
              f" per page the same at every size: {'pass' if same else 'miss'}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    for name in ("werkzeug", "ipv", "ipv.crypto", "smart_app", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    print(f"social-work queue page, wall time per request over {args.repeat} requests (app CPU beside it); a tenth"
          " as many referrals again out of scope (another site, another EHR)")
    print(f"{'database':<10}{'in scope':>8}  {'view':<15}{'median ms':>9}{'p95 ms':>8}{'CPU ms':>9}{'SQL':>6}"
          f"{'rows':>5}{'load':>6}  shown")
    with tempfile.TemporaryDirectory() as d:
        for kind in (("sqlite",) if args.sqlite_only else ("postgresql", "sqlite")):
            _report(kind, sizes, args.repeat, Path(d))


if __name__ == "__main__":
    main()
