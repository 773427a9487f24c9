"""Ranking on a generated 50,000-service HSDS 3.0 directory: import time, index build, peak memory, memory
per service, median and p99 ranking time; then the import alone at 200,000 services. Prints figures (targets:
ranking < 5 ms median, directory <= 2 KB per service, 200k-service import (parse + validate + index) <= 30 s of
CPU: the machine is shared, so CPU time, not wall time, is what the target is read against).
``BENCH_SERVICES=200000 python -m benchmarks ranking`` ranks on 200k; ``BENCH_LARGE_IMPORT=0`` skips the
200k import (about a minute)."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

N_SERVICES = int(os.environ.get("BENCH_SERVICES") or 50_000)
LARGE_IMPORT = 200_000
IMPORT_TARGET_CPU_S = 30.0
N_QUERIES = 3_000
STATES = ("MA", "NH", "RI", "CT")
TAXONOMY = [("legal", "Legal advocacy (209A)"), ("shelter", "Emergency shelter"), ("counseling", "Counseling"),
            ("sexual-assault", "Sexual assault services"), ("support-group", "Support groups"),
            ("safety-planning", "Safety planning"), ("housing", "Housing")]
LANGS = ["en", "es", "pt", "ht", "zh", "vi"]
DAYS = "MO,TU,WE,TH,FR"


def generate(n: int = N_SERVICES, seed: int = 7) -> list[dict]:
    """HSDS 3.0 services (API shape) spread over the New England ZIP centroids, ~2% statewide hotlines."""
    import zipcodes

    rng = random.Random(seed)
    zips = [z for z in zipcodes.list_all() if z["state"] in STATES and z["lat"] and z["zip_code_type"] == "STANDARD"]
    out = []
    for i in range(n):
        z = rng.choice(zips)
        terms = rng.sample(TAXONOMY, rng.randint(1, 3))
        always = rng.random() < 0.1
        hotline = rng.random() < 0.02
        svc = {
            "id": f"gen-{i}", "name": f"Program {i}", "status": "active",
            "organization": {"id": f"org-{i // 5}", "name": f"Organization {i // 5}"},
            "languages": [{"code": c} for c in rng.sample(LANGS, rng.randint(1, 3))],
            "phones": [{"number": f"617-555-{i % 10000:04d}", "type": "voice"}],
            "schedules": [{"description": "24/7"}] if always else [
                {"freq": "WEEKLY", "byday": DAYS, "opens_at": f"{rng.randint(7, 10):02d}:00",
                 "closes_at": f"{rng.randint(16, 20):02d}:30"}],
            "attributes": [{"taxonomy_term": {"code": code, "name": name}} for code, name in terms],
        }
        if rng.random() < 0.3:
            svc["phones"].append({"number": f"617-555-{(i + 5000) % 10000:04d}", "type": "pager",
                                  "description": "After hours pager"})
        if hotline:
            svc["service_areas"] = [{"name": "Massachusetts"}]
            svc["attributes"].append({"taxonomy_term": {"code": "hotline", "name": "Crisis hotline"}})
        else:
            jitter = lambda: rng.uniform(-0.02, 0.02)  # noqa: E731
            svc["service_at_locations"] = [{"location": {
                "id": f"loc-{i}", "name": f"Site {i}", "latitude": round(float(z["lat"]) + jitter(), 5),
                "longitude": round(float(z["long"]) + jitter(), 5),
                "addresses": [{"address_1": f"{i} Main St", "city": z["city"], "state_province": z["state"],
                               "postal_code": z["zip_code"]}]}}]
        out.append(svc)
    return out


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; ru_maxrss may carry the parent's peak over."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's current RSS (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(path: str, out: Any, queries: bool = True) -> None:
    """In a fresh process, so max RSS is the import's own: load, index, then time the queries."""
    import gc

    from referrals.index import DirectoryIndex
    from referrals.loaders import load_source
    from referrals.ranking import RankingQuery, rank
    from referrals.store import DEFAULT_DIRECTORY, merge

    rss0 = peak_rss_mb()
    load_source(DEFAULT_DIRECTORY)  # imports, the ZIP table and the small directory: not per-service costs
    gc.collect()
    cur0 = rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    generated = load_source(path)
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    index = DirectoryIndex(merge([load_source(DEFAULT_DIRECTORY), generated]))  # as store.build
    index_s, index_cpu = time.perf_counter() - t0, time.process_time() - c0
    del generated
    gc.collect()  # the parsed JSON is gone: what stays is the directory and its index
    cur1 = rss_mb()
    rss1 = peak_rss_mb()
    todo = make_queries() if queries else []
    for q in todo[:50]:  # warm-up (ZIP table, zoneinfo)
        rank(index, RankingQuery.for_launch(**q))
    forked = after_fork(lambda: [rank(index, RankingQuery.for_launch(**q)) for q in todo]) if todo else None
    times, cpu, counts = [], [], []
    for q in todo:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        r = rank(index, RankingQuery.for_launch(**q))
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
        counts.append(len(r.results))
    out.put(dict(load_s=load_s, index_s=index_s, load_cpu=load_cpu, index_cpu=index_cpu, rss0=rss0, rss1=rss1,
                 cur0=cur0, cur1=cur1, forked=forked,
                 times=times, cpu=cpu, counts=counts,
                 load=os.getloadavg()[0]))


