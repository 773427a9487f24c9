"""App CPU per page: median process CPU time of one GET of each in-app page, through the Flask test client.

One app in this process (CSRF and rate limits on, warmed up as a production start is), launches made with the
project's own helper (``sandbox_ehr.harness.launches.launch_for``) and walked through the flow by submitting the
pages' own forms (gate, a positive screen, the danger check where /result asks it); then each page is requested
again and again: the gate on a launch that has not screened yet (as a clinician first sees it), the others after
the screen. CPU is ``time.process_time()`` of the whole GET (the test client's small share included), in rounds that
alternate the pages; the median over all GETs is printed with the target (<= 2.5 ms, pass/miss) and
the number of SQL statements the page ran, with the figure at the commit before the renovation where it was
measured (benchmarks/targets.py) and the machine's load. SQLite, and PostgreSQL when the load bench's database
answers.

    python -m benchmarks pages            # or: python -m benchmarks.bench_pages --gets 100 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import event

from benchmarks import targets
from benchmarks.bench_load import form_data, postgres_schema

TARGET_MS = targets.TARGETS["page_ms"][0]
PAGES = ("gate", "screen", "result", "referrals", "consent")


def _submit(client: Any, lid: str, page: str, action: str, values: dict[str, str], pick: int = 0) -> Any:
    """POST the page's form for ``action`` as a browser would (its CSRF token and defaults)."""
    return client.post(f"/l/{lid}/{action}", data=form_data(page, action, values, pick))


def _walk(client: Any, lid: str) -> None:
    """Gate, a positive screen (every question's last answer), the danger check where /result asks it."""
    base = f"/l/{lid}"
    gate = client.get(f"{base}/").get_data(as_text=True)
    _submit(client, lid, gate, "gate", {"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
    screen = client.get(f"{base}/screen").get_data(as_text=True)
    _submit(client, lid, screen, "screen", {}, pick=-1)
    result = client.get(f"{base}/result").get_data(as_text=True)
    if "data-instrument" in result:
        _submit(client, lid, result, "screen", {})
    if client.get(f"{base}/result").status_code != 200:
        raise RuntimeError("the walk through the flow did not reach the result page")


def measure(db_url: str, gets: int, rounds: int) -> dict[str, dict[str, Any]]:
    from sandbox_ehr.harness.launches import launch_for
    from smart_app import create_app

    app = create_app({"TESTING": True, "DATABASE_URL": db_url, "SECRET_KEY": secrets.token_urlsafe(32),
                      "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "WTF_CSRF_ENABLED": True,
                      "SESSION_COOKIE_SECURE": False, "LOG_LEVEL": "WARNING",
                      "WARM_UP": True})
    try:
        client = app.test_client()
        fresh = launch_for(app, client)  # the gate as first seen: nothing screened yet in this launch
        walked = launch_for(app, client)
        _walk(client, walked)
        urls = {"gate": f"/l/{fresh}/", "screen": f"/l/{walked}/screen", "result": f"/l/{walked}/result",
                "referrals": f"/l/{walked}/referrals", "consent": f"/l/{walked}/consent"}
        statements: list[str] = []
        event.listen(app.extensions["db_engine"], "before_cursor_execute",
                     lambda _conn, _cur, statement, *_a: statements.append(statement))
        cpu: dict[str, list[float]] = {p: [] for p in PAGES}
        sql: dict[str, int] = {}
        for page, url in urls.items():  # warm: first renders compile templates, first queries are prepared
            for _ in range(5):
                if client.get(url).status_code != 200:
                    raise RuntimeError(f"GET {page} did not answer 200")
            statements.clear()
            client.get(url)
            sql[page] = len(statements)
        for _ in range(rounds):
            for page, url in urls.items():
                for _ in range(gets):
                    c0 = time.process_time()
                    client.get(url)
                    cpu[page].append((time.process_time() - c0) * 1000)
        return {p: {"median": statistics.median(cpu[p]), "sql": sql[p]} for p in PAGES}
    finally:
        app.extensions["db_engine"].dispose()


def verdict(ms: float) -> str:
    return targets.verdict("page_ms", ms)


def report(columns: dict[str, dict[str, dict[str, Any]]], load: str) -> None:
    """One line per page: each database's median CPU, SQL statements and pass/miss against the target, then the
    figure before the renovation (SQLite)."""
    print(f"  {'page':<11}" + "".join(f"{label:>25}" for label in columns) + f"{'before (SQLite)':>22}")
    for page in PAGES:
        cells = "".join(f"{f[page]['median']:>9.2f} ms {f[page]['sql']:>2} SQL {verdict(f[page]['median']):>5}"
                        for f in columns.values())
        was = targets.BEFORE.get(f"page_ms.{page}")
        print(f"  {page:<11}{cells}{(f'{was:.2f} ms' if was is not None else 'not measured'):>22}")
    for label, figures in columns.items():
        misses = [p for p in PAGES if figures[p]["median"] > TARGET_MS]
        print(f"  {label}: {len(PAGES) - len(misses)} of {len(PAGES)} pages <= {TARGET_MS:g} ms"
              + (f" (miss: {', '.join(misses)})" if misses else "") + f"; {load}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_pages", description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=100, help="GETs of each page per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.getLogger("smart_app").setLevel(logging.ERROR)  # the test-mode start-up warning, once per app
    print(f"app CPU per GET: median of {args.gets * args.rounds} GETs per page (process CPU, Flask test client, "
          f"CSRF on); target <= {TARGET_MS:g} ms per page")
    columns: dict[str, dict[str, dict[str, Any]]] = {}
    load = targets.load()
    with tempfile.TemporaryDirectory() as d:
        columns["SQLite"] = measure(f"sqlite:///{Path(d) / 'app.db'}", args.gets, args.rounds)
    with postgres_schema() as pg:
        if pg is None:
            print("  PostgreSQL not measured: the load bench's database (TEST_DATABASE_URL) does not answer")
        else:
            columns["PostgreSQL"] = measure(pg, args.gets, args.rounds)
    report(columns, f"{load} before, {targets.load()} after")


if __name__ == "__main__":
    main()
