"""Directory import with and without each of the loader's memory and CPU measures, on a generated 50,000-service
HSDS 3.0 JSON directory (``BENCH_SERVICES`` changes the size): the GC pause while loading and indexing
(``referrals.memory.paused_gc``), the ``Compactor`` (and its copying of what a whole-document parse made) and the
item-by-item JSON decoder (``json_array_items``). Each variant runs in a fresh process: import CPU and the cyclic
collector's share of it, peak RSS, what the directory keeps (RSS per service), a full collection's pause with the
directory loaded (not frozen, then frozen) and ranking CPU. Then the pause in an app as create_app builds it,
which freezes what start-up loaded. Prints figures, never fails on them."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_load import ROOT
from benchmarks.bench_ranking import N_SERVICES, generate, make_queries, peak_rss_mb, rss_mb
from referrals.store import DEFAULT_DIRECTORY

VARIANTS = {  # name -> what is switched off
    "as shipped": (),
    "no GC pause while loading": ("gc_pause",),
    "no Compactor": ("compactor",),
    "no item-by-item JSON decoding": ("streaming",),
    "  ... and the Compactor not copying": ("streaming", "copy"),
}
RANKED = 1_000


class _NoCompactor:
    """The HSDS loader's compaction switched off: the directory keeps the loader's lists, sets and copies."""

    def __init__(self, copy: bool = True) -> None:
        self.copy = copy

    def service(self, s: Any) -> None:
        return None


def _switch_off(what: tuple[str, ...]) -> None:
    from referrals import index, loaders
    from referrals.loaders import hsds

    if "gc_pause" in what:
        loaders.paused_gc = index.paused_gc = contextlib.nullcontext
    if "compactor" in what:
        hsds.Compactor = _NoCompactor
    if "copy" in what:
        shipped = hsds.Compactor
        hsds.Compactor = lambda copy=True: shipped(copy=False)
    if "streaming" in what:
        hsds.json_array_items = lambda path, text: None  # the whole document is decoded at once


def _full_collection_ms() -> float:
    import gc

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


class _GcClock:
    """CPU time the cyclic collector takes while it is installed (gc.callbacks)."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.cpu += time.process_time() - self._start


def measure(path: str, what: tuple[str, ...], out: Any) -> None:
    import gc

    from referrals.index import DirectoryIndex
    from referrals.loaders import load_source
    from referrals.ranking import RankingQuery, rank
    from referrals.store import merge

    _switch_off(what)
    boston = load_source(DEFAULT_DIRECTORY)  # imports and the ZIP table: not per-service costs
    gc.collect()
    cur0 = rss_mb()
    gc_clock = _GcClock()
    gc.callbacks.append(gc_clock)
    c0 = time.process_time()
    generated = load_source(path)
    load_cpu = time.process_time() - c0
    c0 = time.process_time()
    index = DirectoryIndex(merge([boston, generated]))  # as store.build
    index_cpu = time.process_time() - c0
    gc.callbacks.remove(gc_clock)
    del generated
    gc.collect()
    cur1, peak = rss_mb(), peak_rss_mb()
    pause = _full_collection_ms()
    gc.freeze()  # as create_app does once start-up has loaded everything
    pause_frozen = _full_collection_ms()
    gc.unfreeze()
    queries = make_queries()[:RANKED]
    for q in queries[:50]:
        rank(index, RankingQuery.for_launch(**q))
    cpu = []
    for q in queries:
        c0 = time.thread_time()
        rank(index, RankingQuery.for_launch(**q))
        cpu.append((time.thread_time() - c0) * 1000)
    out.put(dict(load_cpu=load_cpu, index_cpu=index_cpu, gc_cpu=gc_clock.cpu, peak=peak, kept=cur1 - cur0, pause=pause,
                 pause_frozen=pause_frozen, rank=statistics.median(cpu)))


APP_CHILD = """
import gc, statistics, time
from smart_app import create_app
app = create_app()
times = []
for _ in range(3):
    t0 = time.perf_counter()
    gc.collect()
    times.append((time.perf_counter() - t0) * 1000)
print(len(app.extensions["ipv_directory"].index.entries), statistics.median(times))
"""


def _deployment_with_directory(tmp: Path, path: Path) -> Path:
    """The sandbox deployment serving the Boston directory and ``path`` (tuning.directory_paths), its key file
    named absolutely so the copy may live elsewhere."""
    source = ROOT / "config" / "deployments" / "sandbox.yaml"
    data = yaml.safe_load(source.read_text())
    data["private_key_file"] = str((source.parent / data["private_key_file"]).resolve())
    data["tuning"] = {**(data.get("tuning") or {}), "directory_paths": [str(DEFAULT_DIRECTORY), str(path)]}
    out = tmp / "deployment-bench-directory.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def app_full_collection_ms(path: Path, tmp: Path) -> float:
    """A full collection's pause in an app built by create_app (warm-up on, as in production) on this directory."""
    from benchmarks.bench_memory import env

    environ = dict(env(tmp), IPV_DEPLOYMENT=str(_deployment_with_directory(tmp, path)))
    done = subprocess.run([sys.executable, "-c", APP_CHILD], cwd=ROOT, env=environ, capture_output=True, text=True,
                          check=True)
    entries, pause = done.stdout.split()[-2:]
    assert int(entries) > N_SERVICES, "the app did not load the generated directory"
    return float(pause)


def run(path: Path, what: tuple[str, ...]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=measure, args=(str(path), what, out))
    proc.start()
    m = out.get()
    proc.join()
    return m


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"hsds-{N_SERVICES}.json"
        path.write_text(json.dumps(generate(N_SERVICES)))
        print(f"directory: {N_SERVICES:,} generated HSDS services ({path.stat().st_size / 1e6:.1f} MB JSON) + the "
              f"Boston directory; each variant in a fresh process (load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs)")
        print(f"{'variant':<36} {'import CPU s':>12} {'(GC)':>5} {'peak RSS MB':>11} {'kept KB/svc':>11} "
              f"{'full GC ms':>10} {'(frozen)':>8} {'rank CPU ms':>11}")
        results = {}
        for name, what in VARIANTS.items():
            m = results[name] = run(path, what)
            print(f"{name:<36} {m['load_cpu'] + m['index_cpu']:>12.2f} {m['gc_cpu']:>5.2f} {m['peak']:>11.0f} "
                  f"{m['kept'] * 1024 / N_SERVICES:>11.2f} {m['pause']:>10.1f} {m['pause_frozen']:>8.1f} "
                  f"{m['rank']:>11.3f}")
        app_pause = app_full_collection_ms(path, Path(tmp))
    print("(GC): the cyclic collector's share of the import CPU; full GC: one full collection once the directory is "
          "loaded, as a request would meet it; (frozen): after gc.freeze()")
    print(f"the app as create_app leaves a worker (the directory loaded by warm-up, then collected and frozen): a full "
          f"collection takes {app_pause:.1f} ms")


if __name__ == "__main__":
    main()