def private_mb() -> float:
    """This process's private dirty memory (pages it wrote: its own or copied from its parent), 0 without /proc."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def after_fork(work: Any) -> tuple[float, float] | None:
    """As a gunicorn worker forked from a master that preloaded the app (gc.freeze first, as
    config/gunicorn.conf.py does): the child's private memory right after the fork and after ``work``. Pages
    stay shared until written, and CPython writes an object's reference count whenever it is used."""
    import gc

    if not hasattr(os, "fork"):
        return None
    gc.collect()
    gc.freeze()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            before = private_mb()
            work()
            os.write(write, f"{before} {private_mb()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100).decode().split()
    os.waitpid(pid, 0)
    gc.unfreeze()
    return (float(answer[0]), float(answer[1])) if len(answer) == 2 else None


def make_queries() -> list[dict[str, Any]]:
    import zipcodes

    rng = random.Random(11)
    ma_zips = [z["zip_code"] for z in zipcodes.filter_by(state="MA")]
    sites = ["bwh", "bw-faulkner", "sjphc", "brookside", "whittier", "mgh", "mgh-chelsea", "mgh-revere", "baystate"]
    start = datetime(2026, 11, 23, tzinfo=ZoneInfo("America/New_York"))
    queries = []
    for _ in range(N_QUERIES):
        key = rng.choice(sites + [None])
        enc = None if key is None else {"id": "e", "locations": [{"id": f"loc-{key}", "name": key, "identifiers": [
            {"system": "urn:ipv-sandbox:site", "value": key}]}], "service_provider": None}
        queries.append(dict(context={"encounter": enc}, safe_zip=rng.choice(ma_zips + [None] * 100),
                            needs=rng.sample(["legal", "shelter", "counselling", "sexual-assault"], rng.randint(0, 2)),
                            language=rng.choice(["en", "en", "es", "pt"]),
                            now=start + timedelta(minutes=rng.randint(0, 7 * 24 * 60))))
    return queries


def run(n: int, queries: bool = True) -> tuple[dict[str, Any], float, float]:
    """(measurements, JSON size in MB, seconds to generate) for ``n`` generated services, measured in a fresh
    process."""
    t0 = time.perf_counter()
    services = generate(n)
    gen_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"hsds-{n}.json"
        path.write_text(json.dumps(services))
        size_mb = path.stat().st_size / 1e6
        del services
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        proc = ctx.Process(target=measure, args=(str(path), out, queries))
        proc.start()
        m = out.get()
        proc.join()
    return m, size_mb, gen_s


def import_line(m: dict[str, Any]) -> str:
    cpu = m["load_cpu"] + m["index_cpu"]
    return (f"import (parse + validate): CPU {m['load_cpu']:.2f} s + index build {m['index_cpu']:.2f} s = "
            f"{cpu:.2f} s; wall {m['load_s'] + m['index_s']:.2f} s")


def memory_line(m: dict[str, Any], n: int) -> str:
    per = (m["cur1"] - m["cur0"]) * 1024 * 1024 / n
    return (f"directory + index after load (parsed JSON dropped): {m['cur1'] - m['cur0']:.0f} MB RSS = "
            f"{per / 1024:.2f} KB per service (target <= 2 KB: {'pass' if per <= 2048 else 'miss'})")


def main() -> None:
    m, size_mb, gen_s = run(N_SERVICES)
    times, cpu = m["times"], m["cpu"]
    print(f"directory: {N_SERVICES:,} generated HSDS services ({size_mb:.1f} MB JSON, generated in {gen_s:.1f} s) "
          f"+ the Boston directory")
    print(import_line(m))
    print(f"memory: peak RSS of the loading process {m['rss1']:.0f} MB ({m['rss0']:.0f} MB before the import; "
          f"the rest is the source being read, the directory and its index)")
    print(memory_line(m, N_SERVICES))
    print(f"ranking ({N_QUERIES:,} queries: random site, safe ZIP or none, needs, language, time of week; "
          f"mean {statistics.mean(m['counts']):.1f} results):")
    print(f"  wall time: median {statistics.median(times):.2f} ms   p99 {percentile(times, 99):.2f} ms   "
          f"max {max(times):.2f} ms (target median < 5 ms)")
    print(f"  CPU time:  median {statistics.median(cpu):.2f} ms   p99 {percentile(cpu, 99):.2f} ms   "
          f"(load average {m['load']:.1f} on {os.cpu_count()} CPUs: wall-time tails include waiting for a CPU)")
    if m.get("forked"):
        before, after = m["forked"]
        print(f"shared after fork (gunicorn --preload + gc.freeze): a forked worker holds {before:.0f} MB of private "
              f"memory, {after:.0f} MB once it has ranked the {N_QUERIES:,} queries (refcount writes copy the pages "
              f"of every object a query reads), of the {m['cur1'] - m['cur0']:.0f} MB directory + index")
    large = m if N_SERVICES == LARGE_IMPORT else None
    if large is None and os.environ.get("BENCH_LARGE_IMPORT", "1") != "0":
        large, size_mb, _ = run(LARGE_IMPORT, queries=False)
        print(f"directory: {LARGE_IMPORT:,} generated HSDS services ({size_mb:.1f} MB JSON) + the Boston directory")
        print(import_line(large))
        print(memory_line(large, LARGE_IMPORT))
    if large is not None:
        cpu_s = large["load_cpu"] + large["index_cpu"]
        print(f"{LARGE_IMPORT:,}-service import (parse + validate + index): {cpu_s:.1f} s CPU "
              f"(target <= {IMPORT_TARGET_CPU_S:.0f} s: {'pass' if cpu_s <= IMPORT_TARGET_CPU_S else 'miss'})")


if __name__ == "__main__":
    main()
